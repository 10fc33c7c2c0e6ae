//! End-to-end tests of `cargo xtask assemble` on the demo: a real venv built
//! by pip from the package index, opencontainers' real sdist, the real
//! binary, and the output's own interpreter and scripts run.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::{
    Scratch, UV_VERSION, UV_WHEEL_SHA256, assert_same_tree, listing, python_xy, run, which,
};

const OUR_PACKAGES: [&str; 7] = [
    "authentik",
    "lifecycle",
    "guardian",
    "opencontainers",
    "django_channels_postgres",
    "django_dramatiq_postgres",
    "django_postgres_cache",
];

/// The demo's tree with third-party site-packages left out and the
/// machine's Python normalised: what the recipe itself decides.
fn recipe_listing(out: &std::path::Path) -> String {
    let xy = python_xy();
    let site = format!("lib/python{xy}/site-packages/");
    listing(out)
        .into_iter()
        .filter(|l| match l.strip_prefix(&site) {
            Some(rest) => OUR_PACKAGES
                .iter()
                .any(|p| rest.split([' ', '/']).next() == Some(p)),
            None => !l.starts_with("include/"),
        })
        .map(|l| {
            let l = l.replace(&format!("python{xy}"), "pythonX.Y");
            // Bytecode depends on the interpreter's version: its name and
            // bytes are normalised (the bytecode tests check them).
            if l.contains("__pycache__/") && l.contains(".pyc file ") {
                let path = l.split(' ').next().unwrap_or_default();
                let stem = path.split(".cpython-").next().unwrap_or(path);
                return format!("{stem}.<tag>.pyc file 644 <bytecode>");
            }
            if l.starts_with("bin/pythonX.Y link") {
                "bin/pythonX.Y link -> <interpreter>".to_string()
            } else if l.starts_with("pyvenv.cfg file") {
                "pyvenv.cfg file 644 <names the interpreter>".to_string()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn demo_assembles_runs_and_matches_the_checked_listing() {
    let s = Scratch::new();
    let out = s.path("out");
    let prefix = "/opt/authentik-demo";
    let report = s
        .assemble(&["--out", out.to_str().unwrap(), "--prefix", prefix, "--json"])
        .json();
    assert_eq!(report["output"], out.to_str().unwrap());
    assert!(report["files_written"].as_u64().unwrap() > 400, "{report}");
    for (name, u) in report["units"].as_object().unwrap() {
        assert_eq!(u["status"], "built", "unit {name}");
    }
    insta::assert_snapshot!("demo-tree", recipe_listing(&out));

    // A second run finds nothing to do.
    let again = s
        .assemble(&["--out", out.to_str().unwrap(), "--prefix", prefix, "--json"])
        .json();
    assert_eq!(again["files_written"], 0, "{again}");
    assert_eq!(again["files_removed"], 0, "{again}");
    for (name, u) in again["units"].as_object().unwrap() {
        assert_eq!(u["status"], "fresh", "unit {name}");
    }
}

#[test]
fn demo_runs_in_place() {
    let s = Scratch::new();
    let out = s.path("out");
    let run1 = s.assemble(&["--out", out.to_str().unwrap()]);
    assert!(run1.output.status.success(), "{}", run1.stderr());
    let last = run1.stderr().lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains(out.to_str().unwrap()),
        "last line names the output: {last}"
    );

    let (ok, base) = run(
        &out.join("bin/python"),
        &[
            "-c",
            "import authentik.root.settings as s; print(s.BASE_DIR)",
        ],
    );
    assert!(ok, "{base}");
    assert_eq!(base.trim(), out.to_str().unwrap());

    let (ok, v) = run(&out.join("bin/gunicorn"), &["--version"]);
    assert!(ok && v.contains("gunicorn"), "{v}");
    let (ok, v) = run(&out.join("bin/dumb-init"), &["--version"]);
    assert!(ok && v.contains("dumb-init"), "{v}");
    let (ok, v) = run(&out.join("bin/uvicorn"), &["--version"]);
    assert!(ok && v.contains("uvicorn"), "{v}");
    // psycopg's binary build: native libs found through its $ORIGIN runpath.
    let (ok, v) = run(
        &out.join("bin/python"),
        &["-c", "import psycopg; print(psycopg.pq.__impl__)"],
    );
    assert!(ok && v.trim() == "binary", "{v}");

    let ak = out.join("lifecycle/ak");
    let mode = fs_err::metadata(&ak).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "lifecycle/ak is executable: {mode:o}");
    let text = fs_err::read_to_string(&ak).unwrap();
    let bash = which("bash");
    assert!(
        text.starts_with(&format!("#!{}\n", bash.display())),
        "shebang is bash's path: {text}"
    );
    let (ok, v) = run(&ak, &["hello"]);
    assert!(ok && v.trim() == "ak hello", "{v}");

    // Every patch of the seed is applied; @webui@ stays without --webui.
    let site = out.join(format!("lib/python{}/site-packages", python_xy()));
    let yml = fs_err::read_to_string(site.join("authentik/lib/default.yml")).unwrap();
    assert!(
        yml.contains(&format!("blueprints_dir: {}/blueprints\n", out.display())),
        "{yml}"
    );
    let utils = fs_err::read_to_string(site.join("authentik/stages/email/utils.py")).unwrap();
    assert!(
        utils.contains(r#"Path("@webui@/icons/icon_left_brand.png")"#),
        "{utils}"
    );
    assert!(
        utils.contains(r#"Path("@webui@/dist/assets/icons/icon_left_brand.png")"#),
        "{utils}"
    );
    let mig = fs_err::read_to_string(
        site.join("authentik/rbac/migrations/0010_remove_role_group_alter_role_name.py"),
    )
    .unwrap();
    assert!(
        mig.contains(r#"("authentik_core", "0056_user_roles"),"#),
        "{mig}"
    );

    // Top-level links are relative, so the tree can move.
    assert_eq!(
        fs_err::read_link(out.join("lifecycle"))
            .unwrap()
            .to_str()
            .unwrap(),
        format!("lib/python{}/site-packages/lifecycle", python_xy())
    );
}

#[test]
fn webui_is_substituted_when_given() {
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&[
        "--out",
        out.to_str().unwrap(),
        "--webui",
        "/srv/webui",
        "--json",
    ])
    .json();
    let site = out.join(format!("lib/python{}/site-packages", python_xy()));
    let utils = fs_err::read_to_string(site.join("authentik/stages/email/utils.py")).unwrap();
    assert!(
        utils.contains(r#"Path("/srv/webui/icons/icon_left_brand.png")"#),
        "{utils}"
    );
    assert!(!utils.contains("@webui@"), "{utils}");
}

/// A Nix fixed-output venv has no bin/ and `@python@` in pyvenv.cfg; it must
/// give the same tree as the venv it was made from, dumb-init included
/// (which the seed silently loses).
#[test]
fn nix_fod_venv_assembles_to_the_same_tree() {
    let s = Scratch::new();
    // Build the demo once so its venv is in the shared cache.
    s.assemble(&["--out", s.path("warm").to_str().unwrap(), "--json"])
        .json();
    let venvs = support::shared_cache().join("venvs");
    let venv = fs_err::read_dir(&venvs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("pyvenv.cfg").is_file() && p.join("bin/dumb-init").is_file())
        .expect("the demo venv is cached");

    let normal = s.path("venv-normal");
    let fod = s.path("venv-fod");
    support::copy_dir(&venv, &normal);
    support::copy_dir(&venv, &fod);
    fs_err::remove_dir_all(fod.join("bin")).unwrap();
    let (ok, prefix) = run(
        &which("python3"),
        &["-c", "import sys; print(sys.base_prefix)"],
    );
    assert!(ok, "{prefix}");
    let cfg = fs_err::read_to_string(fod.join("pyvenv.cfg")).unwrap();
    let fod_cfg = cfg.replace(prefix.trim(), "@python@");
    assert!(fod_cfg.contains("@python@"), "{fod_cfg}");
    fs_err::write(fod.join("pyvenv.cfg"), fod_cfg).unwrap();

    let mut trees = Vec::new();
    for (venv, out) in [(&normal, "out-normal"), (&fod, "out-fod")] {
        let text = fs_err::read_to_string(s.recipe()).unwrap();
        let recipe = s.path(&format!("demo/{out}.toml"));
        // The demo with its venv unit's source replaced: that folder, with
        // nothing to leave out (uv did not install opencontainers).
        fs_err::write(
            &recipe,
            format!(
                "{text}\n[units.python-deps]\nvenv = \"{}\"\nexclude = []\n",
                venv.display()
            ),
        )
        .unwrap();
        let out = s.path(out);
        support::xtask(
            s.dir.path(),
            &[
                "assemble",
                "--recipe",
                recipe.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--prefix",
                "/opt/authentik",
                "--json",
            ],
        )
        .json();
        trees.push(listing(&out));
    }
    assert!(
        trees[1]
            .iter()
            .any(|l| l.starts_with("bin/dumb-init file 755"))
    );
    assert_same_tree(&trees[0], &trees[1], "normal venv vs Nix-FOD venv");
}

#[test]
fn prefix_build_moved_into_place_runs() {
    let s = Scratch::new();
    let stage = s.path("stage");
    let fin = s.path("final/authentik");
    s.assemble(&[
        "--out",
        stage.to_str().unwrap(),
        "--prefix",
        fin.to_str().unwrap(),
        "--json",
    ])
    .json();
    // Nothing in the staging tree points at the staging folder.
    let staged = Command::new(stage.join("bin/gunicorn"))
        .arg("--version")
        .output();
    assert!(
        staged.is_err() || !staged.as_ref().unwrap().status.success(),
        "the staged launcher must not run before the move"
    );
    fs_err::create_dir_all(fin.parent().unwrap()).unwrap();
    fs_err::rename(&stage, &fin).unwrap();
    let (ok, base) = run(
        &fin.join("bin/python"),
        &[
            "-c",
            "import authentik.root.settings as s; print(s.BASE_DIR)",
        ],
    );
    assert!(ok, "{base}");
    assert_eq!(base.trim(), fin.to_str().unwrap());
    let (ok, v) = run(&fin.join("bin/gunicorn"), &["--version"]);
    assert!(ok && v.contains("gunicorn"), "{v}");
    let (ok, v) = run(&fin.join("lifecycle/ak"), &["x"]);
    assert!(ok, "{v}");
}

/// Assembles the demo into `out`, then runs a broken variant against the same
/// output and checks it fails with `code` and leaves the tree as it was.
fn fails_and_keeps_output(s: &Scratch, code: i32, break_it: impl FnOnce(&Scratch)) -> String {
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let before = listing(&out);
    let state_before = fs_err::read(s.state_of(&out).join("state.bin")).unwrap();
    break_it(s);
    let err = s.assemble(&["--out", out.to_str().unwrap()]).fails(code);
    assert_same_tree(&before, &listing(&out), "output after a failed run");
    assert_eq!(
        state_before,
        fs_err::read(s.state_of(&out).join("state.bin")).unwrap(),
        "a failed run records nothing"
    );
    err
}

#[test]
fn missing_path_names_unit_and_key() {
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 1, |s| {
        s.edit_recipe(|t| t.replace("path = \"authentik\"", "path = \"authentk\""))
    });
    assert!(err.contains("unit authentik"), "{err}");
    assert!(err.contains("units.authentik.path"), "{err}");
    assert!(err.contains("authentk"), "{err}");
}

#[test]
fn toml_syntax_error_has_file_line_col() {
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 2, |s| {
        s.edit_base(|t| t.replace("version = \"2026.2.0\"", "version = \"2026.2.0"))
    });
    // In the file the demo extends, where the mistake is.
    let text = fs_err::read_to_string(s.base()).unwrap();
    let line = text.lines().position(|l| l.starts_with("version")).unwrap() + 1;
    assert!(
        err.contains(&format!("{}:{line}:", s.base().display())),
        "names file:line:col: {err}"
    );
}

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 2, |s| {
        s.edit_base(|t| t.replacen("executable = [", "executabel = [", 1))
    });
    assert!(err.contains("unknown key `executabel`"), "{err}");
    assert!(err.contains("did you mean `executable`"), "{err}");
    assert!(err.contains("[units.authentik]"), "{err}");
}

#[test]
fn interpreter_not_found_is_clear() {
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 1, |s| {
        s.edit_recipe(|t| t.replace("interpreter = \"python3\"", "interpreter = \"python3.99\""))
    });
    // The headline names the recipe's line; three lines in all: what was
    // asked, where it looked in short, how to name one.
    let said = error_lines(&err);
    assert!(
        said[0].contains("[python] interpreter at ")
            && said[0].contains("demo/assemble.toml:")
            && said[0].contains("python interpreter `python3.99` not found"),
        "{err}"
    );
    assert!(said.len() <= 3, "at most three lines: {said:#?}");
    let path = std::env::var("PATH").unwrap();
    assert!(!err.contains(&path), "the whole PATH only under -v: {err}");
    assert!(err.contains("--python NAME"), "{err}");
    assert!(err.contains("--python PATH"), "{err}");
    // Under -v, every folder it looked in.
    let verbose = s.assemble(&["-v"]).fails(1);
    assert!(verbose.contains(&format!("on PATH ({path})")), "{verbose}");
}

