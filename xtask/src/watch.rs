//! `cargo xtask assemble --watch`: the first run, then one run for each
//! burst of changes to the inputs, the output's lock held throughout.
//!
//! What is watched is what the plan reads from outside the cache: each
//! `path` and `venv` unit's folder (recursively), the recipe and every file
//! it extends, a `requirements` file, and a uv project's `uv.lock` and
//! `pyproject.toml` files (its members' too). Cache entries are not
//! watched: they are made by the tool and checked against their records
//! whenever they are read.
//!
//! Every update is the whole pipeline, which stats every input and output
//! path and reads only what changed: an edit, a rename, a `chmod`, a folder
//! moved in, a recipe or lock change, and events the kernel lost (its
//! queue overflowed) all end in the same tree as a clean build. Drift in
//! the output itself (a file edited there) is repaired by the next update,
//! whatever its trigger. Events are coalesced: a run starts once the inputs
//! have been quiet for [`QUIET`] (or [`LONGEST`] after the first event), so
//! a `git checkout` of a thousand files is one run. A failed run is said
//! and the watch goes on; the output is left as the last good run made it
//! (or, for a run that failed while writing, repaired by the next).
//! SIGINT or SIGTERM end the watch between runs; each run commits its
//! state before the next event is read.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use assemble_pipeline::{Event, Lock, Options, Report};
use assemble_recipe::{Project, Recipe, Source};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::shell::{Drawing, Shell};
use crate::{AssembleArgs, Failure};

/// How long the inputs must be quiet before a run starts.
const QUIET: Duration = Duration::from_millis(5);
/// The longest a burst of events delays its run.
const LONGEST: Duration = Duration::from_millis(300);

/// What the watch loop is told.
enum Message {
    Fs(notify::Result<notify::Event>),
    /// SIGINT or SIGTERM.
    Stop,
}

/// A folder watched, and which of its paths count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watch {
    recursive: bool,
    /// Only paths with one of these file names count (`None`: all).
    names: Option<Vec<OsString>>,
}

/// `assemble --watch` with the pipeline's options `opts`.
pub fn run(sh: &Shell, args: &AssembleArgs, opts: &Options) -> Result<(), Failure> {
    let drawing = Drawing::new(sh, sh.progress(), sh.quiet());
    let events = |e: Event| drawing.event(e);
    let lock = assemble_pipeline::lock_output(opts, &events);
    drawing.clear();
    let lock = lock.map_err(Failure::from_pipeline)?;

    let (tx, rx) = mpsc::channel();
    let stopping = stop_on_signals(tx.clone())?;
    let mut watcher = notify::recommended_watcher(move |e| {
        let _ = tx.send(Message::Fs(e));
    })?;
    let mut watched = BTreeMap::new();
    rewatch(sh, &mut watcher, &mut watched, &opts.recipe);

    // The first run, reported in full.
    if let Some(r) = once(sh, opts, &lock) {
        crate::assemble::report(sh, args, &r);
    }
    sh.status(
        "Watching",
        format!(
            "{} folders for changes to the inputs of {} (Ctrl-C ends)",
            watched.len(),
            opts.out.display()
        ),
    );
    while let Ok(first) = rx.recv() {
        let Some((batch, stop)) = collect(first, &rx, &watched) else {
            break;
        };
        // A signal that came during the last run ends the watch now, not
        // after the events queued before it.
        if stopping.load(Ordering::Relaxed) {
            break;
        }
        if !batch.triggers.is_empty() || batch.lost {
            if batch.lost {
                sh.warn(
                    "events were lost (the kernel's inotify queue overflowed, or a watch failed); every input is checked",
                );
                // Watches notify would have added for new folders may be
                // missing: all made again before the run.
                for dir in watched.keys() {
                    let _ = watcher.unwatch(dir);
                }
                watched.clear();
            }
            // Before the run: a recipe edit's new folders are watched
            // while it reads them, so no change to them is missed.
            rewatch(sh, &mut watcher, &mut watched, &opts.recipe);
            let start = Instant::now();
            if let Some(r) = once(sh, opts, &lock) {
                update_line(sh, &r, &batch.triggers, &opts.recipe, start.elapsed());
            }
        }
        if stop {
            break;
        }
    }
    drop(lock);
    sh.status("Stopped", "watching; the output is as the last run left it");
    Ok(())
}

