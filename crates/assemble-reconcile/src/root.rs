//! A handle on a folder through which every operation resolves *beneath* it
//! and never follows a symbolic link: the output's root and the state folder
//! are only ever touched through one.
//!
//! A path handed to a [`Root`] is relative and `/`-separated. Its folders are
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (one system
//! call; the kernel refuses `..` that climbs out, absolute paths, and a link
//! in any component), or, on kernels without `openat2`, one component at a
//! time with `O_NOFOLLOW`, refusing `.`, `..` and empty components. The last
//! component is then acted on relative to its folder's descriptor with the
//! `*at` calls, which do not follow it either (`unlinkat`, `mkdirat`,
//! `renameat`, `symlinkat`, `openat(O_NOFOLLOW | O_CREAT | O_EXCL)`).
//!
//! So a path string, whatever it holds, cannot name a file outside the root,
//! and a link inside the root (planted by anyone) is an entry to remove, never
//! a way through: a folder replaced by a link to a developer's checkout is
//! seen as "not a folder", and the link itself is what gets removed.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};

use assemble_manifest::Stat;

/// A folder opened once; every path below it resolves beneath it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// A folder opened beneath a [`Root`]: the root itself, or one below it.
pub enum Folder<'a> {
    Root(BorrowedFd<'a>),
    Below(OwnedFd),
}

impl AsFd for Folder<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Folder::Root(fd) => *fd,
            Folder::Below(fd) => fd.as_fd(),
        }
    }
}

/// What a listed entry is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Dir,
    File,
    Link,
    Other,
}

/// Whether `openat2` works here (unset after the first `ENOSYS`).
static OPENAT2: AtomicBool = AtomicBool::new(true);

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::RDONLY);

