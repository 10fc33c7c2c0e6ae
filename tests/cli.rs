//! The command line as people meet it: the version, how much it says
//! (`-q`, `-vv`), colour on a terminal only (a real pseudo-terminal, from
//! util-linux's `script`), completions that bash and zsh load, and manual
//! pages groff reads, and one JSON object for each way a `--json` run fails.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::Path;
use std::process::Command;

use crate::support::{self, Scratch};

/// Colour in `text`: an SGR escape sequence (`ESC [ digits/; m`), not
/// the cursor movements a spinner uses.
fn coloured(text: &str) -> bool {
    text.split("\u{1b}[").skip(1).any(|rest| {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(rest.len());
        rest[end..].starts_with('m')
    })
}

/// The demo assembled into `out` once; returns the arguments that
/// assemble it again (a no-op).
fn demo(s: &Scratch) -> Vec<String> {
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap()]).ok();
    vec![
        "assemble".into(),
        "--recipe".into(),
        s.recipe().to_str().unwrap().into(),
        "--out".into(),
        out.to_str().unwrap().into(),
    ]
}

/// `cmd` in `cwd` with the shared cache, a state folder there, a colour
/// terminal's TERM and no colour variable: whether it colours is then the
/// terminal's and the flags' doing alone.
fn colourless_env(cmd: &mut Command, cwd: &Path) {
    cmd.current_dir(cwd)
        .env("ASSEMBLE_CACHE_DIR", support::shared_cache())
        .env("ASSEMBLE_STATE_DIR", cwd.join("state"))
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR");
}

/// The xtask binary with `args` under a pseudo-terminal: what a person at
/// a terminal sees (stdout and stderr together).
pub fn on_a_terminal(cwd: &Path, args: &[String], env: &[(&str, &str)]) -> String {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_xtask").to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &quoted.join(" "), "/dev/null"]);
    colourless_env(&mut cmd, cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run script(1)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "under a terminal: {text}");
    text
}

/// The xtask binary with `args` through pipes, colour variables unset.
fn through_a_pipe(cwd: &Path, args: &[String], extra: &[&str]) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).args(extra);
    colourless_env(&mut cmd, cwd);
    let out = cmd.output().expect("run xtask");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "through a pipe: {stderr}");
    (stdout, stderr)
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let s = Scratch::new();
    let v = support::xtask(s.dir.path(), &["--version"]).stdout();
    assert!(v.starts_with("cargo xtask 0.0.0 ("), "{v}");
    let head = support::stdout_ok(
        Command::new("git")
            .args(["log", "-1", "--format=%h"])
            .current_dir(support::root()),
    );
    assert!(v.contains(&head), "{v} does not name HEAD {head}");
}

#[test]
fn quiet_says_nothing_on_a_no_op_and_very_verbose_times_each_phase() {
    let s = Scratch::new();
    let args = demo(&s);
    let (_, stderr) = through_a_pipe(s.dir.path(), &args, &["-q"]);
    assert_eq!(stderr, "", "-q on a no-op");
    let (_, normal) = through_a_pipe(s.dir.path(), &args, &[]);
    assert!(normal.contains("Finished"), "{normal}");
    assert!(!normal.contains("Phase"), "{normal}");
    let (_, vv) = through_a_pipe(s.dir.path(), &args, &["-vv"]);
    for phase in ["manifest", "diff", "apply"] {
        assert!(
            vv.lines()
                .any(|l| l.trim_start().starts_with("Phase") && l.contains(phase)),
            "-vv names the phase {phase}:\n{vv}"
        );
    }
    // -q and -v say opposite things: refused, as a usage error.
    let mut both = args.clone();
    both.extend(["-q".into(), "-v".into()]);
    let refs: Vec<&str> = both.iter().map(String::as_str).collect();
    support::xtask(s.dir.path(), &refs).fails(2);
}

#[test]
fn status_words_are_coloured_on_a_terminal_only() {
    let s = Scratch::new();
    let args = demo(&s);
    let tty = on_a_terminal(s.dir.path(), &args, &[]);
    assert!(tty.contains("Finished"), "{tty}");
    assert!(coloured(&tty), "a terminal gets colour:\n{tty}");

    let plain = on_a_terminal(s.dir.path(), &args, &[("NO_COLOR", "1")]);
    assert!(plain.contains("Finished"), "{plain}");
    assert!(!coloured(&plain), "NO_COLOR is honoured:\n{plain}");
    let mut never = args.clone();
    never.extend(["--color".into(), "never".into()]);
    let plain = on_a_terminal(s.dir.path(), &never, &[]);
    assert!(!coloured(&plain), "--color never:\n{plain}");

    let (stdout, stderr) = through_a_pipe(s.dir.path(), &args, &[]);
    assert!(stderr.contains("Finished"), "{stderr}");
    assert!(
        !coloured(&stderr) && !coloured(&stdout),
        "a pipe gets none:\n{stderr}"
    );
    let (_, forced) = through_a_pipe(s.dir.path(), &args, &["--color", "always"]);
    assert!(coloured(&forced), "--color always:\n{forced}");
    // The JSON report is never coloured, whatever is asked.
    let (json, _) = through_a_pipe(s.dir.path(), &args, &["--json", "--color", "always"]);
    assert!(!coloured(&json));
    serde_json::from_str::<serde_json::Value>(&json).expect("JSON");
}

