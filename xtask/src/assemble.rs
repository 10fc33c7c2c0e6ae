//! `cargo xtask assemble` and `cargo xtask plan`: the pipeline's options
//! from the command line, and its report printed for people or as JSON.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use std::time::Duration;

use assemble_pipeline::{Event, Mode, Options, Report, Status};
use assemble_reconcile::Change;
use serde::Serialize;

use crate::context::{Workspace, output};
use crate::{AssembleArgs, Failure};

#[derive(Serialize)]
struct UnitReport<'a> {
    status: &'static str,
    entries: usize,
    written: usize,
    removed: usize,
    /// Why the unit is dirty, as plain sentences (empty when fresh).
    reasons: &'a [String],
}

#[derive(Serialize)]
struct ChangeReport<'a> {
    #[serde(flatten)]
    change: &'a Change,
    /// The change as a sentence, written straight into the output.
    #[serde(serialize_with = "sentence")]
    because: &'a Change,
}

fn sentence<S: serde::Serializer>(c: &&Change, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    output: &'a Path,
    prefix: &'a str,
    /// `true` for `cargo xtask plan`: nothing was changed.
    dry_run: bool,
    files_written: usize,
    files_removed: usize,
    dirs_created: usize,
    units: BTreeMap<&'a str, UnitReport<'a>>,
    warnings: &'a [String],
    /// ELF files whose runpath or interpreter autoPatchelf set.
    elf_patched: usize,
    /// Every path written or removed, with why.
    changes: Vec<ChangeReport<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elf: Option<&'a [assemble_elf::Decision]>,
    /// Reads: the input files hashed (the stat cache vouched for the rest),
    /// and from /proc/self/io `rchar` (every byte read, state files and
    /// waited-for children such as the interpreter probe included) and
    /// `read_bytes` (from storage).
    io: BTreeMap<String, u64>,
    /// Wall-clock milliseconds of each phase of the run, in order.
    phases: Vec<Phase>,
    seconds: f64,
}

#[derive(Serialize)]
struct Phase {
    phase: &'static str,
    ms: f64,
}

/// `cargo xtask assemble` (or, with `DryRun`, `cargo xtask plan`: what
/// `assemble` would do, and why; changes nothing in the output).
pub fn run(args: &AssembleArgs, mode: Mode) -> Result<(), Failure> {
    let opts = options(args)?;
    let quiet = args.json;
    let events = move |e: Event| match e {
        Event::Preparing(m) if !quiet => eprintln!("{:>12} {m}", "Preparing"),
        Event::Preparing(_) => {}
        Event::Waiting(out) => {
            eprintln!(
                "{:>12} waiting for the lock on {}",
                "Blocking",
                out.display()
            )
        }
    };
    let r = assemble_pipeline::assemble(&opts, mode, &events).map_err(Failure::from_pipeline)?;
    report(args, &r);
    // The process ends here: freeing the manifest's ~100,000 allocations
    // one by one would only delay the exit.
    std::mem::forget(r);
    Ok(())
}

/// The pipeline's options from the command line and the workspace.
pub fn options(args: &AssembleArgs) -> Result<Options, Failure> {
    let ws = Workspace::locate()?;
    let recipe = ws.recipe_path(&args.common);
    let out = match &args.out {
        Some(o) => output(&ws, None, Some(o)),
        // The default output is named after the recipe's package.
        None => output(&ws, Some(&ws.recipe(&args.common)?), None),
    };
    // ASSEMBLE_RACY_WINDOW_MS: how close to a run's start a timestamp
    // may be and still be trusted next time (default one second, for
    // file systems that keep whole seconds).
    let racy_window = std::env::var("ASSEMBLE_RACY_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(assemble_manifest::RACY_WINDOW, Duration::from_millis);
    Ok(Options {
        recipe,
        out,
        state_base: ws.state_base(args.common.state_dir.as_deref()),
        cache: ws.cache(args.common.cache_dir.as_deref()),
        prefix: args.prefix.clone(),
        webui: args.webui.clone(),
        offline: args.common.offline,
        wait: !args.no_wait,
        racy_window,
    })
}

fn report(args: &AssembleArgs, r: &Report) {
    let dry_run = r.dry_run;
    let plan = &r.plan;
    let o = &r.outcome;
    let seconds = r.elapsed.as_secs_f64();
    if args.json {
        let j = JsonReport {
            output: &r.output,
            prefix: &r.prefix,
            dry_run,
            files_written: o.files_written,
            files_removed: o.files_removed,
            dirs_created: o.dirs_created,
            units: r
                .units
                .iter()
                .map(|u| {
                    (
                        u.name.as_str(),
                        UnitReport {
                            status: u.status.as_str(),
                            entries: u.entries,
                            written: u.written,
                            removed: u.removed,
                            reasons: &u.reasons,
                        },
                    )
                })
                .collect(),
            warnings: &plan.warnings,
            elf_patched: plan.elf.iter().filter(|d| d.changes()).count(),
            changes: o
                .changes
                .iter()
                .map(|c| ChangeReport {
                    change: c,
                    because: c,
                })
                .collect(),
            elf: args.verbose.then_some(plan.elf.as_slice()),
            io: {
                let mut io = proc_io();
                io.insert("inputs_hashed".into(), plan.hashed_files);
                io.insert("inputs_hashed_bytes".into(), plan.hashed_bytes);
                io.insert("inputs_hashed_while_copied".into(), o.hashed_on_copy as u64);
                io
            },
            phases: r
                .phases
                .iter()
                .map(|(phase, d)| Phase {
                    phase,
                    ms: d.as_secs_f64() * 1e3,
                })
                .collect(),
            seconds,
        };
        // Streamed: a clean build reports tens of thousands of changes.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        if serde_json::to_writer_pretty(&mut stdout, &j).is_ok() {
            let _ = writeln!(stdout);
        }
        return;
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    for u in &r.units {
        if args.verbose || dry_run {
            for reason in &u.reasons {
                eprintln!("{:>12} {}: {reason}", "Dirty", u.name);
            }
        }
        match u.status {
            Status::Fresh => eprintln!("{:>12} {} ({} paths)", "Fresh", u.name, u.entries),
            status => eprintln!(
                "{:>12} {} ({} paths: {} {}, {} {})",
                if status == Status::Dirty {
                    "Would build"
                } else {
                    "Built"
                },
                u.name,
                u.entries,
                u.written,
                if dry_run { "to write" } else { "written" },
                u.removed,
                if dry_run { "to remove" } else { "removed" },
            ),
        }
    }
    if args.verbose || dry_run {
        for c in o.changes.iter().filter(|c| c.unit.is_none()) {
            eprintln!("{:>12} {c}", "Dirty");
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
    if dry_run {
        eprintln!(
            "{:>12} {} would write {} files and remove {} in {}",
            "Planned",
            r.name,
            o.files_written,
            o.files_removed,
            r.output.display()
        );
    } else {
        eprintln!(
            "{:>12} {} {} in {} ({} files written, {} removed) in {seconds:.2}s",
            "Finished",
            r.name,
            r.version,
            r.output.display(),
            o.files_written,
            o.files_removed
        );
    }
}

/// `rchar` and `read_bytes` of this process, where the kernel reports them.
fn proc_io() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| matches!(*k, "rchar" | "read_bytes"))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}
