//! Unpacking archives without trusting them.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// The most an archive may unpack to (a decompression bomb stops here).
pub const UNPACK_LIMIT: u64 = 4 << 30;

/// Unpacks a `.tar.gz` into `dest` (which must not exist), stripping the
/// single top-level folder every entry must share. Refuses absolute paths,
/// `..`, links that leave the tree, devices and fifos, duplicate entries, and
/// more than [`UNPACK_LIMIT`] bytes.
pub fn unpack_tar_gz(archive: &Path, dest: &Path) -> Result<(), Error> {
    let file = fs_err::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let unsafe_entry = |entry: &str, why: &str| Error::Unsafe {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        why: why.to_string(),
    };
    let io = |e: std::io::Error| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", archive.display()),
        ))
    };
    fs_err::create_dir(dest)?;
    let mut top: Option<String> = None;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for entry in tar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let raw = entry.path().map_err(io)?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let mut parts = Vec::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_os_string()),
                Component::CurDir => {}
                Component::ParentDir => return Err(unsafe_entry(&name, "it contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(unsafe_entry(&name, "it is an absolute path"));
                }
            }
        }
        let Some(first) = parts.first() else { continue };
        let first = first.to_string_lossy().into_owned();
        match &top {
            None => top = Some(first),
            Some(t) if *t != first => {
                return Err(unsafe_entry(
                    &name,
                    &format!("the archive has more than one top-level entry ({t:?} and {first:?})"),
                ));
            }
            Some(_) => {}
        }
        let rel: PathBuf = parts[1..].iter().collect();
        if rel.as_os_str().is_empty() {
            continue;
        }
        if !seen.insert(rel.clone()) {
            return Err(unsafe_entry(&name, "it appears twice in the archive"));
        }
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        if let Some(parent) = target.parent() {
            fs_err::create_dir_all(parent)?;
        }
        match kind {
            tar::EntryType::Directory => fs_err::create_dir_all(&target)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = entry.header().mode().map_err(io)?;
                let mut out = fs_err::File::create(&target)?;
                let mut limited = (&mut entry).take(UNPACK_LIMIT - total + 1);
                total += std::io::copy(&mut limited, &mut out)?;
                if total > UNPACK_LIMIT {
                    return Err(unsafe_entry(
                        &name,
                        &format!("the archive unpacks to more than {UNPACK_LIMIT} bytes"),
                    ));
                }
                use std::os::unix::fs::PermissionsExt;
                let exec = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
                out.set_permissions(std::fs::Permissions::from_mode(exec))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io)?
                    .ok_or_else(|| unsafe_entry(&name, "a symlink without a target"))?;
                if !stays_inside(&rel, &link) {
                    return Err(unsafe_entry(
                        &name,
                        &format!("symlink to {} leaves the tree", link.display()),
                    ));
                }
                fs_err::os::unix::fs::symlink(&link, &target)?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(unsafe_entry(
                    &name,
                    &format!("entries of type {other:?} are not unpacked"),
                ));
            }
        }
    }
    Ok(())
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
