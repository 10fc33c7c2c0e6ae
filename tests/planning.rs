//! Planning as a user meets it: recipe mistakes that only planning finds,
//! fingerprints that do not depend on how the recipe is spelled, and the
//! workspace rules that keep the crates' boundaries (checked on the source,
//! so that anyone can run them).

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;

use crate::support::{self, Scratch};

/// The `file:line:col` where `needle` first appears in `text`, 1-based.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in the recipe"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// Edits the authentik recipe the demo extends (`replace` -> `with`), plans
/// the demo, and checks that the run exits 2 with `message` at the
/// `file:line:col` of `at` in the file where it is written (the base): a
/// value's place is its token's, from its opening quote.
fn recipe_error(replace: &str, with: &str, at: &str, message: &str) {
    let s = Scratch::new();
    s.edit_base(|t| t.replacen(replace, with, 1));
    let text = fs_err::read_to_string(s.base()).unwrap();
    let (line, col) = position(&text, at);
    let out = s.path("out");
    for command in ["plan", "assemble"] {
        let err = s.run(command, &["--out", out.to_str().unwrap()]).fails(2);
        let location = format!("{}:{line}:{col}", s.base().display());
        assert!(
            err.contains(&location),
            "{command}: wants {location}:\n{err}"
        );
        assert!(
            err.contains(message),
            "{command}: wants {message:?}:\n{err}"
        );
        // With --json, the same place as data, in one object on stdout.
        let run = s.run(command, &["--out", out.to_str().unwrap(), "--json"]);
        run.fails(2);
        let e = crate::cli::failure(&run);
        assert_eq!(e["kind"], "recipe", "{e}");
        assert_eq!(e["file"], s.base().to_str().unwrap(), "{e}");
        assert_eq!(
            (e["line"].as_u64(), e["column"].as_u64()),
            (Some(line as u64), Some(col as u64)),
            "{e}"
        );
        assert!(e["message"].as_str().unwrap().contains(message), "{e}");
        assert_eq!(e["exit_code"], 2, "{e}");
    }
    assert!(!out.exists(), "a refused run leaves no output");
}

/// Guards: an output path's variable typo is a recipe error (exit 2 at its
/// position), not a failed assembly (it was exit 1 with no position).
#[test]
fn a_misspelt_variable_in_an_output_path_exits_2_at_its_position() {
    recipe_error(
        r#""authentik" = "@site@/authentik", "lifecycle""#,
        r#""authentik" = "@sit@/authentik", "lifecycle""#,
        "\"@sit@/authentik",
        "uses `@sit@`, which is not a variable",
    );
}

#[test]
fn an_unknown_variable_in_executable_exits_2_at_its_position() {
    recipe_error(
        r#"executable = ["@site@/lifecycle/ak"]"#,
        r#"executable = ["@prefix@/lifecycle/ak"]"#,
        "\"@prefix@/lifecycle/ak",
        "uses `@prefix@`, which is not a variable",
    );
}

#[test]
fn webui_in_an_output_path_without_webui_exits_2_at_its_position() {
    recipe_error(
        r#""blueprints" = "blueprints""#,
        r#""blueprints" = "@webui@/blueprints""#,
        "\"@webui@/blueprints",
        "pass --webui",
    );
}

#[test]
fn the_interpreter_as_a_script_name_exits_2_at_its_position() {
    recipe_error(
        r#"scripts = ["gunicorn","#,
        r#"scripts = ["python", "gunicorn","#,
        r#""python""#,
        "is not a script name",
    );
}

#[test]
fn a_script_no_distribution_provides_exits_2_at_its_position() {
    recipe_error(
        r#"scripts = ["gunicorn","#,
        r#"scripts = ["gunicron","#,
        r#""gunicron""#,
        "did you mean `gunicorn`?",
    );
}

#[test]
fn executable_naming_nothing_installed_exits_2_at_its_position() {
    recipe_error(
        r#"executable = ["@site@/lifecycle/ak"]"#,
        r#"executable = ["@site@/lifecycle/nope"]"#,
        "\"@site@/lifecycle/nope",
        "is not a file this unit installs",
    );
}

