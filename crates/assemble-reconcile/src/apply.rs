//! Diff a desired manifest against the recorded state and apply the difference.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::state::{Lock, Recorded, STATE_DIR, STATE_VERSION, State};
use crate::{Content, Desired, Entry, Error, Kind, Reason};

/// What one unit's entries did in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitCounts {
    /// Paths the unit produces (files, links and folders).
    pub entries: usize,
    pub written: usize,
    pub removed: usize,
}

/// What a reconcile did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Files and links written.
    pub files_written: usize,
    /// Files, links and folders removed.
    pub files_removed: usize,
    pub dirs_created: usize,
    pub units: BTreeMap<String, UnitCounts>,
    /// Every path touched, with why.
    pub changes: Vec<(String, Reason)>,
}

/// Makes `out` equal `desired`. The caller holds `lock` on `out`.
pub fn reconcile(out: &Path, desired: &Desired, _lock: &Lock) -> Result<Outcome, Error> {
    if let Some(p) = desired
        .keys()
        .find(|p| p.as_str() == STATE_DIR || p.starts_with(&format!("{STATE_DIR}/")))
    {
        return Err(Error::Reserved {
            out: out.to_path_buf(),
            path: p.clone(),
        });
    }
    let prev = State::load(out);
    let full = prev.is_none();
    let prev = prev.unwrap_or_default();

    // What to write, and why.
    let mut write: Vec<(&String, &Entry, Reason)> = desired
        .par_iter()
        .filter_map(|(path, e)| {
            let reason = if prev.pending.contains(path) {
                Some(Reason::Interrupted)
            } else {
                match prev.entries.get(path) {
                    None if full => Some(Reason::NoState),
                    None => Some(Reason::New),
                    Some(r) => classify(&r.kind, &e.kind).or_else(|| {
                        // Recorded as is; still there?
                        match std::fs::symlink_metadata(out.join(path)) {
                            Ok(_) => None,
                            Err(_) => Some(Reason::Missing),
                        }
                    }),
                }
            };
            reason.map(|r| (path, e, r))
        })
        .collect();
    write.sort_by(|a, b| a.0.cmp(b.0));

    // What to remove.
    let mut remove: Vec<(String, Option<String>)> = Vec::new();
    if full {
        for item in walkdir::WalkDir::new(out)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| !(e.depth() == 1 && e.file_name() == STATE_DIR))
        {
            let item = item.map_err(|e| io::Error::other(e.to_string()))?;
            let rel = rel_path(out, item.path());
            if !desired.contains_key(&rel) {
                remove.push((rel, None));
            }
        }
    } else {
        for (path, r) in &prev.entries {
            if !desired.contains_key(path) {
                remove.push((path.clone(), Some(r.unit.clone())));
            }
        }
        for path in &prev.pending {
            if !desired.contains_key(path) && !prev.entries.contains_key(path) {
                remove.push((path.clone(), None));
            }
        }
    }
    remove.sort();
    remove.dedup();

    let mut outcome = Outcome::default();
    for e in desired.values() {
        outcome.units.entry(e.unit.to_string()).or_default().entries += 1;
    }
    if write.is_empty() && remove.is_empty() && prev.pending.is_empty() {
        return Ok(outcome);
    }

    // Before touching anything, record that these paths are in flux, so that
    // a run killed half-way is repaired by the next one.
    let mut journal = prev.clone();
    journal.version = STATE_VERSION;
    for (p, _, _) in &write {
        journal.entries.remove(*p);
        journal.pending.insert((*p).clone());
    }
    for (p, _) in &remove {
        journal.entries.remove(p);
        journal.pending.insert(p.clone());
    }
    journal.store(out)?;
    sweep_temp_files(out, &prev.pending)?;

    // 1. Stale paths, deepest first.
    for (path, unit) in remove.iter().rev() {
        if remove_path(&out.join(path))? {
            outcome.files_removed += 1;
            outcome.changes.push((path.clone(), Reason::Stale));
            if let Some(u) = unit {
                outcome.units.entry(u.clone()).or_default().removed += 1;
            }
        }
    }

    // 2. Folders, parents first.
    for (path, e, reason) in write.iter().filter(|w| w.1.kind == Kind::Dir) {
        let p = out.join(path);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs_err::remove_file(&p)?;
                fs_err::create_dir(&p)?;
                outcome.dirs_created += 1;
            }
            Err(_) => {
                fs_err::create_dir(&p)?;
                outcome.dirs_created += 1;
            }
        }
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        outcome.changes.push(((*path).clone(), *reason));
        outcome.units.entry(e.unit.to_string()).or_default().written += 1;
    }

    // 3. Files and links, in parallel.
    let files: Vec<_> = write.iter().filter(|w| w.1.kind != Kind::Dir).collect();
    files
        .par_iter()
        .try_for_each(|(path, e, _)| write_entry(out, path, e))?;
    for (path, e, reason) in files {
        outcome.files_written += 1;
        outcome.changes.push(((*path).clone(), *reason));
        outcome.units.entry(e.unit.to_string()).or_default().written += 1;
    }
    fs_err::set_permissions(out, std::fs::Permissions::from_mode(0o755))?;

    // 4. The state, last.
    let state = State {
        version: STATE_VERSION,
        entries: desired
            .iter()
            .map(|(p, e)| {
                (
                    p.clone(),
                    Recorded {
                        kind: e.kind.clone(),
                        unit: e.unit.to_string(),
                        step: e.step.to_string(),
                    },
                )
            })
            .collect(),
        pending: BTreeSet::new(),
    };
    state.store(out)?;
    outcome.changes.sort();
    Ok(outcome)
}

