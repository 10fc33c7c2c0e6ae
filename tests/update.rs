//! `cargo xtask update UNIT --tag T`: bumping authentik's pin in the root
//! recipe, against a loopback "GitHub" serving our authentik fixture at
//! three tags: the one pinned, one whose patches still apply, and one
//! where the line a patch replaces has changed.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;

use crate::fetch::tar_gz;
use crate::support::http::{Reply, Server};
use crate::support::{self, Scratch, nix_hash_path};

/// The fixture, changed by `edit`, as GitHub archives it at `tag`;
/// returns its NAR hash.
fn serve_at(s: &Scratch, server: &Server, tag: &str, edit: impl FnOnce(&Path)) -> String {
    let tree = s.path(&format!("authentik-at/{}", tag.replace('/', "-")));
    support::copy_dir(&s.path("demo/authentik"), &tree);
    edit(&tree);
    let path = format!("/goauthentik/authentik/archive/{tag}.tar.gz");
    server.route(&path, Reply::Ok(tar_gz("authentik-x", &tree)));
    nix_hash_path(&tree)
}

#[test]
fn update_moves_the_tag_only_when_every_patch_still_applies() {
    let s = Scratch::new();
    let server = Server::start();
    let old = serve_at(&s, &server, "version/2026.2.0", |_| {});
    let new = serve_at(&s, &server, "version/2026.2.6", |t| {
        fs_err::write(t.join("authentik/security_fix.py"), "FIXED = True\n").unwrap();
    });
    serve_at(&s, &server, "version/2026.3.0", |t| {
        support::edit(&t.join("authentik/root/settings.py"), |text| {
            text.replace(
                "BASE_DIR = Path(__file__).absolute().parent.parent.parent",
                "BASE_DIR = Path(__file__).resolve().parent.parent.parent",
            )
        });
    });
    let recipe = s.path("assemble.toml");
    let cache = s.private_cache();
    let xtask = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--recipe", recipe.to_str().unwrap(), "--python", "python3"]);
        support::xtask_env(
            s.dir.path(),
            &all,
            &[
                ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
                ("ASSEMBLE_GITHUB_URL", &server.base),
            ],
        )
    };
    xtask(&["lock"]).ok();
    let repo = s.dir.path();
    support::git(repo, &["init", "-q"]);
    support::git(repo, &["add", "assemble.toml", "assemble.lock"]);
    support::git(repo, &["commit", "-q", "-m", "pinned"]);
    let unchanged = || {
        support::git(
            repo,
            &[
                "status",
                "--porcelain",
                "--",
                "assemble.toml",
                "assemble.lock",
            ],
        )
    };

    // A tag where patch 1's line changed: exit 1, the patch and the
    // closest line named, the recipe and the lock as they were.
    let err = xtask(&["update", "authentik", "--tag", "version/2026.3.0"]).fails(1);
    assert!(
        err.contains("unit authentik: patch 1 did not match"),
        "{err}"
    );
    assert!(
        err.contains("BASE_DIR = Path(__file__).resolve().parent.parent.parent"),
        "the closest line: {err}"
    );
    assert_eq!(unchanged(), "", "nothing written");

    // A dry run of a tag whose patches apply: said, nothing written.
    let said = xtask(&[
        "update",
        "authentik",
        "--tag",
        "version/2026.2.6",
        "--dry-run",
    ])
    .ok();
    assert!(said.contains("Would update"), "{said}");
    assert_eq!(unchanged(), "", "nothing written");

    // Then for real: old -> new tag and hash; only the tag's line and the
    // lock's entry change.
    let said = xtask(&["update", "authentik", "--tag", "version/2026.2.6"]).ok();
    assert!(
        said.contains(&format!(
            "authentik: tag version/2026.2.0 -> tag version/2026.2.6 ({old} -> {new})"
        )),
        "{said}"
    );
    let diff = support::git(repo, &["diff", "-U0", "--no-color"]);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        [
            // assemble.lock
            "-source = \"github goauthentik/authentik at version/2026.2.0\"",
            &format!("-hash = \"{old}\""),
            "+source = \"github goauthentik/authentik at version/2026.2.6\"",
            &format!("+hash = \"{new}\""),
            // assemble.toml
            "-tag = \"version/2026.2.0\"",
            "+tag = \"version/2026.2.6\"",
        ],
        "{diff}"
    );
    // The lock now pins the new tag: a --locked plan accepts it.
    xtask(&["plan", "--locked"]).ok();
}
