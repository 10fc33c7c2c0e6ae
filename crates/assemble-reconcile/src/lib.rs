//! Reconciliation: make the output tree equal a desired manifest, and record
//! it. This crate owns all of the tool's incremental state.
//!
//! It is the only code that writes to the output. Everything else computes
//! a desired manifest ([`assemble_manifest::Target`]) in memory; [`diff`] compares it with the [`State`]
//! recorded by the previous run and with what is on disk, and [`apply`]
//! carries out only the difference. A clean build is the same code path
//! against an empty state, so an incremental result cannot take another
//! route to the tree than a clean one.
//!
//! # What goes into each key
//!
//! | key | made of | deliberately left out |
//! |---|---|---|
//! | input file (in `inputs.bin`) | keyed by (dev, inode); (size, mtime ns, ctime ns, mode) must match too -> sha256, "is ELF" | the path: the same inode with the same ctime is the same file wherever it is, and paths cost more to store, load and hash than the rest of the record; "newer than" comparisons: `mv` and restored mtimes defeat them; ctime, which no tool can set back, catches an edit that keeps size and mtime |
//! | output entry (in `state.bin`) | kind; sha256 and executable bit, or link target; the unit and the sha256 of the input it was made from (what a reason needs); the stat of the file as written | owners, times and permission bits other than "executable": files are 0644/0755, folders 0755, as a NAR restores them; the step and source path, which the plan knows each run |
//! | unit fingerprint | named components: each part of the unit's recipe section (source, install, executable, symlinks, scripts, each patch), and the environment (tool version, interpreter, prefix, bash, web UI, autoPatchelf settings); built from typed, normalised values (paths absolute and normalised, so `./demo` and `demo` agree; mappings and marks sorted; patches in order, as JSON) | the input files: they are keyed one by one, above; the order mappings are written in, which does not change the output; `Debug` strings, whose format is the compiler's |
//!
//! Two output entries are *equal* when kind, content hash, executable bit and
//! link target are; a change of provenance alone rewrites nothing.
//!
//! A clean build may leave a copy's content hash to the copy (its digest is
//! [`assemble_manifest::Digest::AfterCopy`], a value that cannot be compared
//! by mistake): the apply hashes the bytes as it copies them and records
//! that hash, for the output and in the input cache. A diff against a
//! recorded state refuses such entries;
//! [`assemble_manifest::Target::hash_deferred`] computes them first.
//!
//! An input entry is *racily clean* when its mtime or ctime is within a second
//! of the start of the run that hashed it: the file may have changed again in
//! the same timestamp tick. Such entries are re-hashed by the next run (as
//! git does with its index).
//!
//! # On-disk layout
//!
//! The state lives outside the output, in a folder of the state base (by
//! default `<cargo target dir>/assemble-state`) named by the sha256 of the
//! output's canonical path (see [`Layout`]), as cargo keeps fingerprints
//! beside its artifacts rather than in them:
//!
//! ```text
//! <state>/owner.bin    the output folder's device and inode: whose state this is
//! <state>/state.bin    the recorded manifest and unit fingerprints
//! <state>/state.log    changes to state.bin since it was written
//! <state>/inputs.bin   the input stat cache
//! <state>/inputs.log   changes to inputs.bin since it was written
//! <state>/journal.bin  paths a run is changing (only while it runs)
//! <state>/lock         held exclusively while the output is changed
//! <state>/nar-hash     the output's NAR hash, for the digest of the manifest
//!                      it was computed from (text: version, digest, SRI)
//! ```
//!
//! Every file starts with a magic and [`assemble_manifest::STATE_VERSION`], which is bumped
//! when a format changes, and ends with a checksum; a `.log` holds
//! checksummed frames of its base's generation, applied in order, and a
//! torn or foreign frame ends it (see the `log` module). A missing,
//! corrupt or other-version state, or one that names a path that is not a
//! plain relative path, means a clean reconcile (never an error, never an
//! instruction). The files are read and replaced without following links
//! planted at their names, through exclusively created temporary files.
//!
//! # Ownership
//!
//! A run changes an output only if `owner.bin` names that very folder (same
//! device and inode). An empty or missing `--out` is claimed (any state left
//! for an earlier folder at that path is dropped); a non-empty one that is
//! not the state's owner is refused, whatever it holds: nothing in the
//! output can forge ownership. An output moved with `mv` is refused at its
//! new path (its state is keyed by the old one); moved back, it is the
//! tool's again.
//!
//! # Confinement
//!
//! Every operation on the output goes through a [`root::Root`], a handle on
//! the output folder: paths resolve beneath it and never through a link
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). The manifest is
//! keyed by [`assemble_manifest::OutPath`], which only [`path::check`]ed strings become, and
//! the diff checks that nothing is beneath a file or a link of the manifest,
//! before the first write.
//!
//! # When state is written
//!
//! Before the first change, `journal.bin` records every path about to
//! change; loading the state moves those paths from `entries` to
//! `pending`. Then stale and foreign paths are removed (deepest first),
//! folders created, and files and links written, each to a temporary name
//! in its target folder (`.assemble-tmp-` and 16 hex digits, whatever the
//! length of the name) and renamed over the old one. Last, what changed in
//! the record is appended to `state.log` and synced: the commit point (or,
//! once the log is half the size of `state.bin`, or half the base's records
//! are gone, the whole state is rewritten, synced with its folder, and the
//! log dropped), the input cache likewise, and the journal removed. A run
//! killed at any
//! instant leaves a state whose `entries` are all true and whose `pending`
//! paths the next run rewrites or removes, sweeping temporary files.
//!
//! # Drift
//!
//! Every recorded output path is `lstat`ed each run, in a [`Snapshot`]
//! taken while the plan is computed, before the lock; under the lock it is
//! taken again if `owner.bin`, `state.bin`, `state.log` or `journal.bin` is
//! not as it read them, or the output is another folder (another run
//! finished, claimed it, or was killed in between). A path whose stat differs
//! from the recorded one is re-hashed: other content means "modified outside
//! the tool", restored; same content just refreshes the record. A folder
//! whose stat changed is listed, and anything in it the recipe does not
//! produce was added outside the tool and is removed (a name that is not
//! UTF-8 too, by its bytes). A folder whose mode is not 0755, and a link
//! where a folder belongs, are drift: the link itself is removed, never
//! what it points to.
//!
//! # Why a path or unit is dirty
//!
//! [`Reason`] and [`DirtyReason`] print plain sentences, cargo-style.

