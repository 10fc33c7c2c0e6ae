//! Everything that knows about Python: finding and probing the interpreter,
//! reading a virtualenv's distributions (entry points, RECORD), rendering
//! console-script launchers and `pyvenv.cfg`, and running pip (or uv) to
//! build a venv or download an sdist.

mod dist;
mod launcher;
mod recover;
mod run;

use std::path::{Path, PathBuf};

pub use dist::{BinFile, Dist, EntryPoint, read_dists};
pub use launcher::{carriable, launcher, rewrite_pyvenv_cfg, rewrite_shebang, shebang};
pub use recover::recover_data_script;
pub use run::{Artifact, build_venv, pip_download};

/// An error of this crate; each names the file or command it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(
        "python interpreter `{name}` not found{searched}; install it, or set [python] interpreter to a name on PATH or an absolute path"
    )]
    InterpreterNotFound { name: String, searched: String },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{}: {message}", .path.display())]
    Malformed { path: PathBuf, message: String },
    #[error(
        "{what} is not in the cache ({}) and --offline forbids building or fetching it; run once without --offline",
        .cached_at.display()
    )]
    Offline { what: String, cached_at: PathBuf },
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
}

impl Interpreter {
    /// Finds `name` (a name on PATH, or a path) and asks it about itself.
    pub fn probe(name: &str) -> Result<Interpreter, Error> {
        let path = find_program(name).ok_or_else(|| Error::InterpreterNotFound {
            name: name.to_string(),
            searched: if name.contains('/') {
                String::new()
            } else {
                " on PATH".to_string()
            },
        })?;
        // -E -S: no environment, no site: a fast start, and an answer
        // about the interpreter itself.
        let code = "import os,sys;print(os.path.realpath(sys.executable));print(sys.base_prefix);print(sys.version_info[0]);print(sys.version_info[1]);print(sys.version.split()[0])";
        let out = run::output(&path, &["-E", "-S", "-c", code], None)?;
        let lines: Vec<&str> = out.lines().collect();
        let bad = || Error::Malformed {
            path: path.clone(),
            message: format!("unexpected answer to the interpreter probe: {out:?}"),
        };
        if lines.len() < 5 {
            return Err(bad());
        }
        Ok(Interpreter {
            executable: PathBuf::from(lines[0]),
            prefix: PathBuf::from(lines[1]),
            major: lines[2].parse().map_err(|_| bad())?,
            minor: lines[3].parse().map_err(|_| bad())?,
            full_version: lines[4].to_string(),
        })
    }

    /// As [`Interpreter::probe`], remembering the answer in `cache` when
    /// `name` resolves to an interpreter binary: keyed by its real path and
    /// stat, so a new build of it is probed again. A name that resolves to
    /// a script (a pyenv or asdf shim picks its target at run time) is
    /// probed every time.
    pub fn probe_cached(name: &str, cache: &Path) -> Result<Interpreter, Error> {
        let key = find_program(name).and_then(|p| {
            use std::hash::{Hash, Hasher};
            use std::io::Read;
            use std::os::unix::fs::MetadataExt;
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
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                &p,
                &real,
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
                .hash(&mut h);
            Some(
                cache
                    .join("python")
                    .join(format!("{:016x}.json", h.finish())),
            )
        });
        if let Some(k) = &key
            && let Ok(bytes) = std::fs::read(k)
            && let Ok(found) = serde_json::from_slice::<Interpreter>(&bytes)
        {
            return Ok(found);
        }
        let found = Interpreter::probe(name)?;
        if let Some(k) = key
            && let Some(dir) = k.parent()
            && std::fs::create_dir_all(dir).is_ok()
            && let Ok(json) = serde_json::to_vec(&found)
        {
            // A cache: a failed write only costs a probe next time.
            let tmp = k.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &k);
            }
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

/// Looks a program up the way a shell does: a name with a `/` is a path,
/// anything else is searched on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
