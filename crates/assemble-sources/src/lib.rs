//! The sources stage: everything a run makes before it can plan, and what
//! planning asks it to make.
//!
//! ```text
//! recipe ─► lock (assemble.lock fills the hashes the recipe leaves out)
//!        ─► realise each unit's source folder: a folder the recipe names,
//!           a venv built from requirements or synced from a uv project, a
//!           fetched source (vendor/, the cache, the network), a folder
//!           inside another unit's
//!        ─► assemble_plan::plan(.., Sources, &Maker) ─► desired manifest
//!                                        │
//!           Maker: the pycs, patched ELF files and recovered data scripts
//!           the plan needs, made in the cache
//! ```
//!
//! How much is made is the [`Policy`]: `Make` for a run; `Offline` fails
//! naming every input the cache and `vendor/` lack; `Look` (the `plan`
//! command's dry run) writes nothing at all, the cache included, and says
//! what a run would make instead.
//!
//! Invariants: nothing here draws on a terminal (progress goes to the
//! caller's [`Reporter`]); every entry is made in the cache under its lock
//! and sealed or given its digest link before it is used (see
//! `assemble_cache`); with `Policy::Look`, no file is created, changed or
//! removed.

mod lock;
mod make;
mod resolve;
mod vendor;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use assemble_cache::{Files, Policy, Reporter};
use assemble_plan::{Sources, WouldMake};
use assemble_python::Interpreter;
use assemble_recipe::{Recipe, Unit, UnitName};

pub use lock::{LockStatus, LockedUnit, locked_hash, resolve_lock, resolve_lock_unstored};
pub use make::Maker;
pub use vendor::{VendoredPypi, vendor_pypi};

/// What the sources stage works with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where venvs, fetched sources, pycs and patched files are kept.
    pub cache: PathBuf,
    /// The interpreter the tree is for (venvs, pycs, pip downloads).
    pub python: Interpreter,
    /// Whether what the cache lacks is made.
    pub policy: Policy,
    /// Whether uv projects' venvs are synced from `vendor/pypi` beside the
    /// recipe when it is there (not by `cargo xtask vendor`, which makes it
    /// from a venv synced from the index).
    pub vendored_pypi: bool,
    /// The cache shared between machines (`--cache-registry`), asked
    /// before a venv, a unit's bytecode or a patched ELF file is made.
    pub shared: Option<assemble_cache::SharedCache>,
}

impl Config {
    /// The shared cache, if any.
    pub(crate) fn shared(&self) -> Option<&dyn assemble_cache::Shared> {
        self.shared
            .as_ref()
            .map(|s| &*s.0 as &dyn assemble_cache::Shared)
    }
}

impl Config {
    /// The fetcher of this stage: its cache, policy and interpreter.
    pub(crate) fn fetcher<'r>(&self, reporter: &'r dyn Reporter) -> assemble_fetch::Fetcher<'r> {
        assemble_fetch::Fetcher::new(
            assemble_fetch::Config {
                policy: self.policy,
                python: Some(self.python.clone()),
                shared: self.shared.clone(),
                ..assemble_fetch::Config::new(self.cache.clone())
            },
            reporter,
        )
    }
}

/// A failure to realise a source; each names the unit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path or a key of the recipe at fault (a missing folder, a link
    /// out of a source, a recipe mistake found now).
    #[error(transparent)]
    Plan(#[from] assemble_plan::Error),
    #[error("unit {unit}: {source}")]
    Python {
        unit: UnitName,
        #[source]
        source: assemble_install::Error,
    },
    #[error("unit {unit}: {source}")]
    Fetch {
        unit: UnitName,
        #[source]
        source: assemble_fetch::Error,
    },
    /// With `--offline`, every input the cache and vendor/ lack.
    #[error("{} inputs are missing, and --offline forbids fetching them:{}", .0.len(), .0.iter().map(|e| format!("\n  {e}")).collect::<String>())]
    Offline(Vec<Error>),
    /// `--update` names no unit the lock pins.
    #[error("{message}")]
    Update { message: String },
    #[error("assemble.lock of {}", .recipe.display())]
    Lock {
        recipe: PathBuf,
        #[source]
        source: assemble_fetch::Error,
    },
    #[error("unit {unit}: {} {why}", .lock.display())]
    Locked {
        unit: UnitName,
        lock: PathBuf,
        why: &'static str,
    },
}

impl Error {
    /// The shared cache's failure, if that is what failed (it is
    /// required).
    pub fn shared(&self) -> Option<&assemble_cache::SharedError> {
        match self {
            Error::Python {
                source: assemble_install::Error::Shared(e),
                ..
            }
            | Error::Fetch {
                source: assemble_fetch::Error::Shared(e),
                ..
            }
            | Error::Plan(assemble_plan::Error::Shared(e)) => Some(e),
            _ => None,
        }
    }

