//! The cache as a run meets it (issue 20, item 2): an entry edited after it
//! was made (a venv's file, a fetched source's file, a pyc, uv itself) is
//! found where it is used, discarded with a warning naming it, and made
//! again; nothing of it reaches a tree or runs. `verify --cache` names each.
//!
//! Each test poisons a cache of its own (sharing only the bootstrapped uv,
//! except the test that replaces uv), never the suite's shared cache.
//! Before the fix every poisoned entry was used silently, and `verify` and
//! `--locked` passed; with the poisoned pyc, importing from the built tree
//! ran code that is in none of its `.py` files.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{self, Run, Scratch};

/// `assemble --recipe <demo> --out OUT --json` with `cache`.
fn assemble(s: &Scratch, out: &Path, cache: &Path) -> Run {
    support::assemble_into(
        s.dir.path(),
        &s.recipe(),
        out,
        &["--json"],
        &[("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())],
    )
}

/// `verify --cache` of `cache`: its exit code and findings (entry, problem).
fn verify_cache(s: &Scratch, cache: &Path) -> (i32, Vec<(PathBuf, String)>) {
    let run = support::xtask_env(
        s.dir.path(),
        &[
            "verify",
            "--cache",
            "--json",
            "--recipe",
            s.recipe().to_str().unwrap(),
        ],
        &[("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())],
    );
    let v: serde_json::Value = serde_json::from_slice(&run.output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout(), run.stderr()));
    let found = v["corrupt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                PathBuf::from(f["entry"].as_str().unwrap()),
                f["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (run.code().unwrap(), found)
}

/// The only entry in `cache/KIND/`.
fn the_entry(cache: &Path, kind: &str) -> PathBuf {
    let all: Vec<PathBuf> = fs_err::read_dir(cache.join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.to_string_lossy().contains(".discarded-"))
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

fn site(root: &Path) -> PathBuf {
    root.join(format!("lib/python{}/site-packages", support::python_xy()))
}

/// The run's warnings, as one text.
fn warnings(r: &serde_json::Value) -> String {
    r["warnings"].to_string()
}

/// Builds the demo with a cache of its own; returns (scratch, cache, the
/// report).
fn built() -> (Scratch, PathBuf, serde_json::Value) {
    let s = Scratch::new();
    let cache = support::cache_sharing_uv(s.dir.path(), "cache");
    let r = assemble(&s, &s.path("first"), &cache).json();
    (s, cache, r)
}

/// Checks what every poisoning test checks after it poisoned `file` of the
/// entry `entry`: `verify --cache` names them; a build into a new output
/// warns, discards and makes the entry again, and its tree holds
/// `file`'s original bytes at `in_tree`; the cache then verifies.
fn found_discarded_and_made_again(
    s: &Scratch,
    cache: &Path,
    entry: &Path,
    file: &Path,
    in_tree: &str,
    original: &[u8],
) {
    let (code, found) = verify_cache(s, cache);
    assert_eq!(code, 1, "{found:?}");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, entry, "{found:?}");
    assert!(
        found[0].1.contains(&*file.to_string_lossy()),
        "names the file: {found:?}"
    );

    let out = s.path("second");
    let r = assemble(s, &out, cache).json();
    let w = warnings(&r);
    assert!(
        w.contains(&*entry.to_string_lossy()) && w.contains("discarded"),
        "a warning names the entry: {w}"
    );
    assert_eq!(fs_err::read(out.join(in_tree)).unwrap(), original);
    let (code, found) = verify_cache(s, cache);
    assert_eq!((code, found), (0, vec![]), "made again whole");
    support::xtask(s.dir.path(), &["verify", "--out", out.to_str().unwrap()]).ok();
}

#[test]
fn a_file_edited_in_a_cached_venv_is_discarded_and_synced_again() {
    let (s, cache, _) = built();
    let venv = the_entry(&cache, "venvs");
    let rel = format!(
        "{}/gunicorn/__init__.py",
        site(Path::new("")).to_string_lossy()
    );
    let file = venv.join(&rel);
    let original = fs_err::read(&file).unwrap();
    fs_err::write(&file, b"raise SystemExit('poisoned')\n").unwrap();
    found_discarded_and_made_again(&s, &cache, &venv, &file, &rel, &original);
}

#[test]
fn a_file_edited_in_a_cached_source_is_discarded_and_fetched_again() {
    let (s, cache, _) = built();
    let source = the_entry(&cache, "sources");
    let file = source.join("opencontainers/__init__.py");
    let original = fs_err::read(&file).unwrap();
    fs_err::write(&file, b"raise SystemExit('poisoned')\n").unwrap();
    let in_tree = format!(
        "{}/opencontainers/__init__.py",
        site(Path::new("")).to_string_lossy()
    );
    found_discarded_and_made_again(&s, &cache, &source, &file, &in_tree, &original);
}

/// A pyc in the bytecode cache with the header of its source (so that the
/// interpreter accepts it for that source) and other code: the poisoning
/// that ran code from no `.py` file of the tree.
#[test]
fn a_poisoned_pyc_is_discarded_and_compiled_again() {
    let (s, cache, _) = built();
    let first = s.path("first");
    let xy = support::python_xy();
    let in_tree = format!(
        "lib/python{xy}/site-packages/gunicorn/__pycache__/__init__.{}.pyc",
        cache_tag()
    );
    let original = fs_err::read(first.join(&in_tree)).unwrap();
    // The cache file with the same bytes.
    let pyc = walkdir::WalkDir::new(cache.join("bytecode"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.extension().is_some_and(|x| x == "pyc") && fs_err::read(p).unwrap() == original)
        .expect("the pyc of gunicorn/__init__.py in the cache");
    let poison = support::run(
        &support::real_python(),
        &[
            "-c",
            "import sys, marshal\n\
             data = open(sys.argv[1], 'rb').read()\n\
             code = compile(\"raise SystemExit('poisoned')\", 'gunicorn/__init__.py', 'exec')\n\
             open(sys.argv[1], 'wb').write(data[:16] + marshal.dumps(code))",
            pyc.to_str().unwrap(),
        ],
    );
    assert!(poison.0, "{}", poison.1);
    found_discarded_and_made_again(&s, &cache, &pyc, &pyc, &in_tree, &original);
    // The tree's interpreter imports the real module.
    let (ok, said) = support::run(
        &s.path("second/bin/python"),
        &["-c", "import gunicorn; print(gunicorn.__version__)"],
    );
    assert!(ok && !said.contains("poisoned"), "{said}");
}

/// uv replaced in the cache (here by a script that leaves a mark if it
/// runs) is never run: it no longer matches the seal made when it was
/// bootstrapped, so it is discarded and bootstrapped again.
#[test]
fn a_replaced_uv_is_never_run() {
    let s = Scratch::new();
    let cache = s.path("cache");
    // A copy of the bootstrapped uv, not a link: this test replaces it.
    let shared = support::shared_uv();
    let folder = shared.parent().unwrap();
    let uv_dir = cache.join(format!("tools/uv-{}", support::UV_VERSION));
    support::copy_dir(folder, &uv_dir);
    fs_err::copy(
        assemble_cache::seal_path(folder),
        assemble_cache::seal_path(&uv_dir),
    )
    .unwrap();
    let mark = s.path("uv-ran");
    let uv = uv_dir.join("uv");
    fs_err::remove_file(&uv).unwrap();
    fs_err::write(
        &uv,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", mark.display()),
    )
    .unwrap();
    fs_err::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (code, found) = verify_cache(&s, &cache);
    assert_eq!(code, 1, "{found:?}");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, uv_dir, "{found:?}");

    // The venv is not in this cache: syncing it needs uv.
    let out = s.path("out");
    let r = assemble(&s, &out, &cache).json();
    assert!(!mark.exists(), "the replaced uv ran");
    let w = warnings(&r);
    assert!(
        w.contains(&*uv_dir.to_string_lossy()) && w.contains("discarded"),
        "{w}"
    );
    assert_eq!(verify_cache(&s, &cache), (0, vec![]));
}

/// The interpreter's cache tag (`cpython-311`).
fn cache_tag() -> String {
    let (ok, tag) = support::run(
        &support::real_python(),
        &["-c", "import sys; print(sys.implementation.cache_tag)"],
    );
    assert!(ok, "{tag}");
    tag.trim().to_string()
}

/// Guards the message for a bytecode cache that cannot be written (issue
/// 20, item 6): the run stops with "cannot write the bytecode cache DIR"
/// (it printed the compiler's whole 20-line script as a failed command).
/// As root a mode does not stop a write: the cache's bytecode folder is
/// made read-only by a bind mount, in a mount namespace of the run's own
/// (`unshare -m`: nothing outside it sees the mount).
#[test]
fn a_read_only_bytecode_cache_is_said_as_such() {
    let (s, cache, _) = built();
    // A source the cache has no pyc for.
    fs_err::write(s.path("demo/authentik/authentik/new_module.py"), "N = 1\n").unwrap();
    let bytecode = cache.join("bytecode");
    let script = r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(&bytecode)
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["assemble", "--recipe"])
        .arg(s.recipe())
        .arg("--out")
        .arg(s.path("second"))
        .current_dir(s.dir.path())
        .env("ASSEMBLE_CACHE_DIR", &cache)
        .env("ASSEMBLE_STATE_DIR", s.path("state"))
        .output()
        .unwrap();
    let err = Run { output: out }.fails(1);
    assert!(
        err.contains(&format!(
            "cannot write the bytecode cache {}",
            bytecode.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("importlib") && err.lines().count() < 6,
        "{err}"
    );
}

/// Guards the message of a uv bootstrap with no network at all (issue 20,
/// item 6): pip's own words, cut to its errors and one line for its
/// retries, under what was being done (it printed pip's every retry, each
/// a line of urllib3 internals).
#[test]
fn a_failed_uv_bootstrap_says_why_in_a_few_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    uv_project_recipe(dir);
    let out = Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["assemble", "--recipe", "assemble.toml", "--out", "out"])
        .args(["--cache-dir", "cache", "--state-dir", "state"])
        .current_dir(dir)
        .output()
        .unwrap();
    let err = Run { output: out }.fails(1);
    assert!(
        err.contains(&format!(
            "bootstrapping uv {} from its wheel",
            support::UV_VERSION
        )) && err.contains("ERROR: No matching distribution found")
            && !err.contains("NewConnectionError")
            && !err.contains("Traceback")
            && err.lines().count() < 10,
        "{err}"
    );
}

/// Guards what is not the tool's: a folder at uv's place in a cache that
/// holds anything but what a bootstrap puts there, and no seal, is someone
/// else's (a --cache-dir pointed at the wrong folder): it is left as it is,
/// and the run says so, where an unsealed leftover of the tool's own is
/// removed and made again.
#[test]
fn a_folder_at_uvs_place_that_is_not_the_tools_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    uv_project_recipe(dir);
    let theirs = dir.join(format!("cache/tools/uv-{}", support::UV_VERSION));
    fs_err::create_dir_all(&theirs).unwrap();
    fs_err::write(theirs.join("notes.txt"), "mine").unwrap();
    let err = support::xtask(
        dir,
        &[
            "assemble",
            "--recipe",
            "assemble.toml",
            "--out",
            "out",
            "--cache-dir",
            "cache",
        ],
    )
    .fails(1);
    assert!(err.contains("it is not the tool's"), "{err}");
    assert_eq!(
        fs_err::read_to_string(theirs.join("notes.txt")).unwrap(),
        "mine"
    );
}

/// A recipe in `dir` with one unit, a uv project's venv (uv bootstrapped
/// into the cache when missing).
fn uv_project_recipe(dir: &Path) {
    fs_err::create_dir_all(dir.join("proj")).unwrap();
    fs_err::write(
        dir.join("proj/pyproject.toml"),
        "[project]\nname = \"proj\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    fs_err::write(
        dir.join("proj/uv.lock"),
        "version = 1\nrequires-python = \">=3.8\"\n\n[[package]]\nname = \"proj\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\n",
    )
    .unwrap();
    fs_err::write(
        dir.join("assemble.toml"),
        format!(
            "[package]\nname = \"nonet\"\nversion = \"0\"\n[python]\ninterpreter = \"python3\"\ninstaller = \"uv=={}\"\ninstaller-sha256 = [\"{}\"]\n[units.deps]\nuv-project = \"proj\"\nscripts = []\n",
            support::UV_VERSION,
            support::UV_WHEEL_SHA256
        ),
    )
    .unwrap();
}
