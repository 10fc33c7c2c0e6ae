//! The build cache shared through an OCI registry (`--cache-registry`):
//! Debian's docker-registry on loopback, started and stopped by the test,
//! its storage in the test's folder; two "machines" are two cache folders.
//! Inside the sandbox: pulled entries are unpacked and renamed into a
//! cache, and were that wrong they could land elsewhere.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::PathBuf;

use serde_json::Value;

use crate::support::http::{Reply, Server};
use crate::support::{self, Scratch, registry::Registry, sandbox::sandboxed, skopeo};

const PREFIX: &str = "/opt/authentik";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One machine: its cache, the PATH it runs with, and where it reaches
/// "GitHub" (a loopback server).
struct Machine {
    cache: PathBuf,
    path: String,
    github: String,
}

/// Assembles the demo into `out` on `m`, with the shared cache `repo` and
/// `extra` flags, the tree run from the same prefix on every machine.
fn assemble(s: &Scratch, m: &Machine, out: &str, repo: &str, extra: &[&str]) -> support::Run {
    let out = s.path(out);
    let mut args = vec!["assemble", "--out", out.to_str().unwrap(), "--nar-hash"];
    args.extend_from_slice(extra);
    on(s, m, repo, &args)
}

/// Runs `cargo xtask ARGS --recipe DEMO --prefix PREFIX --cache-registry
/// REPO` (no prefix for `cache ls`) on `m`: its cache and PATH, the
/// interpreter named by its path (a venv's key holds it).
fn on(s: &Scratch, m: &Machine, repo: &str, args: &[&str]) -> support::Run {
    let recipe = s.recipe();
    let mut all = args.to_vec();
    all.extend([
        "--recipe",
        recipe.to_str().unwrap(),
        "--cache-registry",
        repo,
    ]);
    if args.get(1) != Some(&"ls") {
        all.extend(["--prefix", PREFIX]);
    }
    let python = support::real_python();
    let (home, tmp) = (s.path("home"), s.path("tmp"));
    fs_err::create_dir_all(&home).unwrap();
    fs_err::create_dir_all(&tmp).unwrap();
    support::xtask_env(
        s.dir.path(),
        &all,
        &[
            ("ASSEMBLE_CACHE_DIR", m.cache.to_str().unwrap()),
            ("ASSEMBLE_PYTHON", python.to_str().unwrap()),
            ("PATH", &m.path),
            ("ASSEMBLE_GITHUB_URL", &m.github),
            ("HOME", home.to_str().unwrap()),
            ("TMPDIR", tmp.to_str().unwrap()),
        ],
    )
}

/// A folder holding only `bash` (a link to the real one): the PATH of a
/// machine with no uv, pip or pip3, which cannot build a venv. A machine
/// that can build finds the same bash first, so that the scripts' shebang
/// (`lifecycle/ak`) is the same on both.
fn bash_only(s: &Scratch) -> PathBuf {
    let bin = s.path("bin");
    fs_err::create_dir_all(&bin).unwrap();
    fs_err::os::unix::fs::symlink(support::which("bash"), bin.join("bash")).unwrap();
    bin
}

fn count(report: &Value, section: &str, field: &str) -> u64 {
    report[section][field]
        .as_u64()
        .unwrap_or_else(|| panic!("{section}.{field} in {report}"))
}

/// Every tag of `repo` with its manifest.
fn artifacts(registry: &Registry, repo: &str) -> Vec<(String, Value)> {
    let tags: Value =
        serde_json::from_str(&registry.get(&format!("/v2/{repo}/tags/list"), "*/*")).unwrap();
    tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let tag = t.as_str().unwrap().to_string();
            let m = registry.get(&format!("/v2/{repo}/manifests/{tag}"), MANIFEST);
            (tag, serde_json::from_str(&m).unwrap())
        })
        .collect()
}

