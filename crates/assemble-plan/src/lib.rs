//! Planning: from a recipe and a snapshot of its units' sources, compute the
//! desired output manifest, entirely in memory.
//!
//! Nothing here writes to the output (that is `assemble-reconcile`'s job),
//! so any error found while planning, a missing path, a patch whose pattern
//! is gone, two units claiming one file, leaves the previous output as it was.
//!
//! The steps, in the order the seed's installPhase runs them:
//!
//! 1. the venv unit: its tree minus `bin/`, `pyvenv.cfg` rewritten, `bin/`
//!    rebuilt (interpreter links, launchers, data scripts);
//! 2. every other unit's `install` mappings, copied with exec bits and links;
//! 3. `executable` marks, then `patch`es in recipe order;
//! 4. the top-level `symlinks`, made relative.
//!
//! Content hashes of copied files are computed last, in parallel; in a
//! clean build (`Context::defer_hashes`) only ELF files are, and the others
//! are hashed by the apply as it copies them, so each input is read once.

mod bytecode;

pub use bytecode::Bytecode;
mod elf;
mod fingerprint;
mod patch;
mod venv;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assemble_cache::Files;
use assemble_manifest::walk;
use assemble_manifest::{
    Content, Desired, Digest, Entry, InputCache, InputRecord, Kind, Lookup, OutPath, Sha256, Stat,
    Target,
};
use assemble_python::Interpreter;
use assemble_recipe::{OnMissing, Recipe, Source, Unit, Vars};
use rayon::prelude::*;

pub use patch::{closest_lines, substitute};

/// A planning error; each names the unit and the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unit {unit}: `{key}` points at {}, which {found}; fix the path in the recipe{hint}", .path.display())]
    MissingPath {
        unit: String,
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
        unit: String,
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
        first: String,
        second: String,
        /// What to change: the units' `install` mappings, or, when one of
        /// them is the venv, its `exclude`.
        fix: String,
    },
    #[error("{0}")]
    PatchNotFound(Box<PatchMiss>),
    /// A mistake in the recipe that only planning finds (an unknown
    /// variable in an output path, a script name that is not one), at its
    /// `file:line:col`.
    #[error(transparent)]
    Recipe(Box<assemble_recipe::RecipeError>),
    #[error("unit {unit}: {message}")]
    Unit { unit: String, message: String },
    #[error("unit {unit}: {source}")]
    Python {
        unit: String,
        #[source]
        source: assemble_python::Error,
    },
    #[error("unit {unit}: {source}")]
    Fetch {
        unit: String,
        #[source]
        source: assemble_fetch::Error,
    },
    #[error(transparent)]
    Elf(#[from] assemble_elf::Error),
    /// A cache entry is not what it was made as: discard it and plan again.
    #[error(transparent)]
    Corrupt(Box<assemble_cache::Corrupt>),
    /// An output path breaks the rules of output paths (a name too long,
    /// a `..` from a variable's value): found before anything is written.
    #[error("unit {unit}: {source}")]
    BadPath {
        unit: String,
        source: assemble_manifest::path::PathError,
    },
    #[error(transparent)]
    Io(std::io::Error),
    /// With `--offline`, every input the cache and vendor/ lack.
    #[error("{} inputs are missing, and --offline forbids fetching them:{}", .0.len(), .0.iter().map(|e| format!("\n  {e}")).collect::<String>())]
    Offline(Vec<Error>),
}

impl From<std::io::Error> for Error {
    /// An I/O error carrying a cache entry's corruption (a venv's metadata
    /// is read through a reader that fails with `io::Error`) is that
    /// corruption.
    fn from(e: std::io::Error) -> Error {
        match assemble_python::corrupt_in(&e) {
            Some(c) => Error::Corrupt(Box::new(c.clone())),
            None => Error::Io(e),
        }
    }
}

impl From<assemble_cache::Error> for Error {
    fn from(e: assemble_cache::Error) -> Error {
        match e {
            assemble_cache::Error::Io(e) => Error::Io(e),
            assemble_cache::Error::Corrupt(c) => Error::Corrupt(c),
        }
    }
}

impl Error {
    /// The cache entry found corrupt, if that is what failed (directly, or
    /// in the venv build or fetch that found it).
    pub fn corrupt(&self) -> Option<&assemble_cache::Corrupt> {
        match self {
            Error::Corrupt(c)
            | Error::Python {
                source: assemble_python::Error::Corrupt(c),
                ..
            }
            | Error::Fetch {
                source: assemble_fetch::Error::Corrupt(c),
                ..
            } => Some(c),
            _ => None,
        }
    }

    /// An input that only a fetch or a build could provide, refused
    /// because of `--offline`.
    pub fn is_offline_miss(&self) -> bool {
        matches!(
            self,
            Error::Fetch {
                source: assemble_fetch::Error::Offline { .. },
                ..
            } | Error::Python {
                source: assemble_python::Error::Offline { .. },
                ..
            }
        )
    }
}

