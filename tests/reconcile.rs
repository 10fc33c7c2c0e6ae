//! The reconciler on its own: small desired trees, real files.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::time::Duration;

use assemble_manifest::{Desired, Digest, Entry, InputCache, OutPath, Target};
use assemble_reconcile::{Layout, Lock, Reason, Snapshot, apply, diff, diff_snapshot};

fn target(files: &[(&str, &str)]) -> Target {
    let u = assemble_manifest::UnitName::from("u");
    let mut d = Desired::new();
    for (p, c) in files {
        let mut parts: Vec<&str> = p.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            d.insert(op(&parts[..i].join("/")), Entry::dir(&u, "copy"));
        }
        d.insert(op(p), Entry::bytes(&u, "copy", c.as_bytes(), false));
    }
    Target {
        desired: d,
        ..Target::default()
    }
}

/// The layout of `out`, its state in a `state` folder beside it.
fn layout(out: &Path) -> Layout {
    Layout::new(out, &out.parent().unwrap().join("state"))
}

fn run(out: &Path, t: &Target) -> assemble_reconcile::Outcome {
    let layout = layout(out);
    let lock = Lock::acquire(&layout).unwrap();
    let d = diff(&layout, t).unwrap();
    apply(t, d, &lock, &Default::default(), &|_, _| {}).unwrap()
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
    fs_err::write(layout(&out).state.join("state.bin"), "ASMSTATE garbage").unwrap();
    let t = target(&[("x", "1")]);
    let d = diff(&layout(&out), &t).unwrap();
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
    let out = tmp.path().join("out");
    fs_err::create_dir_all(&out).unwrap();
    fs_err::write(out.join("precious"), "x").unwrap();
    let e = diff(&layout(&out), &target(&[("x", "1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("refusing to write into"), "{e}");
    assert_eq!(fs_err::read_to_string(out.join("precious")).unwrap(), "x");
    assert_eq!(fs_err::read_dir(&out).unwrap().count(), 1);
}

/// Guards ownership: a marker planted in a folder (the old `.assemble/`, or
/// anything else) proves nothing; the state lives outside the output.
#[test]
fn a_planted_marker_does_not_make_a_folder_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("home");
    fs_err::create_dir_all(out.join(".assemble")).unwrap();
    fs_err::create_dir_all(out.join(".ssh")).unwrap();
    fs_err::write(out.join(".ssh/id_rsa"), "key").unwrap();
    assert!(diff(&layout(&out), &target(&[("x", "1")])).is_err());
    // Nor does a diff taken while the folder was empty: the apply claims
    // the output under the lock, and refuses what is there by then.
    let l = layout(tmp.path().join("late").as_path());
    fs_err::create_dir_all(&l.out).unwrap();
    let t = target(&[("x", "1")]);
    let lock = Lock::acquire(&l).unwrap();
    let d = diff(&l, &t).unwrap();
    fs_err::write(l.out.join("arrived"), "mine").unwrap();
    let e = apply(&t, d, &lock, &Default::default(), &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("refusing to write into"), "{e}");
    assert_eq!(
        fs_err::read_to_string(l.out.join("arrived")).unwrap(),
        "mine"
    );
    assert_eq!(
        fs_err::read_to_string(out.join(".ssh/id_rsa")).unwrap(),
        "key"
    );
}

/// Guards the manifest's keys: a path that is not a plain relative path, or
/// that uses the tool's temporary names, cannot even be made into one, so
/// no manifest handed to the diff holds it.
#[test]
fn bad_paths_cannot_be_manifest_keys() {
    for bad in [
        "./y.py",
        "d//y.py",
        ".assemble-tmp-0123456789abcdef",
        "../x",
        "/etc",
    ] {
        let e = OutPath::new(bad).unwrap_err().to_string();
        assert!(e.contains("output path"), "{bad}: {e}");
    }
}

fn op(p: &str) -> OutPath {
    OutPath::new(p).unwrap()
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
    let l = layout(&out);
    let early = Snapshot::take(&l);
    assert!(early.is_current(&l));
    // Another run, between this run's snapshot and its lock.
    run(&out, &target(&[("a.txt", "1"), ("b.txt", "2")]));
    assert!(!early.is_current(&l));
    // Taken again, the snapshot knows b.txt: going back removes it as stale.
    let t = target(&[("a.txt", "1")]);
    let d = diff_snapshot(&t, Snapshot::take(&l)).unwrap();
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
    let out = tmp.path().join("state");
    fs_err::create_dir_all(&out).unwrap();
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
    let u = assemble_manifest::UnitName::from("u");
    let deferred = || {
        let e = Entry::copy(&u, "copy", src.clone(), Digest::AfterCopy, false);
        let mut d = Desired::new();
        d.insert(op("f"), e);
        Target {
            desired: d,
            ..Target::default()
        }
    };
    let out = tmp.path().join("out");
    let o = run(&out, &deferred());
    assert_eq!((o.files_written, o.hashed_on_copy), (1, 1));
    assert!(
        assemble_reconcile::verify(&layout(&out))
            .unwrap()
            .is_empty(),
        "recorded hash is the content's"
    );
    // Now there is a state: the diff refuses a hash left to the copy...
    let mut t = deferred();
    let e = diff(&layout(&out), &t).unwrap_err().to_string();
    assert!(e.contains("hash_deferred"), "{e}");
    // ...and once hashed, nothing is to be written.
    t.hash_deferred().unwrap();
    assert!(!t.has_deferred());
    let d = diff(&layout(&out), &t).unwrap();
    assert!(d.is_clean(), "{:?}", d.writes);
}

/// Guards item 2 of the confinement issue: a folder of the output replaced
/// by a link to someone's files is drift; the link goes, what it points to
/// stays, and the folder comes back.
#[test]
fn a_folder_swapped_for_a_link_loses_the_link_not_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let outside = tmp.path().join("checkout");
    fs_err::create_dir_all(outside.join(".git")).unwrap();
    fs_err::write(outside.join(".git/HEAD"), "ref").unwrap();
    fs_err::write(outside.join("b.txt"), "mine").unwrap();
    let t = target(&[("a/b.txt", "1"), ("a/c/d.txt", "2")]);
    run(&out, &t);
    fs_err::remove_dir_all(out.join("a")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("a")).unwrap();
    run(&out, &t);
    assert!(out.join("a").symlink_metadata().unwrap().is_dir());
    assert_eq!(fs_err::read_to_string(out.join("a/b.txt")).unwrap(), "1");
    assert_eq!(
        fs_err::read_to_string(outside.join("b.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        fs_err::read_to_string(outside.join(".git/HEAD")).unwrap(),
        "ref"
    );
    assert!(
        assemble_reconcile::verify(&layout(&out))
            .unwrap()
            .is_empty()
    );
}

/// Guards folder modes: recorded, verified and repaired like file modes.
#[test]
fn a_folder_mode_changed_outside_is_repaired() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let t = target(&[("a/b.txt", "1")]);
    run(&out, &t);
    fs_err::set_permissions(out.join("a"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let found = assemble_reconcile::verify(&layout(&out)).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "a");
    let o = run(&out, &t);
    assert_eq!(o.changes[0].reason, Reason::Modified, "{:?}", o.changes);
    let mode = fs_err::metadata(out.join("a"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755);
    assert!(
        assemble_reconcile::verify(&layout(&out))
            .unwrap()
            .is_empty()
    );
}

/// Guards non-UTF-8 names: one added to the output is removed as a stray
/// (it used to stay forever, and `verify` failed after every run).
#[test]
fn a_name_that_is_not_utf8_is_removed() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let t = target(&[("a/b.txt", "1")]);
    run(&out, &t);
    let odd = out
        .join("a")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff name"));
    fs_err::write(&odd, "x").unwrap();
    fs_err::create_dir(out.join(std::ffi::OsStr::from_bytes(b"\xfe"))).unwrap();
    let o = run(&out, &t);
    assert_eq!(o.files_removed, 2, "{:?}", o.changes);
    assert!(!odd.exists());
    assert!(
        assemble_reconcile::verify(&layout(&out))
            .unwrap()
            .is_empty()
    );
}

/// Guards item 8: a file in one unit and a file beneath it in another is
/// an error before anything is written, naming both units.
#[test]
fn a_file_beneath_a_file_or_a_link_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let a = assemble_manifest::UnitName::from("a");
    let b = assemble_manifest::UnitName::from("b");
    for parent in [
        Entry::bytes(&a, "copy", &b"x"[..], false),
        Entry::link(&a, "symlink", "/elsewhere"),
    ] {
        let mut t = Target::default();
        t.desired.insert(op("f"), parent);
        t.desired
            .insert(op("f/g.py"), Entry::bytes(&b, "copy", &b"y"[..], false));
        let e = diff(&layout(&out), &t).unwrap_err().to_string();
        assert!(e.contains("f/g.py (unit b)") && e.contains("unit a"), "{e}");
    }
    assert!(!out.exists(), "nothing written");
}

/// Guards item 7: a name of 255 bytes (the most a file system takes) can be
/// updated: its temporary name does not grow with it.
#[test]
fn a_name_of_255_bytes_can_be_updated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let name = format!("d/{}", "n".repeat(255));
    run(&out, &target(&[(&name, "1")]));
    let o = run(&out, &target(&[(&name, "2")]));
    assert_eq!(o.files_written, 1);
    assert_eq!(fs_err::read_to_string(out.join(&name)).unwrap(), "2");
}

/// Guards the state's place: the output holds exactly the recipe's tree.
#[test]
fn the_output_holds_only_the_recipes_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run(&out, &target(&[("a.txt", "1")]));
    let names: Vec<_> = fs_err::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
}

/// Guards the input cache's size: once most records are unused, the cache
/// is rewritten, not appended to.
#[test]
fn an_input_cache_that_lost_most_records_is_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs_err::create_dir_all(&dir).unwrap();
    let files: Vec<_> = (0..100)
        .map(|i| {
            let f = tmp.path().join(format!("in{i}"));
            fs_err::write(&f, format!("{i}")).unwrap();
            f
        })
        .collect();
    let load = || InputCache::load_with_racy_window(&dir, Duration::ZERO);
    let first = load();
    let all = files
        .iter()
        .map(|f| first.record(f, None).unwrap().0)
        .collect();
    first.with_records(all).store(&dir).unwrap();
    let big = fs_err::metadata(dir.join("inputs.bin")).unwrap().len();
    let second = load();
    let few = files[..5]
        .iter()
        .map(|f| second.record(f, None).unwrap().0)
        .collect();
    second.with_records(few).store(&dir).unwrap();
    assert!(
        !dir.join("inputs.log").exists(),
        "rewritten, not appended to"
    );
    let small = fs_err::metadata(dir.join("inputs.bin")).unwrap().len();
    assert!(small * 10 < big, "{big} -> {small} bytes");
    assert_eq!(load().len(), 5);
}

