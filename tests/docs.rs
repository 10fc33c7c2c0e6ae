//! The commands the README and `docs/` show, run as a reader would run
//! them: every fenced `sh` or `console` block must be marked `checked`
//! (```` ```console checked ````), and each checked block runs, in file
//! order, in one copy of the checkout inside the sandbox (the blocks deploy
//! to `/opt/authentik`: a throwaway root makes that harmless).
//!
//! The README's Quick start block is the one exception to the marker:
//! its two commands stand alone there, as the README's first lines; it
//! is run all the same.
//!
//! - `sh checked`: the block is one bash script (`set -euo pipefail`) that
//!   must exit 0.
//! - `console checked`: each `$ ` line is a command that must exit 0; the
//!   lines after it, up to the next command, are what it prints (stdout and
//!   stderr as a terminal shows them, merged). `…` in a line stands for any
//!   text, and a line of `…` alone for any number of lines.
//!
//! `cargo xtask` runs the binary under test (a shell function in each
//! script); `cargo xtask test`, the README's second command, is the one
//! command not run here: it is what runs this test, and `.ci/run` runs it.
//! `registry.example.com` is a real OCI registry on loopback
//! (docker-registry), started for the run.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support;

/// A fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    file: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    checked: bool,
    body: String,
}

impl Block {
    fn at(&self) -> String {
        let rel = self
            .file
            .strip_prefix(support::root())
            .unwrap_or(&self.file);
        format!("{}:{}", rel.display(), self.line)
    }
}

/// The README, then `docs/*.md` in name order: the order a reader meets
/// them, and the order their blocks run in.
fn documents() -> Vec<PathBuf> {
    let root = support::root();
    let mut docs: Vec<PathBuf> = fs_err::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    std::iter::once(root.join("README.md"))
        .chain(docs)
        .collect()
}

/// Every fenced block (```` ``` ```` at the start of a line) of `file`.
fn blocks(file: &Path) -> Vec<Block> {
    let text = fs_err::read_to_string(file).unwrap();
    let readme = file == support::root().join("README.md");
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    let mut section = "";
    for (i, line) in text.lines().enumerate() {
        let Some(info) = line.strip_prefix("```") else {
            match open.as_mut() {
                Some(b) => {
                    b.body.push_str(line);
                    b.body.push('\n');
                }
                None => section = line.strip_prefix("## ").unwrap_or(section),
            }
            continue;
        };
        match open.take() {
            Some(b) => found.push(b),
            None => {
                let mut words = info.split_whitespace();
                let lang = words.next().unwrap_or_default().to_string();
                let quick_start = readme && section == "Quick start" && lang == "sh";
                let checked = quick_start || words.any(|w| w == "checked");
                open = Some(Block {
                    file: file.to_path_buf(),
                    line: i + 1,
                    lang,
                    checked,
                    body: String::new(),
                });
            }
        }
    }
    assert!(
        open.is_none(),
        "{}: a fence is never closed",
        file.display()
    );
    found
}

const SHELLS: [&str; 5] = ["sh", "bash", "shell", "console", "shell-session"];

