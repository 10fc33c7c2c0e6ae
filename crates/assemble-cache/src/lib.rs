//! The tool's cache: what it builds or fetches once and reuses in every
//! run and every output. Nothing from it enters a tree unchecked.
//!
//! # Layout
//!
//! ```text
//! <cache>/venvs/<key>/                 a venv (requirements or uv project)   sealed
//! <cache>/sources/nar-sha256-<hex>/    a fetched tree of that NAR hash         sealed
//! <cache>/sources/git-<url>-<rev>/     a git checkout pinned by commit only    sealed
//! <cache>/sources/sdist-sha256-<hex>/  an sdist's unpacked tree                sealed
//! <cache>/files/sha256-<hex>/<name>    a fetched file                          sealed
//! <cache>/tools/uv-<version>/uv        the pinned uv                           sealed
//! <cache>/bytecode/<xx>/<key>.pyc      a source's pyc                          digest
//! <cache>/elf/patched/<key>            an ELF file with its new runpath        digest
//! <cache>/scripts/sha256-<hex>         a data script recovered from a wheel    digest
//! <cache>/python/, elf/scan/, elf/libs/  facts about files (StatCache): answers, not content
//! <cache>/share/                       blobs on their way to or from a shared cache (temporary)
//! ```
//!
//! (`<key>` and the other names say what decides an entry's content; the
//! modules that make them say how.) Beside a folder entry `X` are `X.lock`,
//! held while it is made, and `X.seal`; beside a file entry `F`, its digest
//! link `F.sha256`.
//!
//! # Rules
//!
//! - **Made whole.** An entry is built in a temporary place inside the
//!   cache and renamed into place when done, under its lock: two runs that
//!   need it build it once, the second waits (and says so) and uses it.
//! - **Recorded at creation.** A folder entry is complete once its
//!   [`Seal`] is written beside it: every path, its kind, a file's sha256,
//!   executable bit and ELF magic, a link's target, and the stat of each
//!   when sealed. A file entry has its sha256 in a digest link
//!   ([`digest`]). An entry without its record is incomplete: made again.
//! - **Checked where it is used, cheaply.** A run reads an entry only
//!   through [`Files`]: a file whose stat is the sealed one (and not racy)
//!   is what the seal says without being read; any other is hashed and must
//!   match; a path the seal lacks, a folder that lost a path, a link that
//!   points elsewhere are corruption. A file entry is vouched for by the
//!   output's input stat cache, whose records of cache files are only made
//!   after such a check, and otherwise hashed against its digest link.
//! - **Corrupt means discarded.** A mismatch is a [`Corrupt`] naming the
//!   entry and the path; the entry is discarded (renamed aside, then
//!   removed) and made again, with a warning, and never copied into a tree.
//!   `cargo xtask verify --cache` re-hashes every entry ([`verify`]).
//!
//! What the seal guards against: an entry edited, truncated, replaced or
//! added to after it was made (by hand, a tool, a disk fault). Not against
//! someone who rewrites an entry and its record together: the cache is as
//! trusted as the output folder itself.

pub mod digest;
mod entry;
mod files;
mod report;
mod seal;
mod shared;
pub mod verify;

pub use entry::{discard, lock, remove};
pub use files::Files;
pub use report::{Policy, Reporter, Silent};
pub use seal::{Seal, Sealed, SealedKind, seal_path};
pub use shared::{
    Member, Shared, SharedCache, SharedEntry, SharedError, SharedKind, members_of, place_sealed,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// `X<suffix>` beside `X` (`X.seal`, `X.lock`, `F.sha256`): an entry's
/// record and lock are named after it.
pub(crate) fn beside(entry: &Path, suffix: &str) -> PathBuf {
    let mut name = entry.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    entry.with_file_name(name)
}

/// A name beside `X` no other writer uses: `X.<word>-<process>-<n>`, for a
/// temporary file renamed over something, or an entry renamed aside.
pub(crate) fn unique_beside(entry: &Path, word: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    beside(
        entry,
        &format!(
            ".{word}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ),
    )
}

/// A cache entry that no longer holds what was recorded when it was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cache entry {} is corrupt: {}: {why}", .entry.display(), .path.display())]
pub struct Corrupt {
    /// The entry: what to discard.
    pub entry: PathBuf,
    /// The path inside it at fault (the entry itself, for a file entry).
    pub path: PathBuf,
    /// What differs (`changed since it was made`, `not in the entry as it
    /// was made`).
    pub why: String,
}

/// A failure to read from the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Corrupt(#[from] Box<Corrupt>),
}

impl Error {
    pub fn corrupt(c: Corrupt) -> Error {
        Error::Corrupt(Box::new(c))
    }

    /// An I/O error that carries a [`Corrupt`] (a read of a cache entry's
    /// file through a reader that can only fail with `io::Error`) is that
    /// corruption; any other is I/O.
    pub fn from_io(e: std::io::Error) -> Error {
        match corrupt_in(&e) {
            Some(c) => Error::corrupt(c.clone()),
            None => Error::Io(e),
        }
    }
}

/// `From<std::io::Error>` (see [`Error::from_io`]) and `From<Error>` for
/// an error enum with `Io(std::io::Error)` and `Corrupt(Box<Corrupt>)`
/// variants: how the crates that read cache entries keep a corruption
/// typed whichever way it reaches them.
#[macro_export]
macro_rules! io_or_corrupt {
    ($t:ty) => {
        impl From<std::io::Error> for $t {
            fn from(e: std::io::Error) -> $t {
                $crate::Error::from_io(e).into()
            }
        }

        impl From<$crate::Error> for $t {
            fn from(e: $crate::Error) -> $t {
                match e {
                    $crate::Error::Io(e) => <$t>::Io(e),
                    $crate::Error::Corrupt(c) => <$t>::Corrupt(c),
                }
            }
        }
    };
}

/// The cache corruption an I/O error carries, if any.
pub fn corrupt_in(e: &std::io::Error) -> Option<&Corrupt> {
    e.get_ref()?.downcast_ref::<Corrupt>()
}
