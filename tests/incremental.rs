//! The incremental model's promise, as a property: after any sequence of
//! changes to the inputs and the recipe, an incremental assemble gives
//! exactly the tree a clean assemble of the same inputs gives.
//!
//! Runs the pipeline in process, through the entry point the command line
//! uses (`assemble_pipeline::assemble`: plan beside the snapshot, lock,
//! deferred hashes, diff, apply), on a small fixture, so that hundreds of
//! random sequences fit in a CI run. Proptest prints the minimal failing
//! sequence of operations.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use assemble_pipeline::{Mode, Options};
use assemble_python::Interpreter;
use proptest::prelude::*;

fn python() -> &'static Interpreter {
    static PY: OnceLock<Interpreter> = OnceLock::new();
    PY.get_or_init(|| assemble_install::probe("python3").unwrap())
}

/// A change to make before the next assemble.
#[derive(Debug, Clone)]
enum Op {
    /// Rewrite a file with other content (its size may change).
    Edit(usize, Vec<u8>),
    /// Overwrite bytes in place, keeping the size, and set the old mtime back.
    EditSameSizeSameMtime(usize, u8),
    Delete(usize),
    /// Add a file (in a new folder when the flag is set).
    Add(String, bool, Vec<u8>),
    Rename(usize, String),
    ToggleExec(usize),
    /// Point the fixture's symlink somewhere else.
    Retarget(u8),
    /// The recipe: the first patch's replacement text.
    PatchText(String),
    /// The recipe: install the `extra` folder or not.
    ToggleInstall,
    /// The recipe: the scripts list.
    ToggleScript,
    /// The recipe: a variable (`@webui@`).
    Webui(Option<String>),
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (any::<usize>(), bytes.clone()).prop_map(|(i, b)| Op::Edit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Op::EditSameSizeSameMtime(i, b)),
        any::<usize>().prop_map(Op::Delete),
        ("[a-z]{1,6}", any::<bool>(), bytes).prop_map(|(n, d, b)| Op::Add(n, d, b)),
        (any::<usize>(), "[a-z]{1,6}").prop_map(|(i, n)| Op::Rename(i, n)),
        any::<usize>().prop_map(Op::ToggleExec),
        any::<u8>().prop_map(Op::Retarget),
        "[a-zA-Z0-9 ]{0,12}".prop_map(Op::PatchText),
        Just(Op::ToggleInstall),
        Just(Op::ToggleScript),
        proptest::option::of("/[a-z]{1,8}").prop_map(Op::Webui),
    ]
}

/// The fixture: a fake venv and an authentik-shaped source, and the recipe
/// settings the operations change.
struct Fixture {
    root: PathBuf,
    patch_with: String,
    install_extra: bool,
    scripts: bool,
    webui: Option<String>,
}

const SETTINGS: &str = "BASE_DIR = Path(__file__).absolute().parent.parent.parent\n";

