//! Reconciliation: make the output tree equal a desired manifest, and record it.
//!
//! This crate is the only code that writes to the output. Everything else
//! computes a [`Desired`] manifest in memory; [`reconcile`] diffs it against
//! the [`State`] recorded by the previous run and applies only the difference.
//! A clean build is the same code path against an empty state.
//!
//! # What is in a manifest entry
//!
//! | field        | meaning                                                        |
//! |--------------|----------------------------------------------------------------|
//! | path         | `/`-separated, relative to the output root (the map's key)     |
//! | kind         | `dir`, `file` (sha256 of the content, executable bit) or `link` (target, verbatim) |
//! | unit, step   | provenance: the recipe unit and the step (`copy`, `patch`, `script`, ...) that produced it |
//!
//! Two entries are *equal* when their kind, content hash, executable bit and
//! link target are equal; provenance is recorded for reports but a change of
//! provenance alone rewrites nothing. Deliberately left out: owners, times and
//! the permission bits other than "executable" (files are written 0644/0755,
//! folders 0755, as a NAR would restore them), so that two builds of the same
//! inputs are identical wherever they run.
//!
//! # On-disk layout
//!
//! ```text
//! <out>/.assemble/state.json   the recorded manifest (format version STATE_VERSION)
//! <out>/.assemble/lock         held exclusively for the whole run
//! ```
//!
//! The `.assemble` folder also marks the output as owned by the tool: a
//! non-empty `--out` without it is refused, so that no run ever deletes files
//! it did not create.
//!
//! # When state is written
//!
//! Before the first change, the state is rewritten with every path about to
//! change moved from `entries` to `pending`; a run killed at any instant
//! thus leaves a state whose `entries` are all true, and whose `pending`
//! paths the next run rewrites or removes (sweeping temporary files).
//!
//! The final state is written only after every file it describes is in place: first stale entries are
//! removed (deepest first), then folders are created, then files and links are
//! written, each to a temporary file in its target folder and renamed over
//! the old one, and last `state.json` is replaced the same way. A run that
//! fails part-way leaves the journal state described above.
//!
//! A state file that is missing (but the marker folder exists), unreadable,
//! or of another format version means a *full* reconcile: every desired
//! entry is written, and everything else under the output is removed.
//!
//! # Why a path is written
//!
//! [`Reason`] says it in a plain sentence: new, content changed, mode changed,
//! missing from the output, or no usable state.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod apply;
mod state;

pub use apply::{Outcome, UnitCounts, reconcile};
pub use state::{Lock, STATE_DIR, STATE_VERSION, State};

/// An error of this crate; each names the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(
        "refusing to write into {}: it is not empty and was not created by `cargo xtask assemble` (no {}/ folder); choose a new or empty --out, or remove it",
        .0.display(), STATE_DIR
    )]
    NotOwned(PathBuf),
    #[error("{}: the output path {path:?} is reserved for the tool's own state", .out.display())]
    Reserved { out: PathBuf, path: String },
}

/// A sha256 digest, printed as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn of(bytes: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// Hashes a file's content, streaming.
    pub fn of_file(path: &Path) -> io::Result<Sha256> {
        use sha2::Digest;
        let mut f = fs_err::File::open(path)?;
        let mut h = sha2::Sha256::new();
        io::copy(&mut f, &mut h)?;
        Ok(Sha256(h.finalize().into()))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hex())
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Sha256(out))
    }
}

/// What an output path is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File { sha256: Sha256, executable: bool },
    Link { target: String },
}

/// Where a file's bytes come from when it has to be written.
#[derive(Debug, Clone)]
pub enum Content {
    /// Copy this source file (its sha256 is the entry's).
    Copy(PathBuf),
    /// Write these bytes (patched or generated content).
    Bytes(Arc<[u8]>),
}

/// One desired output path.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    pub unit: Arc<str>,
    pub step: &'static str,
    /// `Some` for files only.
    pub content: Option<Content>,
}

impl Entry {
    pub fn dir(unit: &Arc<str>, step: &'static str) -> Entry {
        Entry {
            kind: Kind::Dir,
            unit: unit.clone(),
            step,
            content: None,
        }
    }

    pub fn link(unit: &Arc<str>, step: &'static str, target: impl Into<String>) -> Entry {
        Entry {
            kind: Kind::Link {
                target: target.into(),
            },
            unit: unit.clone(),
            step,
            content: None,
        }
    }

    pub fn bytes(
        unit: &Arc<str>,
        step: &'static str,
        bytes: impl Into<Arc<[u8]>>,
        executable: bool,
    ) -> Entry {
        let bytes = bytes.into();
        Entry {
            kind: Kind::File {
                sha256: Sha256::of(&bytes),
                executable,
            },
            unit: unit.clone(),
            step,
            content: Some(Content::Bytes(bytes)),
        }
    }

    pub fn copy(
        unit: &Arc<str>,
        step: &'static str,
        source: PathBuf,
        sha256: Sha256,
        executable: bool,
    ) -> Entry {
        Entry {
            kind: Kind::File { sha256, executable },
            unit: unit.clone(),
            step,
            content: Some(Content::Copy(source)),
        }
    }
}

/// The desired output: path -> entry, sorted. The root itself is implicit.
pub type Desired = BTreeMap<String, Entry>;

/// Why a path is written or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The previous run did not produce this path.
    New,
    /// Same kind, other content or link target.
    ContentChanged,
    /// Same content, executable bit flipped.
    ModeChanged,
    /// A file became a folder or a link, or the other way round.
    KindChanged,
    /// Recorded, but not in the output any more.
    Missing,
    /// There was no usable state: everything is written.
    NoState,
    /// No unit produces this path any more.
    Stale,
    /// A previous run was stopped while changing this path.
    Interrupted,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::New => "new output",
            Reason::ContentChanged => "content changed",
            Reason::ModeChanged => "executable bit changed",
            Reason::KindChanged => "kind changed",
            Reason::Missing => "missing from the output: restored",
            Reason::NoState => "no usable state from a previous run",
            Reason::Stale => "no unit produces it any more: removed",
            Reason::Interrupted => "a previous run was interrupted while writing it",
        })
    }
}
