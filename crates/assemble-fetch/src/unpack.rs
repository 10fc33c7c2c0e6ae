//! Unpacking archives without trusting them.
//!
//! Every entry's path is checked before anything is written: no absolute
//! paths, no `..`, no links (symbolic or hard) that resolve outside the tree,
//! no devices or fifos, no entry twice, and no more than a size limit in
//! all (a decompression bomb stops there). The archive must hold exactly one
//! top-level folder, which is stripped, as Nix's fetchzip does.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// Bounds on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Number of entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 8 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// Unpacks a `.tar.gz`, `.tar` or `.zip` (told apart by their first bytes)
/// into `dest`, which must not exist yet, stripping the single top folder.
pub fn unpack(archive: &Path, dest: &Path, limits: Limits) -> Result<(), Error> {
    unpack_named(archive, &archive.display().to_string(), dest, limits)
}

/// As [`unpack`], calling the archive `name` in errors (the URL it came
/// from, rather than the temporary file it was downloaded to).
pub fn unpack_named(archive: &Path, name: &str, dest: &Path, limits: Limits) -> Result<(), Error> {
    let mut magic = [0u8; 262];
    let n = {
        let mut f = fs_err::File::open(archive)?;
        read_up_to(&mut f, &mut magic)?
    };
    let magic = &magic[..n];
    let mut u = Unpacker {
        archive: archive.to_path_buf(),
        name: name.to_string(),
        dest: dest.to_path_buf(),
        limits,
        top: None,
        seen: HashSet::new(),
        bytes: 0,
        entries: 0,
    };
    fs_err::create_dir(dest)?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let f = fs_err::File::open(archive)?;
        u.tar(tar::Archive::new(flate2::read::GzDecoder::new(f)))
    } else if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        u.zip()
    } else if magic.len() >= 262 && &magic[257..262] == b"ustar" {
        u.tar(tar::Archive::new(fs_err::File::open(archive)?))
    } else {
        Err(Error::Unsafe {
            archive: name.to_string(),
            entry: String::new(),
            why: "not a .tar.gz, .tar or .zip archive (xz and bzip2 are not supported)".into(),
        })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

struct Unpacker {
    archive: PathBuf,
    /// What errors call it.
    name: String,
    dest: PathBuf,
    limits: Limits,
    top: Option<String>,
    seen: HashSet<PathBuf>,
    bytes: u64,
    entries: u64,
}

enum Kind {
    Dir,
    File { executable: bool },
    Symlink(PathBuf),
    Hardlink(PathBuf),
}

impl Unpacker {
    fn refuse(&self, entry: &str, why: impl Into<String>) -> Error {
        Error::Unsafe {
            archive: self.name.clone(),
            entry: entry.to_string(),
            why: why.into(),
        }
    }

    fn io(&self, e: io::Error) -> Error {
        Error::Io(io::Error::new(e.kind(), format!("{}: {e}", self.name)))
    }

    /// Checks an entry's path and returns it relative to the stripped top
    /// folder, or `None` for the top folder itself.
    fn place(&mut self, raw: &Path, name: &str, is_dir: bool) -> Result<Option<PathBuf>, Error> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.refuse(
                name,
                format!(
                    "the archive has more than {} entries",
                    self.limits.max_entries
                ),
            ));
        }
        let mut parts = Vec::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_os_string()),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.refuse(name, "its path contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refuse(name, "its path is absolute"));
                }
            }
        }
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let first = first.to_string_lossy().into_owned();
        match &self.top {
            None => self.top = Some(first.clone()),
            Some(t) if *t != first => {
                return Err(self.refuse(
                    name,
                    format!(
                        "the archive has more than one top-level entry ({t:?} and {first:?}); only archives with a single top folder are unpacked"
                    ),
                ));
            }
            Some(_) => {}
        }
        if parts.len() == 1 {
            if !is_dir {
                return Err(self.refuse(
                    name,
                    "the archive's top level holds a file, not a single folder",
                ));
            }
            return Ok(None);
        }
        let rel: PathBuf = parts[1..].iter().collect();
        if !self.seen.insert(rel.clone()) {
            return Err(self.refuse(name, "it appears twice in the archive"));
        }
        Ok(Some(rel))
    }

    /// Writes one entry; `content` is read for files.
    fn write(
        &mut self,
        name: &str,
        rel: &Path,
        kind: Kind,
        content: &mut dyn Read,
    ) -> Result<(), Error> {
        let target = self.dest.join(rel);
        // Parents must be real folders of ours, never links.
        let mut at = self.dest.clone();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            at.push(c);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.refuse(name, "a parent of it is not a folder in the archive"));
                }
                Err(_) => fs_err::create_dir(&at)?,
            }
        }
        match kind {
            Kind::Dir => match std::fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                _ => fs_err::create_dir(&target)?,
            },
            Kind::File { executable } => {
                let mut out = fs_err::File::create(&target)?;
                let room = self.limits.max_bytes - self.bytes;
                let n = io::copy(&mut content.take(room + 1), &mut out).map_err(|e| self.io(e))?;
                self.bytes += n;
                if self.bytes > self.limits.max_bytes {
                    return Err(self.refuse(
                        name,
                        format!(
                            "the archive unpacks to more than {} bytes",
                            self.limits.max_bytes
                        ),
                    ));
                }
                let mode = if executable { 0o755 } else { 0o644 };
                out.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            Kind::Symlink(to) => {
                if !stays_inside(rel, &to) {
                    return Err(self.refuse(
                        name,
                        format!("it is a symlink to {}, outside the tree", to.display()),
                    ));
                }
                fs_err::os::unix::fs::symlink(&to, &target)?;
            }
            Kind::Hardlink(to) => {
                // Hard link targets name an archive path, top folder included.
                let mut parts = to.components();
                let inside: PathBuf = match parts.next() {
                    Some(Component::Normal(t))
                        if Some(t.to_string_lossy().as_ref()) == self.top.as_deref() =>
                    {
                        parts.collect()
                    }
                    _ => PathBuf::new(),
                };
                let ok = !inside.as_os_str().is_empty()
                    && inside
                        .components()
                        .all(|c| matches!(c, Component::Normal(_)))
                    && self.seen.contains(&inside)
                    && std::fs::symlink_metadata(self.dest.join(&inside))
                        .is_ok_and(|m| m.is_file());
                if !ok {
                    return Err(self.refuse(
                        name,
                        format!(
                            "it is a hard link to {}, which is not a file unpacked before it in the tree",
                            to.display()
                        ),
                    ));
                }
                fs_err::copy(self.dest.join(&inside), &target)?;
            }
        }
        Ok(())
    }

    fn tar<R: Read>(&mut self, mut archive: tar::Archive<R>) -> Result<(), Error> {
        for entry in archive.entries().map_err(|e| self.io(e))? {
            let mut entry = entry.map_err(|e| self.io(e))?;
            let raw = entry.path().map_err(|e| self.io(e))?.into_owned();
            let name = raw.to_string_lossy().into_owned();
            let ty = entry.header().entry_type();
            if matches!(
                ty,
                tar::EntryType::XGlobalHeader
                    | tar::EntryType::XHeader
                    | tar::EntryType::GNULongName
                    | tar::EntryType::GNULongLink
            ) {
                continue;
            }
            let kind = match ty {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File {
                    executable: entry.header().mode().map_err(|e| self.io(e))? & 0o100 != 0,
                },
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let to = entry
                        .link_name()
                        .map_err(|e| self.io(e))?
                        .ok_or_else(|| self.refuse(&name, "a link without a target"))?
                        .into_owned();
                    if ty == tar::EntryType::Symlink {
                        Kind::Symlink(to)
                    } else {
                        Kind::Hardlink(to)
                    }
                }
                other => {
                    let what = match other {
                        tar::EntryType::Char | tar::EntryType::Block => "a device",
                        tar::EntryType::Fifo => "a fifo",
                        _ => "of an unsupported type",
                    };
                    return Err(self.refuse(&name, format!("it is {what}")));
                }
            };
            let Some(rel) = self.place(&raw, &name, matches!(kind, Kind::Dir))? else {
                continue;
            };
            self.write(&name, &rel, kind, &mut entry)?;
        }
        Ok(())
    }

    fn zip(&mut self) -> Result<(), Error> {
        let file = fs_err::File::open(&self.archive)?;
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| self.refuse("", format!("not a zip archive: {e}")))?;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| self.refuse("", format!("entry {i}: {e}")))?;
            let name = entry
                .name()
                .map_err(|e| self.refuse("", format!("entry {i}: {e}")))?
                .into_owned();
            let raw = PathBuf::from(&name);
            let mode = entry.unix_mode().unwrap_or(0o644);
            let kind = if entry.is_dir() {
                Kind::Dir
            } else if mode & 0o170000 == 0o120000 {
                let mut to = String::new();
                entry.read_to_string(&mut to).map_err(|e| self.io(e))?;
                Kind::Symlink(PathBuf::from(to))
            } else if entry.is_file() {
                Kind::File {
                    executable: mode & 0o100 != 0,
                }
            } else {
                return Err(self.refuse(&name, "it is of an unsupported type"));
            };
            let Some(rel) = self.place(&raw, &name, matches!(kind, Kind::Dir))? else {
                continue;
            };
            self.write(&name, &rel, kind, &mut entry)?;
        }
        Ok(())
    }
}

/// Whether a symlink at `at` (relative to the tree) pointing to `target`
/// resolves inside the tree, judged lexically.
fn stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}
