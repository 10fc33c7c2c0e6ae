//! Everything that knows about Python: finding and probing the interpreter,
//! reading a virtualenv's distributions (entry points, RECORD), rendering
//! console-script launchers and `pyvenv.cfg`, and running the installer the
//! recipe names (the interpreter's pip, or a pinned uv bootstrapped from its
//! wheel) to build a venv, and pip to download an sdist.

pub mod bytecode;
mod dist;
mod launcher;
mod recover;
mod run;

use std::path::{Path, PathBuf};

use assemble_fs::StatCache;

pub use dist::{BinFile, Dist, EntryPoint, InTree, normalize_name, read_dists};
pub use launcher::{carriable, launcher, rewrite_pyvenv_cfg, rewrite_shebang, shebang};
pub use recover::recover_data_script;
pub use run::{
    Artifact, Installer, Progress, bootstrap_uv, build_venv, locked_packages, pip_download,
    sync_venv,
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
    #[error(
        "python interpreter `{name}` not found; looked {looked}. Name one with --python PATH (or ASSEMBLE_PYTHON=PATH), or set [python] interpreter in the recipe to a name on PATH or an absolute path"
    )]
    InterpreterNotFound { name: String, looked: String },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{}: {message}", .path.display())]
    Malformed { path: PathBuf, message: String },
    /// The recipe's installer could not be fetched (its wheel, with pip).
    #[error("bootstrapping {what} from its wheel: {source}")]
    Bootstrap {
        what: String,
        #[source]
        source: Box<Error>,
    },
    #[error(
        "{what} is not in the cache ({}) and --offline forbids building or fetching it; run once without --offline",
        .cached_at.display()
    )]
    Offline { what: String, cached_at: PathBuf },
}

impl From<std::io::Error> for Error {
    /// An I/O error that carries a [`assemble_cache::Corrupt`] (a read of a
    /// cached venv's file, through a reader that can only fail with
    /// `io::Error`) is that corruption.
    fn from(e: std::io::Error) -> Error {
        match corrupt_in(&e) {
            Some(c) => Error::Corrupt(Box::new(c.clone())),
            None => Error::Io(e),
        }
    }
}

impl From<assemble_cache::Error> for Error {
    fn from(e: assemble_cache::Error) -> Error {
        match e {
            assemble_cache::Error::Io(e) => e.into(),
            assemble_cache::Error::Corrupt(c) => Error::Corrupt(c),
        }
    }
}

