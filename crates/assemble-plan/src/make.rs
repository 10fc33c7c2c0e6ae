//! What planning needs made in the cache, and who makes it.
//!
//! The planner reads sources and the cache and computes the desired
//! manifest; it never writes. Where the tree needs a cache entry that is
//! not there yet (a source's pyc, a patched ELF file, a data script
//! recovered from its wheel), it asks a [`Make`]: the sources stage
//! (`assemble-sources`) makes the entry and the planner then reads it like
//! any other; a dry run's maker makes nothing and answers `None`, and the
//! plan says what would be made instead.

use std::path::{Path, PathBuf};

use assemble_cache::Files;
use assemble_manifest::{Content, InputRecord, Sha256, UnitName};
use assemble_python::Dist;

use crate::Error;

/// The units' source folders, realised by the sources stage: every unit's
/// in a real run; in a dry run, those the cache and the recipe's paths
/// already hold (the others are planned as missing).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub roots: std::collections::BTreeMap<UnitName, Files>,
}

/// One source to compile into its cached pyc.
#[derive(Debug)]
pub struct CompileJob<'a> {
    pub unit: &'a str,
    /// Its path in the tree: the name compiled into the code objects.
    pub path: &'a str,
    /// The sha256 the source's bytes must have (it keys the pyc).
    pub sha: Sha256,
    /// The input file, or the bytes (patched content) to compile.
    pub content: &'a Content,
    /// The cache file the pyc goes to (with its digest link).
    pub pyc: PathBuf,
    /// Where the compiler's complaint is kept when it does not compile.
    pub err: PathBuf,
    /// A pyc is there, but corrupt: discarded before compiling.
    pub corrupt: bool,
}

/// The pycs of all of one unit's sources (not only those the cache
/// lacks): what a shared cache keeps as one entry.
#[derive(Debug)]
pub struct PycSet<'a> {
    pub unit: &'a str,
    /// The sha256 of its members' keys, in order: what decides its content.
    pub key: String,
    /// Each member's pyc in the cache (`<cache>/bytecode/<xx>/<key>.pyc`),
    /// in order.
    pub members: Vec<PathBuf>,
}

/// What became of a [`CompileJob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now: the pyc is in the cache.
    Done,
    /// Made by another run meanwhile: the pyc is in the cache.
    Cached,
    /// Taken from the shared cache now: the pyc is in the cache.
    Pulled,
    /// The source does not compile: why, as `compileall` says it.
    Fails(String),
}

/// The patched copy of an ELF file to make in the cache.
pub struct PatchJob<'a> {
    /// The cache file it goes to (with its digest link).
    pub dest: &'a Path,
    /// The sha256 of the input: what the patched copy is made from.
    pub input: &'a Sha256,
    /// The input's bytes, read when needed.
    pub bytes: &'a dyn Fn() -> std::io::Result<Vec<u8>>,
    pub decision: &'a assemble_elf::Decision,
}

/// Makes cache entries the plan needs. Each method returns `None` when
/// this run makes nothing (a dry run).
pub trait Make: Sync {
    /// Compiles every job's source into its pyc; one result per job.
    /// `sets` are the units' whole sets of pycs, for a shared cache: those
    /// of the jobs' units.
    fn compile(
        &self,
        jobs: &[CompileJob<'_>],
        sets: &[PycSet<'_>],
    ) -> Result<Option<Vec<Compiled>>, Error>;

    /// Makes the patched file at `job.dest`, replacing a corrupt one.
    fn patch(&self, job: &PatchJob<'_>) -> Result<Option<()>, Error>;

    /// Whether entries the cache already holds are offered to a shared
    /// cache too (`cargo xtask cache push`): then the planner hands them
    /// to [`Make::offer_pycs`] and [`Make::offer_patched`].
    fn offers(&self) -> bool {
        false
    }

    /// Offers the units' whole sets of pycs, all in the cache now.
    fn offer_pycs(&self, _sets: &[PycSet<'_>]) -> Result<(), Error> {
        Ok(())
    }

    /// Offers the patched file `dest`, in the cache (for `path`).
    fn offer_patched(&self, _dest: &Path, _path: &str) -> Result<(), Error> {
        Ok(())
    }

    /// The data script `script` of `dist`, recovered from its wheel and
    /// checked against its RECORD: the cached file and its input record.
    fn recover(&self, dist: &Dist, script: &str) -> Result<Option<(PathBuf, InputRecord)>, Error>;
}

/// Something the tree needs that the cache lacks, which this run did not
/// make (a dry run): what a run would do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WouldMake {
    /// The unit it is for; `None` for a step over the whole tree (the
    /// bytecode, autoPatchelf).
    pub unit: Option<UnitName>,
    /// What would be done: `the virtualenv of ... would be built`.
    pub what: String,
}

impl WouldMake {
    pub fn unit(unit: &UnitName, what: String) -> WouldMake {
        WouldMake {
            unit: Some(unit.clone()),
            what,
        }
    }

    pub fn step(what: String) -> WouldMake {
        WouldMake { unit: None, what }
    }
}

impl std::fmt::Display for WouldMake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.unit {
            Some(u) => write!(f, "{u}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}
