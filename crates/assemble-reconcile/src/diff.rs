//! What must change, and why: the desired manifest against the recorded
//! state and against what is on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::state::{Entries, Recorded, STATE_DIR, State};
use crate::{Entry, Error, Fingerprint, Kind, Reason, Sha256, Stat, Target};

/// One path to write or remove, with why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    pub path: String,
    pub reason: Reason,
    /// The unit that produces (or produced) the path.
    pub unit: Option<String>,
    /// The input it comes from, relative to the unit's source.
    pub source: Option<String>,
}

impl Change {
    /// The change as said within its unit: `authentik/root/settings.py
    /// changed (content)`, or `path: output file modified outside the tool:
    /// restored` for what is about the output itself.
    pub fn in_unit(&self) -> String {
        match self.reason {
            Reason::Missing
            | Reason::Modified
            | Reason::Added
            | Reason::NoState
            | Reason::Interrupted
            | Reason::Stale => format!("{}: {}", self.path, self.reason),
            _ => format!(
                "{} {}",
                self.source.as_deref().unwrap_or(&self.path),
                self.reason
            ),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unit {
            Some(u) => write!(f, "{u}: {}", self.in_unit()),
            None => f.write_str(&self.in_unit()),
        }
    }
}

/// A change in a unit's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitReason {
    pub unit: String,
    /// The fingerprint component, e.g. `patch 2` or `env:interpreter`.
    pub component: String,
    /// `changed`, `added` or `removed`.
    pub what: &'static str,
}

impl fmt::Display for UnitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.component.strip_prefix("env:") {
            Some(env) => write!(f, "{env} changed"),
            None if self.component == "unit" => write!(f, "unit {} is new", self.unit),
            None => write!(f, "{} of {} {}", self.component, self.unit, self.what),
        }
    }
}

/// Why a unit is dirty (empty when it is fresh).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitStatus {
    pub dirty: bool,
    /// Plain sentences: fingerprint changes first, then its paths.
    pub reasons: Vec<String>,
}

/// Everything a run would change.
#[derive(Debug, Default)]
pub struct Diff {
    /// No usable state: a clean reconcile.
    pub full: bool,
    pub writes: Vec<Change>,
    pub removes: Vec<Change>,
    pub units: BTreeMap<String, UnitStatus>,
    /// Paths whose stat changed but whose content did not.
    pub(crate) refresh: Vec<(String, Stat)>,
    pub(crate) prev: State,
}

impl Diff {
    /// Whether the output already equals the target.
    pub fn is_clean(&self) -> bool {
        self.writes.is_empty() && self.removes.is_empty() && self.prev.pending.is_empty()
    }
}

/// A recorded entry and the stat of its path now (`None`: missing).
type Seen<'a> = (&'a Recorded, Option<Stat>);

enum Verdict {
    Keep,
    Refresh(Stat),
    Write(Reason),
}

/// What was recorded for an output, and an `lstat` of every recorded path
/// as it is now, taken in parallel.
///
/// It does not depend on the plan, so a run takes it while planning, before
/// it holds the lock; under the lock, [`Snapshot::is_current`] tells whether
/// another run has changed the state since (then it is taken again).
#[derive(Debug)]
pub struct Snapshot {
    state: Option<State>,
    /// The stat of each recorded path, in `state.entries` order.
    now: Vec<Option<Stat>>,
    root: Option<Stat>,
    /// The stats of `state.bin`, `state.log` and `journal.bin` before they
    /// were read.
    ident: [Option<Stat>; 3],
}

impl Snapshot {
    pub fn take(out: &Path) -> Snapshot {
        let ident = State::ident(out);
        let state = State::load(out);
        let now = match &state {
            Some(s) => stat_recorded(out, &s.entries),
            None => Vec::new(),
        };
        Snapshot {
            state,
            now,
            root: Stat::lstat(out),
            ident,
        }
    }

    /// Whether no usable state was recorded: every path will be written.
    pub fn is_full(&self) -> bool {
        self.state.is_none()
    }

    /// Whether the recorded state is still the one this snapshot read (no
    /// run has stored a state or left a journal since).
    pub fn is_current(&self, out: &Path) -> bool {
        State::ident(out) == self.ident
    }
}

