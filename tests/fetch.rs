//! End-to-end tests of pinned remote sources: archives served over real HTTP
//! from 127.0.0.1 (GitHub is not reachable here; `ASSEMBLE_GITHUB_URL`
//! points the github kind at the test server), a git repository made with
//! the git CLI, and Nix's own `nix hash path` as the oracle for every hash.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::http::{Reply, Server};
use support::{Scratch, nix_hash_path, xtask_env};

pub(crate) const REV: &str = "ceb4fcc090851717a3069d78e85ceb1e86c2740c";
pub(crate) const PYPI_PIN: &str = "pypi = \"opencontainers==0.0.15\"\nsha256 = \"a3a40124cc68eda56c7b4c5ab924f18b55045b8458aca9611f5bfa83f7efaefe\"";

/// An oci-python-shaped tree, as GitHub would archive it at `REV`: returns
/// the `.tar.gz` and the tree's hash according to Nix.
pub(crate) fn fake_upstream(s: &Scratch) -> (Vec<u8>, String) {
    let top = format!("oci-python-{REV}");
    let tree = s.path("upstream").join(&top);
    let files: &[(&str, &[u8], u32)] = &[
        (
            "opencontainers/__init__.py",
            b"__version__ = '0.0.15'\n",
            0o644,
        ),
        ("opencontainers/digest/__init__.py", b"", 0o644),
        (
            "opencontainers/digest/digest.py",
            b"def digest():\n    return 1\n",
            0o644,
        ),
        ("scripts/release.sh", b"#!/bin/sh\necho release\n", 0o755),
        (
            "README.md",
            "# oci-python \u{2014} r\u{e9}sum\u{e9}\n".as_bytes(),
            0o644,
        ),
    ];
    for (p, c, mode) in files {
        let path = tree.join(p);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, c).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    fs_err::create_dir_all(tree.join("docs/empty")).unwrap();
    fs_err::os::unix::fs::symlink("README.md", tree.join("README")).unwrap();
    (tar_gz(&top, &tree), nix_hash_path(&tree))
}