/// The cache corruption an I/O error carries, if any.
pub fn corrupt_in(e: &std::io::Error) -> Option<&assemble_cache::Corrupt> {
    e.get_ref()?.downcast_ref::<assemble_cache::Corrupt>()
}

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
    /// The interpreter to use: `named` when given (`--python`), else
    /// `name` (the recipe's `[python] interpreter`) as a path or a name on
    /// PATH, else what `uv python find` answers for `name` (installations
    /// uv manages; never a download, never a virtualenv) when `uv` is
    /// given (see [`Installer::finder`]). When there is none, the error
    /// says where it looked and how to name one.
    pub fn locate(name: &str, named: Option<&Path>, uv: Option<&Path>) -> Result<PathBuf, Error> {
        let not_found = |name: &str, looked: String| Error::InterpreterNotFound {
            name: name.to_string(),
            looked,
        };
        if let Some(p) = named {
            return if assemble_fs::is_executable(p) {
                Ok(p.to_path_buf())
            } else {
                Err(not_found(
                    &p.display().to_string(),
                    format!(
                        "at {} (named by --python or ASSEMBLE_PYTHON), which is not an executable file",
                        p.display()
                    ),
                ))
            };
        }
        if let Some(p) = find_program(name) {
            return Ok(p);
        }
        if name.contains('/') {
            return Err(not_found(
                name,
                format!("at {name}, which is not an executable file"),
            ));
        }
        let dirs: Vec<String> = assemble_fs::path_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let on_path = if dirs.is_empty() {
            "on PATH, which is empty".to_string()
        } else {
            format!("on PATH ({})", dirs.join(":"))
        };
        let Some(uv) = uv else {
            return Err(not_found(
                name,
                format!(
                    "{on_path}; `uv python find` was not asked: no uv yet (the recipe's is not bootstrapped, and none is on PATH)"
                ),
            ));
        };
        let args = [
            "python",
            "find",
            "--system",
            "--no-project",
            "--no-config",
            "--no-python-downloads",
            name,
        ];
        match run::output_env(
            uv,
            &args,
            None,
            &[("UV_PYTHON_DOWNLOADS", "never".as_ref())],
        ) {
            Ok(out) if assemble_fs::is_executable(Path::new(out.trim())) => {
                Ok(PathBuf::from(out.trim()))
            }
            Ok(out) => Err(not_found(
                name,
                format!(
                    "{on_path}; `{} python find {name}` answered {out:?}",
                    uv.display()
                ),
            )),
            Err(e) => Err(not_found(
                name,
                format!(
                    "{on_path}; and in the installations uv manages (`{} python find {name}`: {})",
                    uv.display(),
                    match e {
                        Error::Command { stderr, .. } => stderr.trim().to_string(),
                        e => e.to_string(),
                    }
                ),
            )),
        }
    }

    /// Finds `name` (a name on PATH, or a path) and asks it about itself.
    pub fn probe(name: &str) -> Result<Interpreter, Error> {
        let path = Interpreter::locate(name, None, None)?;
        // -E -S: no environment, no site: a fast start, and an answer
        // about the interpreter itself.
        let code = "import os,sys,importlib.util as u;print(os.path.realpath(sys.executable));print(sys.base_prefix);print(sys.version_info[0]);print(sys.version_info[1]);print(sys.version.split()[0]);print(sys.implementation.cache_tag);print(u.MAGIC_NUMBER.hex())";
        let out = run::output(&path, &["-E", "-S", "-c", code], None)?;
        let lines: Vec<&str> = out.lines().collect();
        let bad = || Error::Malformed {
            path: path.clone(),
            message: format!("unexpected answer to the interpreter probe: {out:?}"),
        };
        if lines.len() < 7 {
            return Err(bad());
        }
        Ok(Interpreter {
            executable: PathBuf::from(lines[0]),
            prefix: PathBuf::from(lines[1]),
            major: lines[2].parse().map_err(|_| bad())?,
            minor: lines[3].parse().map_err(|_| bad())?,
            full_version: lines[4].to_string(),
            cache_tag: lines[5].to_string(),
            magic: lines[6].to_string(),
        })
    }

    /// As [`Interpreter::probe`], remembering the answer in `cache` when
    /// `name` resolves to an interpreter binary: keyed by its real path and
    /// stat, so a new build of it is probed again. A name that resolves to
    /// a script (a pyenv or asdf shim picks its target at run time) is
    /// probed every time.
    pub fn probe_cached(name: &str, cache: &Path) -> Result<Interpreter, Error> {
        let key = find_program(name).and_then(|p| {
            use std::io::Read;
            let real = std::fs::canonicalize(&p).ok()?;
            let mut magic = [0u8; 4];
            std::fs::File::open(&real)
                .ok()?
                .read_exact(&mut magic)
                .ok()?;
            if &magic != b"\x7fELF" {
                return None;
            }
            let m = std::fs::metadata(&real).ok()?;
            Some(StatCache::key(&[&p, &real], &m))
        });
        let cache = StatCache::new(cache.join("python"));
        if let Some(k) = &key
            && let Some(found) = cache.get::<Interpreter>(k)
        {
            return Ok(found);
        }
        let found = Interpreter::probe(name)?;
        if let Some(k) = key {
            cache.put(&k, &found);
        }
        Ok(found)
    }

    /// `pythonX.Y`.
    pub fn name(&self) -> String {
        format!("python{}.{}", self.major, self.minor)
    }

    /// `lib/pythonX.Y/site-packages`, relative to a venv's root.
    pub fn site_packages(&self) -> String {
        format!("lib/{}/site-packages", self.name())
    }
}

pub use assemble_fs::find_program;