impl Root {
    /// Opens the folder `path` (a link there is refused, not followed).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| {
            let e = io::Error::from(e);
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{} is a symbolic link; name the folder it points to",
                        path.display()
                    ),
                )
            } else {
                with_path(path, e)
            }
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path the root was opened at (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full path of `rel`, for messages only: nothing is opened by it.
    pub fn display(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    fn err(&self, rel: &str, e: impl Into<io::Error>) -> io::Error {
        with_path(&self.display(rel), e.into())
    }

    /// The `lstat` of the root folder itself.
    pub fn stat_self(&self) -> io::Result<Stat> {
        let x = rustix::fs::statx(
            &self.fd,
            "",
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        )
        .map_err(|e| self.err("", e))?;
        Ok(Stat::of_statx(&x))
    }

    /// Opens the folder `rel` ("" is the root) beneath the root, following
    /// no link, to list it or change its mode.
    pub fn folder(&self, rel: &str) -> io::Result<Folder<'_>> {
        self.folder_with(rel, DIR_FLAGS)
    }

    /// As [`Root::folder`], with `O_PATH`: enough to stat and act on its
    /// entries, and cheaper.
    pub fn locate(&self, rel: &str) -> io::Result<Folder<'_>> {
        self.folder_with(rel, DIR_FLAGS | OFlags::PATH)
    }

    fn folder_with(&self, rel: &str, flags: OFlags) -> io::Result<Folder<'_>> {
        if rel.is_empty() {
            return Ok(Folder::Root(self.fd.as_fd()));
        }
        if OPENAT2.load(Ordering::Relaxed) {
            // NO_SYMLINKS covers magic links too; NO_MAGICLINKS would only
            // add system time to every lookup (docs/speed.md).
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            // EAGAIN: a rename elsewhere raced a scoped lookup (the kernel
            // checks only at `..`, which checked paths do not hold): retry.
            let mut tries = 0;
            loop {
                match rustix::fs::openat2(&self.fd, rel, flags, Mode::empty(), resolve) {
                    Ok(fd) => return Ok(Folder::Below(fd)),
                    Err(rustix::io::Errno::AGAIN) if tries < 8 => tries += 1,
                    Err(rustix::io::Errno::NOSYS) => {
                        OPENAT2.store(false, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(self.err(rel, e)),
                }
            }
        }
        self.folder_by_components(rel, flags).map(Folder::Below)
    }

    /// The fallback of [`Root::folder`]: one component at a time, each
    /// opened with `O_NOFOLLOW` relative to the previous one.
    fn folder_by_components(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let mut fd: Option<OwnedFd> = None;
        for c in rel.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(self.err(
                    rel,
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a plain relative path (an empty, `.` or `..` component)",
                    ),
                ));
            }
            let at = fd.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            fd = Some(
                rustix::fs::openat(at, c, flags, Mode::empty()).map_err(|e| self.err(rel, e))?,
            );
        }
        fd.ok_or_else(|| self.err(rel, io::Error::from(io::ErrorKind::InvalidInput)))
    }

    /// The folder holding `rel` and `rel`'s last component.
    pub fn parent<'r, 'p>(&'r self, rel: &'p str) -> io::Result<(Folder<'r>, &'p str)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if name.is_empty() || name == "." || name == ".." {
            return Err(self.err(
                rel,
                io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"),
            ));
        }
        Ok((self.locate(dir)?, name))
    }

    /// `lstat` of `rel`; `None` when it (or a folder on its way, as a
    /// folder) is not there.
    pub fn stat(&self, rel: &str) -> Option<Stat> {
        if rel.is_empty() {
            return self.stat_self().ok();
        }
        let (dir, name) = self.parent(rel).ok()?;
        stat_at(&dir, name)
    }

    /// The `lstat` of each of `paths`, in order (`None` as for
    /// [`Root::stat`]). Paths are grouped by folder; each folder is opened
    /// once (`O_PATH`) and its entries `statx`ed relative to it, folders in
    /// parallel: a path costs one system call, as an `lstat` would.
    pub fn stat_all<'p>(&self, paths: impl Iterator<Item = &'p str>) -> Vec<Option<Stat>> {
        use rayon::prelude::*;
        let mut folders: rustc_hash::FxHashMap<&str, Vec<(usize, &str)>> = Default::default();
        let mut n = 0;
        for (i, path) in paths.enumerate() {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            folders.entry(dir).or_default().push((i, name));
            n = i + 1;
        }
        let found: Vec<Vec<(usize, Option<Stat>)>> = folders
            .par_iter()
            .map(|(dir, names)| {
                let fd = self.locate(dir);
                names
                    .iter()
                    .map(|(i, name)| (*i, fd.as_ref().ok().and_then(|fd| stat_at(fd, name))))
                    .collect()
            })
            .collect();
        let mut now = vec![None; n];
        for (i, stat) in found.into_iter().flatten() {
            now[i] = stat;
        }
        now
    }

    /// The target of the link `rel`.
    pub fn read_link(&self, rel: &str) -> io::Result<OsString> {
        let (dir, name) = self.parent(rel)?;
        let t = rustix::fs::readlinkat(&dir, name, Vec::new()).map_err(|e| self.err(rel, e))?;
        Ok(OsString::from_vec(t.into_bytes()))
    }

    /// Opens the file `rel` for reading (a link is refused).
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| self.err(rel, e))?;
        Ok(File::from(fd))
    }

    /// Every entry of the folder `rel` (not `.` and `..`), with its type.
    pub fn list(&self, rel: &str) -> io::Result<Vec<(OsString, EntryType)>> {
        let dir = self.folder(rel)?;
        list_fd(&dir).map_err(|e| self.err(rel, e))
    }

    /// Removes `rel` (a file, a link, or a folder with everything in it),
    /// never following a link; `Ok(false)` when it is not there, or when a
    /// folder on its way is not a folder (then it is not inside the tree).
    pub fn remove_all(&self, rel: &str) -> io::Result<bool> {
        let (dir, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        remove_at(&dir, OsStr::new(name)).map_err(|e| self.err(rel, e))
    }

    /// Removes the entry `name` (any bytes) of the folder `dir`, as
    /// [`Root::remove_all`] does.
    pub fn remove_name(&self, dir: &str, name: &OsStr) -> io::Result<bool> {
        let folder = match self.locate(dir) {
            Ok(f) => f,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        remove_at(&folder, name).map_err(|e| self.err(dir, e))
    }

    /// Creates the folder `rel` with `mode`.
    pub fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode)).map_err(|e| self.err(rel, e))
    }

    /// Sets the permission bits of the folder `rel` ("" the root).
    pub fn chmod_dir(&self, rel: &str, mode: u32) -> io::Result<()> {
        let dir = self.folder(rel)?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode)).map_err(|e| self.err(rel, e))
    }
}

/// Creates the file `name` in `dir` (it must not exist; a link there is not
/// followed) with `mode`, for writing.
pub fn create_at(dir: &impl AsFd, name: &OsStr, mode: u32) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    Ok(File::from(fd))
}

/// Opens the file `name` in `dir` for reading, not following a link.
pub fn open_at(dir: &impl AsFd, name: &OsStr) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// Renames `from` to `to`, both in `dir` (replacing `to`, which is not
/// followed if it is a link).
pub fn rename_at(dir: &impl AsFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::renameat(dir, from, dir, to)?)
}