/// Why `old` must be replaced by `new`, or `None` when they are equal.
fn classify(old: &Kind, new: &Kind) -> Option<Reason> {
    match (old, new) {
        (a, b) if a == b => None,
        (
            Kind::File {
                sha256: a,
                executable: _,
            },
            Kind::File { sha256: b, .. },
        ) if a == b => Some(Reason::ModeChanged),
        (Kind::File { .. }, Kind::File { .. }) | (Kind::Link { .. }, Kind::Link { .. }) => {
            Some(Reason::ContentChanged)
        }
        _ => Some(Reason::KindChanged),
    }
}

fn rel_path(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Removes a file, link or empty folder; `Ok(false)` if it was not there or
/// is a folder that still holds something the tool did not record.
fn remove_path(p: &Path) -> Result<bool, Error> {
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(false),
        Ok(m) if m.is_dir() => match std::fs::remove_dir(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("failed to remove folder {}: {e}", p.display()),
            )
            .into()),
        },
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
            let tmp = dir.join(temp_name(&name.to_string_lossy()));
            if std::fs::symlink_metadata(&tmp).is_ok() {
                remove_path(&tmp)?;
            }
        }
    }
    Ok(())
}

fn write_entry(out: &Path, path: &str, e: &Entry) -> Result<(), Error> {
    let target = out.join(path);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(temp_name(&name));
    if std::fs::symlink_metadata(&tmp).is_ok() {
        fs_err::remove_file(&tmp)?;
    }
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
                Content::Copy(src) => {
                    let mut s = fs_err::File::open(src)?;
                    io::copy(&mut s, &mut f)?;
                }
            }
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        (Kind::File { .. }, None) | (Kind::Dir, _) => {
            return Err(io::Error::other(format!("{path}: a file entry without content")).into());
        }
    }
    if let Ok(m) = std::fs::symlink_metadata(&target)
        && m.is_dir()
    {
        fs_err::remove_dir_all(&target)?;
    }
    fs_err::rename(&tmp, &target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn unit() -> Arc<str> {
        Arc::from("u")
    }

    fn desired(files: &[(&str, &str)]) -> Desired {
        let u = unit();
        let mut d = Desired::new();
        for (p, c) in files {
            let mut parts: Vec<&str> = p.split('/').collect();
            parts.pop();
            for i in 1..=parts.len() {
                d.insert(parts[..i].join("/"), Entry::dir(&u, "copy"));
            }
            d.insert(p.to_string(), Entry::bytes(&u, "copy", c.as_bytes(), false));
        }
        d
    }

    fn run(out: &Path, d: &Desired) -> Outcome {
        let lock = Lock::acquire(out).expect("lock");
        reconcile(out, d, &lock).expect("reconcile")
    }

    #[test]
    fn second_run_writes_nothing_and_stale_is_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("out");
        let o = run(&out, &desired(&[("a/b.txt", "1"), ("c.txt", "2")]));
        assert_eq!(o.files_written, 2);
        let o = run(&out, &desired(&[("a/b.txt", "1"), ("c.txt", "2")]));
        assert_eq!((o.files_written, o.files_removed), (0, 0));
        let o = run(&out, &desired(&[("c.txt", "3")]));
        assert_eq!((o.files_written, o.files_removed), (1, 2));
        assert!(!out.join("a").exists());
        assert_eq!(
            fs_err::read_to_string(out.join("c.txt")).expect("read"),
            "3"
        );
    }

    #[test]
    fn missing_output_is_restored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("out");
        run(&out, &desired(&[("x", "1")]));
        fs_err::remove_file(out.join("x")).expect("rm");
        let o = run(&out, &desired(&[("x", "1")]));
        assert_eq!(o.changes, vec![("x".to_string(), Reason::Missing)]);
    }

    #[test]
    fn refuses_foreign_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs_err::write(tmp.path().join("precious"), "x").expect("write");
        let e = Lock::acquire(tmp.path()).expect_err("not ours");
        assert!(e.to_string().contains("refusing to write into"), "{e}");
        assert!(!tmp.path().join(STATE_DIR).exists());
    }

    #[test]
    fn corrupt_state_means_full_reconcile() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("out");
        run(&out, &desired(&[("x", "1")]));
        fs_err::write(out.join("extra"), "junk").expect("write");
        fs_err::write(out.join(STATE_DIR).join("state.json"), "{").expect("write");
        let o = run(&out, &desired(&[("x", "1")]));
        assert!(!out.join("extra").exists());
        assert_eq!(o.files_written, 1);
    }
}