/// What a burst of events said.
#[derive(Default)]
struct Batch {
    /// The input paths that changed, in order, each once.
    triggers: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
    /// Events were lost: the kernel's queue overflowed, or a watch failed.
    lost: bool,
}

/// The burst that starts with `first`: events until the inputs are quiet.
/// `None`: stop now; else the batch and whether to stop after its run.
fn collect(
    first: Message,
    rx: &mpsc::Receiver<Message>,
    watched: &BTreeMap<PathBuf, Watch>,
) -> Option<(Batch, bool)> {
    let mut batch = Batch::default();
    let Message::Fs(e) = first else { return None };
    take(&mut batch, e, watched);
    let start = Instant::now();
    loop {
        let left = LONGEST.saturating_sub(start.elapsed());
        match rx.recv_timeout(QUIET.min(left)) {
            Ok(Message::Fs(e)) => take(&mut batch, e, watched),
            Ok(Message::Stop) => return Some((batch, true)),
            Err(mpsc::RecvTimeoutError::Timeout) => return Some((batch, false)),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Some((batch, true)),
        }
        if left.is_zero() {
            return Some((batch, false));
        }
    }
}

/// Adds what one event says to `batch`.
fn take(batch: &mut Batch, e: notify::Result<notify::Event>, watched: &BTreeMap<PathBuf, Watch>) {
    let e = match e {
        Ok(e) => e,
        Err(_) => {
            batch.lost = true;
            return;
        }
    };
    if e.need_rescan() {
        batch.lost = true;
        return;
    }
    // Reads (ours among them) change nothing.
    if matches!(e.kind, EventKind::Access(_)) {
        return;
    }
    for p in e.paths {
        if counts(&p, watched) && batch.seen.insert(p.clone()) {
            batch.triggers.push(p);
        }
    }
}

/// Whether a change at `path` can change the tree.
fn counts(path: &Path, watched: &BTreeMap<PathBuf, Watch>) -> bool {
    watched.iter().any(|(dir, w)| {
        let inside = if w.recursive {
            path.starts_with(dir)
        } else {
            path.parent() == Some(dir) || path == dir
        };
        inside
            && w.names.as_ref().is_none_or(|names| {
                path.file_name()
                    .is_some_and(|n| names.iter().any(|m| m == n))
            })
    })
}

/// One run under the held lock; a failure is said, and `None`.
fn once(sh: &Shell, opts: &Options, lock: &Lock) -> Option<Report> {
    let drawing = Drawing::new(sh, sh.progress(), sh.quiet());
    let events = |e: Event| drawing.event(e);
    let r = assemble_pipeline::assemble_holding(opts, lock, &events);
    drawing.clear();
    match r {
        Ok(r) => Some(r),
        Err(e) => {
            sh.error(&Failure::from_pipeline(e).error);
            sh.status("Waiting", "for the next change");
            None
        }
    }
}

