//! What must change, and why: the desired manifest against the recorded
//! state and against what is on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;

use rayon::prelude::*;
use serde::Serialize;

use crate::root::{EntryType, Root};
use crate::state::{Entries, Layout, Recorded, State};
use crate::{Error, Reason};
use assemble_manifest::{
    Component, Desired, Entry, Fingerprint, Kind, Sha256, Stat, Target, UnitName, hash_stream,
};

/// One path to write or remove, with why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    pub path: String,
    pub reason: Reason,
    /// The unit that produces (or produced) the path.
    pub unit: Option<UnitName>,
    /// The input it comes from, relative to the unit's source.
    pub source: Option<String>,
    /// For a stray whose name is not UTF-8: its real name (`path` shows
    /// it with replacement characters).
    #[serde(skip)]
    pub(crate) raw_name: Option<OsString>,
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

/// How a fingerprint component differs from the last run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    Added,
    Changed,
    Removed,
}

/// Why a unit is dirty: each said as a sentence in one place, `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirtyReason {
    /// The last run had no such unit.
    NewUnit { unit: UnitName },
    /// A component of its fingerprint differs.
    Fingerprint {
        unit: UnitName,
        component: Component,
        delta: Delta,
    },
    /// One of its paths is written or removed (a sentence of the change).
    Path(String),
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyReason::NewUnit { unit } => write!(f, "unit {unit} is new"),
            DirtyReason::Fingerprint {
                component: env @ Component::Env(_),
                ..
            } => write!(f, "{env} changed"),
            DirtyReason::Fingerprint {
                unit,
                component,
                delta,
            } => {
                let delta = match delta {
                    Delta::Added => "added",
                    Delta::Changed => "changed",
                    Delta::Removed => "removed",
                };
                write!(f, "{component} of {unit} {delta}")
            }
            DirtyReason::Path(change) => f.write_str(change),
        }
    }
}

/// Why a unit is dirty (empty when it is fresh).
#[derive(Debug, Clone, Default)]
pub struct UnitStatus {
    pub dirty: bool,
    /// Fingerprint changes first, then its paths.
    pub reasons: Vec<DirtyReason>,
}

/// Everything a run would change.
#[derive(Debug, Default)]
pub struct Diff {
    /// No usable state: a clean reconcile.
    pub full: bool,
    pub writes: Vec<Change>,
    pub removes: Vec<Change>,
    pub units: BTreeMap<UnitName, UnitStatus>,
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
    /// The output, opened (`None`: not there yet).
    root: Option<Root>,
    /// Whether the output is the folder the state was recorded for.
    owned: bool,
    /// Where the state lives (for messages).
    state_dir: std::path::PathBuf,
    state: Option<State>,
    /// The stat of each recorded path, in `state.entries` order.
    now: Vec<Option<Stat>>,
    root_stat: Option<Stat>,
    /// The stats of the owner record, `state.bin`, `state.log` and
    /// `journal.bin` before they were read.
    ident: [Option<Stat>; 4],
}

impl Snapshot {
    /// The state of `layout`'s output, used only if the output is the folder
    /// it was recorded for.
    pub fn take(layout: &Layout) -> Snapshot {
        let ident = State::ident(&layout.state);
        let root = Root::open(&layout.out).ok();
        let owned = root.as_ref().is_some_and(|r| layout.owns(r));
        let state = owned.then(|| State::load(&layout.state)).flatten();
        let now = match (&state, &root) {
            (Some(s), Some(r)) => stat_recorded(r, &s.entries),
            _ => Vec::new(),
        };
        Snapshot {
            root_stat: root.as_ref().and_then(|r| r.stat_self().ok()),
            root,
            owned,
            state_dir: layout.state.clone(),
            state,
            now,
            ident,
        }
    }

    /// Whether no usable state was recorded: every path will be written.
    pub fn is_full(&self) -> bool {
        self.state.is_none()
    }

