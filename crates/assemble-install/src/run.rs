//! Running the interpreter, pip and uv.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use assemble_cache::{Files, Policy, Reporter, Seal};
use sha2::Digest;

use assemble_python::Interpreter;
use assemble_recipe::Installer;

use crate::Error;

/// Runs `program args...` and returns its standard output; a failure carries
/// the tail of its standard error.
pub(crate) fn output<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    cwd: Option<&Path>,
) -> Result<String, Error> {
    output_env(program, args, cwd, &[])
}

/// As [`output`], with `env` added to the environment.
pub(crate) fn output_env<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    cwd: Option<&Path>,
    env: &[(&str, &OsStr)],
) -> Result<String, Error> {
    run(program, args, cwd, env, None)
}

/// As [`output`], with `stdin` as the program's standard input.
pub(crate) fn output_stdin<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    stdin: Vec<u8>,
) -> Result<String, Error> {
    run(program, args, None, &[], Some(stdin))
}

fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    cwd: Option<&Path>,
    env: &[(&str, &OsStr)],
    stdin: Option<Vec<u8>>,
) -> Result<String, Error> {
    let sh = xshell::Shell::new().map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(d) = cwd {
        sh.change_dir(d);
    }
    let mut cmd = xshell::cmd!(sh, "{program} {args...}");
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    if let Some(bytes) = stdin {
        cmd = cmd.stdin(bytes);
    }
    let out = cmd
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| Error::Command {
            program: program.display().to_string(),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            program: said(program, args),
            status: out.status.to_string(),
            stderr: summary(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a long-running installer says as it goes: called with each line
/// it writes on stderr (uv's and pip's own progress).
pub type Lines<'a> = &'a (dyn Fn(&str) + Sync);

/// What a cached build says while it goes, through `reporter`.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    pub reporter: &'a dyn Reporter,
    /// Said when the build starts (not on a cache hit).
    pub starting: &'a str,
    /// What this one waits for when another run holds the entry's lock
    /// (it is building it): `the venv of python-deps`.
    pub waiting: &'a str,
    /// The unit the venv is for.
    pub unit: &'a str,
    /// The cache shared between machines, asked before the venv is built
    /// and offered it after.
    pub shared: Option<&'a dyn assemble_cache::Shared>,
}

impl Progress<'_> {
    fn wait(&self) {
        self.reporter.waiting(self.waiting)
    }

    fn line(&self, line: &str) {
        self.reporter.output(line)
    }
}

/// As [`output_env`], passing each line of the program's stderr to `lines`
/// as it comes (and keeping them for the error's tail).
pub(crate) fn output_lines<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    cwd: Option<&Path>,
    env: &[(&str, &OsStr)],
    lines: Lines<'_>,
) -> Result<String, Error> {
    use std::io::{BufRead, Read};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    if program.file_name() == Some(OsStr::new("uv")) {
        // The tree must not depend on the machine: uv reads no UV_* of
        // the caller's (an index, a link mode, no-binary...), only ours.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("UV_") {
                cmd.env_remove(k);
            }
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| Error::Command {
        program: program.display().to_string(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("the child's pipes were not set up").into());
    };
    // stdout on its own thread, so that neither pipe fills while the other
    // is read.
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let mut said_lines = String::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line?;
        lines(line.trim_end());
        said_lines.push_str(&line);
        said_lines.push('\n');
    }
    let status = child.wait()?;
    let stdout = out
        .join()
        .map_err(|_| std::io::Error::other("reading stdout panicked"))??;
    if !status.success() {
        if let Some(build) = crate::build_failure::from_log(&said_lines) {
            return Err(Error::SourceBuild(Box::new(build)));
        }
        return Err(Error::Command {
            program: said(program, args),
            status: status.to_string(),
            stderr: summary(&said_lines),
        });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// What a failed installer said, cut to what matters: its `ERROR:` lines
/// (pip's, uv's `error:`), the last line of a Python traceback (the
/// exception), pip's network retries as one line with their cause; when
/// none of these is there, its last lines.
fn summary(s: &str) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    let mut kept: Vec<String> = Vec::new();
    let retries: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("WARNING: Retrying"))
        .copied()
        .collect();
    if let Some(last) = retries.last() {
        // `... Failed to establish a new connection: [Errno -3] ...')': /simple/x/`
        let cause = last
            .split("connection: ")
            .nth(1)
            .or_else(|| last.split("after ").nth(1))
            .map_or(*last, |c| c.split("')").next().unwrap_or(c));
        kept.push(format!("(retried {} times: {cause})", retries.len()));
    }
    let retried = kept.len();
    if let Some(at) = lines
        .iter()
        .rposition(|l| l.starts_with("Traceback (most recent call last)"))
        && let Some(exception) = lines[at..]
            .iter()
            .rev()
            .find(|l| !l.starts_with(' ') && !l.is_empty())
    {
        kept.push((*exception).to_string());
    }
    kept.extend(
        lines
            .iter()
            .filter(|l| l.starts_with("ERROR:") || l.starts_with("error:"))
            .take(6)
            .map(|l| l.to_string()),
    );
    if kept.len() == retried {
        // Nothing says what failed: the end of what was said.
        let start = lines.len().saturating_sub(8);
        kept.extend(lines[start..].iter().map(|l| l.to_string()));
    }
    let t = kept.join("\n");
    if t.is_empty() {
        "\n(no output on stderr)".into()
    } else {
        format!("\n{t}")
    }
}

