//! The record of a file entry (a pyc, a patched ELF file, a recovered
//! script): `F.sha256` beside `F`, a link whose target is F's sha256 in
//! base64url. 43 bytes: the file system keeps them in the inode, so a
//! record costs no data block, and reading it is one `readlink`.
//!
//! A use trusts a file entry when the output's input stat cache vouches
//! for its stat: such records of cache files are made only after the file
//! was hashed against its digest link here ([`check`]).

use std::io;
use std::path::{Path, PathBuf};

use assemble_manifest::{InputRecord, Sha256, Stat, hash_stream, open_input};
use base64::Engine;

use crate::{Corrupt, Error};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Where the record of the file entry `file` is.
pub fn path_of(file: &Path) -> PathBuf {
    crate::beside(file, ".sha256")
}

/// Records that `file` holds `sha`, replacing any record there.
pub fn record(file: &Path, sha: &Sha256) -> io::Result<()> {
    let link = path_of(file);
    let tmp = crate::unique_beside(&link, "tmp");
    fs_err::os::unix::fs::symlink(B64.encode(sha.0), &tmp)?;
    fs_err::rename(&tmp, &link)
}

/// Records that `file` holds `sha` where it has no record yet: the link
/// made in place (one call); one there already is replaced.
pub fn record_new(file: &Path, sha: &Sha256) -> io::Result<()> {
    match std::os::unix::fs::symlink(B64.encode(sha.0), path_of(file)) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => record(file, sha),
        done => {
            done.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path_of(file).display())))
        }
    }
}

/// The sha256 recorded for `file`, if there is a readable record.
pub fn recorded(file: &Path) -> Option<Sha256> {
    let target = std::fs::read_link(path_of(file)).ok()?;
    let bytes = B64.decode(target.as_os_str().as_encoded_bytes()).ok()?;
    Some(Sha256(bytes.try_into().ok()?))
}

/// Hashes the file entry `file` (whose stat is `stat`) and checks it
/// against its record: its input record, or why it cannot be used.
pub fn check(file: &Path, stat: &Stat) -> Result<InputRecord, Error> {
    let corrupt = |why: &str| {
        Error::corrupt(Corrupt {
            entry: file.to_path_buf(),
            path: file.to_path_buf(),
            why: why.to_string(),
        })
    };
    let want =
        recorded(file).ok_or_else(|| corrupt("it has no record of its hash (incomplete)"))?;
    let (sha256, elf) = hash_stream(&mut open_input(file, stat)?, &[], |_| Ok(()))?;
    if sha256 != want {
        return Err(corrupt("changed since it was made"));
    }
    Ok(InputRecord {
        stat: *stat,
        sha256,
        elf,
        racy: false,
    })
}

/// Removes the file entry `file` and its record (the record first: a
/// file without one is incomplete, never trusted).
pub fn discard(file: &Path) -> io::Result<()> {
    assemble_fs::files::remove(&path_of(file))?;
    assemble_fs::files::remove(file)
}
