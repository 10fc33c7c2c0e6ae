//! The network as packagers meet it: HTTPS signed by a CA of their own
//! (a TLS-inspecting proxy's, a private mirror's), a real proxy, mirrors
//! over `file://`, and hosts that do not resolve. The server, the CA and
//! the proxy (Debian's tinyproxy) are real and on loopback.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};

use crate::fetch::{REV, archive_path, assemble_env, fake_upstream, site, use_github};
use crate::support::http::{Authority, Reply, Server};
use crate::support::proxy::Tinyproxy;
use crate::support::{self, Scratch};

/// An empty source cache `name` in the scratch folder (venvs shared).
fn fresh_cache(s: &Scratch, name: &str) -> PathBuf {
    let cache = s.path(name);
    fs_err::create_dir_all(&cache).unwrap();
    let shared = support::shared_cache().join("venvs");
    fs_err::create_dir_all(&shared).unwrap();
    fs_err::os::unix::fs::symlink(&shared, cache.join("venvs")).unwrap();
    cache
}

/// The environment of a run: the GitHub mirror, and the variables given
/// (each proxy variable set, upper and lower case, so that the test's own
/// environment cannot choose for it).
fn env<'a>(cache: &'a Path, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())];
    for name in [
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        let upper = name.to_ascii_uppercase();
        let value = extra
            .iter()
            .find(|(k, _)| k.to_ascii_uppercase() == upper)
            .map_or("", |(_, v)| *v);
        env.push((name, value));
    }
    env.extend(extra.iter().filter(|(k, _)| !k.ends_with("_PROXY")));
    env
}

fn run(s: &Scratch, out: &Path, github: &str, env: &[(&str, &str)], json: bool) -> support::Run {
    let mut env = env.to_vec();
    env.push(("ASSEMBLE_GITHUB_URL", github));
    let extra: &[&str] = if json { &["--json"] } else { &[] };
    assemble_env(s, out, extra, &env)
}

/// A loopback HTTPS server whose certificate a CA made here signs: not
/// trusted by default (the error names the URL and the unit, and its hint
/// says how to trust it, in text and JSON); trusted with `SSL_CERT_FILE`;
/// through tinyproxy with `HTTPS_PROXY` (its log shows the CONNECT); and
/// straight past it with `NO_PROXY`.
#[test]
fn https_trusts_ssl_cert_file_and_goes_through_a_real_proxy() {
    let s = Scratch::new();
    let (archive, hash) = fake_upstream(&s);
    let ca = Authority::new();
    let ca_file = s.path("ca.pem");
    fs_err::write(&ca_file, &ca.ca_pem).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let server = Server::start_tls(&ca);
    server.route(&archive_path(), Reply::Ok(archive));
    use_github(&s, &hash);
    let url = server.url(&archive_path());

    // Not trusted: the system's store does not hold the test's CA.
    let cache = fresh_cache(&s, "cache-untrusted");
    let out = s.path("out-untrusted");
    let err = run(&s, &out, &server.base, &env(&cache, &[]), false).fails(1);
    assert!(err.contains("unit opencontainers"), "{err}");
    assert!(err.contains(&format!("GET {url}")), "{err}");
    assert!(
        err.contains("hint") && err.contains("SSL_CERT_FILE"),
        "{err}"
    );
    let json = run(&s, &out, &server.base, &env(&cache, &[]), true);
    let report: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(report["kind"], "fetch", "{report}");
    assert_eq!(report["unit"], "opencontainers", "{report}");
    assert!(
        report["hint"].as_str().unwrap().contains("SSL_CERT_FILE"),
        "{report}"
    );
    assert!(!out.exists());
    let hits = server.hits();

    // Trusted through SSL_CERT_FILE.
    let trusted = [("SSL_CERT_FILE", ca_file)];
    let cache = fresh_cache(&s, "cache-trusted");
    let out = s.path("out-trusted");
    run(&s, &out, &server.base, &env(&cache, &trusted), true).json();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());
    assert_eq!(server.hits(), hits + 1);

    // Through a real proxy: tinyproxy's log shows the CONNECT to our server.
    let proxy = Tinyproxy::start(&s.path("proxy"));
    let authority = server.base.trim_start_matches("https://").to_string();
    let via = [
        ("SSL_CERT_FILE", ca_file),
        ("HTTPS_PROXY", proxy.url.as_str()),
    ];
    let cache = fresh_cache(&s, "cache-proxied");
    let out = s.path("out-proxied");
    run(&s, &out, &server.base, &env(&cache, &via), true).json();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());
    let requests = proxy.requests();
    assert_eq!(
        requests,
        vec![format!("CONNECT {authority} HTTP/1.1")],
        "one CONNECT through the proxy"
    );
    assert_eq!(server.hits(), hits + 2);

    // NO_PROXY lists the host: straight to it, the proxy sees nothing.
    let past = [
        ("SSL_CERT_FILE", ca_file),
        ("HTTPS_PROXY", proxy.url.as_str()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    let cache = fresh_cache(&s, "cache-no-proxy");
    let out = s.path("out-no-proxy");
    run(&s, &out, &server.base, &env(&cache, &past), true).json();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());
    assert_eq!(proxy.requests().len(), 1, "{:?}", proxy.requests());
    assert_eq!(server.hits(), hits + 3);

    // A proxy that is not there: the error says the proxy failed.
    drop(proxy);
    let dead = [
        ("SSL_CERT_FILE", ca_file),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
    ];
    let cache = fresh_cache(&s, "cache-dead-proxy");
    let err = run(
        &s,
        &s.path("out-dead"),
        &server.base,
        &env(&cache, &dead),
        false,
    )
    .fails(1);
    assert!(err.contains(&format!("GET {url}")), "{err}");
    assert!(
        err.contains("through the proxy http://127.0.0.1:9 from https_proxy"),
        "{err}"
    );
    assert!(err.contains("hint") && err.contains("NO_PROXY"), "{err}");
}