/// What is at `path` for [`Error::MissingPath`], where `wanted` (`a
/// folder`) belongs.
fn found_instead(path: &Path, wanted: &str) -> String {
    match assemble_fs::files::describe(path) {
        None => "does not exist".to_string(),
        Some(f) => format!("is {f}, not {wanted}"),
    }
}

/// A patch whose pattern is not in its file.
#[derive(Debug)]
pub struct PatchMiss {
    pub unit: String,
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

/// Everything a plan depends on besides the recipe.
#[derive(Debug, Clone)]
pub struct Context {
    /// `@out@`: the runtime prefix.
    pub prefix: String,
    pub python: Interpreter,
    /// `@bash@`.
    pub bash: PathBuf,
    /// `@webui@`, if given.
    pub webui: Option<String>,
    /// Where built venvs and fetched sources are kept.
    pub cache: PathBuf,
    /// Fail instead of fetching what the cache and vendor/ lack.
    pub offline: bool,
    /// Leave the hashes of inputs the stat cache does not know (ELF files
    /// aside) to the copy that writes them: for a clean build, which writes
    /// every file anyway and has no record to compare hashes with.
    pub defer_hashes: bool,
    /// Draw download bars on a terminal (the command line's choice).
    pub progress_bars: bool,
}

/// What planning found for one unit.
#[derive(Debug, Clone)]
pub struct UnitPlan {
    pub name: String,
    /// The folder the unit's files come from.
    pub root: PathBuf,
}

/// The desired output and what led to it.
#[derive(Debug)]
pub struct Plan {
    /// The desired manifest, the units' fingerprints and the input cache.
    pub target: Target,
    pub units: Vec<UnitPlan>,
    pub warnings: Vec<String>,
    /// autoPatchelf's decision for every dynamic ELF file.
    pub elf: Vec<assemble_elf::Decision>,
    /// The tree's run-time library list: every library its ELF files need,
    /// where it resolved, and who needs it.
    pub libraries: Vec<assemble_elf::Library>,
    /// Input files read to hash them (the stat cache vouched for the rest).
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    /// What `[python] compile-bytecode` did; `None` when it is off.
    pub bytecode: Option<Bytecode>,
    /// How long each planning phase took, in order.
    pub phases: Vec<(&'static str, std::time::Duration)>,
}

/// Something to tell the user while planning: planning can take seconds,
/// or minutes, when the cache is cold.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// Slow work starts (a venv built, a source fetched).
    Start(&'a str),
    /// A line of a tool's own progress during it (the installer's).
    Output(&'a str),
    /// Another run holds the lock on what this one needs (`the venv of
    /// python-deps`): this one waits for it, then uses what it made.
    Waiting(&'a str),
}

/// Where planning's [`Step`]s go.
pub type Progress<'a> = &'a (dyn Fn(Step<'_>) + Sync);

/// Computes the desired output of `recipe`. Input files are hashed only
/// when the stat cache `inputs` returns does not vouch for them; it is
/// loaded on another thread while the sources are walked.
pub fn plan(
    recipe: &Recipe,
    ctx: &Context,
    inputs: impl FnOnce() -> InputCache + Send,
    progress: Progress<'_>,
) -> Result<Plan, Error> {
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            let start = std::time::Instant::now();
            (inputs(), start.elapsed())
        });
        let loaded = || {
            loading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        plan_with(recipe, ctx, loaded, progress)
    })
}

fn plan_with(
    recipe: &Recipe,
    ctx: &Context,
    inputs: impl FnOnce() -> (InputCache, std::time::Duration),
    progress: Progress<'_>,
) -> Result<Plan, Error> {
    let mut phases = Phases::start();
    let vars = Vars {
        out: ctx.prefix.clone(),
        site: ctx.python.site_packages(),
        python: ctx.python.executable.to_string_lossy().into_owned(),
        bash: ctx.bash.to_string_lossy().into_owned(),
        webui: ctx.webui.clone(),
    };
    let mut b = Builder {
        desired: Desired::new(),
        warnings: Vec::new(),
        sealed: Vec::new(),
    };

    // Resolve every unit's source folder first: fetching and venv building
    // are the slow parts, and a missing path should fail before any work.
    // `from` units come second: they read another unit's source.
    let mut fetcher = assemble_fetch::Fetcher::new(ctx.cache.clone());
    fetcher.offline = ctx.offline;
    fetcher.python = Some(ctx.python.clone());
    fetcher.progress_bar = ctx.progress_bars;
    let mut roots: BTreeMap<String, Files> = BTreeMap::new();
    let (derived, direct): (Vec<&Unit>, Vec<&Unit>) =
        recipe.units.iter().partition(|u| u.source.base().is_some());
    // Offline, every input the cache lacks is named, not only the first:
    // a unit whose base is missing is left out of the count.
    let mut misses: Vec<Error> = Vec::new();
    let mut missed: BTreeSet<&str> = BTreeSet::new();
    for unit in direct.into_iter().chain(derived) {
        if unit.source.base().is_some_and(|b| missed.contains(b)) {
            continue;
        }
        match resolve_source(
            recipe,
            unit,
            ctx,
            &fetcher,
            &roots,
            &mut b.warnings,
            progress,
        ) {
            Ok(root) => {
                roots.insert(unit.name.clone(), root);
            }
            Err(e) if ctx.offline && e.is_offline_miss() => {
                missed.insert(&unit.name);
                misses.push(e);
            }
            Err(e) => return Err(e),
        }
    }
    match misses.len() {
        0 => {}
        1 => return Err(misses.remove(0)),
        _ => return Err(Error::Offline(misses)),
    }
    phases.lap("sources");

    for unit in recipe.units.iter().filter(|u| u.source.is_venv()) {
        venv::plan_venv(&mut b, recipe, unit, &roots[&unit.name], ctx, &vars)?;
    }
    for unit in recipe.units.iter().filter(|u| !u.source.is_venv()) {
        plan_unit(&mut b, recipe, unit, &roots[&unit.name], &vars)
            .map_err(|e| venv_overlap(e, recipe, &roots, ctx))?;
    }
    phases.lap("manifest");

    let (inputs, loading) = inputs();
    phases
        .laps
        .push(("input cache (beside the manifest)", loading));
    phases.lap("waiting for the input cache");

    // Content hashes of everything copied, in parallel: from the seals of
    // cache entries (checked as they were walked), else from the stat cache
    // where it vouches for a file; the same read tells which files are ELF.
    type Looked = (Option<OutPath>, Option<InputRecord>);
    let sealed: Sealed = std::mem::take(&mut b.sealed)
        .into_iter()
        .map(|r| ((r.stat.dev, r.stat.ino), r))
        .collect();
    let inputs_ref = &inputs;
    let hashed = std::sync::atomic::AtomicU64::new(0);
    let hashed_bytes = std::sync::atomic::AtomicU64::new(0);
    let compile = recipe.compile_bytecode;
    let looked_up: Vec<Looked> = b
        .desired
        .par_iter_mut()
        .map(|(path, e)| {
            // Sources to compile are hashed now: their hash keys the bytecode.
            let defer = ctx.defer_hashes && !(compile && bytecode::is_source(path));
            let h = Hashing {
                inputs: inputs_ref,
                sealed: &sealed,
                defer,
                hashed: &hashed,
                hashed_bytes: &hashed_bytes,
            };
            look_up(path, e, &h)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut elf_paths = Vec::new();
    let mut records = Vec::new();
    for (elf, record) in looked_up {
        elf_paths.extend(elf);
        records.extend(record);
    }
    phases.lap("input hashes");

    let bytecode = if recipe.compile_bytecode {
        let mut counts = Bytecode::default();
        let hashing = Hashing {
            inputs: inputs_ref,
            sealed: &sealed,
            defer: ctx.defer_hashes,
            hashed: &hashed,
            hashed_bytes: &hashed_bytes,
        };
        records.extend(bytecode::plan_bytecode(
            &mut b,
            ctx,
            &hashing,
            &mut counts,
            progress,
        )?);
        phases.lap("bytecode");
        Some(counts)
    } else {
        None
    };

    let (elf, libraries) = match &recipe.autopatchelf {
        Some(ap) => {
            let (d, l, r) = elf::autopatchelf(&mut b, ap, &ctx.cache, &elf_paths, inputs_ref)?;
            records.extend(r);
            (d, l)
        }
        None => (Vec::new(), Vec::new()),
    };
    phases.lap("autopatchelf");

    let units = recipe
        .units
        .iter()
        .map(|u| UnitPlan {
            name: u.name.clone(),
            root: roots[&u.name].root().to_path_buf(),
        })
        .collect();
    let fingerprints = fingerprint::all(recipe, ctx);
    let inputs = inputs.with_records(records);
    phases.lap("fingerprints");
    Ok(Plan {
        target: Target {
            desired: b.desired,
            units: fingerprints,
            inputs,
        },
        units,
        warnings: b.warnings,
        elf,
        libraries,
        hashed_files: hashed.into_inner(),
        hashed_bytes: hashed_bytes.into_inner(),
        bytecode,
        phases: phases.done(),
    })
}

/// Wall-clock time per phase.
pub struct Phases {
    first: std::time::Instant,
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    pub fn start() -> Phases {
        let now = std::time::Instant::now();
        Phases {
            first: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Appends phases timed elsewhere, which ran up to now.
    pub fn extend(&mut self, laps: &[(&'static str, std::time::Duration)]) {
        self.laps.extend_from_slice(laps);
        self.last = std::time::Instant::now();
    }

    /// Time since the start.
    pub fn elapsed(&self) -> std::time::Duration {
        self.first.elapsed()
    }

    /// Ends the phase `name` now; the next one starts.
    pub fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    pub fn done(self) -> Vec<(&'static str, std::time::Duration)> {
        self.laps
    }
}

/// `rel` inside the source folder `root` of `unit`, its links followed
/// only while they stay inside (see [`assemble_fs::resolve_beneath`]):
/// the path, and the same relative to `root` with its links resolved.
pub(crate) fn beneath(
    unit: &str,
    what: &'static str,
    root: &Path,
    rel: &str,
) -> Result<(PathBuf, String), Error> {
    let resolved =
        assemble_fs::resolve_beneath(root, rel).map_err(|escape| Error::LinkOutside {
            unit: unit.to_string(),
            what,
            rel: rel.to_string(),
            root: root.to_path_buf(),
            escape: Box::new(escape),
        })?;
    let path = if resolved.is_empty() {
        root.to_path_buf()
    } else {
        root.join(&resolved)
    };
    Ok((path, resolved))
}

fn resolve_source(
    recipe: &Recipe,
    unit: &Unit,
    ctx: &Context,
    fetcher: &assemble_fetch::Fetcher,
    roots: &BTreeMap<String, Files>,
    warnings: &mut Vec<String>,
    progress: Progress<'_>,
) -> Result<Files, Error> {
    // `wanted`: what belongs there (`a folder`, `a regular file`).
    let missing = |key: &str, path: &Path, wanted: &str, hint: &str| Error::MissingPath {
        unit: unit.name.clone(),
        key: format!("units.{}.{key}", unit.name),
        path: path.to_path_buf(),
        found: found_instead(path, wanted),
        hint: hint.to_string(),
    };
    let py_err = |source| Error::Python {
        unit: unit.name.clone(),
        source,
    };
    match &unit.source {
        Source::Venv { path } => {
            if !path.is_dir() {
                return Err(missing(
                    "venv",
                    path,
                    "a folder",
                    " (a virtualenv folder; or build one from a requirements file with `requirements = \"...\"`)",
                ));
            }
            Ok(Files::plain(path.clone()))
        }
        Source::Path { path } => {
            if !path.is_dir() {
                return Err(missing("path", path, "a folder", ""));
            }
            Ok(Files::plain(path.clone()))
        }
        Source::Requirements { path } => {
            if !path.is_file() {
                return Err(missing("requirements", path, "a regular file", ""));
            }
            let installer = installer(recipe);
            let starting = || {
                progress(Step::Start(&format!(
                    "{}: building a virtualenv from {} with {} (once; then cached)",
                    unit.name,
                    path.display(),
                    installer.label()
                )))
            };
            let waiting = || progress(Step::Waiting(&format!("the venv of {}", unit.name)));
            assemble_python::build_venv(
                path,
                &ctx.python,
                installer,
                &ctx.cache,
                ctx.offline,
                assemble_python::Progress {
                    starting: &starting,
                    waiting: &waiting,
                    lines: &|line| progress(Step::Output(line)),
                },
            )
            .map_err(py_err)
        }
        Source::UvProject { project } => {
            let files = match project {
                assemble_recipe::Project::Path(p) => Files::plain(p.clone()),
                assemble_recipe::Project::In {
                    unit: other,
                    subdir,
                } => {
                    let base = roots.get(other).ok_or_else(|| Error::Unit {
                        unit: unit.name.clone(),
                        message: format!(
                            "uv-project names unit {other}, whose source is not resolved"
                        ),
                    })?;
                    let (_, rel) = beneath(&unit.name, "uv-project", base.root(), subdir)?;
                    base.sub(&rel)
                }
            };
            let dir = files.root();
            for file in ["pyproject.toml", "uv.lock"] {
                if !dir.join(file).is_file() {
                    return Err(missing(
                        "uv-project",
                        &dir.join(file),
                        "a regular file",
                        " (a uv project: its pyproject.toml and the uv.lock made by `uv lock`)",
                    ));
                }
            }
            let assemble_recipe::Installer::Uv { version, sha256 } = &recipe.installer else {
                return Err(recipe_error(
                    recipe,
                    &unit.name,
                    "uv-project",
                    "a uv project's venv is synced with uv: set [python] installer = \"uv==X.Y.Z\" with installer-sha256".into(),
                ));
            };
            // uv skips a `--no-install-package` it does not know: a name
            // the lock does not have would leave the package installed.
            let locked = assemble_python::locked_packages(&files).map_err(py_err)?;
            for wanted in &unit.exclude {
                let wanted_n = assemble_python::normalize_name(wanted);
                if !locked
                    .iter()
                    .any(|p| assemble_python::normalize_name(p) == wanted_n)
                {
                    let have: Vec<&str> = locked.iter().map(String::as_str).collect();
                    return Err(recipe_error(
                        recipe,
                        &unit.name,
                        &format!("{wanted:?}"),
                        format!(
                            "`exclude` names {wanted}, which {} does not have{}",
                            dir.join("uv.lock").display(),
                            assemble_recipe::suggest(wanted, &have)
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
            let starting = || {
                progress(Step::Start(&format!(
                    "{}: syncing a virtualenv from {} with uv {version} (once; then cached)",
                    unit.name,
                    dir.join("uv.lock").display()
                )))
            };
            let waiting = || progress(Step::Waiting(&format!("the venv of {}", unit.name)));
            assemble_python::sync_venv(
                &files,
                &ctx.python,
                version,
                sha256,
                &unit.exclude,
                &ctx.cache,
                ctx.offline,
                assemble_python::Progress {
                    starting: &starting,
                    waiting: &waiting,
                    lines: &|line| progress(Step::Output(line)),
                },
            )
            .map_err(py_err)
        }
        Source::Remote(remote) => {
            let vendor = recipe.dir.join("vendor").join(&unit.name);
            let fetched = fetcher
                .fetch(
                    &unit.name,
                    remote,
                    &vendor,
                    &|m| progress(Step::Start(m)),
                    &|what| progress(Step::Waiting(what)),
                )
                .map_err(|source| Error::Fetch {
                    unit: unit.name.clone(),
                    source,
                })?;
            warnings.extend(fetched.warnings);
            Ok(fetched.files)
        }
        Source::From {
            unit: other,
            subdir,
        } => {
            // The recipe guarantees `other` exists and is resolved first.
            let base = roots.get(other).ok_or_else(|| Error::Unit {
                unit: unit.name.clone(),
                message: format!("from names unit {other}, whose source is not resolved"),
            })?;
            let (p, rel) = beneath(&unit.name, "from", base.root(), subdir)?;
            if !p.is_dir() {
                return Err(missing(
                    "from",
                    &p,
                    "a folder",
                    &format!(" (`{subdir}` inside unit {other}'s source)"),
                ));
            }
            Ok(base.sub(&rel))
        }
    }
}

/// `path` as a manifest key, or the error naming its unit.
/// What [`look_up`] needs besides the entry: the input cache, whether a
/// hash may be left to the copy, and the read counters.
pub(crate) struct Hashing<'a> {
    pub inputs: &'a InputCache,
    /// What the seals of the cache entries walked vouch for.
    pub sealed: &'a Sealed,
    pub defer: bool,
    pub hashed: &'a std::sync::atomic::AtomicU64,
    pub hashed_bytes: &'a std::sync::atomic::AtomicU64,
}

/// The content hash of a copy, from the stat cache where it vouches for
/// the input, else read (or, with `defer`, left to the copy unless it is
/// ELF); the same read tells whether it is ELF. Returns the path if it is
/// ELF, and the input's record for the cache.
pub(crate) fn look_up(
    path: &OutPath,
    e: &mut Entry,
    h: &Hashing<'_>,
) -> Result<(Option<OutPath>, Option<InputRecord>), Error> {
    let (inputs, defer, hashed, hashed_bytes) = (h.inputs, h.defer, h.hashed, h.hashed_bytes);
    Ok(match (&mut e.kind, &e.content) {
        (Kind::File { sha256, executable }, Some(Content::Copy(src))) => {
            // A cache entry's file, checked against its seal when walked:
            // not an input of the output's own (not kept in its stat cache).
            if let Some(stat) = e.input_stat
                && let Some(r) = h.sealed.get(&(stat.dev, stat.ino))
                && r.stat == stat
            {
                *executable |= r.stat.mode & 0o100 != 0;
                *sha256 = Digest::Known(r.sha256);
                e.source_sha = Some(r.sha256);
                return Ok((r.elf.then(|| path.clone()), None));
            }
            let found = if defer {
                inputs.lookup_or_defer(src, e.input_stat)?
            } else {
                let (r, read) = inputs.record(src, e.input_stat)?;
                Lookup::Known(r, read)
            };
            let (r, read) = match found {
                Lookup::Known(r, read) => (r, read),
                Lookup::Deferred(stat) => {
                    *executable |= stat.mode & 0o100 != 0;
                    e.input_stat = Some(stat);
                    // Its digest stays `AfterCopy`.
                    return Ok((None, None));
                }
            };
            // Executable if the input is, or the recipe marks it.
            *executable |= r.stat.mode & 0o100 != 0;
            e.input_stat = Some(r.stat);
            if read {
                hashed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                hashed_bytes.fetch_add(r.stat.size, std::sync::atomic::Ordering::Relaxed);
            }
            *sha256 = Digest::Known(r.sha256);
            e.source_sha = Some(r.sha256);
            (r.elf.then(|| path.clone()), Some(r))
        }
        (Kind::File { .. }, Some(Content::Bytes(bytes))) => {
            (assemble_elf::is_elf(bytes).then(|| path.clone()), None)
        }
        _ => (None, None),
    })
}

/// The bytes of a desired file: its own, or its input's, read only if the
/// input is still the file the plan found (`assemble_manifest::open_input`).
pub(crate) fn read_content(e: &Entry) -> std::io::Result<Vec<u8>> {
    match &e.content {
        Some(Content::Bytes(b)) => Ok(b.to_vec()),
        Some(Content::Copy(src)) => {
            let stat = match e.input_stat {
                Some(s) => s,
                None => Stat::of(&fs_err::symlink_metadata(src)?),
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut assemble_manifest::open_input(src, &stat)?,
                &mut bytes,
            )?;
            Ok(bytes)
        }
        None => Err(std::io::Error::other("not a file")),
    }
}

fn out_path(path: String, unit: &str) -> Result<OutPath, Error> {
    OutPath::new(path).map_err(|source| bad_path(source, unit))
}

fn bad_path(source: assemble_manifest::path::PathError, unit: &str) -> Error {
    Error::BadPath {
        unit: unit.to_string(),
        source,
    }
}

/// The records of cache entries' files that their seals vouch for, by
/// (device, inode).
pub(crate) type Sealed = rustc_hash::FxHashMap<(u64, u64), InputRecord>;

/// The desired manifest under construction; enforces one owner per path.
pub(crate) struct Builder {
    pub(crate) desired: Desired,
    pub(crate) warnings: Vec<String>,
    /// The records of the cache entries' files copied so far, each checked
    /// against its entry's seal when walked.
    pub(crate) sealed: Vec<InputRecord>,
}

impl Builder {
    /// Adds an entry; folders may be shared, anything else has one producer.
    pub(crate) fn insert(&mut self, path: String, e: Entry) -> Result<(), Error> {
        if let Some(old) = self.desired.get(path.as_str()) {
            if old.kind == Kind::Dir && e.kind == Kind::Dir {
                return Ok(());
            }
            return Err(Error::Conflict {
                path,
                first: old.unit.to_string(),
                second: e.unit.to_string(),
                fix: INSTALL_FIX.to_string(),
            });
        }
        self.desired.insert(out_path(path, &e.unit)?, e);
        Ok(())
    }

    /// Adds the folders leading to `path` (not `path` itself).
    pub(crate) fn parents(&mut self, path: &str, unit: &Arc<str>) -> Result<(), Error> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if !self.desired.contains_key(dir) {
                self.insert(dir.to_string(), Entry::dir(unit, "mkdir"))?;
            }
            at += i + 1;
        }
        Ok(())
    }

    /// Copies `src` (a file, link or folder tree) to `dest`.
    /// `label` is `src`'s path relative to the unit's source, for provenance.
    /// Folders are walked in parallel, each entry stat'ed once; that stat
    /// goes with the entry to the hashing pass.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_tree(
        &mut self,
        unit: &Arc<str>,
        step: &'static str,
        files: &Files,
        src: &Path,
        label: &str,
        dest: &str,
        skip: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(), Error> {
        self.parents(dest, unit)?;
        let unit_err = |e: walk::WalkError| match e {
            walk::WalkError::NotUtf8(_) => Error::Unit {
                unit: unit.to_string(),
                message: e.to_string(),
            },
            e => Error::Io(e.into()),
        };
        // `src` is a unit's source folder, whose own path the recipe names
        // (it may be a link: a venv is often one into a store), or a path
        // inside one, resolved beneath it (`beneath`): its last part is no
        // link then. Links below it are copied as links.
        let top = fs_err::metadata(src)?;
        let mut found = vec![walk::Walked {
            rel: String::new(),
            kind: walk::FileKind::of(top.file_type()),
            stat: Stat::of(&top),
        }];
        if top.is_dir() {
            let visit = |rel: &str, _| {
                if skip(rel) {
                    walk::Visit::Skip
                } else {
                    walk::Visit::Descend
                }
            };
            found.extend(walk::walk(src, &visit).map_err(unit_err)?);
        }
        // A cache entry's files are what its seal says, or it is corrupt.
        if let Some(records) = files.check(src, &found, skip)? {
            self.sealed.extend(records);
        }
        let mut batch = Vec::with_capacity(found.len());
        for item in found {
            let rel = item.rel.as_str();
            if dest.is_empty() && rel.is_empty() {
                continue;
            }
            let path = if rel.is_empty() {
                src.to_path_buf()
            } else {
                src.join(rel)
            };
            let mut entry = match item.kind {
                walk::FileKind::Dir => Entry::dir(unit, step),
                walk::FileKind::Link => {
                    let target = fs_err::read_link(&path)?;
                    let target = target.to_str().ok_or_else(|| Error::Unit {
                        unit: unit.to_string(),
                        message: format!("{}: link target is not UTF-8", path.display()),
                    })?;
                    Entry::link(unit, step, target)
                }
                // Hash and executable bit come later, in the parallel
                // hashing pass, from this stat.
                walk::FileKind::File => Entry {
                    input_stat: Some(item.stat),
                    ..Entry::copy(unit, step, path, Digest::AfterCopy, false)
                },
                walk::FileKind::Other => {
                    return Err(Error::Unit {
                        unit: unit.to_string(),
                        message: format!(
                            "{} is not a file, folder or link (a fifo, socket or device); remove it from the source",
                            path.display()
                        ),
                    });
                }
            };
            entry.source = Some(match (label.is_empty(), rel.is_empty()) {
                (true, _) => Arc::from(rel),
                (false, true) => Arc::from(label),
                (false, false) => Arc::from(format!("{label}/{rel}")),
            });
            let out = match (dest.is_empty(), rel.is_empty()) {
                // The walk's string becomes the key: most of a venv.
                (true, _) => item.rel,
                (false, true) => dest.to_string(),
                (false, false) => format!("{dest}/{rel}"),
            };
            batch.push((out, entry));
        }
        self.insert_sorted(batch)
    }

    /// Adds entries sorted by path, as [`Builder::insert`] would one by one,
    /// but a large batch goes into the manifest in one merge, not a search
    /// per path.
    pub(crate) fn insert_sorted(&mut self, batch: Vec<(String, Entry)>) -> Result<(), Error> {
        if self.desired.is_empty() {
            // Nothing to collide with (a walk yields each path once): the
            // batch, its paths checked on every core, becomes the manifest,
            // built in bulk.
            self.desired = OutPath::new_all(batch)
                .map_err(|(source, e)| bad_path(source, &e.unit))?
                .into_iter()
                .collect();
            return Ok(());
        }
        if batch.len() * 8 < self.desired.len() {
            for (path, e) in batch {
                self.insert(path, e)?;
            }
            return Ok(());
        }
        let mut fresh = Vec::with_capacity(batch.len());
        for (path, e) in batch {
            match self.desired.get(path.as_str()) {
                None => fresh.push((out_path(path, &e.unit)?, e)),
                Some(old) if old.kind == Kind::Dir && e.kind == Kind::Dir => {}
                Some(old) => {
                    return Err(Error::Conflict {
                        first: old.unit.to_string(),
                        second: e.unit.to_string(),
                        fix: INSTALL_FIX.to_string(),
                        path,
                    });
                }
            }
        }
        let mut fresh: Desired = fresh.into_iter().collect();
        self.desired.append(&mut fresh);
        Ok(())
    }

    /// The current bytes of a desired file.
    fn content(&self, path: &str) -> Result<Vec<u8>, Error> {
        let Some(e) = self.desired.get(path) else {
            return Err(std::io::Error::other(format!("{path}: not in the tree")).into());
        };
        Ok(read_content(e)?)
    }
}

/// The tool that builds the recipe's venvs (`[python] installer`).
pub fn installer(recipe: &Recipe) -> assemble_python::Installer<'_> {
    match &recipe.installer {
        assemble_recipe::Installer::Pip => assemble_python::Installer::Pip,
        assemble_recipe::Installer::Uv { version, sha256 } => {
            assemble_python::Installer::Uv { version, sha256 }
        }
    }
}

const INSTALL_FIX: &str = "change one of their `install` mappings";

/// A conflict with the venv unit gets the way out that fits it: the other
/// unit provides a package the venv also has (as the seed installs
/// opencontainers from its own source), so the venv leaves that
/// distribution out.
fn venv_overlap(
    e: Error,
    recipe: &Recipe,
    roots: &BTreeMap<String, Files>,
    ctx: &Context,
) -> Error {
    let Error::Conflict {
        path,
        first,
        second,
        fix,
    } = e
    else {
        return e;
    };
    let Some(venv) = recipe
        .units
        .iter()
        .find(|u| u.source.is_venv() && (u.name == first || u.name == second))
    else {
        return Error::Conflict {
            path,
            first,
            second,
            fix,
        };
    };
    let other = if venv.name == first { &second } else { &first };
    let site_rel = ctx.python.site_packages();
    let dist = roots
        .get(&venv.name)
        .and_then(|files| assemble_python::read_dists(files, &files.root().join(&site_rel)).ok())
        .and_then(|dists| {
            let inside = path.strip_prefix(&format!("{site_rel}/"))?;
            dists.into_iter().find(|d| {
                d.record_paths().is_ok_and(|ps| {
                    ps.iter()
                        .any(|p| p == inside || p.starts_with(&format!("{inside}/")))
                })
            })
        })
        .map_or_else(|| "DISTRIBUTION".to_string(), |d| d.name);
    // The whole list to write, with what the unit already leaves out.
    let exclude: Vec<String> = venv
        .exclude
        .iter()
        .chain([&dist])
        .map(|d| format!("{d:?}"))
        .collect();
    Error::Conflict {
        fix: format!(
            "the venv has it too. If {other} is to provide it, leave it out of the venv: `exclude = [{}]` in [units.{}]; else change {other}'s `install` mappings",
            exclude.join(", "),
            venv.name
        ),
        path,
        first,
        second,
    }
}

/// A recipe mistake found while planning: `needle` is the text at fault
/// as written in the unit's tables.
pub(crate) fn recipe_error(recipe: &Recipe, unit: &str, needle: &str, message: String) -> Error {
    Error::Recipe(Box::new(recipe.error_at(unit, needle, message)))
}

fn plan_unit(
    b: &mut Builder,
    recipe: &Recipe,
    unit: &Unit,
    files: &Files,
    vars: &Vars,
) -> Result<(), Error> {
    let root = files.root();
    let name: Arc<str> = Arc::from(unit.name.as_str());
    // Every output path is checked after its variables are expanded: a
    // `--prefix` or `--webui` value can make `@out@/x` absolute or `@webui@/x`
    // climb out with `..`.
    let expand_path = |p: &str| -> Result<String, Error> {
        let expanded = vars
            .expand_path(p)
            .map_err(|e| recipe_error(recipe, &unit.name, p, e.to_string()))?;
        assemble_manifest::path::check(&expanded).map_err(|e| {
            recipe_error(
                recipe,
                &unit.name,
                p,
                format!("{e} (written {p:?} in the recipe)"),
            )
        })?;
        Ok(expanded)
    };
    let mut produced: Vec<String> = Vec::new();
    for (from, to) in &unit.install {
        let (src, _) = beneath(&unit.name, "install mapping", root, from)?;
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(Error::MissingPath {
                unit: unit.name.clone(),
                key: format!("units.{}.install.\"{from}\"", unit.name),
                path: src,
                found: "does not exist".to_string(),
                hint: format!(" (inside the unit's source {})", root.display()),
            });
        }
        let dest = expand_path(to)?;
        b.copy_tree(&name, "copy", files, &src, from, &dest, &|_| false)?;
        produced.push(dest);
    }
    let owns = |p: &str| {
        produced
            .iter()
            .any(|d| p == d || p.starts_with(&format!("{d}/")))
    };

    for x in &unit.executable {
        let p = expand_path(x)?;
        match b.desired.get_mut(p.as_str()) {
            Some(Entry {
                kind: Kind::File { executable, .. },
                unit: u,
                ..
            }) if owns(&p) && **u == *unit.name => *executable = true,
            _ => {
                return Err(recipe_error(
                    recipe,
                    &unit.name,
                    x,
                    format!(
                        "`executable` names {p}, which is not a file this unit installs; check the path against its `install` mappings"
                    ),
                ));
            }
        }
    }

    for (i, patch) in unit.patches.iter().enumerate() {
        let p = expand_path(&patch.file)?;
        let (source_file, executable) = match b.desired.get(p.as_str()) {
            Some(Entry {
                kind: Kind::File { executable, .. },
                content,
                ..
            }) if owns(&p) => match content {
                // Not hashed yet: the input's own executable bit counts too.
                Some(Content::Copy(s)) => (
                    s.clone(),
                    *executable || fs_err::metadata(s)?.permissions().mode() & 0o100 != 0,
                ),
                _ => (PathBuf::from(&p), *executable),
            },
            _ => {
                return Err(recipe_error(
                    recipe,
                    &unit.name,
                    &patch.file,
                    format!(
                        "patch {} names {p}, which is not a file this unit installs; check `file` against the unit's `install` mappings",
                        i + 1
                    ),
                ));
            }
        };
        let bytes = b.content(&p)?;
        // Provenance: the input before the first patch.
        let (source, source_sha) = match &b.desired[p.as_str()] {
            Entry {
                source_sha: Some(sha),
                source,
                content: Some(Content::Bytes(_)),
                ..
            } => (source.clone(), *sha),
            e => (e.source.clone(), Sha256::of(&bytes)),
        };
        let text = String::from_utf8(bytes).map_err(|_| Error::Unit {
            unit: unit.name.clone(),
            message: format!("patch {} targets {p}, which is not UTF-8 text", i + 1),
        })?;
        let pattern = vars.expand(&patch.replace);
        let with = vars.expand(&patch.with);
        let result = match substitute(&text, &pattern, &with) {
            Some(r) => r,
            None => match patch.on_missing {
                OnMissing::Fail => {
                    return Err(Error::PatchNotFound(Box::new(PatchMiss {
                        unit: unit.name.clone(),
                        index: i + 1,
                        file: p,
                        source_file,
                        closest: closest_lines(&text, &pattern, 3),
                        pattern,
                    })));
                }
                OnMissing::Warn => {
                    b.warnings.push(format!(
                        "unit {}: patch {} did not match in {p}: {pattern}",
                        unit.name,
                        i + 1
                    ));
                    text
                }
                OnMissing::Quiet => text,
            },
        };
        let mut patched = Entry::bytes(&name, "patch", result.into_bytes(), executable);
        patched.source = source;
        patched.source_sha = Some(source_sha);
        if let Some(slot) = b.desired.get_mut(p.as_str()) {
            *slot = patched;
        }
    }

    for (link, written) in &unit.symlinks {
        let link = expand_path(link)?;
        let target = expand_path(written)?;
        if !b.desired.contains_key(target.as_str()) {
            return Err(recipe_error(
                recipe,
                &unit.name,
                written,
                format!("symlink {link} points at {target}, which nothing in the output provides"),
            ));
        }
        b.parents(&link, &name)?;
        b.insert(
            link.clone(),
            Entry::link(&name, "symlink", relative_link(&link, &target)),
        )?;
    }
    Ok(())
}

/// The relative target for a link at `link` pointing at `target`, both
/// relative to the output root, so that the tree can move.
pub fn relative_link(link: &str, target: &str) -> String {
    let from: Vec<&str> = link.split('/').collect();
    let from = &from[..from.len() - 1];
    let to: Vec<&str> = target.split('/').collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_link("lifecycle", "lib/python3.11/site-packages/lifecycle"),
            "lib/python3.11/site-packages/lifecycle"
        );
        assert_eq!(relative_link("bin/python3", "bin/python3.11"), "python3.11");
        assert_eq!(relative_link("a/b/c", "a/x"), "../x");
    }
}