/// Guards the rule the harness rests on: a command shown in a shell block
/// is a command a test runs. A block with no language would dodge it.
#[test]
fn every_shell_block_of_the_docs_is_checked() {
    let mut wrong = Vec::new();
    for doc in documents() {
        for b in blocks(&doc) {
            if b.lang.is_empty() {
                wrong.push(format!(
                    "{}: a block with no language (text, toml, sh checked, ...)",
                    b.at()
                ));
            } else if SHELLS.contains(&b.lang.as_str()) && !b.checked {
                wrong.push(format!(
                    "{}: a `{}` block not marked `checked`",
                    b.at(),
                    b.lang
                ));
            } else if b.checked && !["sh", "console"].contains(&b.lang.as_str()) {
                wrong.push(format!(
                    "{}: only `sh` and `console` blocks are run",
                    b.at()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let readme = blocks(&support::root().join("README.md"));
    let first = readme.first().expect("the README has blocks");
    assert!(
        first.checked && first.lang == "sh" && first.body.lines().count() == 2,
        "the README's first block is the Quick start's two commands, run: {first:?}"
    );
}

/// One command of a `console` block and what it prints.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

fn steps(body: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in body.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else {
            steps
                .last_mut()
                .expect("a console block starts with `$ `")
                .expected
                .push(line.to_string());
        }
    }
    steps
}

/// Whether `text` matches `pattern`, where `…` stands for any text.
fn line_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `lines` match `pattern`, where a line of `…` alone stands for
/// any number of lines.
fn lines_match(pattern: &[String], lines: &[&str]) -> bool {
    match pattern.split_first() {
        None => lines.is_empty(),
        Some((p, rest)) if p.trim() == "…" => {
            (0..=lines.len()).any(|skip| lines_match(rest, &lines[skip..]))
        }
        Some((p, rest)) => lines.split_first().is_some_and(|(l, more)| {
            line_matches(p.trim_end(), l.trim_end()) && lines_match(rest, more)
        }),
    }
}

#[test]
fn the_pattern_rules_read_as_documented() {
    assert!(line_matches("a … c", "a b c"));
    assert!(line_matches("/…/target", "/x/y/target"));
    assert!(!line_matches("/…/target", "/x/y/target/z"));
    assert!(line_matches("…", ""));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("x…x", "xx"));
    assert!(!line_matches("x…x", "x"));
    let p: Vec<String> = ["…", "b", "…"].map(String::from).to_vec();
    assert!(lines_match(&p, &["a", "b", "c"]));
    assert!(lines_match(&p, &["b"]));
    assert!(!lines_match(&p, &["a", "c"]));
    assert!(lines_match(&[], &[]));
    assert!(!lines_match(&[], &["a"]));
}

/// What each script starts with: strict bash, and `cargo xtask` the binary
/// under test (cargo's own `-q` before `xtask` accepted, as cargo does).
const PRELUDE: &str = r#"set -euo pipefail
cargo() {
  if [ "${1-}" = -q ]; then shift; fi
  if [ "${1-}" != xtask ]; then echo "docs: only \`cargo xtask\` runs here" >&2; return 127; fi
  shift
  "$ASSEMBLE_DOCS_XTASK" "$@"
}
"#;

/// The README's second command: run by CI (`.ci/run`), which runs this.
const LEFT_TO_CI: &str = "cargo xtask test";

struct Runner {
    /// The copy of the checkout the commands run in.
    cwd: PathBuf,
    /// A new home: the reader's caches and state start empty.
    home: PathBuf,
    /// The temporary folder (uv leaves a lock file per interpreter there).
    tmp: PathBuf,
    /// `127.0.0.1:PORT`, for `registry.example.com`.
    registry: String,
}

/// The test machine's settings a reader does not have: the commands use
/// their defaults (the machine's way to the package registries is kept).
const NOT_THE_READERS: [&str; 9] = [
    "CARGO_TARGET_DIR",
    "ASSEMBLE_CACHE_DIR",
    "ASSEMBLE_STATE_DIR",
    "ASSEMBLE_PYTHON",
    "ASSEMBLE_LINK_MODE",
    "ASSEMBLE_CACHE_REGISTRY",
    "ASSEMBLE_CACHE_REGISTRY_READ_ONLY",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
];

impl Runner {
    /// Runs `script` with bash in the copy, stdout and stderr merged.
    fn run(&self, script: &str) -> (bool, String) {
        let script = script.replace("registry.example.com", &self.registry);
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("{PRELUDE}exec 2>&1\n{script}"))
            .current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env("TMPDIR", &self.tmp)
            .env("ASSEMBLE_DOCS_XTASK", support::xtask_bin());
        for var in NOT_THE_READERS {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), text)
    }

    fn sh(&self, b: &Block) {
        let script: String = b
            .body
            .lines()
            .filter(|l| l.trim() != LEFT_TO_CI)
            .map(|l| format!("{l}\n"))
            .collect();
        let (ok, text) = self.run(&script);
        assert!(
            ok,
            "{}: the block failed:\n{}\n--- it printed:\n{text}",
            b.at(),
            b.body
        );
    }

    fn console(&self, b: &Block) {
        for step in steps(&b.body) {
            let (ok, text) = self.run(&step.command);
            let lines: Vec<&str> = text.lines().collect();
            assert!(ok, "{}: `{}` failed:\n{text}", b.at(), step.command);
            assert!(
                lines_match(&step.expected, &lines),
                "{}: `{}` printed what the block does not show\n--- shown:\n{}\n--- printed:\n{text}",
                b.at(),
                step.command,
                step.expected.join("\n")
            );
        }
    }
}

/// Copies the checkout's own files (not `target/`, not `.git`) to `to`.
fn copy_checkout(to: &Path) {
    let root = support::root();
    for e in walkdir::WalkDir::new(&root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() == 1
                && [".git", "target"].contains(&e.file_name().to_str().unwrap_or_default()))
        })
    {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(&root).unwrap());
        let kind = e.file_type();
        if kind.is_dir() {
            fs_err::create_dir_all(&dest).unwrap();
        } else if kind.is_symlink() {
            fs_err::os::unix::fs::symlink(fs_err::read_link(e.path()).unwrap(), &dest).unwrap();
        } else {
            fs_err::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Guards every command the README and `docs/` show: each checked block
/// runs, in order, and prints what it shows.
#[test]
fn every_command_shown_runs_as_shown() {
    if !support::sandbox::sandboxed("docs::every_command_shown_runs_as_shown") {
        return;
    }
    let ci = fs_err::read_to_string(support::root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == LEFT_TO_CI),
        ".ci/run runs `{LEFT_TO_CI}`, the one command shown that this test leaves to it"
    );
    // The sandbox's root is empty; a reader's machine has /opt and /srv.
    fs_err::create_dir_all("/opt").unwrap();
    fs_err::create_dir_all("/srv").unwrap();
    let scratch = tempfile::tempdir_in("/box").unwrap();
    let cwd = scratch.path().join("authentik-assemble");
    copy_checkout(&cwd);
    let home = scratch.path().join("home");
    fs_err::create_dir_all(&home).unwrap();
    let tmp = scratch.path().join("tmp");
    fs_err::create_dir_all(&tmp).unwrap();
    // The commands deploy into /opt and /srv; nothing else of the root
    // may change.
    let (opt, srv) = (Path::new("/opt"), Path::new("/srv"));
    let outside = support::sandbox::snapshot(&[scratch.path(), opt, srv]);
    let registry = support::registry::Registry::start(&scratch.path().join("registry"));
    let runner = Runner {
        cwd,
        home,
        tmp,
        registry: registry.host.clone(),
    };
    let mut ran = 0;
    for doc in documents() {
        for b in blocks(&doc).into_iter().filter(|b| b.checked) {
            match b.lang.as_str() {
                "sh" => runner.sh(&b),
                "console" => runner.console(&b),
                other => panic!("{}: a checked `{other}` block", b.at()),
            }
            ran += 1;
        }
    }
    assert!(ran >= 8, "{ran} checked blocks ran");
    drop(registry);
    let after = support::sandbox::snapshot(&[scratch.path(), opt, srv]);
    assert_eq!(outside, after, "the sandbox's root changed");
}
