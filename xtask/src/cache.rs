//! `cargo xtask cache push|pull|ls`: the cache shared through an OCI
//! registry, by hand: CI's warm-up job fills it, a machine fills its own
//! cache from it before going offline, and anyone sees what it holds.

use std::path::PathBuf;

use assemble_pipeline::{Event, Mode, Session};

use crate::context::Workspace;
use crate::shell::{Drawing, Shell};
use crate::{AssembleArgs, Failure, RecipeArgs, RegistryArgs, TreeArgs};

#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Make everything the recipe's tree needs (building what the local
    /// cache lacks) and push every entry the registry lacks: CI's warm-up.
    Push(PrepareArgs),
    /// Fill the local cache with everything the recipe's tree needs, from
    /// the registry where it has it, built here where not; push nothing.
    Pull(PrepareArgs),
    /// List the entries the registry holds for the recipe's package.
    Ls(LsArgs),
}

/// What `push` and `pull` prepare: the tree `assemble` would build with
/// these flags (its prefix decides the patched files and so the pycs); no
/// output is written.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// The output whose path is the prefix by default (nothing is written
    /// there).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The path the tree will run from (`@out@`).
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Print what was done as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Every package's entries, not only the recipe's.
    #[arg(long)]
    pub all: bool,
    /// Print the entries as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl CacheArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            CacheCommand::Push(a) | CacheCommand::Pull(a) => a.json,
            CacheCommand::Ls(a) => a.json,
        }
    }
}

pub fn run(sh: &Shell, args: &CacheArgs) -> Result<(), Failure> {
    match &args.command {
        CacheCommand::Push(a) => prepare(sh, a, true),
        CacheCommand::Pull(a) => prepare(sh, a, false),
        CacheCommand::Ls(a) => ls(sh, a),
    }
}

/// `--cache-registry` must be given (or its variable set).
fn repository(registry: &RegistryArgs) -> Result<(), Failure> {
    if registry.cache_registry.as_deref().is_none_or(str::is_empty) {
        return Err(Failure {
            code: 2,
            error: anyhow::anyhow!(
                "no registry: give --cache-registry REGISTRY/REPOSITORY, or set ASSEMBLE_CACHE_REGISTRY"
            ),
        });
    }
    Ok(())
}

fn prepare(sh: &Shell, args: &PrepareArgs, push: bool) -> Result<(), Failure> {
    let tree = &args.tree;
    repository(&tree.registry)?;
    let mut opts = crate::assemble::options(&AssembleArgs {
        common: tree.common.clone(),
        registry: tree.registry.clone(),
        out: args.out.clone(),
        prefix: args.prefix.clone(),
        webui: tree.webui.clone(),
        json: args.json,
        no_wait: false,
        locked: tree.locked,
        nar_hash: false,
        link_mode: crate::LinkModeArg::Clone,
        watch: false,
    })?;
    if let Some((settings, _)) = &mut opts.shared {
        settings.offer_all = push;
        settings.read_only = !push;
    }
    let drawing = Drawing::new(sh, !args.json && sh.progress(), args.json || sh.quiet());
    let events = |e: Event| drawing.event(e);
    let done = Session::open(&opts, Mode::Apply).and_then(|s| s.prepare(&events));
    drawing.clear();
    let done = done.map_err(Failure::from_pipeline)?;
    let tally = done.registry.unwrap_or_default();
    if args.json {
        let json = serde_json::json!({
            "package": done.name,
            "version": done.version,
            "registry": tally,
            "bytecode": done.bytecode.map(|b| serde_json::json!({
                "compiled": b.compiled, "cached": b.cached, "pulled": b.pulled, "failed": b.failed,
            })),
            "warnings": done.warnings,
        });
        println!("{json:#}");
        return Ok(());
    }
    for w in &done.warnings {
        sh.warn(w);
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let built = done.bytecode.map_or(0, |b| b.compiled);
    if push {
        sh.status(
            "Pushed",
            format!(
                "{} entries of {} {} ({:.1} MiB), {} there already; {built} sources compiled here",
                tally.pushed,
                done.name,
                done.version,
                mib(tally.pushed_bytes),
                tally.present
            ),
        );
    } else {
        sh.status(
            "Pulled",
            format!(
                "{} entries of {} {} ({:.1} MiB), {} the registry lacks; {built} sources compiled here",
                tally.pulled,
                done.name,
                done.version,
                mib(tally.pulled_bytes),
                tally.missed
            ),
        );
    }
    Ok(())
}

fn ls(sh: &Shell, args: &LsArgs) -> Result<(), Failure> {
    repository(&args.registry)?;
    let ws = Workspace::for_recipe(&args.common)?;
    let package = if args.all {
        None
    } else {
        Some(ws.recipe(&args.common)?.name)
    };
    let Some((settings, _)) = args.registry.shared() else {
        return Ok(());
    };
    let remote = assemble_share::Remote::connect(
        settings,
        assemble_share::Origin::default(),
        &ws.cache(args.common.cache_dir.as_deref()),
    )
    .map_err(|e| Failure {
        code: 2,
        error: e.into(),
    })?;
    let held: Vec<_> = remote
        .list()?
        .into_iter()
        .filter(|h| package.as_ref().is_none_or(|p| *p == h.package))
        .collect();
    if args.json {
        println!("{:#}", serde_json::json!(held));
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for h in &held {
        println!(
            "{:<5} {:<26} {:>9.1} MiB  {} {}  {}  {}",
            h.kind,
            h.unit.as_deref().unwrap_or("-"),
            mib(h.bytes),
            h.package,
            h.package_version,
            h.what,
            h.tag
        );
    }
    sh.status(
        "Listed",
        format!(
            "{} entries ({:.1} MiB){}",
            held.len(),
            mib(held.iter().map(|h| h.bytes).sum()),
            package.map_or(String::new(), |p| format!(" of {p}"))
        ),
    );
    Ok(())
}
