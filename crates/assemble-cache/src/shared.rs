//! A cache shared between machines (an OCI registry: `assemble-share`),
//! as the code that makes entries sees it: asked before an entry is made,
//! offered what was made.
//!
//! What comes from it enters the cache exactly as a local entry does: a
//! folder sealed in a temporary place, its seal compared with the listing
//! the entry was pushed with, and only then renamed in under the entry's
//! lock ([`place_sealed`]); a file with its digest link. The implementation
//! decides what a failure is: a warning and a local build, or (when the
//! shared cache is required) a [`SharedError`].

use std::io;
use std::path::Path;

use crate::seal::{Seal, seal_path};

/// What kind of entry is shared, and its tag's prefix in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedKind {
    /// A venv (`venvs/<key>`), a folder.
    Venv,
    /// The pycs of one unit's sources (`bytecode/<xx>/<key>.pyc`), many
    /// files as one entry.
    Bytecode,
    /// One patched ELF file (`elf/patched/<key>`).
    Elf,
    /// A fetched tree pinned by its NAR hash (`sources/nar-sha256-<key>`):
    /// the one kind whose key is its content's hash, checked again by the
    /// fetcher when pulled.
    Source,
}

impl SharedKind {
    /// The word for it in tags and annotations: `venv`, `pyc`, `elf`.
    pub fn word(self) -> &'static str {
        match self {
            SharedKind::Venv => "venv",
            SharedKind::Bytecode => "pyc",
            SharedKind::Elf => "elf",
            SharedKind::Source => "src",
        }
    }
}

/// An entry of the shared cache: its kind and key (the hex sha256 of
/// everything that decides its content), and what it is, for people.
#[derive(Debug, Clone)]
pub struct SharedEntry<'a> {
    pub kind: SharedKind,
    pub key: &'a str,
    /// The unit it is for, if one.
    pub unit: Option<&'a str>,
    /// `the venv of python-deps`, `the bytecode of authentik (812 sources)`.
    pub what: String,
}

/// A file or link of an entry to push: its path in the entry, where it
/// is read from, and what its record says it is.
#[derive(Debug, Clone)]
pub struct Member {
    pub path: String,
    pub from: std::path::PathBuf,
    pub kind: crate::SealedKind,
}

/// The shared cache refused or failed, and it is required.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shared cache {registry}, {what} ({tag}): {why}")]
pub struct SharedError {
    pub registry: String,
    pub what: String,
    pub tag: String,
    pub why: String,
}

/// A cache shared between machines. Each method returns `Ok` when the
/// shared cache failed but is not required (the implementation keeps the
/// warning).
pub trait Shared: Sync {
    /// Fills `into` (a path inside the cache that does not exist yet)
    /// with `entry`, sealed, its seal equal to the listing it was pushed
    /// with: `true`. `false` when the shared cache lacks it, or what it
    /// holds was refused.
    fn pull(&self, entry: &SharedEntry<'_>, into: &Path) -> Result<bool, SharedError>;

    /// Takes the file entries `entry` holds (a unit's pycs, a patched
    /// file), each written where `place` says for its name (`None`: the
    /// name is refused) unless a file with its record is there, checked
    /// against the listing as it is written, its digest link made after
    /// it: the paths written. `None` as for [`Shared::pull`]; a refused
    /// entry leaves none of its files behind.
    fn pull_files(
        &self,
        entry: &SharedEntry<'_>,
        place: &dyn Fn(&str) -> Option<std::path::PathBuf>,
    ) -> Result<Option<Vec<std::path::PathBuf>>, SharedError>;

    /// Offers `entry`, made here: its folder's paths (`""` and the folders
    /// included) or its files, each checked against its record while read.
    fn push(&self, entry: &SharedEntry<'_>, members: &[Member]) -> Result<(), SharedError>;

    /// `entry`, pulled, failed the caller's own check (`why`): counted
    /// and said as refused, or the run's error when required.
    fn refused(&self, entry: &SharedEntry<'_>, why: String) -> Result<(), SharedError>;

    /// Whether the entries the cache already holds are offered too, not
    /// only those made now (`cargo xtask cache push`).
    fn offers_all(&self) -> bool;
}

/// A shared cache as a configuration holds it.
#[derive(Clone)]
pub struct SharedCache(pub std::sync::Arc<dyn Shared + Send + Sync>);

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCache")
    }
}

impl SharedCache {
    pub fn get(&self) -> &dyn Shared {
        &*self.0
    }
}

/// The members of the sealed folder entry `seal`, for [`Shared::push`].
pub fn members_of(seal: &Seal) -> Vec<Member> {
    seal.entries()
        .iter()
        .map(|s| Member {
            path: s.path.clone(),
            from: seal.entry().join(&s.path),
            kind: s.kind.clone(),
        })
        .collect()
}

/// Renames the sealed folder `tmp` (made by [`Seal::make`] there) to
/// `entry`, and its seal beside it: the entry is complete once its seal
/// is there. Under the entry's lock.
pub fn place_sealed(tmp: &Path, entry: &Path) -> io::Result<Seal> {
    assemble_fs::files::place(tmp, entry)?;
    fs_err::rename(seal_path(tmp), seal_path(entry))?;
    Seal::load(entry).ok_or_else(|| {
        io::Error::other(format!(
            "{}: its seal did not survive being moved in",
            entry.display()
        ))
    })
}
