//! Confinement: whatever the recipe, the flags, the state or the output
//! folder hold, nothing outside the output is written, changed or deleted,
//! and no run deletes a file that is not the tool's own.
//!
//! Every case here could, if the tool were wrong, reach files outside its
//! folder. So each test starts this test binary again inside
//! `../shared/tools/sandbox` (a throwaway root on tmpfs, with the checkout
//! and the build bound read-only), and its body runs only there: a wrong
//! delete can only hurt that tmpfs. Around the output a sentinel tree
//! (siblings, parents, link targets, `/tmp`, their modes) is snapshotted
//! before and after every run and must never change, whatever the exit code.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;

use support::sandbox::sandboxed as run_sandboxed;
use support::xtask_bin;

fn sandboxed(test: &str) -> bool {
    run_sandboxed(&format!("confinement::{test}"))
}

/// Where everything of a case lives inside the sandbox.
const CASE: &str = "/box/case";
const OUT: &str = "/box/case/a/out";
const STATE: &str = "/box/state";
const CACHE: &str = "/box/cache";
const OUTSIDE: &str = "/box/outside";

/// Runs the xtask binary inside the sandbox; returns its exit code and
/// stderr.
fn xtask(args: &[&str]) -> (i32, String) {
    let out = Command::new(xtask_bin())
        .args(args)
        .current_dir(CASE)
        .env("ASSEMBLE_CACHE_DIR", CACHE)
        .env("ASSEMBLE_STATE_DIR", STATE)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every path of the sandbox but the output, the tool's state and cache
/// and the read-only binds.
fn sentinel() -> BTreeMap<PathBuf, String> {
    support::sandbox::snapshot(&[Path::new(OUT), Path::new(STATE), Path::new(CACHE)])
}

/// The sentinel tree around the output: siblings of the output and of its
/// parents, a folder outside that links point to, a victim beside it.
fn lay_sentinels() {
    for d in [
        "/box/case/a",
        "/box/outside/d",
        "/box/case/victim",
        "/box/p",
    ] {
        fs_err::create_dir_all(d).unwrap();
    }
    for (f, text) in [
        ("/box/sibling", "s0"),
        ("/box/case/sibling", "s1"),
        ("/box/case/a/sibling", "s2"),
        ("/box/outside/keep", "k"),
        ("/box/outside/d/keep", "k2"),
        ("/box/case/victim/precious", "v"),
        ("/tmp/sentinel", "t"),
    ] {
        fs_err::write(f, text).unwrap();
    }
    fs_err::set_permissions("/tmp", std::fs::Permissions::from_mode(0o1777)).unwrap();
    fs_err::set_permissions("/box/outside", std::fs::Permissions::from_mode(0o750)).unwrap();
}

/// Removes what a case made, sentinels included, for the next case.
fn clear_box() {
    for e in fs_err::read_dir("/box").unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            if p != Path::new(CACHE) {
                fs_err::remove_dir_all(&p).unwrap();
            }
        } else {
            fs_err::remove_file(&p).unwrap();
        }
    }
    let _ = fs_err::remove_file("/tmp/sentinel");
}

/// The two source trees of the hostile recipe: a package, a file, and a
/// link that leads out of the tree.
fn lay_sources() {
    for d in ["/box/case/src-a/pkg/sub", "/box/case/src-b"] {
        fs_err::create_dir_all(d).unwrap();
    }
    fs_err::write("/box/case/src-a/pkg/m.py", "M = 1\n").unwrap();
    fs_err::write("/box/case/src-a/pkg/sub/n.py", "N = 1\n").unwrap();
    fs_err::write("/box/case/src-a/f.py", "F = 1\n").unwrap();
    symlink(OUTSIDE, "/box/case/src-a/vlink").unwrap();
    symlink(OUTSIDE, "/box/case/src-a/pkg/vlink").unwrap();
    // A link at a mapping's root that stays inside: followed.
    symlink("pkg/sub", "/box/case/src-a/inlink").unwrap();
    fs_err::write("/box/case/src-b/x", "X\n").unwrap();
}

/// Names a recipe may well use: any of them can still collide with another
/// unit's, or fall beneath a link.
fn plain_component() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "zz", "lnk", "vlink", "pkg", "@site@"])
        .prop_map(str::to_string)
        .boxed()
        .prop_union(Just("x".repeat(250)).boxed())
}

/// What a hostile or careless recipe, or a hostile flag, puts there.
fn hostile_component() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        ".",
        "..",
        "",
        "@out@",
        "@webui@",
        ".assemble",
        ".assemble-tmp-0123456789abcdef",
    ])
    .prop_map(str::to_string)
    .boxed()
    .prop_union(Just("y".repeat(256)).boxed())
}

/// A path with `.`, `..`, `//`, variables, absolute roots and long names.
fn hostile_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.3),
        prop::collection::vec(prop_oneof![plain_component(), hostile_component()], 1..4),
    )
        .prop_map(|(abs, cs)| {
            let joined = cs.join("/");
            if abs { format!("/{joined}") } else { joined }
        })
}

/// Nothing, or one of `values`.
fn maybe_one_of(values: Vec<&'static str>) -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(values)).prop_map(|p| p.map(str::to_string))
}

