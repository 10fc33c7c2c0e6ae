//! Helpers for the end-to-end tests: a temp dir per test, the demo copied
//! into it, the xtask binary run for real, and trees compared as listings.

#![allow(dead_code)]

pub mod http;
pub mod proxy;
pub mod registry;
pub mod sandbox;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::Digest;

/// Rewrites `file` with `f`, which must change it.
pub fn edit(file: &Path, f: impl FnOnce(String) -> String) {
    let text = fs_err::read_to_string(file).expect("read recipe");
    let new = f(text.clone());
    assert_ne!(text, new, "the edit changed nothing");
    fs_err::write(file, new).expect("write recipe");
}

/// The binary under test: this build's, or `ASSEMBLE_TEST_XTASK` (how the
/// tests that take it were seen to fail against the code before a fix),
/// whose checkout `ASSEMBLE_TEST_XTASK_WORKSPACE` names.
pub fn xtask_bin() -> PathBuf {
    std::env::var_os("ASSEMBLE_TEST_XTASK")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_xtask")), PathBuf::from)
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Venvs and sources shared by all tests (pip runs once per CI run).
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("assemble-cache")
}

/// The uv the shipped recipes pin.
pub const UV_VERSION: &str = "0.9.5";
/// `pip download --no-deps --only-binary :all: uv==0.9.5` on Linux x86_64.
pub const UV_WHEEL_SHA256: &str =
    "6507bbbcd788553ec4ad5a96fa19364dc0f58b023e31d79868773559a83ec181";

/// The interpreter behind `python3` on PATH, by its real path (a name on
/// PATH may be a shim that forwards to it).
pub fn real_python() -> PathBuf {
    assemble_install::probe("python3")
        .expect("python3 on PATH")
        .executable
}

/// The pinned uv, bootstrapped (once for all tests) into the shared cache.
pub fn shared_uv() -> PathBuf {
    let python = assemble_install::probe("python3").expect("python3 on PATH");
    let sha = <[u8; 32]>::try_from(hex::decode(UV_WHEEL_SHA256).expect("hex")).expect("32 bytes");
    let quiet = assemble_install::Progress {
        reporter: &assemble_cache::Silent,
        starting: "",
        waiting: "uv",
        unit: "tests",
        shared: None,
    };
    assemble_install::bootstrap_uv(UV_VERSION, &[sha], &python, &shared_cache(), None, quiet)
        .expect("bootstrap uv")
}

/// A cache `name` in `dir` of its own (venvs, sources), sharing only the
/// bootstrapped uv with the other tests.
pub fn cache_sharing_uv(dir: &Path, name: &str) -> PathBuf {
    let uv = shared_uv();
    let cache = dir.join(name);
    let tools = cache.join("tools");
    fs_err::create_dir_all(&tools).expect("cache");
    let folder = uv.parent().expect("uv's folder");
    fs_err::os::unix::fs::symlink(folder, tools.join(format!("uv-{UV_VERSION}")))
        .expect("link the shared uv");
    fs_err::copy(
        assemble_cache::seal_path(folder),
        tools.join(format!("uv-{UV_VERSION}.seal")),
    )
    .expect("copy the shared uv's seal");
    cache
}

/// One test's scratch folder, with the demo (recipe and fixtures) copied
/// in, and beside it the authentik recipe the demo's extends.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("assemble-test-")
            .tempdir()
            .expect("tempdir");
        copy_dir(&root().join("demo"), &dir.path().join("demo"));
        fs_err::copy(
            root().join("assemble.toml"),
            dir.path().join("assemble.toml"),
        )
        .expect("copy the base recipe");
        Scratch { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A cache of this test's own for sources, sharing only the built venvs.
    pub fn private_cache(&self) -> PathBuf {
        let cache = self.path("cache");
        let shared = shared_cache().join("venvs");
        fs_err::create_dir_all(&shared).expect("shared venvs");
        fs_err::create_dir_all(&cache).expect("cache");
        fs_err::os::unix::fs::symlink(&shared, cache.join("venvs")).expect("link venvs");
        cache
    }

    pub fn recipe(&self) -> PathBuf {
        self.path("demo/assemble.toml")
    }

    /// The authentik recipe that the scratch recipe extends: the install
    /// maps, patches, scripts and `[autopatchelf]` are written there.
    pub fn base(&self) -> PathBuf {
        self.path("assemble.toml")
    }

    /// Rewrites the scratch recipe (the demo's sources) with `f`.
    pub fn edit_recipe(&self, f: impl FnOnce(String) -> String) {
        edit(&self.recipe(), f);
    }

    /// Rewrites the recipe the scratch recipe extends with `f`.
    pub fn edit_base(&self, f: impl FnOnce(String) -> String) {
        edit(&self.base(), f);
    }

    /// `xtask assemble --recipe <scratch recipe> ARGS...` with the shared
    /// cache, to spawn (for tests that kill or race it).
    pub fn assemble_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.arg("assemble")
            .arg("--recipe")
            .arg(self.recipe())
            .args(args)
            .current_dir(self.dir.path())
            .env("ASSEMBLE_CACHE_DIR", shared_cache())
            .env("ASSEMBLE_STATE_DIR", self.path("state"))
            .env_remove("ASSEMBLE_GITHUB_URL");
        cmd
    }

    /// The state folder the tool keeps for the output `out` (outside it).
    pub fn state_of(&self, out: &Path) -> PathBuf {
        assemble_reconcile::Layout::new(out, &self.path("state")).state
    }

    /// Runs `cargo xtask assemble --recipe <scratch recipe> ARGS...`.
    pub fn assemble(&self, args: &[&str]) -> Run {
        self.run("assemble", args)
    }

    /// Runs `cargo xtask COMMAND --recipe <scratch recipe> ARGS...`.
    pub fn run(&self, command: &str, args: &[&str]) -> Run {
        let recipe = self.recipe();
        let mut all = vec![command, "--recipe", recipe.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        xtask(self.dir.path(), &all)
    }
}

