//! Carry out a [`Diff`]: the only code that writes to the output.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::Error;
use crate::diff::{Change, Diff, zip_sorted};
use crate::link::LinkFrom;
use crate::mode::Writing;
use crate::root::{Root, create_at, remove_at, rename_at, stat_at, symlink_at};
use crate::state::{Lock, Recorded, State};
use assemble_manifest::path::temp_name;
use assemble_manifest::{
    Content, Desired, Entry, InputRecord, Kind, Sha256, Stat, Target, UnitName, hash_stream,
};

/// What one unit's entries did in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitCounts {
    /// Paths the unit produces (files, links and folders).
    pub entries: usize,
    pub written: usize,
    pub removed: usize,
}

/// What an apply did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Files and links written.
    pub files_written: usize,
    /// Files, links and folders removed.
    pub files_removed: usize,
    pub dirs_created: usize,
    pub units: BTreeMap<UnitName, UnitCounts>,
    /// Every path touched, with why.
    pub changes: Vec<Change>,
    /// Whether the state files were rewritten.
    pub state_written: bool,
    /// Input files hashed while they were copied (a clean build's).
    pub hashed_on_copy: usize,
    /// Copies made as reflinks (`--link-mode clone`).
    pub cloned: usize,
    /// Copies made as hard links to the cache (`--link-mode hardlink`).
    pub linked: usize,
    /// The tree's NAR hash, when one is remembered for exactly this tree
    /// (computed by an earlier `nar_hash`); nothing is read for it.
    #[serde(skip)]
    pub nar_hash: Option<assemble_nar::Hash>,
}

/// How an apply makes its copies.
#[derive(Default)]
pub struct How<'a> {
    /// A previous tree whose unchanged files are hard-linked (a deploy's).
    pub link_from: Option<&'a LinkFrom>,
    /// Every other copy.
    pub writing: Writing,
}

/// Applies `diff` (computed by [`crate::diff`] for `target`) to the output
/// that `lock` holds. Every change goes through the lock's handle on the
/// output root: beneath it, never through a link. `written(done, total)`
/// is told how many files and links are written so far (for a progress
/// bar), from any thread. With `how.link_from`, each file the previous
/// tree holds unchanged is hard-linked from it instead of copied
/// ([`LinkFrom`]); other copies are made as `how.writing` says.
pub fn apply(
    target: &Target,
    diff: Diff,
    lock: &Lock,
    how: &How<'_>,
    written: &(dyn Fn(usize, usize) + Sync),
) -> Result<Outcome, Error> {
    let root = &lock.claim()?;
    let state_dir = lock.layout.state.as_path();
    let desired = &target.desired;
    let mut outcome = Outcome {
        units: unit_counts(desired),
        ..Outcome::default()
    };
    let Diff {
        writes,
        removes,
        refresh,
        prev,
        ..
    } = diff;
    let touched = !writes.is_empty() || !removes.is_empty() || !prev.pending.is_empty();
    let record_changed = touched || !refresh.is_empty() || prev.units != target.units;
    if !record_changed {
        outcome.nar_hash = remembered_nar_hash(state_dir, desired, &FxHashMap::default());
        if target.inputs.changed() {
            target.inputs.store(state_dir)?;
            outcome.state_written = true;
        }
        return Ok(outcome);
    }

    // Keys borrowed from `desired`: a clean build has tens of thousands.
    let key = |p: &str| desired.get_key_value(p).map(|(k, _)| k.as_str());
    let mut stats: FxHashMap<&str, Stat> = refresh
        .iter()
        .filter_map(|(p, s)| Some((key(p)?, *s)))
        .collect();
    // Content hashes the plan left to the copy, by output path.
    let mut hashed_on_copy: FxHashMap<&str, Sha256> = FxHashMap::default();
    if touched {
        // Before touching anything, record that these paths are in flux, so
        // that a run killed half-way is repaired by the next one.
        let mut journal = prev.pending.clone();
        journal.extend(writes.iter().chain(&removes).map(|c| c.path.clone()));
        State::write_journal(state_dir, &journal)?;
        sweep_temp_files(root, &prev.pending)?;
        remove_stale(root, &removes, &mut outcome)?;
        let created = make_folders(root, desired, &writes, &mut outcome)?;
        hashed_on_copy = write_files(
            root,
            desired,
            (&writes, &created),
            how,
            written,
            &mut outcome,
        )?;
        outcome.cloned = how.writing.cloned.swap(0, Ordering::Relaxed);
        outcome.linked = how.writing.linked.swap(0, Ordering::Relaxed);
        root.chmod_dir("", 0o755)?;
        stats.extend(stat_again(root, desired, &writes, &removes));
    }
    // Every change, moved (not copied) into the outcome.
    outcome.changes.extend(removes);
    outcome.changes.extend(writes);

    // Step 4: the state, last: what differs from the record (written, removed,
    // re-stat'ed, or with another provenance), and no pending path.
    let changes = record_changes(desired, &prev, &stats, &hashed_on_copy)?;
    outcome.nar_hash = remembered_nar_hash(state_dir, desired, &hashed_on_copy);
    prev.commit(state_dir, changes, &target.units, root.stat_self().ok())?;
    State::clear_journal(state_dir)?;
    store_inputs(target, state_dir, &hashed_on_copy)?;
    outcome.hashed_on_copy = hashed_on_copy.len();
    outcome.state_written = true;
    outcome.changes.sort();
    Ok(outcome)
}

