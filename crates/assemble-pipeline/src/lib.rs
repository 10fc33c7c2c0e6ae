//! The assemble pipeline, behind one entry point: [`assemble`].
//!
//! ```text
//! Options ─► Session::open: recipe, output layout, prefix, interpreter, bash
//!        ─► sources (assemble.lock, each unit's source realised)
//!        ─► plan (inputs walked and hashed) ║ beside it: snapshot of the output
//!        ─► lock ─► snapshot taken again if another run changed the state
//!        ─► hash what the plan left to the copy, if the output has a state now
//!        ─► diff ─► apply (or, for a dry run, the outcome the diff predicts)
//!        ─► Report
//! ```
//!
//! The command line (`cargo xtask assemble` and `plan`), the property and
//! crash tests and the benchmark all go through here, so the race-aware
//! order above (plan without the lock, snapshot beside it, checked again
//! under the lock; deferred hashes computed before a diff against a
//! state) is written once. A dry run is the same pipeline stopping before
//! the apply. The report is data: printing it is the caller's.
//!
//! Nothing here writes to the output but [`assemble_reconcile::apply`].

mod diagnostic;
mod json;
mod report;
mod update;

pub use assemble_sources::{LockStatus, LockedUnit};
pub use diagnostic::{Diagnostic, FailureKind};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assemble_cache::Policy;
use assemble_fs::find_program;
use assemble_plan::{Context, Phases, Plan, WouldMake};
use assemble_python::{Interpreter, carriable};
use assemble_recipe::{Recipe, RecipeError, UnitName};
use assemble_reconcile::{Diff, Layout, LinkFrom, Outcome, Snapshot, UnitStatus};
pub use assemble_reconcile::{LinkMode, Lock};
use assemble_sources::Realised;
pub use report::EventReporter;
pub use update::{Updated, update};

/// What a run is asked to do; every path absolute.
#[derive(Debug, Clone)]
pub struct Options {
    pub recipe: PathBuf,
    /// Where the tree is written.
    pub out: PathBuf,
    /// Where each output's state is kept (outside the output).
    pub state_base: PathBuf,
    /// Where built venvs and fetched sources are kept.
    pub cache: PathBuf,
    /// The path the tree will run from (`@out@`); `None`: the output's.
    pub prefix: Option<PathBuf>,
    /// `@webui@`, if given.
    pub webui: Option<String>,
    /// The interpreter to use instead of the recipe's `[python]
    /// interpreter` (`--python`): a path when it holds a `/`, else a name
    /// on PATH.
    pub python: Option<String>,
    /// Never fetch.
    pub offline: bool,
    /// Fail if the lock file lacks an entry or has a stale one, rather than
    /// resolving and recording it (`--locked`).
    pub locked: bool,
    /// Wait for another run's lock (else fail at once).
    pub wait: bool,
    /// Report the output's NAR hash (read under the lock, after the apply).
    pub nar_hash: bool,
    /// A tree assembled before (its state under `state_base`) whose files
    /// the new one hard-links where they are unchanged, instead of copying
    /// them (`deploy`'s previous generation).
    pub link_from: Option<PathBuf>,
    /// How close to a run's start an input's timestamp may be and still be
    /// trusted next time (see `assemble_manifest::RACY_WINDOW`).
    pub racy_window: Duration,
    /// The cache shared through an OCI registry (`--cache-registry`), and
    /// this tool's version for the entries it pushes. Not asked by a dry
    /// run or with `--offline`.
    pub shared: Option<(assemble_share::Settings, String)>,
    /// How copies are made (`--link-mode`).
    pub link_mode: LinkMode,
}

impl Options {
    /// Options with the defaults of the command line for the rest.
    pub fn new(recipe: PathBuf, out: PathBuf, state_base: PathBuf, cache: PathBuf) -> Options {
        Options {
            recipe,
            out,
            state_base,
            cache,
            prefix: None,
            webui: None,
            python: None,
            offline: false,
            locked: false,
            wait: true,
            nar_hash: false,
            link_from: None,
            racy_window: assemble_manifest::RACY_WINDOW,
            shared: None,
            link_mode: LinkMode::default(),
        }
    }
}

/// Whether the output is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Everything up to the diff; the outcome is what the apply would do.
    DryRun,
}

