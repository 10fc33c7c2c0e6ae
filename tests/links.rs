//! `--link-mode`: hard links share inodes with the cache for unpatched
//! files only, and an edit through one is repaired in the tree and the
//! cache; reflinks on a loop-mounted XFS make the tree a copy makes.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{self, Scratch, sandbox::sandboxed};

const PREFIX: &str = "/opt/authentik";

/// The environment of a run with its own cache: uv's cache and locks in
/// the test's folder.
fn private_env(s: &Scratch, cache: &Path) -> Vec<(String, String)> {
    let (home, tmp) = (s.path("home"), s.path("tmp"));
    fs_err::create_dir_all(&home).unwrap();
    fs_err::create_dir_all(&tmp).unwrap();
    [
        ("ASSEMBLE_CACHE_DIR", cache),
        ("HOME", home.as_path()),
        ("TMPDIR", tmp.as_path()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
    .collect()
}

/// `assemble --json` of the scratch recipe into `out` with `mode`.
fn build(s: &Scratch, env: &[(String, String)], out: &Path, mode: &str) -> serde_json::Value {
    let recipe = s.recipe();
    let args = [
        "assemble",
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--prefix",
        PREFIX,
        "--link-mode",
        mode,
        "--json",
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    support::xtask_env(s.dir.path(), &args, &env).json()
}

/// Every regular file under `dir` by (device, inode).
fn inodes(dir: &Path) -> HashMap<(u64, u64), PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().unwrap();
            ((m.dev(), m.ino()), e.path().to_path_buf())
        })
        .collect()
}

/// The files the recipe patches, and the generated launchers (dumb-init is
/// a wheel's own file): always
/// written, never linked.
fn written_always(rel: &str) -> bool {
    rel.ends_with(".pyc")
        || (rel.starts_with("bin/") && rel != "bin/dumb-init")
        || [
            "authentik/root/settings.py",
            "authentik/lib/default.yml",
            "authentik/stages/email/utils.py",
            "lifecycle/ak",
        ]
        .iter()
        .any(|p| rel.ends_with(p))
}

/// `--link-mode hardlink`: the venv's and the fetched sources' unpatched
/// files are the cache's inodes; patched, generated and compiled files and
/// the user's own sources are not. A file edited through the output is
/// caught by the next run: the venv entry (whose inode it was) is found
/// corrupt and made again, the tree's file written anew, and both then
/// hold the original bytes; the tree equals a `copy` build.
#[test]
fn hardlinks_share_only_unpatched_cache_files_and_an_edit_through_one_is_repaired() {
    support::shared_uv();
    if !sandboxed(
        "links::hardlinks_share_only_unpatched_cache_files_and_an_edit_through_one_is_repaired",
    ) {
        return;
    }
    let s = Scratch::new();
    let outside = support::sandbox::snapshot(&[s.dir.path()]);
    let cache = support::cache_sharing_uv(s.dir.path(), "cache");
    let env = private_env(&s, &cache);
    let out = s.path("out");
    let r = build(&s, &env, &out, "hardlink");
    let linked = r["copies"]["linked"].as_u64().unwrap();
    assert!(linked > 300, "{}", r["copies"]);
    assert_eq!(r["copies"]["mode"], "hardlink");

    let in_cache = inodes(&cache);
    let mut shared = 0;
    let mut site_file = None;
    for (key, path) in inodes(&out) {
        let rel = path
            .strip_prefix(&out)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let ours = rel.contains("site-packages/authentik/")
            || rel.contains("site-packages/lifecycle/")
            || rel.starts_with("blueprints/")
            || rel == "manage.py";
        if in_cache.contains_key(&key) {
            shared += 1;
            assert!(
                !written_always(&rel) && !ours,
                "{rel} is a hard link to the cache's {}",
                in_cache[&key].display()
            );
            if rel.ends_with("site-packages/gunicorn/debug.py") {
                site_file = Some((rel, in_cache[&key].clone()));
            }
        } else {
            assert_eq!(
                fs_err::metadata(&path).unwrap().nlink(),
                1,
                "{rel} shares its inode outside the cache"
            );
        }
    }
    assert_eq!(shared as u64, linked);

    // An edit through the output reaches the cache's copy: the risk of
    // the mode. The next run repairs both.
    let (rel, cached) = site_file.expect("gunicorn/debug.py is linked");
    let original = fs_err::read_to_string(out.join(&rel)).unwrap();
    let edited = format!("{original}# edited through the output\n");
    std::io::Write::write_all(
        &mut fs_err::OpenOptions::new()
            .append(true)
            .open(out.join(&rel))
            .unwrap(),
        b"# edited through the output\n",
    )
    .unwrap();
    assert_eq!(fs_err::read_to_string(&cached).unwrap(), edited);
    let again = build(&s, &env, &out, "hardlink");
    let warnings = again["warnings"].to_string();
    assert!(
        warnings.contains("discarded, making it again"),
        "{warnings}"
    );
    assert_eq!(fs_err::read_to_string(out.join(&rel)).unwrap(), original);
    assert_eq!(fs_err::read_to_string(&cached).unwrap(), original);
    let (now, entry) = (
        fs_err::metadata(out.join(&rel)).unwrap(),
        fs_err::metadata(&cached).unwrap(),
    );
    assert_eq!((now.dev(), now.ino()), (entry.dev(), entry.ino()));

    let copied = s.path("out-copy");
    let r = build(&s, &env, &copied, "copy");
    assert_eq!(r["copies"]["linked"], 0);
    support::assert_same_tree(
        &support::listing(&out),
        &support::listing(&copied),
        "hardlink and copy",
    );
    assert_eq!(outside, support::sandbox::snapshot(&[s.dir.path()]));
}