/// Step 1: stale and foreign paths, deepest first.
fn remove_stale(root: &Root, removes: &[Change], outcome: &mut Outcome) -> Result<(), Error> {
    for c in removes.iter().rev() {
        let removed = match &c.raw_name {
            Some(name) => {
                let dir = c.path.rsplit_once('/').map_or("", |(d, _)| d);
                root.remove_name(dir, name)?
            }
            None => root.remove_all(&c.path)?,
        };
        if removed {
            outcome.files_removed += 1;
            if let Some(u) = &c.unit {
                outcome.units.entry(u.clone()).or_default().removed += 1;
            }
        }
    }
    Ok(())
}

/// Step 2: folders, parents first. What stands where a folder belongs (a
/// file, or a link to anywhere) is removed, never followed. Returns the
/// folders this run created.
fn make_folders<'w>(
    root: &Root,
    desired: &Desired,
    writes: &'w [Change],
    outcome: &mut Outcome,
) -> Result<HashSet<&'w str>, Error> {
    let mut created: HashSet<&str> = HashSet::new();
    for c in writes
        .iter()
        .filter(|c| desired[c.path.as_str()].kind.is_dir())
    {
        match root.stat(&c.path) {
            Some(s) if s.is_dir() => {}
            found => {
                if found.is_some() {
                    root.remove_all(&c.path)?;
                }
                root.mkdir(&c.path, 0o755)?;
                created.insert(&c.path);
                outcome.dirs_created += 1;
            }
        }
        root.chmod_dir(&c.path, 0o755)?;
        if let Some(u) = &c.unit {
            outcome.units.entry(u.clone()).or_default().written += 1;
        }
    }
    Ok(created)
}

