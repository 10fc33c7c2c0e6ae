//! Paths inside a source folder, resolved without ever leaving it.
//!
//! A source (a checkout, an unpacked archive, a venv) may hold links. A link
//! below what the recipe maps is data: it is installed as a link. But the
//! path a recipe names inside a source (an install mapping, a `from`
//! sub-folder, a uv project's folder) is walked from the source's root, and
//! a link on that way must not lead out of it: `manage.py -> /etc/shadow`
//! would put the host's file into the tree. [`resolve_beneath`] follows
//! such links only while they stay inside the root, as the kernel's
//! `RESOLVE_BENEATH` does, and says which link leads out otherwise.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

/// How many links one resolution may follow (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Why a path cannot be resolved inside its root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    /// A link on the way points outside the root.
    #[error("{link} is a link to {}, outside the source", .target.display())]
    Link {
        /// The link, relative to the root.
        link: String,
        /// Its target, as written.
        target: PathBuf,
    },
    /// The path itself climbs above the root (`..`).
    #[error("{0} climbs out of the source with `..`")]
    Climbs(String),
    /// Links that lead to each other.
    #[error("{0}: too many levels of links")]
    Loop(String),
    /// A name that is not UTF-8 in a link's target.
    #[error("{link} is a link whose target is not UTF-8")]
    NotUtf8 { link: String },
}

/// Where `rel` (a `/`-separated path, relative) leads inside the folder
/// `root`: the same path with every link on it resolved, relative to
/// `root`. A link is followed only if it stays inside `root`: a relative
/// target that climbs above it, or an absolute one that is not beneath it,
/// is an [`Escape`] naming the link. What does not exist is kept as
/// written (the caller finds it missing). `root` itself is taken as given,
/// links and all: the recipe names it.
pub fn resolve_beneath(root: &Path, rel: &str) -> Result<String, Escape> {
    let canonical_root = root.canonicalize().ok();
    let mut done: Vec<String> = Vec::new();
    let mut todo: VecDeque<String> = rel.split('/').map(str::to_string).collect();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                if done.pop().is_none() {
                    return Err(Escape::Climbs(rel.to_string()));
                }
                continue;
            }
            _ => {}
        }
        let at = done
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&part);
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            done.push(part);
            continue;
        };
        if !meta.file_type().is_symlink() {
            done.push(part);
            continue;
        }
        let link = {
            let mut l = done.join("/");
            if !l.is_empty() {
                l.push('/');
            }
            l.push_str(&part);
            l
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(Escape::Loop(link));
        }
        let Ok(target) = std::fs::read_link(&at) else {
            done.push(part);
            continue;
        };
        let outside = || Escape::Link {
            link: link.clone(),
            target: target.clone(),
        };
        let relative: Vec<String> = if target.is_absolute() {
            // Absolute, but perhaps into the root itself (a checkout's own
            // path written into a link).
            let inside = [Some(root), canonical_root.as_deref()]
                .into_iter()
                .flatten()
                .find_map(|r| target.strip_prefix(r).ok())
                .ok_or_else(outside)?;
            done.clear();
            components(inside, &link)?
        } else {
            components(&target, &link)?
        };
        // The target replaces the link: resolved from the link's folder.
        for (i, c) in relative.into_iter().enumerate() {
            todo.insert(i, c);
        }
        // A `..` that climbs above the root is the link's doing, not the
        // path's: said as the link leading out.
        let mut depth = done.len() as isize;
        for c in &todo {
            match c.as_str() {
                ".." => depth -= 1,
                "" | "." => {}
                _ => depth += 1,
            }
            if depth < 0 {
                return Err(outside());
            }
        }
    }
    Ok(done.join("/"))
}

