//! A file rewritten rarely and appended to often: a *base* (magic, format
//! version, generation, postcard body) and beside it a *log* of frames, the
//! changes of later runs, applied to the base in order when it is read.
//!
//! A run that changes a few paths of a 36,000-entry state appends a frame of
//! a few hundred bytes instead of rewriting megabytes; when the log has
//! grown to half the base, the next run rewrites the base and drops the log.
//!
//! A base is `magic | version | generation | body | check` and a frame
//! `generation (u64) | length (u32) | body | check`, a check being the first
//! 8 bytes of the sha256 of what precedes it: a base with one bit flipped is
//! no base (a clean reconcile), never a wrong record. Reading stops
//! at the first frame that is torn, corrupt or of another generation: a run
//! killed while appending leaves at worst a tail that is ignored, and a log
//! left beside a newer base (a run killed between renaming a new base into
//! place and removing the log) is never applied to it.
//!
//! A small file read and written whole (an output's owner record, its
//! journal) is a *single*: `magic | version | body | check`, the same check,
//! without a generation or a log ([`read_single`], [`write_single`]).

use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::files::Durability;

/// Magic, version and generation.
const HEADER: usize = 20;
/// Generation and length before a frame's body; the check after it.
const FRAME_HEAD: usize = 12;
const CHECK: usize = 8;

/// What a base file is: its magic and the format version of its body. A
/// file of another magic or version is no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub magic: &'static [u8; 8],
    pub version: u32,
}

/// Where a loaded base and log stand; appending needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    generation: u64,
    base_len: u64,
    /// The length of the log's intact frames.
    log_len: u64,
}

/// A base and the bodies of its log's intact frames.
pub struct Loaded {
    pub base: Vec<u8>,
    log: Vec<u8>,
    frames: Vec<std::ops::Range<usize>>,
    pub at: Position,
}

impl Loaded {
    /// The base's postcard body.
    pub fn body(&self) -> &[u8] {
        &self.base[HEADER..self.base.len() - CHECK]
    }

    /// The bodies of the log's frames, oldest first.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.frames.iter().map(|r| &self.log[r.clone()])
    }
}

pub fn log_path(base: &Path) -> PathBuf {
    base.with_extension("log")
}

/// `bytes` with its check appended: the first bytes of their sha256.
fn sealed(mut bytes: Vec<u8>) -> Vec<u8> {
    let check = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&check[..CHECK]);
    bytes
}

/// The length of `bytes` without their check, when the check is intact
/// and at least `header` bytes precede it.
fn checked(bytes: &[u8], header: usize) -> Option<usize> {
    let end = bytes.len().checked_sub(CHECK).filter(|n| *n >= header)?;
    (bytes[end..] == sha2::Sha256::digest(&bytes[..end])[..CHECK]).then_some(end)
}

/// The magic and version of a file, then `rest`.
fn headed(format: Format, capacity: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(capacity + 12 + CHECK);
    bytes.extend_from_slice(format.magic);
    bytes.extend_from_slice(&format.version.to_le_bytes());
    bytes
}

/// The body of the single file at `path`, `None` when it is missing, of
/// another magic or format version, or its check fails.
pub fn read_single(path: &Path, format: Format) -> Option<Vec<u8>> {
    let mut bytes = crate::files::read(path).ok()??;
    let rest = bytes.strip_prefix(format.magic.as_slice())?;
    if u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) != format.version {
        return None;
    }
    let end = checked(&bytes, 12)?;
    bytes.truncate(end);
    bytes.drain(..12);
    Some(bytes)
}

/// Writes `body` as a single file at `path`, atomically.
pub fn write_single(
    path: &Path,
    format: Format,
    body: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let mut bytes = headed(format, body.len());
    bytes.extend_from_slice(body);
    crate::files::write_atomic(path, &sealed(bytes), durability)
}

/// The base at `path` with its log, `None` when the base is missing, of
/// another magic or format version.
pub fn load(path: &Path, format: Format) -> Option<Loaded> {
    let base = crate::files::read(path).ok()??;
    let generation = header(&base, format)?;
    checked(&base, HEADER)?;
    let log = crate::files::read(&log_path(path))
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(body) = frame_at(&log, at, generation) {
        frames.push(body.clone());
        at = body.end + CHECK;
    }
    Some(Loaded {
        at: Position {
            generation,
            base_len: base.len() as u64,
            log_len: at as u64,
        },
        base,
        log,
        frames,
    })
}

/// The generation of a base file's header.
fn header(bytes: &[u8], format: Format) -> Option<u64> {
    let rest = bytes.strip_prefix(format.magic.as_slice())?;
    let version = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let generation = u64::from_le_bytes(rest.get(4..12)?.try_into().ok()?);
    (version == format.version).then_some(generation)
}

/// The body range of the intact frame of `generation` at `at`, if any.
fn frame_at(log: &[u8], at: usize, generation: u64) -> Option<std::ops::Range<usize>> {
    let head = log.get(at..at + FRAME_HEAD)?;
    if u64::from_le_bytes(head[..8].try_into().ok()?) != generation {
        return None;
    }
    let len = u32::from_le_bytes(head[8..].try_into().ok()?) as usize;
    let body = at + FRAME_HEAD..at + FRAME_HEAD + len;
    let check = log.get(body.end..body.end + CHECK)?;
    (check == &sha2::Sha256::digest(log.get(at..body.end)?)[..CHECK]).then_some(body)
}