/// A host that does not resolve: the error names the URL and the unit,
/// and the hint gives the ways round (a mirror, vendor/, --offline, a
/// proxy), in text and in JSON.
#[test]
fn a_host_that_does_not_resolve_gets_the_ways_round() {
    let s = Scratch::new();
    let (_, hash) = fake_upstream(&s);
    use_github(&s, &hash);
    let cache = fresh_cache(&s, "cache");
    let github = "https://github.invalid";
    let err = run(&s, &s.path("out"), github, &env(&cache, &[]), false).fails(1);
    let url = format!("{github}{}", archive_path());
    assert!(
        err.contains(&format!("unit opencontainers: GET {url}")),
        "{err}"
    );
    for way in ["ASSEMBLE_GITHUB_URL", "vendor/", "--offline", "HTTPS_PROXY"] {
        assert!(err.contains(way), "{way}: {err}");
    }
    let json = run(&s, &s.path("out"), github, &env(&cache, &[]), true);
    let report: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    let hint = report["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("ASSEMBLE_GITHUB_URL"), "{report}");
}

/// `ASSEMBLE_GITHUB_URL=file://DIR`: a mirror folder in GitHub's archive
/// layout (`OWNER/REPO/archive/REV.tar.gz`) serves the github kind; a
/// missing archive names the path it looked at and the layout.
#[test]
fn a_file_mirror_serves_the_github_kind() {
    let s = Scratch::new();
    let (archive, hash) = fake_upstream(&s);
    use_github(&s, &hash);
    let mirror = s.path("mirror with space");
    let file = mirror.join(archive_path().trim_start_matches('/'));
    let cache = fresh_cache(&s, "cache");
    let base = format!("file://{}", mirror.display()).replace(' ', "%20");

    let err = run(&s, &s.path("out"), &base, &env(&cache, &[]), false).fails(1);
    assert!(err.contains(&format!("{}", file.display())), "{err}");
    assert!(err.contains("docs/cli.md, Mirrors"), "{err}");

    fs_err::create_dir_all(file.parent().unwrap()).unwrap();
    fs_err::write(&file, archive).unwrap();
    let out = s.path("out");
    run(&s, &out, &base, &env(&cache, &[]), true).json();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());
    assert!(file.ends_with(format!("vsoch/oci-python/archive/{REV}.tar.gz")));
}