/// `Updated authentik: authentik/core/models.py (3 ms)`, or what
/// triggered a run that changed nothing.
fn update_line(sh: &Shell, r: &Report, triggers: &[PathBuf], recipe: &Path, took: Duration) {
    for w in &r.plan.warnings {
        sh.warn(w);
    }
    crate::assemble::outside_lines(sh, &r.outcome.changes, sh.verbose(), false);
    let ms = took.as_millis();
    let changes = &r.outcome.changes;
    let units: std::collections::BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| c.unit.as_ref().map(|u| u.as_str()))
        .collect();
    let units = if units.is_empty() {
        "the tree".to_string()
    } else {
        units.into_iter().collect::<Vec<_>>().join(", ")
    };
    match changes.as_slice() {
        [] => {
            let base = recipe.parent().unwrap_or(Path::new("/"));
            let shown: Vec<String> = triggers
                .iter()
                .take(3)
                .map(|p| p.strip_prefix(base).unwrap_or(p).display().to_string())
                .collect();
            let more = triggers.len().saturating_sub(3);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            sh.status(
                "Fresh",
                format!(
                    "after {}{more}: nothing to change ({ms} ms)",
                    shown.join(", ")
                ),
            )
        }
        _ => {
            // Each change by its input's name where it has one (as the
            // unit's source names it), pycs counted apart.
            let (pycs, named): (Vec<_>, Vec<_>) = changes
                .iter()
                .partition(|c| c.path.contains("/__pycache__/"));
            let mut shown: Vec<&str> = named
                .iter()
                .take(3)
                .map(|c| c.source.as_deref().unwrap_or(&c.path))
                .collect();
            let more = named.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let pycs = match pycs.len() {
                0 => String::new(),
                1 => ", its pyc".to_string(),
                n => format!(", {n} pycs"),
            };
            if shown.is_empty() {
                shown.push("bytecode");
            }
            sh.status(
                "Updated",
                format!("{units}: {}{more}{pycs} ({ms} ms)", shown.join(", ")),
            )
        }
    }
}

/// Watches what the recipe at `recipe` reads now (the recipe's files alone
/// if it does not load) and stops watching what it no longer does.
fn rewatch(
    sh: &Shell,
    watcher: &mut impl Watcher,
    watched: &mut BTreeMap<PathBuf, Watch>,
    recipe: &Path,
) {
    let want = match Recipe::load(recipe) {
        Ok(r) => inputs(&r),
        // A recipe that does not load: what was watched, and the recipe.
        Err(_) => {
            let mut want = watched.clone();
            for (dir, w) in only_files(&[recipe.to_path_buf()]) {
                want.entry(dir).or_insert(w);
            }
            want
        }
    };
    for (dir, w) in watched.iter() {
        if want.get(dir) != Some(w) {
            let _ = watcher.unwatch(dir);
        }
    }
    for (dir, w) in &want {
        if watched.get(dir) != Some(w) {
            let mode = if w.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(dir, mode) {
                sh.warn(format!(
                    "cannot watch {}: {e}; a change there is applied only with the next one elsewhere (a limit: raise fs.inotify.max_user_watches)",
                    dir.display()
                ));
            }
        }
    }
    *watched = want;
}

/// The folders the plan of `recipe` reads from outside the cache.
fn inputs(recipe: &Recipe) -> BTreeMap<PathBuf, Watch> {
    let mut want = only_files(&recipe.files);
    // One watch a folder: recursive if either is, for the names of both
    // (all names if either counts all). At worst broader: a spare run.
    let mut add = |dir: &Path, w: Watch| {
        let merged = match want.remove(dir) {
            Some(old) => Watch {
                recursive: old.recursive || w.recursive,
                names: union(old.names, w.names),
            },
            None => w,
        };
        want.insert(dir.to_path_buf(), merged);
    };
    let whole = Watch {
        recursive: true,
        names: None,
    };
    for u in &recipe.units {
        match &u.source {
            Source::Path { path } | Source::Venv { path } => add(path, whole.clone()),
            Source::Requirements { path } => {
                if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                    add(
                        dir,
                        Watch {
                            recursive: false,
                            names: Some(vec![name.to_os_string()]),
                        },
                    );
                }
            }
            Source::UvProject {
                project: Project::Path(dir),
            } => add(
                dir,
                Watch {
                    recursive: true,
                    names: Some(vec!["uv.lock".into(), "pyproject.toml".into()]),
                },
            ),
            // In another unit's source (watched with it, if it is local),
            // or pinned and fetched into the cache.
            Source::UvProject { .. } | Source::Remote(_) | Source::From { .. } => {}
        }
    }
    want
}

