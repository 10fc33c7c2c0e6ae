//! Runs at the same time (issue 20, item 5): they cooperate, never fail
//! each other. Six runs start together, sharing one empty cache, three of
//! them into one output and three into outputs of their own, twenty rounds
//! over: each run exits 0, each output verifies, the venv is built and the
//! remote source fetched by one run, the bytecode of each source compiled
//! by one run, and no run says an OS error. Every run's stderr is in the
//! failure message.
//!
//! Before the fix, two runs making a fresh output's state folder at the
//! same instant failed one of them with "File exists (os error 17)", and
//! two runs compiling the same pyc replaced each other's cache file
//! (`ASSEMBLE_TEST_XTASK` runs another binary, as the confinement tests).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::http::{Reply, Server};
use crate::support::{self, nix_hash_path};

const ROUNDS: usize = 20;
const RUNS: usize = 6;

/// A pure-Python wheel `tiny` of a few modules, built with the
/// interpreter's zipfile (no network, no build tool).
fn wheel(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-1.0-py3-none-any.whl");
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    files = {"tiny/__init__.py": "X = 1\n"}
    for i in range(12):
        files["tiny/m%d.py" % i] = "def f(a):\n    return a * %d\n" % i
    files["tiny-1.0.dist-info/METADATA"] = "Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n"
    files["tiny-1.0.dist-info/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join("%s,,\n" % p for p in files) + "tiny-1.0.dist-info/RECORD,,\n"
    files["tiny-1.0.dist-info/RECORD"] = record
    for p, text in files.items():
        z.writestr(p, text)
"#;
    let (ok, said) = support::run(
        &support::real_python(),
        &["-c", script, path.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    path
}

/// The recipe's inputs in `dir`: a venv from the local wheel, an app
/// folder, a remote archive served by `server`. Returns the recipe.
fn inputs(dir: &Path, server: &Server) -> PathBuf {
    let whl = wheel(dir);
    fs_err::write(
        dir.join("requirements.txt"),
        format!("--no-index\n{}\n", whl.display()),
    )
    .unwrap();
    for i in 0..30 {
        let f = dir.join(format!("app/app/m{i}.py"));
        fs_err::create_dir_all(f.parent().unwrap()).unwrap();
        fs_err::write(f, format!("def g():\n    return {i}\n")).unwrap();
    }
    let tree = dir.join("upstream/remote-1.0");
    for i in 0..20 {
        let f = tree.join(format!("remote/r{i}.py"));
        fs_err::create_dir_all(f.parent().unwrap()).unwrap();
        fs_err::write(f, format!("R = {i}\n")).unwrap();
    }
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    tar.append_dir_all("remote-1.0", &tree).unwrap();
    let archive = tar.into_inner().unwrap().finish().unwrap();
    server.route("/remote-1.0.tar.gz", Reply::Ok(archive));
    let recipe = dir.join("assemble.toml");
    fs_err::write(
        &recipe,
        format!(
            r#"[package]
name = "together"
version = "0"

[python]
interpreter = "{python}"
compile-bytecode = true

[units.deps]
requirements = "requirements.txt"
scripts = []

[units.app]
path = "app"
install = {{ "app" = "@site@/app" }}

[units.remote]
url = "{url}"
hash = "{hash}"
install = {{ "remote" = "@site@/remote" }}
"#,
            python = support::real_python().display(),
            url = server.url("/remote-1.0.tar.gz"),
            hash = nix_hash_path(&tree),
        ),
    )
    .unwrap();
    recipe
}

/// What one run left: its exit code, stderr and `--json` report.
struct Ran {
    out: PathBuf,
    code: Option<i32>,
    stderr: String,
    report: Option<serde_json::Value>,
}

/// Every run's stderr, for a failure message.
fn all_said(runs: &[Ran]) -> String {
    runs.iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "--- run {i} into {} (exit {:?}):\n{}",
                r.out.display(),
                r.code,
                r.stderr
            )
        })
        .collect()
}

#[test]
fn six_runs_at_once_share_one_empty_cache_and_never_fail_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = Server::start();
    let recipe = inputs(dir, &server);
    let mut sources = None;
    for round in 0..ROUNDS {
        let cache = dir.join(format!("cache-{round}"));
        let state = dir.join(format!("state-{round}"));
        let outs: Vec<PathBuf> = (0..RUNS)
            .map(|i| match i {
                0..3 => dir.join(format!("shared-{round}")),
                _ => dir.join(format!("own-{round}-{i}")),
            })
            .collect();
        let hits = server.hits();
        let children: Vec<_> = outs
            .iter()
            .map(|out| {
                Command::new(support::xtask_bin())
                    .args(["assemble", "--json", "--recipe"])
                    .arg(&recipe)
                    .arg("--out")
                    .arg(out)
                    .current_dir(dir)
                    .env("ASSEMBLE_CACHE_DIR", &cache)
                    .env("ASSEMBLE_STATE_DIR", &state)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let runs: Vec<Ran> = children
            .into_iter()
            .zip(&outs)
            .map(|(c, out)| {
                let o = c.wait_with_output().unwrap();
                Ran {
                    out: out.clone(),
                    code: o.status.code(),
                    stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                    report: serde_json::from_slice(&o.stdout).ok(),
                }
            })
            .collect();
        let said = || format!("round {round}:\n{}", all_said(&runs));
        assert!(runs.iter().all(|r| r.code == Some(0)), "{}", said());
        // The only lines a run says besides its report: waits.
        for r in &runs {
            for line in r.stderr.lines() {
                assert!(
                    line.trim_start().starts_with("Blocking waiting for "),
                    "an unexplained line: {line}\n{}",
                    said()
                );
            }
        }
        assert_eq!(server.hits() - hits, 1, "fetched once: {}", said());
        // Each source compiled by one run: as many compiles as sources.
        let n = *sources.get_or_insert_with(|| {
            walkdir::WalkDir::new(&outs[0])
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "py"))
                .count() as u64
        });
        assert!(n >= 60, "{n} sources");
        let compiled: u64 = runs
            .iter()
            .map(|r| {
                r.report.as_ref().unwrap()["bytecode"]["compiled"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert_eq!(compiled, n, "each source compiled once: {}", said());
        for out in &outs[2..] {
            support::xtask_env(
                dir,
                &["verify", "--out", out.to_str().unwrap()],
                &[("ASSEMBLE_STATE_DIR", state.to_str().unwrap())],
            )
            .ok();
        }
        // What a round leaves takes room; the next starts empty anyway.
        for p in outs.iter().chain([&cache, &state]) {
            let _ = fs_err::remove_dir_all(p);
        }
    }
}