/// A command line as said in an error: an argument of many lines or of
/// more than 120 characters (a `-c` script) is shown as `<...>`.
fn said(program: &Path, args: &[impl AsRef<OsStr>]) -> String {
    let mut c = program.display().to_string();
    for a in args {
        let a = a.as_ref().to_string_lossy();
        c.push(' ');
        if a.contains('\n') || a.len() > 120 {
            c.push_str("<...>");
        } else {
            c.push_str(&a);
        }
    }
    c
}

/// The uv that can look for an interpreter (`uv python find`) before
/// anything is fetched: the recipe's own uv if it is already bootstrapped
/// in `cache`, else a uv on PATH (it only finds; it never builds anything).
/// `policy`: with `Look`, the check of the cached uv writes nothing.
pub fn uv_finder(installer: &Installer, cache: &Path, policy: Policy) -> Option<PathBuf> {
    if let Installer::Uv { version, .. } = installer {
        let own = uv_path(cache, version);
        let files = |seal| match policy {
            Policy::Look => Files::sealed(seal).read_only(),
            _ => Files::sealed(seal),
        };
        // Only one that is what was bootstrapped; else the next bootstrap
        // discards it and says so.
        if let Some(dir) = own.parent()
            && Seal::load(dir).is_some_and(|s| files(s).check_whole().is_ok())
        {
            return Some(own);
        }
    }
    assemble_fs::find_program("uv")
}