/// Whether `openat2` works here (unset after the first `ENOSYS`).
static OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Opens the file `rel` inside the folder `root` (whose open descriptor
/// `dir` is, when the caller keeps one) for reading, following links only
/// while they stay inside it: `openat2(RESOLVE_BENEATH)` where the kernel
/// has it (the rule enforced as the path is walked: nothing can be swapped
/// in between), else [`resolve_beneath`] and an open that follows no link
/// at the last name. A link out of `root` is an error naming it.
pub fn open_beneath(
    root: &Path,
    dir: Option<std::os::fd::BorrowedFd<'_>>,
    rel: &str,
) -> std::io::Result<fs_err::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::sync::atomic::Ordering;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
    let escape = |e: Escape| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: {e}; a link in a source is never followed out of it",
                root.display()
            ),
        )
    };
    if let Some(dir) = dir
        && OPENAT2.load(Ordering::Relaxed)
    {
        match rustix::fs::openat2(dir, rel, flags, Mode::empty(), ResolveFlags::BENEATH) {
            Ok(fd) => {
                let path = root.join(rel);
                return Ok(fs_err::File::from_parts(std::fs::File::from(fd), path));
            }
            Err(rustix::io::Errno::NOSYS) => OPENAT2.store(false, Ordering::Relaxed),
            // Leads out: said as the resolver says it.
            Err(rustix::io::Errno::XDEV) => {
                return Err(match resolve_beneath(root, rel) {
                    Err(e) => escape(e),
                    Ok(_) => std::io::Error::other(format!(
                        "{}: changed while it was read",
                        root.join(rel).display()
                    )),
                });
            }
            Err(e) => {
                let e = std::io::Error::from(e);
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", root.join(rel).display()),
                ));
            }
        }
    }
    let resolved = resolve_beneath(root, rel).map_err(escape)?;
    use fs_err::os::unix::fs::OpenOptionsExt;
    fs_err::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NOCTTY).bits() as i32)
        .open(root.join(resolved))
}

fn components(p: &Path, link: &str) -> Result<Vec<String>, Escape> {
    p.components()
        .filter(|c| !matches!(c, Component::RootDir))
        .map(|c| {
            c.as_os_str()
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| Escape::NotUtf8 {
                    link: link.to_string(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs_err::create_dir_all(r.join("src/pkg")).unwrap();
        fs_err::create_dir_all(r.join("scripts")).unwrap();
        fs_err::write(r.join("scripts/manage.py"), "").unwrap();
        symlink("scripts/manage.py", r.join("manage.py")).unwrap();
        symlink("../scripts", r.join("src/tools")).unwrap();
        symlink("/etc/passwd", r.join("shadow")).unwrap();
        symlink("../../..", r.join("src/up")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink(r.join("scripts"), r.join("absolute-inside")).unwrap();
        t
    }

    #[test]
    fn links_inside_are_followed() {
        let t = tree();
        let r = t.path();
        assert_eq!(
            resolve_beneath(r, "manage.py").unwrap(),
            "scripts/manage.py"
        );
        assert_eq!(
            resolve_beneath(r, "src/tools/manage.py").unwrap(),
            "scripts/manage.py"
        );
        assert_eq!(resolve_beneath(r, "./src//pkg").unwrap(), "src/pkg");
        assert_eq!(
            resolve_beneath(r, "absolute-inside/manage.py").unwrap(),
            "scripts/manage.py"
        );
        assert_eq!(resolve_beneath(r, "missing/x").unwrap(), "missing/x");
    }

    #[test]
    fn links_out_are_named() {
        let t = tree();
        let r = t.path();
        assert_eq!(
            resolve_beneath(r, "shadow").unwrap_err(),
            Escape::Link {
                link: "shadow".into(),
                target: "/etc/passwd".into()
            }
        );
        assert!(matches!(
            resolve_beneath(r, "src/up/x").unwrap_err(),
            Escape::Link { link, .. } if link == "src/up"
        ));
        assert!(matches!(
            resolve_beneath(r, "loop1").unwrap_err(),
            Escape::Loop(_)
        ));
        assert!(matches!(
            resolve_beneath(r, "src/../..").unwrap_err(),
            Escape::Climbs(_)
        ));
    }
}