use std::fmt;
use std::io;
use std::path::PathBuf;

use assemble_manifest::{UnitName, path};
use serde::Serialize;

mod apply;
mod diff;
mod export;
mod link;
mod mode;
pub mod root;
mod state;
mod verify;

pub use apply::{How, Outcome, UnitCounts, apply, predict, unit_counts};
pub use diff::{Change, Delta, Diff, DirtyReason, Snapshot, UnitStatus, diff, diff_snapshot};
pub use export::{TarShape, nar_hash, write_nar, write_tar, write_tar_where};
pub use link::LinkFrom;
pub use mode::{LinkMode, Writing};
pub use state::{Entries, Layout, Lock, Recorded, State};
pub use verify::{Difference, NarCheck, verify, verify_nar_hash};

/// An error of this crate; each names the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(
        "refusing to write into {}: it is not empty and `cargo xtask assemble` holds no state for it (that state would be in {}); choose a new or empty --out, or remove the folder. An output moved with `mv` is not followed: move it back, or remove it and assemble again",
        .out.display(), .state.display()
    )]
    NotOwned { out: PathBuf, state: PathBuf },
    #[error("unit {unit}: {source}")]
    BadPath {
        unit: UnitName,
        source: path::PathError,
    },
    #[error(
        "{path} (unit {unit}) would be written beneath {parent}, which unit {parent_unit} makes a {what}; a {what} cannot hold files: change one of the two units' install targets"
    )]
    UnderNonFolder {
        path: String,
        unit: UnitName,
        parent: String,
        parent_unit: UnitName,
        what: &'static str,
    },
    #[error(
        "{}: no state recorded by `cargo xtask assemble` for this folder (never assembled, or moved since): assemble it first",
        .0.display()
    )]
    NoState(PathBuf),
    #[error("{}: {why}; assemble it again first", .path.display())]
    Changed { path: PathBuf, why: &'static str },
}

impl Error {
    /// Whether the fix is an `assemble` of the tree: it has no state, or
    /// changed since its last one. The command line names the command.
    pub fn wants_assemble(&self) -> bool {
        matches!(self, Error::NoState(_) | Error::Changed { .. })
    }
}

/// Why a path is written or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The previous run did not produce this path.
    New,
    /// Its input's content changed.
    SourceChanged,
    /// Same content, executable bit flipped.
    ModeChanged,
    /// Generated or patched content changed (the recipe or environment did).
    Regenerated,
    /// A file became a folder or a link, or the other way round.
    KindChanged,
    /// Recorded, but not in the output any more.
    Missing,
    /// Changed in the output by someone else.
    Modified,
    /// In the output, but no unit produces it and the tool did not record it.
    Added,
    /// No unit produces this path any more.
    Stale,
    /// There was no usable state: everything is written, foreign paths removed.
    NoState,
    /// A previous run was stopped while changing this path.
    Interrupted,
}

impl Reason {
    /// The reason as a phrase, for the path (or its source) it is about.
    pub fn describe(&self) -> &'static str {
        match self {
            Reason::New => "added",
            Reason::SourceChanged => "changed (content)",
            Reason::ModeChanged => "changed (executable bit)",
            Reason::Regenerated => "regenerated (recipe or environment changed)",
            Reason::KindChanged => "changed kind",
            Reason::Missing => "output file removed outside the tool: restored",
            Reason::Modified => "output file modified outside the tool: restored",
            Reason::Added => "added outside the tool: removed",
            Reason::Stale => "no longer produced: removed",
            Reason::NoState => "no usable state from a previous run",
            Reason::Interrupted => "a previous run was interrupted while changing it",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}
