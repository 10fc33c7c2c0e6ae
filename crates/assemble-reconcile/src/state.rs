//! The recorded state of an output, its on-disk encoding, and its lock.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Fingerprint, Kind, Sha256};

/// The folder inside the output that holds the tool's state.
pub const STATE_DIR: &str = ".assemble";

/// Bumped whenever the format of `state.bin` or `inputs.bin` changes; a file
/// of another version is read as "no state" and leads to a clean reconcile.
pub const STATE_VERSION: u32 = 3;

const STATE_FILE: &str = "state.bin";
const JOURNAL_FILE: &str = "journal.bin";
const JOURNAL_MAGIC: &[u8; 8] = b"ASMJOURN";
const LOCK_FILE: &str = "lock";
const STATE_MAGIC: &[u8; 8] = b"ASMSTATE";

/// What `lstat` says of a path, as far as change detection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            mode: m.mode(),
        }
    }

    /// `lstat` of a path, `None` when it does not exist (or cannot be read).
    pub fn lstat(path: &Path) -> Option<Stat> {
        std::fs::symlink_metadata(path).ok().map(|m| Stat::of(&m))
    }
}

/// One recorded output path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub kind: Kind,
    pub unit: String,
    pub step: String,
    pub source: Option<String>,
    pub source_sha: Option<Sha256>,
    /// The stat of the path as the tool left it.
    pub stat: Option<Stat>,
}

/// What the last run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub entries: BTreeMap<String, Recorded>,
    /// Paths a run was changing when it wrote this state: their content on
    /// disk is unknown until a run completes.
    pub pending: BTreeSet<String>,
    pub units: BTreeMap<String, Fingerprint>,
    /// The stat of the output folder itself.
    pub root: Option<Stat>,
}

impl State {
    fn path(out: &Path) -> PathBuf {
        out.join(STATE_DIR).join(STATE_FILE)
    }

    /// The recorded state, or `None` when there is none that this version of
    /// the tool can trust (missing, unreadable, corrupt, other version). The
    /// paths of a journal left by an interrupted run are moved from
    /// `entries` to `pending`.
    pub fn load(out: &Path) -> Option<State> {
        let mut state: State = read_versioned(&State::path(out), STATE_MAGIC)?;
        let journal = out.join(STATE_DIR).join(JOURNAL_FILE);
        if journal.exists() {
            let paths: BTreeSet<String> = read_versioned(&journal, JOURNAL_MAGIC)?;
            for p in paths {
                state.entries.remove(&p);
                state.pending.insert(p);
            }
        }
        Some(state)
    }

    /// Records, before the first change, every path a run is about to
    /// change: until the run completes, their content on disk is unknown.
    pub fn write_journal(out: &Path, paths: &BTreeSet<String>) -> Result<(), Error> {
        write_versioned(
            &out.join(STATE_DIR).join(JOURNAL_FILE),
            JOURNAL_MAGIC,
            paths,
        )
    }

    /// Removes the journal once the final state is stored.
    pub fn clear_journal(out: &Path) -> Result<(), Error> {
        match fs_err::remove_file(out.join(STATE_DIR).join(JOURNAL_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Replaces the state file atomically.
    pub fn store(&self, out: &Path) -> Result<(), Error> {
        write_versioned(&State::path(out), STATE_MAGIC, self)
    }
}

/// Reads `magic`, the format version and a postcard body; `None` on any
/// mismatch or error.
pub(crate) fn read_versioned<T: DeserializeOwned>(path: &Path, magic: &[u8; 8]) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    let body = bytes.strip_prefix(magic.as_slice())?;
    let (version, body) = body.split_at_checked(4)?;
    if u32::from_le_bytes(version.try_into().ok()?) != STATE_VERSION {
        return None;
    }
    postcard::from_bytes(body).ok()
}

/// Writes `magic`, the format version and `value` to a temporary file, and
/// renames it over `path`.
pub(crate) fn write_versioned<T: Serialize>(
    path: &Path,
    magic: &[u8; 8],
    value: &T,
) -> Result<(), Error> {
    let body = postcard::to_stdvec(value)
        .map_err(|e| io::Error::other(format!("{}: cannot encode: {e}", path.display())))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs_err::File::create(&tmp)?;
    f.write_all(magic)?;
    f.write_all(&STATE_VERSION.to_le_bytes())?;
    f.write_all(&body)?;
    drop(f);
    fs_err::rename(&tmp, path)?;
    Ok(())
}

/// An exclusive lock on an output's state, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: fs_err::File,
}

impl Lock {
    /// Prepares `out` for a run: refuses a non-empty folder the tool does not
    /// own, creates the state folder, and opens the lock file.
    fn open(out: &Path) -> Result<fs_err::File, Error> {
        let marker = out.join(STATE_DIR);
        match fs_err::read_dir(out) {
            Ok(mut entries) => {
                if !marker.is_dir() && entries.next().is_some() {
                    return Err(Error::NotOwned(out.to_path_buf()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs_err::create_dir_all(out)?,
            Err(e) => return Err(e.into()),
        }
        fs_err::create_dir_all(&marker)?;
        Ok(fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(marker.join(LOCK_FILE))?)
    }

    /// Takes the lock if it is free; `Ok(None)` when another run holds it.
    pub fn try_acquire(out: &Path) -> Result<Option<Lock>, Error> {
        let file = Lock::open(out)?;
        match file.file().try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", file.path().display()),
            )
            .into()),
        }
    }

    /// Waits for the lock.
    pub fn acquire(out: &Path) -> Result<Lock, Error> {
        let file = Lock::open(out)?;
        file.file().lock().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", file.path().display()),
            )
        })?;
        Ok(Lock { _file: file })
    }
}
