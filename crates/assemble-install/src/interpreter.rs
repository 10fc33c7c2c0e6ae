//! Finding the interpreter a tree is for, and asking it about itself.

use std::path::{Path, PathBuf};

use assemble_fs::StatCache;
use assemble_python::Interpreter;

use crate::Error;
#[cfg(doc)]
use crate::uv_finder;

/// The interpreter to use: `named` when given (`--python`), else
/// `name` (the recipe's `[python] interpreter`) as a path or a name on
/// PATH, else what `uv python find` answers for `name` (installations
/// uv manages; never a download, never a virtualenv) when `uv` is
/// given (see [`uv_finder`]). When there is none, the error
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
    if let Some(p) = assemble_fs::find_program(name) {
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
