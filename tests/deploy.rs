//! Getting a tree to where it runs, and checking it there: an output is
//! found by its path alone, from anywhere; a tree moved or copied anywhere
//! is verified against its NAR hash, with no state.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

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

/// Two deploys and a rollback of the demo into a prefix, in the sandbox
/// (deploy removes, so a wrong path could reach what is not its own):
/// `PREFIX` is a link switched by a rename; after each switch
/// `PREFIX/bin/gunicorn --version` runs; a process started before a switch
/// keeps reading the generation it started in; the files the edit left
/// alone are the same inodes in both generations; a `PREFIX` that is a
/// folder of someone else's is refused; a build that fails changes nothing;
/// `--keep 1` removes the others; and
/// nothing outside `PREFIX` and `PREFIX.generations` changes.
#[test]
fn deploy_switches_generations_atomically_and_rolls_back() {
    // Bootstrapped outside: the sandbox reads the shared cache only.
    support::shared_uv();
    if !support::sandbox::sandboxed("deploy::deploy_switches_generations_atomically_and_rolls_back")
    {
        return;
    }
    let s = Scratch::new();
    let cache = support::cache_sharing_uv(s.dir.path(), "cache");
    // uv keeps its cache in HOME and its locks in TMPDIR: both in the
    // test's folder.
    let (home, tmp) = (s.path("home"), s.path("tmp"));
    fs_err::create_dir_all(&home).unwrap();
    fs_err::create_dir_all(&tmp).unwrap();
    for d in ["/box/srv/taken", "/box/outside"] {
        fs_err::create_dir_all(d).unwrap();
    }
    fs_err::write("/box/srv/sibling", "s").unwrap();
    fs_err::write("/box/srv/taken/precious", "p").unwrap();
    fs_err::write("/box/outside/keep", "k").unwrap();
    std::os::unix::fs::symlink("/box/outside", "/box/srv/out-link").unwrap();
    let (prefix, gens) = ("/box/srv/authentik", "/box/srv/authentik.generations");
    let skip = [s.dir.path(), Path::new(prefix), Path::new(gens)];
    let before = support::sandbox::snapshot(&skip);
    let env = [
        ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
        ("HOME", home.to_str().unwrap()),
        ("TMPDIR", tmp.to_str().unwrap()),
    ];
    let recipe = s.recipe();
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "deploy",
            "--recipe",
            recipe.to_str().unwrap(),
            "--to",
            prefix,
        ];
        args.extend_from_slice(extra);
        support::xtask_env(s.dir.path(), &args, &env)
    };
    let link = || fs_err::read_link(prefix).unwrap();
    let gunicorn = || {
        let v = support::stdout_ok(Command::new(format!("{prefix}/bin/gunicorn")).arg("--version"));
        assert!(v.starts_with("gunicorn (version"), "{v}");
    };

    deploy(&[]).ok();
    assert_eq!(link(), Path::new("authentik.generations/1"));
    gunicorn();
    let manage = fs_err::read_to_string(format!("{prefix}/manage.py")).unwrap();

    // Started in generation 1: it holds manage.py open and its working
    // folder is generation 1's.
    let mut running = Command::new(format!("{prefix}/bin/python"))
        .args([
            "-c",
            "import sys\nf = open('manage.py')\nprint('ready', flush=True)\nsys.stdin.readline()\nprint(f.read() == open('manage.py').read() == sys.argv[1])",
            &manage,
        ])
        .current_dir(prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(running.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");

    let edited = s.path("demo/authentik/manage.py");
    fs_err::write(
        &edited,
        format!(
            "{}# deployed twice\n",
            fs_err::read_to_string(&edited).unwrap()
        ),
    )
    .unwrap();
    deploy(&[]).ok();
    assert_eq!(link(), Path::new("authentik.generations/2"));
    gunicorn();
    let now = fs_err::read_to_string(format!("{prefix}/manage.py")).unwrap();
    assert!(now.ends_with("# deployed twice\n"), "{now}");

    // The process still reads generation 1.
    writeln!(running.stdin.take().unwrap()).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line, "True\n",
        "the running process kept generation 1's files"
    );
    assert!(running.wait().unwrap().success());

    // Unchanged files are one inode in both generations; the edited one not.
    let ino = |g: u32, p: &str| fs_err::metadata(format!("{gens}/{g}/{p}")).unwrap().ino();
    for p in ["lifecycle/wait_for_db.py", "bin/gunicorn", "pyvenv.cfg"] {
        assert_eq!(ino(1, p), ino(2, p), "{p} is shared");
    }
    assert_ne!(ino(1, "manage.py"), ino(2, "manage.py"));

    let list = deploy(&["--list", "--json"]).json();
    let rows = list["generations"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(rows[1]["current"], true, "{list}");
    assert_ne!(rows[0]["nar_hash"], rows[1]["nar_hash"], "{list}");
    assert!(rows[0]["nar_hash"].as_str().unwrap().starts_with("sha256-"));

    deploy(&["--rollback"]).ok();
    assert_eq!(link(), Path::new("authentik.generations/1"));
    gunicorn();
    assert_eq!(
        fs_err::read_to_string(format!("{prefix}/manage.py")).unwrap(),
        manage
    );
    // Generation 2 hard-linked generation 1's files (which moved their
    // change time): export still reads it, each such file checked by its
    // content, and gives the NAR hash the list says.
    let nar = s.path("gen1.nar");
    let args = [
        "export",
        "--from",
        prefix,
        "--format",
        "nar",
        "--out",
        nar.to_str().unwrap(),
    ];
    support::xtask_env(s.dir.path(), &args, &env).ok();
    let sha = assemble_manifest::Sha256::of(&fs_err::read(&nar).unwrap());
    assert_eq!(
        assemble_nar::Hash(sha.0).to_sri(),
        rows[0]["nar_hash"].as_str().unwrap()
    );
    // A deployed prefix is verified through its link, from anywhere.
    let said = support::xtask_env(
        Path::new("/"),
        &["verify", "--out", prefix],
        &[("ASSEMBLE_STATE_DIR", s.path("state").to_str().unwrap())],
    )
    .ok();
    assert!(said.contains("Verified"), "{said}");
    // Nothing older than generation 1.
    let err = deploy(&["--rollback"]).fails(1);
    assert!(err.contains("nothing to roll back to"), "{err}");

    // A folder at the prefix is someone else's: refused, untouched.
    let err = support::xtask_env(
        s.dir.path(),
        &[
            "deploy",
            "--recipe",
            recipe.to_str().unwrap(),
            "--to",
            "/box/srv/taken",
        ],
        &env,
    )
    .fails(1);
    assert!(err.contains("is not a link deploy made"), "{err}");

    // A build that fails (a patch no longer matches) leaves the prefix and
    // the generations as they were.
    let listing = || {
        let mut names: Vec<String> = fs_err::read_dir(gens)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let had = listing();
    let settings = s.path("demo/authentik/authentik/root/settings.py");
    let original = fs_err::read_to_string(&settings).unwrap();
    fs_err::write(
        &settings,
        original.replace("BASE_DIR = Path", "BASE = Path"),
    )
    .unwrap();
    let err = deploy(&[]).fails(1);
    assert!(err.contains("patch 1"), "{err}");
    assert_eq!(link(), Path::new("authentik.generations/1"));
    assert_eq!(listing(), had, "no generation left behind");
    fs_err::write(&settings, original).unwrap();

    // A third deploy (the edited tree again, from generation 1), keeping one.
    let json = deploy(&["--keep", "1", "--json"]).json();
    assert_eq!(json["generation"], 3, "{json}");
    assert_eq!(json["removed"], serde_json::json!([1, 2]), "{json}");
    assert_eq!(listing(), [".deploy.lock", "3", "3.json"]);
    gunicorn();

    assert_eq!(
        support::sandbox::snapshot(&skip),
        before,
        "nothing outside the prefix and its generations changed"
    );
}

/// `deploy --to PREFIX` whose parent folder is missing: exit 1 before
/// anything is built, the error naming the folder and `mkdir -p`; deploy
/// makes PREFIX and its generations, never the machine's folders above.
/// Guards the bare `No such file or directory` it once said.
#[test]
fn deploy_into_a_missing_folder_says_to_make_it_and_makes_nothing() {
    let s = Scratch::new();
    let prefix = s.path("opt/authentik");
    let err = s
        .run("deploy", &["--to", prefix.to_str().unwrap()])
        .fails(1);
    let parent = s.path("opt");
    assert!(
        err.contains(&format!("{} does not exist", parent.display()))
            && err.contains(&format!("mkdir -p {}", parent.display())),
        "{err}"
    );
    assert!(!parent.exists(), "nothing made");
}