/// The stat of each recorded path now (`None`: missing), in order. Paths
/// are grouped by folder; each folder is opened once (`O_PATH`, nothing
/// is listed) and its entries `statx`ed relative to it, so the kernel
/// resolves one name per path instead of the whole path from the root.
fn stat_recorded(out: &Path, entries: &Entries) -> Vec<Option<Stat>> {
    use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
    let mut folders: FxHashMap<&str, Vec<(usize, &str)>> = FxHashMap::default();
    for (i, path) in entries.keys().enumerate() {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        folders.entry(dir).or_default().push((i, name));
    }
    let found: Vec<Vec<(usize, Option<Stat>)>> = folders
        .par_iter()
        .map(|(dir, names)| {
            let fd = rustix::fs::open(
                out.join(dir),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            names
                .iter()
                .map(|(i, name)| {
                    let stat = fd.as_ref().ok().and_then(|fd| {
                        rustix::fs::statx(
                            fd,
                            *name,
                            AtFlags::SYMLINK_NOFOLLOW,
                            StatxFlags::BASIC_STATS,
                        )
                        .ok()
                        .map(|x| Stat::of_statx(&x))
                    });
                    (*i, stat)
                })
                .collect()
        })
        .collect();
    let mut now = vec![None; entries.len()];
    for (i, stat) in found.into_iter().flatten() {
        now[i] = stat;
    }
    now
}

/// Compares `target` with the state recorded in `out` and with the files
/// there. Reads only what changed: a path whose stat matches the record is
/// not opened.
pub fn diff(out: &Path, target: &Target) -> Result<Diff, Error> {
    diff_snapshot(out, target, Snapshot::take(out))
}

/// As [`diff`], from a snapshot of `out` taken earlier.
pub fn diff_snapshot(out: &Path, target: &Target, snapshot: Snapshot) -> Result<Diff, Error> {
    let desired = &target.desired;
    // `.assemble` and everything under it sort between `.assemble` and
    // `.assemble0` ('/' comes just before '0'): one range, no scan.
    let reserved = (
        std::ops::Bound::Included(STATE_DIR.to_string()),
        std::ops::Bound::Excluded(format!("{STATE_DIR}0")),
    );
    if let Some(p) = desired
        .range::<String, _>(reserved)
        .map(|(p, _)| p)
        .find(|p| p.as_str() == STATE_DIR || p.starts_with(&format!("{STATE_DIR}/")))
    {
        return Err(Error::Reserved {
            out: out.to_path_buf(),
            path: p.clone(),
        });
    }
    let Snapshot {
        state, now, root, ..
    } = snapshot;
    let full = state.is_none();
    let prev = state.unwrap_or_default();
    if !full && target.has_deferred() {
        return Err(std::io::Error::other(format!(
            "{}: has a recorded state, but the plan left hashes to the copy; hash them first (Target::hash_deferred)",
            out.display()
        ))
        .into());
    }

    // One pass over both sorted maps: no search per path.
    let mut pairs: Vec<(&String, &Entry, Option<Seen>)> = Vec::with_capacity(desired.len());
    let mut stale: Vec<(&String, &Recorded)> = Vec::new();
    let recorded = prev
        .entries
        .iter()
        .zip(&now)
        .map(|((p, r), s)| (p, (r, *s)));
    for (path, want, had) in zip_sorted(desired.iter(), recorded) {
        match (want, had) {
            (Some(e), r) => pairs.push((path, e, r)),
            (None, Some((r, _))) => stale.push((path, r)),
            (None, None) => {}
        }
    }
    let verdicts: Vec<(&String, &Entry, Verdict)> = pairs
        .into_par_iter()
        .map(|(path, e, r)| {
            let pending = !prev.pending.is_empty() && prev.pending.contains(path.as_str());
            (path, e, judge(out, path, e, r, pending, full))
        })
        .collect();
    let mut d = Diff {
        full,
        ..Diff::default()
    };
    let mut scan: Vec<String> = Vec::new();
    for (path, e, v) in verdicts {
        match v {
            Verdict::Keep => {}
            Verdict::Refresh(stat) => {
                if e.kind == Kind::Dir {
                    scan.push(path.clone());
                }
                d.refresh.push((path.clone(), stat));
            }
            Verdict::Write(reason) => {
                // A folder new to the record may already hold things.
                if e.kind == Kind::Dir {
                    scan.push(path.clone());
                }
                d.writes.push(Change {
                    path: path.clone(),
                    reason,
                    unit: Some(e.unit.to_string()),
                    source: e.source.as_deref().map(str::to_string),
                })
            }
        }
    }

    // Removals: what the previous run made and no unit makes now, what a
    // killed run left, and what someone else put in our folders.
    let mut removes: BTreeMap<String, Change> = BTreeMap::new();
    let mut remove = |path: &str, reason: Reason, unit: Option<&str>| {
        removes.entry(path.to_string()).or_insert_with(|| Change {
            path: path.to_string(),
            reason,
            unit: unit.map(str::to_string),
            source: None,
        });
    };
    if full {
        foreign(out, "", desired, &prev, true, &mut |p| {
            remove(p, Reason::NoState, None)
        })?;
    } else {
        for (path, r) in stale {
            remove(path, Reason::Stale, Some(&r.unit));
        }
        for path in &prev.pending {
            if !desired.contains_key(path) && !prev.entries.contains_key(path) {
                remove(path, Reason::Interrupted, None);
            }
        }
        if root.is_some() && root != prev.root {
            scan.push(String::new());
        }
        for dir in &scan {
            foreign(out, dir, desired, &prev, false, &mut |p| {
                remove(p, Reason::Added, None)
            })?;
        }
    }
    d.removes = removes.into_values().collect();

    // Units: fingerprint changes, then their paths.
    for (unit, fp) in &target.units {
        let mut status = UnitStatus::default();
        match prev.units.get(unit) {
            None if full => {}
            None => status.reasons.push(
                UnitReason {
                    unit: unit.clone(),
                    component: "unit".into(),
                    what: "added",
                }
                .to_string(),
            ),
            Some(old) => status.reasons.extend(
                fingerprint_changes(unit, old, fp)
                    .iter()
                    .map(|r| r.to_string()),
            ),
        }
        for c in d.writes.iter().chain(&d.removes) {
            if c.unit.as_deref() == Some(unit.as_str()) {
                status.reasons.push(c.in_unit());
            }
        }
        status.dirty = !status.reasons.is_empty();
        d.units.insert(unit.clone(), status);
    }
    d.prev = prev;
    Ok(d)
}

/// The fingerprint components that differ between two runs of a unit.
fn fingerprint_changes(unit: &str, old: &Fingerprint, new: &Fingerprint) -> Vec<UnitReason> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let what = match (old.get(k), new.get(k)) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(_), Some(_)) => "changed",
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                (None, None) => return None,
            };
            Some(UnitReason {
                unit: unit.to_string(),
                component: k.clone(),
                what,
            })
        })
        .collect()
}

