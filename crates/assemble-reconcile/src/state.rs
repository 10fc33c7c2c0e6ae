//! The recorded state of an output and the lock that guards it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Kind};

/// The folder inside the output that holds the tool's state.
pub const STATE_DIR: &str = ".assemble";

/// Bumped whenever the format of `state.json` changes; another version is
/// read as "no state" and leads to a full reconcile.
pub const STATE_VERSION: u32 = 1;

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// One recorded output path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    #[serde(flatten)]
    pub kind: Kind,
    pub unit: String,
    pub step: String,
}

/// What the last successful run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub entries: BTreeMap<String, Recorded>,
    /// Paths a run was changing when it wrote this state: their content on
    /// disk is unknown until a run completes.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub pending: BTreeSet<String>,
}

impl State {
    fn path(out: &Path) -> PathBuf {
        out.join(STATE_DIR).join(STATE_FILE)
    }

    /// The recorded state, or `None` when there is none that this version of
    /// the tool can trust (missing, unreadable, corrupt, other version).
    pub fn load(out: &Path) -> Option<State> {
        let bytes = fs_err::read(State::path(out)).ok()?;
        let state: State = serde_json::from_slice(&bytes).ok()?;
        (state.version == STATE_VERSION).then_some(state)
    }

    /// Replaces the state file atomically.
    pub fn store(&self, out: &Path) -> Result<(), Error> {
        let path = State::path(out);
        let tmp = path.with_extension("json.tmp");
        let mut f = io::BufWriter::new(fs_err::File::create(&tmp)?);
        serde_json::to_writer(&mut f, self)
            .map_err(|e| io::Error::other(format!("{}: {e}", tmp.display())))?;
        f.flush()?;
        drop(f);
        fs_err::rename(&tmp, &path)?;
        Ok(())
    }
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
