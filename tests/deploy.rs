//! Getting a tree to where it runs, and checking it there: an output is
//! found by its path alone, from anywhere; a tree moved or copied anywhere
//! is verified against its NAR hash, with no state.

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

/// `verify --out DIR` finds the state of an output built with the default
/// folders from any working folder and without `--recipe`: the state's
/// default is the user's state home, not the recipe's workspace (before,
/// a recipe in no workspace kept it in `./target/assemble-state`, and
/// `verify` from anywhere else said the output was never assembled). An
/// output whose state is still in the old place is found there.
#[test]
fn verify_finds_an_output_by_its_path_alone() {
    let s = Scratch::new();
    let home = s.path("state-home");
    let recipe = s.recipe();
    let recipe = recipe.to_str().unwrap();
    // The recipe is in no cargo workspace: the default output is
    // ./target/authentik-django-demo.
    support::xtask_default_state(s.dir.path(), &["assemble", "--recipe", recipe], &home).ok();
    let out = s.path("target/authentik-django-demo");
    assert!(out.join("manage.py").is_file());
    assert!(!s.path("target/assemble-state").exists(), "the old place");

    let elsewhere = s.path("elsewhere");
    fs_err::create_dir_all(&elsewhere).unwrap();
    let verify = || {
        support::xtask_default_state(
            &elsewhere,
            &["verify", "--out", out.to_str().unwrap()],
            &home,
        )
    };
    let said = verify().ok();
    assert!(said.contains("Verified"), "{said}");
    assert!(said.contains("0 differences"), "{said}");
    fs_err::write(out.join("manage.py"), "print('changed')\n").unwrap();
    let err = verify().fails(1);
    assert!(err.contains("manage.py: content differs"), "{err}");

    // A state an earlier version kept in the recipe's target/ is still read.
    let old = s.path("target/old");
    support::xtask_default_state(
        s.dir.path(),
        &[
            "assemble",
            "--recipe",
            recipe,
            "--out",
            "target/old",
            "--state-dir",
            "target/assemble-state",
        ],
        &home,
    )
    .ok();
    let said = support::xtask_default_state(
        s.dir.path(),
        &["verify", "--recipe", recipe, "--out", old.to_str().unwrap()],
        &home,
    )
    .ok();
    assert!(said.contains("Verified"), "{said}");
}