/// Creates the link `name` -> `target` in `dir`.
pub fn symlink_at(dir: &impl AsFd, target: &OsStr, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// `lstat` of `name` in `dir`.
pub fn stat_at(dir: &impl AsFd, name: impl AsRef<OsStr>) -> Option<Stat> {
    rustix::fs::statx(
        dir,
        name.as_ref(),
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    )
    .ok()
    .map(|x| Stat::of_statx(&x))
}

/// Whether an error opening a path's folders means "not in the tree": it is
/// missing, or a component is a file or a link.
pub fn gone(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let raw = e
        .raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<AtPath>()?.source.raw_os_error());
    [Errno::NOENT, Errno::NOTDIR, Errno::LOOP]
        .iter()
        .any(|x| Some(x.raw_os_error()) == raw)
}

fn list_fd(dir: &impl AsFd) -> io::Result<Vec<(OsString, EntryType)>> {
    let mut found = Vec::new();
    let mut d = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let name = OsStr::from_bytes(name.to_bytes()).to_os_string();
        let t = match entry.file_type() {
            rustix::fs::FileType::Directory => EntryType::Dir,
            rustix::fs::FileType::RegularFile => EntryType::File,
            rustix::fs::FileType::Symlink => EntryType::Link,
            rustix::fs::FileType::Unknown => match stat_at(dir, &name) {
                Some(s) if s.is_dir() => EntryType::Dir,
                Some(s) if s.is_file() => EntryType::File,
                Some(s) if s.is_symlink() => EntryType::Link,
                _ => EntryType::Other,
            },
            _ => EntryType::Other,
        };
        found.push((name, t));
    }
    Ok(found)
}

/// Removes `name` in `dir` and, if it is a folder, what is in it, depth
/// first through descriptors: no link is ever followed.
pub fn remove_at(dir: &impl AsFd, name: &OsStr) -> io::Result<bool> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(true),
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        // A folder (EISDIR on Linux; EPERM elsewhere).
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    // A folder without write permission cannot be emptied: make it writable
    // (it is ours, and about to go).
    let _ = rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700));
    for (child, t) in list_fd(&sub)? {
        if t == EntryType::Dir {
            remove_at(&sub, &child)?;
        } else {
            match rustix::fs::unlinkat(&sub, &child, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(rustix::io::Errno::ISDIR) => {
                    remove_at(&sub, &child)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    drop(sub);
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An error on a path: prints `path: error`, and keeps the error (and its
/// OS code, which [`gone`] reads).
#[derive(Debug)]
struct AtPath {
    path: PathBuf,
    source: io::Error,
}

impl std::fmt::Display for AtPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for AtPath {}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        AtPath {
            path: path.to_path_buf(),
            source: e,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards confinement: `..`, absolute paths and links on the way are
    /// refused, by `openat2` and by the component walk alike.
    #[test]
    fn paths_resolve_beneath_and_never_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let out = tmp.path().join("out");
        fs_err::create_dir_all(outside.join("d")).unwrap();
        fs_err::write(outside.join("d/keep"), "x").unwrap();
        fs_err::create_dir_all(out.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("a/link")).unwrap();
        let root = Root::open(&out).unwrap();
        for bad in ["../outside/d", "a/link/d", "a/../../outside/d", "/tmp"] {
            assert!(root.folder(bad).is_err(), "{bad} opened");
            assert!(
                root.folder_by_components(bad, DIR_FLAGS).is_err(),
                "{bad} walked"
            );
        }
        assert!(!root.remove_all("a/link/d/keep").unwrap());
        assert!(root.remove_all("a/link").unwrap());
        assert!(outside.join("d/keep").exists(), "the link's target stays");
        assert!(root.folder_by_components("a", DIR_FLAGS).is_ok());
        assert!(root.folder_by_components("a/./", DIR_FLAGS).is_err());
    }

    /// Guards the removal: a folder holding links to folders outside loses
    /// the links, never what they point to.
    #[test]
    fn remove_all_removes_links_not_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let out = tmp.path().join("out");
        fs_err::create_dir_all(&outside).unwrap();
        fs_err::write(outside.join("f"), "x").unwrap();
        fs_err::create_dir_all(out.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("a/b/l")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), out.join("a/fl")).unwrap();
        let root = Root::open(&out).unwrap();
        assert!(root.remove_all("a").unwrap());
        assert!(!out.join("a").exists());
        assert_eq!(fs_err::read_to_string(outside.join("f")).unwrap(), "x");
    }
}
