//! Adversarial archives: each is refused with a message naming the entry,
//! and nothing is written outside the folder being unpacked into.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;

use assemble_fetch::{Limits, unpack};

/// One raw tar entry; names are written into the header as given, so that
/// entries a well-behaved tar writer refuses to make can be made.
struct Raw<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
    }
}

fn dir(name: &str) -> Raw<'_> {
    Raw {
        name,
        kind: tar::EntryType::Directory,
        link: "",
        data: b"",
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, to: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind,
        link: to,
        data: b"",
    }
}

fn tar_gz(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for e in entries {
        let mut h = tar::Header::new_old();
        let old = h.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Unpacks `archive` into `<tmp>/area/dest` and returns the error text,
/// checking that nothing appeared outside `dest`.
fn refused(archive: &[u8], limits: Limits) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let area = tmp.path().join("area");
    fs_err::create_dir_all(&area).unwrap();
    let file = tmp.path().join("archive");
    fs_err::write(&file, archive).unwrap();
    let err = unpack(&file, &area.join("dest"), limits)
        .expect_err("must be refused")
        .to_string();
    let mut outside: Vec<String> = walkdir::WalkDir::new(tmp.path())
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(tmp.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| p != "area/dest" && !p.starts_with("area/dest/"))
        .collect();
    outside.sort();
    assert_eq!(
        outside,
        ["archive", "area"],
        "written outside the unpack folder"
    );
    err
}

fn check(entries: &[Raw], entry: &str, why: &str) {
    let err = refused(&tar_gz(entries), Limits::default());
    assert!(
        err.contains(&format!("entry {entry:?}")),
        "names the entry {entry}: {err}"
    );
    assert!(err.contains(why), "says why ({why}): {err}");
}

#[test]
fn dot_dot_is_refused() {
    check(
        &[dir("top/"), file("top/../evil", b"x")],
        "top/../evil",
        "`..`",
    );
}

#[test]
fn absolute_path_is_refused() {
    check(&[file("/tmp/evil", b"x")], "/tmp/evil", "absolute");
}

#[test]
fn symlink_out_of_the_tree_is_refused() {
    check(
        &[
            dir("top/"),
            link("top/l", tar::EntryType::Symlink, "../../etc"),
        ],
        "top/l",
        "outside the tree",
    );
    check(
        &[
            dir("top/"),
            link("top/l", tar::EntryType::Symlink, "/etc/passwd"),
        ],
        "top/l",
        "outside the tree",
    );
}

#[test]
fn writing_through_a_symlink_is_refused() {
    check(
        &[
            dir("top/"),
            dir("top/sub/"),
            link("top/l", tar::EntryType::Symlink, "sub"),
            file("top/l/x", b"x"),
        ],
        "top/l/x",
        "not a folder",
    );
}

#[test]
fn hardlink_out_of_the_tree_is_refused() {
    check(
        &[
            dir("top/"),
            link("top/h", tar::EntryType::Link, "/etc/passwd"),
        ],
        "top/h",
        "hard link",
    );
    check(
        &[
            dir("top/"),
            link("top/h", tar::EntryType::Link, "top/../../x"),
        ],
        "top/h",
        "hard link",
    );
}

#[test]
fn devices_and_fifos_are_refused() {
    check(
        &[dir("top/"), link("top/dev", tar::EntryType::Char, "")],
        "top/dev",
        "a device",
    );
    check(
        &[dir("top/"), link("top/blk", tar::EntryType::Block, "")],
        "top/blk",
        "a device",
    );
    check(
        &[dir("top/"), link("top/p", tar::EntryType::Fifo, "")],
        "top/p",
        "a fifo",
    );
}

#[test]
fn duplicate_entries_are_refused() {
    check(
        &[dir("top/"), file("top/a", b"1"), file("top/a", b"2")],
        "top/a",
        "appears twice",
    );
}

#[test]
fn more_than_one_top_level_entry_is_refused() {
    check(
        &[dir("top/"), file("top/a", b"1"), file("other/b", b"2")],
        "other/b",
        "more than one top-level entry",
    );
}

#[test]
fn decompression_bomb_stops_at_the_limit() {
    let zeros = vec![0u8; 3 << 20];
    let archive = tar_gz(&[dir("top/"), file("top/zeros", &zeros)]);
    assert!(
        archive.len() < 64 << 10,
        "the archive is small: {}",
        archive.len()
    );
    let err = refused(
        &archive,
        Limits {
            max_bytes: 1 << 20,
            max_entries: 100,
        },
    );
    assert!(err.contains("entry \"top/zeros\""), "{err}");
    assert!(err.contains("more than 1048576 bytes"), "{err}");
}

#[test]
fn zip_with_dot_dot_is_refused() {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        z.add_directory("top/", opts).unwrap();
        z.start_file("top/../../evil", opts).unwrap();
        std::io::Write::write_all(&mut z, b"x").unwrap();
        z.finish().unwrap();
    }
    let err = refused(buf.get_ref(), Limits::default());
    assert!(err.contains("entry \"top/../../evil\""), "{err}");
}

#[test]
fn a_good_archive_unpacks_with_its_top_folder_stripped() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar.gz");
    fs_err::write(
        &archive,
        tar_gz(&[
            dir("top/"),
            dir("top/empty/"),
            file("top/a.txt", b"hello"),
            link("top/l", tar::EntryType::Symlink, "a.txt"),
            link("top/h", tar::EntryType::Link, "top/a.txt"),
        ]),
    )
    .unwrap();
    let dest = tmp.path().join("dest");
    unpack(&archive, &dest, Limits::default()).unwrap();
    assert_eq!(fs_err::read_to_string(dest.join("a.txt")).unwrap(), "hello");
    assert_eq!(fs_err::read_to_string(dest.join("h")).unwrap(), "hello");
    assert_eq!(
        fs_err::read_link(dest.join("l")).unwrap(),
        Path::new("a.txt")
    );
    assert!(dest.join("empty").is_dir());
}