/// The lines from `error:` on: what a failure says, without the status
/// lines before it.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .collect()
}

/// `--python` (or ASSEMBLE_PYTHON) names the interpreter when the recipe's
/// is not on this machine; a named one that is not executable is said.
#[test]
fn python_flag_and_variable_name_the_interpreter() {
    let s = Scratch::new();
    s.edit_recipe(|t| t.replace("interpreter = \"python3\"", "interpreter = \"python3.99\""));
    let python = which("python3");
    let out = s.path("out");
    // One prefix, so that the two trees can be compared.
    let flag = s.assemble(&[
        "--out",
        out.to_str().unwrap(),
        "--prefix",
        "/opt/authentik",
        "--python",
        python.to_str().unwrap(),
    ]);
    flag.ok();
    let by_flag = listing(&out);
    let (ok, msg) = run(
        &out.join("bin/python"),
        &["-c", "import sys; print(sys.version)"],
    );
    assert!(ok, "{msg}");
    let out2 = s.path("out2");
    support::assemble_into(
        s.dir.path(),
        &s.recipe(),
        &out2,
        &["--prefix", "/opt/authentik"],
        &[("ASSEMBLE_PYTHON", python.to_str().unwrap())],
    )
    .ok();
    assert_same_tree(&by_flag, &listing(&out2), "--python and ASSEMBLE_PYTHON");
    let err = s
        .assemble(&[
            "--out",
            out.to_str().unwrap(),
            "--python",
            "/nonexistent/python",
        ])
        .fails(1);
    assert!(
        err.contains("--python: python interpreter `/nonexistent/python` not found"),
        "{err}"
    );
    assert!(
        err.contains("at /nonexistent/python, which is not an executable file"),
        "{err}"
    );
    assert!(
        !err.contains("[python] interpreter"),
        "not the recipe's: {err}"
    );
    // A name is looked up on PATH, as uv reads --python: the one found
    // builds the same tree as its path.
    let by_name = s.path("by-name");
    s.assemble(&[
        "--out",
        by_name.to_str().unwrap(),
        "--prefix",
        "/opt/authentik",
        "--python",
        "python3",
    ])
    .ok();
    assert_same_tree(&by_flag, &listing(&by_name), "--python NAME and PATH");
    let err = s.assemble(&["--python", "python3.99"]).fails(1);
    let said = error_lines(&err);
    assert!(
        said[0] == "error: --python: python interpreter `python3.99` not found",
        "the flag, not the recipe, asked: {err}"
    );
    assert!(said.len() <= 3, "{said:#?}");
}