/// Step 3: files and links, in parallel, folder by folder: each folder is
/// opened once beneath the root (once per batch in a large one, so that
/// its files are still written on every core). In a folder this run
/// created, nothing is there to replace: files are written in place (the
/// journal covers a run killed half-way), without a temporary name and a
/// rename. Returns the hashes of the inputs hashed while copied.
fn write_files<'d>(
    root: &Root,
    desired: &'d Desired,
    (writes, created): (&[Change], &HashSet<&str>),
    how: &How<'_>,
    written: &(dyn Fn(usize, usize) + Sync),
    outcome: &mut Outcome,
) -> Result<FxHashMap<&'d str, Sha256>, Error> {
    let key = |p: &str| desired.get_key_value(p).map(|(k, _)| k.as_str());
    let mut by_folder: FxHashMap<&str, Vec<&Change>> = FxHashMap::default();
    for c in writes
        .iter()
        .filter(|c| !desired[c.path.as_str()].kind.is_dir())
    {
        let dir = c.path.rsplit_once('/').map_or("", |(d, _)| d);
        by_folder.entry(dir).or_default().push(c);
    }
    let batches: Vec<(&str, &[&Change])> = by_folder
        .iter()
        .flat_map(|(dir, files)| files.chunks(64).map(move |b| (*dir, b)))
        .collect();
    let total: usize = batches.iter().map(|(_, files)| files.len()).sum();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let copied: Vec<Vec<(&str, Sha256)>> = batches
        .par_iter()
        .map(|(dir, files)| {
            let folder = root.locate(dir)?;
            let fresh = created.contains(dir);
            let from = how.link_from.and_then(|l| Some((l, l.folder(dir)?)));
            let mut hashed = Vec::new();
            for c in files.iter() {
                let name = c.path.rsplit_once('/').map_or(c.path.as_str(), |(_, n)| n);
                let e = &desired[c.path.as_str()];
                let linked = from
                    .as_ref()
                    .and_then(|(l, f)| l.link(f, &folder, &c.path, name, e, fresh));
                let sha = linked
                    .unwrap_or_else(|| write_entry(&folder, name, e, fresh, &how.writing))
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("{}: {e}", root.display(&c.path).display()),
                        )
                    })?;
                if let (Some(sha), Some(k)) = (sha, key(&c.path)) {
                    hashed.push((k, sha));
                }
            }
            let so_far = done.fetch_add(files.len(), Ordering::Relaxed);
            written(so_far + files.len(), total);
            Ok(hashed)
        })
        .collect::<Result<_, Error>>()?;
    for c in by_folder.values().flatten() {
        outcome.files_written += 1;
        if let Some(u) = &c.unit {
            outcome.units.entry(u.clone()).or_default().written += 1;
        }
    }
    Ok(copied.into_iter().flatten().collect())
}

/// What was written, and the folders whose listing changed, stat'ed again
/// for the record.
fn stat_again<'d>(
    root: &Root,
    desired: &'d Desired,
    writes: &[Change],
    removes: &[Change],
) -> Vec<(&'d str, Stat)> {
    let key = |p: &str| desired.get_key_value(p).map(|(k, _)| k.as_str());
    let mut again: BTreeSet<&str> = BTreeSet::new();
    for c in writes.iter().chain(removes) {
        again.extend(key(&c.path));
        let mut p = c.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            let Some(parent) = key(parent) else { break };
            again.insert(parent);
            p = parent;
        }
    }
    let now = root.stat_all(again.iter().copied());
    again
        .into_iter()
        .zip(now)
        .filter_map(|(p, s)| Some((p, s?)))
        .collect()
}

/// The state's changes: each path whose record differs from what the run
/// leaves (written, removed, re-stat'ed, or with another provenance), and
/// every pending path the tree no longer has; sorted, each once.
fn record_changes(
    desired: &Desired,
    prev: &State,
    stats: &FxHashMap<&str, Stat>,
    hashed_on_copy: &FxHashMap<&str, Sha256>,
) -> Result<Vec<(String, Option<Recorded>)>, Error> {
    let mut changes: Vec<(String, Option<Recorded>)> = Vec::new();
    for (p, e, r) in zip_sorted(
        desired.iter().map(|(p, e)| (p.as_str(), e)),
        prev.entries.iter().map(|(p, r)| (p.as_str(), r)),
    ) {
        match (e, r) {
            (Some(e), r) => {
                let stat = stats.get(p).copied().or_else(|| r.and_then(|r| r.stat));
                let same = r.is_some_and(|r| {
                    r.stat == stat
                        && e.kind.matches(&r.kind)
                        && r.unit == e.unit
                        && r.source_sha == e.source_sha
                });
                if !same {
                    changes.push((
                        p.to_string(),
                        Some(record(p, e, stat, hashed_on_copy.get(p))?),
                    ));
                }
            }
            (None, Some(_)) => changes.push((p.to_string(), None)),
            (None, None) => {}
        }
    }
    // Pending paths are out of `entries` but may still be in the file.
    for p in &prev.pending {
        if !desired.contains_key(p.as_str()) {
            changes.push((p.clone(), None));
        }
    }
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    changes.dedup_by(|a, b| a.0 == b.0);
    Ok(changes)
}

