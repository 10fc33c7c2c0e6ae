//! `assemble --watch`: edits to the inputs reach the tree one by one, and
//! the tree a watch leaves is the one a clean build makes.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{self, Scratch};

/// The watch tests one at a time: one of them lowers a kernel-wide limit.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Both trees compared are built for it (`@out@`).
const PREFIX: &str = "/opt/authentik";

/// How long an edit may take to show (a busy CI machine compiles pycs).
const DEADLINE: Duration = Duration::from_secs(90);

/// A running `assemble --watch`, its status lines collected as they come.
struct Watching {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watching {
    fn start(s: &Scratch, out: &Path) -> Watching {
        let mut child = s
            .assemble_command(&[
                "--out",
                out.to_str().unwrap(),
                "--prefix",
                PREFIX,
                "--watch",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let w = Watching { child, lines };
        w.wait_for_line("watching for", |l| l.contains("Watching"));
        w
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| f(l)).count()
    }

    /// Waits until `f` holds for a line.
    fn wait_for_line(&self, what: &str, f: impl Fn(&str) -> bool) {
        let ok = poll(|| self.count(&f) > 0);
        assert!(ok, "no line {what} within {DEADLINE:?}:\n{}", self.log());
    }

    /// Ends the watch as Ctrl-C does; returns its log.
    fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let status = self.child.wait().unwrap();
        // The reader thread ends with the pipe.
        let ok = poll(|| self.log().contains("Stopped"));
        let log = self.log();
        assert!(
            status.success() && ok,
            "the watch ended with {status}:\n{log}"
        );
        log
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kernel's `max_queued_events` (for inotify instances made from now
/// on) set, and put back when dropped, a failed test included.
struct QueueLimit(String);

const QUEUE_LIMIT: &str = "/proc/sys/fs/inotify/max_queued_events";

impl QueueLimit {
    fn set(value: &str) -> QueueLimit {
        let was = fs_err::read_to_string(QUEUE_LIMIT).unwrap();
        fs_err::write(QUEUE_LIMIT, value).unwrap();
        QueueLimit(was)
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = fs_err::write(QUEUE_LIMIT, &self.0);
    }
}

/// Polls `f` until it holds or [`DEADLINE`] passes.
fn poll(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// Stops the watch of `out` (see [`Watching::stop`]) and asserts its tree
/// equals a clean build of the scratch recipe beside it, file for file;
/// returns the watch's log.
fn stopped_as_a_clean_build(w: Watching, s: &Scratch, out: &Path) -> String {
    let log = w.stop();
    let clean = s.path("clean");
    s.assemble(&["--out", clean.to_str().unwrap(), "--prefix", PREFIX])
        .ok();
    support::assert_same_tree(
        &support::listing(out),
        &support::listing(&clean),
        "the watched tree and a clean build",
    );
    log
}

/// xorshift64: the edits are random, and the seed printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What an edit must make true in the tree.
enum Expect {
    /// The output file holds these bytes (and, if given, this executable bit).
    Content(PathBuf, String, Option<bool>),
    Absent(PathBuf),
    /// A run triggered by this input name ended (nothing visible changes).
    Line(&'static str, usize),
    Exists(PathBuf),
    /// The first path is gone, the second holds the bytes.
    Renamed(PathBuf, PathBuf, String),
}

fn holds(e: &Expect, w: &Watching) -> bool {
    match e {
        Expect::Content(p, text, exec) => {
            fs_err::read_to_string(p).is_ok_and(|t| &t == text)
                && exec.is_none_or(|x| {
                    fs_err::metadata(p).is_ok_and(|m| (m.permissions().mode() & 0o100 != 0) == x)
                })
        }
        Expect::Absent(p) => fs_err::symlink_metadata(p).is_err(),
        Expect::Exists(p) => p.exists(),
        Expect::Renamed(from, to, text) => {
            fs_err::symlink_metadata(from).is_err()
                && fs_err::read_to_string(to).is_ok_and(|t| &t == text)
        }
        Expect::Line(name, before) => w.count(|l| l.contains(name)) > *before,
    }
}

/// Thirty random edits of every kind (content, a new file, a delete, a
/// rename, a chmod, a folder moved in, a recipe edit, a `uv.lock` touch),
/// each seen in the tree before the next is made; then the watch stops
/// and its tree equals a clean build's, file for file.
#[test]
fn thirty_random_edits_each_reach_the_tree_and_it_ends_as_a_clean_build() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    let out = s.path("out");
    let src = s.path("demo/authentik/authentik");
    let site = out.join(format!("lib/python{}/site-packages", support::python_xy()));
    let w = Watching::start(&s, &out);

    let seed = std::env::var("ASSEMBLE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("ASSEMBLE_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    // Every kind once, in a random order, then random kinds.
    let mut kinds: Vec<usize> = (0..8).collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i + 1));
    }
    // A file of ours first, to edit, rename and delete.
    kinds.insert(0, 1);
    while kinds.len() < 30 {
        kinds.push(rng.below(8));
    }
    // Files of ours to edit, rename and delete (the recipe patches others).
    let mut ours: Vec<String> = Vec::new();
    let mut bytecode = true;
    for (n, kind) in kinds.into_iter().enumerate() {
        let name = format!("edit_{n}.py");
        let expect = match kind {
            // Content: one of ours, or a new one.
            0 | 1 if kind == 0 && !ours.is_empty() => {
                let f = ours[rng.below(ours.len())].clone();
                let text = format!(
                    "{}VALUE_{n} = {n}\n",
                    fs_err::read_to_string(src.join(&f)).unwrap()
                );
                fs_err::write(src.join(&f), &text).unwrap();
                Expect::Content(site.join("authentik").join(&f), text, None)
            }
            0 | 1 => {
                let text = format!("NEW_{n} = {n}\n");
                fs_err::write(src.join(&name), &text).unwrap();
                ours.push(name.clone());
                Expect::Content(site.join("authentik").join(&name), text, None)
            }
            // Delete.
            2 if !ours.is_empty() => {
                let f = ours.swap_remove(rng.below(ours.len()));
                fs_err::remove_file(src.join(&f)).unwrap();
                Expect::Absent(site.join("authentik").join(&f))
            }
            // Rename.
            3 if !ours.is_empty() => {
                let i = rng.below(ours.len());
                let f = std::mem::replace(&mut ours[i], name.clone());
                fs_err::rename(src.join(&f), src.join(&name)).unwrap();
                let text = fs_err::read_to_string(src.join(&name)).unwrap();
                Expect::Renamed(
                    site.join("authentik").join(&f),
                    site.join("authentik").join(&name),
                    text,
                )
            }
            // Chmod.
            4 if !ours.is_empty() => {
                let f = &ours[rng.below(ours.len())];
                let p = src.join(f);
                let mode = fs_err::metadata(&p).unwrap().permissions().mode() ^ 0o111;
                fs_err::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
                let text = fs_err::read_to_string(&p).unwrap();
                Expect::Content(
                    site.join("authentik").join(f),
                    text,
                    Some(mode & 0o100 != 0),
                )
            }
            // A folder made elsewhere, moved in whole.
            5 => {
                let dir = format!("moved_{n}");
                let made = s.path(&dir);
                fs_err::create_dir_all(made.join("inner")).unwrap();
                fs_err::write(made.join("__init__.py"), "").unwrap();
                let text = format!("DEEP_{n} = {n}\n");
                fs_err::write(made.join("inner/deep.py"), &text).unwrap();
                fs_err::rename(&made, src.join(&dir)).unwrap();
                Expect::Content(
                    site.join("authentik").join(&dir).join("inner/deep.py"),
                    text,
                    None,
                )
            }
            // The recipe: bytecode off, or on again.
            6 => {
                bytecode = !bytecode;
                s.edit_recipe(|t| {
                    if bytecode {
                        t.replace("compile-bytecode = false\n", "")
                    } else {
                        t.replace("[python]\n", "[python]\ncompile-bytecode = false\n")
                    }
                });
                let pyc = site.join(format!(
                    "authentik/__pycache__/__init__.cpython-{}.pyc",
                    support::python_xy().replace('.', "")
                ));
                if bytecode {
                    Expect::Exists(pyc)
                } else {
                    Expect::Absent(pyc)
                }
            }
            // uv.lock touched: a run, nothing to change.
            _ => {
                let before = w.count(|l| l.contains("uv.lock"));
                let lock = s.path("demo/authentik/uv.lock");
                let f = fs_err::File::options().append(true).open(&lock).unwrap();
                f.set_modified(std::time::SystemTime::now()).unwrap();
                Expect::Line("uv.lock", before)
            }
        };
        let seen = poll(|| holds(&expect, &w));
        assert!(
            seen,
            "edit {n} (kind {kind}, seed {seed}) not seen in the tree:\n{}",
            w.log()
        );
    }
    let log = stopped_as_a_clean_build(w, &s, &out);
    assert!(log.contains("Updated authentik: "), "{log}");
}

/// With the kernel's inotify queue at 0 events, every change the watch
/// sees is an overflow: it says events were lost and checks every input,
/// and a burst of 300 new files, deletes and an edit still ends in the
/// tree a clean build makes.
#[test]
fn lost_events_end_in_a_full_run_and_the_clean_tree() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    let out = s.path("out");
    // Built first: the watch's own first run then opens no input.
    s.assemble(&["--out", out.to_str().unwrap(), "--prefix", PREFIX])
        .ok();
    // The limit is read when the watch makes its inotify instance, and
    // restored as soon as it says it watches (or the test fails).
    let w = {
        let _limit = QueueLimit::set("0");
        Watching::start(&s, &out)
    };

