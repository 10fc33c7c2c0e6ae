//! Running Python: finding and probing the interpreter, the installer the
//! recipe names (the interpreter's pip, or a pinned uv bootstrapped from its
//! wheel) building `requirements` venvs and syncing uv projects, pip
//! downloading an sdist or a wheel, data scripts recovered from wheels,
//! and bytecode compiled by the tree's interpreter.
//!
//! Invariant: every process the tool starts, other than `git`, is started
//! here; what it makes goes into the cache, made in a temporary place and
//! sealed or given its digest link before it is used.

mod build_failure;
pub mod compile;
mod interpreter;
mod recover;
mod run;
pub mod vendored;

use std::path::PathBuf;

pub use build_failure::SourceBuild;
pub use interpreter::{NotFound, locate, probe, probe_cached};
pub use recover::recover_data_script;
pub use run::{
    Artifact, Progress, UvSync, bootstrap_uv, build_venv, download_uv_wheel, locked_packages,
    pip_download, pip_download_wheels, sync_venv, uv_finder,
};

/// An error of this crate; each names the file or command it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(std::io::Error),
    /// A cache entry (a venv, uv) is not what it was made as: it must be
    /// discarded and made again.
    #[error(transparent)]
    Corrupt(Box<assemble_cache::Corrupt>),
    /// No interpreter where it was looked for (see [`NotFound`]).
    #[error("{0}")]
    InterpreterNotFound(Box<NotFound>),
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{}: {message}", .path.display())]
    Malformed { path: PathBuf, message: String },
    /// A sync from a vendored folder failed: it may lack what the lock
    /// needs now.
    #[error(
        "syncing from {} (vendored; no index is asked while it is there): {source}\nIt may lack a file the lock now needs: run `cargo xtask vendor` again where the network is, or remove the folder to sync from the index.",
        .folder.display()
    )]
    Vendored {
        folder: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// A distribution failed to build from its sdist (see [`SourceBuild`]).
    #[error("{0}")]
    SourceBuild(Box<SourceBuild>),
    /// The recipe's installer could not be fetched (its wheel, with pip).
    #[error("bootstrapping {what} from its wheel: {source}")]
    Bootstrap {
        what: String,
        #[source]
        source: Box<Error>,
    },
    #[error(
        "{what} is not in the cache ({}) and --offline forbids building or fetching it; run once without --offline, or `cargo xtask vendor`",
        .cached_at.display()
    )]
    Offline { what: String, cached_at: PathBuf },
    /// The shared cache failed, and it is required.
    #[error(transparent)]
    Shared(Box<assemble_cache::SharedError>),
}

assemble_cache::io_or_corrupt!(Error);

impl From<assemble_python::Error> for Error {
    fn from(e: assemble_python::Error) -> Error {
        match e {
            assemble_python::Error::Io(e) => Error::Io(e),
            assemble_python::Error::Corrupt(c) => Error::Corrupt(c),
            assemble_python::Error::Malformed { path, message } => {
                Error::Malformed { path, message }
            }
        }
    }
}

impl From<assemble_cache::SharedError> for Error {
    fn from(e: assemble_cache::SharedError) -> Error {
        Error::Shared(Box::new(e))
    }
}