/// The input stat cache, with the inputs hashed while copied, stored when
/// it changed.
fn store_inputs(
    target: &Target,
    state_dir: &std::path::Path,
    hashed_on_copy: &FxHashMap<&str, Sha256>,
) -> Result<(), Error> {
    let extra: Vec<InputRecord> = hashed_on_copy
        .iter()
        .filter_map(|(p, sha)| {
            let stat = target.desired[*p].input_stat?;
            Some(target.inputs.record_of(stat, *sha, false))
        })
        .collect();
    if extra.is_empty() {
        if target.inputs.changed() {
            target.inputs.store(state_dir)?;
        }
    } else {
        let mut inputs = target.inputs.clone();
        inputs.add(extra);
        inputs.store(state_dir)?;
    }
    Ok(())
}

/// A NAR hash remembered for exactly the tree `desired` describes (its
/// copies' hashes in `hashed_on_copy`): a digest of the manifest, computed
/// only when a hash is remembered at all; nothing of the tree is read.
fn remembered_nar_hash(
    state_dir: &std::path::Path,
    desired: &Desired,
    hashed_on_copy: &FxHashMap<&str, Sha256>,
) -> Option<assemble_nar::Hash> {
    let (digest, hash) = crate::export::remembered(state_dir)?;
    let kinds: Vec<(&str, Kind)> = desired
        .iter()
        .map(|(p, e)| {
            let kind = match (&e.kind, hashed_on_copy.get(p.as_str())) {
                (Kind::File { executable, .. }, Some(sha)) => Kind::file(*sha, *executable),
                (kind, _) => kind.known()?,
            };
            Some((p.as_str(), kind))
        })
        .collect::<Option<_>>()?;
    (crate::export::manifest_digest(kinds.into_iter()) == digest).then_some(hash)
}

/// What [`apply`] would report for `diff`, counted from the diff alone
/// (a dry run): every write and removal the diff lists, folders apart.
pub fn predict(target: &Target, diff: &Diff) -> Outcome {
    let mut outcome = Outcome {
        units: unit_counts(&target.desired),
        ..Outcome::default()
    };
    for c in &diff.writes {
        if target
            .desired
            .get(c.path.as_str())
            .is_some_and(|e| e.kind.is_dir())
        {
            outcome.dirs_created += 1;
        } else {
            outcome.files_written += 1;
        }
        if let Some(u) = &c.unit {
            outcome.units.entry(u.clone()).or_default().written += 1;
        }
    }
    for c in &diff.removes {
        outcome.files_removed += 1;
        if let Some(u) = &c.unit {
            outcome.units.entry(u.clone()).or_default().removed += 1;
        }
    }
    outcome.changes = diff.writes.iter().chain(&diff.removes).cloned().collect();
    outcome.changes.sort();
    outcome
}

/// How many paths each unit produces, as the `entries` of its counts.
pub fn unit_counts(desired: &Desired) -> BTreeMap<UnitName, UnitCounts> {
    let mut n: FxHashMap<&UnitName, usize> = FxHashMap::default();
    for e in desired.values() {
        *n.entry(&e.unit).or_default() += 1;
    }
    n.into_iter()
        .map(|(u, entries)| {
            (
                u.clone(),
                UnitCounts {
                    entries,
                    ..UnitCounts::default()
                },
            )
        })
        .collect()
}

/// The record of a desired entry as written; a copy whose hash was left to
/// it takes the hash the copy computed (and that is also its input's).
fn record(
    path: &str,
    e: &Entry,
    stat: Option<Stat>,
    hashed_on_copy: Option<&Sha256>,
) -> Result<Recorded, Error> {
    let (kind, source_sha) = match (&e.kind, hashed_on_copy) {
        (Kind::File { executable, .. }, Some(sha)) => (Kind::file(*sha, *executable), Some(*sha)),
        (kind, _) => match kind.known() {
            Some(k) => (k, e.source_sha),
            None => {
                return Err(io::Error::other(format!(
                    "{path}: its hash was left to a copy that did not happen"
                ))
                .into());
            }
        },
    };
    Ok(Recorded {
        kind,
        unit: e.unit.clone(),
        source_sha,
        stat,
    })
}

