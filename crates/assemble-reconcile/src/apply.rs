//! Carry out a [`Diff`]: the only code that writes to the output.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fs_err::os::unix::fs::OpenOptionsExt;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::diff::{Change, Diff, zip_sorted};
use crate::state::{Lock, Recorded, State};
use crate::{Content, Entry, Error, InputRecord, Kind, Sha256, Stat, Target, hash_stream};

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
    pub units: BTreeMap<String, UnitCounts>,
    /// Every path touched, with why.
    pub changes: Vec<Change>,
    /// Whether the state files were rewritten.
    pub state_written: bool,
    /// Input files hashed while they were copied (a clean build's).
    pub hashed_on_copy: usize,
}

/// Applies `diff` (computed by [`crate::diff`] for `target`) to `out`.
/// The caller holds `lock` on `out`.
pub fn apply(out: &Path, target: &Target, diff: Diff, _lock: &Lock) -> Result<Outcome, Error> {
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
        if target.inputs.changed() {
            target.inputs.store(out)?;
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
        State::write_journal(out, &journal)?;
        sweep_temp_files(out, &prev.pending)?;

        // 1. Stale and foreign paths, deepest first.
        for c in removes.iter().rev() {
            if remove_path(&out.join(&c.path))? {
                outcome.files_removed += 1;
                if let Some(u) = &c.unit {
                    outcome.units.entry(u.clone()).or_default().removed += 1;
                }
            }
        }

        // 2. Folders, parents first.
        let mut created: HashSet<&str> = HashSet::new();
        for c in writes.iter().filter(|c| desired[&c.path].kind == Kind::Dir) {
            let p = out.join(&c.path);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs_err::remove_file(&p)?;
                    fs_err::create_dir(&p)?;
                    outcome.dirs_created += 1;
                }
                Err(_) => {
                    fs_err::create_dir(&p)?;
                    created.insert(&c.path);
                    outcome.dirs_created += 1;
                }
            }
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
            if let Some(u) = &c.unit {
                outcome.units.entry(u.clone()).or_default().written += 1;
            }
        }

        // 3. Files and links, in parallel.
        let files: Vec<&Change> = writes
            .iter()
            .filter(|c| desired[&c.path].kind != Kind::Dir)
            .collect();
        let copied: Vec<Option<(&str, Sha256)>> = files
            .par_iter()
            .map(|c| {
                // In a folder this run created, nothing is there to replace:
                // the file is written in place (the journal covers a run
                // killed half-way), without a temporary name and a rename.
                let fresh = c
                    .path
                    .rsplit_once('/')
                    .is_some_and(|(dir, _)| created.contains(dir));
                let sha = write_entry(out, &c.path, &desired[&c.path], fresh)?;
                Ok(sha.and_then(|s| Some((key(&c.path)?, s))))
            })
            .collect::<Result<_, Error>>()?;
        hashed_on_copy.extend(copied.into_iter().flatten());
        for c in files {
            outcome.files_written += 1;
            if let Some(u) = &c.unit {
                outcome.units.entry(u.clone()).or_default().written += 1;
            }
        }
        fs_err::set_permissions(out, std::fs::Permissions::from_mode(0o755))?;

        // What was written, and the folders whose listing changed, are stat'ed
        // again for the record.
        let mut again: BTreeSet<&str> = BTreeSet::new();
        for c in writes.iter().chain(&removes) {
            again.extend(key(&c.path));
            let mut p = c.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                let Some(parent) = key(parent) else { break };
                again.insert(parent);
                p = parent;
            }
        }
        let fresh: Vec<(&str, Stat)> = again
            .par_iter()
            .filter_map(|p| Stat::lstat(&out.join(p)).map(|s| (*p, s)))
            .collect();
        stats.extend(fresh);
    }
    // Every change, moved (not copied) into the outcome.
    outcome.changes.extend(removes);
    outcome.changes.extend(writes);

    // 4. The state, last: what differs from the record (written, removed,
    // re-stat'ed, or with another provenance), and no pending path.
    let mut changes: Vec<(String, Option<Recorded>)> = Vec::new();
    for (p, e, r) in zip_sorted(desired.iter(), prev.entries.iter()) {
        match (e, r) {
            (Some(e), r) => {
                let stat = stats
                    .get(p.as_str())
                    .copied()
                    .or_else(|| r.and_then(|r| r.stat));
                let same = r.is_some_and(|r| {
                    r.stat == stat
                        && r.kind == e.kind
                        && r.unit == e.unit
                        && r.source_sha == e.source_sha
                });
                if !same {
                    let mut r = record(e, stat);
                    if let Some(sha) = hashed_on_copy.get(p.as_str()) {
                        if let Kind::File { sha256, .. } = &mut r.kind {
                            *sha256 = *sha;
                        }
                        r.source_sha = Some(*sha);
                    }
                    changes.push((p.clone(), Some(r)));
                }
            }
            (None, Some(_)) => changes.push((p.clone(), None)),
            (None, None) => {}
        }
    }
    // Pending paths are out of `entries` but may still be in the file.
    for p in &prev.pending {
        if !desired.contains_key(p) {
            changes.push((p.clone(), None));
        }
    }
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    changes.dedup_by(|a, b| a.0 == b.0);
    prev.commit(out, changes, &target.units, Stat::lstat(out))?;
    State::clear_journal(out)?;
    // Inputs hashed while copied join the input cache.
    let extra: Vec<InputRecord> = hashed_on_copy
        .iter()
        .filter_map(|(p, sha)| {
            let e = &desired[*p];
            let stat = e.input_stat?;
            Some(target.inputs.record_of(stat, *sha, false))
        })
        .collect();
    outcome.hashed_on_copy = hashed_on_copy.len();
    if extra.is_empty() {
        if target.inputs.changed() {
            target.inputs.store(out)?;
        }
    } else {
        let mut inputs = target.inputs.clone();
        inputs.add(extra);
        inputs.store(out)?;
    }
    outcome.state_written = true;
    outcome.changes.sort();
    Ok(outcome)
}

