//! A folder entry's lock, and discarding an entry.

use std::io;
use std::path::{Path, PathBuf};

/// `X.lock` beside the entry `X`.
pub(crate) fn lock_path(entry: &Path) -> PathBuf {
    crate::beside(entry, ".lock")
}

/// Takes the lock of the entry `entry` (made while it is built or
/// discarded), held until the file is dropped; `waiting` is called before
/// a wait for another run that holds it.
pub fn lock(entry: &Path, waiting: &dyn Fn()) -> io::Result<fs_err::File> {
    assemble_fs::lock::exclusive(&lock_path(entry), waiting)
}

/// Discards the entry `entry` (a folder entry or a file entry), under its
/// lock (`waiting` as for [`lock`]); see [`remove`].
pub fn discard(entry: &Path, waiting: &dyn Fn()) -> io::Result<()> {
    let _lock = lock(entry, waiting)?;
    remove(entry)
}

/// Removes the entry `entry`, for a caller that holds its lock: its record
/// first (a seal, a digest link), so that no run takes it for complete,
/// then the entry renamed aside (readers see it gone at once) and removed.
/// A link at the entry's name is removed, never followed.
pub fn remove(entry: &Path) -> io::Result<()> {
    assemble_fs::files::remove(&crate::seal_path(entry))?;
    assemble_fs::files::remove(&crate::digest::path_of(entry))?;
    let Ok(meta) = std::fs::symlink_metadata(entry) else {
        return Ok(());
    };
    let aside = crate::unique_beside(entry, "discarded");
    fs_err::rename(entry, &aside)?;
    if meta.is_dir() {
        fs_err::remove_dir_all(&aside)
    } else {
        fs_err::remove_file(&aside)
    }
}