/// Removes temporary files that an interrupted run left beside the paths it
/// was writing.
fn sweep_temp_files(root: &Root, pending: &BTreeSet<String>) -> Result<(), Error> {
    for path in pending {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        root.remove_name(dir, OsStr::new(&temp_name(name.as_bytes())))?;
    }
    Ok(())
}

/// The input of a copy, checked to be the very file the plan found
/// (`assemble_manifest::open_input`); one the plan did not stat is stat'ed
/// now, and is still never read through a link.
pub(crate) fn open_copied(src: &std::path::Path, e: &Entry) -> io::Result<fs_err::File> {
    let stat = match e.input_stat {
        Some(s) => s,
        None => Stat::of(&fs_err::symlink_metadata(src)?),
    };
    assemble_manifest::open_input(src, &stat)
}

/// Writes one file or link `name` in `dir`: to a temporary name renamed over
/// it, or, when `fresh` (its folder was just created), straight to `name`.
/// Nothing is followed: a link at either name is replaced, a folder at
/// `name` removed. A copy is made as `writing` says (a reflink, a hard link
/// to the cache, or bytes). The sha256 of a copy whose hash the plan
/// deferred is computed on the way and returned.
fn write_entry(
    dir: &impl AsFd,
    name: &str,
    e: &Entry,
    fresh: bool,
    writing: &Writing,
) -> io::Result<Option<Sha256>> {
    let tmp_name = temp_name(name.as_bytes());
    let tmp = if fresh {
        OsStr::new(name)
    } else {
        remove_at(dir, OsStr::new(&tmp_name))?;
        OsStr::new(&tmp_name)
    };
    let mut hashed = None;
    match &e.kind {
        Kind::Link { target: to } => symlink_at(dir, OsStr::new(to), tmp)?,
        Kind::File {
            executable,
            content,
            ..
        } => {
            let mode = if *executable { 0o755 } else { 0o644 };
            if !writing.hardlink(e, dir, tmp, mode)? {
                hashed = write_file(dir, tmp, e, content, mode, writing)?;
            }
        }
        Kind::Dir => return Err(io::Error::other("a folder is not written as a file")),
    }
    if fresh {
        return Ok(hashed);
    }
    if stat_at(dir, name).is_some_and(|s| s.is_dir()) {
        remove_at(dir, OsStr::new(name))?;
    }
    rename_at(dir, tmp, OsStr::new(name))?;
    Ok(hashed)
}

/// Writes the file `tmp` in `dir` with `content`: bytes, or a copy (a
/// reflink when `writing` allows). A copy whose hash was deferred is hashed
/// on the way (its input read once) and its sha256 returned.
fn write_file(
    dir: &impl AsFd,
    tmp: &OsStr,
    e: &Entry,
    content: &Content,
    mode: u32,
    writing: &Writing,
) -> io::Result<Option<Sha256>> {
    let mut f = create_at(dir, tmp, mode)?;
    let mut hashed = None;
    match content {
        Content::Bytes(b) => io::Write::write_all(&mut f, b)?,
        Content::Copy(src) => {
            let mut s = open_copied(src, e)?;
            let failed = |err: io::Error| {
                io::Error::new(err.kind(), format!("copying {}: {err}", src.display()))
            };
            if writing.clone_file(s.file(), &f).map_err(failed)? {
                if e.after_copy() {
                    let (sha, _) = hash_stream(s.file_mut(), &[], |_| Ok(())).map_err(failed)?;
                    hashed = Some(sha);
                }
            } else if e.after_copy() {
                // Read once: hashed on the way to the copy.
                let copied = hash_stream(s.file_mut(), &[], |chunk| {
                    io::Write::write_all(&mut f, chunk)
                });
                hashed = Some(copied.map_err(failed)?.0);
            } else {
                // std's File-to-File copy: copy_file_range, in the kernel.
                io::copy(s.file_mut(), &mut f).map_err(failed)?;
            }
        }
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(hashed)
}
