//! `cargo xtask`: parses flags, builds one context, dispatches to a command.
//!
//! Exit codes: 0 success, 1 the assembly failed (bad input, a patch that no
//! longer matches, a conflict, an I/O error), 2 the command line or the
//! recipe is malformed.

mod assemble;
mod autopatchelf;
mod bench;
mod cache;
mod context;
mod deploy;
mod export;
mod generate;
mod hash;
mod image;
mod lock;
mod prefetch;
mod shell;
mod test;
mod update;
mod vendor;
mod verify;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A run allocates and frees tens of megabytes of small records (manifest,
/// state, input cache); mimalloc keeps freed pages for reuse where glibc's
/// allocator hands them back and faults them in again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `0.0.0 (COMMIT)`: the commit the tool was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("XTASK_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "xtask",
    version = VERSION,
    about = "Assemble the authentik Python/Django backend tree"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print nothing but errors (no status lines, no warnings).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Say more: -v why each path is written or removed, -vv also the
    /// time of each phase.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Colour the status words: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: shell::ColorChoice,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build or update the deployment tree described by a recipe.
    Assemble(AssembleArgs),
    /// Say what `assemble` would write and remove, and why, without doing it.
    Plan(AssembleArgs),
    /// Re-hash the output against its recorded manifest; exit 1 on any difference.
    Verify(verify::VerifyArgs),
    /// Build a new generation beside PREFIX, verify it, switch PREFIX to it atomically.
    Deploy(deploy::DeployArgs),
    /// Pack the tree, assembled at an image's prefix, as a reproducible OCI image (no container engine).
    Image(image::ImageArgs),
    /// The build cache shared through an OCI registry: push to it, pull from it, list it.
    Cache(cache::CacheArgs),
    /// Write the assembled tree as one NAR or tar file, the same bytes for the same tree.
    Export(export::ExportArgs),
    /// Time cold, no-op and edit assembles of generated inputs against `cp -a`.
    Bench(bench::BenchArgs),
    /// Give every ELF file under PATHs a runpath that resolves its libraries.
    Autopatchelf(autopatchelf::AutopatchelfArgs),
    /// Print a path's hash as `nix hash path` (or, with --flat, `nix hash file`) does.
    Hash(hash::HashArgs),
    /// Record in assemble.lock what the recipe's unpinned sources resolve to.
    Lock(lock::LockArgs),
    /// Fetch a source and print the hash to pin it with: the way to bump a pin.
    Prefetch(prefetch::PrefetchArgs),
    /// Move a github unit to a new tag or rev: fetch, hash, check every patch, then write the recipe and lock.
    Update(update::UpdateArgs),
    /// Copy every remote unit's verified source into vendor/<unit>/ beside the recipe.
    Vendor(vendor::VendorArgs),
    /// Install what the tests need (apt-get, as root) and run them all.
    Test(test::TestArgs),
    /// Print the completion script for SHELL (for the `xtask` binary).
    Completions(generate::CompletionsArgs),
    /// Write the manual pages (xtask.1 and one per command) into DIR.
    Man(generate::ManArgs),
    /// Print the JSON Schema of recipe files (assemble.schema.json), for editors.
    Schema,
}

/// Options every command that reads a recipe takes.
#[derive(Debug, Clone, clap::Args)]
pub struct RecipeArgs {
    /// The recipe (default: assemble.toml at the workspace root).
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Where built venvs and fetched sources are cached
    /// (default: $ASSEMBLE_CACHE_DIR, else TARGET/assemble-cache: TARGET is
    /// the target dir of the cargo workspace the recipe is in, else ./target).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where the tool keeps each output's state, outside the output
    /// (default: $ASSEMBLE_STATE_DIR, else $XDG_STATE_HOME/authentik-assemble,
    /// else ~/.local/state/authentik-assemble: the same for every recipe).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Never fetch: fail at once when a source is neither cached nor vendored.
    #[arg(long)]
    pub offline: bool,
    /// The Python interpreter to use instead of the recipe's
    /// `[python] interpreter`: a name looked up on PATH (python3.13), or a
    /// path when it holds a `/` (default: $ASSEMBLE_PYTHON, else the recipe's).
    #[arg(long, value_name = "NAME|PATH", env = "ASSEMBLE_PYTHON")]
    pub python: Option<String>,
}