/// Replaces the base with `body` under a new generation (through a
/// temporary file renamed into place, file and folder synced: the commit
/// point), then removes the log.
pub fn store(path: &Path, format: Format, body: &[u8], durability: Durability) -> io::Result<()> {
    let generation = std::hash::RandomState::new().hash_one(std::process::id());
    let mut bytes = headed(format, 8 + body.len());
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes.extend_from_slice(body);
    crate::files::write_atomic(path, &sealed(bytes), durability)?;
    crate::files::remove(&log_path(path))?;
    Ok(())
}

/// Appends `body` as one frame to the log of the base `at` was loaded
/// from. `Ok(false)`, and nothing written, when appending would not do:
/// the log has grown to half the base, or the base or log is no longer the
/// one loaded (another run stored or appended since); the caller then
/// stores a whole new base.
pub fn append(
    path: &Path,
    format: Format,
    at: Position,
    body: &[u8],
    durability: Durability,
) -> io::Result<bool> {
    let frame_len = (FRAME_HEAD + body.len() + CHECK) as u64;
    if at.log_len + frame_len > at.base_len / 2 {
        return Ok(false);
    }
    // Still the base that was loaded?
    let mut head = [0u8; HEADER];
    match crate::files::open(path).and_then(|mut f| f.read_exact(&mut head)) {
        Ok(()) if header(&head, format) == Some(at.generation) => {}
        _ => return Ok(false),
    }
    let log = log_path(path);
    let mut f = crate::files::open_append(&log)?;
    // Still its log, with nothing after the frames that were read?
    if f.metadata()?.len() != at.log_len {
        return Ok(false);
    }
    let mut frame = Vec::with_capacity(frame_len as usize);
    frame.extend_from_slice(&at.generation.to_le_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(body);
    let check = sha2::Sha256::digest(&frame);
    frame.extend_from_slice(&check[..CHECK]);
    // One write: a run killed during it leaves a torn frame, which
    // readers ignore. Synced when it is a commit point.
    f.write_all(&frame)?;
    if durability == Durability::Synced {
        f.sync_data()?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: Format = Format {
        magic: b"TESTLOG!",
        version: 1,
    };

    fn bodies(path: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
        let l = load(path, MAGIC).unwrap();
        (l.body().to_vec(), l.frames().map(<[u8]>::to_vec).collect())
    }

    #[test]
    fn a_single_reads_back_only_intact_and_of_its_format() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("one.bin");
        write_single(&path, MAGIC, b"body", Durability::Unsynced).unwrap();
        assert_eq!(read_single(&path, MAGIC).as_deref(), Some(&b"body"[..]));
        let other = Format {
            magic: MAGIC.magic,
            version: 2,
        };
        assert_eq!(read_single(&path, other), None);
        let mut bytes = fs_err::read(&path).unwrap();
        bytes[13] ^= 1;
        fs_err::write(&path, &bytes).unwrap();
        assert_eq!(read_single(&path, MAGIC), None);
    }

    #[test]
    fn frames_append_and_a_new_base_drops_them() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.bin");
        store(&path, MAGIC, &[7; 100], Durability::Synced).unwrap();
        let at = load(&path, MAGIC).unwrap().at;
        assert!(append(&path, MAGIC, at, b"one", Durability::Synced).unwrap());
        let at = load(&path, MAGIC).unwrap().at;
        assert!(append(&path, MAGIC, at, b"two", Durability::Synced).unwrap());
        assert_eq!(
            bodies(&path),
            (vec![7; 100], vec![b"one".to_vec(), b"two".to_vec()])
        );
        // A stale position (another run appended since) does not append.
        assert!(!append(&path, MAGIC, at, b"late", Durability::Synced).unwrap());
        // Half the base reached: the caller must store a new base.
        let at = load(&path, MAGIC).unwrap().at;
        assert!(!append(&path, MAGIC, at, &[0; 40], Durability::Synced).unwrap());
        store(&path, MAGIC, &[8; 10], Durability::Synced).unwrap();
        assert_eq!(bodies(&path), (vec![8; 10], vec![]));
        assert!(!log_path(&path).exists());
    }

    /// Guards crash safety: a torn or corrupt last frame and the log of an
    /// older base are ignored.
    #[test]
    fn torn_corrupt_and_foreign_frames_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.bin");
        store(&path, MAGIC, &[1; 100], Durability::Synced).unwrap();
        let at = load(&path, MAGIC).unwrap().at;
        assert!(append(&path, MAGIC, at, b"kept", Durability::Synced).unwrap());
        let log = log_path(&path);
        let whole = fs_err::read(&log).unwrap();
        // A second frame cut short.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..whole.len() - 3]);
        fs_err::write(&log, &torn).unwrap();
        assert_eq!(bodies(&path).1, vec![b"kept".to_vec()]);
        // One bit flipped in the first frame's body.
        let mut flipped = whole.clone();
        flipped[FRAME_HEAD] ^= 1;
        fs_err::write(&log, &flipped).unwrap();
        assert!(bodies(&path).1.is_empty());
        // The old log beside a new base (a run killed before removing it).
        store(&path, MAGIC, &[2; 100], Durability::Synced).unwrap();
        fs_err::write(&log, &whole).unwrap();
        assert!(bodies(&path).1.is_empty());
    }
}
