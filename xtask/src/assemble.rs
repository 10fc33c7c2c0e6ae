//! `cargo xtask assemble`: recipe -> plan -> reconcile -> report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use assemble_plan::{Context, plan};
use assemble_python::{Interpreter, find_program};
use assemble_recipe::Recipe;
use assemble_reconcile::{Lock, Outcome, reconcile};
use serde::Serialize;

use crate::context::Workspace;
use crate::{AssembleArgs, Failure};

#[derive(Serialize)]
struct UnitReport {
    status: &'static str,
    entries: usize,
    written: usize,
    removed: usize,
}

#[derive(Serialize)]
struct Change<'a> {
    path: &'a str,
    reason: assemble_reconcile::Reason,
    because: String,
}

#[derive(Serialize)]
struct Report<'a> {
    output: &'a Path,
    prefix: &'a str,
    files_written: usize,
    files_removed: usize,
    dirs_created: usize,
    units: BTreeMap<&'a str, UnitReport>,
    warnings: &'a [String],
    /// ELF files whose runpath or interpreter autoPatchelf set.
    elf_patched: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<Vec<Change<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elf: Option<&'a [assemble_elf::Decision]>,
    seconds: f64,
}

pub fn run(args: &AssembleArgs) -> Result<(), Failure> {
    let start = Instant::now();
    let ws = Workspace::locate()?;
    let recipe = ws.recipe(&args.common)?;

    let python = Interpreter::probe(&recipe.interpreter)
        .with_context(|| format!("[python] interpreter in {}", recipe.file.display()))?;
    let bash = find_program("bash")
        .ok_or_else(|| anyhow!("bash not found on PATH; @bash@ needs it (install bash)"))?;
    let out = args
        .out
        .as_ref()
        .map(|o| ws.cwd.join(o))
        .unwrap_or_else(|| ws.target_dir.join(&recipe.name));
    let out = normalize(&out);
    let prefix = match &args.prefix {
        Some(p) if p.is_absolute() => normalize(p),
        Some(p) => {
            return Err(Failure {
                code: 2,
                error: anyhow!("--prefix {} must be an absolute path", p.display()),
            });
        }
        None => out.clone(),
    };
    let prefix = prefix.to_string_lossy().into_owned();
    let cache = ws.cache(args.common.cache_dir.as_deref());

    let ctx = Context {
        prefix: prefix.clone(),
        python,
        bash,
        webui: args.webui.clone(),
        cache,
        offline: args.common.offline,
    };
    let quiet = args.json;
    let progress = move |m: &str| {
        if !quiet {
            eprintln!("{:>12} {m}", "Preparing");
        }
    };
    // Plan first, without the lock: planning only reads inputs and fills the
    // cache, and a run that fails here leaves no trace in the output.
    let plan = plan(&recipe, &ctx, &progress)?;
    let lock = match Lock::try_acquire(&out)? {
        Some(l) => l,
        None if args.no_wait => {
            return Err(anyhow!(
                "another assemble is writing {} (--no-wait was given)",
                out.display()
            )
            .into());
        }
        None => {
            eprintln!("    Blocking waiting for the lock on {}", out.display());
            Lock::acquire(&out)?
        }
    };

    let outcome = reconcile(&out, &plan.desired, &lock)
        .with_context(|| format!("writing the output {}", out.display()))?;
    drop(lock);

    report(
        args,
        &recipe,
        &plan,
        &outcome,
        &out,
        &prefix,
        start.elapsed().as_secs_f64(),
    );
    Ok(())
}

fn report(
    args: &AssembleArgs,
    recipe: &Recipe,
    plan: &assemble_plan::Plan,
    o: &Outcome,
    out: &Path,
    prefix: &str,
    seconds: f64,
) {
    let units: BTreeMap<&str, UnitReport> = recipe
        .units
        .iter()
        .map(|u| {
            let c = o.units.get(&u.name).cloned().unwrap_or_default();
            let status = if c.written + c.removed > 0 {
                "built"
            } else {
                "fresh"
            };
            (
                u.name.as_str(),
                UnitReport {
                    status,
                    entries: c.entries,
                    written: c.written,
                    removed: c.removed,
                },
            )
        })
        .collect();
    if args.json {
        let changes = args.verbose.then(|| {
            o.changes
                .iter()
                .map(|(p, r)| Change {
                    path: p,
                    reason: *r,
                    because: r.to_string(),
                })
                .collect()
        });
        let r = Report {
            output: out,
            prefix,
            files_written: o.files_written,
            files_removed: o.files_removed,
            dirs_created: o.dirs_created,
            units,
            warnings: &plan.warnings,
            elf_patched: plan.elf.iter().filter(|d| d.changes()).count(),
            changes,
            elf: args.verbose.then_some(plan.elf.as_slice()),
            seconds,
        };
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return;
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    for u in &recipe.units {
        let r = &units[u.name.as_str()];
        if r.status == "built" {
            eprintln!(
                "{:>12} {} ({} paths: {} written, {} removed)",
                "Built", u.name, r.entries, r.written, r.removed
            );
        } else {
            eprintln!("{:>12} {} ({} paths)", "Fresh", u.name, r.entries);
        }
    }
    if args.verbose {
        for (p, r) in &o.changes {
            eprintln!("             {p}: {r}");
        }
        for d in plan.elf.iter().filter(|d| d.changes()) {
            eprintln!(
                "{:>12} {}: runpath {} -> {}",
                "Patchelf",
                d.path,
                d.old_runpath.as_deref().unwrap_or("(none)"),
                d.new_runpath.as_deref().unwrap_or("(none)")
            );
        }
    }
    eprintln!(
        "{:>12} {} {} in {} ({} files written, {} removed) in {seconds:.2}s",
        "Finished",
        recipe.name,
        recipe.version,
        out.display(),
        o.files_written,
        o.files_removed
    );
}

/// Removes `.` and `..` components lexically, so that the prefix written into
/// files is the plain absolute path.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