#[test]
fn a_patch_of_a_file_not_installed_exits_2_at_its_position() {
    recipe_error(
        r#"file = "@site@/lifecycle/ak""#,
        r#"file = "@site@/lifecycle/gone""#,
        "\"@site@/lifecycle/gone",
        "which is not a file this unit installs",
    );
}

#[test]
fn a_symlink_to_nothing_exits_2_at_its_position() {
    recipe_error(
        r#""authentik" = "@site@/authentik" }"#,
        r#""authentik" = "@site@/nowhere" }"#,
        "\"@site@/nowhere",
        "which nothing in the output provides",
    );
}

/// Units of a plan report (JSON) that are not fresh, with their reasons.
fn dirty_units(report: &serde_json::Value) -> Vec<String> {
    report["units"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, u)| u["status"] != "fresh" || !u["reasons"].as_array().unwrap().is_empty())
        .map(|(name, u)| format!("{name}: {}", u["reasons"]))
        .collect()
}

/// Guards the fingerprints: they are built from normalised values, so
/// spelling the recipe's path another way, or writing its mappings in
/// another order, changes nothing. (They were `Debug` strings of the paths
/// as joined: `./demo` and `demo` made every unit dirty.)
#[test]
fn fingerprints_do_not_depend_on_how_the_recipe_is_spelled() {
    let s = Scratch::new();
    let dir = s.dir.path();
    let plan = |recipe: &str| {
        support::xtask(dir, &["plan", "--json", "--recipe", recipe, "--out", "out"]).json()
    };
    support::xtask(
        dir,
        &["assemble", "--recipe", "demo/assemble.toml", "--out", "out"],
    )
    .ok();
    let absolute = s.recipe();
    for spelling in [
        "demo/assemble.toml",
        "./demo/assemble.toml",
        "demo/../demo/./assemble.toml",
        absolute.to_str().unwrap(),
    ] {
        let dirty = dirty_units(&plan(spelling));
        assert!(dirty.is_empty(), "--recipe {spelling}: {dirty:?}");
    }
    // The order mappings and links are written in does not matter...
    s.edit_base(|t| {
        t.replace(
            r#"symlinks = { "lifecycle" = "@site@/lifecycle", "authentik" = "@site@/authentik" }"#,
            r#"symlinks = { "authentik" = "@site@/authentik", "lifecycle" = "@site@/lifecycle" }"#,
        )
        .replace(
            r#"install = { "authentik" = "@site@/authentik", "lifecycle" = "@site@/lifecycle","#,
            r#"install = { "lifecycle" = "@site@/lifecycle", "authentik" = "@site@/authentik","#,
        )
    });
    let dirty = dirty_units(&plan("demo/assemble.toml"));
    assert!(dirty.is_empty(), "reordered mappings: {dirty:?}");
    // ...but a change of what they say does (the check can fail).
    s.edit_base(|t| t.replace(r#""manage.py" = "manage.py""#, r#""manage.py" = "run.py""#));
    let dirty = dirty_units(&plan("demo/assemble.toml"));
    assert!(
        dirty.len() == 1 && dirty[0].starts_with("authentik: ") && dirty[0].contains("install"),
        "{dirty:?}"
    );
}

/// Every `.rs` file of the workspace's crates and xtask, with its text.
fn sources() -> Vec<(String, String)> {
    let root = support::root();
    let mut v = Vec::new();
    for top in ["crates", "xtask"] {
        for e in walkdir::WalkDir::new(root.join(top)).sort_by_file_name() {
            let e = e.unwrap();
            if e.path().extension().is_some_and(|x| x == "rs") {
                let rel = e.path().strip_prefix(&root).unwrap().display().to_string();
                v.push((rel, fs_err::read_to_string(e.path()).unwrap()));
            }
        }
    }
    assert!(v.len() > 20, "found the sources: {}", v.len());
    v
}

/// Guards the file-system helpers' one home: no persisted key is made with
/// `DefaultHasher` (its output may change with any Rust release, which
/// would silently drop every cache), and the helpers written in
/// `assemble-fs` are not written again elsewhere.
#[test]
fn file_system_helpers_have_one_home_and_keys_are_stable() {
    let banned: &[(&str, &str)] = &[
        (
            "DefaultHasher",
            "not stable across Rust releases: use assemble_fs::StatCache::key or sha256",
        ),
        ("split_paths(", "PATH lookups are assemble_fs::find_program"),
        (
            ".persist(",
            "atomic replacement is assemble_fs::files (write_atomic, replace_with)",
        ),
        (
            "fn write_atomic",
            "atomic writes are assemble_fs::write_atomic",
        ),
        (
            "fn find_program",
            "PATH lookups are assemble_fs::find_program",
        ),
    ];
    let mut found = Vec::new();
    for (path, text) in sources() {
        if path.starts_with("crates/assemble-fs/") {
            continue;
        }
        for (what, why) in banned {
            if text.contains(what) {
                found.push(format!("{path}: `{what}`: {why}"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Guards "only the reconcile crate writes to the output", by the
/// dependency graph: the planner cannot reach the writer.
#[test]
fn the_planner_cannot_reach_the_writer() {
    let tree = support::stdout_ok(
        std::process::Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "--edges",
                "normal",
                "-p",
                "assemble-plan",
            ])
            .current_dir(support::root()),
    );
    assert!(tree.contains("assemble-manifest"), "{tree}");
    assert!(!tree.contains("assemble-reconcile"), "{tree}");
    assert!(!tree.contains("assemble-pipeline"), "{tree}");
    let manifest = Path::new(&support::root()).join("crates/assemble-plan/Cargo.toml");
    let text = fs_err::read_to_string(manifest).unwrap();
    assert!(!text.contains("assemble-reconcile"), "{text}");
}

/// The planner is a function of the recipe and the realised sources: it
/// reaches neither the fetcher nor the crate that runs installers and the
/// interpreter, nor the sources stage that drives them (it asks that stage
/// for what it needs made through `assemble_plan::Make`).
#[test]
fn the_planner_cannot_fetch_or_build() {
    let tree = cargo_tree(&["-p", "assemble-plan"]);
    for stage in ["assemble-fetch", "assemble-install", "assemble-sources"] {
        assert!(!tree.contains(stage), "{stage} in\n{tree}");
    }
    assert!(tree.contains("assemble-python"), "{tree}");
}

/// No crate below the command line draws on a terminal: they report
/// through `assemble_cache::Reporter`, which the CLI draws.
#[test]
fn only_the_command_line_draws() {
    let tree = cargo_tree(&["--workspace", "--invert", "indicatif", "--prefix", "none"]);
    let users: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("assemble-") || l.starts_with("xtask"))
        .collect();
    assert!(!users.is_empty(), "{tree}");
    assert!(users.iter().all(|l| l.starts_with("xtask")), "{tree}");
}

/// ARCHITECTURE.md's code map names every workspace crate and every
/// dependency between them, as the `Cargo.toml` files say.
#[test]
fn the_architecture_map_is_the_crate_graph() {
    let root = support::root();
    let doc = fs_err::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let block = doc
        .split_once("```text\nassemble-fs")
        .map(|(_, rest)| format!("assemble-fs{}", rest.split_once("```").unwrap().0))
        .expect("ARCHITECTURE.md: the crate map");
    let mut drawn: Vec<String> = block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, deps) = l.split_once('─').map_or((l, ""), |(n, d)| (n, d));
            let mut deps: Vec<&str> = deps
                .trim_start_matches(['─', '►'])
                .split_whitespace()
                .collect();
            deps.sort_unstable();
            format!("{} -> {}", name.trim(), deps.join(" "))
        })
        .collect();
    drawn.sort();
    let mut real = Vec::new();
    let manifests = fs_err::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("Cargo.toml"))
        .chain([root.join("xtask/Cargo.toml")]);
    for manifest in manifests {
        let doc: toml::Table = fs_err::read_to_string(&manifest).unwrap().parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap().to_string();
        let mut deps: Vec<String> = doc["dependencies"]
            .as_table()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_prefix("assemble-").map(str::to_string))
            .collect();
        deps.sort();
        real.push(format!("{name} -> {}", deps.join(" ")));
    }
    real.sort();
    assert_eq!(drawn, real);
}