/// Whether `path` must be written, and why.
fn judge(out: &Path, path: &str, e: &Entry, r: Option<Seen>, pending: bool, full: bool) -> Verdict {
    if pending {
        return Verdict::Write(Reason::Interrupted);
    }
    let Some((r, now)) = r else {
        return Verdict::Write(if full { Reason::NoState } else { Reason::New });
    };
    if r.kind != e.kind {
        return Verdict::Write(classify(&r.kind, r.source_sha, e));
    }
    let Some(stat) = now else {
        return Verdict::Write(Reason::Missing);
    };
    if Some(stat) == r.stat {
        return Verdict::Keep;
    }
    let p = out.join(path);
    let same = match &e.kind {
        Kind::Dir => stat.is_dir(),
        Kind::Link { target } => {
            stat.is_symlink()
                && std::fs::read_link(&p).is_ok_and(|t| t.as_os_str() == target.as_str())
        }
        Kind::File { sha256, executable } => {
            stat.is_file()
                && stat.mode & 0o7777 == if *executable { 0o755 } else { 0o644 }
                && Sha256::of_file(&p).is_ok_and(|h| h == *sha256)
        }
    };
    if same {
        Verdict::Refresh(stat)
    } else {
        Verdict::Write(Reason::Modified)
    }
}

/// Why an entry recorded as `old` (from an input of `old_source`) is
/// replaced by `new`.
fn classify(old: &Kind, old_source: Option<Sha256>, new: &Entry) -> Reason {
    match (old, &new.kind) {
        (Kind::File { sha256: a, .. }, Kind::File { sha256: b, .. }) if a == b => {
            Reason::ModeChanged
        }
        (Kind::File { .. }, Kind::File { .. }) | (Kind::Link { .. }, Kind::Link { .. }) => {
            if new.source_sha.is_some() && new.source_sha != old_source {
                Reason::SourceChanged
            } else {
                Reason::Regenerated
            }
        }
        _ => Reason::KindChanged,
    }
}

/// Reports every path in folder `dir` of the output that neither the target
/// nor the record knows (`dir` "" is the root), descending into known
/// folders when `recursive`.
fn foreign(
    out: &Path,
    dir: &str,
    desired: &crate::Desired,
    prev: &State,
    recursive: bool,
    report: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let entries = match fs_err::read_dir(out.join(dir)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if dir.is_empty() && name == STATE_DIR {
            continue;
        }
        let rel = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        match desired.get(&rel) {
            None if recursive || !prev.entries.contains_key(&rel) => report(&rel),
            None => {}
            Some(e)
                if recursive
                    && e.kind == Kind::Dir
                    && entry.file_type().is_ok_and(|t| t.is_dir()) =>
            {
                foreign(out, &rel, desired, prev, true, report)?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Two sequences sorted by path, walked in step: every path once, with
/// its value in either or both.
pub(crate) fn zip_sorted<'a, A, B>(
    a: impl Iterator<Item = (&'a String, A)>,
    b: impl Iterator<Item = (&'a String, B)>,
) -> impl Iterator<Item = (&'a String, Option<A>, Option<B>)> {
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.cmp(y),
        };
        Some(match order {
            std::cmp::Ordering::Less => a.next().map(|(p, v)| (p, Some(v), None))?,
            std::cmp::Ordering::Greater => b.next().map(|(p, w)| (p, None, Some(w)))?,
            std::cmp::Ordering::Equal => {
                let (p, v) = a.next()?;
                let (_, w) = b.next()?;
                (p, Some(v), Some(w))
            }
        })
    })
}
