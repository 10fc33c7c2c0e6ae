//! `cargo xtask image`: OCI images of the tree without a container engine,
//! checked with the tools of the container world from Debian: skopeo reads
//! the layout and the archive, umoci unpacks the layout, the unpacked root
//! runs the tree under `chroot`, docker-registry takes the push. Each test
//! runs inside the sandbox (the command writes layouts, archives and
//! trees: were a path wrong, only a tmpfs would suffer), and the first
//! snapshots the sandbox's root around its runs.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{self, Scratch, registry::Registry, sandbox::sandboxed, skopeo};

const PREFIX: &str = "/opt/authentik";
const TAG: &str = "2026.2.0";
/// 2023-11-14T22:13:20Z.
const EPOCH: &str = "1700000000";

/// `cargo xtask image --recipe <scratch recipe> --out <scratch>/tree ARGS...`
/// at SOURCE_DATE_EPOCH, from the scratch folder, with a cache of the
/// test's own (the shared one is read-only in the sandbox) and uv's cache
/// and temporary files in the scratch folder too.
fn image(s: &Scratch, args: &[&str]) -> support::Run {
    image_env(s, args, &[])
}

/// As [`image`], with `extra` in its environment.
fn image_env(s: &Scratch, args: &[&str], extra: &[(&str, &str)]) -> support::Run {
    let recipe = s.recipe();
    let tree = s.path("tree");
    let mut all = vec![
        "image",
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        tree.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (cache, home, tmp) = (s.path("cache"), s.path("home"), s.path("tmp"));
    if !cache.exists() {
        support::cache_sharing_uv(s.dir.path(), "cache");
        fs_err::create_dir_all(&home).unwrap();
        fs_err::create_dir_all(&tmp).unwrap();
    }
    let mut env = vec![
        ("SOURCE_DATE_EPOCH", EPOCH),
        ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
        ("HOME", home.to_str().unwrap()),
        ("TMPDIR", tmp.to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    support::xtask_env(s.dir.path(), &all, &env)
}

fn digests(report: &Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The absolute path the tree's `bin/python` leads to.
fn interpreter_of(tree: &Path) -> PathBuf {
    let mut at = tree.join("bin/python");
    loop {
        let target = fs_err::read_link(&at).unwrap();
        if target.is_absolute() {
            return target;
        }
        at = at.parent().unwrap().join(target);
    }
}

/// Two builds give the same image, byte for byte (layout and archive);
/// skopeo reads both and agrees on the digest; the config is authentik's
/// (dumb-init, `ak`, `server`, the prefix's bin first on PATH, a non-root
/// user, SOURCE_DATE_EPOCH as the creation time); umoci unpacks it and the
/// tree runs in the unpacked root with no base (`--with-interpreter`), as
/// root and as the image's user; an
/// edit of one app file changes the app layer and no other.
#[test]
fn an_image_is_reproducible_runs_with_no_base_and_an_edit_changes_one_layer() {
    // Bootstrapped outside: the sandbox reads the shared cache only.
    support::shared_uv();
    if !sandboxed("image::an_image_is_reproducible_runs_with_no_base_and_an_edit_changes_one_layer")
    {
        return;
    }
    let s = Scratch::new();
    let outside = support::sandbox::snapshot(&[s.dir.path()]);
    let (a, b) = (s.path("a"), s.path("b"));
    let (a_tar, b_tar) = (s.path("a.tar"), s.path("b.tar"));
    let build = |dir: &Path, tar: &Path| {
        image(
            &s,
            &[
                "--with-interpreter",
                "--oci",
                dir.to_str().unwrap(),
                "--docker-archive",
                tar.to_str().unwrap(),
                "--json",
            ],
        )
        .json()
    };
    let first = build(&a, &a_tar);
    let second = build(&b, &b_tar);
    assert_eq!(first["digest"], second["digest"], "{first}\n{second}");
    let names: Vec<&str> = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["interpreter", "venv", "packages", "app"]);
    assert_eq!(
        fs_err::read(&a_tar).unwrap(),
        fs_err::read(&b_tar).unwrap(),
        "the archives"
    );

    let layout = |dir: &Path| format!("oci:{}:{TAG}", dir.display());
    let inspected = skopeo(&["inspect", &layout(&a)]);
    assert_eq!(inspected["Digest"], first["digest"]);
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 4);
    assert_eq!(inspected["Created"], "2023-11-14T22:13:20Z");
    let archive = |tar: &Path| skopeo(&["inspect", &format!("docker-archive:{}", tar.display())]);
    assert_eq!(archive(&a_tar)["Digest"], archive(&b_tar)["Digest"]);
    assert_eq!(archive(&a_tar)["Layers"].as_array().unwrap().len(), 4);

    let config = skopeo(&["inspect", "--config", &layout(&a)]);
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!([
            format!("{PREFIX}/bin/dumb-init"),
            "--",
            format!("{PREFIX}/lifecycle/ak")
        ]),
        "{config}"
    );
    assert_eq!(c["Cmd"], serde_json::json!(["server"]));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], PREFIX);
    assert!(
        c["Env"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("PATH={PREFIX}/bin:")),
        "{config}"
    );
    assert_eq!(
        c["Labels"]["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], TAG);

    // Unpacked by umoci, the tree runs in that root alone.
    let bundle = s.path("bundle");
    support::stdout_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:{TAG}", a.display())])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let chroot = |args: &[&str]| support::stdout_ok(Command::new("chroot").arg(&rootfs).args(args));
    let python = format!("{PREFIX}/bin/python");
    assert_eq!(
        chroot(&[
            &python,
            "-c",
            "import authentik.root.settings; print('imported')"
        ])
        .trim(),
        "imported"
    );
    assert!(
        chroot(&[&format!("{PREFIX}/bin/gunicorn"), "--version"]).starts_with("gunicorn (version")
    );
    // As the image's user, not root: every folder on the way is 0755.
    let as_user = support::stdout_ok(
        Command::new("chroot")
            .arg("--userspec=1000:1000")
            .arg(&rootfs)
            .args([
                python.as_str(),
                "-c",
                "import os, authentik.root.settings; print(os.getuid())",
            ]),
    );
    assert_eq!(as_user.trim(), "1000");
    // The host's interpreter is there, at the path bin/python names.
    let interpreter = interpreter_of(&s.path("tree"));
    assert!(rootfs.join(interpreter.strip_prefix("/").unwrap()).exists());

    // One app file edited: the app layer changes, the others stay.
    let manage = s.path("demo/authentik/manage.py");
    support::edit(&manage, |t| format!("{t}# edited\n"));
    let edited = image(
        &s,
        &[
            "--with-interpreter",
            "--oci",
            s.path("c").to_str().unwrap(),
            "--json",
        ],
    )
    .json();
    let (before, after) = (digests(&first), digests(&edited));
    assert_eq!(
        before[..3],
        after[..3],
        "the interpreter, venv and packages layers"
    );
    assert_ne!(before[3], after[3], "the app layer");
    assert_ne!(first["digest"], edited["digest"]);
    assert_eq!(
        support::sandbox::snapshot(&[s.dir.path()]),
        outside,
        "nothing outside the test's folder changed"
    );
}

/// A base that lacks the interpreter `bin/python` points to is refused,
/// naming it, before anything is written; a base that holds it (an OCI
/// layout or a docker-archive) gives an image of its layers and ours. A
/// push to a real registry on loopback gives the same digest skopeo reads
/// back, a blob tampered with in its storage is refused when pulled, and a
/// second push uploads nothing; a registry that wants a login
/// takes one from an auth file, and a wrong password is never printed.
#[test]
fn a_base_must_hold_the_interpreter_and_a_push_uploads_only_what_is_missing() {
    support::shared_uv();
    if !sandboxed("image::a_base_must_hold_the_interpreter_and_a_push_uploads_only_what_is_missing")
    {
        return;
    }
    let s = Scratch::new();
    let empty = s.path("empty");
    let umoci = |args: &[&str]| support::stdout_ok(Command::new("umoci").args(args));
    umoci(&["init", "--layout", empty.to_str().unwrap()]);
    umoci(&["new", "--image", &format!("{}:latest", empty.display())]);
    let refused = s.path("refused");
    let err = image(
        &s,
        &[
            "--base",
            empty.to_str().unwrap(),
            "--oci",
            refused.to_str().unwrap(),
        ],
    )
    .fails(1);
    let interpreter = interpreter_of(&s.path("tree"));
    assert!(
        err.contains(&format!("has no {}", interpreter.display())),
        "{err}"
    );
    assert!(err.contains("--with-interpreter"), "{err}");
    assert!(!refused.exists(), "nothing written");
    // A folder that holds other files is not made a layout.
    let taken = s.path("taken");
    fs_err::create_dir_all(&taken).unwrap();
    fs_err::write(taken.join("notes.txt"), "mine").unwrap();
    let err = image(&s, &["--oci", taken.to_str().unwrap()]).fails(1);
    assert!(err.contains("is not an OCI image layout"), "{err}");
    assert_eq!(fs_err::read_dir(&taken).unwrap().count(), 1, "untouched");

    let (full, full_tar) = (s.path("full"), s.path("full.tar"));
    let base = image(
        &s,
        &[
            "--with-interpreter",
            "--oci",
            full.to_str().unwrap(),
            "--docker-archive",
            full_tar.to_str().unwrap(),
            "--json",
        ],
    )
    .json();
    for from in [&full, &full_tar] {
        let based = image(
            &s,
            &[
                "--base",
                from.to_str().unwrap(),
                "--oci",
                s.path("based").to_str().unwrap(),
                "--json",
            ],
        )
        .json();
        let layers = digests(&based);
        assert_eq!(layers.len(), 7, "{based}");
        assert_eq!(
            digests(&base)[1..],
            layers[4..],
            "our layers after the base's"
        );
    }

    let registry = Registry::start(&s.path("registry"));
    let reference = format!("{}/authentik:{TAG}", registry.host);
    let push = || image(&s, &["--with-interpreter", "--push", &reference, "--json"]).json();
    let pushed = push();
    assert_eq!(
        pushed["pushed"]["uploaded"].as_array().unwrap().len(),
        5,
        "{pushed}"
    );
    let remote = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    assert_eq!(remote["Digest"], pushed["digest"]);
    assert_eq!(pushed["digest"], base["digest"]);
    let uploads = registry.requests("POST", "/blobs/uploads/").len();
    assert_eq!(uploads, 5);
    // Pulled back through the client, each blob is checked against its
    // digest: the registry's copy of a layer with one byte flipped on disk
    // is refused, naming it, and nothing is left where it was to go.
    let client = assemble_registry::Registry::connect(&reference, false).unwrap();
    let (manifest, digest) = client
        .pull_manifest(&["application/vnd.oci.image.manifest.v1+json"])
        .unwrap();
    assert_eq!(digest, pushed["digest"].as_str().unwrap());
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let app = manifest["layers"][3]["digest"].as_str().unwrap();
    fs_err::create_dir_all(s.path("pulled")).unwrap();
    let to = s.path("pulled/app");
    client.pull_blob(app, &to).unwrap();
    let sha = assemble_manifest::Sha256::of(&fs_err::read(&to).unwrap());
    assert_eq!(format!("sha256:{}", sha.hex()), app);
    let hex = app.trim_start_matches("sha256:");
    let stored = s
        .path("registry/data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = fs_err::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs_err::write(&stored, bytes).unwrap();
    let again = s.path("pulled/again");
    let err = client.pull_blob(app, &again).unwrap_err().to_string();
    assert!(err.contains(app), "{err}");
    assert!(!again.exists(), "nothing kept");
    assert_eq!(
        fs_err::read_dir(s.path("pulled")).unwrap().count(),
        1,
        "no temporary file left"
    );

    let again = push();
    assert_eq!(
        again["pushed"]["uploaded"],
        serde_json::json!([]),
        "{again}"
    );
    assert_eq!(again["pushed"]["present"].as_array().unwrap().len(), 5);
    assert_eq!(
        registry.requests("POST", "/blobs/uploads/").len(),
        uploads,
        "no upload started"
    );

    // A registry that wants a login: refused without one, with a hint; a
    // wrong password is never printed; the entry of an auth file (what
    // `podman login` writes) is used.
    let (user, password) = ("alice", "s3cret-pw");
    let guarded = Registry::start_with_login(&s.path("guarded"), user, password);
    let reference = format!("{}/authentik:{TAG}", guarded.host);
    let push = ["--push", reference.as_str(), "--json"];
    let err = image(&s, &push).fails(1);
    assert!(err.contains("401") && err.contains("podman login"), "{err}");
    let wrong = [
        ("ASSEMBLE_REGISTRY_USER", user),
        ("ASSEMBLE_REGISTRY_PASSWORD", "not-the-password"),
    ];
    let run = image_env(&s, &push, &wrong);
    let err = run.fails(1);
    let said = format!("{err}{}", run.stdout());
    assert!(!said.contains("not-the-password"), "{said}");
    let auth = s.path("auth.json");
    let encoded = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    let entry = format!(
        r#"{{"auths":{{"{}":{{"auth":"{encoded}"}}}}}}"#,
        guarded.host
    );
    fs_err::write(&auth, entry).unwrap();
    let pushed = image_env(&s, &push, &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())]).json();
    let remote = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--authfile",
        auth.to_str().unwrap(),
        &format!("docker://{reference}"),
    ]);
    assert_eq!(remote["Digest"], pushed["digest"]);
}