/// Every library crate of ours is built at opt-level 3 in the dev profile
/// that `cargo xtask` uses: hashing and copying are in them, and a new
/// crate is not covered by `"*"` (which names dependencies only).
#[test]
fn every_library_crate_is_optimised_in_the_dev_profile() {
    let root = support::root();
    let doc: toml::Table = fs_err::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let packages = doc["profile"]["dev"]["package"].as_table().unwrap();
    for e in fs_err::read_dir(root.join("crates")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let level = packages
            .get(&name)
            .and_then(|p| p.get("opt-level"))
            .and_then(toml::Value::as_integer);
        assert_eq!(level, Some(3), "{name} in [profile.dev.package]");
    }
}

fn cargo_tree(args: &[&str]) -> String {
    support::stdout_ok(
        std::process::Command::new(env!("CARGO"))
            .args(["tree", "--offline", "--edges", "normal"])
            .args(args)
            .current_dir(support::root()),
    )
}

/// `plan` is a dry run. On an empty cache and a new output it fetches,
/// builds, compiles and writes nothing (the scratch folder, with the
/// cache, the state folder and the sources, stays byte for byte what it
/// was; the output is not made), exits 0, and says one line per unit and a
/// summary. After a real assemble and an edit, a plan still writes
/// nothing: not the edited source's pyc, not the state, not the output.
#[test]
fn plan_writes_nothing_and_says_one_line_per_unit() {
    let s = Scratch::new();
    let (cache, state, out) = (s.path("cache"), s.path("state"), s.path("out"));
    fs_err::create_dir_all(&cache).unwrap();
    fs_err::create_dir_all(&state).unwrap();
    let folders = [
        "--out",
        out.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let before = support::listing(s.dir.path());
    let said = s.run("plan", &folders).ok();
    let json = s.run("plan", &[&folders[..], &["--json"]].concat()).json();
    support::assert_same_tree(&before, &support::listing(s.dir.path()), "plan, cold");
    assert!(!out.exists());
    let units = assemble_recipe::Recipe::load(&s.recipe())
        .unwrap()
        .units
        .len();
    let lines: Vec<&str> = said.lines().collect();
    assert!(lines.len() <= units + 1, "{said}");
    assert!(
        said.contains("python-deps (not in the cache: the virtualenv of the uv project")
            && said.contains("sources would be compiled to bytecode"),
        "{said}"
    );
    let would = json["would_build"].as_array().unwrap();
    assert!(
        would.iter().any(|w| w["unit"] == "python-deps")
            && would.iter().any(|w| w["unit"].is_null()),
        "{json}"
    );
    assert_eq!(json["units"]["python-deps"]["status"], "dirty", "{json}");

    s.assemble(&folders).ok();
    support::edit(&s.path("demo/authentik/authentik/__init__.py"), |t| {
        t + "\nEDITED = 1\n"
    });
    let before = support::listing(s.dir.path());
    let said = s.run("plan", &folders).ok();
    support::assert_same_tree(&before, &support::listing(s.dir.path()), "plan, warm");
    assert!(
        said.contains("Would build authentik") && said.contains("1 sources would be compiled"),
        "{said}"
    );
}

/// The recipes shipped with the workspace parse: the guarantee a build
/// script used to give by failing the tool's own build on a typo.
#[test]
fn the_shipped_recipes_are_valid() {
    for recipe in ["assemble.toml", "demo/assemble.toml"] {
        let path = support::root().join(recipe);
        if let Err(e) = assemble_recipe::Recipe::load(&path) {
            panic!("{recipe}: {e}");
        }
    }
}

/// The root recipe on a machine without its interpreter stops before
/// anything is fetched or built, saying where it looked and both ways to
/// name one (exit 1), and leaves no output and no lock file.
#[test]
fn the_root_recipe_without_its_interpreter_says_where_it_looked() {
    let s = Scratch::new();
    let recipe = s.path("root/assemble.toml");
    fs_err::create_dir_all(recipe.parent().unwrap()).unwrap();
    fs_err::copy(support::root().join("assemble.toml"), &recipe).unwrap();
    // A PATH with nothing on it: no python3.14, whatever this machine has.
    let empty = s.path("empty-bin");
    fs_err::create_dir_all(&empty).unwrap();
    let out = s.path("out");
    let path = [("PATH", empty.to_str().unwrap())];
    let err = support::assemble_into(s.dir.path(), &recipe, &out, &[], &path).fails(1);
    let said: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .collect();
    let (line, _) = position(&fs_err::read_to_string(&recipe).unwrap(), "interpreter = ");
    assert_eq!(
        said.first().copied(),
        Some(
            format!(
                "error: [python] interpreter at {}:{line}:1: python interpreter `python3.14` not found",
                recipe.display()
            )
            .as_str()
        ),
        "{err}"
    );
    assert!(said.len() <= 3, "at most three lines: {said:#?}");
    assert!(err.contains("looked on PATH (1 folder)"), "{err}");
    assert!(
        err.contains("--python NAME") && err.contains("--python PATH"),
        "{err}"
    );
    assert!(!out.exists(), "no output");
    assert!(
        !s.path("root/assemble.lock").exists(),
        "nothing was fetched or locked"
    );
}

/// Guards against the tool eating its own folders (issue 20, item 3):
/// `--out`, `--state-dir` or `--cache-dir` inside a unit's source, or a
/// source inside one of them, is a usage error naming the unit and the
/// flag, before anything is written. Before the fix each was accepted: an
/// output inside its source copied itself and grew every run (19.5 -> 39
/// -> 58.7 MB), the state or a cached venv landed in the tree.
#[test]
fn the_tools_folders_and_the_sources_stay_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs_err::create_dir_all(dir.join("src/pkg")).unwrap();
    fs_err::write(dir.join("src/pkg/m.py"), "M = 1\n").unwrap();
    let recipe = |source: &str| {
        let file = dir.join("assemble.toml");
        fs_err::write(
            &file,
            format!(
                "[package]\nname = \"apart\"\nversion = \"0\"\n[python]\ninterpreter = \"python3\"\n[units.app]\npath = \"{source}\"\ninstall = {{ \"pkg\" = \"pkg\" }}\n"
            ),
        )
        .unwrap();
        file
    };
    let cases: [(&str, &str, &str, &str, &str); 6] = [
        // (source, --out, --state-dir, --cache-dir, the flag at fault)
        ("src", "src/out", "state", "cache", "--out"),
        ("src", "out", "src/.state", "cache", "--state-dir"),
        ("src", "out", "state", "src/.cache", "--cache-dir"),
        ("out/src", "out", "state", "cache", "--out"),
        ("state/src", "out", "state", "cache", "--state-dir"),
        ("cache/src", "out", "state", "cache", "--cache-dir"),
    ];
    for (source, out, state, cache, flag) in cases {
        if source != "src" {
            fs_err::create_dir_all(dir.join(source).join("pkg")).unwrap();
            fs_err::write(dir.join(source).join("pkg/m.py"), "M = 1\n").unwrap();
        }
        let file = recipe(source);
        let args = [
            "assemble",
            "--recipe",
            file.to_str().unwrap(),
            "--out",
            out,
            "--state-dir",
            state,
            "--cache-dir",
            cache,
            "--json",
        ];
        let run = support::xtask(dir, &args);
        let err = run.fails(2);
        let case = format!("source {source}, {flag}");
        assert!(
            err.contains(flag) && err.contains("unit app"),
            "{case}: {err}"
        );
        let e = crate::cli::failure(&run);
        assert_eq!(
            (&e["kind"], &e["unit"]),
            (&"usage".into(), &"app".into()),
            "{case}: {e}"
        );
        assert!(!dir.join("src/out").exists(), "{case}: an output was made");
        if source != "src" {
            fs_err::remove_dir_all(dir.join(source.split('/').next().unwrap())).unwrap();
        }
    }
}

