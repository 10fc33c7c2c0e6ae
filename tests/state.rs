//! The incremental state end to end, through the real binary: no-op runs,
//! dirty reasons, drift repair, `verify`, locking, determinism, and runs
//! killed with SIGKILL at random instants.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use crate::support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{Scratch, assert_same_tree, listing, python_xy};

fn site(out: &Path) -> std::path::PathBuf {
    out.join(format!("lib/python{}/site-packages", python_xy()))
}

/// (path, mtime ns, inode) of every path under `dir` but the state.
fn times(dir: &Path) -> Vec<(String, i64, u64)> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            (
                e.path().to_string_lossy().into_owned(),
                m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                m.ino(),
            )
        })
        .collect()
}

#[test]
fn a_no_op_run_writes_nothing_and_reads_no_input() {
    let s = Scratch::new();
    let out = s.path("out");
    // The fixture was copied a moment ago: with the default racy window its
    // files would (rightly) be re-hashed once more. A zero window makes the
    // second run the steady state.
    let run = || {
        support::xtask_env(
            s.dir.path(),
            &[
                "assemble",
                "--recipe",
                s.recipe().to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--json",
            ],
            &[("ASSEMBLE_RACY_WINDOW_MS", "0")],
        )
        .json()
    };
    let first = run();
    // The clean build read each input once at most: the venv's files (a
    // sealed cache entry) not at all, since its seal vouches for them; the
    // fixture's files while they were copied, or in the plan beforehand for
    // ELF files (the autoPatchelf step reads them) and Python sources
    // (their hash keys their bytecode); and the pycs the cache holds, in
    // the plan, against their digest links (no record of this output
    // vouches for them yet).
    let written = first["files_written"].as_u64().unwrap();
    let while_copied = first["io"]["inputs_hashed_while_copied"].as_u64().unwrap();
    let ahead = first["io"]["inputs_hashed"].as_u64().unwrap();
    let tree = listing(&out);
    let sources = tree
        .iter()
        .filter(|l| l.split(' ').next().is_some_and(|p| p.ends_with(".py")))
        .count() as u64;
    let pycs = tree
        .iter()
        .filter(|l| l.split(' ').next().is_some_and(|p| p.ends_with(".pyc")))
        .count() as u64;
    let elf = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter(|e| fs_err::read(e.path()).unwrap().starts_with(b"\x7fELF"))
        .count() as u64;
    let venv_files = first["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["unit"] == "python-deps")
        .filter(|c| {
            let p = c["path"].as_str().unwrap();
            out.join(p).is_file() && !p.ends_with(".pyc") && !p.starts_with("bin/")
        })
        .count() as u64;
    assert!(venv_files > 300, "{first}");
    assert!(
        ahead <= sources + elf + pycs,
        "only ELF files, sources and pycs are hashed ahead: {first}"
    );
    assert!(
        while_copied + ahead + venv_files <= written,
        "no file of the venv is hashed ({venv_files} of them): {first}"
    );
    let before = times(&out);
    // The pycs the first run compiled into the cache are younger than its
    // start: the racy rule has the next run hash them once more.
    let r = run();
    assert_eq!(r["files_written"], 0, "{r}");
    assert_eq!(
        r["io"]["inputs_hashed"], first["bytecode"]["compiled"],
        "{r}"
    );
    let r = run();
    assert_eq!(r["files_written"], 0, "{r}");
    assert_eq!(r["files_removed"], 0, "{r}");
    assert_eq!(r["io"]["inputs_hashed"], 0, "{r}");
    assert_eq!(r["io"]["inputs_hashed_bytes"], 0, "{r}");
    assert_eq!(times(&out), before, "no output path was touched");
    // Everything this process read (state, recipe, the interpreter probe's
    // own reads) stays far below the inputs' size.
    let inputs: u64 = walkdir::WalkDir::new(support::shared_cache().join("venvs"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let rchar = r["io"]["rchar"].as_u64().unwrap();
    assert!(
        rchar < inputs / 5,
        "read {rchar} bytes for {inputs} bytes of inputs"
    );
}

#[test]
fn dirty_reasons_are_plain_sentences() {
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let settings = s.path("demo/authentik/authentik/root/settings.py");
    let text = fs_err::read_to_string(&settings).unwrap();
    fs_err::write(&settings, format!("{text}DEBUG = False\n")).unwrap();
    s.edit_base(|t| {
        t.replace(
            "with = \"blueprints_dir: @out@/blueprints\"",
            "with = \"blueprints_dir: @out@/bp\"",
        )
    });
    let plan = s
        .run("plan", &["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(plan["dry_run"], true);
    let reasons: Vec<String> = plan["units"]["authentik"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.contains(&"patch 2 of authentik changed".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"authentik/root/settings.py changed (content)".to_string()),
        "{reasons:?}"
    );
    assert_eq!(plan["units"]["python-deps"]["status"], "fresh");
    // The plan changed nothing.
    let again = s
        .run("plan", &["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(again["files_written"], plan["files_written"]);

    // assemble -v says the same, cargo-style.
    let run = s.assemble(&["--out", out.to_str().unwrap(), "-v"]);
    let err = run.ok();
    assert!(
        err.contains("Dirty authentik: patch 2 of authentik changed"),
        "{err}"
    );
    assert!(
        err.contains("Dirty authentik: authentik/root/settings.py changed (content)"),
        "{err}"
    );

    // An environment change: the prefix.
    let plan = s
        .run(
            "plan",
            &[
                "--out",
                out.to_str().unwrap(),
                "--prefix",
                "/opt/elsewhere",
                "--json",
            ],
        )
        .json();
    let reasons = plan["units"]["authentik"]["reasons"].to_string();
    assert!(reasons.contains("prefix (@out@) changed"), "{reasons}");
}

#[test]
fn drift_is_noticed_and_repaired() {
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let clean = listing(&out);
    let sp = site(&out);
    fs_err::write(sp.join("authentik/root/settings.py"), "edited\n").unwrap();
    fs_err::remove_file(out.join("manage.py")).unwrap();
    fs_err::write(out.join("blueprints/extra.yaml"), "x").unwrap();
    // Bytecode Python would write at run time: in a folder of the tree with
    // no sources (`blueprints/`), and beside the tool's own pycs.
    fs_err::create_dir_all(out.join("blueprints/__pycache__")).unwrap();
    fs_err::write(out.join("blueprints/__pycache__/x.pyc"), "x").unwrap();
    fs_err::write(sp.join("authentik/__pycache__/x.pyc"), "x").unwrap();
    fs_err::set_permissions(
        sp.join("lifecycle/ak"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let r = s
        .assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let changes = r["changes"].to_string();
    for expected in [
        "settings.py: output file modified outside the tool: restored",
        "manage.py: output file removed outside the tool: restored",
        "blueprints/extra.yaml: added outside the tool: removed",
        "blueprints/__pycache__: added outside the tool: removed",
        "authentik/__pycache__/x.pyc: added outside the tool: removed",
        "lifecycle/ak: output file modified outside the tool: restored",
    ] {
        assert!(changes.contains(expected), "{expected}: {changes}");
    }
    assert_same_tree(&clean, &listing(&out), "after drift repair");
    let v = support::xtask(s.dir.path(), &["verify", "--out", out.to_str().unwrap()]);
    v.ok();
}

#[test]
fn verify_catches_a_one_byte_edit() {
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let ok = support::xtask(
        s.dir.path(),
        &["verify", "--out", out.to_str().unwrap(), "--json"],
    );
    ok.ok();
    let file = site(&out).join("opencontainers/struct.py");
    let mut bytes = fs_err::read(&file).unwrap();
    bytes[10] ^= 1;
    let mtime = fs_err::metadata(&file).unwrap().modified().unwrap();
    fs_err::write(&file, &bytes).unwrap();
    // Even with its old mtime back: verify reads every byte.
    fs_err::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .file()
        .set_modified(mtime)
        .unwrap();
    let r = support::xtask(
        s.dir.path(),
        &["verify", "--out", out.to_str().unwrap(), "--json"],
    );
    r.fails(1);
    let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let diffs = report["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{report}");
    assert!(
        diffs[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("opencontainers/struct.py")
    );
    assert!(
        diffs[0]["what"]
            .as_str()
            .unwrap()
            .starts_with("content differs")
    );
}

#[test]
fn a_second_assemble_waits_for_the_lock() {
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    // Hold the output's lock as another run would.
    let lock = fs_err::File::options()
        .write(true)
        .open(s.state_of(&out).join("lock"))
        .unwrap();
    lock.file().lock().unwrap();

    let err = s
        .assemble(&["--out", out.to_str().unwrap(), "--no-wait"])
        .fails(1);
    assert!(err.contains("--no-wait"), "{err}");
    // It fails before any preparation: with an empty cache, nothing is
    // fetched or built (before the fix it synced the venv first, then
    // failed).
    let empty = s.path("empty-cache");
    let err = support::assemble_into(
        s.dir.path(),
        &s.recipe(),
        &out,
        &["--no-wait"],
        &[("ASSEMBLE_CACHE_DIR", empty.to_str().unwrap())],
    )
    .fails(1);
    assert!(
        err.contains("--no-wait") && !err.contains("Preparing"),
        "{err}"
    );
    assert!(!empty.join("venvs").exists(), "a venv was built: {err}");

    let mut child = s
        .assemble_command(&["--out", out.to_str().unwrap(), "--prefix", "/opt/other"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended without waiting: {seen}"
        );
        seen.push_str(&line);
        if line.contains("Blocking waiting for file lock on the output") {
            break;
        }
    }
    drop(lock);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{seen}{rest}");
    assert!(rest.contains("Finished"), "{rest}");
}

/// A run that needs a venv another run is building says so at once, as
/// cargo does ("Blocking waiting for file lock on ..."), then uses that
/// venv instead of building it again. The first run is stopped while it
/// holds the venv's lock (before the fix the second waited 60 to 80 s on
/// a real venv and printed nothing).
#[test]
fn a_run_waiting_for_a_venv_says_so_and_uses_it() {
    let s = Scratch::new();
    let cache = support::cache_sharing_uv(s.dir.path(), "cache");
    let run = |out: &str| {
        let mut c = s.assemble_command(&["--out", s.path(out).to_str().unwrap()]);
        c.env("ASSEMBLE_CACHE_DIR", &cache);
        c
    };
    let building = support::Paused::start(run("a"), "venv-build");
    let mut waiting = run("b").stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(waiting.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended without saying it waits: {seen}"
        );
        seen.push_str(&line);
        if line.contains("Blocking waiting for file lock on the venv of python-deps") {
            break;
        }
    }
    let (status, a) = building.resume();
    assert!(status.success(), "{a}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(waiting.wait().unwrap().success(), "{seen}{rest}");
    assert!(
        !format!("{seen}{rest}").contains("syncing a virtualenv"),
        "the waiting run built the venv again: {seen}{rest}"
    );
    for out in ["a", "b"] {
        support::xtask(
            s.dir.path(),
            &["verify", "--out", s.path(out).to_str().unwrap()],
        )
        .ok();
    }
}

#[test]
fn concurrent_assembles_both_finish_and_the_output_verifies() {
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let spawn = |prefix: &str| {
        s.assemble_command(&["--out", out.to_str().unwrap(), "--prefix", prefix])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = spawn("/opt/a");
    let mut b = spawn("/opt/b");
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    support::xtask(s.dir.path(), &["verify", "--out", out.to_str().unwrap()]).ok();
}

/// Guards the read-once clean build against a race: two clean builds of a
/// fresh output both plan with hashes left to the copy; whichever takes the
/// lock second finds a state and must hash them before its diff.
#[test]
fn concurrent_clean_builds_both_finish_and_the_output_verifies() {
    let s = Scratch::new();
    let out = s.path("fresh");
    let spawn = || {
        s.assemble_command(&["--out", out.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = spawn();
    let mut b = spawn();
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    support::xtask(s.dir.path(), &["verify", "--out", out.to_str().unwrap()]).ok();
    let r = s
        .assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(r["files_written"], 0, "{r}");
}

/// Guards the creation of a fresh output's state folder against a second
/// run making it at the same instant: the run is stopped between looking
/// for the folder and creating it, the folder is made meanwhile (as the
/// other run would), and the run must go on. Before the fix it exited 1
/// with "failed to create directory `<state>`: File exists (os error 17)".
#[test]
fn a_state_folder_made_by_another_run_meanwhile_is_used() {
    let s = Scratch::new();
    let out = s.path("fresh");
    let paused = support::Paused::start(
        s.assemble_command(&["--out", out.to_str().unwrap()]),
        "state-folder",
    );
    fs_err::create_dir_all(s.state_of(&out)).unwrap();
    let (status, stderr) = paused.resume();
    assert!(status.success(), "{stderr}");
    support::xtask(s.dir.path(), &["verify", "--out", out.to_str().unwrap()]).ok();
}

#[test]
fn two_clean_builds_with_one_prefix_are_identical() {
    let s = Scratch::new();
    let a = s.path("a");
    let b = s.path("elsewhere/b");
    // Different folders and different caches (the second syncs its own
    // venv), one prefix: the same tree, to the bit.
    let mut hashes = Vec::new();
    let cache_a = support::cache_sharing_uv(s.dir.path(), "cache-a");
    let cache_b = support::cache_sharing_uv(s.dir.path(), "cache-b");
    for (out, cache) in [(&a, &cache_a), (&b, &cache_b)] {
        let extra = ["--prefix", "/opt/authentik", "--json", "--nar-hash"];
        let env = [("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())];
        let report = support::assemble_into(s.dir.path(), &s.recipe(), out, &extra, &env).json();
        hashes.push(report["nar_hash"].as_str().unwrap().to_string());
    }
    assert_same_tree(&listing(&a), &listing(&b), "two clean builds");
    let diff = std::process::Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_eq!(hashes[0], hashes[1], "the reported NAR hashes");
    assert_eq!(hashes[0], support::nix_hash_path(&a), "nix hash path");

    // Once computed, the hash is reported by every run whose tree is that
    // one, without `--nar-hash` (nothing is read for it); a run that
    // changes the tree reports none until asked, and going back to the
    // same tree reports it again.
    let plain = || {
        let extra = ["--prefix", "/opt/authentik", "--json"];
        let env = [("ASSEMBLE_CACHE_DIR", cache_a.to_str().unwrap())];
        support::assemble_into(s.dir.path(), &s.recipe(), &a, &extra, &env).json()["nar_hash"]
            .clone()
    };
    assert_eq!(
        plain(),
        serde_json::json!(hashes[0]),
        "a no-op after --nar-hash"
    );
    let urls = s.path("demo/authentik/authentik/root/__init__.py");
    let before = fs_err::read_to_string(&urls).unwrap();
    fs_err::write(&urls, format!("{before}# edited\n")).unwrap();
    assert_eq!(
        plain(),
        serde_json::Value::Null,
        "a run that changed the tree"
    );
    fs_err::write(&urls, &before).unwrap();
    assert_eq!(
        plain(),
        serde_json::json!(hashes[0]),
        "back to the same tree"
    );

    // Exports of the two builds are the same bytes; the NAR restores, by
    // Nix's own `nix-store --restore`, to a tree of the reported hash, and
    // the tar unpacks, by GNU tar, to one.
    let export = |from: &Path, format: &str, file: &str| {
        let file = s.path(file);
        support::xtask(
            s.dir.path(),
            &[
                "export",
                "--recipe",
                s.recipe().to_str().unwrap(),
                "--from",
                from.to_str().unwrap(),
                "--format",
                format,
                "--out",
                file.to_str().unwrap(),
            ],
        )
        .ok();
        fs_err::read(file).unwrap()
    };
    for format in ["nar", "tar"] {
        let one = export(&a, format, &format!("a.{format}"));
        let two = export(&b, format, &format!("b.{format}"));
        assert!(one == two, "two exports ({format}) differ");
    }
    let restored = s.path("restored");
    let nar = fs_err::File::open(s.path("a.nar")).unwrap().into_parts().0;
    let ok = std::process::Command::new("nix-store")
        .arg("--restore")
        .arg(&restored)
        .stdin(nar)
        .status()
        .unwrap();
    assert!(ok.success(), "nix-store --restore");
    assert_eq!(support::nix_hash_path(&restored), hashes[0], "restored NAR");
    let untarred = s.path("untarred");
    fs_err::create_dir_all(&untarred).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-xpf")
        .arg(s.path("a.tar"))
        .arg("-C")
        .arg(&untarred)
        .status()
        .unwrap();
    assert!(ok.success(), "tar -x");
    assert_eq!(support::nix_hash_path(&untarred), hashes[0], "unpacked tar");

    // A tree changed after its assemble is not exported as if it were
    // the recorded one; an export into the tree itself is refused.
    let settings = site(&a).join("authentik/root/settings.py");
    let export_nar = || {
        support::xtask(
            s.dir.path(),
            &[
                "export",
                "--format",
                "nar",
                "--from",
                a.to_str().unwrap(),
                "--out",
                "x.nar",
            ],
        )
        .fails(1)
    };
    fs_err::write(&settings, "changed = True\n").unwrap();
    let err = export_nar();
    assert!(
        err.contains("settings.py: changed since the last assemble"),
        "{err}"
    );
    assert!(!s.path("x.nar").exists(), "nothing half-written is left");
    // So is one whose file became a link (it said "Too many levels of
    // symbolic links" before).
    fs_err::remove_file(&settings).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &settings).unwrap();
    let err = export_nar();
    assert!(
        err.contains("settings.py: changed since the last assemble"),
        "{err}"
    );
    let inside = a.join("x.tar");
    let err = support::xtask(
        s.dir.path(),
        &[
            "export",
            "--format",
            "tar",
            "--from",
            a.to_str().unwrap(),
            "--out",
            inside.to_str().unwrap(),
        ],
    )
    .fails(2);
    assert!(err.contains("is inside the tree it exports"), "{err}");
}

/// A small generator, seeded from the clock unless CRASH_SEED is set; the
/// seed is printed so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn killed_runs_are_repaired_to_the_clean_build() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let dirs = [
        "psycopg",
        "psycopg_binary",
        "uvicorn",
        "gunicorn",
        "dramatiq",
        "click",
        "opencontainers",
        "authentik",
    ];
    let mut prefix = "/opt/a";
    let mut killed_mid_run = 0;
    let mut interrupted = 0;
    let mut run_ms: u64 = 300;
    for i in 0..50 {
        // Give the next run work: lost output folders (all of site-packages
        // now and then), another prefix, edited inputs.
        let lost = if rng.below(3) == 0 {
            site(&out)
        } else {
            site(&out).join(dirs[rng.below(dirs.len() as u64) as usize])
        };
        let _ = fs_err::remove_dir_all(lost);
        if rng.below(3) == 0 {
            prefix = if prefix == "/opt/a" {
                "/opt/b"
            } else {
                "/opt/a"
            };
        }
        if rng.below(2) == 0 {
            let f = s.path(&format!(
                "demo/authentik/blueprints/gen{}.yaml",
                rng.below(5)
            ));
            if f.exists() && rng.below(2) == 0 {
                fs_err::remove_file(&f).unwrap();
            } else {
                fs_err::write(&f, format!("n: {}\n", rng.next())).unwrap();
            }
        }
        let mut child = s
            .assemble_command(&["--out", out.to_str().unwrap(), "--prefix", prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The fault to inject: SIGKILL at an arbitrary instant of the run
        // (this wait is the experiment, not a synchronisation), mostly in
        // its second half, where the output is changed.
        let full = run_ms.max(20);
        std::thread::sleep(Duration::from_millis(
            full / 2 + rng.below(full / 2 + full / 4),
        ));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if !status.success() {
            killed_mid_run += 1;
        }
        // Was it stopped while changing the output? The next plan says so.
        let plan = s
            .run(
                "plan",
                &["--out", out.to_str().unwrap(), "--prefix", prefix, "--json"],
            )
            .json();
        if plan["changes"].to_string().contains("\"interrupted\"") {
            interrupted += 1;
        }
        let started = std::time::Instant::now();
        let r = s.assemble(&["--out", out.to_str().unwrap(), "--prefix", prefix, "--json"]);
        r.json();
        run_ms = started.elapsed().as_millis() as u64;
        let clean = s.path("clean");
        let _ = fs_err::remove_dir_all(&clean);
        s.assemble(&[
            "--out",
            clean.to_str().unwrap(),
            "--prefix",
            prefix,
            "--json",
        ])
        .json();
        assert_same_tree(
            &listing(&clean),
            &listing(&out),
            &format!("iteration {i} after a kill (CRASH_SEED={seed})"),
        );
        assert!(!listing(&out).iter().any(|l| l.contains(".assemble-tmp")));
    }
    eprintln!("{killed_mid_run} of 50 runs killed, {interrupted} while changing the output");
    assert!(
        killed_mid_run > 10,
        "most runs were really killed: {killed_mid_run}"
    );
    assert!(
        interrupted > 0,
        "some kills landed while the output was being changed"
    );
}