/// The NAR hash `assemble --json --nar-hash` reports.
fn nar_hash(run: &support::Run) -> String {
    run.json()["nar_hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no nar_hash: {}", run.stdout()))
        .to_string()
}

/// After `cargo xtask vendor`, the demo builds in a network namespace with
/// nothing but loopback, from an empty cache: the venv from `vendor/pypi`
/// (its distributions, uv's wheel), opencontainers' sdist from
/// `vendor/opencontainers`, and the tree is the online build's, to the bit.
#[test]
fn a_vendored_demo_builds_with_no_network_at_all() {
    let s = Scratch::new();
    let recipe = s.recipe();
    let recipe = recipe.to_str().unwrap();
    let online_cache = support::cache_sharing_uv(s.dir.path(), "online-cache");
    let online = [("ASSEMBLE_CACHE_DIR", online_cache.to_str().unwrap())];
    let said = support::xtask_env(s.dir.path(), &["vendor", "--recipe", recipe], &online).ok();
    assert!(said.contains("uv-0.9.5-"), "uv's wheel: {said}");
    let pypi: Vec<String> = fs_err::read_dir(s.path("demo/vendor/pypi"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for wanted in ["psycopg_binary-3.3.9-", "dramatiq-2.2.1-", "uv-0.9.5-"] {
        assert!(
            pypi.iter().any(|f| f.starts_with(wanted)),
            "{wanted}: {pypi:?}"
        );
    }
    let build = |out: &str| {
        let out = s.path(out);
        vec![
            "assemble".to_string(),
            "--recipe".to_string(),
            recipe.to_string(),
            "--out".to_string(),
            out.to_str().unwrap().to_string(),
            "--prefix".to_string(),
            "/opt/authentik".to_string(),
            "--nar-hash".to_string(),
            "--json".to_string(),
        ]
    };
    let args = build("online");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let want = nar_hash(&support::xtask_env(s.dir.path(), &args, &online));

    let empty = s.path("empty-cache");
    let offline = [("ASSEMBLE_CACHE_DIR", empty.to_str().unwrap())];
    let mut args = build("offline");
    args.push("--offline".to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = support::xtask_without_network(s.dir.path(), &args, &offline);
    assert_eq!(nar_hash(&run), want, "{}", run.stderr());
}

/// `cargo xtask vendor --mirror DIR` writes each github unit's source in
/// the layout `ASSEMBLE_GITHUB_URL` reads; with the server gone and an
/// empty cache, the mirror alone serves the build (the archive checked by
/// its NAR hash like GitHub's), and a second vendor writes the same bytes.
#[test]
fn vendor_writes_a_mirror_the_github_kind_reads() {
    let s = Scratch::new();
    let (archive, hash) = fake_upstream(&s);
    let server = Server::start();
    server.route(&archive_path(), Reply::Ok(archive));
    use_github(&s, &hash);
    let recipe = s.recipe();
    let mirror = s.path("mirror");
    let cache = fresh_cache(&s, "vendor-cache");
    let vendor = |github: &str| {
        support::xtask_env(
            s.dir.path(),
            &[
                "vendor",
                "--recipe",
                recipe.to_str().unwrap(),
                "--mirror",
                mirror.to_str().unwrap(),
            ],
            &[
                ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
                ("ASSEMBLE_GITHUB_URL", github),
            ],
        )
        .ok()
    };
    let said = vendor(&server.base);
    let file = mirror.join(archive_path().trim_start_matches('/'));
    assert!(said.contains("Mirrored opencontainers"), "{said}");
    let first = fs_err::read(&file).unwrap();
    server.stop();
    // From the cache now: the same bytes.
    vendor("http://127.0.0.1:9");
    assert_eq!(fs_err::read(&file).unwrap(), first, "reproducible");

    // Only the mirror: no vendor/ copy, an empty cache, the server gone.
    fs_err::remove_dir_all(s.path("demo/vendor")).unwrap();
    let empty = fresh_cache(&s, "empty-cache");
    let out = s.path("out");
    let base = format!("file://{}", mirror.display());
    run(&s, &out, &base, &env(&empty, &[]), true).json();
    assert!(site(&out).join("opencontainers/digest/digest.py").is_file());
}