/// Machine A builds the demo and pushes what it made; machine B, with an
/// empty cache and no installer on its PATH, builds the same tree (same
/// NAR hash) from the registry, compiling nothing. A blob flipped in the
/// registry's storage is refused, named, and built locally instead (or
/// fails the run with `--cache-registry-required`); a registry that is
/// down is a warning and a local build.
#[test]
fn a_second_machine_builds_the_same_tree_from_the_registry_compiling_nothing() {
    support::shared_uv();
    if !sandboxed(
        "share::a_second_machine_builds_the_same_tree_from_the_registry_compiling_nothing",
    ) {
        return;
    }
    let s = Scratch::new();
    let outside = support::sandbox::snapshot(&[s.dir.path()]);
    // A unit of ELF files built with gcc, whose runpaths autoPatchelf
    // sets: two patched files, shared too.
    let fixtures = s.path("fixtures");
    let ext = crate::elf::build_fixtures(&fixtures);
    let libs = fixtures.join("libs");
    crate::elf::add_native_unit(&s, &ext, "", &format!("libs = [\"{}\"]", libs.display()));
    // opencontainers from "GitHub" (a loopback server), pinned by its NAR
    // hash: a fetched source, shared too.
    let (archive, hash) = crate::fetch::fake_upstream(&s);
    let github = Server::start();
    github.route(&crate::fetch::archive_path(), Reply::Ok(archive));
    crate::fetch::use_github(&s, &hash);
    let registry = Registry::start(&s.path("registry"));
    let repo = format!("{}/authentik/cache", registry.host);
    let bin = bash_only(&s);
    let full_path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let a = Machine {
        cache: support::cache_sharing_uv(s.dir.path(), "cache-a"),
        path: full_path.clone(),
        github: github.base.clone(),
    };
    let built = assemble(&s, &a, "out-a", &repo, &["--json"]).json();
    let compiled = count(&built, "bytecode", "compiled");
    assert!(compiled > 300, "{built}");
    let pushed = count(&built, "registry", "pushed");
    assert_eq!(count(&built, "registry", "pulled"), 0);
    // The venv, one set of pycs per unit of the demo's seven (the ELF
    // unit has no sources), the two patched files, and the source.
    assert_eq!(built["elf_patched"], 2, "{built}");
    assert_eq!(pushed, 11, "{built}");
    assert_eq!(github.hits(), 1);
    let nar = built["nar_hash"].as_str().unwrap().to_string();

    // The registry's catalog and the artifacts, as skopeo reads them.
    let catalog = registry.get("/v2/_catalog", "*/*");
    assert!(catalog.contains("\"authentik/cache\""), "{catalog}");
    let held = artifacts(&registry, "authentik/cache");
    assert_eq!(held.len() as u64, pushed);
    let venv_tag = &held.iter().find(|(t, _)| t.starts_with("venv-")).unwrap().0;
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{repo}:{venv_tag}"),
    ]);
    assert_eq!(
        raw["artifactType"], "application/vnd.authentik-assemble.cache.v1",
        "{raw}"
    );
    let notes = &raw["annotations"];
    assert_eq!(notes["authentik-assemble.kind"], "venv", "{raw}");
    assert_eq!(notes["authentik-assemble.unit"], "python-deps", "{raw}");
    assert_eq!(notes["authentik-assemble.package"], "authentik-django-demo");
    assert_eq!(notes["authentik-assemble.package-version"], "2026.2.0");
    assert_eq!(
        format!("venv-{}", notes["authentik-assemble.key"].as_str().unwrap()),
        *venv_tag
    );
    assert!(
        notes["authentik-assemble.tool-version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{raw}"
    );
    let layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        [
            "application/vnd.authentik-assemble.listing.v1+json",
            "application/vnd.authentik-assemble.tree.v1.tar+zstd"
        ]
    );
    for (tag, m) in &held {
        assert!(
            ["venv-", "pyc-", "elf-", "src-"]
                .iter()
                .any(|k| tag.starts_with(k)),
            "{tag}"
        );
        assert_eq!(m["artifactType"], raw["artifactType"], "{tag}");
    }
    assert_eq!(
        held.iter().filter(|(t, _)| t.starts_with("elf-")).count(),
        2
    );

    // Machine B: an empty cache, bash alone on its PATH (no uv, pip or
    // pip3 to build a venv, no patchelf to patch a file).
    let b = Machine {
        cache: s.path("cache-b"),
        path: bin.display().to_string(),
        github: github.base.clone(),
    };
    let from_registry = assemble(&s, &b, "out-b", &repo, &["--json"]).json();
    assert_eq!(from_registry["nar_hash"].as_str().unwrap(), nar);
    assert_eq!(count(&from_registry, "bytecode", "compiled"), 0);
    assert_eq!(count(&from_registry, "bytecode", "pulled"), compiled);
    assert_eq!(count(&from_registry, "registry", "pulled"), pushed);
    assert_eq!(count(&from_registry, "registry", "missed"), 0);
    assert_eq!(count(&from_registry, "registry", "pushed"), 0);
    assert!(
        !b.cache.join("tools").exists(),
        "no installer was bootstrapped on B"
    );
    let (ok, said) = support::run(&s.path("out-b/bin/foo-demo"), &[]);
    assert!(ok && said.trim() == "42", "{said}");
    assert_eq!(github.hits(), 1, "the source came from the registry");
    support::assert_same_tree(
        &support::listing(&s.path("out-a")),
        &support::listing(&s.path("out-b")),
        "A's tree and B's",
    );
    // The report for people says it too.
    let b2 = Machine {
        cache: s.path("cache-b2"),
        path: bin.display().to_string(),
        github: github.base.clone(),
    };
    let text = assemble(&s, &b2, "out-b2", &repo, &[]).ok();
    assert!(
        text.contains(&format!(
            "0 compiled, 0 from the cache, {compiled} from the registry"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("{pushed} entries pulled")), "{text}");

    // `cache ls`: what the registry holds for the recipe's package.
    let listed = on(&s, &b, &repo, &["cache", "ls", "--json"]).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len() as u64, pushed, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|h| h["kind"] == "venv" && h["unit"] == "python-deps"),
        "{listed:?}"
    );

    // CI's warm-up: `cache push` fills another repository from A's cache
    // (building nothing), once; `cache pull` fills an empty machine's
    // cache, which then builds the tree with --offline.
    let warm = format!("{}/authentik/warm", registry.host);
    let first = on(&s, &a, &warm, &["cache", "push", "--json"]).json();
    assert_eq!(count(&first, "registry", "pushed"), pushed, "{first}");
    assert_eq!(count(&first, "bytecode", "compiled"), 0, "{first}");
    // The same entries packed again give the same blobs: reproducible.
    let layers = |held: &[(String, Value)]| -> Vec<(String, Value)> {
        held.iter()
            .map(|(t, m)| (t.clone(), m["layers"].clone()))
            .collect()
    };
    let mut first_layers = layers(&held);
    let mut warm_layers = layers(&artifacts(&registry, "authentik/warm"));
    first_layers.sort_by(|a, b| a.0.cmp(&b.0));
    warm_layers.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(first_layers, warm_layers);
    let again = on(&s, &a, &warm, &["cache", "push", "--json"]).json();
    assert_eq!(count(&again, "registry", "pushed"), 0, "{again}");
    assert_eq!(count(&again, "registry", "present"), pushed, "{again}");
    let f = Machine {
        cache: s.path("cache-f"),
        path: bin.display().to_string(),
        github: github.base.clone(),
    };
    let pulled = on(&s, &f, &warm, &["cache", "pull", "--json"]).json();
    assert_eq!(count(&pulled, "registry", "pulled"), pushed, "{pulled}");
    assert_eq!(count(&pulled, "registry", "pushed"), 0, "{pulled}");
    let offline = assemble(&s, &f, "out-f", &warm, &["--json", "--offline"]).json();
    assert_eq!(offline["nar_hash"].as_str().unwrap(), nar);
    assert_eq!(count(&offline, "bytecode", "compiled"), 0);

    // One byte of authentik's pycs flipped in the registry's storage.
    let (tag, m) = held
        .iter()
        .find(|(_, m)| m["annotations"]["authentik-assemble.unit"] == "authentik")
        .unwrap();
    assert!(tag.starts_with("pyc-"), "{tag}");
    registry.flip_blob(m["layers"][1]["digest"].as_str().unwrap());
    let c = Machine {
        cache: s.path("cache-c"),
        path: bin.display().to_string(),
        github: github.base.clone(),
    };
    let refused = assemble(&s, &c, "out-c", &repo, &["--json"]);
    let report = refused.json();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("the bytecode of authentik") && warnings.contains(tag.as_str()),
        "{warnings}"
    );
    assert!(warnings.contains("refused"), "{warnings}");
    assert_eq!(count(&report, "registry", "refused"), 1);
    assert_eq!(count(&report, "registry", "pulled"), pushed - 1);
    let local = count(&report, "bytecode", "compiled");
    assert!(local > 0 && local < compiled, "{report}");
    assert_eq!(report["nar_hash"].as_str().unwrap(), nar);

    // Required: the same refusal fails the run, naming the entry, and no
    // output is made.
    let d = Machine {
        cache: s.path("cache-d"),
        path: bin.display().to_string(),
        github: github.base.clone(),
    };
    let failed = assemble(
        &s,
        &d,
        "out-d",
        &repo,
        &["--json", "--cache-registry-required"],
    );
    assert_eq!(failed.code(), Some(1), "{}", failed.stderr());
    let diagnostic: Value = serde_json::from_str(&failed.stdout()).unwrap();
    assert_eq!(diagnostic["kind"], "cache-registry", "{diagnostic}");
    let message = diagnostic["message"].as_str().unwrap();
    assert!(
        message.contains("the bytecode of authentik") && message.contains(tag.as_str()),
        "{message}"
    );
    assert!(!s.path("out-d").exists(), "no output left behind");

    // The registry down: a warning, and everything built here.
    drop(registry);
    let e = Machine {
        cache: support::cache_sharing_uv(s.dir.path(), "cache-e"),
        path: full_path,
        github: github.base.clone(),
    };
    let down = assemble(&s, &e, "out-e", &repo, &["--json"]);
    let report = down.json();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("Connection refused") && warnings.contains("built here"),
        "{warnings}"
    );
    assert_eq!(count(&report, "bytecode", "compiled"), compiled);
    assert_eq!(report["nar_hash"].as_str().unwrap(), nar);
    assert_eq!(
        support::sandbox::snapshot(&[s.dir.path()]),
        outside,
        "nothing outside the test's folder changed"
    );
}
