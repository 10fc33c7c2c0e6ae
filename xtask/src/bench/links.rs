//! The hard-link rows: the bench's venv as a unit the cache holds (a `url`
//! source: a tar of it, pinned by the venv's NAR hash, fetched once from a
//! `file://` URL), built cold with `--link-mode copy` and `hardlink`,
//! taking turns with `cp -a` of the same files. The bench's own recipe
//! takes the venv from a folder of yours, which `hardlink` never links.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use super::measure::{Series, Stats, measure_interleaved};
use super::{Bench, fresh};

pub(crate) const CP_LIB: &str = "cp -a of the venv's lib";
pub(crate) const FETCHED_COPY: &str = "cold assemble of the venv's lib from the cache, copy";
pub(crate) const FETCHED_HARDLINK: &str =
    "cold assemble of the venv's lib from the cache, hardlink";

/// The rows (see the module doc). `python`: the interpreter the recipe names.
pub(crate) fn link_rows(b: &Bench, python: &Path) -> anyhow::Result<Vec<Stats>> {
    let venv = b.input_dir.join("venv");
    let tar = b.root.join("venv.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&b.input_dir)
        .arg("-cf")
        .arg(&tar)
        .arg("venv")
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!("tar of the venv: {}", String::from_utf8_lossy(&out.stderr));
    }
    let hash = assemble_nar::nar_hash(&venv)?.to_sri();
    let recipe = b.root.join("links.toml");
    fs_err::write(
        &recipe,
        format!(
            "[package]\nname = \"bench-links\"\nversion = \"0\"\n\n[python]\ninterpreter = \"{}\"\ncompile-bytecode = false\n\n[units.bulk]\nurl = \"file://{}\"\nhash = \"{hash}\"\ninstall = {{ \"lib\" = \"lib\" }}\n",
            python.display(),
            tar.display()
        ),
    )?;
    let (out, state, copy) = (
        b.root.join("out-links"),
        b.root.join("state-links"),
        b.root.join("copy-links"),
    );
    let build = |mode: &str| {
        let mut c = b.assemble_into(&recipe, &out, &state);
        c.args(["--link-mode", mode]);
        c
    };
    // Fetched once, untimed: the rows start from a cache that holds it.
    let warm = build("copy").output().context("fetching the venv's tar")?;
    if !warm.status.success() {
        bail!(
            "fetching the venv's tar: {}",
            String::from_utf8_lossy(&warm.stderr)
        );
    }
    let cold = |_| {
        fresh(&out)?;
        fresh(&state)
    };
    let series = vec![
        Series {
            name: CP_LIB,
            setup: Box::new(|_| super::empty(&copy)),
            cmd: Box::new(|| {
                let mut c = Command::new("cp");
                c.arg("-a").arg(venv.join("lib")).arg(&copy);
                c
            }),
        },
        Series {
            name: FETCHED_COPY,
            setup: Box::new(cold),
            cmd: Box::new(|| build("copy")),
        },
        Series {
            name: FETCHED_HARDLINK,
            setup: Box::new(cold),
            cmd: Box::new(|| build("hardlink")),
        },
    ];
    let rows = measure_interleaved(b.runs, series)?;
    // The row measured links: the last run's report says how many.
    super::check_copies(&build("hardlink"), &[&out, &state], "linked")?;
    for dir in [&out, &state, &copy] {
        fresh(dir)?;
    }
    fs_err::remove_file(&tar)?;
    Ok(rows)
}