/// The folders of `files`, each watched for its files' names.
fn only_files(files: &[PathBuf]) -> BTreeMap<PathBuf, Watch> {
    let mut want: BTreeMap<PathBuf, Watch> = BTreeMap::new();
    for f in files {
        let (Some(dir), Some(name)) = (f.parent(), f.file_name()) else {
            continue;
        };
        let w = want.entry(dir.to_path_buf()).or_insert(Watch {
            recursive: false,
            names: Some(Vec::new()),
        });
        if let Some(names) = &mut w.names {
            names.push(name.to_os_string());
        }
    }
    want
}

fn union(a: Option<Vec<OsString>>, b: Option<Vec<OsString>>) -> Option<Vec<OsString>> {
    let (mut a, b) = (a?, b?);
    a.extend(b);
    a.sort();
    a.dedup();
    Some(a)
}

/// SIGINT and SIGTERM become a [`Message::Stop`] (and the flag returned,
/// set): the run in progress ends and commits its state first.
fn stop_on_signals(tx: mpsc::Sender<Message>) -> Result<Arc<AtomicBool>, Failure> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            flag.store(true, Ordering::Relaxed);
            let _ = tx.send(Message::Stop);
        }
    });
    Ok(stopping)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn watch(recursive: bool, names: Option<&[&str]>) -> Watch {
        Watch {
            recursive,
            names: names.map(|n| n.iter().map(OsString::from).collect()),
        }
    }

    /// A folder watched for some names counts only those names, and only
    /// in itself unless recursive; a whole folder counts all beneath it.
    #[test]
    fn only_the_paths_a_plan_reads_count() {
        let mut w = BTreeMap::new();
        w.insert(PathBuf::from("/r"), watch(false, Some(&["assemble.toml"])));
        w.insert(PathBuf::from("/src"), watch(true, None));
        w.insert(PathBuf::from("/proj"), watch(true, Some(&["uv.lock"])));
        for (path, expected) in [
            ("/r/assemble.toml", true),
            ("/r/assemble.lock", false),
            ("/r/sub/assemble.toml", false),
            ("/src/a/b/c.py", true),
            ("/src", true),
            ("/proj/uv.lock", true),
            ("/proj/member/uv.lock", true),
            ("/proj/.venv/lib/x.py", false),
            ("/elsewhere/x.py", false),
        ] {
            assert_eq!(counts(Path::new(path), &w), expected, "{path}");
        }
    }

    /// Two recipe files in one folder are one watch for both names; a
    /// folder also watched whole stays whole.
    #[test]
    fn watches_of_one_folder_merge() {
        let w = only_files(&[PathBuf::from("/r/a.toml"), PathBuf::from("/r/b.toml")]);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[Path::new("/r")],
            watch(false, Some(&["a.toml", "b.toml"]))
        );
        assert_eq!(
            union(Some(vec!["b".into(), "a".into()]), Some(vec!["a".into()])),
            Some(vec![OsString::from("a"), OsString::from("b")])
        );
        assert_eq!(union(None, Some(vec!["a".into()])), None);
    }

    /// The demo's recipe: its two files' folders for their names, the
    /// authentik checkout whole (the uv project is in it).
    #[test]
    fn the_demo_is_watched_where_it_is_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let recipe = Recipe::load(&root.join("demo/assemble.toml")).unwrap();
        let w = inputs(&recipe);
        assert_eq!(
            w[&root.join("demo")],
            watch(false, Some(&["assemble.toml"]))
        );
        assert_eq!(w[root], watch(false, Some(&["assemble.toml"])));
        assert_eq!(w[&root.join("demo/authentik")], watch(true, None));
        assert_eq!(w.len(), 3);
    }
}