/// The result of running the xtask binary.
pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Asserts success and returns the parsed `--json` report.
    pub fn json(&self) -> serde_json::Value {
        assert!(
            self.output.status.success(),
            "assemble failed ({:?}):\n{}",
            self.code(),
            self.stderr()
        );
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout()))
    }

    /// Asserts success and returns stderr.
    pub fn ok(&self) -> String {
        assert!(
            self.output.status.success(),
            "failed ({:?}):\n{}",
            self.code(),
            self.stderr()
        );
        self.stderr()
    }

    /// Asserts failure with `code` and returns stderr.
    pub fn fails(&self, code: i32) -> String {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit {code}; stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

pub fn xtask(cwd: &Path, args: &[&str]) -> Run {
    xtask_env(cwd, args, &[])
}

/// Runs the xtask binary with extra environment variables (which may
/// override `ASSEMBLE_CACHE_DIR`, the shared cache by default, and
/// `ASSEMBLE_STATE_DIR`, `state` in `cwd` by default).
pub fn xtask_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    xtask_command(Command::new(env!("CARGO_BIN_EXE_xtask")), cwd, args, env)
}

/// As [`xtask_env`], in a network namespace of its own with nothing but
/// loopback (`unshare -n`): no network at all.
pub fn xtask_without_network(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", env!("CARGO_BIN_EXE_xtask")]);
    xtask_command(cmd, cwd, args, env)
}

fn xtask_command(mut cmd: Command, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    cmd.args(args)
        .current_dir(cwd)
        .env("ASSEMBLE_CACHE_DIR", shared_cache())
        .env("ASSEMBLE_STATE_DIR", cwd.join("state"))
        .env_remove("ASSEMBLE_GITHUB_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run {
        output: cmd.output().expect("run xtask"),
    }
}

/// Runs the xtask binary in `cwd` with the default state folder (no
/// `ASSEMBLE_STATE_DIR`), the user's state home being `state_home`
/// (`XDG_STATE_HOME`), and the shared cache.
pub fn xtask_default_state(cwd: &Path, args: &[&str], state_home: &Path) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .current_dir(cwd)
        .env("ASSEMBLE_CACHE_DIR", shared_cache())
        .env_remove("ASSEMBLE_STATE_DIR")
        .env("XDG_STATE_HOME", state_home)
        .env_remove("ASSEMBLE_GITHUB_URL");
    Run {
        output: cmd.output().expect("run xtask"),
    }
}

/// Runs `xtask assemble --recipe RECIPE --out OUT EXTRA...` in `cwd`, with
/// `env` added to what [`xtask_env`] sets.
pub fn assemble_into(
    cwd: &Path,
    recipe: &Path,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let mut args = vec![
        "assemble",
        "--recipe",
        recipe.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    xtask_env(cwd, &args, env)
}

/// Runs a command that must succeed and returns its trimmed stdout; a
/// failure shows the command and its stderr.
pub fn stdout_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What Nix's own `nix hash ARGS...` prints (Debian's nix-bin; .ci/run
/// installs it).
pub fn nix_hash<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    stdout_ok(
        Command::new("nix")
            .args(["--extra-experimental-features", "nix-command", "hash"])
            .args(args),
    )
}

/// What `nix hash path` prints for `path` (SRI).
pub fn nix_hash_path(path: &Path) -> String {
    nix_hash([std::ffi::OsStr::new("path"), path.as_os_str()])
}

/// Runs a program and returns (success, stdout + stderr).
pub fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("PYTHONPATH")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A program's absolute path from PATH.
pub fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}