#[test]
fn completions_load_in_bash_and_zsh_and_complete_the_commands() {
    let s = Scratch::new();
    let write = |shell: &str| {
        let script = support::xtask(s.dir.path(), &["completions", shell]).stdout();
        let file = s.path(&format!("xtask.{shell}"));
        fs_err::write(&file, script).unwrap();
        file
    };
    let bash = write("bash");
    let completed = support::stdout_ok(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && COMP_WORDS=(xtask as) COMP_CWORD=1 && _xtask xtask as xtask && echo \"${{COMPREPLY[@]}}\" \
         && COMP_WORDS=(xtask assemble --nar) COMP_CWORD=2 && _xtask xtask --nar assemble && echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    assert_eq!(completed, "assemble\n--nar-hash", "bash");

    let zsh = write("zsh");
    let registered = support::stdout_ok(Command::new("zsh").arg("-fc").arg(format!(
        "autoload -U compinit && compinit -u -D && source '{}' && print -r -- $_comps[xtask]",
        zsh.display()
    )));
    assert_eq!(registered, "_xtask", "zsh registers the completion");
    let script = fs_err::read_to_string(&zsh).unwrap();
    for word in ["assemble", "export", "--nar-hash", "--color"] {
        assert!(script.contains(word), "zsh completes {word}");
    }
}

#[test]
fn man_pages_for_the_tool_and_each_command_read_cleanly() {
    let s = Scratch::new();
    let dir = s.path("man");
    support::xtask(s.dir.path(), &["man", "--out", dir.to_str().unwrap()]).ok();
    let commands = [
        "assemble",
        "plan",
        "verify",
        "export",
        "bench",
        "cache",
        "autopatchelf",
        "hash",
        "lock",
        "prefetch",
        "vendor",
        "completions",
        "man",
    ];
    let main = fs_err::read_to_string(dir.join("xtask.1")).unwrap();
    for c in commands {
        let page = dir.join(format!("xtask-{c}.1"));
        let text = fs_err::read_to_string(&page).unwrap();
        assert!(text.contains(&format!(".TH xtask-{c} 1")), "{c}: {text}");
        assert!(main.contains(c), "xtask.1 lists {c}");
        // groff reads it without a warning (-ww: all of them).
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every command's page has the global flags.
    let assemble = fs_err::read_to_string(dir.join("xtask-assemble.1")).unwrap();
    for flag in [r"\-\-quiet", r"\-\-verbose", r"\-\-color", r"\-\-nar\-hash"] {
        assert!(assemble.contains(flag), "xtask-assemble.1 has {flag}");
    }
}

/// The one JSON object a failed `--json` run prints on stdout, checked
/// against the documented shape (docs/json.md, "JSON on failure"): these keys
/// and no others, each of its type.
pub fn failure(run: &support::Run) -> serde_json::Value {
    let stdout = run.stdout();
    let mut lines = stdout.lines();
    let v: serde_json::Value = serde_json::from_str(lines.next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not one JSON object on stdout ({e}):\n{stdout}"));
    assert_eq!(lines.next(), None, "one line on stdout:\n{stdout}");
    let object = v.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "causes",
            "column",
            "detail",
            "exit_code",
            "file",
            "hint",
            "kind",
            "line",
            "message",
            "related",
            "unit"
        ],
        "{v}"
    );
    let string_or_null = |k: &str| v[k].is_string() || v[k].is_null();
    let number_or_null = |k: &str| v[k].is_u64() || v[k].is_null();
    assert!(v["kind"].is_string() && v["message"].is_string(), "{v}");
    assert!(
        string_or_null("unit")
            && string_or_null("file")
            && string_or_null("hint")
            && string_or_null("detail"),
        "{v}"
    );
    assert!(number_or_null("line") && number_or_null("column"), "{v}");
    assert!(
        v["causes"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c.is_string())),
        "{v}"
    );
    assert_eq!(v["exit_code"].as_i64(), run.code().map(i64::from), "{v}");
    for r in v["related"].as_array().expect("related: an array") {
        assert!(r["kind"].is_string() && r["message"].is_string(), "{r}");
        assert!(r["line"].is_u64() || r["line"].is_null(), "{r}");
    }
    v
}