#[test]
fn pattern_not_found_shows_the_closest_line() {
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 1, |s| {
        let settings = s.path("demo/authentik/authentik/root/settings.py");
        let text = fs_err::read_to_string(&settings).unwrap();
        fs_err::write(
            &settings,
            text.replace(".absolute().parent", ".resolve().parent"),
        )
        .unwrap();
    });
    assert!(
        err.contains("unit authentik: patch 1 did not match"),
        "{err}"
    );
    assert!(err.contains("authentik/root/settings.py"), "{err}");
    assert!(
        err.contains("5 | BASE_DIR = Path(__file__).resolve().parent.parent.parent"),
        "shows the closest line with its number: {err}"
    );
}

#[test]
fn two_units_writing_one_path_is_an_error_naming_both() {
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 1, |s| {
        s.edit_base(|t| {
            t.replace(
                "install = { \"guardian\" = \"@site@/guardian\" }",
                "install = { \"guardian\" = \"@site@/opencontainers\" }",
            )
        })
    });
    assert!(err.contains("produced by two units"), "{err}");
    assert!(
        err.contains("opencontainers") && err.contains("ak-guardian"),
        "{err}"
    );
}

#[test]
fn refuses_an_output_it_does_not_own() {
    let s = Scratch::new();
    let home = s.path("home");
    fs_err::create_dir_all(&home).unwrap();
    fs_err::write(home.join("notes.txt"), "mine").unwrap();
    let err = s.assemble(&["--out", home.to_str().unwrap()]).fails(1);
    assert!(err.contains("refusing to write into"), "{err}");
    // The dry run says the same, rather than offering to delete it all.
    let err = s.run("plan", &["--out", home.to_str().unwrap()]).fails(1);
    assert!(err.contains("refusing to write into"), "{err}");
    assert_eq!(
        listing(&home),
        vec![format!("notes.txt file 644 {}", sha("mine"))]
    );
}