/// The cache shared through an OCI registry (docs/deploying.md, Sharing builds).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// Ask this OCI repository (REGISTRY/REPOSITORY) for a venv, a unit's
    /// bytecode, a patched ELF file or a fetched tree before making it, and push what is
    /// made (default: $ASSEMBLE_CACHE_REGISTRY). A registry that fails is a
    /// warning and a local build.
    #[arg(long, value_name = "REGISTRY/REPO", env = "ASSEMBLE_CACHE_REGISTRY")]
    pub cache_registry: Option<String>,
    /// Pull from the registry, never push.
    #[arg(long, env = "ASSEMBLE_CACHE_REGISTRY_READ_ONLY", value_parser = clap::builder::FalseyValueParser::new())]
    pub cache_registry_read_only: bool,
    /// Fail when the registry fails or holds an entry that is refused,
    /// instead of warning and building here.
    #[arg(long, env = "ASSEMBLE_CACHE_REGISTRY_REQUIRED", value_parser = clap::builder::FalseyValueParser::new())]
    pub cache_registry_required: bool,
    /// Plain http to a registry that is not on loopback (loopback always
    /// may).
    #[arg(long, env = "ASSEMBLE_CACHE_REGISTRY_INSECURE", value_parser = clap::builder::FalseyValueParser::new())]
    pub cache_registry_insecure: bool,
}

impl RegistryArgs {
    /// The pipeline's shared cache: its settings and this tool's version.
    pub fn shared(&self) -> Option<(assemble_share::Settings, String)> {
        let repository = self.cache_registry.clone().filter(|r| !r.is_empty())?;
        Some((
            assemble_share::Settings {
                repository,
                insecure: self.cache_registry_insecure,
                read_only: self.cache_registry_read_only,
                required: self.cache_registry_required,
                offer_all: false,
            },
            VERSION.to_string(),
        ))
    }
}

/// What `deploy` and `image` pass on to the assemble they run.
#[derive(Debug, Clone, clap::Args)]
pub struct TreeArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The web UI's path (`@webui@`).
    #[arg(long, value_name = "PATH")]
    pub webui: Option<String>,
    /// Fail if assemble.lock lacks an entry or has a stale one.
    #[arg(long)]
    pub locked: bool,
}

impl TreeArgs {
    /// The assemble of this tree into `out` for `prefix`, its NAR hash
    /// reported.
    pub fn assemble_args(&self, out: PathBuf, prefix: PathBuf, json: bool) -> AssembleArgs {
        AssembleArgs {
            common: self.common.clone(),
            registry: self.registry.clone(),
            out: Some(out),
            prefix: Some(prefix),
            webui: self.webui.clone(),
            json,
            no_wait: false,
            locked: self.locked,
            nar_hash: true,
            link_mode: LinkModeArg::Clone,
            watch: false,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AssembleArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Where to write the tree (default: TARGET/<package name>: the target
    /// dir of the cargo workspace the recipe is in, else ./target).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The path the tree will run from (`@out@`; default: the output's absolute path).
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// The web UI's path (`@webui@`); without it the placeholder stays, as in the seed.
    #[arg(long, value_name = "PATH")]
    pub webui: Option<String>,
    /// Print a JSON report on stdout instead of the human one (on a
    /// failure too: one JSON object with the error).
    #[arg(long)]
    pub json: bool,
    /// Fail at once if another assemble holds the output's lock.
    #[arg(long)]
    pub no_wait: bool,
    /// Fail if assemble.lock lacks an entry or has a stale one, instead of
    /// resolving and recording it.
    #[arg(long)]
    pub locked: bool,
    /// Report the output's NAR hash (what `nix hash path OUT` prints):
    /// every file is read once when the tree changed, nothing when it is
    /// the tree the hash was last computed for. Once computed, the hash is
    /// reported by every run that leaves the same tree, without this flag.
    #[arg(long)]
    pub nar_hash: bool,
    /// How copied files are made: `copy` (the bytes), `clone` (a reflink
    /// where the output's file system has them: btrfs, XFS, bcachefs; else
    /// a copy), `hardlink` (unpatched files of the cache's venvs and
    /// fetched sources linked to the cache: an edit through the output is
    /// caught and both repaired, at the cost of rebuilding that entry).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "clone",
        env = "ASSEMBLE_LINK_MODE"
    )]
    pub link_mode: LinkModeArg,
    /// After the first run, keep the output's lock and watch the inputs
    /// (sources, the recipe and what it extends, uv.lock and pyproject.toml
    /// files): each change is applied as it comes, one line per update;
    /// Ctrl-C ends it.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
}

/// `--link-mode`, with uv's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkModeArg {
    Copy,
    Clone,
    Hardlink,
}