fn prefix() -> impl Strategy<Value = Option<String>> {
    maybe_one_of(vec![
        "/box/p",
        "/",
        "/box",
        "/tmp",
        "/box/case/a/out/..",
        "/box/$(touch /box/pwned)",
        "/box/`touch /box/pwned`",
        "/box/a b",
        "/box/q\"q",
        "/box/s'q",
        "/box/b\\s",
        "relative/p",
    ])
}

fn webui() -> impl Strategy<Value = Option<String>> {
    maybe_one_of(vec![
        "..",
        "../..",
        "/",
        "/box/case",
        "x/../..",
        "/tmp",
        "w",
    ])
}

/// What someone does to the output between two runs.
#[derive(Debug, Clone)]
enum Drift {
    None,
    /// A folder of the output becomes a link to a folder outside.
    FolderToLink(usize),
    /// A file appears in a folder of the output.
    Plant(usize),
    /// An empty `.assemble/` appears at the output's root.
    DotAssemble,
    /// A folder of the output loses its permissions.
    Chmod(usize),
    /// The output itself becomes a link to a folder outside.
    OutToLink,
    /// The output is moved away with `mv`, and a user's folder takes its place.
    Moved,
}

fn drift() -> impl Strategy<Value = Drift> {
    prop_oneof![
        Just(Drift::None),
        any::<usize>().prop_map(Drift::FolderToLink),
        any::<usize>().prop_map(Drift::Plant),
        Just(Drift::DotAssemble),
        any::<usize>().prop_map(Drift::Chmod),
        Just(Drift::OutToLink),
        Just(Drift::Moved),
    ]
}

/// The folders of the output, in order.
fn out_folders() -> Vec<PathBuf> {
    walkdir::WalkDir::new(OUT)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect()
}

fn do_drift(d: &Drift) {
    if !Path::new(OUT).is_dir() {
        return;
    }
    let folders = out_folders();
    let pick = |i: usize| folders[i % folders.len()].clone();
    match d {
        Drift::None => {}
        Drift::FolderToLink(i) => {
            let f = pick(*i);
            if f != Path::new(OUT) {
                fs_err::remove_dir_all(&f).unwrap();
                symlink(OUTSIDE, &f).unwrap();
            }
        }
        Drift::Plant(i) => fs_err::write(pick(*i).join("planted"), "p").unwrap(),
        // (The recipe may itself have put something there.)
        Drift::DotAssemble => {
            let _ = fs_err::create_dir(Path::new(OUT).join(".assemble"));
        }
        Drift::Chmod(i) => {
            fs_err::set_permissions(pick(*i), std::fs::Permissions::from_mode(0o700)).unwrap()
        }
        Drift::OutToLink => {
            fs_err::rename(OUT, "/box/case/a/out.moved").unwrap();
            symlink(OUTSIDE, OUT).unwrap();
        }
        Drift::Moved => {
            fs_err::rename(OUT, "/box/case/a/out.moved").unwrap();
            fs_err::create_dir(OUT).unwrap();
            fs_err::write(Path::new(OUT).join("mine.txt"), "mine").unwrap();
        }
    }
}

#[derive(Debug, Clone)]
struct Hostile {
    targets: [String; 5],
    link: (String, String),
    from: String,
    prefix: Option<String>,
    webui: Option<String>,
    drift: Drift,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        prop::array::uniform5(prop_oneof![
            12 => prop::collection::vec(plain_component(), 0..3).prop_map(Ok),
            1 => hostile_path().prop_map(Err),
        ]),
        (
            prop_oneof![
                6 => prop::collection::vec(plain_component(), 0..3).prop_map(|mut d| {
                    d.push("lnk".into());
                    d.join("/")
                }),
                1 => hostile_path(),
            ],
            prop_oneof![6 => (0..3usize).prop_map(Some), 1 => hostile_path().prop_map(|_| None)],
            hostile_path(),
        ),
        prop_oneof![
            8 => Just("pkg"),
            1 => prop::sample::select(vec!["..", "../..", "pkg/../..", "/box", ".", "pkg//sub", "vlink"]),
        ],
        prefix(),
        webui(),
        drift(),
    )
        .prop_map(|(targets, (link, to, hostile_to), from, prefix, webui, drift)| {
            // Plain targets are folders from the alphabet and a name of their
            // own (they may still fall beneath another unit's file or link).
            let names = ["p1", "f1.py", "v1", "x1", "m1.py"];
            let mut i = 0;
            let targets = targets.map(|t| {
                let name = names[i];
                i += 1;
                t.map_or_else(|h| h, |mut dirs| {
                    dirs.push(name.to_string());
                    dirs.join("/")
                })
            });
            Hostile {
            // A link to one of the installed paths, or to a hostile one.
            link: (link, to.map_or(hostile_to, |i| targets[i].clone())),
            targets,
            from: from.to_string(),
            prefix,
            webui,
            drift,
        }})
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