/// Something to tell the user while the run goes on.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The sources stage is doing slow work (building a venv, fetching a
    /// source, bootstrapping uv): a status line.
    Preparing(&'a str),
    /// A quieter step begins (compiling bytecode): for a spinner only.
    Step(&'a str),
    /// A line of that work's own progress (the installer's, as it writes
    /// it): for a terminal's spinner, not a log.
    Output(&'a str),
    /// Files and links written so far of those this run writes (from any
    /// of the writing threads).
    Writing { done: usize, total: usize },
    /// Another run holds a lock this one needs (on `the output DIR`, `the
    /// venv of python-deps`, `the bytecode cache`); this one waits for it.
    Waiting(&'a str),
    /// A download of `url` starts: `total` bytes, when the server says.
    Download { url: &'a str, total: Option<u64> },
    /// `.0` more bytes of the current download arrived.
    Downloaded(u64),
    /// The current download ended.
    DownloadDone,
}

/// A failed run; which kind says who must act.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recipe is malformed (found while parsing it or while planning).
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// An option's value cannot be used.
    #[error("{flag} {message}")]
    Option { flag: &'static str, message: String },
    /// The interpreter is not found, or does not answer: asked for by
    /// `--python`, or by the recipe's line at `recipe_line`.
    #[error("{}", interpreter_message(.recipe_line.as_deref(), .source))]
    Interpreter {
        recipe_line: Option<Box<assemble_recipe::Location>>,
        #[source]
        source: assemble_install::Error,
    },
    /// One of the tool's own folders is inside a unit's source, or a
    /// source inside one of them: the tree would copy the tool's files.
    #[error("{}", in_source(.flag, .unit, .dir, .source_dir, *.dir_inside))]
    InSource {
        flag: &'static str,
        unit: UnitName,
        dir: PathBuf,
        source_dir: PathBuf,
        /// The tool's folder is inside the source (else the other way).
        dir_inside: bool,
    },
    #[error("the interpreter's path {0}")]
    InterpreterPath(String),
    #[error("bash not found on PATH; @bash@ needs it (install bash)")]
    NoBash,
    #[error(transparent)]
    Plan(Box<assemble_plan::Error>),
    /// A unit's source could not be realised (a venv build, a fetch, the
    /// lock file).
    #[error(transparent)]
    Sources(Box<assemble_sources::Error>),
    #[error("hashing the inputs of {}", .recipe.display())]
    Inputs {
        recipe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the output {}", .out.display())]
    ReadOutput {
        out: PathBuf,
        #[source]
        source: Box<assemble_reconcile::Error>,
    },
    /// The output or the manifest breaks a rule (not owned, a path beneath
    /// a file): found before anything is written.
    #[error(transparent)]
    Refused(Box<assemble_reconcile::Error>),
    #[error("another assemble is writing {} (--no-wait was given)", .out.display())]
    Busy { out: PathBuf },
    /// A corrupt cache entry could not be discarded.
    #[error("discarding the corrupt cache entry {}", .entry.display())]
    Cache {
        entry: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the output {}", .out.display())]
    Write {
        out: PathBuf,
        #[source]
        source: Box<assemble_reconcile::Error>,
    },
}

impl Error {
    /// Whether the command line or the recipe is at fault (exit code 2),
    /// rather than the inputs, the output or the machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Recipe(_)
                | Error::Option { .. }
                | Error::InterpreterPath(_)
                | Error::InSource { .. }
        )
    }
}

impl From<assemble_sources::Error> for Error {
    /// A recipe mistake found while realising sources is a recipe error;
    /// `--update` naming no pinned unit, a usage error.
    fn from(e: assemble_sources::Error) -> Error {
        match e {
            assemble_sources::Error::Plan(p) => p.into(),
            assemble_sources::Error::Update { message } => Error::Option {
                flag: "--update",
                message,
            },
            e => Error::Sources(Box::new(e)),
        }
    }
}

impl From<assemble_plan::Error> for Error {
    /// A recipe mistake that only planning finds is a recipe error.
    fn from(e: assemble_plan::Error) -> Error {
        match e {
            assemble_plan::Error::Recipe(r) => Error::Recipe(*r),
            e => Error::Plan(Box::new(e)),
        }
    }
}

/// A recipe, its output and the planning context: what one run works on.
pub struct Session {
    pub recipe: Recipe,
    /// The output, and where its state lives (outside it).
    pub layout: Layout,
    pub ctx: Context,
    /// What the sources stage may make (a dry run: nothing).
    policy: Policy,
    racy_window: Duration,
    wait: bool,
    locked: bool,
    nar_hash: bool,
    /// The tree to hard-link unchanged files from, and its state.
    link_from: Option<Layout>,
    /// The cache shared through a registry, when this run may use it.
    shared: Option<std::sync::Arc<assemble_share::Remote>>,
    link_mode: LinkMode,
}

impl Session {
    /// Loads the recipe and checks the options, before anything is read
    /// from the inputs or the output. A dry run's session writes nothing,
    /// the cache included.
    pub fn open(opts: &Options, mode: Mode) -> Result<Session, Error> {
        Session::open_with(opts, mode, Recipe::load(&opts.recipe)?)
    }

    /// As [`Session::open`], with the recipe already read (and perhaps
    /// changed in memory: `update` plans a recipe it has not written).
    pub fn open_with(opts: &Options, mode: Mode, recipe: Recipe) -> Result<Session, Error> {
        let policy = match mode {
            Mode::DryRun => Policy::Look,
            Mode::Apply if opts.offline => Policy::Offline,
            Mode::Apply => Policy::Make,
        };
        let out = normalize(&opts.out);
        let layout = Layout::new(&out, &opts.state_base);
        let prefix = match &opts.prefix {
            Some(p) if p.is_absolute() => normalize(p),
            Some(p) => {
                return Err(Error::Option {
                    flag: "--prefix",
                    message: format!("{} must be an absolute path", p.display()),
                });
            }
            None => out.clone(),
        };
        if let Some(why) = carriable(&prefix.to_string_lossy()) {
            return Err(Error::Option {
                flag: "--prefix",
                message: format!("(else --out) {why}"),
            });
        }
        // Anything inside the output that the recipe does not produce is
        // removed: the tool's own folders must not be there, nor hold it.
        for (flag, dir) in [
            ("--state-dir", &opts.state_base),
            ("--cache-dir", &opts.cache),
        ] {
            let dir = normalize(dir);
            if std::fs::metadata(&dir).is_ok_and(|m| !m.is_dir())
                && let Some(what) = assemble_fs::files::describe(&dir)
            {
                return Err(Error::Option {
                    flag,
                    message: format!(
                        "{} is {what}, not a folder; name a folder (made if missing)",
                        dir.display()
                    ),
                });
            }
            if dir.starts_with(&out) || out.starts_with(&dir) {
                return Err(Error::Option {
                    flag,
                    message: format!(
                        "{} and --out {} overlap: the output is the recipe's tree alone, and what else is in it is removed; choose folders outside each other",
                        dir.display(),
                        out.display()
                    ),
                });
            }
        }
        check_sources_apart(
            &recipe,
            &[
                ("--out", &out),
                ("--state-dir", &normalize(&opts.state_base)),
                ("--cache-dir", &normalize(&opts.cache)),
            ],
        )?;
        // Found before anything is fetched or built: a missing
        // interpreter is said at once, with where it was looked for.
        let named = opts.python.as_deref();
        let interpreter_error = |source| interpreter_error(&recipe, named, source);
        let exe =
            locate_interpreter(&recipe, named, &opts.cache, policy).map_err(interpreter_error)?;
        let exe = exe.to_string_lossy();
        let python =
            assemble_install::probe_cached(&exe, &opts.cache, policy).map_err(interpreter_error)?;
        if let Some(why) = carriable(&python.executable.to_string_lossy()) {
            return Err(Error::InterpreterPath(why));
        }
        let bash = find_program("bash").ok_or(Error::NoBash)?;
        let ctx = Context {
            prefix: prefix.to_string_lossy().into_owned(),
            python,
            bash,
            webui: opts.webui.clone(),
            cache: opts.cache.clone(),
            // A clean build hashes inputs as it copies them (read once);
            // if a state turns up after all, they are hashed before the diff.
            defer_hashes: !layout.recorded(),
        };
        let shared = match &opts.shared {
            Some((settings, tool_version)) if policy == Policy::Make => {
                let origin = assemble_share::Origin {
                    package: recipe.name.clone(),
                    package_version: recipe.version.clone(),
                    tool_version: tool_version.clone(),
                };
                let remote = assemble_share::Remote::connect(settings.clone(), origin, &opts.cache)
                    .map_err(|e| Error::Option {
                        flag: "--cache-registry",
                        message: e.why,
                    })?;
                Some(std::sync::Arc::new(remote))
            }
            _ => None,
        };
        Ok(Session {
            recipe,
            layout,
            ctx,
            policy,
            racy_window: opts.racy_window,
            wait: opts.wait,
            locked: opts.locked,
            nar_hash: opts.nar_hash,
            link_from: opts
                .link_from
                .as_ref()
                .map(|p| Layout::new(&normalize(p), &opts.state_base)),
            shared,
            link_mode: opts.link_mode,
        })
    }

    /// The tree to hard-link unchanged files from, opened with its state.
    fn link_from(&self) -> Result<Option<LinkFrom>, Error> {
        let Some(layout) = &self.link_from else {
            return Ok(None);
        };
        LinkFrom::open(layout)
            .map(Some)
            .map_err(|e| Error::ReadOutput {
                out: layout.out.clone(),
                source: Box::new(e),
            })
    }

    /// The sources stage's configuration for this run.
    fn sources_config(&self) -> assemble_sources::Config {
        assemble_sources::Config {
            cache: self.ctx.cache.clone(),
            python: self.ctx.python.clone(),
            policy: self.policy,
            vendored_pypi: true,
            shared: self.shared.clone().map(|r| assemble_cache::SharedCache(r)),
        }
    }

    /// The hashes the recipe leaves to assemble.lock, resolved (and
    /// recorded); what a dry run would resolve.
    fn resolve_lock(
        &mut self,
        config: &assemble_sources::Config,
        reporter: &EventReporter<'_>,
    ) -> Result<Vec<WouldMake>, Error> {
        let (_, unlocked) = assemble_sources::resolve_lock(
            &mut self.recipe,
            &config.cache,
            config.policy,
            self.locked,
            &[],
            reporter,
        )?;
        Ok(unlocked)
    }

    /// Makes the cache hold everything the tree needs (the sources stage
    /// and the plan, as `assemble` runs them), without touching the
    /// output: `cargo xtask cache pull` and `cache push`.
    pub fn prepare(mut self, events: &(dyn Fn(Event) + Sync)) -> Result<Prepared, Error> {
        let reporter = EventReporter { events };
        let config = self.sources_config();
        self.resolve_lock(&config, &reporter)?;
        let (mut plan, _) = self.plan_discarding_corrupt(&config, &reporter)?;
        let registry = self.shared.as_ref().map(|r| {
            plan.warnings.extend(r.take_warnings());
            r.tally()
        });
        Ok(Prepared {
            name: self.recipe.name,
            version: self.recipe.version,
            warnings: plan.warnings,
            bytecode: plan.bytecode,
            registry,
        })
    }

    /// Plans, diffs and (unless a dry run) applies.
    pub fn run(self, mode: Mode, events: &(dyn Fn(Event) + Sync)) -> Result<Report, Error> {
        self.run_timed(mode, events, Phases::start(), None)
    }

    /// `held`: the output's lock, taken by the caller (`--watch` keeps it
    /// between runs); else it is taken here.
    fn run_timed(
        mut self,
        mode: Mode,
        events: &(dyn Fn(Event) + Sync),
        mut phases: Phases,
        held: Option<&Lock>,
    ) -> Result<Report, Error> {
        if let Some(l) = held
            && l.layout().state != self.layout.state
        {
            return Err(Error::Option {
                flag: "--out",
                message: format!(
                    "{} is not the output whose lock this run holds",
                    self.layout.out.display()
                ),
            });
        }
        // With --no-wait, a busy output fails the run before anything is
        // fetched or built: the lock is taken now and kept.
        let early = if held.is_some() || self.wait || mode == Mode::DryRun {
            None
        } else {
            Some(take_lock(&self.layout, false, events)?)
        };
        // The hashes the recipe leaves to assemble.lock, before planning.
        let reporter = EventReporter { events };
        let config = self.sources_config();
        let unlocked = self.resolve_lock(&config, &reporter)?;
        phases.lap("lock file");
        // Sources and plan first, without the lock (but with --no-wait):
        // they only read inputs and fill the cache, and a run that fails
        // here leaves no trace in the output. Beside them, the output's
        // state is read and its paths stat'ed.
        let (mut plan, snapshot) = self.plan_discarding_corrupt(&config, &reporter)?;
        plan.would_make.splice(0..0, unlocked);
        phases.extend(&plan.phases);
        if mode == Mode::DryRun {
            let d = self.diff(&mut plan, snapshot)?;
            phases.lap("diff");
            let outcome = assemble_reconcile::predict(&plan.target, &d);
            return Ok(self.report(plan, &d.units, outcome, mode, phases));
        }
        let owned = match (held, early) {
            (Some(_), _) => None,
            (None, Some(l)) => Some(l),
            (None, None) => Some(take_lock(&self.layout, true, events)?),
        };
        let lock = held.or(owned.as_ref()).expect("a lock is held or taken");
        phases.lap("lock");
        // Diff under the lock, against the state this run replaces: the
        // snapshot is taken again if another run stored a state meanwhile.
        let snapshot = if snapshot.is_current(&self.layout) {
            snapshot
        } else {
            Snapshot::take(&self.layout)
        };
        let d = self.diff(&mut plan, snapshot)?;
        phases.lap("diff");
        let statuses = d.units.clone();
        let written = |done, total| events(Event::Writing { done, total });
        let link = self.link_from()?;
        let how = assemble_reconcile::How {
            link_from: link.as_ref(),
            writing: assemble_reconcile::Writing::new(self.link_mode, Some(&self.ctx.cache)),
        };
        let outcome =
            assemble_reconcile::apply(&plan.target, d, lock, &how, &written).map_err(|source| {
                Error::Write {
                    out: self.layout.out.clone(),
                    source: Box::new(source),
                }
            })?;
        phases.lap("apply");
        // Under the lock, so that no other run changes the tree meanwhile.
        let nar_hash = if self.nar_hash {
            let h = assemble_reconcile::nar_hash(&self.layout).map_err(|e| Error::ReadOutput {
                out: self.layout.out.clone(),
                source: Box::new(e),
            })?;
            phases.lap("NAR hash");
            Some(h)
        } else {
            None
        };
        drop(owned);
        let remembered = outcome.nar_hash;
        let mut report = self.report(plan, &statuses, outcome, mode, phases);
        report.nar_hash = nar_hash.or(remembered);
        Ok(report)
    }

    /// The plan (see [`Session::plan_and_snapshot`]); each cache entry it
    /// finds corrupt is discarded, said in the plan's warnings, and
    /// planning starts again, which makes the entry anew. An entry found
    /// corrupt again right after it was made fails the run; so does any in
    /// a dry run, which discards nothing.
    fn plan_discarding_corrupt(
        &self,
        config: &assemble_sources::Config,
        reporter: &EventReporter<'_>,
    ) -> Result<(Plan, Snapshot), Error> {
        let mut discarded: Vec<String> = Vec::new();
        let mut seen: Vec<PathBuf> = Vec::new();
        loop {
            let e = match self.plan_and_snapshot(config, reporter) {
                Ok((mut plan, snapshot)) => {
                    discarded.append(&mut plan.warnings);
                    plan.warnings = discarded;
                    return Ok((plan, snapshot));
                }
                Err(e) => e,
            };
            let c = match &e {
                Error::Plan(p) => p.corrupt(),
                Error::Sources(s) => s.corrupt(),
                _ => None,
            };
            let Some(c) = c else { return Err(e) };
            if !self.policy.writes()
                || seen.contains(&c.entry)
                || !discardable(&c.entry, &self.ctx.cache)
            {
                return Err(e);
            }
            let what = format!("the cache entry {}", c.entry.display());
            assemble_cache::discard(&c.entry, &|| (reporter.events)(Event::Waiting(&what)))
                .map_err(|source| Error::Cache {
                    entry: c.entry.clone(),
                    source,
                })?;
            discarded.push(format!("{c}; discarded, making it again"));
            seen.push(c.entry.clone());
        }
    }

    /// The units' sources realised, then the plan; meanwhile, on another
    /// thread, a snapshot of the output.
    fn plan_and_snapshot(
        &self,
        config: &assemble_sources::Config,
        reporter: &EventReporter<'_>,
    ) -> Result<(Plan, Snapshot), Error> {
        std::thread::scope(|scope| {
            let snapshot = scope.spawn(|| {
                let start = Instant::now();
                (Snapshot::take(&self.layout), start.elapsed())
            });
            let start = Instant::now();
            let planned = assemble_sources::realise(&self.recipe, config, reporter)
                .map_err(Error::from)
                .and_then(|realised| {
                    let took = start.elapsed();
                    let maker = assemble_sources::Maker { config, reporter };
                    let window = self.racy_window;
                    let inputs = || {
                        assemble_manifest::InputCache::load_with_racy_window(
                            &self.layout.state,
                            window,
                        )
                    };
                    let Realised {
                        sources,
                        warnings,
                        would_make,
                    } = realised;
                    let mut plan =
                        assemble_plan::plan(&self.recipe, &self.ctx, &sources, &maker, inputs)?;
                    // What planning learned, kept for the next run (not by
                    // a dry run, which writes nothing): facts it computed,
                    // and the stats of cache files it checked by hash.
                    if config.policy.writes() {
                        for memo in std::mem::take(&mut plan.memos) {
                            memo.store();
                        }
                        for files in sources.roots.values() {
                            files.keep_refreshes();
                        }
                    }
                    plan.phases.insert(0, ("sources", took));
                    plan.warnings.splice(0..0, warnings);
                    plan.would_make.splice(0..0, would_make);
                    Ok(plan)
                });
            let (snapshot, took) = snapshot
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let mut plan = planned?;
            plan.phases
                .push(("output snapshot (beside the plan)", took));
            Ok((plan, snapshot))
        })
    }

    /// The plan against the output's snapshot. Hashes the plan left to the
    /// copy (it saw no state) are computed first if the output has one now.
    fn diff(&self, plan: &mut Plan, snapshot: Snapshot) -> Result<Diff, Error> {
        if !snapshot.is_full() {
            plan.target
                .hash_deferred()
                .map_err(|source| Error::Inputs {
                    recipe: self.recipe.file.clone(),
                    source,
                })?;
        }
        // What the recipe decided (paths, ownership) is the message itself;
        // an I/O error is said with the output it happened in.
        assemble_reconcile::diff_snapshot(&plan.target, snapshot).map_err(|e| match e {
            assemble_reconcile::Error::Io(_) => Error::ReadOutput {
                out: self.layout.out.clone(),
                source: Box::new(e),
            },
            e => Error::Refused(Box::new(e)),
        })
    }

    fn report(
        self,
        plan: Plan,
        statuses: &BTreeMap<UnitName, UnitStatus>,
        outcome: Outcome,
        mode: Mode,
        phases: Phases,
    ) -> Report {
        let dry_run = mode == Mode::DryRun;
        let mut plan = plan;
        let registry = self.shared.as_ref().map(|r| {
            plan.warnings.extend(r.take_warnings());
            r.tally()
        });
        let units = self
            .recipe
            .units
            .iter()
            .map(|u| {
                let c = outcome.units.get(&u.name).cloned().unwrap_or_default();
                // A unit whose source a dry run did not make is not fresh,
                // whatever its (unplanned) paths say.
                let unmade = plan
                    .would_make
                    .iter()
                    .any(|w| w.unit.as_ref() == Some(&u.name));
                let status = if unmade {
                    Status::Dirty
                } else if c.written + c.removed == 0 {
                    Status::Fresh
                } else if dry_run {
                    Status::Dirty
                } else {
                    Status::Built
                };
                UnitReport {
                    name: u.name.clone(),
                    status,
                    entries: c.entries,
                    written: c.written,
                    removed: c.removed,
                    patches: u.patches.len(),
                    reasons: statuses
                        .get(&u.name)
                        .map(|s| s.reasons.clone())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let elapsed = phases.elapsed();
        Report {
            output: self.layout.out,
            prefix: self.ctx.prefix,
            installer: self.recipe.installer.label(),
            interpreter: self.ctx.python.executable.clone(),
            python_version: self.ctx.python.full_version.clone(),
            nar_hash: None,
            name: self.recipe.name,
            version: self.recipe.version,
            dry_run,
            units,
            outcome,
            phases: phases.done(),
            elapsed,
            plan,
            registry,
            link_mode: self.link_mode,
        }
    }
}

/// Whether the tool may discard `entry` of the cache `cache`: only an
/// entry whose folder, links resolved, is inside the cache's own folder,
/// at least two levels below it (`venvs/<key>`: never the cache or one of
/// its kinds). A kind folder that is a link to somewhere else (`venvs ->
/// /shared/venvs`) is someone's choice: what is there is not deleted; the
/// run fails instead, naming the entry.
fn discardable(entry: &Path, cache: &Path) -> bool {
    let (Some(parent), Some(name)) = (entry.parent(), entry.file_name()) else {
        return false;
    };
    let real = assemble_fs::canonical(parent).join(name);
    real.strip_prefix(assemble_fs::canonical(cache))
        .is_ok_and(|rel| rel.components().count() >= 2)
}

/// The message of [`Error::InSource`]: which folder is inside which, what
/// that would do, and the way out.
fn in_source(flag: &str, unit: &str, dir: &Path, source: &Path, dir_inside: bool) -> String {
    let (dir, source) = (dir.display(), source.display());
    let place = if dir_inside {
        format!("{flag} {dir} is inside the source of unit {unit} ({source})")
    } else {
        format!("the source of unit {unit} ({source}) is inside {flag} {dir}")
    };
    let (what, fix) = match flag {
        "--out" => (
            "the tree would copy itself and grow every run",
            "an output folder",
        ),
        "--state-dir" => (
            "the tool's state would be copied into the tree",
            "a state folder",
        ),
        _ => (
            "built venvs and fetched sources would be copied into the tree",
            "a cache folder",
        ),
    };
    format!("{place}: {what}; choose {fix} apart from every unit's source")
}

/// Refuses a tool folder (`--out`, `--state-dir`, `--cache-dir`) inside a
/// local source the tree copies (a `path` or `venv` unit), or such a
/// source inside one of them, comparing paths with their links resolved.
/// A remote source lives in the cache by design, and is never a folder
/// the user chose.
fn check_sources_apart(recipe: &Recipe, dirs: &[(&'static str, &Path)]) -> Result<(), Error> {
    let dirs: Vec<(&'static str, PathBuf)> = dirs
        .iter()
        .map(|(flag, d)| (*flag, assemble_fs::canonical(d)))
        .collect();
    for unit in &recipe.units {
        let source = match &unit.source {
            assemble_recipe::Source::Path { path } | assemble_recipe::Source::Venv { path } => {
                assemble_fs::canonical(path)
            }
            _ => continue,
        };
        for (flag, dir) in &dirs {
            if dir.starts_with(&source) || source.starts_with(dir) {
                return Err(Error::InSource {
                    flag,
                    unit: unit.name.clone(),
                    dir: dir.clone(),
                    dir_inside: dir.starts_with(&source),
                    source_dir: source,
                });
            }
        }
    }
    Ok(())
}

/// Why the interpreter `named` (`--python`), or else the recipe's, cannot
/// be used: said of the flag or of the recipe's line.
pub fn interpreter_error(
    recipe: &Recipe,
    named: Option<&str>,
    mut source: assemble_install::Error,
) -> Error {
    let recipe_line = named
        .is_none()
        .then(|| Box::new(recipe.python_location("interpreter")));
    if let assemble_install::Error::InterpreterNotFound(nf) = &mut source {
        nf.asked_by = asked_by(recipe_line.as_deref());
    }
    Error::Interpreter {
        recipe_line,
        source,
    }
}

/// Who asked for the interpreter: the flag, or the recipe's line.
fn asked_by(recipe_line: Option<&assemble_recipe::Location>) -> String {
    match recipe_line {
        None => "--python".to_string(),
        Some(at) => format!("[python] interpreter at {at}"),
    }
}

/// The headline of an interpreter error: a missing one says itself who
/// asked; another failure (the probe) is prefixed with it.
fn interpreter_message(
    recipe_line: Option<&assemble_recipe::Location>,
    source: &assemble_install::Error,
) -> String {
    match source {
        assemble_install::Error::InterpreterNotFound(nf) => nf.to_string(),
        e => format!("{}: {e}", asked_by(recipe_line)),
    }
}

/// The recipe's interpreter: `named` (`--python`), else its name on PATH,
/// else `uv python find` with the recipe's uv when it is in `cache`, or a
/// uv on PATH (see [`assemble_install::locate`]). With `Policy::Look`, the
/// check of the cached uv writes nothing.
pub fn locate_interpreter(
    recipe: &Recipe,
    named: Option<&str>,
    cache: &Path,
    policy: Policy,
) -> Result<PathBuf, assemble_install::Error> {
    let uv = assemble_install::uv_finder(&recipe.installer, cache, policy);
    assemble_install::locate(&recipe.interpreter, named, uv.as_deref())
}

/// `cargo xtask lock`: resolves every source of the recipe at `recipe`
/// that the lock pins (fetching into `cache` what is missing, stale, or
/// named in `update`) and writes `assemble.lock` beside it.
pub fn lock(
    recipe: &Path,
    cache: &Path,
    offline: bool,
    update: &[String],
    events: &(dyn Fn(Event) + Sync),
) -> Result<Vec<LockedUnit>, Error> {
    let mut recipe = Recipe::load(recipe)?;
    let (done, _) = assemble_sources::resolve_lock(
        &mut recipe,
        cache,
        lock_policy(offline),
        false,
        update,
        &EventReporter { events },
    )?;
    Ok(done)
}

/// The recipe at `path` with the hashes it leaves to `assemble.lock` filled
/// in (resolved and recorded when missing, unless `locked` or `offline`):
/// for commands that fetch without planning (`vendor`).
pub fn locked_recipe(
    path: &Path,
    cache: &Path,
    offline: bool,
    locked: bool,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Recipe, Error> {
    let mut recipe = Recipe::load(path)?;
    assemble_sources::resolve_lock(
        &mut recipe,
        cache,
        lock_policy(offline),
        locked,
        &[],
        &EventReporter { events },
    )?;
    Ok(recipe)
}

/// `cargo xtask vendor`'s Python side: fills `dest` (`vendor/pypi`) with
/// every file the recipe's uv-project venvs are installed from (see
/// [`assemble_sources::vendor_pypi`]).
pub fn vendor_pypi(
    recipe: &Recipe,
    cache: &Path,
    python: Interpreter,
    offline: bool,
    dest: &Path,
    events: &(dyn Fn(Event) + Sync),
) -> Result<assemble_sources::VendoredPypi, Error> {
    let config = assemble_sources::Config {
        cache: cache.to_path_buf(),
        python,
        policy: lock_policy(offline),
        vendored_pypi: false,
        shared: None,
    };
    Ok(assemble_sources::vendor_pypi(
        recipe,
        &config,
        &EventReporter { events },
        dest,
    )?)
}

/// What locking may fetch: `--offline`, nothing.
fn lock_policy(offline: bool) -> Policy {
    if offline {
        Policy::Offline
    } else {
        Policy::Make
    }
}

/// Runs the pipeline: the one entry point.
pub fn assemble(
    opts: &Options,
    mode: Mode,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Report, Error> {
    assemble_with(opts, mode, Recipe::load(&opts.recipe)?, events)
}

/// As [`assemble`], with the recipe already read.
pub fn assemble_with(
    opts: &Options,
    mode: Mode,
    recipe: Recipe,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Report, Error> {
    let mut phases = Phases::start();
    let session = Session::open_with(opts, mode, recipe)?;
    phases.lap("session");
    session.run_timed(mode, events, phases, None)
}

/// The output's lock, for a caller that keeps it across runs
/// ([`assemble_holding`]): taken at once, else (unless `opts.wait` is
/// false: [`Error::Busy`]) waited for, the wait said.
pub fn lock_output(opts: &Options, events: &(dyn Fn(Event) + Sync)) -> Result<Lock, Error> {
    let layout = Layout::new(&normalize(&opts.out), &opts.state_base);
    take_lock(&layout, opts.wait, events)
}

/// The lock of the output at `layout`: taken at once; else waited for
/// (the wait said first) when `wait`, [`Error::Busy`] when not.
fn take_lock(layout: &Layout, wait: bool, events: &(dyn Fn(Event) + Sync)) -> Result<Lock, Error> {
    let refused = |e| Error::Refused(Box::new(e));
    if let Some(lock) = Lock::try_acquire(layout).map_err(refused)? {
        return Ok(lock);
    }
    if !wait {
        return Err(Error::Busy {
            out: layout.out.clone(),
        });
    }
    events(Event::Waiting(&format!(
        "the output {}",
        layout.out.display()
    )));
    Lock::acquire(layout).map_err(refused)
}

/// As [`assemble`], applying under `lock`, the output's lock the caller
/// holds (and keeps): `--watch` runs one after another without letting
/// another run in between.
pub fn assemble_holding(
    opts: &Options,
    lock: &Lock,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Report, Error> {
    let mut phases = Phases::start();
    let session = Session::open(opts, Mode::Apply)?;
    phases.lap("session");
    session.run_timed(Mode::Apply, events, phases, Some(lock))
}

/// What [`Session::prepare`] did.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The recipe's package name and version.
    pub name: String,
    pub version: String,
    pub warnings: Vec<String>,
    pub bytecode: Option<assemble_plan::Bytecode>,
    /// What the shared cache did.
    pub registry: Option<assemble_share::Tally>,
}

/// A unit's state after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing of it was written or removed.
    Fresh,
    /// Some of it was written or removed.
    Built,
    /// A dry run: some of it would be written or removed.
    Dirty,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fresh => "fresh",
            Status::Built => "built",
            Status::Dirty => "dirty",
        }
    }
}

/// What one unit's paths did.
#[derive(Debug, Clone)]
pub struct UnitReport {
    pub name: UnitName,
    pub status: Status,
    pub entries: usize,
    pub written: usize,
    pub removed: usize,
    /// The patches the recipe applies to it (its base's included).
    pub patches: usize,
    /// Why the unit is dirty (empty when fresh).
    pub reasons: Vec<assemble_reconcile::DirtyReason>,
}

/// What a run did (or, for a dry run, would do).
#[derive(Debug)]
pub struct Report {
    pub output: PathBuf,
    pub prefix: String,
    /// The recipe's package name and version.
    pub name: String,
    pub version: String,
    /// What builds the recipe's virtualenvs (`[python] installer`).
    pub installer: String,
    /// The interpreter's real path and its version (`3.14.0`).
    pub interpreter: PathBuf,
    pub python_version: String,
    /// The output's NAR hash: when asked for (`--nar-hash`), or when one is
    /// remembered for exactly this tree.
    pub nar_hash: Option<assemble_nar::Hash>,
    pub dry_run: bool,
    /// In recipe order.
    pub units: Vec<UnitReport>,
    /// Paths written and removed, with why.
    pub outcome: Outcome,
    /// Wall-clock time of each phase, in order.
    pub phases: Vec<(&'static str, Duration)>,
    pub elapsed: Duration,
    /// The plan: the manifest, warnings, autoPatchelf's decisions, reads.
    pub plan: Plan,
    /// What the shared cache did (`--cache-registry`).
    pub registry: Option<assemble_share::Tally>,
    /// How copies were made (`--link-mode`).
    pub link_mode: LinkMode,
}

/// `p` absolute (against the current folder) and normalised: the prefix
/// written into files is the plain absolute path.
fn normalize(p: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    assemble_fs::normalize(&cwd, p)
}