/// `tree` as a `.tar.gz` with one top folder `top`, as GitHub archives a
/// revision (links kept as links).
pub(crate) fn tar_gz(top: &str, tree: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    b.follow_symlinks(false);
    b.append_dir_all(top, tree).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

/// The path GitHub serves the archive of `REV` at.
pub(crate) fn archive_path() -> String {
    format!("/vsoch/oci-python/archive/{REV}.tar.gz")
}

/// A loopback server with the fake upstream archive at its GitHub path,
/// and that archive's tree hash according to Nix.
fn serve_upstream(s: &Scratch) -> (Server, String) {
    let (archive, hash) = fake_upstream(s);
    let server = Server::start();
    server.route(&archive_path(), Reply::Ok(archive));
    (server, hash)
}

pub(crate) fn use_github(s: &Scratch, hash: &str) {
    s.edit_recipe(|t| {
        t.replace(
            PYPI_PIN,
            &format!("github = \"vsoch/oci-python\"\nrev = \"{REV}\"\nhash = \"{hash}\""),
        )
    });
}

fn assemble(
    s: &Scratch,
    out: &Path,
    cache: &Path,
    github: Option<&str>,
    extra: &[&str],
) -> support::Run {
    let mut env = vec![("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())];
    if let Some(g) = github {
        env.push(("ASSEMBLE_GITHUB_URL", g));
    }
    assemble_env(s, out, extra, &env)
}

/// `xtask assemble` of the scratch demo into `out`, with `extra` flags
/// and the environment `env`.
pub(crate) fn assemble_env(
    s: &Scratch,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> support::Run {
    let recipe = s.recipe();
    let mut args = vec![
        "assemble",
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask_env(s.dir.path(), &args, env)
}

pub(crate) fn site(out: &Path) -> PathBuf {
    out.join(format!("lib/python{}/site-packages", support::python_xy()))
}

fn cached_sources(cache: &Path) -> Vec<String> {
    match fs_err::read_dir(cache.join("sources")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // Entries, not their seals or the locks taken to make them.
            .filter(|n| !n.starts_with('.') && !n.ends_with(".seal") && !n.ends_with(".lock"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn github_kind_fetches_once_then_builds_from_cache_and_offline_fails_clearly() {
    let s = Scratch::new();
    let (server, hash) = serve_upstream(&s);
    use_github(&s, &hash);
    let cache = s.private_cache();

    let out = s.path("out1");
    let r = assemble(&s, &out, &cache, Some(&server.base), &["--json"]).json();
    assert_eq!(r["units"]["opencontainers"]["status"], "built");
    let digest = site(&out).join("opencontainers/digest/digest.py");
    assert_eq!(
        fs_err::read_to_string(digest).unwrap(),
        "def digest():\n    return 1\n"
    );
    assert_eq!(server.hits(), 1);
    let hex = assemble_nar::Hash::parse(&hash).unwrap().to_hex();
    assert_eq!(cached_sources(&cache), vec![format!("nar-sha256-{hex}")]);

    // The server is gone: a second build reads the cache, offline too.
    server.stop();
    let out2 = s.path("out2");
    assemble(&s, &out2, &cache, None, &["--offline", "--json"]).json();
    assert!(site(&out2).join("opencontainers/__init__.py").is_file());

    // An empty cache and --offline: a prompt, clear failure.
    let empty = s.path("empty-cache");
    fs_err::create_dir_all(&empty).unwrap();
    fs_err::os::unix::fs::symlink(support::shared_cache().join("venvs"), empty.join("venvs"))
        .unwrap();
    let err = assemble(&s, &s.path("out3"), &empty, None, &["--offline"]).fails(1);
    assert!(err.contains("unit opencontainers"), "{err}");
    assert!(
        err.contains(&format!(
            "https://github.com/vsoch/oci-python/archive/{REV}.tar.gz"
        )),
        "names the URL: {err}"
    );
    assert!(err.contains("--offline forbids fetching it"), "{err}");
    assert!(!s.path("out3").exists());
}

#[test]
fn hash_mismatch_names_unit_url_and_both_hashes_and_caches_nothing() {
    let s = Scratch::new();
    let (server, hash) = serve_upstream(&s);
    let path = archive_path();
    let wrong = "sha256-Q6SJed0K6eIrqQ9mNAD4RGx+YCJvnI5E+0KGp5fBtTU=";
    use_github(&s, wrong);
    let cache = s.private_cache();
    let err = assemble(&s, &s.path("out"), &cache, Some(&server.base), &[]).fails(1);
    assert!(err.contains("unit opencontainers: hash mismatch"), "{err}");
    assert!(err.contains(&server.url(&path)), "{err}");
    assert!(err.contains(&format!("expected: {wrong}")), "{err}");
    assert!(err.contains(&format!("got: {hash}")), "{err}");
    assert!(
        cached_sources(&cache).is_empty(),
        "{:?}",
        cached_sources(&cache)
    );
    assert!(!s.path("out").exists());
}

#[test]
fn http_errors_name_url_and_status_and_partial_downloads_do_not_count() {
    let s = Scratch::new();
    let (archive, hash) = fake_upstream(&s);
    let server = Server::start();
    use_github(&s, &hash);
    let cache = s.private_cache();
    let path = archive_path();

    let err = assemble(&s, &s.path("out"), &cache, Some(&server.base), &[]).fails(1);
    assert!(
        err.contains(&format!("GET {}: HTTP 404", server.url(&path))),
        "{err}"
    );

    let sent = archive.len() / 2;
    server.route(
        &path,
        Reply::Truncated {
            body: archive,
            sent,
        },
    );
    let err = assemble(&s, &s.path("out"), &cache, Some(&server.base), &[]).fails(1);
    assert!(err.contains(&format!("GET {}", server.url(&path))), "{err}");
    assert!(
        cached_sources(&cache).is_empty(),
        "{:?}",
        cached_sources(&cache)
    );
    // What is not an archive, or holds what may not be unpacked, is said
    // of the URL it came from (the temporary file it went to was named
    // before).
    for (body, says) in [
        (b"not a gzip".to_vec(), "not a .tar.gz"),
        (
            {
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, "lnk", "/etc/passwd").unwrap();
                b.into_inner().unwrap()
            },
            "refusing to unpack entry",
        ),
    ] {
        server.route(&path, Reply::Ok(body));
        let err = assemble(&s, &s.path("out"), &cache, Some(&server.base), &[]).fails(1);
        assert!(
            err.contains(&format!("{}: refusing to unpack", server.url(&path)))
                && err.contains(says)
                && !err.contains(".fetch-"),
            "{err}"
        );
    }
    let leftovers: Vec<_> = fs_err::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".fetch-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary fetch folders removed: {leftovers:?}"
    );
}

#[test]
fn url_kind_unpacks_archives_and_keeps_flat_files() {
    let s = Scratch::new();
    let (archive, hash) = fake_upstream(&s);
    let server = Server::start();
    server.route("/dl/oci.tar.gz", Reply::Ok(archive));
    server.route("/dl/notice.txt", Reply::Ok(b"flat file\n".to_vec()));
    let flat = s.path("notice.txt");
    fs_err::write(&flat, "flat file\n").unwrap();
    let flat_hash = support::nix_hash([std::ffi::OsStr::new("file"), flat.as_os_str()]);
    let archive_url = server.url("/dl/oci.tar.gz");
    let notice_url = server.url("/dl/notice.txt");
    s.edit_recipe(|t| {
        let t = t.replace(PYPI_PIN, &format!("url = \"{archive_url}\"\nhash = \"{hash}\""));
        format!(
            "{t}\n[units.notice]\nurl = \"{notice_url}\"\nunpack = false\nhash = \"{flat_hash}\"\ninstall = {{ \"notice.txt\" = \"share/notice.txt\" }}\n"
        )
    });
    let cache = s.private_cache();
    let out = s.path("out");
    assemble(&s, &out, &cache, None, &["--json"]).json();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());
    assert_eq!(
        fs_err::read_to_string(out.join("share/notice.txt")).unwrap(),
        "flat file\n"
    );
}

#[test]
fn git_kind_checks_out_a_commit_without_dot_git() {
    let s = Scratch::new();
    let repo = s.path("oci-git");
    let git = |args: &[&str]| support::git(&repo, args);
    fs_err::create_dir_all(repo.join("opencontainers")).unwrap();
    git(&["init", "-q"]);
    fs_err::write(repo.join("opencontainers/__init__.py"), "v = 1\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "one"]);
    let rev = git(&["rev-parse", "HEAD"]);
    // A later commit must not leak into the pinned checkout.
    fs_err::write(repo.join("opencontainers/__init__.py"), "v = 2\n").unwrap();
    git(&["commit", "-q", "-am", "two"]);

    let reference = s.path("reference");
    fs_err::create_dir_all(reference.join("opencontainers")).unwrap();
    fs_err::write(reference.join("opencontainers/__init__.py"), "v = 1\n").unwrap();
    let hash = nix_hash_path(&reference);
    let url = format!("file://{}", repo.display());
    s.edit_recipe(|t| {
        t.replace(
            PYPI_PIN,
            &format!("git = \"{url}\"\nrev = \"{rev}\"\nhash = \"{hash}\""),
        )
    });
    let cache = s.private_cache();
    let out = s.path("out");
    assemble(&s, &out, &cache, None, &["--json"]).json();
    assert_eq!(
        fs_err::read_to_string(site(&out).join("opencontainers/__init__.py")).unwrap(),
        "v = 1\n"
    );
}

#[test]
fn vendor_copies_verified_sources_and_builds_need_no_network() {
    let s = Scratch::new();
    let (server, hash) = serve_upstream(&s);
    use_github(&s, &hash);
    let cache = s.private_cache();
    let recipe = s.recipe();
    xtask_env(
        s.dir.path(),
        &["vendor", "--recipe", recipe.to_str().unwrap()],
        &[
            ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
            ("ASSEMBLE_GITHUB_URL", &server.base),
        ],
    )
    .ok();
    let vendored = s.path("demo/vendor/opencontainers");
    assert_eq!(nix_hash_path(&vendored), hash);
    server.stop();

    // No server, a cache without sources, --offline: vendor/ serves.
    let empty = s.path("empty-cache");
    fs_err::create_dir_all(&empty).unwrap();
    fs_err::os::unix::fs::symlink(support::shared_cache().join("venvs"), empty.join("venvs"))
        .unwrap();
    let out = s.path("out");
    assemble(&s, &out, &empty, None, &["--offline", "--json"]).json();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());

    // A vendored copy that no longer matches is ignored, and said so.
    fs_err::write(vendored.join("README.md"), "edited\n").unwrap();
    let run = assemble(&s, &s.path("out2"), &empty, None, &["--offline"]);
    let err = run.fails(1);
    assert!(
        err.contains("ignoring") || err.contains("--offline forbids"),
        "{err}"
    );
    let run = assemble(&s, &s.path("out3"), &cache, None, &["--offline"]);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert!(
        run.stderr().contains(&format!(
            "warning: unit opencontainers: ignoring {}",
            vendored.display()
        )),
        "{}",
        run.stderr()
    );
}

/// A dry run with a vendored sdist the cache lacks: unpacking it is for a
/// run that writes, so `plan` leaves the cache as it was and says what a
/// run would do with it.
#[test]
fn plan_says_a_vendored_sdist_would_be_unpacked_and_unpacks_nothing() {
    let s = Scratch::new();
    let recipe = s.recipe();
    xtask_env(
        s.dir.path(),
        &["vendor", "--recipe", recipe.to_str().unwrap()],
        &[],
    )
    .ok();
    let vendored = s.path("demo/vendor/opencontainers");
    assert!(vendored.is_dir());
    let empty = s.path("empty-cache");
    fs_err::create_dir_all(&empty).unwrap();
    let before = support::listing(s.dir.path());
    let said = xtask_env(
        s.dir.path(),
        &[
            "plan",
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            s.path("out").to_str().unwrap(),
        ],
        &[("ASSEMBLE_CACHE_DIR", empty.to_str().unwrap())],
    )
    .ok();
    support::assert_same_tree(&before, &support::listing(s.dir.path()), "plan");
    assert!(
        said.contains(&format!("would be unpacked from {}", vendored.display())),
        "{said}"
    );
    assert!(!said.contains("ignoring"), "{said}");
}

#[test]
fn prefetch_prints_the_pin_and_checks_it() {
    let s = Scratch::new();
    let (server, hash) = serve_upstream(&s);
    let cache = s.private_cache();
    let env = [
        ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
        ("ASSEMBLE_GITHUB_URL", server.base.as_str()),
    ];
    let what = format!("github:vsoch/oci-python@{REV}");
    let r = xtask_env(s.dir.path(), &["prefetch", &what], &env);
    assert!(r.output.status.success(), "{}", r.stderr());
    assert_eq!(r.stdout().trim(), hash);

    let r = xtask_env(
        s.dir.path(),
        &["prefetch", &what, "--hash", &hash, "--format", "nix32"],
        &env,
    );
    assert!(r.output.status.success(), "{}", r.stderr());
    assert_eq!(
        assemble_nar::Hash::parse(r.stdout().trim()).unwrap(),
        assemble_nar::Hash::parse(&hash).unwrap()
    );

    let wrong = "sha256-Q6SJed0K6eIrqQ9mNAD4RGx+YCJvnI5E+0KGp5fBtTU=";
    let err = xtask_env(s.dir.path(), &["prefetch", &what, "--hash", wrong], &env).fails(1);
    assert!(
        err.contains(&format!("expected: {wrong}")) && err.contains(&format!("got: {hash}")),
        "{err}"
    );
}

#[test]
fn hash_command_prints_what_nix_prints() {
    let s = Scratch::new();
    let tree = s.path("demo/authentik");
    let run = |args: &[&str]| {
        let r = xtask_env(s.dir.path(), args, &[]);
        assert!(r.output.status.success(), "{}", r.stderr());
        r.stdout().trim().to_string()
    };
    let nix = |args: &[&str]| support::nix_hash(args);
    let t = tree.to_str().unwrap();
    assert_eq!(run(&["hash", t]), nix(&["path", t]));
    assert_eq!(
        run(&["hash", t, "--format", "nix32"]),
        nix(&["path", "--base32", t])
    );
    assert_eq!(
        run(&["hash", t, "--format", "hex"]),
        nix(&["path", "--base16", t])
    );
    let f = s.path("demo/authentik/uv.lock");
    let f = f.to_str().unwrap();
    assert_eq!(run(&["hash", "--flat", f]), nix(&["file", f]));
}

/// The real opencontainers 0.0.15 sdist from the package index, unpacked by
/// us, hashes as Nix hashes the same sdist unpacked by GNU tar.
#[test]
fn real_upstream_sdist_unpacks_and_hashes_like_nix() {
    let s = Scratch::new();
    // The demo's pypi unit puts the sdist and its unpacked tree in the cache.
    s.assemble(&["--out", s.path("out").to_str().unwrap(), "--json"])
        .json();
    let sha = "a3a40124cc68eda56c7b4c5ab924f18b55045b8458aca9611f5bfa83f7efaefe";
    let ours = support::shared_cache().join(format!("sources/sdist-sha256-{sha}"));
    let files = support::shared_cache().join(format!("files/sha256-{sha}"));
    let sdist = fs_err::read_dir(&files)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    let theirs = s.path("gnu-tar");
    fs_err::create_dir_all(&theirs).unwrap();
    let ok = Command::new("tar")
        .args(["xzf"])
        .arg(&sdist)
        .arg("-C")
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(ok.success());
    let top = fs_err::read_dir(&theirs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let r = xtask_env(s.dir.path(), &["hash", ours.to_str().unwrap()], &[]);
    assert!(r.output.status.success(), "{}", r.stderr());
    assert_eq!(r.stdout().trim(), nix_hash_path(&top));
}

/// The lock file: a github source at a tag, without `hash` in the recipe.
/// `cargo xtask lock` records its NAR hash (Nix's, checked here with
/// `nix hash path`); `--locked` builds from it and refuses a missing or
/// stale entry naming the unit; the cache serves the second build with the
/// server gone; other bytes at the same tag fail the check.
#[test]
fn the_lock_file_pins_a_tag_and_every_fetch_is_checked_against_it() {
    let s = Scratch::new();
    let (archive, hash) = fake_upstream(&s);
    let server = Server::start();
    let at_tag = "/vsoch/oci-python/archive/v0.0.15.tar.gz";
    server.route(at_tag, Reply::Ok(archive));
    s.edit_recipe(|t| t.replace(PYPI_PIN, "github = \"vsoch/oci-python\"\ntag = \"v0.0.15\""));
    let cache = s.private_cache();
    let recipe = s.recipe();
    let lock_file = s.path("demo/assemble.lock");
    let env = [
        ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
        ("ASSEMBLE_GITHUB_URL", server.base.as_str()),
    ];
    // The first assemble records the missing entry, as cargo does
    // (fetching it: on a terminal, with a bar of its bytes)...
    let args = ["assemble", "--recipe", recipe.to_str().unwrap(), "--out"]
        .map(String::from)
        .into_iter()
        .chain([s.path("out0").to_string_lossy().into_owned()])
        .collect::<Vec<_>>();
    let tty = crate::cli::on_a_terminal(s.dir.path(), &args, &env);
    assert!(tty.contains("Downloading"), "the download's bar:\n{tty}");
    let text = fs_err::read_to_string(&lock_file).unwrap();
    // ...which `lock` keeps, and `lock --update` fetches again.
    let lock = |extra: &[&str]| {
        let mut args = vec!["lock", "--recipe", recipe.to_str().unwrap()];
        args.extend_from_slice(extra);
        xtask_env(s.dir.path(), &args, &env).ok()
    };
    let err = lock(&[]);
    assert!(err.contains("Locked opencontainers"), "{err}");
    // Fetched again, the same hash: said as locked, not as updated.
    let err = lock(&["--update", "opencontainers"]);
    assert!(
        err.contains("Locked opencontainers") && !err.contains("Updated"),
        "{err}"
    );
    assert_eq!(fs_err::read_to_string(&lock_file).unwrap(), text);
    assert!(
        text.contains("source = \"github vsoch/oci-python at v0.0.15\""),
        "{text}"
    );
    assert!(text.contains(&format!("hash = \"{hash}\"")), "{text}");

    let out = s.path("out");
    assemble(&s, &out, &cache, Some(&server.base), &["--locked"]).ok();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());
    let hits = server.hits();
    server.stop();
    // The server is gone: the cache has the source, under its hash.
    assemble(
        &s,
        &s.path("out2"),
        &cache,
        Some("http://127.0.0.1:9"),
        &["--locked"],
    )
    .ok();
    assert_eq!(
        fs_err::read_to_string(&lock_file).unwrap(),
        text,
        "unchanged"
    );

    // Other bytes at the same tag, into an empty cache: the locked hash
    // is checked, and both hashes and the URL are named.
    let other = Server::start();
    let top = s.path("tampered/oci-python-x");
    fs_err::create_dir_all(top.join("opencontainers")).unwrap();
    fs_err::write(top.join("opencontainers/__init__.py"), "evil = 1\n").unwrap();
    let tampered = tar_gz("oci-python-x", &top);
    other.route(at_tag, Reply::Ok(tampered));
    let fresh = s.path("fresh-cache");
    fs_err::create_dir_all(&fresh).unwrap();
    let err = assemble(
        &s,
        &s.path("out3"),
        &fresh,
        Some(&other.base),
        &["--locked"],
    )
    .fails(1);
    assert!(err.contains("unit opencontainers: hash mismatch"), "{err}");
    assert!(err.contains(&other.url(at_tag)), "{err}");
    assert!(err.contains(&format!("expected: {hash}")), "{err}");
    assert!(!s.path("out3").exists());

    // --locked and no entry, or an entry for another tag: refused, naming
    // the unit, before anything is fetched.
    fs_err::remove_file(&lock_file).unwrap();
    let err = assemble(
        &s,
        &s.path("out4"),
        &cache,
        Some(&other.base),
        &["--locked"],
    )
    .fails(1);
    assert!(err.contains("unit opencontainers:"), "{err}");
    assert!(err.contains("has no entry for it"), "{err}");
    fs_err::write(&lock_file, &text).unwrap();
    s.edit_recipe(|t| t.replace("tag = \"v0.0.15\"", "tag = \"v0.0.16\""));
    let err = assemble(
        &s,
        &s.path("out4"),
        &cache,
        Some(&other.base),
        &["--locked"],
    )
    .fails(1);
    assert!(err.contains("unit opencontainers:"), "{err}");
    assert!(err.contains("is stale"), "{err}");
    assert!(!s.path("out4").exists());
    assert_eq!(
        other.hits(),
        1,
        "only the tampered fetch reached the server"
    );
    assert!(hits >= 1);
}

/// What the lock-features fixture asks of the venv, in the tree `site`
/// built from `project` with `cache`: pycurl built here from its sdist
/// (not the lock's manylinux wheel), the sdist-only docopt, the extras;
/// the venv file for file what `uv sync --locked` with the same
/// exclusions makes; and the lock current for its git source (served from
/// a local repository made here, the commit the lock pins).
fn lock_features(s: &Scratch, project: &Path, site: &Path, cache: &Path) {
    let wheel = fs_err::read_to_string(site.join("pycurl-7.49.0.dist-info/WHEEL")).unwrap();
    assert!(
        wheel.contains("-linux_x86_64") && !wheel.contains("manylinux"),
        "pycurl built here: {wheel}"
    );
    assert!(site.join("docopt.py").is_file());
    assert!(site.join("psycopg_pool/__init__.py").is_file());
    // What uv itself makes of the same lock, with the same exclusions.
    let uv = support::shared_uv();
    let reference = s.path("uv-sync-reference");
    let python = support::real_python();
    let mut sync = Command::new(&uv);
    sync.args([
        "sync",
        "--locked",
        "--no-dev",
        "--no-install-project",
        "--no-install-workspace",
        "--no-install-package",
        "opencontainers",
        "--python",
    ])
    .arg(&python)
    .arg("--project")
    .arg(project)
    .env("UV_PROJECT_ENVIRONMENT", &reference)
    .env("UV_LINK_MODE", "copy")
    .env("UV_PYTHON_DOWNLOADS", "never");
    support::stdout_ok(&mut sync);
    let venvs: Vec<PathBuf> = fs_err::read_dir(cache.join("venvs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert_eq!(venvs.len(), 1, "{venvs:?}");
    // Each venv's scripts start with its own path, and RECORD lists their
    // hashes: RECORD is compared without those lines.
    let record = |venv: &Path, line: &str| -> String {
        let rel = line.split(" file ").next().unwrap_or(line);
        let text = fs_err::read_to_string(venv.join("lib").join(rel)).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("../../../bin/"))
            .collect();
        format!("{rel}: {}", kept.join("|"))
    };
    let listing = |venv: &Path| -> Vec<String> {
        support::listing(&venv.join("lib"))
            .into_iter()
            .map(|l| {
                if l.contains(".dist-info/RECORD file ") {
                    record(venv, &l)
                } else {
                    l
                }
            })
            .collect()
    };
    let ours = listing(&venvs[0]);
    let uvs = listing(&reference);
    let only_ours: Vec<&String> = ours.iter().filter(|l| !uvs.contains(l)).collect();
    let only_uvs: Vec<&String> = uvs.iter().filter(|l| !ours.contains(l)).collect();
    assert!(
        only_ours.is_empty() && only_uvs.is_empty(),
        "the venv is what `uv sync --locked` makes\nonly ours: {only_ours:#?}\nonly uv's: {only_uvs:#?}"
    );
    // The git source: the lock is current for the commit it pins.
    let repo = s.path("opencontainers-git");
    support::copy_dir(&features_dir().join("opencontainers-git"), &repo);
    support::git(&repo, &["init", "-q", "-b", "main"]);
    support::git(&repo, &["add", "-A"]);
    support::git(
        &repo,
        &[
            "commit",
            "-q",
            "-m",
            "opencontainers, as the lock-features fixture serves it",
        ],
    );
    assert_eq!(
        support::git(&repo, &["rev-parse", "HEAD"]),
        "218535ed83e14e562460994876fd56e510b7c7b7"
    );
    let git_config = s.path("gitconfig");
    fs_err::write(
        &git_config,
        format!(
            "[url \"file://{}\"]\n\tinsteadOf = https://git.example.invalid/opencontainers\n",
            repo.display()
        ),
    )
    .unwrap();
    let mut check = Command::new(&uv);
    check
        .args(["lock", "--check", "--no-config", "--project"])
        .arg(project)
        .env("GIT_CONFIG_GLOBAL", &git_config);
    support::stdout_ok(&mut check);
}

fn features_dir() -> PathBuf {
    support::root().join("tests/fixtures/lock-features")
}

/// A packager's recipe, `packager/assemble.toml`, extending the root one
/// with one pin replaced: opencontainers' (a git rev on GitHub, whose
/// bytes cannot be served here) by the same package's sdist; and
/// `server` serving `fixture` as authentik at the tag the root pins.
fn packager_recipe(s: &Scratch, server: &Server, fixture: &Path) -> PathBuf {
    server.route(
        &format!("/goauthentik/authentik/archive/{AUTHENTIK_TAG}.tar.gz"),
        Reply::Ok(tar_gz("authentik-version-2026.2.0", fixture)),
    );
    let recipe = s.path("packager/assemble.toml");
    fs_err::create_dir_all(recipe.parent().unwrap()).unwrap();
    fs_err::write(
        &recipe,
        format!("extends = \"../assemble.toml\"\n\n[units.opencontainers]\n{PYPI_PIN}\n"),
    )
    .unwrap();
    recipe
}

/// The tag the root recipe pins authentik at.
const AUTHENTIK_TAG: &str = "version/2026.2.0";

/// The root recipe from pins alone, against a loopback "GitHub" serving
/// our authentik-shaped fixture (a uv workspace with its uv.lock) as
/// goauthentik/authentik at its release tag: `lock` records the NAR hash,
/// `assemble --locked` fetches, syncs the venv from the fixture's uv.lock
/// with the bootstrapped uv (without the workspace members and
/// opencontainers, which their units install), applies the six patches,
/// and the tree runs. One pin is replaced, in a recipe that extends the
/// root one: opencontainers's (a git rev on GitHub, whose bytes cannot be
/// served here) by the same package's sdist. The interpreter is this
/// machine's python3, named with --python (the recipe asks for 3.14).
///
/// The fixture's project and lock are replaced by `tests/fixtures/
/// lock-features/`, which have what authentik's have beside its plain
/// wheels: opencontainers from git (excluded from the venv, as the recipe
/// says), a `no-binary-package` in `[tool.uv]` built from its sdist
/// against a system library (pycurl, through curl-config), an sdist-only
/// distribution (docopt) and extras (psycopg[binary,pool]).
#[test]
fn the_root_recipe_builds_from_a_release_tag_and_authentiks_uv_lock() {
    let s = Scratch::new();
    let fixture = s.path("demo/authentik");
    for file in ["pyproject.toml", "uv.lock"] {
        fs_err::copy(features_dir().join(file), fixture.join(file)).unwrap();
    }
    let hash = nix_hash_path(&fixture);
    let at_tag = format!("/goauthentik/authentik/archive/{AUTHENTIK_TAG}.tar.gz");
    let server = Server::start();
    let recipe = packager_recipe(&s, &server, &fixture);
    let lock_file = s.path("packager/assemble.lock");
    // `--python "$(command -v python3)"`, a path, which --python takes.
    let python = support::which("python3");
    let xtask = |args: &[&str], github: &str, cache: &Path| {
        let mut all = args.to_vec();
        all.extend(["--recipe", recipe.to_str().unwrap()]);
        let env = [
            ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
            ("ASSEMBLE_GITHUB_URL", github),
            // The caller's uv settings do not reach the venv: honoured,
            // these would fail the sync (no index, no source build).
            ("UV_INDEX_URL", "http://127.0.0.1:9/simple"),
            ("UV_NO_BUILD", "1"),
        ];
        xtask_env(s.dir.path(), &all, &env)
    };
    let assemble = |out: &Path, github: &str, cache: &Path| {
        let args = [
            "assemble",
            "--locked",
            "--json",
            "--python",
            python.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        xtask(&args, github, cache)
    };
    let cache = support::cache_sharing_uv(s.dir.path(), "cache");

    // --locked before there is a lock: refused, naming the unit.
    let out = s.path("out");
    let err = assemble(&out, &server.base, &cache).fails(1);
    assert!(err.contains("unit authentik:"), "{err}");
    assert!(err.contains("has no entry for it"), "{err}");
    assert!(!out.exists());

    let err = xtask(&["lock"], &server.base, &cache).ok();
    assert!(err.contains("Added authentik"), "{err}");
    let text = fs_err::read_to_string(&lock_file).unwrap();
    assert!(
        text.contains(&format!(
            "source = \"github goauthentik/authentik at {AUTHENTIK_TAG}\""
        )),
        "{text}"
    );
    assert!(text.contains(&format!("hash = \"{hash}\"")), "{text}");

    let report = assemble(&out, &server.base, &cache).json();
    assert_eq!(report["installer"], "uv 0.9.5", "{report}");
    let site = site(&out);
    let tree = support::listing(&out);
    let from_venv: Vec<&String> = tree
        .iter()
        .filter(|l| {
            l.contains("__editable__")
                || (l.contains(".dist-info")
                    && [
                        "ak_guardian",
                        "django_channels_postgres",
                        "django_dramatiq_postgres",
                        "django_postgres_cache",
                        "opencontainers",
                    ]
                    .iter()
                    .any(|p| l.contains(p)))
        })
        .collect();
    assert!(from_venv.is_empty(), "not from the venv: {from_venv:?}");
    for pkg in [
        "guardian",
        "django_channels_postgres",
        "django_dramatiq_postgres",
        "django_postgres_cache",
        "opencontainers",
    ] {
        assert!(site.join(pkg).join("__init__.py").is_file(), "{pkg}");
    }
    // The six patches.
    let read = |rel: &str| fs_err::read_to_string(site.join(rel)).unwrap();
    let o = out.display();
    assert!(read("authentik/root/settings.py").contains(&format!("BASE_DIR = Path(\"{o}\")")));
    assert!(read("authentik/lib/default.yml").contains(&format!("blueprints_dir: {o}/blueprints")));
    let utils = read("authentik/stages/email/utils.py");
    assert!(
        utils.contains("Path(\"@webui@/icons/icon_left_brand.png\")"),
        "{utils}"
    );
    assert!(
        utils.contains("Path(\"@webui@/dist/assets/icons/icon_left_brand.png\")"),
        "{utils}"
    );
    assert!(
        read("authentik/rbac/migrations/0010_remove_role_group_alter_role_name.py")
            .contains("(\"authentik_core\", \"0056_user_roles\"),")
    );
    let ak = read("lifecycle/ak");
    let bash = support::which("bash");
    assert_eq!(
        ak.lines().next(),
        Some(format!("#!{}", bash.display()).as_str())
    );
    lock_features(&s, &fixture, &site, &cache);
    // The tree runs.
    let (ok, msg) = support::run(&out.join("bin/gunicorn"), &["--version"]);
    assert!(ok && msg.contains("gunicorn"), "{msg}");
    let (ok, msg) = support::run(
        &out.join("bin/python"),
        &[
            "-c",
            "import authentik.root.settings as s, guardian, django_channels_postgres, django_dramatiq_postgres, django_postgres_cache, opencontainers; print(s.BASE_DIR)",
        ],
    );
    assert!(ok && msg.trim() == o.to_string(), "{msg}");

    // Its image's labels name the authentik unit's pin: the tag's version,
    // the locked hash, the repository.
    let (layout, image_tree) = (s.path("image"), s.path("image-tree"));
    let image_args = [
        "image",
        "--python",
        python.to_str().unwrap(),
        "--out",
        image_tree.to_str().unwrap(),
        "--oci",
        layout.to_str().unwrap(),
    ];
    xtask(&image_args, &server.base, &cache).ok();
    let labels = support::skopeo(&["inspect", &format!("oci:{}:2026.2.0", layout.display())]);
    let labels = &labels["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"], "2026.2.0",
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        hash.as_str(),
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/goauthentik/authentik"
    );

    // The server gone: the cache has the source, under its locked hash.
    server.stop();
    assemble(&s.path("out2"), "http://127.0.0.1:9", &cache).json();
    assert_eq!(fs_err::read_to_string(&lock_file).unwrap(), text);

    // A file:// mirror in GitHub's layout serves the same tag.
    let mirror = s.path("mirror");
    let archive = mirror.join(at_tag.trim_start_matches('/'));
    fs_err::create_dir_all(archive.parent().unwrap()).unwrap();
    fs_err::write(&archive, tar_gz("authentik-version-2026.2.0", &fixture)).unwrap();
    let file_mirror = format!("file://{}", mirror.display());
    let mirrored = support::cache_sharing_uv(s.dir.path(), "mirrored-cache");
    let out5 = s.path("out5");
    assemble(&out5, &file_mirror, &mirrored).json();
    assert!(
        crate::fetch::site(&out5)
            .join("authentik/root/settings.py")
            .is_file()
    );

    // A source build whose system library is missing: curl-config not on
    // PATH, and a uv cache of its own (HOME), so that pycurl is built
    // again. The error names the distribution, the missing tool and the
    // Debian package; the log's tail under -v.
    let bare = s.path("bare-bin");
    fs_err::create_dir_all(&bare).unwrap();
    for tool in ["bash", "gcc", "cc"] {
        fs_err::os::unix::fs::symlink(support::which(tool), bare.join(tool)).unwrap();
    }
    let no_dev = support::cache_sharing_uv(s.dir.path(), "no-dev-cache");
    let home = s.path("home");
    let run = xtask_env(
        s.dir.path(),
        &[
            "assemble",
            "-v",
            "--recipe",
            recipe.to_str().unwrap(),
            "--locked",
            "--python",
            support::real_python().to_str().unwrap(),
            "--out",
            s.path("out6").to_str().unwrap(),
        ],
        &[
            ("ASSEMBLE_CACHE_DIR", no_dev.to_str().unwrap()),
            ("ASSEMBLE_GITHUB_URL", &file_mirror),
            ("PATH", bare.to_str().unwrap()),
            ("HOME", home.to_str().unwrap()),
            ("XDG_CACHE_HOME", home.join(".cache").to_str().unwrap()),
        ],
    );
    let err = run.fails(1);
    assert!(
        err.contains("unit python-deps: building pycurl==7.49.0 from its sdist failed: it needs `curl-config`"),
        "{err}"
    );
    assert!(
        err.contains("apt-get install libcurl4-openssl-dev"),
        "{err}"
    );
    assert!(err.contains("the build log ends:"), "-v: the tail: {err}");
    assert!(!s.path("out6").exists());

    // Other bytes at the same tag, into an empty cache: the NAR check
    // fails, naming the unit, the URL and both hashes.
    let tampered = s.path("tampered");
    support::copy_dir(&fixture, &tampered);
    fs_err::write(tampered.join("manage.py"), "print('not authentik')\n").unwrap();
    let other = Server::start();
    other.route(&at_tag, Reply::Ok(tar_gz("authentik-x", &tampered)));
    let fresh = support::cache_sharing_uv(s.dir.path(), "fresh-cache");
    let err = assemble(&s.path("out3"), &other.base, &fresh).fails(1);
    assert!(err.contains("unit authentik: hash mismatch"), "{err}");
    assert!(err.contains(&other.url(&at_tag)), "{err}");
    assert!(err.contains(&format!("expected: {hash}")), "{err}");
    assert!(err.contains(&nix_hash_path(&tampered)), "{err}");
    assert!(!s.path("out3").exists());

    // A stale entry (the recipe now wants another tag): refused.
    support::edit(&recipe, |t| {
        format!(
            "{t}\n[units.authentik]\ngithub = \"goauthentik/authentik\"\ntag = \"version/2026.2.1\"\n"
        )
    });
    let err = assemble(&s.path("out4"), &other.base, &cache).fails(1);
    assert!(err.contains("unit authentik:"), "{err}");
    assert!(err.contains("is stale"), "{err}");
    assert_eq!(
        other.hits(),
        1,
        "only the tampered fetch reached the server"
    );
}

/// The root recipe with no network at all: after `lock` and `vendor`
/// through the loopback "GitHub" (authentik's source into
/// `vendor/authentik`, opencontainers' sdist, and `vendor/pypi`: every
/// distribution the venv is installed from and uv's wheel), a build in a
/// network namespace with nothing but loopback, from an empty cache and
/// with the server gone, gives the online build's tree, to the bit.
#[test]
fn the_root_recipe_vendored_builds_with_no_network_at_all() {
    let s = Scratch::new();
    let fixture = s.path("demo/authentik");
    let server = Server::start();
    let recipe = packager_recipe(&s, &server, &fixture);
    let python = support::real_python();
    let online_cache = support::cache_sharing_uv(s.dir.path(), "online-cache");
    let xtask = |args: &[&str], cache: &Path, github: &str, network: bool| {
        let mut all = args.to_vec();
        all.extend([
            "--recipe",
            recipe.to_str().unwrap(),
            "--python",
            python.to_str().unwrap(),
        ]);
        let env = [
            ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
            ("ASSEMBLE_GITHUB_URL", github),
        ];
        if network {
            xtask_env(s.dir.path(), &all, &env)
        } else {
            support::xtask_without_network(s.dir.path(), &all, &env)
        }
    };
    let build = |out: &str| {
        [
            "assemble",
            "--locked",
            "--out",
            s.path(out).to_str().unwrap(),
            "--prefix",
            "/opt/authentik",
            "--nar-hash",
            "--json",
        ]
        .map(str::to_string)
    };
    xtask(&["lock"], &online_cache, &server.base, true).ok();
    let said = xtask(&["vendor"], &online_cache, &server.base, true).ok();
    assert!(said.contains("Vendored authentik"), "{said}");
    assert!(s.path("packager/vendor/pypi").is_dir(), "{said}");
    let args = build("online");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = xtask(&args, &online_cache, &server.base, true).json();
    let want = report["nar_hash"].as_str().unwrap().to_string();
    server.stop();

    let empty = s.path("empty-cache");
    let mut args = build("offline").to_vec();
    args.push("--offline".to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = xtask(&args, &empty, "http://127.0.0.1:9", false);
    assert_eq!(
        run.json()["nar_hash"].as_str(),
        Some(want.as_str()),
        "{}",
        run.stderr()
    );
}
