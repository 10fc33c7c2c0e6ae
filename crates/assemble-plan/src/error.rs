//! What planning can fail with: each error names the unit and the file or
//! key at fault.

use std::path::{Path, PathBuf};

use assemble_manifest::UnitName;

/// A planning error; each names the unit and the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unit {unit}: `{key}` points at {}, which {found}; fix the path in the recipe{hint}", .path.display())]
    MissingPath {
        unit: UnitName,
        key: String,
        path: PathBuf,
        /// What is there: `does not exist`, or `is a FIFO (named pipe),
        /// not a folder`.
        found: String,
        hint: String,
    },
    /// A path the recipe names inside a unit's source leads out of it
    /// through a link: refused before anything is read from it.
    #[error("unit {unit}: {what} `{rel}` in {}: {escape}; a link inside a source is installed as a link, and one on the way to a path the recipe names is followed only while it stays in the source: make the link point inside, or name what it points at from a unit of its own", .root.display())]
    LinkOutside {
        unit: UnitName,
        /// Which key names the path (`install mapping`, `from`).
        what: &'static str,
        rel: String,
        /// The unit's source folder.
        root: PathBuf,
        escape: Box<assemble_fs::Escape>,
    },
    #[error("output path {path} is produced by two units, {first} and {second}; {fix}")]
    Conflict {
        path: String,
        first: UnitName,
        second: UnitName,
        /// What to change: the units' `install` mappings, or, when one of
        /// them is the venv, its `exclude`.
        fix: String,
    },
    #[error("{0}")]
    PatchNotFound(Box<PatchMiss>),
    /// Several patches of one unit, each said as [`Error::PatchNotFound`].
    #[error("{}", .0.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("\n"))]
    PatchesNotFound(Vec<PatchMiss>),
    /// A mistake in the recipe that only planning finds (an unknown
    /// variable in an output path, a script name that is not one), at its
    /// `file:line:col`.
    #[error(transparent)]
    Recipe(Box<assemble_recipe::RecipeError>),
    #[error("unit {unit}: {message}")]
    Unit { unit: UnitName, message: String },
    /// A venv's metadata that cannot be read (RECORD, entry points).
    #[error("unit {unit}: {source}")]
    Python {
        unit: UnitName,
        #[source]
        source: assemble_python::Error,
    },
    /// Making what the plan needs in the cache failed (a compile, a
    /// patch, a recovered script): the sources stage's error, with what it
    /// was making (`bytecode`, `the wheel of dumb-init 1.2.5`).
    #[error("{what}: {source}")]
    Make {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Elf(#[from] assemble_elf::Error),
    /// The shared cache failed, and it is required.
    #[error(transparent)]
    Shared(Box<assemble_cache::SharedError>),
    /// A cache entry is not what it was made as: discard it and plan again.
    #[error(transparent)]
    Corrupt(Box<assemble_cache::Corrupt>),
    /// An output path breaks the rules of output paths (a name too long,
    /// a `..` from a variable's value): found before anything is written.
    #[error("unit {unit}: {source}")]
    BadPath {
        unit: UnitName,
        source: assemble_manifest::path::PathError,
    },
    #[error(transparent)]
    Io(std::io::Error),
}

assemble_cache::io_or_corrupt!(Error);

impl Error {
    /// The cache entry found corrupt, if that is what failed.
    pub fn corrupt(&self) -> Option<&assemble_cache::Corrupt> {
        match self {
            Error::Corrupt(c)
            | Error::Python {
                source: assemble_python::Error::Corrupt(c),
                ..
            } => Some(c),
            _ => None,
        }
    }
}

/// What is at `path` for [`Error::MissingPath`], where `wanted` (`a
/// folder`) belongs.
pub fn found_instead(path: &Path, wanted: &str) -> String {
    match assemble_fs::files::describe(path) {
        None => "does not exist".to_string(),
        Some(f) => format!("is {f}, not {wanted}"),
    }
}

/// A patch whose pattern is not in its file.
#[derive(Debug, Clone)]
pub struct PatchMiss {
    pub unit: UnitName,
    /// 1-based, in the unit's `[[units.NAME.patch]]` order.
    pub index: usize,
    /// The output path.
    pub file: String,
    /// Where the file's content came from.
    pub source_file: PathBuf,
    pub pattern: String,
    /// The lines most like the pattern: (1-based line number, text).
    pub closest: Vec<(usize, String)>,
}

impl std::fmt::Display for PatchMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "unit {}: patch {} did not match in {} (from {}):\n  pattern: {}",
            self.unit,
            self.index,
            self.file,
            self.source_file.display(),
            self.pattern
        )?;
        if self.closest.is_empty() {
            writeln!(f, "  no line of the file is close to it")?;
        } else {
            writeln!(f, "  closest line(s) of the file:")?;
            for (n, l) in &self.closest {
                writeln!(f, "  {n:>5} | {l}")?;
            }
        }
        write!(
            f,
            "Update `replace` of that patch to the file's current text, or set on-missing = \"warn\" if the change is no longer needed."
        )
    }
}

impl From<assemble_cache::SharedError> for Error {
    fn from(e: assemble_cache::SharedError) -> Error {
        Error::Shared(Box::new(e))
    }
}
