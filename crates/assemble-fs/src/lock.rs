//! Exclusive locks between runs that share a folder (an output's state, a
//! cache entry being built), on a lock file beside what they guard.
//!
//! A run that must wait says so first (`waiting`), as cargo says
//! `Blocking waiting for file lock on ...`: a silent wait of a minute looks
//! like a hang.

use std::io;
use std::path::Path;

use fs_err::os::unix::fs::OpenOptionsExt;

/// The lock file at `path`, made if missing (another run making it at the
/// same instant is the same file); a link at that name is refused, never
/// followed.
fn open(path: &Path) -> io::Result<fs_err::File> {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Takes the lock at `path` if it is free: `None` when another process
/// holds it.
pub fn try_exclusive(path: &Path) -> io::Result<Option<fs_err::File>> {
    let file = open(path)?;
    match file.file().try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}

/// Takes the lock at `path`, held until the file is dropped. When another
/// process holds it, `waiting` is called once, then the lock is waited for.
pub fn exclusive(path: &Path, waiting: &dyn Fn()) -> io::Result<fs_err::File> {
    if let Some(file) = try_exclusive(path)? {
        return Ok(file);
    }
    waiting();
    let file = open(path)?;
    file.file()
        .lock()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot lock {}: {e}", path.display())))?;
    Ok(file)
}
