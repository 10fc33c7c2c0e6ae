//! The import rows: a start's imports of real packages from trees with and
//! without the tool's bytecode, against the interpreter's own pycs.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::bail;

use super::measure::{Series, Stats, measure_interleaved};

pub(crate) const IMPORT_WITH: &str =
    "import django, rest_framework, cryptography, pydantic: the tree's bytecode";
pub(crate) const IMPORT_WITHOUT: &str =
    "import django, rest_framework, cryptography, pydantic: no bytecode";
pub(crate) const IMPORT_OWN: &str =
    "import django, rest_framework, cryptography, pydantic: the interpreter's own pycs";
/// What the import rows install (pinned), and import.
const IMPORT_SET: &[&str] = &[
    "django==5.2.19",
    "djangorestframework==3.18.3",
    "cryptography==50.0.2",
    "pydantic==2.14.4",
];
/// What an app's start imports of them (the packages' top levels are
/// mostly lazy): models, forms and templates, DRF's fields, X.509, a model.
/// The import rows' venv, in the bench folder, kept from one run to the next.
pub(crate) const IMPORT_VENV: &str = "import-venv";
const IMPORT_CODE: &str = "import django.db.models, django.forms, django.template, rest_framework.fields, cryptography.x509; from pydantic import BaseModel";

/// A start's imports of a heavy set of real packages (a venv made once
/// with pip, in `root/import-venv`), from a tree assembled with its
/// bytecode, from one without (`-B`: nothing is written back, as when
/// every assemble removed what the interpreter wrote), and from one where
/// a first start wrote the interpreter's own pycs: the most bytecode can
/// give, against which the first two are read.
pub(crate) fn import_times(
    sh: &crate::shell::Shell,
    root: &Path,
    python: &Path,
    exe: &Path,
    cache: &Path,
    runs: usize,
) -> anyhow::Result<Vec<Stats>> {
    let venv = root.join(IMPORT_VENV);
    if !venv.join("pyvenv.cfg").is_file() {
        sh.status(
            "Installing",
            format!("{} (once) for the import rows", IMPORT_SET.join(" ")),
        );
        let ok = Command::new(python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?
            .success()
            && Command::new(venv.join("bin/python"))
                // No pycs: the trees leave the venv's own out, and the
                // import-own tree's first start writes them.
                .args(["-m", "pip", "install", "-q", "--no-compile"])
                .arg("--disable-pip-version-check")
                .args(IMPORT_SET)
                .status()?
                .success();
        if !ok {
            let _ = fs_err::remove_dir_all(&venv);
            bail!(
                "could not install {} for the import rows",
                IMPORT_SET.join(" ")
            );
        }
    }
    let mut trees = Vec::new();
    for (name, bytecode) in [
        ("import-with", true),
        ("import-without", false),
        ("import-own", false),
    ] {
        let recipe = root.join(format!("{name}.toml"));
        fs_err::write(
            &recipe,
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0\"\n[python]\ninterpreter = {:?}\ncompile-bytecode = {bytecode}\n[units.deps]\nvenv = \"{IMPORT_VENV}\"\nscripts = []\n",
                python.display().to_string()
            ),
        )?;
        let out = root.join(format!("out-{name}"));
        let status = Command::new(exe)
            .arg("assemble")
            .arg("--recipe")
            .arg(&recipe)
            .arg("--out")
            .arg(&out)
            .arg("--cache-dir")
            .arg(cache)
            .arg("--state-dir")
            .arg(root.join(format!("state-{name}")))
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("assembling the {name} tree failed");
        }
        trees.push(out);
    }
    let with = trees[0].join("bin/python");
    let without = trees[1].join("bin/python");
    // The floor: what the interpreter's own timestamp pycs give, once a
    // first start has written them (into a tree that no assemble touches
    // again before the runs; whatever the environment says about writing).
    let own = trees[2].join("bin/python");
    let first = Command::new(&own)
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .args(["-c", IMPORT_CODE])
        .status()?;
    if !first.success() {
        bail!("the first start of the import-own tree failed");
    }
    measure_interleaved(
        runs,
        vec![
            Series {
                name: IMPORT_WITH,
                setup: Box::new(|_| Ok(())),
                cmd: Box::new(|| {
                    let mut c = Command::new(&with);
                    c.args(["-c", IMPORT_CODE]);
                    c
                }),
            },
            Series {
                name: IMPORT_WITHOUT,
                setup: Box::new(|_| Ok(())),
                cmd: Box::new(|| {
                    let mut c = Command::new(&without);
                    c.args(["-B", "-c", IMPORT_CODE]);
                    c
                }),
            },
            Series {
                name: IMPORT_OWN,
                setup: Box::new(|_| Ok(())),
                cmd: Box::new(|| {
                    let mut c = Command::new(&own);
                    c.args(["-c", IMPORT_CODE]);
                    c
                }),
            },
        ],
    )
}