/// Builds (once) a virtualenv from a requirements file into
/// `cache/venvs/<key>`, where the key is the sha256 of the file's content,
/// the interpreter's version and path, and the installer's name and
/// version. A build that fails leaves nothing in the cache; one that
/// succeeds is sealed. `policy` says whether a missing venv is built.
pub fn build_venv(
    requirements: &Path,
    python: &Interpreter,
    installer: &Installer,
    cache: &Path,
    policy: Policy,
    progress: Progress<'_>,
) -> Result<Files, Error> {
    let req = read_named(requirements)?;
    let mut h = sha2::Sha256::new();
    h.update(b"assemble-venv-v2\0");
    h.update(installer.label().as_bytes());
    h.update(b"\0");
    h.update(&req);
    h.update(b"\0");
    h.update(python.full_version.as_bytes());
    h.update(b"\0");
    h.update(python.executable.as_os_str().as_encoded_bytes());
    let what = || format!("the virtualenv of {}", requirements.display());
    let build = |tmp: &Path| {
        let cwd = requirements.parent();
        let req_path = requirements.as_os_str();
        let tmp_python = tmp.join("bin/python");
        let uv = match installer {
            Installer::Pip => None,
            Installer::Uv { version, sha256 } => Some(bootstrap_uv(
                version, sha256, python, cache, None, progress,
            )?),
        };
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
            output_lines(
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
                &[uv_copies()],
                &|l| progress.line(l),
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
            output_lines(
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
                &[],
                &|l| progress.line(l),
            )?;
        }
        Ok(())
    };
    cached_venv(cache, h, policy, &what, progress, Build::Online(build))
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
    // The sdist of this package only: `--no-binary :all:` would also build
    // from source the setuptools that prepares its metadata, many times
    // the work (docs/speed.md).
    let name = spec.split_once("==").map_or(spec, |(n, _)| n).trim();
    let (only, which) = match artifact {
        Artifact::Sdist => ("--no-binary", name),
        Artifact::Wheel => ("--only-binary", ":all:"),
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
            OsStr::new(which),
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

/// Downloads into `dest` (with pip, for `python`) wheels of every
/// requirement in `requires` and of what they need: the build
/// requirements of an sdist, kept so that it builds with no index.
/// Returns how many files `dest` gained.
pub fn pip_download_wheels(
    requires: &[String],
    python: &Interpreter,
    dest: &Path,
) -> Result<usize, Error> {
    let count = || fs_err::read_dir(dest).map(|d| d.count());
    let before = count()?;
    let mut args: Vec<&OsStr> = [
        "-m",
        "pip",
        "download",
        "--no-input",
        "--disable-pip-version-check",
        "--only-binary",
        ":all:",
        "--dest",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    args.push(dest.as_os_str());
    args.extend(requires.iter().map(OsStr::new));
    output(&python.executable, &args, None)?;
    Ok(count()?.saturating_sub(before))
}

/// uv's wheel at `version` downloaded into `dest` (with the interpreter's
/// pip), kept only if its sha256 is one of `sha256`. Returns its name.
pub fn download_uv_wheel(
    version: &str,
    sha256: &[[u8; 32]],
    python: &Interpreter,
    dest: &Path,
) -> Result<String, Error> {
    if let Some(have) = vendored_uv(dest, version, sha256) {
        return Ok(have
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned());
    }
    let work = tempfile::Builder::new()
        .prefix(".uv-wheel-")
        .tempdir_in(dest)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dest.display())))?;
    let wheel = pip_download(
        &format!("uv=={version}"),
        Artifact::Wheel,
        python,
        work.path(),
    )?;
    let bytes = fs_err::read(&wheel)?;
    let got: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    if !sha256.contains(&got) {
        return Err(Error::Malformed {
            path: wheel,
            message: format!(
                "uv's wheel has sha256 {}, which is none of [python] installer-sha256",
                hex::encode(got)
            ),
        });
    }
    let name = wheel.file_name().unwrap_or_default().to_os_string();
    fs_err::rename(&wheel, dest.join(&name))?;
    Ok(name.to_string_lossy().into_owned())
}

/// uv installs a venv's files as copies, not hard links into its own cache
/// (its default on Linux): a cache entry of ours shares no file with
/// another tool, whose use would change it (a new link changes a file's
/// ctime, so every other uv install of the same wheel made the sealed
/// stats stale), or whose writes would change it unseen.
fn uv_copies() -> (&'static str, &'static OsStr) {
    ("UV_LINK_MODE", OsStr::new("copy"))
}

/// Where [`bootstrap_uv`] keeps uv `version` in `cache`.
fn uv_path(cache: &Path, version: &str) -> PathBuf {
    cache.join("tools").join(format!("uv-{version}")).join("uv")
}

