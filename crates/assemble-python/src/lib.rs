//! What the tool knows about Python without running it: the interpreter a
//! tree is for (as probed by `assemble-install`), a virtualenv's
//! distributions (entry points, RECORD), console-script launchers and
//! `pyvenv.cfg`. Reads files; runs nothing, writes nothing.
//!
//! Invariant: no process is started from here (installers and the
//! interpreter run in `assemble-install`), so the planner can use it.

mod dist;
mod launcher;

use std::path::PathBuf;

pub use dist::{BinFile, Dist, EntryPoint, InTree, normalize_name, read_dists};
pub use launcher::{carriable, launcher, rewrite_pyvenv_cfg, rewrite_shebang, shebang};

/// An error of this crate; each names the file it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(std::io::Error),
    /// A cache entry (a venv) is not what it was made as: it must be
    /// discarded and made again.
    #[error(transparent)]
    Corrupt(Box<assemble_cache::Corrupt>),
    #[error("{}: {message}", .path.display())]
    Malformed { path: PathBuf, message: String },
}

assemble_cache::io_or_corrupt!(Error);

/// A probed interpreter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interpreter {
    /// The real executable, symlinks resolved (a pyenv shim is not a python).
    pub executable: PathBuf,
    /// `sys.base_prefix`: what `@python@` stands for in a Nix-FOD venv.
    pub prefix: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// `platform.python_version()`, e.g. `3.11.7`.
    pub full_version: String,
    /// `sys.implementation.cache_tag`, e.g. `cpython-311`: the `.pyc` names.
    pub cache_tag: String,
    /// `importlib.util.MAGIC_NUMBER` in hex: the bytecode format.
    pub magic: String,
}

impl Interpreter {
    /// `pythonX.Y`.
    pub fn name(&self) -> String {
        format!("python{}.{}", self.major, self.minor)
    }

    /// `lib/pythonX.Y/site-packages`, relative to a venv's root.
    pub fn site_packages(&self) -> String {
        format!("lib/{}/site-packages", self.name())
    }
}