impl Hostile {
    /// A recipe that builds: each unit's paths under `lib/`, nothing drawn.
    fn sane() -> Hostile {
        Hostile {
            targets: ["lib/pkg", "lib/f.py", "lib/vlink", "lib/x", "lib/m.py"].map(str::to_string),
            link: ("l".into(), "lib/f.py".into()),
            from: "pkg".into(),
            prefix: None,
            webui: None,
            drift: Drift::None,
        }
    }

    fn target(mut self, i: usize, t: &str) -> Hostile {
        self.targets[i] = t.to_string();
        self
    }

    fn link(mut self, link: &str, to: &str) -> Hostile {
        self.link = (link.to_string(), to.to_string());
        self
    }

    fn from(mut self, from: &str) -> Hostile {
        self.from = from.to_string();
        self
    }

    fn prefix(mut self, prefix: &str) -> Hostile {
        self.prefix = Some(prefix.to_string());
        self
    }

    fn webui(mut self, webui: &str) -> Hostile {
        self.webui = Some(webui.to_string());
        self
    }

    fn drift(mut self, drift: Drift) -> Hostile {
        self.drift = drift;
        self
    }

    fn recipe(&self) -> String {
        let [t1, t2, t3, t4, t5] = self.targets.clone().map(|t| toml_str(&t));
        format!(
            r#"[package]
name = "hostile"
version = "0"

[python]
interpreter = "/usr/bin/python3"

[units.a]
path = "src-a"
install = {{ "pkg" = {t1}, "f.py" = {t2}, "inlink" = {t3} }}
symlinks = {{ {} = {} }}

[units.b]
path = "src-b"
install = {{ "x" = {t4} }}

[units.c]
from = {}
install = {{ "m.py" = {t5} }}
"#,
            toml_str(&self.link.0),
            toml_str(&self.link.1),
            toml_str(&format!("a:{}", self.from)),
        )
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "assemble".to_string(),
            "--out".into(),
            OUT.into(),
            "--recipe".into(),
            format!("{CASE}/assemble.toml"),
        ];
        if let Some(p) = &self.prefix {
            a.extend(["--prefix".into(), p.clone()]);
        }
        if let Some(w) = &self.webui {
            a.extend(["--webui".into(), w.clone()]);
        }
        a
    }
}

/// Runs `args` and checks that nothing but the output changed.
fn run_checked(args: &[String], what: &str) -> Result<(i32, String), TestCaseError> {
    let before = sentinel();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = xtask(&args);
    let after = sentinel();
    if before != after {
        let changed: Vec<String> = before
            .iter()
            .filter(|(p, v)| after.get(*p) != Some(v))
            .map(|(p, v)| format!("{}: {v} -> {:?}", p.display(), after.get(p)))
            .chain(
                after
                    .keys()
                    .filter(|p| !before.contains_key(*p))
                    .map(|p| format!("{}: new", p.display())),
            )
            .collect();
        return Err(TestCaseError::fail(format!(
            "{what}: exit {code}, and outside the output:\n{}\n{err}",
            changed.join("\n")
        )));
    }
    Ok((code, err))
}