/// `--link-mode clone` on an XFS image loop-mounted in the sandbox: the
/// cache's files are reflinked into the tree (their extents shared, as
/// `filefrag` reads them), and the tree equals a `copy` build's.
#[test]
fn clones_on_a_loop_mounted_xfs_make_the_tree_a_copy_makes() {
    support::shared_uv();
    if !sandboxed("links::clones_on_a_loop_mounted_xfs_make_the_tree_a_copy_makes") {
        return;
    }
    let s = Scratch::new();
    let xfs = Path::new("/box/xfs");
    let image = s.path("xfs.img");
    let outside = support::sandbox::snapshot(&[s.dir.path(), xfs]);
    mount_xfs(&image, xfs);
    let cache = support::cache_sharing_uv(xfs, "cache");
    let env = private_env(&s, &cache);

    let cloned = xfs.join("out-clone");
    let r = build(&s, &env, &cloned, "clone");
    let n = r["copies"]["cloned"].as_u64().unwrap();
    assert!(n > 300, "{}", r["copies"]);
    let site = format!("lib/python{}/site-packages", support::python_xy());
    let extents = support::stdout_ok(
        Command::new("filefrag")
            .arg("-v")
            .arg(cloned.join(&site).join("gunicorn/arbiter.py")),
    );
    assert!(extents.contains("shared"), "{extents}");

    let copied = xfs.join("out-copy");
    let r = build(&s, &env, &copied, "copy");
    assert_eq!(r["copies"]["cloned"], 0, "{}", r["copies"]);
    support::assert_same_tree(
        &support::listing(&cloned),
        &support::listing(&copied),
        "clone and copy",
    );
    let status = Command::new("umount").arg(xfs).status().unwrap();
    assert!(status.success());
    assert_eq!(outside, support::sandbox::snapshot(&[s.dir.path(), xfs]));
}

/// An XFS file system in `image` mounted at `at`; the sandbox's /dev has
/// no loop devices, so their nodes are made first. The loop device is
/// cleared when the mount goes (with the sandbox, at the latest).
fn mount_xfs(image: &Path, at: &Path) {
    let sh = |script: &str| {
        let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    support::sandbox::make_loop_devices();
    fs_err::File::create(image)
        .unwrap()
        .set_len(400 << 20)
        .unwrap();
    fs_err::create_dir_all(at).unwrap();
    sh(&format!(
        "mkfs.xfs -q {0} && mount -o loop {0} {1}",
        image.display(),
        at.display()
    ));
}
