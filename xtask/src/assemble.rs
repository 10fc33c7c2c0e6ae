//! `cargo xtask assemble`: recipe -> plan -> diff -> apply -> report, and
//! `cargo xtask plan`, the same without the apply.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use assemble_plan::{Phases, Plan};
use assemble_reconcile::{Change, Diff, Lock, Outcome, Snapshot, apply, diff_snapshot};
use serde::Serialize;

use crate::session::Session;
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
struct Report<'a> {
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

pub fn run(args: &AssembleArgs) -> Result<(), Failure> {
    let mut phases = Phases::start();
    let s = Session::new(args)?;
    phases.lap("session");
    // Plan first, without the lock: planning only reads inputs and fills the
    // cache, and a run that fails here leaves no trace in the output. Beside
    // it, the output's state is read and its paths stat'ed.
    let (mut plan, snapshot) = plan_and_snapshot(&s, args.json)?;
    phases.extend(&plan.phases);
    let lock = match Lock::try_acquire(&s.layout)? {
        Some(l) => l,
        None if args.no_wait => {
            return Err(anyhow!(
                "another assemble is writing {} (--no-wait was given)",
                s.layout.out.display()
            )
            .into());
        }
        None => {
            eprintln!(
                "{:>12} waiting for the lock on {}",
                "Blocking",
                s.layout.out.display()
            );
            Lock::acquire(&s.layout)?
        }
    };
    phases.lap("lock");
    // Diff under the lock, against the state this run replaces: the
    // snapshot is taken again if another run stored a state meanwhile.
    let snapshot = if snapshot.is_current(&s.layout) {
        snapshot
    } else {
        Snapshot::take(&s.layout)
    };
    let d = diff_output(&s, &mut plan, snapshot)?;
    phases.lap("diff");
    let statuses = d.units.clone();
    let outcome = apply(&plan.target, d, &lock)
        .with_context(|| format!("writing the output {}", s.layout.out.display()))?;
    drop(lock);
    phases.lap("apply");
    report(args, &s, &plan, &statuses, &outcome, false, phases);
    // The process ends here: freeing the manifest's ~100,000 allocations
    // one by one would only delay the exit.
    std::mem::forget(plan);
    Ok(())
}

/// `cargo xtask plan`: what `assemble` would do, and why; changes nothing
/// in the output.
pub fn dry_run(args: &AssembleArgs) -> Result<(), Failure> {
    let mut phases = Phases::start();
    let s = Session::new(args)?;
    phases.lap("session");
    let (mut plan, snapshot) = plan_and_snapshot(&s, args.json)?;
    phases.extend(&plan.phases);
    let d = diff_output(&s, &mut plan, snapshot)?;
    phases.lap("diff");
    let mut outcome = Outcome {
        units: assemble_reconcile::unit_counts(&plan.target.desired),
        ..Outcome::default()
    };
    for c in &d.writes {
        let dir = plan
            .target
            .desired
            .get(c.path.as_str())
            .is_some_and(|e| e.kind == assemble_reconcile::Kind::Dir);
        if dir {
            outcome.dirs_created += 1;
        } else {
            outcome.files_written += 1;
        }
        if let Some(u) = &c.unit {
            outcome.units.entry(u.clone()).or_default().written += 1;
        }
    }
    for c in &d.removes {
        outcome.files_removed += 1;
        if let Some(u) = &c.unit {
            outcome.units.entry(u.clone()).or_default().removed += 1;
        }
    }
    outcome.changes = d.writes.iter().chain(&d.removes).cloned().collect();
    outcome.changes.sort();
    report(args, &s, &plan, &d.units, &outcome, true, phases);
    Ok(())
}

/// The plan against the output's snapshot. Hashes the plan left to the
/// copy (it saw no state) are computed first if the output has one now.
fn diff_output(s: &Session, plan: &mut Plan, snapshot: Snapshot) -> Result<Diff, Failure> {
    if !snapshot.is_full() {
        plan.target
            .hash_deferred()
            .with_context(|| format!("hashing the inputs of {}", s.recipe.file.display()))?;
    }
    // What the recipe decided (paths, ownership) is the message itself;
    // an I/O error is said with the output it happened in.
    diff_snapshot(&plan.target, snapshot)
        .map_err(|e| match e {
            assemble_reconcile::Error::Io(_) => anyhow::Error::new(e)
                .context(format!("reading the output {}", s.layout.out.display())),
            e => e.into(),
        })
        .map_err(Failure::from)
}

/// The plan, and meanwhile on another thread a snapshot of the output.
fn plan_and_snapshot(s: &Session, quiet: bool) -> Result<(Plan, Snapshot), Failure> {
    std::thread::scope(|scope| {
        let snapshot = scope.spawn(|| {
            let start = std::time::Instant::now();
            (Snapshot::take(&s.layout), start.elapsed())
        });
        let plan = s.plan(quiet);
        let (snapshot, took) = snapshot
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let mut plan = plan?;
        plan.phases
            .push(("output snapshot (beside the plan)", took));
        Ok((plan, snapshot))
    })
}

fn report(
    args: &AssembleArgs,
    s: &Session,
    plan: &Plan,
    statuses: &BTreeMap<String, assemble_reconcile::UnitStatus>,
    o: &Outcome,
    dry_run: bool,
    phases: Phases,
) {
    let seconds = phases.elapsed().as_secs_f64();
    let empty = Vec::new();
    let units: BTreeMap<&str, UnitReport> = s
        .recipe
        .units
        .iter()
        .map(|u| {
            let c = o.units.get(&u.name).cloned().unwrap_or_default();
            let reasons = statuses.get(&u.name).map_or(&empty, |st| &st.reasons);
            let status = if c.written + c.removed > 0 {
                if dry_run { "dirty" } else { "built" }
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
                    reasons,
                },
            )
        })
        .collect();
    if args.json {
        let r = Report {
            output: &s.layout.out,
            prefix: &s.ctx.prefix,
            dry_run,
            files_written: o.files_written,
            files_removed: o.files_removed,
            dirs_created: o.dirs_created,
            units,
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
            phases: phases
                .done()
                .into_iter()
                .map(|(phase, d)| Phase {
                    phase,
                    ms: d.as_secs_f64() * 1e3,
                })
                .collect(),
            seconds,
        };
        // Streamed: a clean build reports tens of thousands of changes.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        if serde_json::to_writer_pretty(&mut stdout, &r).is_ok() {
            let _ = writeln!(stdout);
        }
        return;
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    for u in &s.recipe.units {
        let r = &units[u.name.as_str()];
        if args.verbose || dry_run {
            for reason in r.reasons {
                eprintln!("{:>12} {}: {reason}", "Dirty", u.name);
            }
        }
        match r.status {
            "fresh" => eprintln!("{:>12} {} ({} paths)", "Fresh", u.name, r.entries),
            status => eprintln!(
                "{:>12} {} ({} paths: {} {}, {} {})",
                if status == "dirty" {
                    "Would build"
                } else {
                    "Built"
                },
                u.name,
                r.entries,
                r.written,
                if dry_run { "to write" } else { "written" },
                r.removed,
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
            s.recipe.name,
            o.files_written,
            o.files_removed,
            s.layout.out.display()
        );
    } else {
        eprintln!(
            "{:>12} {} {} in {} ({} files written, {} removed) in {seconds:.2}s",
            "Finished",
            s.recipe.name,
            s.recipe.version,
            s.layout.out.display(),
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