/// Guards every place a recipe names a file against special files (issue
/// 20, item 4): a FIFO, `/dev/zero` and a 1 GB file as the recipe, the base
/// it `extends`, `assemble.lock`, a requirements file, a uv project's
/// `uv.lock` and `pyproject.toml`, and a `path`, `venv` or `from` folder.
/// Each is refused with an error that says what is there, exit 1 or 2,
/// never a hang or a panic. Before the fix `extends = "/dev/zero"` read
/// until memory ran out, a 1 GB base aborted with `memory allocation of
/// 7362801072 bytes failed` (exit 134), and a FIFO hung for ever.
#[test]
fn special_files_where_the_recipe_names_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fifo = dir.join("fifo");
    support::stdout_ok(std::process::Command::new("mkfifo").arg(&fifo));
    let large = dir.join("large");
    fs_err::File::create(&large)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    fs_err::create_dir_all(dir.join("src/pkg")).unwrap();
    fs_err::write(dir.join("src/pkg/m.py"), "M = 1\n").unwrap();
    let head =
        "[package]\nname = \"special\"\nversion = \"0\"\n[python]\ninterpreter = \"python3\"\n";
    let uv = format!(
        "installer = \"uv=={}\"\ninstaller-sha256 = [\"{}\"]\n",
        support::UV_VERSION,
        support::UV_WHEEL_SHA256
    );
    let app = "[units.app]\npath = \"src\"\ninstall = { \"pkg\" = \"pkg\" }\n";
    // A uv project whose `name` file is the special file: made there (a
    // FIFO, a large file), or a link to it (a device).
    let project = |name: &str, special: &Path| {
        let p = dir.join("proj");
        let _ = fs_err::remove_dir_all(&p);
        fs_err::create_dir_all(&p).unwrap();
        fs_err::write(
            p.join("pyproject.toml"),
            "[project]\nname = \"proj\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        fs_err::write(
            p.join("uv.lock"),
            "version = 1\nrequires-python = \">=3.8\"\n\n[[package]]\nname = \"proj\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\n",
        )
        .unwrap();
        let at = p.join(name);
        fs_err::remove_file(&at).unwrap();
        if special.ends_with("fifo") {
            support::stdout_ok(std::process::Command::new("mkfifo").arg(&at));
        } else if special.ends_with("large") {
            fs_err::File::create(&at).unwrap().set_len(1 << 30).unwrap();
        } else {
            std::os::unix::fs::symlink(special, &at).unwrap();
        }
    };
    let says = [
        "a FIFO (named pipe)",
        "a character device",
        "more than the 8 MiB",
        "is a regular file, not a folder",
    ];
    let mut failed = Vec::new();
    for special in [fifo.as_path(), Path::new("/dev/zero"), large.as_path()] {
        let s = special.display().to_string();
        let places: Vec<(&str, String)> = vec![
            ("extends", format!("extends = \"{s}\"\n{head}{app}")),
            ("assemble.lock", format!("{head}{app}")),
            (
                "requirements",
                format!("{head}[units.deps]\nrequirements = \"{s}\"\nscripts = []\n"),
            ),
            (
                "uv.lock",
                format!("{head}{uv}[units.deps]\nuv-project = \"proj\"\nscripts = []\n"),
            ),
            (
                "pyproject.toml",
                format!("{head}{uv}[units.deps]\nuv-project = \"proj\"\nscripts = []\n"),
            ),
            ("path", format!("{head}[units.app]\npath = \"{s}\"\n")),
            (
                "venv",
                format!("{head}[units.deps]\nvenv = \"{s}\"\nscripts = []\n"),
            ),
            (
                "from",
                format!(
                    "{head}{app}[units.sub]\nfrom = \"app:special\"\ninstall = {{ \"x\" = \"x\" }}\n"
                ),
            ),
            ("--recipe", String::new()),
        ];
        for (place, text) in places {
            let recipe = dir.join("assemble.toml");
            let _ = fs_err::remove_file(&recipe);
            let _ = fs_err::remove_file(dir.join("assemble.lock"));
            let _ = fs_err::remove_file(dir.join("src/special"));
            match place {
                "--recipe" => std::os::unix::fs::symlink(special, &recipe).unwrap(),
                _ => fs_err::write(&recipe, text).unwrap(),
            }
            match place {
                "assemble.lock" => {
                    std::os::unix::fs::symlink(special, dir.join("assemble.lock")).unwrap()
                }
                "uv.lock" | "pyproject.toml" => project(place, special),
                "from" => std::os::unix::fs::symlink(special, dir.join("src/special")).unwrap(),
                _ => {}
            }
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
            cmd.args(["plan", "--recipe", recipe.to_str().unwrap(), "--out"])
                .arg(dir.join("out"))
                .current_dir(dir)
                .env("ASSEMBLE_CACHE_DIR", dir.join("cache"))
                .env("ASSEMBLE_STATE_DIR", dir.join("state"));
            let run = support::run_within(cmd, std::time::Duration::from_secs(120));
            let err = run.stderr();
            let case = format!("{s} as {place}");
            let clear = says.iter().any(|w| err.contains(w))
                || (place == "from" && err.contains("is a link to"));
            if !matches!(run.code(), Some(1 | 2)) || !clear || err.contains("panicked") {
                failed.push(format!("{case}: exit {:?}:\n{err}", run.code()));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Guards the message for a tool folder that is a file (issue 20, item 6):
/// `--state-dir` or `--cache-dir` naming a file is a usage error that says
/// so, before anything is read (it said "failed to create directory ...:
/// File exists (os error 17)").
#[test]
fn a_tool_folder_that_is_a_file_is_said_as_such() {
    let s = Scratch::new();
    let file = s.path("a-file");
    fs_err::write(&file, "").unwrap();
    for flag in ["--state-dir", "--cache-dir"] {
        let err = s
            .assemble(&[
                "--out",
                s.path("out").to_str().unwrap(),
                flag,
                file.to_str().unwrap(),
            ])
            .fails(2);
        assert!(
            err.contains(&format!(
                "{flag} {} is a regular file, not a folder",
                file.display()
            )),
            "{err}"
        );
    }
}

/// The recipe's JSON Schema: `assemble.schema.json` is what the recipe
/// types generate now (`cargo xtask schema > assemble.schema.json` after a
/// change to them); every shipped recipe names it on its first line, as
/// taplo and the TOML editor plugins read it; and a real validator
/// (Debian's python3-jsonschema) accepts each shipped recipe and refuses
/// a misspelt key.
#[test]
fn recipes_have_a_schema_that_is_current_and_checks_them() {
    let root = support::root();
    let committed = fs_err::read_to_string(root.join("assemble.schema.json")).unwrap();
    assert!(
        committed == assemble_recipe::json_schema(),
        "assemble.schema.json is stale: run `cargo xtask schema > assemble.schema.json`"
    );
    let shipped = [root.join("assemble.toml"), root.join("demo/assemble.toml")];
    for recipe in &shipped {
        let text = fs_err::read_to_string(recipe).unwrap();
        let first = text.lines().next().unwrap();
        let named = first
            .strip_prefix("#:schema ")
            .expect("a #:schema line first");
        let schema = recipe.parent().unwrap().join(named);
        assert_eq!(
            fs_err::canonicalize(&schema).unwrap(),
            fs_err::canonicalize(root.join("assemble.schema.json")).unwrap(),
            "{}",
            recipe.display()
        );
    }
    let s = Scratch::new();
    let typo = s.path("typo.toml");
    fs_err::write(&typo, "[python]\nintepreter = \"python3\"\n").unwrap();
    let check = "import json, sys, tomllib, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        for path, valid in zip(sys.argv[2::2], sys.argv[3::2]):\n\
        \x20   errors = list(jsonschema.Draft202012Validator(schema).iter_errors(tomllib.load(open(path, 'rb'))))\n\
        \x20   assert (not errors) == (valid == 'valid'), (path, [e.message for e in errors])\n\
        print('checked')\n";
    let mut args = vec![
        "-c".to_string(),
        check.to_string(),
        root.join("assemble.schema.json").display().to_string(),
    ];
    for r in &shipped {
        args.extend([r.display().to_string(), "valid".into()]);
    }
    args.extend([typo.display().to_string(), "invalid".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = support::run(Path::new("/usr/bin/python3"), &args);
    assert!(ok && out.contains("checked"), "{out}");
}