/// Guards the JSON failure report: a script that asked for `--json` gets
/// a reason it can read for each way a run fails, not an empty stdout.
#[test]
fn each_failure_kind_is_one_json_object_on_stdout() {
    let s = Scratch::new();
    let out = s.path("out");
    let json = |extra: &[&str]| {
        let mut args = vec!["--out", out.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        s.assemble(&args)
    };

    // A recipe mistake: where it is, and what was meant.
    s.edit_recipe(|t| t.replacen("[python]", "[pyhton]", 1));
    let run = json(&[]);
    run.fails(2);
    let e = failure(&run);
    assert_eq!(e["kind"], "recipe", "{e}");
    assert_eq!(e["file"], s.recipe().to_str().unwrap(), "{e}");
    assert!(e["line"].is_u64() && e["column"].is_u64(), "{e}");
    assert_eq!(e["message"], "unknown key `pyhton` in the top level", "{e}");
    assert_eq!(e["hint"], "did you mean `python`?", "{e}");
    s.edit_recipe(|t| t.replacen("[pyhton]", "[python]", 1));

    // A flag that cannot be used: exit 2, a usage error.
    let run = json(&["--prefix", "relative/path"]);
    run.fails(2);
    let e = failure(&run);
    assert_eq!(e["kind"], "usage", "{e}");

    // No such interpreter: who asked, where it looked, how to name one.
    let run = json(&["--python", "/nonexistent/python3"]);
    run.fails(1);
    let e = failure(&run);
    assert_eq!(e["kind"], "interpreter", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("--python: python interpreter `/nonexistent/python3` not found"),
        "{e}"
    );
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/python3"),
        "{e}"
    );
    assert!(e["hint"].as_str().unwrap().contains("--python PATH"), "{e}");

    // A unit whose path is missing: the unit, the path, the fix.
    let app = s.path("demo/authentik");
    fs_err::rename(&app, s.path("moved")).unwrap();
    let run = json(&[]);
    run.fails(1);
    let e = failure(&run);
    assert_eq!(e["kind"], "missing-path", "{e}");
    assert_eq!(e["unit"], "authentik", "{e}");
    assert_eq!(e["file"], app.to_str().unwrap(), "{e}");
    assert_eq!(e["hint"], "fix the path in the recipe", "{e}");
    fs_err::rename(s.path("moved"), &app).unwrap();

    // A patch that no longer matches: the unit and the file it read.
    let settings = s.path("demo/authentik/authentik/root/settings.py");
    support::edit(&settings, |t| {
        t.replace("BASE_DIR = Path(__file__)", "BASE = Path(__file__)")
    });
    let run = json(&[]);
    run.fails(1);
    let e = failure(&run);
    assert_eq!(e["kind"], "patch", "{e}");
    assert_eq!(e["unit"], "authentik", "{e}");
    assert_eq!(e["file"], settings.to_str().unwrap(), "{e}");
    support::edit(&settings, |t| {
        t.replace("BASE = Path(__file__)", "BASE_DIR = Path(__file__)")
    });

    // An output that is not the tool's: refused, nothing written.
    let home = s.path("home");
    fs_err::create_dir_all(&home).unwrap();
    fs_err::write(home.join("notes.txt"), "mine").unwrap();
    let run = s.assemble(&["--out", home.to_str().unwrap(), "--json"]);
    run.fails(1);
    let e = failure(&run);
    assert_eq!(e["kind"], "refused", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("refusing to write into"),
        "{e}"
    );
    assert_eq!(
        fs_err::read_to_string(home.join("notes.txt")).unwrap(),
        "mine"
    );

    // And a success is the report, not a failure object: the keys the
    // docs/json.md documents (`elf` only with -v), each of its type.
    let report = json(&[]).json();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&report),
        [
            "bytecode",
            "changes",
            "copies",
            "dirs_created",
            "dry_run",
            "elf_patched",
            "files_removed",
            "files_written",
            "installer",
            "interpreter",
            "io",
            "libraries",
            "nar_hash",
            "output",
            "phases",
            "prefix",
            "registry",
            "seconds",
            "units",
            "warnings",
            "would_build"
        ],
        "{report}"
    );
    assert!(report["output"].is_string() && report["prefix"].is_string());
    assert!(
        report["interpreter"]["path"].is_string() && report["interpreter"]["version"].is_string()
    );
    assert!(report["nar_hash"].is_null() || report["nar_hash"].is_string());
    assert_eq!(report["dry_run"], false);
    assert!(report["files_written"].is_u64() && report["files_removed"].is_u64());
    for (_, u) in report["units"].as_object().unwrap() {
        assert_eq!(
            keys(u),
            [
                "entries", "patches", "reasons", "removed", "status", "written"
            ],
            "{u}"
        );
    }
    assert_eq!(
        keys(&report["bytecode"]),
        ["cached", "compiled", "failed", "pulled"]
    );
    assert!(report["registry"].is_null(), "no --cache-registry");
    assert!(report["changes"].is_array() && report["warnings"].is_array());
    assert!(report["phases"][0]["phase"].is_string() && report["phases"][0]["ms"].is_number());
    let verbose = json(&["-v"]).json();
    assert!(verbose["elf"].is_array(), "-v adds elf");

    // Another run holds the output's lock, and --no-wait: busy.
    let layout = assemble_reconcile::Layout::new(&out, &s.path("state"));
    let held = assemble_reconcile::Lock::acquire(&layout).unwrap();
    let run = json(&["--no-wait"]);
    run.fails(1);
    let e = failure(&run);
    assert_eq!(e["kind"], "busy", "{e}");
    assert!(e["hint"].as_str().unwrap().contains("--no-wait"), "{e}");
    drop(held);

    // Two units writing one path: the path, and the way out.
    let base = fs_err::read_to_string(s.recipe()).unwrap();
    s.edit_recipe(|t| {
        format!("{t}\n[units.twice]\npath = \"authentik\"\ninstall = {{ \"manage.py\" = \"manage.py\" }}\n")
    });
    let run = json(&[]);
    run.fails(1);
    let e = failure(&run);
    assert_eq!(e["kind"], "conflict", "{e}");
    assert!(e["message"].as_str().unwrap().contains("manage.py"), "{e}");
    assert!(e["hint"].is_string(), "{e}");
    fs_err::write(s.recipe(), &base).unwrap();

    // A uv.lock the venv's unit cannot read: python, naming the unit and
    // the file.
    let lock = s.path("demo/authentik/uv.lock");
    support::edit(&lock, |t| format!("{t}\nthis is not toml [\n"));
    let run = json(&[]);
    run.fails(1);
    let e = failure(&run);
    assert_eq!(e["kind"], "python", "{e}");
    assert_eq!(e["unit"], "python-deps", "{e}");
    assert!(e["message"].as_str().unwrap().contains("uv.lock"), "{e}");
}