pub fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.expect("walk");
        let dest = to.join(e.path().strip_prefix(from).expect("prefix"));
        let ft = e.file_type();
        if ft.is_dir() {
            fs_err::create_dir_all(&dest).expect("mkdir");
        } else if ft.is_symlink() {
            let t = fs_err::read_link(e.path()).expect("readlink");
            fs_err::os::unix::fs::symlink(t, &dest).expect("symlink");
        } else {
            fs_err::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// One line per path under `dir`: `path kind mode content`, where content is the sha256 of a file or the
/// target of a link.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
    {
        let e = e.expect("walk");
        let rel = e
            .path()
            .strip_prefix(dir)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        let meta = fs_err::symlink_metadata(e.path()).expect("lstat");
        let mode = meta.permissions().mode() & 0o7777;
        let line = if meta.file_type().is_symlink() {
            format!(
                "{rel} link -> {}",
                fs_err::read_link(e.path()).expect("readlink").display()
            )
        } else if meta.is_dir() {
            format!("{rel} dir {mode:o}")
        } else {
            let bytes = fs_err::read(e.path()).expect("read");
            format!(
                "{rel} file {mode:o} {}",
                hex::encode(sha2::Sha256::digest(&bytes))
            )
        };
        lines.push(line);
    }
    lines
}

/// Asserts two listings are equal, printing only the lines that differ.
pub fn assert_same_tree(a: &[String], b: &[String], what: &str) {
    let sa: BTreeSet<&String> = a.iter().collect();
    let sb: BTreeSet<&String> = b.iter().collect();
    let only_a: Vec<_> = sa.difference(&sb).collect();
    let only_b: Vec<_> = sb.difference(&sa).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}: trees differ\n--- only in the first:\n{}\n+++ only in the second:\n{}",
        only_a
            .iter()
            .map(|s| format!("- {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
        only_b
            .iter()
            .map(|s| format!("+ {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

/// The interpreter the demo recipe names, as `X.Y`.
pub fn python_xy() -> String {
    python_xy_of(which("python3"))
}

/// The version of the interpreter `python`, as `X.Y`.
pub fn python_xy_of(python: impl AsRef<Path>) -> String {
    let (ok, out) = run(
        python.as_ref(),
        &["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    );
    assert!(ok, "{out}");
    out.trim().to_string()
}

/// A run of the tool stopped at one of its pause points
/// (`assemble_fs::pause`): the test does what another run would do at
/// that instant, then lets it go on.
pub struct Paused {
    child: std::process::Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    /// stderr up to the pause.
    pub before: String,
}

impl Paused {
    /// Spawns `cmd` with the pause point `point` and waits until the run
    /// reaches it; a run that ends first fails the test, showing its stderr.
    pub fn start(mut cmd: Command, point: &str) -> Paused {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .env(assemble_fs::pause::VARIABLE, point)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn xtask");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut before = String::new();
        loop {
            let mut line = String::new();
            let n = stderr.read_line(&mut line).expect("read stderr");
            assert!(
                n > 0,
                "the run ended before the pause point {point}:\n{before}\n{:?}",
                child.wait()
            );
            if line.starts_with(assemble_fs::pause::MARKER) {
                break;
            }
            before.push_str(&line);
        }
        Paused {
            child,
            stderr,
            before,
        }
    }

    /// Lets the run go on, and returns its exit status and whole stderr.
    pub fn resume(mut self) -> (std::process::ExitStatus, String) {
        use std::io::{Read, Write};
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(b"\n").expect("resume");
        drop(stdin);
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).expect("read stderr");
        let status = self.child.wait().expect("wait");
        (status, format!("{}{rest}", self.before))
    }
}

/// Runs `cmd` to its end, or kills it once `deadline` has passed: a run
/// that hangs fails its test instead of the whole suite.
pub fn run_within(mut cmd: Command, deadline: std::time::Duration) -> Run {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => Run {
            output: output.expect("wait"),
        },
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd:?} did not end within {deadline:?}");
        }
    }
}

/// Runs `git ARGS` in `repo` as a fixed author at a fixed date, no user
/// configuration read (so a commit of the same tree and message has the
/// same hash on every machine); its stdout, trimmed.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo).args(args);
    for who in ["AUTHOR", "COMMITTER"] {
        cmd.env(format!("GIT_{who}_NAME"), "assemble")
            .env(format!("GIT_{who}_EMAIL"), "assemble@example.invalid")
            .env(format!("GIT_{who}_DATE"), "2026-01-01T00:00:00Z");
    }
    stdout_ok(
        cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1"),
    )
}

/// Runs Debian's skopeo (the oracle that reads images) and parses what it
/// prints as JSON.
pub fn skopeo(args: &[&str]) -> serde_json::Value {
    let out = stdout_ok(Command::new("skopeo").args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo said ({e}):\n{out}"))
}