/// Guards item 4 of the confinement issue: a state naming `../victim` made
/// a run delete a folder outside the output. A recorded path that is not a
/// plain relative path makes the state corrupt: a clean reconcile.
#[test]
fn a_crafted_state_naming_outside_is_no_state() {
    use assemble_manifest::Kind;
    use assemble_reconcile::{Recorded, State};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let victim = tmp.path().join("victim");
    fs_err::create_dir_all(&victim).unwrap();
    fs_err::write(victim.join("precious"), "v").unwrap();
    let t = target(&[("a.txt", "1")]);
    run(&out, &t);
    let dir = layout(&out).state;
    // Absolute paths too, but only ones inside this test's folder: were the
    // state trusted, the run would delete what they name.
    let absolute = victim.to_str().unwrap().to_string();
    for bad in [
        "../victim",
        "../victim/precious",
        &absolute,
        "a/../../victim",
    ] {
        let mut s = State::load(&dir).unwrap();
        s.entries.merge([(
            (*bad).to_string(),
            Some(Recorded {
                kind: Kind::Dir,
                unit: assemble_manifest::UnitName::from("u"),
                source_sha: None,
                stat: None,
            }),
        )]);
        s.store(&dir).unwrap();
        let d = diff(&layout(&out), &t).unwrap();
        assert!(d.full, "{bad}: the state was trusted");
        run(&out, &t);
        assert_eq!(
            fs_err::read_to_string(victim.join("precious")).unwrap(),
            "v"
        );
    }
}