impl Fixture {
    fn new(root: &Path) -> Fixture {
        let site = root.join(format!("venv/lib/{}/site-packages", python().name()));
        let files: &[(&str, &str)] = &[
            ("venv/pyvenv.cfg", "home = /usr/bin\nversion = 3\n"),
            ("app/authentik/__init__.py", ""),
            ("app/authentik/root/settings.py", SETTINGS),
            (
                "app/authentik/lib/default.yml",
                "blueprints_dir: /blueprints\n",
            ),
            ("app/lifecycle/ak", "#!/usr/bin/env -S bash\necho ak\n"),
            ("app/blueprints/a.yaml", "a: 1\n"),
            ("app/blueprints/sub/b.yaml", "b: 2\n"),
            ("app/extra/x.txt", "x\n"),
        ];
        for (p, c) in files {
            let p = root.join(p);
            fs_err::create_dir_all(p.parent().unwrap()).unwrap();
            fs_err::write(&p, c).unwrap();
        }
        let pkg = site.join("tool");
        fs_err::create_dir_all(&pkg).unwrap();
        fs_err::write(pkg.join("__init__.py"), "def main():\n    return 0\n").unwrap();
        fs_err::write(pkg.join("data.bin"), [0u8, 1, 2]).unwrap();
        let di = site.join("tool-1.0.dist-info");
        fs_err::create_dir_all(&di).unwrap();
        fs_err::write(di.join("METADATA"), "Name: tool\nVersion: 1.0\n\n").unwrap();
        fs_err::write(
            di.join("entry_points.txt"),
            "[console_scripts]\ntool = tool:main\ntool2 = tool:main\n",
        )
        .unwrap();
        fs_err::write(di.join("RECORD"), "tool/__init__.py,,\n").unwrap();
        fs_err::os::unix::fs::symlink("root/settings.py", root.join("app/authentik/link")).unwrap();
        Fixture {
            root: root.to_path_buf(),
            patch_with: "BASE_DIR = Path(\"@out@\")".into(),
            install_extra: true,
            scripts: true,
            webui: None,
        }
    }

    fn recipe(&self) -> String {
        let extra = if self.install_extra {
            ", \"extra\" = \"share/extra\""
        } else {
            ""
        };
        let scripts = if self.scripts {
            "\"tool\", \"tool2\""
        } else {
            "\"tool\""
        };
        format!(
            r#"[package]
name = "prop"
version = "1"
[python]
interpreter = "{python}"
[units.deps]
venv = "venv"
scripts = [{scripts}]
[units.app]
path = "app"
install = {{ "authentik" = "@site@/authentik", "lifecycle" = "@site@/lifecycle", "blueprints" = "blueprints"{extra} }}
executable = ["@site@/lifecycle/ak"]
symlinks = {{ "lifecycle" = "@site@/lifecycle" }}
[[units.app.patch]]
file = "@site@/authentik/root/settings.py"
replace = "BASE_DIR = Path(__file__).absolute().parent.parent.parent"
with = '{with}'
[[units.app.patch]]
file = "@site@/authentik/lib/default.yml"
replace = "blueprints_dir: /blueprints"
with = "blueprints_dir: @webui@/blueprints"
"#,
            with = self.patch_with.replace('\'', ""),
            // The interpreter's own path, not a name on PATH: a pyenv shim
            // there is a script, probed anew on every run.
            python = python().executable.display(),
        )
    }