    let src = s.path("demo/authentik/authentik");
    for i in 0..300 {
        fs_err::write(src.join(format!("burst_{i}.py")), format!("N = {i}\n")).unwrap();
    }
    for i in 0..100 {
        fs_err::remove_file(src.join(format!("burst_{i}.py"))).unwrap();
    }
    fs_err::write(src.join("burst_299.py"), "N = 'last'\n").unwrap();
    let site = out.join(format!("lib/python{}/site-packages", support::python_xy()));
    let last = site.join("authentik/burst_299.py");
    let seen = poll(|| {
        fs_err::read_to_string(&last).is_ok_and(|t| t == "N = 'last'\n")
            && !site.join("authentik/burst_0.py").exists()
    });
    assert!(seen, "the burst did not reach the tree:\n{}", w.log());
    let log = stopped_as_a_clean_build(w, &s, &out);
    assert!(log.contains("events were lost"), "{log}");
}

/// Another `assemble` on a watched output fails at once with `--no-wait`,
/// naming the output; a recipe broken while watching is said and the
/// watch goes on, and the update after it also repairs a file edited in
/// the output; `plan`, a dry run, takes no `--watch`.
#[test]
fn a_watched_output_is_locked_and_survives_a_broken_recipe() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    let out = s.path("out");
    let w = Watching::start(&s, &out);
    let busy = s
        .assemble(&["--out", out.to_str().unwrap(), "--no-wait"])
        .fails(1);
    assert!(busy.contains("another assemble is writing"), "{busy}");

    // A typo in the recipe: the error, with its place, and the watch waits.
    s.edit_recipe(|t| t.replace("[python]\n", "[python]\nintepreter = 1\n"));
    w.wait_for_line("with the recipe's error", |l| l.contains("Waiting"));
    assert!(w.log().contains("assemble.toml:"), "{}", w.log());
    // A file edited in the output, then the recipe mended: the update
    // puts back the tree's file too.
    let site = out.join(format!("lib/python{}/site-packages", support::python_xy()));
    let tree_file = site.join("guardian/__init__.py");
    let original = fs_err::read_to_string(&tree_file).unwrap();
    fs_err::write(&tree_file, "edited in the output\n").unwrap();
    s.edit_recipe(|t| t.replace("intepreter = 1\n", ""));
    let repaired = poll(|| fs_err::read_to_string(&tree_file).is_ok_and(|t| t == original));
    assert!(repaired, "{}", w.log());
    w.stop();
    let plan = s.run("plan", &["--watch"]).fails(2);
    assert!(plan.contains("--watch applies each change"), "{plan}");
}
