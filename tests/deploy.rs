//! Getting a tree to where it runs, and checking it there: a tree moved
//! or copied anywhere is verified against its NAR hash, with no state.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use crate::support::{self, Scratch};

/// `verify --nar-hash H DIR` on a moved output: 0 on the right hash; on a
/// changed one, 1, each difference named from the manifest the state
/// recorded with H (the moved tree has no state of its own); a hash no
/// state remembers still fails, saying why nothing can be named.
#[test]
fn verify_nar_hash_checks_a_moved_tree_and_names_what_changed() {
    let s = Scratch::new();
    let out = s.path("out");
    let report = s
        .assemble(&["--out", out.to_str().unwrap(), "--nar-hash", "--json"])
        .json();
    let hash = report["nar_hash"].as_str().unwrap().to_string();
    let moved = s.path("elsewhere/authentik");
    fs_err::create_dir_all(moved.parent().unwrap()).unwrap();
    fs_err::rename(&out, &moved).unwrap();
    let verify = |hash: &str| s.run("verify", &["--nar-hash", hash, moved.to_str().unwrap()]);
    let said = verify(&hash).ok();
    assert!(said.contains("Verified"), "{said}");
    // Plain `verify` of the moved tree has no state to read.
    s.run("verify", &["--out", moved.to_str().unwrap()])
        .fails(1);

    let manage = moved.join("manage.py");
    fs_err::write(&manage, "print('changed')\n").unwrap();
    let err = verify(&hash).fails(1);
    assert!(err.contains("manage.py: content differs"), "{err}");
    assert!(err.contains(&format!("not {hash}")), "{err}");
    assert!(
        err.contains("1 difference from the manifest recorded with it"),
        "{err}"
    );

    // A hash no state remembers: the tree still fails, nothing named.
    let other = support::nix_hash_path(&s.path("demo/authentik"));
    let err = verify(&other).fails(1);
    assert!(err.contains("no state remembers that hash"), "{err}");
    // Not a hash: a usage error.
    verify("sha256-nothing").fails(2);
}