    /// Files an operation may touch: everything but the patch targets.
    fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(&self.root)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .filter(|p| {
                let s = p.to_string_lossy();
                !s.ends_with("settings.py")
                    && !s.ends_with("default.yml")
                    && !s.ends_with("pyvenv.cfg")
                    && !s.ends_with("entry_points.txt")
                    && !s.ends_with("lifecycle/ak")
            })
            .collect();
        v.retain(|p| p.starts_with(self.root.join("app")) || p.starts_with(self.root.join("venv")));
        v
    }

    fn apply(&mut self, op: &Op) {
        let files = self.files();
        let pick = |i: usize| files.get(i % files.len().max(1)).cloned();
        match op {
            Op::Edit(i, bytes) => {
                if let Some(f) = pick(*i) {
                    fs_err::write(f, bytes).unwrap();
                }
            }
            Op::EditSameSizeSameMtime(i, b) => {
                if let Some(f) = pick(*i) {
                    let meta = fs_err::metadata(&f).unwrap();
                    let mtime = meta.modified().unwrap();
                    let mut content = fs_err::read(&f).unwrap();
                    if content.is_empty() {
                        return;
                    }
                    content[0] = content[0].wrapping_add(1 + b % 200);
                    fs_err::write(&f, &content).unwrap();
                    let file = fs_err::File::options().write(true).open(&f).unwrap();
                    file.file().set_modified(mtime).unwrap();
                }
            }
            Op::Delete(i) => {
                if let Some(f) = pick(*i) {
                    fs_err::remove_file(f).unwrap();
                }
            }
            Op::Add(name, new_dir, bytes) => {
                let dir = if *new_dir {
                    self.root.join("app/blueprints").join(format!("d{name}"))
                } else {
                    self.root.join("app/authentik")
                };
                fs_err::create_dir_all(&dir).unwrap();
                fs_err::write(dir.join(format!("{name}.py")), bytes).unwrap();
            }
            Op::Rename(i, name) => {
                if let Some(f) = pick(*i) {
                    let to = f.with_file_name(format!("{name}.txt"));
                    if !to.exists() {
                        fs_err::rename(f, to).unwrap();
                    }
                }
            }
            Op::ToggleExec(i) => {
                if let Some(f) = pick(*i) {
                    let mode = fs_err::metadata(&f).unwrap().permissions().mode();
                    fs_err::set_permissions(&f, std::fs::Permissions::from_mode(mode ^ 0o111))
                        .unwrap();
                }
            }
            Op::Retarget(t) => {
                let link = self.root.join("app/authentik/link");
                let _ = fs_err::remove_file(&link);
                let target = [
                    "root/settings.py",
                    "__init__.py",
                    "missing",
                    "../lifecycle/ak",
                ][*t as usize % 4];
                fs_err::os::unix::fs::symlink(target, link).unwrap();
            }
            Op::PatchText(t) => self.patch_with = format!("BASE_DIR = Path(\"@out@\") # {t}"),
            Op::ToggleInstall => self.install_extra = !self.install_extra,
            Op::ToggleScript => self.scripts = !self.scripts,
            Op::Webui(w) => self.webui = w.clone(),
        }
    }

    /// Assembles into `out` (incrementally, with its state) through the
    /// pipeline's one entry point, as `cargo xtask assemble` does, and
    /// returns the tree's listing and the NAR hash the run reported.
    fn assemble(&self, out: &Path) -> (Vec<String>, String) {
        let file = self.root.join("assemble.toml");
        fs_err::write(&file, self.recipe()).unwrap();
        let opts = Options {
            prefix: Some(PathBuf::from("/opt/prop")),
            webui: self.webui.clone(),
            offline: true,
            // A zero racy window: the stat cache is trusted even for files
            // changed a moment ago, so that this test exercises it.
            racy_window: Duration::ZERO,
            nar_hash: true,
            ..Options::new(
                file,
                out.to_path_buf(),
                self.root.join("state"),
                self.root.join("cache"),
            )
        };
        let report = assemble_pipeline::assemble(&opts, Mode::Apply, &|_| {}).unwrap();
        assert!(!report.dry_run);
        let hash = report.nar_hash.expect("asked for").to_sri();
        (support::listing(out), hash)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// The NAR hash each run reports is checked too: the incremental run's
    /// (remembered when the manifest did not change, else computed) equals
    /// the clean build's, and the last one equals Nix's `nix hash path`.
    #[test]
    fn incremental_equals_clean(ops in proptest::collection::vec(op(), 1..7)) {
        let tmp = tempfile::tempdir().unwrap();
        let mut fx = Fixture::new(tmp.path());
        let out = tmp.path().join("out");
        let (first, _) = fx.assemble(&out);
        prop_assert!(!first.is_empty());
        let mut last = String::new();
        for (i, op) in ops.iter().enumerate() {
            fx.apply(op);
            let incremental = fx.assemble(&out);
            let clean_dir = tmp.path().join(format!("clean{i}"));
            let clean = fx.assemble(&clean_dir);
            prop_assert_eq!(&incremental, &clean, "after step {} ({:?})", i + 1, op);
            // And a no-op run right after changes nothing.
            let again = fx.assemble(&out);
            prop_assert_eq!(&again, &clean, "no-op after step {}", i + 1);
            last = again.1;
        }
        prop_assert_eq!(last, support::nix_hash_path(&out), "nix hash path of the output");
    }
}
