//! Running the interpreter, pip and uv.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::{Error, Interpreter, find_program};

/// Runs `program args...` and returns its standard output; a failure carries
/// the tail of its standard error.
pub(crate) fn output<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    cwd: Option<&Path>,
) -> Result<String, Error> {
    let sh = xshell::Shell::new().map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(d) = cwd {
        sh.change_dir(d);
    }
    let out = xshell::cmd!(sh, "{program} {args...}")
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| Error::Command {
            program: program.display().to_string(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        let mut cmdline = program.display().to_string();
        for a in args {
            cmdline.push(' ');
            cmdline.push_str(&a.as_ref().to_string_lossy());
        }
        return Err(Error::Command {
            program: cmdline,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 20),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.trim_end().lines().collect();
    let start = v.len().saturating_sub(lines);
    let mut t = v[start..].join("\n");
    if t.is_empty() {
        t = "(no output on stderr)".into();
    }
    format!("\n{t}")
}

/// Builds (once) a virtualenv from a requirements file into
/// `cache/venvs/<key>`, where the key is the sha256 of the file's content,
/// the interpreter's version and path. Uses `uv` when it is on PATH, else
/// the interpreter's own pip. A build that fails leaves nothing in the cache.
/// `announce` is called when a build actually starts (not on a cache hit);
/// `offline` forbids building (pip would use the network).
pub fn build_venv(
    requirements: &Path,
    python: &Interpreter,
    cache: &Path,
    offline: bool,
    announce: &dyn Fn(),
) -> Result<PathBuf, Error> {
    let req = fs_err::read(requirements)?;
    let uv = find_program("uv");
    let mut h = sha2::Sha256::new();
    h.update(b"assemble-venv-v1\0");
    h.update(&req);
    h.update(b"\0");
    h.update(python.full_version.as_bytes());
    h.update(b"\0");
    h.update(python.executable.as_os_str().as_encoded_bytes());
    let key = hex::encode(h.finalize());
    let root = cache.join("venvs");
    let dir = root.join(&key[..32]);
    if dir.join("pyvenv.cfg").is_file() {
        return Ok(dir);
    }
    fs_err::create_dir_all(&root)?;
    let lock = fs_err::File::create(root.join(format!("{}.lock", &key[..32])))?;
    lock.file().lock()?;
    if dir.join("pyvenv.cfg").is_file() {
        return Ok(dir);
    }
    if offline {
        return Err(Error::Offline {
            what: format!("the virtualenv of {}", requirements.display()),
            cached_at: dir,
        });
    }
    announce();
    let tmp = root.join(format!("{}.partial", &key[..32]));
    if tmp.exists() {
        fs_err::remove_dir_all(&tmp)?;
    }
    let cwd = requirements.parent();
    let req_path = requirements.as_os_str();
    let tmp_python = tmp.join("bin/python");
    let result = (|| {
        if let Some(uv) = &uv {
            output(
                uv,
                &[
                    OsStr::new("venv"),
                    OsStr::new("--python"),
                    python.executable.as_os_str(),
                    tmp.as_os_str(),
                ],
                cwd,
            )?;
            output(
                uv,
                &[
                    OsStr::new("pip"),
                    OsStr::new("install"),
                    OsStr::new("--python"),
                    tmp_python.as_os_str(),
                    OsStr::new("-r"),
                    req_path,
                ],
                cwd,
            )?;
        } else {
            output(
                &python.executable,
                &[
                    OsStr::new("-m"),
                    OsStr::new("venv"),
                    OsStr::new("--without-pip"),
                    tmp.as_os_str(),
                ],
                cwd,
            )?;
            output(
                &python.executable,
                &[
                    OsStr::new("-m"),
                    OsStr::new("pip"),
                    OsStr::new("--python"),
                    tmp_python.as_os_str(),
                    OsStr::new("install"),
                    OsStr::new("--no-input"),
                    OsStr::new("--disable-pip-version-check"),
                    OsStr::new("-r"),
                    req_path,
                ],
                cwd,
            )?;
        }
        Ok::<_, Error>(())
    })();
    if let Err(e) = result {
        let _ = fs_err::remove_dir_all(&tmp);
        return Err(e);
    }
    assemble_fs::files::place(&tmp, &dir)?;
    Ok(dir)
}

/// Which artifact of a release to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    Sdist,
    /// A wheel that fits the interpreter's platform.
    Wheel,
}

/// Downloads the sdist or wheel of `spec` (`name==version`) into the empty
/// folder `dest` with pip, and returns the file's path.
pub fn pip_download(
    spec: &str,
    artifact: Artifact,
    python: &Interpreter,
    dest: &Path,
) -> Result<PathBuf, Error> {
    let only = match artifact {
        Artifact::Sdist => "--no-binary",
        Artifact::Wheel => "--only-binary",
    };
    output(
        &python.executable,
        &[
            OsStr::new("-m"),
            OsStr::new("pip"),
            OsStr::new("download"),
            OsStr::new("--no-input"),
            OsStr::new("--disable-pip-version-check"),
            OsStr::new("--no-deps"),
            OsStr::new(only),
            OsStr::new(":all:"),
            OsStr::new("--dest"),
            dest.as_os_str(),
            OsStr::new(spec),
        ],
        None,
    )?;
    let mut files: Vec<PathBuf> = fs_err::read_dir(dest)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    match files.len() {
        1 => Ok(files.remove(0)),
        n => Err(Error::Malformed {
            path: dest.to_path_buf(),
            message: format!("pip download {spec} left {n} files, expected one"),
        }),
    }
}