    /// Whether the recorded state is still the one this snapshot read (no
    /// run has claimed the output, stored a state or left a journal since,
    /// and the output is the same folder).
    pub fn is_current(&self, layout: &Layout) -> bool {
        State::ident(&layout.state) == self.ident
            && Root::open(&layout.out)
                .ok()
                .and_then(|r| r.stat_self().ok())
                .map(|s| (s.dev, s.ino))
                == self.root_stat.map(|s| (s.dev, s.ino))
    }
}

/// The stat of each recorded path now (`None`: missing, or a folder on its
/// way is not a folder), in order.
fn stat_recorded(root: &Root, entries: &Entries) -> Vec<Option<Stat>> {
    root.stat_all(entries.keys().map(String::as_str))
}

/// Compares `target` with the state recorded for `layout` and with the
/// files there. Reads only what changed: a path whose stat matches the
/// record is not opened.
pub fn diff(layout: &Layout, target: &Target) -> Result<Diff, Error> {
    diff_snapshot(target, Snapshot::take(layout))
}

/// The check of the manifest that its keys' type ([`crate::OutPath`]) does
/// not make: every path's parent is a folder of the manifest (not a file,
/// and not a link: nothing is ever written through a link). The diff makes
/// it in its pass over the manifest, one path at a time in path order,
/// before anything is written. A parent is looked up only where the path
/// before is neither it nor a sibling (whose parent was checked): about
/// once per folder.
#[derive(Default)]
struct Parents<'a> {
    before: Option<(&'a str, &'a Entry)>,
}

impl<'a> Parents<'a> {
    fn check(&mut self, desired: &'a Desired, path: &'a str, e: &'a Entry) -> Result<(), Error> {
        let before = self.before.replace((path, e));
        let Some((parent, _)) = path.rsplit_once('/') else {
            return Ok(());
        };
        let found = match before {
            Some((b, _)) if b.rsplit_once('/').is_some_and(|(p, _)| p == parent) => return Ok(()),
            Some((b, entry)) if b == parent => Some(entry),
            _ => desired.get(parent),
        };
        let what = match found.map(|p| (&p.kind, &p.unit)) {
            Some((Kind::Dir, _)) => return Ok(()),
            Some((Kind::File { .. }, u)) => Some(("file", u)),
            Some((Kind::Link { .. }, u)) => Some(("link", u)),
            None => None,
        };
        Err(match what {
            Some((what, parent_unit)) => Error::UnderNonFolder {
                path: path.to_string(),
                unit: e.unit.clone(),
                parent: parent.to_string(),
                parent_unit: parent_unit.clone(),
                what,
            },
            None => std::io::Error::other(format!(
                "{path} (unit {}): its folder {parent} is not in the manifest",
                e.unit
            ))
            .into(),
        })
    }
}

