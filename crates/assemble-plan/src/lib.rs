//! Planning: from a recipe and its units' realised sources (see
//! `assemble-sources`), compute the desired output manifest, in memory.
//!
//! Nothing here writes: not the output (that is `assemble-reconcile`'s
//! job), not the cache (what the tree needs from it that is not there, a
//! pyc, a patched ELF file, a recovered script, is asked of a [`Make`]), not
//! the state. So any error found while planning, a missing path, a patch
//! whose pattern is gone, two units claiming one file, leaves the previous
//! output as it was, and a dry run is this same code with a `Make` that
//! makes nothing.
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

mod builder;
mod bytecode;
mod elf;
mod error;
mod fingerprint;
mod make;
mod patch;
mod unit;
mod venv;

use std::path::{Path, PathBuf};

use assemble_manifest::{InputCache, InputRecord, OutPath, Target, UnitName};
use assemble_python::Interpreter;
use assemble_recipe::{Recipe, Vars};
use rayon::prelude::*;

use builder::{Builder, Hashing, Sealed, look_up};
pub use bytecode::{Bytecode, CHECKED as CHECKED_PYCS};
pub use error::{Error, PatchMiss, found_instead};
pub use make::{CompileJob, Compiled, Make, PatchJob, PycSet, Sources, WouldMake};
pub use patch::{closest_lines, substitute};
pub use unit::{recipe_error, relative_link};

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
    /// Where built venvs, fetched sources, pycs and patched files are kept.
    pub cache: PathBuf,
    /// Leave the hashes of inputs the stat cache does not know (ELF files
    /// aside) to the copy that writes them: for a clean build, which writes
    /// every file anyway and has no record to compare hashes with.
    pub defer_hashes: bool,
}

/// The desired output and what led to it.
#[derive(Debug)]
pub struct Plan {
    /// The desired manifest, the units' fingerprints and the input cache.
    pub target: Target,
    pub warnings: Vec<String>,
    /// What the tree needs that the cache lacks and this run did not make
    /// (a dry run): one line each, naming the unit.
    pub would_make: Vec<WouldMake>,
    /// Facts computed while planning (the ELF scan, the library index),
    /// for a run that writes to keep in the cache (`Memo::store`); the
    /// planner writes nothing itself.
    pub memos: Vec<assemble_fs::Memo>,
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

/// Computes the desired output of `recipe` from its units' realised
/// `sources`; what the tree needs from the cache that is not there yet is
/// asked of `make`. A unit whose source is not realised (a dry run's) is
/// left out. Input files are hashed only when the stat cache `inputs`
/// returns does not vouch for them; it is loaded on another thread while
/// the sources are walked.
pub fn plan(
    recipe: &Recipe,
    ctx: &Context,
    sources: &Sources,
    make: &dyn Make,
    inputs: impl FnOnce() -> InputCache + Send,
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
        plan_with(recipe, ctx, sources, make, loaded)
    })
}

fn plan_with(
    recipe: &Recipe,
    ctx: &Context,
    sources: &Sources,
    make: &dyn Make,
    inputs: impl FnOnce() -> (InputCache, std::time::Duration),
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
        desired: assemble_manifest::Desired::new(),
        warnings: Vec::new(),
        sealed: Vec::new(),
        make,
        would_make: Vec::new(),
        memos: Vec::new(),
    };
    let roots = &sources.roots;
    let realised = |venv: bool| {
        recipe
            .units
            .iter()
            .filter(move |u| u.source.is_venv() == venv)
            .filter_map(|u| Some((u, roots.get(&u.name)?)))
    };
    for (unit, files) in realised(true) {
        venv::plan_venv(&mut b, recipe, unit, files, ctx, &vars)?;
    }
    for (unit, files) in realised(false) {
        unit::plan_unit(&mut b, recipe, unit, files, &vars)
            .map_err(|e| unit::venv_overlap(e, recipe, roots, ctx))?;
    }
    phases.lap("manifest");

    let (inputs, loading) = inputs();
    phases
        .laps
        .push(("input cache (beside the manifest)", loading));
    phases.lap("waiting for the input cache");

    let sealed: Sealed = std::mem::take(&mut b.sealed)
        .into_iter()
        .map(|r| ((r.stat.dev, r.stat.ino), r))
        .collect();
    let inputs_ref = &inputs;
    let hashed = std::sync::atomic::AtomicU64::new(0);
    let hashed_bytes = std::sync::atomic::AtomicU64::new(0);
    let hashing = Hashing {
        inputs: inputs_ref,
        sealed: &sealed,
        defer: ctx.defer_hashes,
        hashed: &hashed,
        hashed_bytes: &hashed_bytes,
    };
    let (elf_paths, mut records) = hash_inputs(&mut b.desired, &hashing, recipe.compile_bytecode)?;
    phases.lap("input hashes");

    let bytecode = if recipe.compile_bytecode {
        let mut counts = Bytecode::default();
        records.extend(bytecode::plan_bytecode(&mut b, ctx, &hashing, &mut counts)?);
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

    let fingerprints = fingerprint::all(recipe, ctx);
    let inputs = inputs.with_records(records);
    phases.lap("fingerprints");
    Ok(Plan {
        target: Target {
            desired: b.desired,
            units: fingerprints,
            inputs,
        },
        warnings: b.warnings,
        would_make: b.would_make,
        memos: b.memos,
        elf,
        libraries,
        hashed_files: hashed.into_inner(),
        hashed_bytes: hashed_bytes.into_inner(),
        bytecode,
        phases: phases.done(),
    })
}

/// Content hashes of everything copied, in parallel: from the seals of
/// cache entries (checked as they were walked), else from the stat cache
/// where it vouches for a file (else read, or, with `h.defer`, left to the
/// copy); the same read tells which files are ELF. Sources to compile
/// (`compile`) are hashed now whatever `h.defer` says: their hash keys the
/// bytecode. Returns the ELF files' paths and the inputs' records.
fn hash_inputs(
    desired: &mut assemble_manifest::Desired,
    h: &Hashing<'_>,
    compile: bool,
) -> Result<(Vec<OutPath>, Vec<InputRecord>), Error> {
    let looked_up: Vec<(Option<OutPath>, Option<InputRecord>)> = desired
        .par_iter_mut()
        .map(|(path, e)| {
            let h = Hashing {
                defer: h.defer && !(compile && bytecode::is_source(path)),
                ..*h
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
    Ok((elf_paths, records))
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
pub fn beneath(
    unit: &str,
    what: &'static str,
    root: &Path,
    rel: &str,
) -> Result<(PathBuf, String), Error> {
    let resolved =
        assemble_fs::resolve_beneath(root, rel).map_err(|escape| Error::LinkOutside {
            unit: UnitName::from(unit),
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
