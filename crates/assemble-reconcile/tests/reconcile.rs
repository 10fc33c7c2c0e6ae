//! The reconciler on its own: small desired trees, real files.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use assemble_reconcile::{
    Desired, Entry, InputCache, Lock, Reason, STATE_DIR, Snapshot, Target, apply, diff,
    diff_snapshot,
};

fn target(files: &[(&str, &str)]) -> Target {
    let u: Arc<str> = Arc::from("u");
    let mut d = Desired::new();
    for (p, c) in files {
        let mut parts: Vec<&str> = p.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            d.insert(parts[..i].join("/"), Entry::dir(&u, "copy"));
        }
        d.insert(p.to_string(), Entry::bytes(&u, "copy", c.as_bytes(), false));
    }
    Target {
        desired: d,
        ..Target::default()
    }
}

fn run(out: &Path, t: &Target) -> assemble_reconcile::Outcome {
    let lock = Lock::acquire(out).unwrap();
    let d = diff(out, t).unwrap();
    apply(out, t, d, &lock).unwrap()
}

#[test]
fn second_run_writes_nothing_and_stale_paths_go() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(
        run(&out, &target(&[("a/b.txt", "1"), ("c.txt", "2")])).files_written,
        2
    );
    let o = run(&out, &target(&[("a/b.txt", "1"), ("c.txt", "2")]));
    assert_eq!(
        (o.files_written, o.files_removed, o.state_written),
        (0, 0, false)
    );
    let o = run(&out, &target(&[("c.txt", "3")]));
    assert_eq!((o.files_written, o.files_removed), (1, 2));
    assert!(!out.join("a").exists());
}

#[test]
fn corrupt_state_means_a_clean_reconcile() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run(&out, &target(&[("x", "1")]));
    fs_err::write(out.join("extra"), "junk").unwrap();
    fs_err::write(out.join(STATE_DIR).join("state.bin"), "ASMSTATE garbage").unwrap();
    let t = target(&[("x", "1")]);
    let d = diff(&out, &t).unwrap();
    assert!(d.full);
    assert!(
        d.removes
            .iter()
            .any(|c| c.path == "extra" && c.reason == Reason::NoState)
    );
    run(&out, &t);
    assert!(!out.join("extra").exists());
}

#[test]
fn a_foreign_folder_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    fs_err::write(tmp.path().join("precious"), "x").unwrap();
    let e = Lock::acquire(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("refusing to write into"), "{e}");
    assert!(!tmp.path().join(STATE_DIR).exists());
}

#[test]
fn reserved_state_path_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = diff(tmp.path(), &target(&[(".assemble/x", "1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("reserved"), "{e}");
}

#[test]
fn a_file_changed_just_before_the_run_is_racy() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    fs_err::write(&f, "x").unwrap();
    let (r, read) = InputCache::load(tmp.path()).record(&f, None).unwrap();
    assert!(
        read && r.racy,
        "changed within the racy window: not to be trusted"
    );
    let zero = InputCache::load_with_racy_window(tmp.path(), Duration::ZERO);
    let (r, _) = zero.record(&f, None).unwrap();
    assert!(!r.racy);
    // A trusted record is reused without reading the file.
    let cache = zero.with_records(vec![r]);
    let (again, read) = cache.record(&f, None).unwrap();
    assert_eq!((again, read), (r, false));
}

/// Guards the snapshot taken before the lock: once another run has stored
/// a state, the snapshot no longer counts as current, and a diff from a
/// stale one would undo that run's work.
#[test]
fn a_snapshot_is_stale_once_another_run_stores_a_state() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run(&out, &target(&[("a.txt", "1")]));
    let early = Snapshot::take(&out);
    assert!(early.is_current(&out));
    // Another run, between this run's snapshot and its lock.
    run(&out, &target(&[("a.txt", "1"), ("b.txt", "2")]));
    assert!(!early.is_current(&out));
    // Taken again, the snapshot knows b.txt: going back removes it as stale.
    let t = target(&[("a.txt", "1")]);
    let d = diff_snapshot(&out, &t, Snapshot::take(&out)).unwrap();
    assert!(
        d.removes
            .iter()
            .any(|c| c.path == "b.txt" && c.reason == Reason::Stale),
        "{:?}",
        d.removes
    );
}

/// Guards the input cache's log: an edit is stored as a change to the
/// loaded cache, and the next load trusts the edited file's new record.
#[test]
fn input_cache_changes_survive_a_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs_err::create_dir_all(out.join(STATE_DIR)).unwrap();
    let files: Vec<_> = (0..20)
        .map(|i| {
            let f = tmp.path().join(format!("in{i}"));
            fs_err::write(&f, format!("{i}")).unwrap();
            f
        })
        .collect();
    let load = || InputCache::load_with_racy_window(&out, Duration::ZERO);
    let all =
        |c: &InputCache| -> Vec<_> { files.iter().map(|f| c.record(f, None).unwrap()).collect() };
    let first = load();
    let records = all(&first).into_iter().map(|(r, _)| r).collect();
    first.with_records(records).store(&out).unwrap();
    // One file edited; the next run uses all of them but the last.
    fs_err::write(&files[3], "edited").unwrap();
    let second = load();
    let looked = all(&second);
    let read: Vec<bool> = looked.iter().map(|(_, read)| *read).collect();
    assert_eq!(read.iter().filter(|r| **r).count(), 1, "{read:?}");
    let kept = looked[..19].iter().map(|(r, _)| *r).collect();
    let second = second.with_records(kept);
    assert!(second.changed());
    second.store(&out).unwrap();
    let third = load();
    assert!(all(&third)[..19].iter().all(|(_, read)| !read));
    let (_, read) = third.record(&files[19], None).unwrap();
    assert!(read, "dropped from the cache, so read again");
}

/// Guards the read-once clean build: a copy whose hash the plan left to
/// the apply is hashed on the way and recorded right; against a recorded
/// state such an entry is refused until `hash_deferred` computes it.
#[test]
fn deferred_hashes_are_computed_by_the_copy_or_before_a_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("input.txt");
    fs_err::write(&src, "content").unwrap();
    let u: Arc<str> = Arc::from("u");
    let deferred = || {
        let mut e = Entry::copy(
            &u,
            "copy",
            src.clone(),
            assemble_reconcile::Sha256([0; 32]),
            false,
        );
        e.deferred = true;
        let mut d = Desired::new();
        d.insert("f".into(), e);
        Target {
            desired: d,
            ..Target::default()
        }
    };
    let out = tmp.path().join("out");
    let o = run(&out, &deferred());
    assert_eq!((o.files_written, o.hashed_on_copy), (1, 1));
    assert!(
        assemble_reconcile::verify(&out).unwrap().is_empty(),
        "recorded hash is the content's"
    );
    // Now there is a state: the diff refuses a zero hash...
    let mut t = deferred();
    let e = diff(&out, &t).unwrap_err().to_string();
    assert!(e.contains("hash_deferred"), "{e}");
    // ...and once hashed, nothing is to be written.
    t.hash_deferred().unwrap();
    assert!(!t.has_deferred());
    let d = diff(&out, &t).unwrap();
    assert!(d.is_clean(), "{:?}", d.writes);
}