/// Regression tests for the cases seen to escape (issue 10, items 1 to 5)
/// and a property test over random hostile recipes, flags and drift: the
/// sentinel tree never changes, whatever the exit code; a run that
/// succeeds leaves an output that `verify` accepts (it settles).
#[test]
fn hostile_recipes_never_touch_anything_outside() {
    if !sandboxed("hostile_recipes_never_touch_anything_outside") {
        return;
    }
    let cases: u32 = std::env::var("ASSEMBLE_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let outcomes: std::cell::RefCell<BTreeMap<i32, usize>> = Default::default();
    let result = runner.run(&hostile(), |h| {
        clear_box();
        lay_sentinels();
        lay_sources();
        fs_err::write(Path::new(CASE).join("assemble.toml"), h.recipe()).unwrap();
        let (first, err) = run_checked(&h.args(), "first run")?;
        *outcomes.borrow_mut().entry(first).or_default() += 1;
        if first != 0 && std::env::var_os("ASSEMBLE_HOSTILE_VERBOSE").is_some() {
            eprintln!("exit {first}: {}", err.lines().next().unwrap_or_default());
        }
        do_drift(&h.drift);
        let (second, err) = run_checked(&h.args(), "after drift")?;
        if first == 0 && second == 0 {
            // It settles: the output is what the state says.
            let (code, verr) = xtask(&["verify", "--out", OUT]);
            prop_assert_eq!(code, 0, "verify after two runs:\n{}\n{}", verr, err);
        }
        prop_assert!(!Path::new("/box/pwned").exists(), "a launcher ran code");
        Ok(())
    });
    let outcomes = outcomes.into_inner();
    eprintln!("first-run exit codes over {cases} cases: {outcomes:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every kind of outcome was drawn: successes and refusals.
    assert!(
        outcomes.get(&0).copied().unwrap_or(0) > cases as usize / 20,
        "{outcomes:?}"
    );
    assert!(outcomes.keys().any(|c| *c != 0), "{outcomes:?}");
}

/// One recipe and flags, each a case seen to escape before this fix.
#[test]
fn regressions_seen_escaping() {
    if !sandboxed("regressions_seen_escaping") {
        return;
    }
    let sane = Hostile::sane;
    let cases = [
        // 1. `@out@/escape` with a prefix: an absolute path after expansion.
        (
            "@out@ in a target",
            sane().target(0, "@out@/escape").prefix("/box/p"),
        ),
        // 1. `@webui@/x.py` with `--webui ..`: climbs out.
        (
            "@webui@ with --webui ..",
            sane().target(0, "@webui@/x.py").webui(".."),
        ),
        // 2. A folder of the output replaced by a link to someone's files.
        (
            "folder swapped for a link",
            sane().drift(Drift::FolderToLink(1)),
        ),
        // 3. `.` and empty components.
        ("./y.py", sane().target(0, "./y.py")),
        ("d//y.py", sane().target(0, "d//y.py")),
        // 4. An empty `.assemble/` planted at the root proves nothing.
        ("planted .assemble", sane().drift(Drift::DotAssemble)),
        // 5. Writing beneath a link that a unit's source brings.
        (
            "beneath a source's link",
            sane().target(0, "zz").target(3, "zz/vlink/evil.py"),
        ),
        // 5. Installing beneath the recipe's own link.
        (
            "beneath the recipe's link",
            sane().target(3, "top/x").link("top", "lib/pkg"),
        ),
        // 9. `from` climbing out of its unit.
        ("from ../..", sane().from("../../..")),
        // 7. A name of 250 bytes: its temporary name must fit.
        (
            "long name",
            sane()
                .target(1, &format!("lib/{}", "n".repeat(250)))
                .link("l", "lib/pkg"),
        ),
        // mv within the file system: refused clearly, nothing deleted.
        ("moved output", sane().drift(Drift::Moved)),
    ];
    // Every case runs, and every failure is listed: how each was seen to
    // fail against the code before the fix (ASSEMBLE_TEST_XTASK).
    let mut failed = Vec::new();
    for (name, h) in cases {
        if let Err(e) = regression(name, &h) {
            failed.push(format!("{name}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// `Err(why)` unless `ok`.
fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// One regression case: what the tool must do, else why not.
fn regression(name: &str, h: &Hostile) -> Result<(), String> {
    let checked = |what: &str| run_checked(&h.args(), what).map_err(|e| e.to_string());
    clear_box();
    lay_sentinels();
    lay_sources();
    fs_err::write(Path::new(CASE).join("assemble.toml"), h.recipe()).unwrap();
    let (first, err1) = checked("first run")?;
    do_drift(&h.drift);
    let (second, err2) = checked("second run")?;
    eprintln!("{name}: exit {first}, then {second}");
    match name {
        "folder swapped for a link" | "planted .assemble" | "long name" => {
            ensure((first, second) == (0, 0), || {
                format!("exit {first}, {second}:\n{err1}\n{err2}")
            })?;
            let (code, verr) = xtask(&["verify", "--out", OUT]);
            ensure(code == 0, || format!("verify: {verr}"))?;
            // The edit path too: a second build over the first rewrites.
            let long = Path::new(OUT).join("lib").join("n".repeat(250));
            if long.exists() {
                fs_err::write(Path::new(CASE).join("src-a/f.py"), "F = 2\n").unwrap();
                let (code, e) = checked("an edit")?;
                ensure(code == 0, || e.clone())?;
                let now = fs_err::read_to_string(long).unwrap_or_default();
                ensure(now == "F = 2\n", || format!("not updated: {now:?}\n{e}"))?;
            }
        }
        "moved output" => {
            ensure((first, second) == (0, 1), || {
                format!("exit {first}, {second}:\n{err2}")
            })?;
            ensure(err2.contains("refusing to write into"), || err2.clone())?;
            let mine = fs_err::read_to_string(Path::new(OUT).join("mine.txt")).unwrap_or_default();
            ensure(mine == "mine", || "the user's file was lost".into())?;
            // Moved back, it is ours again.
            fs_err::remove_dir_all(OUT).unwrap();
            fs_err::rename("/box/case/a/out.moved", OUT).unwrap();
            let (code, e) = checked("moved back")?;
            ensure(code == 0, || e)?;
        }
        _ => {
            // 2: the recipe as written is malformed; 1: it is refused once
            // its variables are expanded or its units planned.
            ensure(first == 1 || first == 2, || {
                format!("must be refused, exit {first}:\n{err1}")
            })?;
            ensure(
                err1.contains("output path")
                    || err1.contains("beneath")
                    || err1.contains("sub-folder"),
                || format!("refused for another reason:\n{err1}"),
            )?;
            ensure(!Path::new(OUT).exists(), || {
                "a refused first run created the output".into()
            })?;
        }
    }
    Ok(())
}

/// Launchers: a prefix holding shell syntax runs nothing when a launcher
/// starts; one holding what cannot be carried is refused with exit 2.
#[test]
fn launchers_quote_the_prefix() {
    if !sandboxed("launchers_quote_the_prefix") {
        return;
    }
    let xy = support::python_xy_of("/usr/bin/python3");
    clear_box();
    let venv = Path::new(CASE).join("venv");
    let site = venv.join(format!("lib/python{xy}/site-packages"));
    let dist = site.join("hello-1.0.dist-info");
    fs_err::create_dir_all(&dist).unwrap();
    fs_err::write(
        venv.join("pyvenv.cfg"),
        "home = /usr/bin\ninclude-system-site-packages = false\n",
    )
    .unwrap();
    fs_err::write(
        site.join("hello.py"),
        "def main():\n    print('hello from the launcher')\n",
    )
    .unwrap();
    fs_err::write(
        dist.join("METADATA"),
        "Metadata-Version: 2.1\nName: hello\nVersion: 1.0\n",
    )
    .unwrap();
    fs_err::write(dist.join("RECORD"), "").unwrap();
    fs_err::write(
        dist.join("entry_points.txt"),
        "[console_scripts]\nhello = hello:main\n",
    )
    .unwrap();
    fs_err::write(
        Path::new(CASE).join("assemble.toml"),
        "[package]\nname = \"l\"\nversion = \"0\"\n\n[python]\ninterpreter = \"/usr/bin/python3\"\n\n[units.deps]\nvenv = \"venv\"\nscripts = [\"hello\"]\n",
    )
    .unwrap();
    for (prefix, carried) in [
        ("/box/p $(touch /box/pwned)", true),
        ("/box/p`touch /box/pwned`", true),
        ("/box/p;touch /box/pwned", true),
        ("/box/a b", true),
        ("/box/p\"q", false),
        ("/box/p'q", false),
        ("/box/p\\q", false),
    ] {
        let _ = fs_err::remove_dir_all(STATE);
        let (code, err) = xtask(&[
            "assemble",
            "--out",
            prefix,
            "--recipe",
            "/box/case/assemble.toml",
        ]);
        if !carried {
            assert_eq!(code, 2, "{prefix}: {err}");
            assert!(
                !Path::new(prefix).exists(),
                "{prefix}: refused, yet written"
            );
            continue;
        }
        assert_eq!(code, 0, "{prefix}: {err}");
        let run = Command::new(Path::new(prefix).join("bin/hello"))
            .output()
            .unwrap();
        assert!(
            run.status.success()
                && String::from_utf8_lossy(&run.stdout).contains("hello from the launcher"),
            "{prefix}: {run:?}"
        );
        assert!(
            !Path::new("/box/pwned").exists(),
            "{prefix}: the launcher ran code"
        );
        fs_err::remove_dir_all(prefix).unwrap();
    }
}

/// What a hostile state can be: every state file truncated or with a bit
/// flipped, crafted records naming `..` and absolute paths, links planted
/// where the state lives, an empty or foreign state folder.
#[derive(Debug, Clone)]
enum Corrupt {
    Truncate(usize, f64),
    Flip(usize, f64, u8),
    CraftEntry(&'static str),
    CraftJournal(&'static str),
    LinkAt(&'static str),
    StateDirIsLink,
    EmptyStateDir,
    ForeignOwner,
}

const STATE_FILES: [&str; 6] = [
    "owner.bin",
    "state.bin",
    "state.log",
    "inputs.bin",
    "inputs.log",
    "journal.bin",
];

fn corrupt() -> impl Strategy<Value = Corrupt> {
    let bad = prop::sample::select(vec![
        "../victim",
        "/box/case/victim",
        "..",
        "a/../../victim",
        "./x",
        "",
    ]);
    prop_oneof![
        (any::<usize>(), 0.0..1.0f64).prop_map(|(i, f)| Corrupt::Truncate(i, f)),
        (any::<usize>(), 0.0..1.0f64, 0..8u8).prop_map(|(i, f, b)| Corrupt::Flip(i, f, b)),
        bad.clone().prop_map(Corrupt::CraftEntry),
        bad.prop_map(Corrupt::CraftJournal),
        prop::sample::select(vec![
            "state.bin",
            "state.log",
            "journal.bin",
            "inputs.bin",
            "inputs.log",
            "owner.bin",
            "lock"
        ])
        .prop_map(Corrupt::LinkAt),
        Just(Corrupt::StateDirIsLink),
        Just(Corrupt::EmptyStateDir),
        Just(Corrupt::ForeignOwner),
    ]
}

fn apply_corruption(c: &Corrupt, state: &Path) {
    use assemble_manifest::Kind;
    use assemble_reconcile::{Recorded, State};
    let present: Vec<PathBuf> = STATE_FILES
        .iter()
        .map(|f| state.join(f))
        .filter(|p| p.is_file())
        .collect();
    match c {
        Corrupt::Truncate(i, f) => {
            let p = &present[i % present.len()];
            let b = fs_err::read(p).unwrap();
            fs_err::write(p, &b[..(b.len() as f64 * f) as usize]).unwrap();
        }
        Corrupt::Flip(i, f, bit) => {
            let p = &present[i % present.len()];
            let mut b = fs_err::read(p).unwrap();
            let at = ((b.len() as f64 * f) as usize).min(b.len() - 1);
            b[at] ^= 1 << bit;
            fs_err::write(p, &b).unwrap();
        }
        Corrupt::CraftEntry(bad) => {
            let mut s = State::load(state).unwrap();
            s.entries.merge([(
                bad.to_string(),
                Some(Recorded {
                    kind: Kind::Dir,
                    unit: assemble_manifest::UnitName::from("a"),
                    source_sha: None,
                    stat: None,
                }),
            )]);
            s.store(state).unwrap();
        }
        Corrupt::CraftJournal(bad) => {
            State::write_journal(state, &[bad.to_string()].into()).unwrap();
        }
        Corrupt::LinkAt(name) => {
            let p = state.join(name);
            let _ = fs_err::remove_file(&p);
            symlink("/box/outside/keep", &p).unwrap();
            // And at the temporary names a careless writer would use.
            symlink("/box/outside/keep", state.join("state.tmp")).unwrap();
            symlink("/box/outside/keep", state.join("journal.tmp")).unwrap();
        }
        Corrupt::StateDirIsLink => {
            fs_err::remove_dir_all(state).unwrap();
            symlink(OUTSIDE, state).unwrap();
        }
        Corrupt::EmptyStateDir => {
            fs_err::remove_dir_all(state).unwrap();
            fs_err::create_dir(state).unwrap();
        }
        Corrupt::ForeignOwner => {
            // The owner record of another output, copied over.
            let other =
                assemble_reconcile::Layout::new(Path::new("/box/clean"), Path::new(STATE)).state;
            fs_err::copy(other.join("owner.bin"), state.join("owner.bin")).unwrap();
        }
    }
}

/// A hostile state: nothing outside changes, a file the tool cannot prove
/// its own is never deleted, and the next run equals a clean build (or,
/// when the owner record itself is broken, refuses and changes nothing).
#[test]
fn hostile_state_never_escapes() {
    if !sandboxed("hostile_state_never_escapes") {
        return;
    }
    let sane = Hostile::sane().prefix("/box/p");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&corrupt(), |c| {
        clear_box();
        lay_sentinels();
        lay_sources();
        fs_err::write(Path::new(CASE).join("assemble.toml"), sane.recipe()).unwrap();
        // The clean build to compare with, and the output to corrupt.
        let mut clean_args = sane.args();
        clean_args[2] = "/box/clean".into();
        assert_eq!(
            xtask(&clean_args.iter().map(String::as_str).collect::<Vec<_>>()).0,
            0
        );
        let (code, err) = run_checked(&sane.args(), "first run")?;
        prop_assert_eq!(code, 0, "{}", err);
        // Drift the tool must repair, then the corruption.
        fs_err::write(Path::new(OUT).join("lib/f.py"), "edited").unwrap();
        let before = support::listing(Path::new(OUT));
        let state = assemble_reconcile::Layout::new(Path::new(OUT), Path::new(STATE)).state;
        apply_corruption(&c, &state);
        let (code, err) = run_checked(&sane.args(), "with a corrupt state")?;
        let after = support::listing(Path::new(OUT));
        if code == 0 {
            prop_assert_eq!(after, support::listing(Path::new("/box/clean")), "{}", err);
        } else {
            prop_assert_eq!(code, 1, "{}", err);
            prop_assert!(err.contains("refusing to write into"), "{}", err);
            prop_assert_eq!(after, before, "a refused run changed the output");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Guards the defaults against the build's folder: the output and cache of
/// a recipe outside this checkout go under the target dir of the cargo
/// workspace the recipe is in, or `target/` in the current folder when it
/// is in none, never into the checkout the tool was built in; the state
/// goes to the user's state home, the same for every recipe.
#[test]
fn default_output_and_cache_follow_the_recipe_not_the_build() {
    // Were the defaults wrong, the tool would write into the checkout it
    // was built in: here, a read-only bind.
    if !sandboxed("default_output_and_cache_follow_the_recipe_not_the_build") {
        return;
    }
    let s = support::Scratch::new();
    let write_recipe = |dir: &Path| {
        fs_err::create_dir_all(dir.join("src/app")).unwrap();
        fs_err::write(dir.join("src/app/x.py"), "x = 1\n").unwrap();
        fs_err::write(
            dir.join("assemble.toml"),
            "[package]\nname = \"tiny\"\nversion = \"1\"\n\n[python]\ninterpreter = \"python3\"\ncompile-bytecode = true\n\n[units.app]\npath = \"src\"\ninstall = { \"app\" = \"app\" }\n",
        )
        .unwrap();
    };
    let run = |cwd: &Path, recipe: &Path| {
        let out = Command::new(xtask_bin())
            .args(["assemble", "--recipe"])
            .arg(recipe)
            .current_dir(cwd)
            .env_remove("ASSEMBLE_CACHE_DIR")
            .env_remove("ASSEMBLE_STATE_DIR")
            .env_remove("CARGO_TARGET_DIR")
            .env("XDG_STATE_HOME", "/box/xdg-state")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let built_in = support::root().join("target");
    let before = built_in.join("tiny").exists();

    // In no workspace: target/ in the current folder.
    let lone = s.path("lone");
    write_recipe(&lone);
    let cwd = s.path("elsewhere");
    fs_err::create_dir_all(&cwd).unwrap();
    run(&cwd, &lone.join("assemble.toml"));
    let target = cwd.join("target");
    assert!(target.join("tiny/app/x.py").is_file(), "the output");
    assert!(target.join("assemble-cache/bytecode").is_dir(), "the cache");
    // The state is the user's, whatever the recipe: found from the output's
    // path alone (issue 23).
    assert!(
        !target.join("assemble-state").exists(),
        "no state in target/"
    );
    let states = || {
        fs_err::read_dir("/box/xdg-state/authentik-assemble")
            .unwrap()
            .count()
    };
    assert_eq!(states(), 1, "the state, in XDG_STATE_HOME");

    // In a workspace (its Cargo.toml has [workspace]), from anywhere: its target/.
    let ws = s.path("ws");
    fs_err::create_dir_all(&ws).unwrap();
    fs_err::write(ws.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    write_recipe(&ws.join("deploy"));
    run(&cwd, &ws.join("deploy/assemble.toml"));
    assert!(
        ws.join("target/tiny/app/x.py").is_file(),
        "the workspace's output"
    );
    assert!(ws.join("target/assemble-cache/bytecode").is_dir());
    assert_eq!(states(), 2, "the second output's state beside the first's");

    assert_eq!(
        built_in.join("tiny").exists(),
        before,
        "nothing in the tool's own target/"
    );
}

/// A source whose mapped path (or `from` sub-folder) is, or goes through,
/// a link out of it. Each case was seen to copy the host's file into the
/// output before the fix (issue 20, item 1): `manage.py ->
/// /box/outside/secret` (mode 0640) became a 0644 file of the tree. Now
/// each is refused before anything is written, naming the unit, the link
/// and its target; a link that stays inside is followed.
#[test]
fn links_in_sources_never_lead_out() {
    if !sandboxed("links_in_sources_never_lead_out") {
        return;
    }
    const SECRET: &str = "/box/outside/secret";
    let lay = || {
        clear_box();
        lay_sentinels();
        fs_err::write(SECRET, "s3cret\n").unwrap();
        fs_err::set_permissions(SECRET, std::fs::Permissions::from_mode(0o640)).unwrap();
        for d in ["/box/case/src/scripts", "/box/case/src/pkg"] {
            fs_err::create_dir_all(d).unwrap();
        }
        fs_err::write("/box/case/src/scripts/manage.py", "print('ok')\n").unwrap();
        fs_err::write("/box/case/src/pkg/m.py", "M = 1\n").unwrap();
        symlink(SECRET, "/box/case/src/manage.py").unwrap();
        symlink("scripts/manage.py", "/box/case/src/inside.py").unwrap();
        symlink("../../outside", "/box/case/src/up").unwrap();
        symlink(OUTSIDE, "/box/case/src/pkg/out").unwrap();
    };
    let recipe = |source: &str, units: &str| {
        format!(
            r#"[package]
name = "links"
version = "0"

[python]
interpreter = "/usr/bin/python3"

[units.app]
{source}
{units}
"#
        )
    };
    // A git repository holding the same link, pinned by commit.
    let git_repo = || -> String {
        let repo = "/box/case/repo";
        fs_err::create_dir_all(repo).unwrap();
        symlink(SECRET, format!("{repo}/manage.py")).unwrap();
        fs_err::write(format!("{repo}/ok.py"), "OK = 1\n").unwrap();
        commit_all(repo)
    };
    let refused = [
        (
            "a mapping at a link to a host file",
            r#"path = "src""#.to_string(),
            r#"install = { "manage.py" = "manage.py" }"#,
            "manage.py is a link to /box/outside/secret",
        ),
        (
            "a mapping through a link to a folder outside",
            r#"path = "src""#.to_string(),
            r#"install = { "pkg/out/keep" = "keep" }"#,
            "pkg/out is a link to /box/outside",
        ),
        (
            "a mapping through a link that climbs out",
            r#"path = "src""#.to_string(),
            r#"install = { "up" = "up" }"#,
            "up is a link to ../../outside",
        ),
        (
            "a git source at a commit",
            String::new(),
            r#"install = { "manage.py" = "manage.py" }"#,
            "manage.py is a link to /box/outside/secret",
        ),
    ];
    let mut failed = Vec::new();
    for (name, source, units, says) in refused {
        lay();
        let source = if source.is_empty() {
            let rev = git_repo();
            format!("git = \"file:///box/case/repo\"\nrev = \"{rev}\"")
        } else {
            source
        };
        fs_err::write(
            Path::new(CASE).join("assemble.toml"),
            recipe(&source, units),
        )
        .unwrap();
        let args = Hostile::sane().args();
        let (code, err) = match run_checked(&args, name) {
            Ok(r) => r,
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        if code != 1 || !err.contains("unit app") || !err.contains(says) {
            failed.push(format!(
                "{name}: exit {code}, expected 1 naming `{says}`:\n{err}"
            ));
        }
        if Path::new(OUT).exists() {
            failed.push(format!("{name}: a refused run created the output"));
        }
    }
    // `from` naming a link out of its unit's source.
    lay();
    fs_err::write(
        Path::new(CASE).join("assemble.toml"),
        recipe(
            r#"path = "src""#,
            "install = { \"pkg\" = \"pkg\" }\n\n[units.sub]\nfrom = \"app:up\"\ninstall = { \"keep\" = \"keep\" }",
        ),
    )
    .unwrap();
    match run_checked(&Hostile::sane().args(), "from") {
        Ok((1, err)) if err.contains("unit sub") && err.contains("up is a link") => {}
        Ok((code, err)) => failed.push(format!("from: exit {code}:\n{err}")),
        Err(e) => failed.push(format!("from: {e}")),
    }
    // A venv the recipe names whose pyvenv.cfg is a link to a host file:
    // its lines were rewritten into the tree's pyvenv.cfg before.
    lay();
    support::stdout_ok(Command::new("/usr/bin/python3").args([
        "-m",
        "venv",
        "--without-pip",
        "/box/case/venv",
    ]));
    fs_err::remove_file("/box/case/venv/pyvenv.cfg").unwrap();
    symlink(SECRET, "/box/case/venv/pyvenv.cfg").unwrap();
    fs_err::write(
        Path::new(CASE).join("assemble.toml"),
        recipe("", "").replace(
            "[units.app]\n",
            "[units.deps]\nvenv = \"venv\"\nscripts = []\n",
        ),
    )
    .unwrap();
    match run_checked(&Hostile::sane().args(), "pyvenv.cfg") {
        Ok((1, err)) if err.contains("pyvenv.cfg is a link to /box/outside/secret") => {}
        Ok((code, err)) => failed.push(format!("pyvenv.cfg: exit {code}:\n{err}")),
        Err(e) => failed.push(format!("pyvenv.cfg: {e}")),
    }
    if Path::new(OUT).exists() {
        failed.push("pyvenv.cfg: a refused run created the output".into());
    }
    // A link that stays inside the source is followed.
    lay();
    fs_err::write(
        Path::new(CASE).join("assemble.toml"),
        recipe(
            r#"path = "src""#,
            r#"install = { "inside.py" = "manage.py" }"#,
        ),
    )
    .unwrap();
    match run_checked(&Hostile::sane().args(), "inside") {
        Ok((0, _)) => {
            let m = fs_err::symlink_metadata(Path::new(OUT).join("manage.py")).unwrap();
            let text = fs_err::read_to_string(Path::new(OUT).join("manage.py")).unwrap();
            if !m.is_file() || text != "print('ok')\n" {
                failed.push(format!("inside: manage.py is {m:?}, {text:?}"));
            }
        }
        Ok((code, err)) => failed.push(format!("inside: exit {code}:\n{err}")),
        Err(e) => failed.push(format!("inside: {e}")),
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Guards what discarding a corrupt cache entry may delete: only inside
/// the cache's own folder. Here the cache's `sources` is a link to a folder
/// outside it (someone's choice), and an entry fetched there is then edited:
/// the run must fail naming it and delete nothing there. Before this guard
/// (the entry's path was only checked to be below `--cache-dir` as
/// written) it was discarded through the link and fetched again.
#[test]
fn a_corrupt_entry_outside_the_caches_own_folder_is_not_deleted() {
    if !sandboxed("a_corrupt_entry_outside_the_caches_own_folder_is_not_deleted") {
        return;
    }
    clear_box();
    lay_sentinels();
    let repo = "/box/case/repo";
    fs_err::create_dir_all(format!("{repo}/pkg")).unwrap();
    fs_err::write(format!("{repo}/pkg/m.py"), "M = 1\n").unwrap();
    let rev = commit_all(repo);
    fs_err::write(
        Path::new(CASE).join("assemble.toml"),
        format!(
            "[package]\nname = \"c\"\nversion = \"0\"\n\n[python]\ninterpreter = \"/usr/bin/python3\"\n\n[units.app]\ngit = \"file://{repo}\"\nrev = \"{rev}\"\ninstall = {{ \"pkg\" = \"pkg\" }}\n"
        ),
    )
    .unwrap();
    let cache = "/box/c2";
    fs_err::create_dir_all(cache).unwrap();
    fs_err::create_dir_all("/box/outside/sources").unwrap();
    symlink("/box/outside/sources", format!("{cache}/sources")).unwrap();
    let run = |out: &str| {
        xtask(&[
            "assemble",
            "--recipe",
            &format!("{CASE}/assemble.toml"),
            "--out",
            out,
            "--cache-dir",
            cache,
        ])
    };
    let (code, err) = run(OUT);
    assert_eq!(code, 0, "{err}");
    let entry = fs_err::read_dir("/box/outside/sources")
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("the source fetched through the link");
    fs_err::write(entry.join("pkg/m.py"), "M = 2\n").unwrap();
    let (code, err) = run("/box/case/a/second");
    assert_eq!(code, 1, "must fail, not discard:\n{err}");
    assert!(
        err.contains("is corrupt") && err.contains("pkg/m.py"),
        "{err}"
    );
    assert_eq!(
        fs_err::read_to_string(entry.join("pkg/m.py")).unwrap(),
        "M = 2\n",
        "the entry outside the cache's folder was deleted"
    );
}

/// Makes `repo` a git repository with everything in it committed (links
/// as links), and returns the commit: a `git` source pinned by `rev`.
fn commit_all(repo: &str) -> String {
    let git = |args: &[&str]| {
        support::stdout_ok(
            Command::new("git")
                .args(["-C", repo])
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .env("HOME", "/box"),
        )
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "x"]);
    git(&["rev-parse", "HEAD"])
}