/// How many paths each unit produces, as the `entries` of its counts.
pub fn unit_counts(desired: &crate::Desired) -> BTreeMap<String, UnitCounts> {
    let mut n: FxHashMap<&str, usize> = FxHashMap::default();
    for e in desired.values() {
        *n.entry(&e.unit).or_default() += 1;
    }
    n.into_iter()
        .map(|(u, entries)| {
            (
                u.to_string(),
                UnitCounts {
                    entries,
                    ..UnitCounts::default()
                },
            )
        })
        .collect()
}

fn record(e: &Entry, stat: Option<Stat>) -> Recorded {
    Recorded {
        kind: e.kind.clone(),
        unit: e.unit.clone(),
        source_sha: e.source_sha,
        stat,
    }
}

/// Removes a file, link or folder (with what is in it); `Ok(false)` if it
/// was not there.
fn remove_path(p: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(false),
        Ok(m) if m.is_dir() => {
            fs_err::remove_dir_all(p)?;
            Ok(true)
        }
        Ok(_) => {
            fs_err::remove_file(p)?;
            Ok(true)
        }
    }
}

/// The temporary name a path is written under before it is renamed in place.
fn temp_name(name: &str) -> String {
    format!(".{name}.assemble-tmp")
}

/// Removes temporary files that an interrupted run left beside the paths it
/// was writing.
fn sweep_temp_files(out: &Path, pending: &BTreeSet<String>) -> Result<(), Error> {
    for path in pending {
        let p = out.join(path);
        if let (Some(dir), Some(name)) = (p.parent(), p.file_name()) {
            remove_path(&dir.join(temp_name(&name.to_string_lossy())))?;
        }
    }
    Ok(())
}

/// Writes one file or link: to a temporary name renamed over `path`, or,
/// when `fresh` (its folder was just created), straight to `path`. The
/// sha256 of a copy whose hash the plan deferred is computed on the way
/// and returned.
fn write_entry(out: &Path, path: &str, e: &Entry, fresh: bool) -> Result<Option<Sha256>, Error> {
    let target = out.join(path);
    let tmp = if fresh {
        target.clone()
    } else {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = target.with_file_name(temp_name(&name));
        remove_path(&tmp)?;
        tmp
    };
    let mut hashed = None;
    match (&e.kind, &e.content) {
        (Kind::Link { target: to }, _) => fs_err::os::unix::fs::symlink(to, &tmp)?,
        (Kind::File { executable, .. }, Some(content)) => {
            let mode = if *executable { 0o755 } else { 0o644 };
            let mut f = fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            match content {
                Content::Bytes(b) => io::Write::write_all(&mut f, b)?,
                Content::Copy(src) if e.deferred => {
                    // Read once: hashed on the way to the copy.
                    let mut s = fs_err::File::open(src)?;
                    let dst = f.file_mut();
                    let copied =
                        hash_stream(s.file_mut(), &[], |chunk| io::Write::write_all(dst, chunk));
                    let (sha, _) = copied.map_err(|err| {
                        io::Error::new(
                            err.kind(),
                            format!("copying {} to {}: {err}", src.display(), tmp.display()),
                        )
                    })?;
                    hashed = Some(sha);
                }
                Content::Copy(src) => {
                    // std's File-to-File copy: copy_file_range, in the kernel
                    // (a wrapper type would fall back to a userspace loop).
                    let mut s = fs_err::File::open(src)?;
                    io::copy(s.file_mut(), f.file_mut()).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("copying {} to {}: {e}", src.display(), tmp.display()),
                        )
                    })?;
                }
            }
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        (Kind::File { .. }, None) | (Kind::Dir, _) => {
            return Err(io::Error::other(format!("{path}: a file entry without content")).into());
        }
    }
    if fresh {
        return Ok(hashed);
    }
    if let Ok(m) = std::fs::symlink_metadata(&target)
        && m.is_dir()
    {
        fs_err::remove_dir_all(&target)?;
    }
    fs_err::rename(&tmp, &target)?;
    Ok(hashed)
}