/// uv at `version`, from the cache or else from its wheel: downloaded with
/// the interpreter's pip, accepted only if its sha256 is one of `sha256`,
/// and its `uv` binary unpacked into `cache/tools/uv-VERSION/`, sealed.
/// Returns the binary's path; a cached one is checked against its seal
/// first (never run if it changed: `Error::Corrupt`). `progress` says the
/// bootstrap as it starts, and the wait when another run is making it.
pub fn bootstrap_uv(
    version: &str,
    sha256: &[[u8; 32]],
    python: &Interpreter,
    cache: &Path,
    vendor: Option<&Path>,
    progress: Progress<'_>,
) -> Result<PathBuf, Error> {
    let bin = uv_path(cache, version);
    let dir = bin.parent().unwrap_or(cache).to_path_buf();
    let checked = |seal: Seal| -> Result<PathBuf, Error> {
        Files::sealed(seal).check_whole()?;
        Ok(bin.clone())
    };
    if let Some(seal) = Seal::load(&dir) {
        return checked(seal);
    }
    let root = cache.join("tools");
    fs_err::create_dir_all(&root)?;
    let _lock = assemble_cache::lock(&dir, &|| {
        progress.reporter.waiting(&format!("uv {version}"))
    })?;
    if let Some(seal) = Seal::load(&dir) {
        return checked(seal);
    }
    // There but not sealed: interrupted, or made before entries were; a
    // folder of that name holding anything else is not the tool's (a
    // --cache-dir pointed at someone's folder), and stays.
    if std::fs::symlink_metadata(&dir).is_ok() {
        let only_uv = fs_err::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>()
            })
            .is_ok_and(|names| names.iter().all(|n| n == "uv"));
        if !only_uv {
            return Err(Error::Malformed {
                path: dir,
                message: "holds more than the uv this tool bootstraps there, and no seal of it: it is not the tool's; move it away, or choose another --cache-dir".into(),
            });
        }
        assemble_cache::remove(&dir)?;
    }
    let work = tempfile::Builder::new()
        .prefix(".uv-")
        .tempdir_in(&root)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
    let download = work.path().join("download");
    fs_err::create_dir_all(&download)?;
    let wheel = match vendor.and_then(|v| vendored_uv(v, version, sha256)) {
        Some(wheel) => wheel,
        None => {
            progress.reporter.starting(&format!(
                "{}: bootstrapping uv {version} from its wheel with pip (once; then cached)",
                progress.unit
            ));
            pip_download(
                &format!("uv=={version}"),
                Artifact::Wheel,
                python,
                &download,
            )
            .map_err(|e| Error::Bootstrap {
                what: format!("uv {version}"),
                source: Box::new(e),
            })?
        }
    };
    let bytes = fs_err::read(&wheel)?;
    let got: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    if !sha256.contains(&got) {
        let want: Vec<String> = sha256.iter().map(hex::encode).collect();
        return Err(Error::Malformed {
            path: wheel,
            message: format!(
                "uv's wheel has sha256 {}, which is none of [python] installer-sha256 ({}); if this is a new platform, add its wheel's sha256",
                hex::encode(got),
                want.join(", ")
            ),
        });
    }
    let name = format!("uv-{version}.data/scripts/uv");
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(&bytes)).map_err(|e| Error::Malformed {
            path: wheel.clone(),
            message: format!("not a wheel: {e}"),
        })?;
    let mut entry = zip.by_name(&name).map_err(|e| Error::Malformed {
        path: wheel.clone(),
        message: format!("no {name} in the wheel: {e}"),
    })?;
    let unpacked = work.path().join("uv");
    fs_err::create_dir_all(&unpacked)?;
    let mut out = fs_err::File::create(unpacked.join("uv"))?;
    std::io::copy(&mut entry, &mut out)?;
    use std::os::unix::fs::PermissionsExt;
    out.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    drop(out);
    assemble_fs::files::place(&unpacked, &dir)?;
    Seal::make(&dir)?;
    Ok(bin)
}

/// uv's wheel at `version` in the vendored folder `vendor`, when one is
/// there whose sha256 is one of `sha256`.
fn vendored_uv(vendor: &Path, version: &str, sha256: &[[u8; 32]]) -> Option<PathBuf> {
    let prefix = format!("uv-{version}-");
    fs_err::read_dir(vendor)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .find(|p| {
            fs_err::read(p)
                .map(|b| sha256.contains(&sha2::Sha256::digest(&b).into()))
                .unwrap_or(false)
        })
}