/// As [`diff`], from a snapshot of the output taken earlier.
pub fn diff_snapshot(target: &Target, snapshot: Snapshot) -> Result<Diff, Error> {
    let desired = &target.desired;
    let Snapshot {
        root,
        owned,
        state_dir,
        state,
        now,
        root_stat,
        ident,
    } = snapshot;
    // A folder that is not the tool's own is never diffed against: what
    // is in it would all look foreign (`plan` would offer to delete it).
    if let Some(r) = &root
        && !owned
        && !r.list("")?.is_empty()
    {
        return Err(Error::NotOwned {
            out: r.path().to_path_buf(),
            state: state_dir.clone(),
        });
    }
    let full = state.is_none();
    let prev = state.unwrap_or_default();
    if !full && target.has_deferred() {
        return Err(std::io::Error::other(
            "the output has a recorded state, but the plan left hashes to the copy; hash them first (Target::hash_deferred)",
        )
        .into());
    }

    // One pass over both sorted maps: no search per path.
    let mut pairs: Vec<(&str, &Entry, Option<Seen>)> = Vec::with_capacity(desired.len());
    let mut stale: Vec<(&str, &Recorded)> = Vec::new();
    let recorded = prev
        .entries
        .iter()
        .zip(&now)
        .map(|((p, r), s)| (p.as_str(), (r, *s)));
    let wanted = desired.iter().map(|(p, e)| (p.as_str(), e));
    // The manifest's parents are checked in this pass, before anything is
    // written.
    let mut parents = Parents::default();
    for (path, want, had) in zip_sorted(wanted, recorded) {
        match (want, had) {
            (Some(e), r) => {
                parents.check(desired, path, e)?;
                pairs.push((path, e, r));
            }
            (None, Some((r, _))) => stale.push((path, r)),
            (None, None) => {}
        }
    }
    // A recorded path is data, never an instruction. Those the run acts on
    // are the desired ones (checked above) and the stale ones, checked
    // here: one that is not a plain relative path makes the state corrupt,
    // and the output gets a clean reconcile.
    if stale
        .iter()
        .any(|(p, _)| assemble_manifest::path::check(p).is_err())
    {
        drop((pairs, stale));
        let snapshot = Snapshot {
            root,
            owned,
            state_dir,
            state: None,
            now: Vec::new(),
            root_stat,
            ident,
        };
        return diff_snapshot(target, snapshot);
    }
    let root = root.as_ref();
    let verdicts: Vec<(&str, &Entry, Verdict)> = pairs
        .into_par_iter()
        .map(|(path, e, r)| {
            let pending = !prev.pending.is_empty() && prev.pending.contains(path);
            (path, e, judge(root, path, e, r, pending, full))
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
                if e.kind.is_dir() {
                    scan.push(path.to_string());
                }
                d.refresh.push((path.to_string(), stat));
            }
            Verdict::Write(reason) => {
                // A folder new to the record may already hold things.
                if e.kind.is_dir() {
                    scan.push(path.to_string());
                }
                d.writes.push(Change {
                    path: path.to_string(),
                    reason,
                    unit: Some(e.unit.clone()),
                    source: e.source.as_deref().map(str::to_string),
                    raw_name: None,
                })
            }
        }
    }

    d.removes = removals(root, desired, &prev, full, stale, &scan, root_stat)?;

    d.units = unit_statuses(target, &prev, full, &d.writes, &d.removes);
    d.prev = prev;
    Ok(d)
}

/// Removals: what the previous run made and no unit makes now (`stale`),
/// what a killed run left, and what someone else put in our folders (the
/// folders in `scan`, the root when its stat changed; everything, without
/// a state); each path once, sorted.
fn removals(
    root: Option<&Root>,
    desired: &Desired,
    prev: &State,
    full: bool,
    stale: Vec<(&str, &Recorded)>,
    scan: &[String],
    root_stat: Option<Stat>,
) -> Result<Vec<Change>, Error> {
    let mut removes: BTreeMap<(String, Option<OsString>), Change> = BTreeMap::new();
    let mut remove =
        |path: &str, raw: Option<OsString>, reason: Reason, unit: Option<&UnitName>| {
            removes
                .entry((path.to_string(), raw.clone()))
                .or_insert_with(|| Change {
                    path: path.to_string(),
                    reason,
                    unit: unit.cloned(),
                    source: None,
                    raw_name: raw,
                });
        };
    if let Some(root) = root {
        if full {
            foreign(root, "", desired, prev, true, &mut |p, raw| {
                remove(p, raw, Reason::NoState, None)
            })?;
        } else {
            for (path, r) in stale {
                remove(path, None, Reason::Stale, Some(&r.unit));
            }
            for path in &prev.pending {
                if !desired.contains_key(path.as_str()) && !prev.entries.contains_key(path) {
                    remove(path, None, Reason::Interrupted, None);
                }
            }
            let root_changed = root_stat.is_some() && root_stat != prev.root;
            let whole = root_changed.then(String::new);
            for dir in scan.iter().chain(&whole) {
                foreign(root, dir, desired, prev, false, &mut |p, raw| {
                    remove(p, raw, Reason::Added, None)
                })?;
            }
        }
    }
    Ok(removes.into_values().collect())
}

