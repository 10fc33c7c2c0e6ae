//! `cargo xtask`: parses flags, builds one context, dispatches to a command.
//!
//! Exit codes: 0 success, 1 the assembly failed (bad input, a patch that no
//! longer matches, a conflict, an I/O error), 2 the command line or the
//! recipe is malformed.

mod assemble;
mod autopatchelf;
mod bench;
mod context;
mod export;
mod hash;
mod lock;
mod prefetch;
mod vendor;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A run allocates and frees tens of megabytes of small records (manifest,
/// state, input cache); mimalloc keeps freed pages for reuse where glibc's
/// allocator hands them back and faults them in again.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Assemble the authentik Python/Django backend tree"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build or update the deployment tree described by a recipe.
    Assemble(AssembleArgs),
    /// Say what `assemble` would write and remove, and why, without doing it.
    Plan(AssembleArgs),
    /// Re-hash the output against its recorded manifest; exit 1 on any difference.
    Verify(verify::VerifyArgs),
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
    /// Copy every remote unit's verified source into vendor/<unit>/ beside the recipe.
    Vendor(vendor::VendorArgs),
}

/// Options every command that reads a recipe takes.
#[derive(Debug, clap::Args)]
pub struct RecipeArgs {
    /// The recipe (default: assemble.toml at the workspace root).
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Where built venvs and fetched sources are cached
    /// (default: $ASSEMBLE_CACHE_DIR, else <cargo target dir>/assemble-cache).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where the tool keeps each output's state, outside the output
    /// (default: $ASSEMBLE_STATE_DIR, else <cargo target dir>/assemble-state).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Never fetch: fail at once when a source is neither cached nor vendored.
    #[arg(long)]
    pub offline: bool,
    /// The Python interpreter to use instead of the recipe's
    /// `[python] interpreter` (default: $ASSEMBLE_PYTHON, else the recipe's).
    #[arg(long, value_name = "PATH", env = "ASSEMBLE_PYTHON")]
    pub python: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AssembleArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    /// Where to write the tree (default: <cargo target dir>/<package name>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The path the tree will run from (`@out@`; default: the output's absolute path).
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// The web UI's path (`@webui@`); without it the placeholder stays, as in the seed.
    #[arg(long, value_name = "PATH")]
    pub webui: Option<String>,
    /// Print a JSON report on stdout instead of the human one.
    #[arg(long)]
    pub json: bool,
    /// Say why each path is written or removed.
    #[arg(short, long)]
    pub verbose: bool,
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
}

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Assemble(args) => assemble::run(&args, assemble_pipeline::Mode::Apply),
        Command::Plan(args) => assemble::run(&args, assemble_pipeline::Mode::DryRun),
        Command::Verify(args) => verify::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Autopatchelf(args) => autopatchelf::run(&args),
        Command::Hash(args) => hash::run(&args),
        Command::Lock(args) => lock::run(&args),
        Command::Prefetch(args) => prefetch::run(&args),
        Command::Vendor(args) => vendor::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.error);
            for cause in f.error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(f.code)
        }
    }
}
