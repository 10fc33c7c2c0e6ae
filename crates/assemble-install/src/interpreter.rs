//! Finding the interpreter a tree is for, and asking it about itself.

use std::path::{Path, PathBuf};

use assemble_fs::StatCache;
use assemble_python::Interpreter;

use crate::Error;
#[cfg(doc)]
use crate::uv_finder;

/// Where an interpreter was looked for, and not found: said in short by
/// default, in full (every PATH folder, uv's answer) under `-v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// What was asked for: a name or a path.
    pub name: String,
    /// `--python`, or the recipe's `[python] interpreter` and where it is
    /// written; set by the caller that knows.
    pub asked_by: String,
    /// Where it looked, in a few words.
    pub looked: String,
    /// Where it looked, every folder and uv's answer.
    pub detail: String,
    /// A uv at hand, to say `uv python install` with: `uv` when it is on
    /// PATH, else the recipe's, in the cache.
    pub uv: Option<String>,
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by = if self.asked_by.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.asked_by)
        };
        write!(
            f,
            "{by}python interpreter `{}` not found\n  looked {}",
            self.name, self.looked
        )
    }
}

impl NotFound {
    /// How to get one.
    pub fn hint(&self) -> String {
        let version = self.name.trim_start_matches("python");
        let install = match &self.uv {
            Some(uv) if !self.name.contains('/') && !version.is_empty() => {
                format!("install one (`{uv} python install {version}`), or ")
            }
            _ => String::new(),
        };
        format!(
            "{install}name one: --python NAME (looked up on PATH) or --python PATH (or ASSEMBLE_PYTHON)"
        )
    }
}

/// The interpreter to use: `named` when given (`--python`: a path when
/// it holds a `/`, else a name looked up on PATH, as uv reads it), else
/// `name` (the recipe's `[python] interpreter`) the same way; a name not
/// on PATH is then asked of `uv python find` (installations uv manages;
/// never a download, never a virtualenv) when `uv` is given (see
/// [`uv_finder`]). When there is none, the error says where it looked
/// and how to get one.
pub fn locate(name: &str, named: Option<&str>, uv: Option<&Path>) -> Result<PathBuf, Error> {
    let (name, asked_by) = match named {
        Some(n) => (n, "--python"),
        None => (name, ""),
    };
    let not_found = |looked: String, detail: String| {
        Error::InterpreterNotFound(Box::new(NotFound {
            name: name.to_string(),
            asked_by: asked_by.to_string(),
            looked,
            detail,
            uv: match assemble_fs::find_program("uv") {
                Some(_) => Some("uv".to_string()),
                None => uv.map(|p| p.display().to_string()),
            },
        }))
    };
    if let Some(p) = assemble_fs::find_program(name) {
        return Ok(p);
    }
    if name.contains('/') {
        let at = format!("at {name}, which is not an executable file");
        return Err(not_found(at.clone(), at));
    }
    let dirs: Vec<String> = assemble_fs::path_dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let (on_path, on_path_full) = if dirs.is_empty() {
        let s = "on PATH, which is empty".to_string();
        (s.clone(), s)
    } else {
        (
            match dirs.len() {
                1 => "on PATH (1 folder)".to_string(),
                n => format!("on PATH ({n} folders)"),
            },
            format!("on PATH ({})", dirs.join(":")),
        )
    };
    let Some(uv) = uv else {
        return Err(not_found(
            format!("{on_path}; not among uv's installations (no uv yet); -v says where"),
            format!(
                "{on_path_full}; `uv python find` was not asked: no uv yet (the recipe's is not bootstrapped, and none is on PATH)"
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
    let looked = format!("{on_path} and among the installations uv manages; -v says where");
    match crate::run::output_env(
        uv,
        &args,
        None,
        &[("UV_PYTHON_DOWNLOADS", "never".as_ref())],
    ) {
        Ok(out) if assemble_fs::is_executable(Path::new(out.trim())) => {
            Ok(PathBuf::from(out.trim()))
        }
        Ok(out) => Err(not_found(
            looked,
            format!(
                "{on_path_full}; `{} python find {name}` answered {out:?}",
                uv.display()
            ),
        )),
        Err(e) => Err(not_found(
            looked,
            format!(
                "{on_path_full}; and in the installations uv manages (`{} python find {name}`: {})",
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
    let path = locate(name, None, None)?;
    // -E -S: no environment, no site: a fast start, and an answer
    // about the interpreter itself.
    let code = "import os,sys,importlib.util as u;print(os.path.realpath(sys.executable));print(sys.base_prefix);print(sys.version_info[0]);print(sys.version_info[1]);print(sys.version.split()[0]);print(sys.implementation.cache_tag);print(u.MAGIC_NUMBER.hex())";
    let out = crate::run::output(&path, &["-E", "-S", "-c", code], None)?;
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

/// As [`probe`], remembering the answer in `cache` when
/// `name` resolves to an interpreter binary: keyed by its real path and
/// stat, so a new build of it is probed again. A name that resolves to
/// a script (a pyenv or asdf shim picks its target at run time) is
/// probed every time. With `Policy::Look` the answer is read from the
/// cache but not stored.
pub fn probe_cached(
    name: &str,
    cache: &Path,
    policy: assemble_cache::Policy,
) -> Result<Interpreter, Error> {
    let key = assemble_fs::find_program(name).and_then(|p| {
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
    let found = probe(name)?;
    if let Some(k) = key.filter(|_| policy.writes()) {
        cache.put(&k, &found);
    }
    Ok(found)
}