/// Guards the README's second command on a machine without Nix's hasher
/// or patchelf: it names them with their Debian packages and the command
/// that installs them, and stops (exit 1), instead of a test run that
/// panics on the first missing tool.
#[test]
fn the_test_command_names_what_is_missing_and_how_to_install_it() {
    let s = Scratch::new();
    // A PATH with every tool the tests need but nix-hash and patchelf.
    let bin = s.path("bin");
    fs_err::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(support::real_python(), bin.join("python3")).unwrap();
    for tool in [
        "bash",
        "git",
        "gcc",
        "unshare",
        "script",
        "zsh",
        "groff",
        "tinyproxy",
        "curl-config",
        "mount",
        "skopeo",
        "umoci",
        "docker-registry",
        "htpasswd",
        "mkfs.xfs",
    ] {
        std::os::unix::fs::symlink(support::which(tool), bin.join(tool)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["test", "--no-install"])
        .current_dir(s.dir.path())
        .env("PATH", &bin)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for named in ["nix-hash on PATH", "(Nix's hasher", "patchelf on PATH"] {
        assert!(err.contains(named), "names {named}:\n{err}");
    }
    assert!(
        err.contains("apt-get install -y --no-install-recommends nix-bin patchelf"),
        "the command that installs exactly these:\n{err}"
    );
    assert!(!err.contains("zsh on PATH"), "only what is missing:\n{err}");
}

/// The venv's installer says what it does, under a spinner, on a terminal
/// only: a pipe (a CI log, `--json`) gets the status lines alone. Every
/// slow step is named under the spinner from its start, with its time:
/// pip's sdist download and the uv bootstrap (which print nothing for
/// seconds, and once showed nothing at all), the bytecode compile.
#[test]
fn the_installers_progress_shows_on_a_terminal_only() {
    let s = Scratch::new();
    let run_in = |cache: &str, out: &str| {
        // A cache of its own: the venv is synced, not found. The terminal's
        // starts empty (uv bootstrapped); the pipe's shares the tests' uv.
        let cache = if cache == "cache-tty" {
            s.path(cache)
        } else {
            support::cache_sharing_uv(s.dir.path(), cache)
        };
        let args: Vec<String> = [
            "assemble",
            "--recipe",
            s.recipe().to_str().unwrap(),
            "--out",
            s.path(out).to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        (cache, args)
    };
    let (cache, args) = run_in("cache-tty", "out-tty");
    let tty = on_a_terminal(
        s.dir.path(),
        &args,
        &[("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())],
    );
    assert!(tty.contains("syncing a virtualenv"), "{tty}");
    assert!(
        tty.contains("Running ["),
        "the spinner, with its time:\n{tty}"
    );
    assert!(
        tty.lines().any(|l| l.contains("Preparing")
            && l.contains(" python-deps: bootstrapping uv 0.9.5 from its wheel")),
        "the uv bootstrap announced:\n{tty}"
    );
    for step in [
        "] opencontainers: fetching the sdist of opencontainers",
        "] python-deps: bootstrapping uv 0.9.5",
        "] bytecode: compiling 345 sources",
    ] {
        assert!(tty.contains(step), "under the spinner: {step}\n{tty}");
    }
    assert!(
        ["Resolved", "Prepared", "Installed", " + "]
            .iter()
            .any(|l| tty.contains(l)),
        "uv's own lines:\n{tty}"
    );
    // The cold copy's bar, counting files.
    assert!(
        tty.contains("Writing ["),
        "the bar of the files written:\n{tty}"
    );
    assert!(tty.contains(" files"), "{tty}");

    let (cache, args) = run_in("cache-pipe", "out-pipe");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(&args)
        .current_dir(s.dir.path())
        .env("ASSEMBLE_CACHE_DIR", &cache)
        .env("ASSEMBLE_STATE_DIR", s.path("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("syncing a virtualenv"), "{err}");
    assert!(
        !err.contains("Running [") && !err.contains("Installed") && !err.contains("Writing ["),
        "a pipe gets no progress:\n{err}"
    );
}

/// Guards against one run per mistake: a recipe with three unknown keys
/// (a misspelt table, a key, an array of tables) reports all three, each
/// at its `line:col`, as text and in `--json`'s `related`.
#[test]
fn three_mistakes_in_a_recipe_are_reported_in_one_run() {
    let s = Scratch::new();
    s.edit_recipe(|t| {
        let t = t.replacen("[python]", "[pyhton]", 1).replacen(
            "[units.authentik]",
            "[units.authentik]\nbranch = \"main\"",
            1,
        );
        format!("{t}\n[[units.authentik.ptach]]\nfile = \"x\"\n")
    });
    let text = fs_err::read_to_string(s.recipe()).unwrap();
    let at = |needle: &str| {
        let i = text.find(needle).unwrap();
        let line = text[..i].matches('\n').count() + 1;
        let col = i - text[..i].rfind('\n').map_or(0, |n| n + 1) + 1;
        (line as u64, col as u64)
    };
    let wanted = [
        (at("pyhton"), "unknown key `pyhton` in the top level"),
        (at("branch"), "unknown key `branch` in [units.authentik]"),
        (at("ptach"), "unknown key `ptach` in [units.authentik]"),
    ];
    let out = s.path("out");
    let err = s.assemble(&["--out", out.to_str().unwrap()]).fails(2);
    assert!(err.contains("3 mistakes in the recipe"), "{err}");
    for ((line, col), message) in wanted {
        let place = format!("{}:{line}:{col}: {message}", s.recipe().display());
        assert!(err.contains(&place), "wants {place}:\n{err}");
    }
    let run = s.assemble(&["--out", out.to_str().unwrap(), "--json"]);
    run.fails(2);
    let e = failure(&run);
    let all: Vec<((u64, u64), String)> = std::iter::once(&e)
        .chain(e["related"].as_array().unwrap())
        .map(|d| {
            (
                (d["line"].as_u64().unwrap(), d["column"].as_u64().unwrap()),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<((u64, u64), String)> =
        wanted.iter().map(|(at, m)| (*at, m.to_string())).collect();
    assert_eq!(all, expected, "{e}");
    assert!(!out.exists(), "nothing written");
}

/// The tree's run-time library list, in the assemble report and from
/// `autopatchelf`: psycopg-binary's bundled libraries resolve inside the
/// tree, libc from the host, each with the files that need it.
#[test]
fn the_run_time_library_list_says_where_each_library_comes_from() {
    let s = Scratch::new();
    let out = s.path("out");
    let report = s
        .assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    let libs = report["libraries"].as_array().expect("libraries");
    let find = |prefix: &str| {
        libs.iter()
            .find(|l| l["soname"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {libs:#?}"))
    };
    let libpq = find("libpq-");
    assert_eq!(libpq["found"], "tree", "{libpq}");
    let path = libpq["path"].as_str().unwrap();
    assert!(path.contains("psycopg_binary.libs/"), "{libpq}");
    assert!(out.join(path).is_file(), "{path} is in the tree");
    let by = libpq["needed_by"].as_array().unwrap();
    assert!(
        !by.is_empty() && by.iter().all(|p| out.join(p.as_str().unwrap()).is_file()),
        "{libpq}"
    );

    let libc = find("libc.so.6");
    assert_eq!(libc["found"], "host", "{libc}");
    assert!(
        Path::new(libc["path"].as_str().unwrap()).is_file(),
        "{libc}"
    );
    assert!(!libc["needed_by"].as_array().unwrap().is_empty(), "{libc}");
    // Nothing the tree needs is missing, and nothing is listed twice.
    let mut names: Vec<&str> = libs.iter().map(|l| l["soname"].as_str().unwrap()).collect();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "one entry per library and place");

    // The same list, as text (-v) and from `autopatchelf` on the tree.
    let text = s.assemble(&["--out", out.to_str().unwrap(), "-v"]).ok();
    assert!(
        text.lines()
            .any(|l| l.contains("Needs libc.so.6 from the host")),
        "{text}"
    );
    let again: serde_json::Value = serde_json::from_str(
        &support::xtask(
            s.dir.path(),
            &["autopatchelf", out.to_str().unwrap(), "--json"],
        )
        .stdout(),
    )
    .unwrap();
    let sonames = |v: &[serde_json::Value]| -> Vec<(String, String)> {
        v.iter()
            .map(|l| {
                (
                    l["soname"].as_str().unwrap().into(),
                    l["found"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(
        sonames(again["libraries"].as_array().unwrap()),
        sonames(libs)
    );
}

/// Guards against one run per missing input: offline, with an empty cache,
/// the demo lacks its opencontainers sdist and its venv; both are named,
/// each with its unit and how to get it, in text and in `--json`.
#[test]
fn offline_names_every_missing_input() {
    let s = Scratch::new();
    let out = s.path("out");
    let cache = s.path("empty-cache");
    let recipe = s.recipe();
    let env = [("ASSEMBLE_CACHE_DIR", cache.to_str().unwrap())];
    let run = |extra: &[&str]| {
        let args = [&["--offline"], extra].concat();
        support::assemble_into(s.dir.path(), &recipe, &out, &args, &env)
    };
    let err = run(&[]).fails(1);
    assert!(
        err.contains("2 inputs are missing, and --offline forbids fetching them"),
        "{err}"
    );
    for (unit, what) in [
        ("opencontainers", "the sdist of opencontainers==0.0.15"),
        ("python-deps", "the virtualenv of the uv project"),
    ] {
        assert!(
            err.contains(&format!("unit {unit}: {what}")),
            "names {unit}:\n{err}"
        );
    }
    assert!(err.contains("run once without --offline"), "{err}");
    let r = run(&["--json"]);
    r.fails(1);
    let e = failure(&r);
    let units: Vec<&str> = std::iter::once(&e)
        .chain(e["related"].as_array().unwrap())
        .map(|d| {
            assert_eq!(d["kind"], "offline", "{d}");
            d["unit"].as_str().unwrap()
        })
        .collect();
    assert_eq!(units, ["opencontainers", "python-deps"], "{e}");
    assert!(!out.exists(), "nothing written");
}

/// Every command, its stdout a pipe whose reader is already gone (`| head
/// -c 1` at its most abrupt): the first write ends the process quietly, by
/// SIGPIPE's default action, with no panic; a command that writes nothing
/// there ends as it would anyway. Each command `xtask help` lists runs
/// here, with what makes it print to stdout (`--json`, a listing), but
/// `test`, which runs this suite. Guards against `failed printing to
/// stdout: Broken pipe` and exit 101. In the sandbox, with a cache of its
/// own: deploy, vendor, image and bench write and delete, and the root
/// must be as it was.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    if !support::sandbox::sandboxed("cli::a_closed_stdout_ends_every_command_quietly") {
        return;
    }
    support::sandbox::make_loop_devices();
    let s = Scratch::new();
    let outside = support::sandbox::snapshot(&[s.dir.path(), Path::new("/dev")]);
    let env = [
        ("ASSEMBLE_CACHE_DIR", s.path("cache")),
        ("ASSEMBLE_STATE_DIR", s.path("state")),
        ("HOME", s.path("home")),
        // uv leaves a lock file per interpreter in the temporary folder
        // (`uv-HASH.lock`): here, not in the root compared below.
        ("TMPDIR", s.path("tmp")),
    ];
    fs_err::create_dir_all(s.path("tmp")).unwrap();
    let demo: Vec<String> = [
        "assemble",
        "--recipe",
        s.recipe().to_str().unwrap(),
        "--out",
        s.path("out").to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let built = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(&demo)
        .current_dir(s.dir.path())
        .envs(env.clone())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{said}");
    let registry = support::registry::Registry::start(&s.path("registry"));
    let at = |rel: &str| s.path(rel).to_str().unwrap().to_string();
    let (out, recipe, readme) = (
        at("out"),
        s.recipe().to_str().unwrap().to_string(),
        support::root()
            .join("README.md")
            .to_str()
            .unwrap()
            .to_string(),
    );
    fs_err::create_dir_all(s.path("no-elf")).unwrap();
    fs_err::write(s.path("pinned.txt"), "pinned\n").unwrap();
    let mut plan = demo.clone();
    plan[0] = "plan".into();
    let r = recipe.as_str();
    // Each command, and the exit it ends with when stdout has no reader:
    // 0 also for one that wrote nothing there.
    let commands: Vec<(Vec<String>, Option<i32>)> = [
        (vec!["completions", "bash"], Some(0)),
        (vec!["schema"], Some(0)),
        (vec!["man", "--out", &at("man")], Some(0)),
        (vec!["help", "assemble"], Some(0)),
        (vec!["hash", &readme], Some(0)),
        (
            vec!["verify", "--recipe", r, "--out", &out, "--json"],
            Some(0),
        ),
        (vec!["export", "--format", "tar", "--from", &out], Some(0)),
        (vec!["autopatchelf", "--json", &at("no-elf")], Some(0)),
        (vec!["lock", "--recipe", r], Some(0)),
        (
            vec![
                "prefetch",
                &format!("url:file://{}", at("pinned.txt")),
                "--flat",
            ],
            Some(0),
        ),
        // The demo pins no github unit: a usage error, said on stderr.
        (
            vec![
                "update",
                "authentik",
                "--tag",
                "v2",
                "--dry-run",
                "--recipe",
                r,
            ],
            Some(2),
        ),
        (vec!["vendor", "--recipe", r], Some(0)),
        (
            vec!["deploy", "--recipe", r, "--to", &at("prefix"), "--json"],
            Some(0),
        ),
        (
            vec!["deploy", "--recipe", r, "--to", &at("prefix"), "--list"],
            Some(0),
        ),
        (
            vec![
                "image",
                "--recipe",
                r,
                "--out",
                &at("image-tree"),
                "--oci",
                &at("oci"),
                "--json",
            ],
            Some(0),
        ),
        (
            vec![
                "cache",
                "ls",
                "--recipe",
                r,
                "--cache-registry",
                &format!("{}/docs/cache", registry.host),
                "--all",
                "--json",
            ],
            Some(0),
        ),
        (
            vec![
                "bench",
                "--venv-files",
                "100",
                "--venv-mib",
                "1",
                "--app-files",
                "20",
                "--runs",
                "1",
                "--json",
                "--dir",
                &at("bench"),
            ],
            Some(0),
        ),
    ]
    .into_iter()
    .map(|(c, code)| (c.into_iter().map(String::from).collect(), code))
    .chain([
        (
            demo.iter().cloned().chain(["--json".into()]).collect(),
            Some(0),
        ),
        (
            plan.iter().cloned().chain(["--json".into()]).collect(),
            Some(0),
        ),
    ])
    .collect();
    let help = support::xtask(s.dir.path(), &["--help"]).stdout();
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &listed {
        assert!(
            *name == "test" || commands.iter().any(|(c, _)| c[0] == *name),
            "`{name}` is not run with a closed stdout"
        );
    }
    assert!(listed.len() >= 19, "{help}");
    for (args, code) in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(&args)
            .current_dir(s.dir.path())
            .envs(env.clone())
            .stdout(writer);
        let done = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}:\n{err}"
        );
        assert!(
            done.status.signal() == Some(13) || done.status.code() == code,
            "{args:?} ended with {}:\n{err}",
            done.status
        );
    }
    drop(registry);
    let after = support::sandbox::snapshot(&[s.dir.path(), Path::new("/dev")]);
    assert_eq!(outside, after, "the sandbox's root changed");
}

/// `man` without `--out` writes into the checkout's target dir, never
/// into the current folder (it once wrote 14 pages there).
#[test]
fn man_writes_nothing_into_the_current_folder() {
    let s = Scratch::new();
    let before = support::listing(s.dir.path());
    let said = support::xtask(s.dir.path(), &["man"]).ok();
    assert_eq!(support::listing(s.dir.path()), before, "{said}");
    let target = support::xtask_bin()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("man");
    assert!(target.join("xtask-assemble.1").is_file(), "{said}");
}

/// `lock` on a recipe with nothing to lock says so and writes no file;
/// `--update` with a typo of a unit's name says which was meant.
#[test]
fn lock_says_what_it_wrote_and_what_was_meant() {
    let s = Scratch::new();
    let err = s.run("lock", &[]).ok();
    assert!(err.contains("nothing to lock"), "{err}");
    assert!(!s.path("demo/assemble.lock").exists());
    let typo = s.run("lock", &["--update", "authentikk"]).fails(2);
    assert!(typo.contains("did you mean `authentik`?"), "{typo}");
}

/// Every flag that names a unit says which was meant on a typo, before
/// anything is fetched or built: `update UNIT` and `image --app UNIT`
/// (which once built an image whose app layer was empty). A name close to
/// none lists the recipe's units.
#[test]
fn a_unit_misnamed_on_the_command_line_is_said_with_the_one_meant() {
    let s = Scratch::new();
    let update = s.run("update", &["authentikk", "--tag", "v2"]).fails(2);
    assert!(update.contains("did you mean `authentik`?"), "{update}");
    let out = s.path("image-tree");
    let image = s
        .run(
            "image",
            &[
                "--app",
                "authentikk",
                "--oci",
                s.path("oci").to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .fails(2);
    assert!(image.contains("--app: authentikk is no unit of"), "{image}");
    assert!(image.contains("did you mean `authentik`?"), "{image}");
    assert!(!out.exists() && !s.path("oci").exists(), "nothing built");
    let far = s.run("update", &["zzz", "--tag", "v2"]).fails(2);
    assert!(
        far.contains("(its units: python-deps, opencontainers,"),
        "{far}"
    );
}

/// `verify` of a drifted output names the `assemble` that repairs it as
/// it was asked for: the same `--recipe` and `--out` (a plain `cargo
/// xtask assemble` would build the root recipe somewhere else).
#[test]
fn verify_hints_the_assemble_it_was_given() {
    let s = Scratch::new();
    demo(&s);
    let out = s.path("out");
    fs_err::write(out.join("manage.py"), "edited\n").unwrap();
    let recipe = s.recipe();
    let err = s.run("verify", &["--out", out.to_str().unwrap()]).fails(1);
    let want = format!(
        "run `cargo xtask assemble --recipe {} --out {}` to repair it",
        recipe.display(),
        out.display()
    );
    assert!(err.contains(&want), "{want}\n{err}");
    // Run as the hint says, the output verifies again.
    s.assemble(&["--out", out.to_str().unwrap()]).ok();
    s.run("verify", &["--out", out.to_str().unwrap()]).ok();
    // A folder never assembled: verify and export name the same command.
    let never = s.path("never");
    let want = format!(
        "assemble it first: `cargo xtask assemble --recipe {} --out {}`",
        recipe.display(),
        never.display()
    );
    let err = s
        .run("verify", &["--out", never.to_str().unwrap()])
        .fails(1);
    assert!(err.contains(&want), "{want}\n{err}");
    let err = s
        .run(
            "export",
            &[
                "--format",
                "tar",
                "--from",
                never.to_str().unwrap(),
                "--out",
                s.path("t.tar").to_str().unwrap(),
            ],
        )
        .fails(1);
    assert!(err.contains(&want), "{want}\n{err}");
}

/// A hand edit in the output and a file added there are each said at
/// default verbosity when the run puts the tree back; past twenty, one
/// line counts them, and `-v` lists them all.
#[test]
fn what_the_run_undoes_in_the_output_is_said() {
    let s = Scratch::new();
    let args = demo(&s);
    let out = s.path("out");
    let site = format!("lib/python{}/site-packages", support::python_xy());
    let settings = format!("{site}/authentik/root/settings.py");
    let notes = format!("{site}/authentik/mynotes.txt");
    fs_err::write(out.join(&settings), "edited\n").unwrap();
    fs_err::write(out.join(&notes), "mine\n").unwrap();
    let args: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let err = support::xtask(s.dir.path(), &[&["assemble"], &args[..]].concat()).ok();
    assert!(
        err.contains(&format!(
            "warning: Restored {settings} (edited outside the tool)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("warning: Removed {notes} (not in the recipe)")),
        "{err}"
    );
    // Twenty-five strays: one line, then all of them with -v.
    for i in 0..25 {
        fs_err::write(out.join(format!("stray-{i}")), "").unwrap();
    }
    let plan = support::xtask(s.dir.path(), &[&["plan"], &args[..]].concat()).ok();
    assert!(
        plan.contains("would restore 0 paths changed outside the tool and would remove 25 not in the recipe (-v lists them)"),
        "{plan}"
    );
    let all = support::xtask(s.dir.path(), &[&["assemble", "-v"], &args[..]].concat()).ok();
    assert_eq!(all.matches("(not in the recipe)").count(), 25, "{all}");
}

/// A variant of the demo that adds one patch to authentik keeps the
/// base's six: `blueprints_dir` is still patched, the new patch applied,
/// and the unit's line and JSON say seven patches.
#[test]
fn a_variant_adding_a_patch_keeps_the_bases() {
    let s = Scratch::new();
    s.edit_recipe(|t| {
        format!(
            "{t}\n[[units.authentik.patch]]\nfile = \"@site@/authentik/__init__.py\"\nreplace = \"\\\"\\\"\\\"authentik\"\nwith = \"\\\"\\\"\\\"authentik, patched by a variant\"\n"
        )
    });
    let out = s.path("out");
    let r = s.assemble(&["--out", out.to_str().unwrap(), "--json"]);
    let report = r.json();
    assert_eq!(report["units"]["authentik"]["patches"], 7, "{}", r.stderr());
    let site = out.join(format!("lib/python{}/site-packages", support::python_xy()));
    let default = fs_err::read_to_string(site.join("authentik/lib/default.yml")).unwrap();
    assert!(
        default.contains(&format!("blueprints_dir: {}/blueprints", out.display())),
        "{default}"
    );
    let init = fs_err::read_to_string(site.join("authentik/__init__.py")).unwrap();
    assert!(init.contains("authentik, patched by a variant"), "{init}");
    let text = s.assemble(&["--out", out.to_str().unwrap()]).ok();
    assert!(
        text.contains("Fresh authentik (49 paths, 7 patches)"),
        "{text}"
    );
}

/// The binary copied alone into the sandbox, its checkout (and target dir)
/// hidden under an empty tmpfs and no cargo on PATH, builds the demo with
/// explicit flags: nothing but a default needs the workspace.
#[test]
fn the_binary_alone_builds_the_demo_with_explicit_flags() {
    if !support::sandbox::sandboxed("cli::the_binary_alone_builds_the_demo_with_explicit_flags") {
        return;
    }
    let s = Scratch::new();
    let bin = Path::new("/box/bin/xtask");
    fs_err::create_dir_all(bin.parent().unwrap()).unwrap();
    fs_err::copy(support::xtask_bin(), bin).unwrap();
    let hidden = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(support::root())
        .status()
        .unwrap();
    assert!(hidden.success());
    assert!(!support::root().join("Cargo.toml").exists());
    let (home, tmp) = (s.path("home"), s.path("tmp"));
    fs_err::create_dir_all(&home).unwrap();
    fs_err::create_dir_all(&tmp).unwrap();
    let out = Path::new("/box/out");
    let recipe = s.recipe();
    let done = Command::new(bin)
        .arg("assemble")
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(s.path("cache"))
        .arg("--state-dir")
        .arg(s.path("state"))
        .current_dir("/box")
        // No cargo (it lives in ~/.cargo/bin); the machine's own settings
        // to reach the package index are kept.
        .env("PATH", "/usr/bin:/bin")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("ASSEMBLE_CACHE_DIR")
        .env_remove("ASSEMBLE_STATE_DIR")
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert!(out.join("manage.py").is_file(), "{err}");
    assert!(
        !Path::new("/box/target").exists(),
        "a default was used: {err}"
    );
}