/// Why each unit is dirty: its fingerprint changes, then its paths.
fn unit_statuses(
    target: &Target,
    prev: &State,
    full: bool,
    writes: &[Change],
    removes: &[Change],
) -> BTreeMap<UnitName, UnitStatus> {
    let mut units = BTreeMap::new();
    for (unit, fp) in &target.units {
        let mut status = UnitStatus::default();
        match prev.units.get(unit) {
            None if full => {}
            None => status
                .reasons
                .push(DirtyReason::NewUnit { unit: unit.clone() }),
            Some(old) => status.reasons.extend(fingerprint_changes(unit, old, fp)),
        }
        for c in writes.iter().chain(removes) {
            if c.unit.as_deref() == Some(unit.as_str()) {
                status.reasons.push(DirtyReason::Path(c.in_unit()));
            }
        }
        status.dirty = !status.reasons.is_empty();
        units.insert(unit.clone(), status);
    }
    units
}

/// The fingerprint components that differ between two runs of a unit.
fn fingerprint_changes(unit: &UnitName, old: &Fingerprint, new: &Fingerprint) -> Vec<DirtyReason> {
    let keys: BTreeSet<&Component> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let delta = match (old.get(k), new.get(k)) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(_), Some(_)) => Delta::Changed,
                (None, Some(_)) => Delta::Added,
                (Some(_), None) => Delta::Removed,
                (None, None) => return None,
            };
            Some(DirtyReason::Fingerprint {
                unit: unit.clone(),
                component: *k,
                delta,
            })
        })
        .collect()
}

/// Whether `path` must be written, and why.
fn judge(
    root: Option<&Root>,
    path: &str,
    e: &Entry,
    r: Option<Seen>,
    pending: bool,
    full: bool,
) -> Verdict {
    if pending {
        return Verdict::Write(Reason::Interrupted);
    }
    let Some((r, now)) = r else {
        return Verdict::Write(if full { Reason::NoState } else { Reason::New });
    };
    if !e.kind.matches(&r.kind) {
        return Verdict::Write(classify(&r.kind, r.source_sha, e));
    }
    let (Some(stat), Some(root)) = (now, root) else {
        return Verdict::Write(Reason::Missing);
    };
    if Some(stat) == r.stat {
        return Verdict::Keep;
    }
    let same = match &e.kind {
        Kind::Dir => stat.is_dir() && stat.mode & 0o7777 == 0o755,
        Kind::Link { target } => {
            stat.is_symlink() && root.read_link(path).is_ok_and(|t| t == target.as_str())
        }
        Kind::File {
            sha256, executable, ..
        } => {
            stat.is_file()
                && stat.mode & 0o7777 == if *executable { 0o755 } else { 0o644 }
                && root
                    .open_file(path)
                    .and_then(|mut f| hash_stream(&mut f, &[], |_| Ok(())))
                    .is_ok_and(|(h, _)| Some(h) == sha256.known())
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
        (Kind::File { sha256: a, .. }, Kind::File { sha256: b, .. }) if b.known() == Some(*a) => {
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
/// folders when `recursive`. A name that is not UTF-8 is always reported
/// (no recipe can produce it), with its real bytes. A `dir` that is not a
/// folder beneath the root (missing, a file, a link) holds nothing to list.
fn foreign(
    root: &Root,
    dir: &str,
    desired: &Desired,
    prev: &State,
    recursive: bool,
    report: &mut dyn FnMut(&str, Option<OsString>),
) -> Result<(), Error> {
    let entries = match root.list(dir) {
        Ok(e) => e,
        Err(e) if crate::root::gone(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for (name, t) in entries {
        let join = |n: &str| {
            if dir.is_empty() {
                n.to_string()
            } else {
                format!("{dir}/{n}")
            }
        };
        let Some(utf8) = name.to_str() else {
            report(&join(&name.to_string_lossy()), Some(name.clone()));
            continue;
        };
        let rel = join(utf8);
        match desired.get(rel.as_str()) {
            None if recursive || !prev.entries.contains_key(&rel) => report(&rel, None),
            None => {}
            Some(e) if recursive && e.kind.is_dir() && t == EntryType::Dir => {
                foreign(root, &rel, desired, prev, true, report)?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Two sequences sorted by path, walked in step: every path once, with
/// its value in either or both.
pub(crate) fn zip_sorted<'a, A, B>(
    a: impl Iterator<Item = (&'a str, A)>,
    b: impl Iterator<Item = (&'a str, B)>,
) -> impl Iterator<Item = (&'a str, Option<A>, Option<B>)> {
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