#[test]
fn edits_are_picked_up_and_stale_files_removed() {
    let s = Scratch::new();
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    fs_err::write(s.path("demo/authentik/blueprints/new.yaml"), "version: 1\n").unwrap();
    fs_err::remove_file(s.path("demo/authentik/blueprints/schema.json")).unwrap();
    let r = s
        .assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(r["files_written"], 1, "{r}");
    assert_eq!(r["files_removed"], 1, "{r}");
    assert_eq!(r["units"]["authentik"]["status"], "built");
    assert_eq!(r["units"]["python-deps"]["status"], "fresh");
    assert!(out.join("blueprints/new.yaml").is_file());
    assert!(!out.join("blueprints/schema.json").exists());

    // The incremental result equals a clean build of the same inputs.
    let clean = s.path("clean");
    s.assemble(&[
        "--out",
        clean.to_str().unwrap(),
        "--prefix",
        out.to_str().unwrap(),
        "--json",
    ])
    .json();
    assert_same_tree(&listing(&out), &listing(&clean), "incremental vs clean");
}

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Regression: the lock (and with it `.assemble/`) used to be taken before
/// planning, so a first build that failed left a stray output folder.
#[test]
fn failed_first_build_leaves_no_output() {
    let s = Scratch::new();
    s.edit_recipe(|t| t.replace("path = \"authentik\"", "path = \"missing\""));
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap()]).fails(1);
    assert!(!out.exists(), "nothing written for a run that failed");
}

/// Guards item 8 of the confinement issue: a file in one unit and a path
/// beneath it in another were found only while applying, with half the
/// changes made. Now the plan refuses it and the output stays as it was.
#[test]
fn a_path_beneath_another_units_file_fails_before_writing() {
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 1, |s| {
        s.edit_base(|t| {
            t.replace(
                "install = { \"guardian\" = \"@site@/guardian\" }",
                "install = { \"guardian\" = \"manage.py/guardian\" }",
            )
        })
    });
    // Whichever unit is planned first, both are named.
    assert!(err.contains("manage.py"), "{err}");
    assert!(
        err.contains("ak-guardian") && err.contains("authentik"),
        "{err}"
    );
}

/// Guards item 9: an input whose name is not UTF-8 is refused, naming the
/// unit and the path.
#[test]
fn an_input_name_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    let err = fails_and_keeps_output(&s, 1, |s| {
        let odd = s
            .path("demo/authentik/authentik")
            .join(std::ffi::OsStr::from_bytes(b"bad\xffname.py"));
        fs_err::write(odd, "x = 1\n").unwrap();
    });
    assert!(err.contains("unit authentik"), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");
}

/// Guards item 6: a prefix that launchers and patched Python cannot carry
/// is refused with exit 2, before anything is written.
#[test]
fn a_prefix_with_a_quote_is_refused() {
    let s = Scratch::new();
    for prefix in ["/opt/a\"b", "/opt/a'b", "/opt/a\\b"] {
        let err = s
            .assemble(&["--out", s.path("out").to_str().unwrap(), "--prefix", prefix])
            .fails(2);
        assert!(err.contains("cannot carry"), "{err}");
        assert!(!s.path("out").exists());
    }
}

/// Guards the state's place: a state or cache folder inside the output (or
/// holding it) would be removed as strays, and anyone who can write the
/// output could forge the state. Refused with exit 2, nothing written.
#[test]
fn state_or_cache_inside_the_output_is_refused() {
    let s = Scratch::new();
    let out = s.path("out");
    for flag in ["--state-dir", "--cache-dir"] {
        for dir in [out.join("x"), s.path("")] {
            let err = s
                .assemble(&["--out", out.to_str().unwrap(), flag, dir.to_str().unwrap()])
                .fails(2);
            assert!(err.contains("overlap"), "{err}");
            assert!(!out.exists());
        }
    }
}