    /// The cache entry found corrupt, if that is what failed (in the venv
    /// build or fetch that found it, or in planning's reads).
    pub fn corrupt(&self) -> Option<&assemble_cache::Corrupt> {
        match self {
            Error::Plan(p) => p.corrupt(),
            Error::Python {
                source: assemble_install::Error::Corrupt(c),
                ..
            }
            | Error::Fetch {
                source: assemble_fetch::Error::Corrupt(c),
                ..
            } => Some(c),
            _ => None,
        }
    }

    /// An input that only a fetch or a build could provide, refused by
    /// the policy (`--offline`, or a dry run).
    pub fn is_offline_miss(&self) -> bool {
        matches!(
            self,
            Error::Fetch {
                source: assemble_fetch::Error::Offline { .. },
                ..
            } | Error::Python {
                source: assemble_install::Error::Offline { .. },
                ..
            }
        )
    }
}

/// The units' source folders, and what realising them found.
#[derive(Debug, Default)]
pub struct Realised {
    pub sources: Sources,
    /// E.g. a vendored copy that did not match its pin and was ignored.
    pub warnings: Vec<String>,
    /// With `Policy::Look`: the units whose source the cache lacks, each
    /// with what a run would do to make it.
    pub would_make: Vec<WouldMake>,
}

/// What realising works with: the configuration, one fetcher built from
/// it, and where progress goes.
pub(crate) struct Stage<'a> {
    pub(crate) config: &'a Config,
    pub(crate) fetcher: assemble_fetch::Fetcher<'a>,
    pub(crate) reporter: &'a dyn Reporter,
}

/// Realises every unit's source folder: units with a source of their own
/// first, then those inside another's (`from`, a uv project in a unit).
/// Offline, every input the cache lacks is named, not only the first; in
/// a dry run, each is said in `would_make` and its unit left out.
pub fn realise(
    recipe: &Recipe,
    config: &Config,
    reporter: &dyn Reporter,
) -> Result<Realised, Error> {
    let fetcher = config.fetcher(reporter);
    let stage = Stage {
        config,
        fetcher,
        reporter,
    };
    let mut roots: BTreeMap<UnitName, Files> = BTreeMap::new();
    let mut realised = Realised::default();
    let (derived, direct): (Vec<&Unit>, Vec<&Unit>) =
        recipe.units.iter().partition(|u| u.source.base().is_some());
    let mut misses: Vec<Error> = Vec::new();
    // A unit whose base is missing is left out of the count.
    let mut missed: BTreeSet<&str> = BTreeSet::new();
    for unit in direct.into_iter().chain(derived) {
        if let Some(base) = unit.source.base().filter(|b| missed.contains(b)) {
            if config.policy == Policy::Look {
                realised.would_make.push(WouldMake::unit(
                    &unit.name,
                    format!("its source would be read from {base}'s, once that is made"),
                ));
            }
            missed.insert(&unit.name);
            continue;
        }
        let mut resolving = resolve::Resolving {
            stage: &stage,
            recipe,
            roots: &roots,
            warnings: &mut realised.warnings,
        };
        match resolve::resolve_source(&mut resolving, unit) {
            // A dry run's reads of a cache entry write nothing.
            Ok(root) if config.policy == Policy::Look => {
                roots.insert(unit.name.clone(), root.read_only());
            }
            Ok(root) => {
                roots.insert(unit.name.clone(), root);
            }
            Err(e) if config.policy != Policy::Make && e.is_offline_miss() => {
                missed.insert(&unit.name);
                if config.policy == Policy::Look {
                    realised.would_make.push(would_make(&e));
                } else {
                    misses.push(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    match misses.len() {
        0 => {}
        1 => return Err(misses.remove(0)),
        _ => return Err(Error::Offline(misses)),
    }
    realised.sources = Sources { roots };
    Ok(realised)
}

/// What a run would do for an input a dry run found missing.
fn would_make(e: &Error) -> WouldMake {
    match e {
        Error::Python {
            unit,
            source: assemble_install::Error::Offline { what, .. },
        } => WouldMake::unit(unit, format!("not in the cache: {what} would be built")),
        Error::Fetch {
            unit,
            source: assemble_fetch::Error::Offline { what, vendor, .. },
        } if vendor.exists() => WouldMake::unit(
            unit,
            format!(
                "not in the cache: {what} would be unpacked from {}",
                vendor.display()
            ),
        ),
        Error::Fetch {
            unit,
            source: assemble_fetch::Error::Offline { what, .. },
        } => WouldMake::unit(unit, format!("not in the cache: {what} would be fetched")),
        e => WouldMake::step(e.to_string()),
    }
}