/// Syncs (once) a virtualenv from the uv project in `sync.project` (its
/// `pyproject.toml` and `uv.lock`) into `cache/venvs/<key>`, as authentik's
/// image does (`uv sync --locked --no-dev --no-install-project`), and also
/// without the workspace members and without the distributions in
/// `exclude` (other units provide them): the dependencies alone. uv reads
/// the project's own `[tool.uv]` settings (`no-binary-package`, ...) and
/// no user's or machine's configuration or `UV_*` variable. The key is the
/// sha256 of uv's version, the interpreter, those flags, `uv.lock` and the
/// `pyproject.toml` of every local package the lock names (the project's
/// settings with it); a change to the project's other files builds
/// nothing. uv never downloads an interpreter here.
///
/// With `vendor` (a flat folder of the lock's files, `cargo xtask vendor`)
/// nothing is downloaded: uv syncs from a copy of the lock that reads
/// every distribution from there, and the venv is the one the index
/// gives (see [`crate::vendored`]).
pub fn sync_venv(sync: &UvSync<'_>, cache: &Path, policy: Policy) -> Result<Files, Error> {
    let project = sync.project;
    let dir = project.root();
    let lock_path = dir.join("uv.lock");
    let lock = read_project(project, &lock_path)?;
    let mut excluded: Vec<&str> = sync.exclude.iter().map(String::as_str).collect();
    excluded.sort_unstable();
    let flags = format!(
        "sync --locked --no-dev --no-install-project --no-install-workspace, the project's [tool.uv] as --config-file; excluded: {}",
        excluded.join(", ")
    );
    let mut h = sha2::Sha256::new();
    for part in [
        b"assemble-uv-sync-v2".as_slice(),
        format!("uv {}", sync.uv_version).as_bytes(),
        sync.python.full_version.as_bytes(),
        sync.python.executable.as_os_str().as_encoded_bytes(),
        flags.as_bytes(),
        &lock,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let members = local_packages(&lock_path, &lock)?;
    for member in &members {
        let bytes = read_project(project, &member_pyproject(dir, &lock_path, member)?)?;
        h.update((member.len() as u64).to_le_bytes());
        h.update(member.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let what = || format!("the virtualenv of the uv project {}", dir.display());
    let progress = sync.progress;
    let build = |tmp: &Path| {
        let uv = bootstrap_uv(
            sync.uv_version,
            sync.uv_sha256,
            sync.python,
            cache,
            sync.vendor,
            progress,
        )?;
        let work = tempfile::Builder::new()
            .prefix(".sync-")
            .tempdir_in(cache.join("venvs"))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", cache.display())))?;
        // The project's own pyproject.toml is one of the members the key
        // hashed; read again only when the venv is built.
        let pyproject_path = dir.join("pyproject.toml");
        let pyproject = read_project(project, &pyproject_path)?;
        let config = work.path().join("uv.toml");
        fs_err::write(
            &config,
            crate::vendored::project_config(&pyproject, &pyproject_path)?,
        )?;
        let (from, mode): (PathBuf, Vec<&OsStr>) = match sync.vendor {
            None => (dir.to_path_buf(), vec![OsStr::new("--locked")]),
            Some(vendor) => {
                let copy = work.path().join("project");
                vendored_project(project, &members, vendor, &copy)?;
                // The lock was checked against the project (`--locked`)
                // when the folder was made (`cargo xtask vendor`).
                const OFFLINE: [&str; 4] = ["--frozen", "--offline", "--no-index", "--find-links"];
                let mut mode: Vec<&OsStr> = OFFLINE.iter().map(OsStr::new).collect();
                mode.push(vendor.as_os_str());
                (copy, mode)
            }
        };
        let mut args: Vec<&OsStr> = vec![OsStr::new("sync")];
        args.extend(mode);
        args.extend(
            [
                "--no-dev",
                "--no-install-project",
                "--no-install-workspace",
                "--config-file",
            ]
            .iter()
            .map(OsStr::new),
        );
        args.push(config.as_os_str());
        args.push(OsStr::new("--python"));
        args.push(sync.python.executable.as_os_str());
        args.push(OsStr::new("--project"));
        args.push(from.as_os_str());
        for x in &excluded {
            args.push(OsStr::new("--no-install-package"));
            args.push(OsStr::new(x));
        }
        let env = [
            ("UV_PROJECT_ENVIRONMENT", tmp.as_os_str()),
            uv_copies(),
            ("UV_PYTHON_DOWNLOADS", OsStr::new("never")),
        ];
        output_lines(&uv, &args, Some(&from), &env, &|l| progress.line(l)).map_err(|e| {
            match sync.vendor {
                // A source build that failed is said as itself.
                Some(folder) if !matches!(e, Error::SourceBuild(_)) => Error::Vendored {
                    folder: folder.to_path_buf(),
                    source: Box::new(e),
                },
                _ => e,
            }
        })?;
        if sync.vendor.is_some() {
            crate::vendored::forget_local_archives(tmp)?;
        }
        Ok(())
    };
    let build = match sync.vendor {
        Some(_) => Build::NoNetwork(build),
        None => Build::Online(build),
    };
    cached_venv(cache, h, policy, &what, progress, build)
}

/// A copy of the uv project's `pyproject.toml` files in `copy`, and its
/// lock rewritten to read every distribution from the flat folder `vendor`.
fn vendored_project(
    project: &Files,
    members: &[String],
    vendor: &Path,
    copy: &Path,
) -> Result<(), Error> {
    let dir = project.root();
    let lock_path = dir.join("uv.lock");
    for member in members {
        let rel = member_pyproject(dir, &lock_path, member)?;
        let to = copy.join(rel.strip_prefix(dir).unwrap_or(&rel));
        fs_err::create_dir_all(to.parent().unwrap_or(copy))?;
        fs_err::write(&to, read_project(project, &rel)?)?;
    }
    fs_err::create_dir_all(copy)?;
    fs_err::write(
        copy.join("pyproject.toml"),
        read_project(project, &dir.join("pyproject.toml"))?,
    )?;
    let lock = read_project(project, &lock_path)?;
    fs_err::write(
        copy.join("uv.lock"),
        crate::vendored::rewrite_lock(&String::from_utf8_lossy(&lock), &lock_path, vendor)?,
    )?;
    Ok(())
}

/// What [`sync_venv`] syncs, and how.
#[derive(Clone, Copy)]
pub struct UvSync<'a> {
    /// The uv project: its `pyproject.toml` and `uv.lock`.
    pub project: &'a Files,
    pub python: &'a Interpreter,
    pub uv_version: &'a str,
    pub uv_sha256: &'a [[u8; 32]],
    /// Distributions other units provide.
    pub exclude: &'a [String],
    /// A flat folder holding every file the venv needs (`vendor/pypi`).
    pub vendor: Option<&'a Path>,
    pub progress: Progress<'a>,
}

/// A workspace member's `pyproject.toml` inside the project `dir`, its
/// links resolved there.
fn member_pyproject(dir: &Path, lock_path: &Path, member: &str) -> Result<PathBuf, Error> {
    let rel =
        assemble_fs::resolve_beneath(dir, &format!("{member}/pyproject.toml")).map_err(|e| {
            Error::Malformed {
                path: lock_path.to_path_buf(),
                message: format!("workspace member {member}: {e}"),
            }
        })?;
    Ok(dir.join(rel))
}

/// How a missing venv is built: with the network (not under `--offline`),
/// or from local files alone (`vendor/pypi`: under `--offline` too).
enum Build<F> {
    Online(F),
    NoNetwork(F),
}

/// The venv cached under the key `h` makes, in `cache/venvs`: there
/// already (sealed), or built by `build` into an empty temporary folder
/// (under the entry's lock, so that two runs build it once: the second
/// waits and uses it), renamed into place and sealed when it succeeds;
/// nothing is left in the cache when it fails. `policy` says whether a
/// missing venv is built (`Policy::Offline` and `Look` fail saying `what`
/// is missing; `Look` takes no lock).
fn cached_venv(
    cache: &Path,
    h: sha2::Sha256,
    policy: Policy,
    what: &dyn Fn() -> String,
    progress: Progress<'_>,
    build: Build<impl FnOnce(&Path) -> Result<(), Error>>,
) -> Result<Files, Error> {
    let key = hex::encode(h.finalize());
    let root = cache.join("venvs");
    let dir = root.join(&key[..32]);
    let missing = || Error::Offline {
        what: what(),
        cached_at: dir.clone(),
    };
    let entry = assemble_cache::SharedEntry {
        kind: assemble_cache::SharedKind::Venv,
        key: &key[..32],
        unit: Some(progress.unit),
        what: progress.waiting.to_string(),
    };
    if let Some(seal) = Seal::load(&dir) {
        if let Some(s) = progress.shared.filter(|s| s.offers_all()) {
            s.push(&entry, &assemble_cache::members_of(&seal))?;
        }
        return Ok(Files::sealed(seal));
    }
    if !policy.writes() {
        return Err(missing());
    }
    fs_err::create_dir_all(&root)?;
    let _lock = assemble_cache::lock(&dir, &|| progress.wait())?;
    if let Some(seal) = Seal::load(&dir) {
        return Ok(Files::sealed(seal));
    }
    let (build, offline_too) = match build {
        Build::Online(b) => (b, false),
        Build::NoNetwork(b) => (b, true),
    };
    if policy == Policy::Offline && !offline_too {
        return Err(missing());
    }
    // There but not sealed: interrupted, or made before entries were.
    assemble_cache::remove(&dir)?;
    let tmp = root.join(format!("{}.partial", &key[..32]));
    if std::fs::symlink_metadata(&tmp).is_ok() {
        assemble_cache::remove(&tmp)?;
    }
    if let Some(s) = progress.shared
        && s.pull(&entry, &tmp)?
    {
        return Ok(Files::sealed(assemble_cache::place_sealed(&tmp, &dir)?));
    }
    progress.reporter.starting(progress.starting);
    assemble_fs::pause::at("venv-build");
    if let Err(e) = build(&tmp) {
        let _ = fs_err::remove_dir_all(&tmp);
        return Err(e);
    }
    assemble_fs::files::place(&tmp, &dir)?;
    let seal = Seal::make(&dir)?;
    if let Some(s) = progress.shared {
        s.push(&entry, &assemble_cache::members_of(&seal))?;
    }
    Ok(Files::sealed(seal))
}

/// A file the recipe names (a requirements file, a uv project's
/// `pyproject.toml` and `uv.lock`): a regular file of at most a few MB.
fn read_named(path: &Path) -> std::io::Result<Vec<u8>> {
    assemble_fs::files::read_named(path, assemble_fs::files::NAMED_FILE_LIMIT)
}

/// A file of a uv project (its `uv.lock`, a member's `pyproject.toml`):
/// a regular file of at most a few MB, checked against the seal when the
/// project is in a cached source.
fn read_project(project: &Files, path: &Path) -> Result<Vec<u8>, Error> {
    if project.seal().is_none() {
        return Ok(read_named(path)?);
    }
    let meta = fs_err::metadata(path)?;
    if !meta.is_file() || meta.len() > assemble_fs::files::NAMED_FILE_LIMIT {
        // Said as a file the user names would be.
        return Ok(read_named(path)?);
    }
    Ok(project.read(path)?)
}

/// The names of the packages `uv.lock` in the uv project `project` holds,
/// as written there.
pub fn locked_packages(project: &Files) -> Result<Vec<String>, Error> {
    let path = project.root().join("uv.lock");
    let doc = read_lock(&path, &read_project(project, &path)?)?;
    Ok(doc
        .get("package")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| Some(p.get("name")?.as_str()?.to_string()))
        .collect())
}

fn read_lock(path: &Path, lock: &[u8]) -> Result<toml::Table, Error> {
    toml::from_str(&String::from_utf8_lossy(lock)).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The folders (relative to the project) of the local packages `uv.lock`
/// names: the project itself and its workspace members (`editable`,
/// `virtual` or `directory` sources), sorted.
fn local_packages(path: &Path, lock: &[u8]) -> Result<Vec<String>, Error> {
    let doc = read_lock(path, lock)?;
    let mut dirs: Vec<String> = doc
        .get("package")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("source")?.as_table())
        .filter_map(|s| {
            ["editable", "virtual", "directory"]
                .iter()
                .find_map(|k| s.get(*k)?.as_str().map(str::to_string))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn a_failed_installer_is_summed_up() {
        let pip_offline = "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/uv/\n\
WARNING: Retrying (Retry(total=3)) after connection broken by 'NewConnectionError('<x>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/uv/\n\
ERROR: Could not find a version that satisfies the requirement uv==0.9.5 (from versions: none)\n\
ERROR: No matching distribution found for uv==0.9.5\n";
        assert_eq!(
            summary(pip_offline),
            "\n(retried 2 times: [Errno -3] Temporary failure in name resolution)\n\
             ERROR: Could not find a version that satisfies the requirement uv==0.9.5 (from versions: none)\n\
             ERROR: No matching distribution found for uv==0.9.5"
        );
        let traceback = "Traceback (most recent call last):\n  File \"x\", line 1, in <module>\n    import nope\nModuleNotFoundError: No module named 'nope'\n";
        assert_eq!(
            summary(traceback),
            "\nModuleNotFoundError: No module named 'nope'"
        );
        assert_eq!(summary("a\nb\n"), "\na\nb");
        assert_eq!(summary(""), "\n(no output on stderr)");
    }
}