/// An interpreter that is not on PATH but among the installations uv
/// manages is found through `uv python find` (with the recipe's uv,
/// bootstrapped already; nothing downloaded). Without it there, the error
/// says where it looked, PATH and uv's answer.
#[test]
fn an_interpreter_uv_manages_is_found_through_uv_python_find() {
    let s = Scratch::new();
    let python = assemble_install::probe("python3").unwrap();
    let name = format!("python{}.{}", python.major, python.minor);
    s.edit_recipe(|t| {
        t.replace(
            "interpreter = \"python3\"",
            &format!("interpreter = \"{name}\""),
        )
    });
    // uv's layout of a managed CPython, holding this machine's interpreter.
    let managed = s.path("uv-pythons");
    let bin = managed.join(format!(
        "cpython-{}-linux-x86_64-gnu/bin",
        python.full_version
    ));
    fs_err::create_dir_all(&bin).unwrap();
    fs_err::os::unix::fs::symlink(&python.executable, bin.join(&name)).unwrap();
    fs_err::os::unix::fs::symlink(&name, bin.join("python3")).unwrap();
    // PATH has bash and nothing else.
    let path = s.path("path");
    fs_err::create_dir_all(&path).unwrap();
    fs_err::os::unix::fs::symlink(which("bash"), path.join("bash")).unwrap();
    support::shared_uv();
    let plan = |install_dir: &std::path::Path| {
        let out = s.path("out");
        support::xtask_env(
            s.dir.path(),
            &[
                "plan",
                "--recipe",
                s.recipe().to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--json",
                // Where it looked, in full.
                "-v",
            ],
            &[
                ("PATH", path.to_str().unwrap()),
                ("UV_PYTHON_INSTALL_DIR", install_dir.to_str().unwrap()),
            ],
        )
    };
    let report = plan(&managed).json();
    assert_eq!(
        report["interpreter"]["version"], python.full_version,
        "{report}"
    );

    let err = plan(&s.path("no-pythons")).fails(1);
    assert!(
        err.contains(&format!("python interpreter `{name}` not found")),
        "{err}"
    );
    // uv is at hand: the hint says how to get the interpreter with it.
    assert!(
        err.contains(&format!(
            "python install {}.{}`",
            python.major, python.minor
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("on PATH ({})", path.display())),
        "{err}"
    );
    assert!(err.contains(&format!("python find {name}`")), "{err}");
    assert!(err.contains("--python PATH"), "{err}");
}

/// Guards the venv unit against the installer's bookkeeping: uv leaves a
/// `.lock`, a `.gitignore` of `*` and a `CACHEDIR.TAG` at a venv's root,
/// and they were copied to the output's root (where CACHEDIR.TAG makes
/// `tar --exclude-caches` and backup tools skip the whole tree). The same
/// names deeper in the venv are the packages' own, and stay.
#[test]
fn installer_bookkeeping_at_the_venv_root_is_not_in_the_tree() {
    let s = Scratch::new();
    let python = which("python3");
    let venv = s.path("v");
    let (ok, msg) = run(
        &python,
        &["-m", "venv", "--without-pip", venv.to_str().unwrap()],
    );
    assert!(ok, "{msg}");
    let site = fs_err::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages/pkg");
    fs_err::create_dir_all(&site).unwrap();
    for dir in [venv.as_path(), site.as_path()] {
        fs_err::write(dir.join(".lock"), "").unwrap();
        fs_err::write(dir.join(".gitignore"), "*\n").unwrap();
        fs_err::write(
            dir.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n",
        )
        .unwrap();
    }
    let recipe = s.path("venv-only.toml");
    fs_err::write(
        &recipe,
        "[package]\nname = \"venv-only\"\nversion = \"1\"\n[python]\ninterpreter = \"python3\"\n[units.deps]\nvenv = \"v\"\nscripts = []\n",
    )
    .unwrap();
    let out = s.path("out");
    support::assemble_into(s.dir.path(), &recipe, &out, &[], &[]).ok();
    let tree = listing(&out);
    let at_root: Vec<&String> = tree
        .iter()
        .filter(|l| {
            [".lock ", ".gitignore ", "CACHEDIR.TAG "]
                .iter()
                .any(|n| l.starts_with(n))
        })
        .collect();
    assert!(at_root.is_empty(), "{at_root:?}");
    let deeper = tree
        .iter()
        .filter(|l| l.contains("site-packages/pkg/"))
        .count();
    assert_eq!(deeper, 3, "the package's own files stay: {tree:?}");
    assert!(
        tree.iter().any(|l| l.starts_with("pyvenv.cfg ")),
        "{tree:?}"
    );
}

/// Overlaps with the venv are declared, not fatal: a unit that provides a
/// package the venv also has (as the seed installs opencontainers from its
/// own source) is refused with the way out named, and with the venv's
/// `exclude` the unit's copy is the only one: none of the venv's files,
/// folders or `.dist-info` of it are left.
#[test]
fn a_package_another_unit_provides_is_excluded_from_the_venv() {
    let s = Scratch::new();
    let ours = s.path("ours/h11");
    fs_err::create_dir_all(&ours).unwrap();
    fs_err::write(ours.join("__init__.py"), "WHO = 'ours'\n").unwrap();
    s.edit_recipe(|t| {
        format!(
            "{t}\n[units.our-h11]\npath = \"../ours\"\ninstall = {{ \"h11\" = \"@site@/h11\" }}\n"
        )
    });
    let out = s.path("out");
    let err = s.assemble(&["--out", out.to_str().unwrap()]).fails(1);
    assert!(err.contains("produced by two units"), "{err}");
    assert!(
        err.contains(r#"`exclude = ["opencontainers", "h11"]` in [units.python-deps]"#),
        "names the way out: {err}"
    );

    s.edit_base(|t| {
        t.replace(
            r#"exclude = ["opencontainers"]"#,
            r#"exclude = ["opencontainers", "h11"]"#,
        )
    });
    s.assemble(&["--out", out.to_str().unwrap()]).ok();
    let site = format!("lib/python{}/site-packages/", python_xy());
    let h11: Vec<String> = listing(&out)
        .into_iter()
        .filter_map(|l| l.strip_prefix(&site).map(str::to_string))
        .filter(|l| l.starts_with("h11") && !l.contains("__pycache__"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(h11, ["h11", "h11/__init__.py"], "only our copy");
    let (ok, who) = run(
        &out.join("bin/python"),
        &["-c", "import h11; print(h11.WHO)"],
    );
    assert!(ok && who.trim() == "ours", "{who}");

    // A name the venv does not have is a recipe error at its position.
    s.edit_base(|t| t.replace(r#""h11"]"#, r#""h12"]"#));
    let err = s.assemble(&["--out", out.to_str().unwrap()]).fails(2);
    assert!(
        err.contains("`exclude` names h12, which") && err.contains("uv.lock does not have"),
        "{err}"
    );
    assert!(err.contains("did you mean `h11`?"), "{err}");
    let text = fs_err::read_to_string(s.base()).unwrap();
    let line = text.lines().position(|l| l.contains("\"h12\"")).unwrap() + 1;
    let at = format!("{}:{line}:", s.base().display());
    assert!(err.contains(&at), "{err}");
}

/// A `uv` on PATH that fails, leaving a mark, if anything runs it.
fn decoy_uv(s: &Scratch) -> (std::path::PathBuf, String) {
    decoys(s, &["uv"])
}

/// Programs named `names` in a folder first on PATH, each failing and
/// leaving a mark if anything runs it. Returns the mark and that PATH.
fn decoys(s: &Scratch, names: &[&str]) -> (std::path::PathBuf, String) {
    let bin = s.path("decoy-bin");
    fs_err::create_dir_all(&bin).unwrap();
    let mark = s.path("decoy-ran");
    for name in names {
        fs_err::write(
            bin.join(name),
            format!("#!/bin/sh\necho {name} >> '{}'\nexit 1\n", mark.display()),
        )
        .unwrap();
        fs_err::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (mark, path)
}

/// Guards "one installer, the recipe's": the venv was built with uv when
/// one happened to be on PATH (444 paths, against 759 with pip). The demo
/// built twice, into caches of its own (sharing only the bootstrapped uv),
/// once with a pip and a uv first on PATH and once with neither: the
/// pinned uv builds both venvs, nothing on PATH runs, the trees are equal.
#[test]
fn the_same_recipe_gives_the_same_tree_whatever_is_on_path() {
    let s = Scratch::new();
    let (mark, decoyed) = decoys(&s, &["uv", "pip", "pip3"]);
    let python = support::real_python();
    let recipe = s.recipe();
    let assemble = |name: &str, path: &str| {
        let out = s.path(name);
        let cache = support::cache_sharing_uv(s.dir.path(), &format!("{name}-cache"));
        let env = [
            ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
            ("PATH", path),
        ];
        let extra = [
            "--prefix",
            "/opt/authentik",
            "--json",
            "--python",
            python.to_str().unwrap(),
        ];
        let report = support::assemble_into(s.dir.path(), &recipe, &out, &extra, &env).json();
        let synced = fs_err::read_dir(cache.join("venvs"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().join("pyvenv.cfg").is_file())
            .count();
        assert_eq!(synced, 1, "each cache syncs its own venv");
        (listing(&out), report)
    };
    let (with_decoys, report) = assemble("out1", &decoyed);
    assert!(
        !mark.exists(),
        "ran from PATH: {:?}",
        fs_err::read_to_string(&mark)
    );
    assert_eq!(report["installer"], format!("uv {UV_VERSION}"), "{report}");
    let (without, _) = assemble("out2", "/usr/bin:/bin");
    assert_same_tree(
        &with_decoys,
        &without,
        "with and without a pip and a uv on PATH",
    );
}

/// `[python] installer = "uv==X"` bootstraps that uv from its wheel
/// (through pip, checked by sha256) and builds the venv with it; a wheel
/// that matches no pinned hash is refused, naming both.
#[test]
fn the_pinned_uv_is_bootstrapped_and_builds_the_venv() {
    let s = Scratch::new();
    let (mark, path) = decoy_uv(&s);
    let cache = s.path("own-cache");
    let out = s.path("out");
    let recipe = s.recipe();
    let assemble = |env: &[(&str, &str)]| {
        support::assemble_into(s.dir.path(), &recipe, &out, &["--json"], env)
    };
    let env = [
        ("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap()),
        ("PATH", path.as_str()),
    ];
    let zeros = "0".repeat(64);
    s.edit_recipe(|t| {
        t.replace(
            "interpreter = \"python3\"",
            &format!("interpreter = \"python3\"\ninstaller = \"uv=={UV_VERSION}\"\ninstaller-sha256 = [\"{zeros}\"]"),
        )
    });
    let err = assemble(&env).fails(1);
    assert!(
        err.contains(&format!("uv's wheel has sha256 {UV_WHEEL_SHA256}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("none of [python] installer-sha256 ({zeros})")),
        "{err}"
    );
    assert!(!out.exists(), "a refused run leaves no output");

    s.edit_recipe(|t| t.replace(&zeros, UV_WHEEL_SHA256));
    let report = assemble(&env).json();
    assert_eq!(report["installer"], format!("uv {UV_VERSION}"), "{report}");
    assert!(cache.join(format!("tools/uv-{UV_VERSION}/uv")).is_file());
    assert!(!mark.exists(), "the uv on PATH was run");
    let (ok, msg) = run(&out.join("bin/gunicorn"), &["--version"]);
    assert!(ok && msg.contains("gunicorn"), "{msg}");
    // uv's bookkeeping at the venv root stays out of the tree.
    let tree = listing(&out);
    assert!(
        !tree.iter().any(|l| l.starts_with("CACHEDIR.TAG ")),
        "{tree:?}"
    );
}

/// The venv of a uv project, synced from its lock with the pinned uv, as
/// authentik's image does: dependencies only (not the project, not its
/// workspace members, not what `exclude` names), which the other units
/// provide as the seed does. The installer runs again only when what
/// decides the venv changes (uv.lock, the interpreter, uv's version), not
/// for an edit of the sources.
#[test]
fn a_uv_project_venv_is_synced_from_its_lock() {
    let s = Scratch::new();
    let python = assemble_install::probe("python3").unwrap();
    let uv = support::shared_uv();
    let proj = s.path("proj");
    let files: &[(&str, &str)] = &[
        (
            "pyproject.toml",
            "[project]\nname = \"app\"\nversion = \"0\"\nrequires-python = \">=3.9\"\ndependencies = [\"six==1.17.0\", \"typing-extensions==4.16.0\", \"member\"]\n\n[tool.uv.workspace]\nmembers = [\"packages/member\"]\n\n[tool.uv.sources]\nmember = { workspace = true }\n",
        ),
        ("app/__init__.py", "WHO = 'app'\n"),
        (
            "packages/member/pyproject.toml",
            "[project]\nname = \"member\"\nversion = \"0\"\nrequires-python = \">=3.9\"\ndependencies = []\n\n[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n",
        ),
        ("packages/member/member/__init__.py", "WHO = 'member'\n"),
    ];
    for (p, c) in files {
        let p = proj.join(p);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(p, c).unwrap();
    }
    let lock = Command::new(&uv)
        .args(["lock", "--no-config", "--python"])
        .arg(&python.executable)
        .current_dir(&proj)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()
        .unwrap();
    assert!(
        lock.status.success(),
        "{}",
        String::from_utf8_lossy(&lock.stderr)
    );
    let recipe = s.path("uv-project.toml");
    fs_err::write(
        &recipe,
        format!(
            "[package]\nname = \"uvp\"\nversion = \"1\"\n[python]\ninterpreter = \"python3\"\ninstaller = \"uv=={UV_VERSION}\"\ninstaller-sha256 = [\"{UV_WHEEL_SHA256}\"]\n\n[units.app]\npath = \"proj\"\ninstall = {{ \"app\" = \"@site@/app\" }}\n\n[units.deps]\nuv-project = \"app:\"\nexclude = [\"typing-extensions\"]\nscripts = []\n\n[units.member]\nfrom = \"app:packages/member\"\ninstall = {{ \"member\" = \"@site@/member\" }}\n"
        ),
    )
    .unwrap();
    // The bootstrapped uv is shared; the venvs are this test's own.
    let cache = support::cache_sharing_uv(s.dir.path(), "own-cache");
    let out = s.path("out");
    let env = [("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())];
    let assemble = || support::assemble_into(s.dir.path(), &recipe, &out, &[], &env).ok();
    let synced = |err: &str| err.matches("syncing a virtualenv").count();
    assert_eq!(synced(&assemble()), 1, "the first run syncs");
    let py = out.join("bin/python");
    let (ok, msg) = run(
        &py,
        &["-c", "import six, app, member; print(app.WHO, member.WHO)"],
    );
    assert!(ok && msg.trim() == "app member", "{msg}");
    let (ok, _) = run(&py, &["-c", "import typing_extensions"]);
    assert!(!ok, "typing-extensions was excluded");
    let tree = listing(&out);
    assert!(
        !tree.iter().any(|l| l.contains("member-0.dist-info")
            || l.contains("member.pth ")
            || l.contains("__editable__")),
        "workspace members are not installed in the venv: {tree:?}"
    );
    // An edit of the project's sources: applied, nothing synced.
    fs_err::write(proj.join("app/__init__.py"), "WHO = 'edited'\n").unwrap();
    assert_eq!(synced(&assemble()), 0, "a source edit syncs nothing");
    let (_, msg) = run(&py, &["-c", "import app; print(app.WHO)"]);
    assert_eq!(msg.trim(), "edited");
    // The lock changed: synced again.
    let lock_file = proj.join("uv.lock");
    let text = fs_err::read_to_string(&lock_file).unwrap();
    fs_err::write(&lock_file, format!("{text}\n# touched\n")).unwrap();
    assert_eq!(synced(&assemble()), 1, "a changed uv.lock syncs again");

    // Another interpreter (this one copied into a venv of its own, so that
    // its path is another): synced again; the first one's is still cached.
    let other = s.path("other-python");
    let (ok, msg) = run(
        &python.executable,
        &[
            "-m",
            "venv",
            "--copies",
            "--without-pip",
            other.to_str().unwrap(),
        ],
    );
    assert!(ok, "{msg}");
    let other_python = other.join("bin/python3");
    let with_python = support::assemble_into(
        s.dir.path(),
        &recipe,
        &out,
        &["--python", other_python.to_str().unwrap()],
        &env,
    )
    .ok();
    assert_eq!(synced(&with_python), 1, "another interpreter syncs again");
    assert_eq!(
        synced(&assemble()),
        0,
        "the first interpreter's venv is cached"
    );

    // Another uv, bootstrapped from its own pinned wheel: synced again.
    support::edit(&recipe, |t| {
        t.replace(UV_VERSION, OTHER_UV_VERSION)
            .replace(UV_WHEEL_SHA256, OTHER_UV_WHEEL_SHA256)
    });
    assert_eq!(synced(&assemble()), 1, "another uv syncs again");
    assert!(
        cache
            .join(format!("tools/uv-{OTHER_UV_VERSION}/uv"))
            .is_file()
    );
}

/// An older uv, for the test that a uv version is part of the venv's key.
const OTHER_UV_VERSION: &str = "0.9.4";
/// `pip download --no-deps --only-binary :all: uv==0.9.4` on Linux x86_64.
const OTHER_UV_WHEEL_SHA256: &str =
    "d89f88df09d571f6d06228b32a6a71100905eb64343247317d363bcd774ee870";

/// `[python] compile-bytecode` (on in the authentik recipe, so in the
/// demo): every `.py` of the tree has a `.pyc` the interpreter takes as
/// it is (an import writes nothing, and loads code objects from the
/// tree's pycs); a one-file edit compiles exactly that file; a deleted
/// pyc is drift the next run restores; a source that does not compile
/// is a warning naming it, not a failed build.
#[test]
fn bytecode_is_compiled_for_every_source_once() {
    let s = Scratch::new();
    let out = s.path("out");
    let assemble = || s.assemble(&["--out", out.to_str().unwrap(), "--json"]);
    let report = assemble().json();
    let tree = listing(&out);
    let sources: Vec<&str> = tree
        .iter()
        .filter_map(|l| l.strip_suffix("").and_then(|l| l.split(' ').next()))
        .filter(|p| p.ends_with(".py"))
        .collect();
    let tag = {
        let (ok, tag) = run(
            &out.join("bin/python"),
            &["-c", "import sys; print(sys.implementation.cache_tag)"],
        );
        assert!(ok, "{tag}");
        tag.trim().to_string()
    };
    for src in &sources {
        let (dir, name) = src.rsplit_once('/').unwrap_or(("", src));
        let pyc = out
            .join(dir)
            .join("__pycache__")
            .join(format!("{}.{tag}.pyc", name.trim_end_matches(".py")));
        assert!(pyc.is_file(), "no pyc for {src}");
    }
    let b = &report["bytecode"];
    assert_eq!(
        b["compiled"].as_u64().unwrap() + b["cached"].as_u64().unwrap(),
        sources.len() as u64,
        "{b}"
    );
    assert_eq!(b["failed"], 0, "{b}");

    // Imported as they are: nothing written, code objects from the tree.
    let imports = "import authentik.root.settings, authentik.lib, guardian, django_channels_postgres, django_dramatiq_postgres, django_postgres_cache, opencontainers, gunicorn.app.base, psycopg, uvicorn.main, dramatiq";
    let (ok, verbose) = run(&out.join("bin/python"), &["-v", "-c", imports]);
    assert!(ok, "{verbose}");
    let site = format!("{}/lib/python{}/site-packages", out.display(), python_xy());
    for module in [
        "authentik/root/settings",
        "guardian/__init__",
        "gunicorn/app/base",
    ] {
        let (dir, name) = module.rsplit_once('/').unwrap();
        let from = format!("code object from '{site}/{dir}/__pycache__/{name}.{tag}.pyc'");
        assert!(
            verbose.contains(&from),
            "{module}: {from} not in\n{verbose}"
        );
    }
    assert_same_tree(&tree, &listing(&out), "the tree after an import");

    // One source edited: exactly it is compiled again.
    let file = s.path("demo/authentik/authentik/lib/__init__.py");
    fs_err::write(&file, format!("EDITED = {:?}\n", s.dir.path())).unwrap();
    let report = assemble().json();
    assert_eq!(report["bytecode"]["compiled"], 1, "{}", report["bytecode"]);
    assert_eq!(report["files_written"], 2, "the source and its pyc");

    // A deleted pyc is restored.
    let pyc = out.join(format!(
        "lib/python{}/site-packages/authentik/lib/__pycache__/__init__.{tag}.pyc",
        python_xy()
    ));
    let bytes = fs_err::read(&pyc).unwrap();
    fs_err::remove_file(&pyc).unwrap();
    let report = assemble().json();
    assert_eq!(report["files_written"], 1, "{report}");
    assert_eq!(fs_err::read(&pyc).unwrap(), bytes);

    // A source that does not compile: a warning naming it, no pyc.
    let broken = s.path("demo/authentik/authentik/broken.py");
    fs_err::write(&broken, "def (:\n").unwrap();
    for _ in 0..2 {
        let report = assemble().json();
        let warnings = report["warnings"].to_string();
        assert!(
            warnings.contains("authentik/broken.py does not compile (SyntaxError"),
            "{warnings}"
        );
        assert_eq!(report["bytecode"]["failed"], 1);
        assert_eq!(
            report["bytecode"]["compiled"], 0,
            "remembered, not compiled again"
        );
    }
    let site = out.join(format!("lib/python{}/site-packages/authentik", python_xy()));
    assert!(site.join("broken.py").is_file());
    assert!(!site.join(format!("__pycache__/broken.{tag}.pyc")).exists());
}

/// Guards a source whose pyc's name would not fit a file system (issue 20,
/// item 6): it gets no pyc, as CPython writes none, and a warning naming
/// it; the build succeeds (it failed naming the derived pyc, with no fix).
#[test]
fn a_source_whose_pyc_name_is_too_long_gets_none_and_a_warning() {
    let s = Scratch::new();
    let name = format!("{}.py", "n".repeat(245));
    fs_err::write(s.path("demo/authentik/authentik").join(&name), "X = 1\n").unwrap();
    let out = s.path("out");
    let r = s
        .assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let warned = r["warnings"].to_string();
    assert!(
        warned.contains(&name) && warned.contains("has no .pyc"),
        "{warned}"
    );
    let pkg = out.join(format!("lib/python{}/site-packages/authentik", python_xy()));
    assert!(pkg.join(&name).is_file());
    let pycs: Vec<_> = fs_err::read_dir(pkg.join("__pycache__"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nnnn"))
        .collect();
    assert!(pycs.is_empty(), "{pycs:?}");
}