impl From<LinkModeArg> for assemble_pipeline::LinkMode {
    fn from(m: LinkModeArg) -> Self {
        match m {
            LinkModeArg::Copy => assemble_pipeline::LinkMode::Copy,
            LinkModeArg::Clone => assemble_pipeline::LinkMode::Clone,
            LinkModeArg::Hardlink => assemble_pipeline::LinkMode::Hardlink,
        }
    }
}

/// A failure that the command's own `--json` report already states (a
/// verify that found differences): no second JSON object is printed.
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// A failure with its exit code.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// A pipeline error: exit 2 when the command line or the recipe is at
    /// fault, else 1.
    pub fn from_pipeline(e: assemble_pipeline::Error) -> Failure {
        Failure {
            code: if e.is_usage() { 2 } else { 1 },
            error: e.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON on stdout (`--json`).
    fn json(&self) -> bool {
        match self {
            Command::Assemble(a) | Command::Plan(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Deploy(a) => a.json,
            Command::Image(a) => a.json,
            Command::Cache(a) => a.json(),
            Command::Autopatchelf(a) => a.json,
            Command::Bench(a) => a.json,
            _ => false,
        }
    }
}

/// A closed stdout (`xtask ... | head -1`) ends the process quietly, as it
/// does cargo and ripgrep: SIGPIPE's default action (Rust ignores the
/// signal, and `println!` then panics on the write's EPIPE).
fn end_quietly_on_a_closed_pipe() {
    let always = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Without it, a closed pipe is a panic: nothing else is lost.
    let _ = signal_hook::flag::register_conditional_default(signal_hook::consts::SIGPIPE, always);
}

fn main() -> ExitCode {
    end_quietly_on_a_closed_pipe();
    let cli = Cli::parse();
    let json = cli.command.json();
    let shell = shell::Shell::new(
        shell::Verbosity::from_flags(cli.quiet, cli.verbose),
        cli.color,
    );
    let sh = &shell;
    let result = match cli.command {
        Command::Assemble(args) => assemble::run(sh, &args, assemble_pipeline::Mode::Apply),
        Command::Plan(args) => assemble::run(sh, &args, assemble_pipeline::Mode::DryRun),
        Command::Verify(args) => verify::run(sh, &args),
        Command::Deploy(args) => deploy::run(sh, &args),
        Command::Image(args) => image::run(sh, &args),
        Command::Cache(args) => cache::run(sh, &args),
        Command::Export(args) => export::run(&args),
        Command::Bench(args) => bench::run(sh, &args),
        Command::Autopatchelf(args) => autopatchelf::run(sh, &args),
        Command::Hash(args) => hash::run(&args),
        Command::Lock(args) => lock::run(sh, &args),
        Command::Prefetch(args) => prefetch::run(sh, &args),
        Command::Update(args) => update::run(sh, &args),
        Command::Vendor(args) => vendor::run(sh, &args),
        Command::Test(args) => test::run(sh, &args),
        Command::Completions(args) => generate::completions(&args),
        Command::Man(args) => generate::man(sh, &args),
        Command::Schema => generate::schema(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json && f.error.downcast_ref::<Reported>().is_none() {
                println!("{}", shell::failure_json(&f));
            }
            shell.error(&f.error);
            ExitCode::from(f.code)
        }
    }
}
