//! `cargo xtask assemble` and `cargo xtask plan`: the pipeline's options
//! from the command line, and its report printed for people or as JSON.

use std::time::Duration;

use assemble_pipeline::{Event, Mode, Options, Report, Status};

use crate::context::Workspace;
use crate::shell::{Drawing, Shell};
use crate::{AssembleArgs, Failure};

/// `cargo xtask assemble` (or, with `DryRun`, `cargo xtask plan`: what
/// `assemble` would do, and why; changes nothing in the output).
pub fn run(sh: &Shell, args: &AssembleArgs, mode: Mode) -> Result<(), Failure> {
    let opts = options(args)?;
    if args.watch {
        if mode == Mode::DryRun {
            return Err(Failure {
                code: 2,
                error: anyhow::anyhow!(
                    "--watch applies each change: give it to `assemble`, not `plan`"
                ),
            });
        }
        return crate::watch::run(sh, args, &opts);
    }
    let r = build(sh, &opts, args.json, mode)?;
    report(sh, args, &r);
    // The process ends here: freeing the manifest's ~100,000 allocations
    // one by one would only delay the exit.
    std::mem::forget(r);
    Ok(())
}

/// Runs the pipeline with `opts`, drawing its progress on a terminal
/// (never with `json` or -q).
pub fn build(sh: &Shell, opts: &Options, json: bool, mode: Mode) -> Result<Report, Failure> {
    let drawing = Drawing::new(sh, !json && sh.progress(), json || sh.quiet());
    let events = |e: Event| drawing.event(e);
    let result = assemble_pipeline::assemble(opts, mode, &events);
    drawing.clear();
    result.map_err(Failure::from_pipeline)
}

/// The pipeline's options from the command line and the workspace.
pub fn options(args: &AssembleArgs) -> Result<Options, Failure> {
    let ws = Workspace::for_recipe(&args.common)?;
    let recipe = ws.recipe_path(&args.common);
    let out = ws.out(&args.common, args.out.as_deref())?;
    // ASSEMBLE_RACY_WINDOW_MS: how close to a run's start a timestamp
    // may be and still be trusted next time (default one second, for
    // file systems that keep whole seconds).
    let racy_window = std::env::var("ASSEMBLE_RACY_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(assemble_manifest::RACY_WINDOW, Duration::from_millis);
    let state_base = ws.state_base(args.common.state_dir.as_deref(), &out);
    Ok(Options {
        recipe,
        out,
        state_base,
        cache: ws.cache(args.common.cache_dir.as_deref()),
        prefix: args.prefix.clone(),
        webui: args.webui.clone(),
        python: ws.python(&args.common),
        offline: args.common.offline,
        locked: args.locked,
        wait: !args.no_wait,
        nar_hash: args.nar_hash,
        link_from: None,
        racy_window,
        shared: args.registry.shared(),
        link_mode: args.link_mode.into(),
    })
}

/// One line per unit: its status and counts, or, in a dry run, what the
/// cache lacks for it; with `-v`, why it is dirty first.
fn unit_lines(sh: &Shell, r: &Report, verbose: bool) {
    let (plan, dry_run) = (&r.plan, r.dry_run);
    for u in &r.units {
        if verbose {
            for reason in &u.reasons {
                sh.note("Dirty", format!("{}: {reason}", u.name));
            }
        }
        // In a dry run, what the cache lacks for the unit, on its line.
        let would: Vec<&str> = plan
            .would_make
            .iter()
            .filter(|w| w.unit.as_deref() == Some(u.name.as_str()))
            .map(|w| w.what.as_str())
            .collect();
        // A unit's patches are said with it: a variant that dropped the
        // base's would show it.
        let patches = match u.patches {
            0 => String::new(),
            1 => ", 1 patch".to_string(),
            n => format!(", {n} patches"),
        };
        match u.status {
            _ if !would.is_empty() => {
                sh.status("Would build", format!("{} ({})", u.name, would.join("; ")))
            }
            Status::Fresh => sh.status(
                "Fresh",
                format!("{} ({} paths{patches})", u.name, u.entries),
            ),
            status => sh.status(
                if status == Status::Dirty {
                    "Would build"
                } else {
                    "Built"
                },
                format!(
                    "{} ({} paths{patches}: {} {}, {} {})",
                    u.name,
                    u.entries,
                    u.written,
                    if dry_run { "to write" } else { "written" },
                    u.removed,
                    if dry_run { "to remove" } else { "removed" },
                ),
            ),
        }
    }
}

/// How many paths changed outside the tool are said one by one; past
/// it, one line with the counts (all of them with `-v`).
const OUTSIDE_ONE_BY_ONE: usize = 20;

/// A warning for each path the run restores or removes because someone
/// changed the output (`Restored authentik/root/settings.py (edited outside
/// the tool)`, `Removed authentik/mynotes.txt (not in the recipe)`): a hand
/// edit never vanishes without a word.
pub(crate) fn outside_lines(
    sh: &Shell,
    changes: &[assemble_reconcile::Change],
    verbose: bool,
    dry_run: bool,
) {
    use assemble_reconcile::Reason;
    let (restore, remove) = if dry_run {
        ("Would restore", "Would remove")
    } else {
        ("Restored", "Removed")
    };
    let lines: Vec<String> = changes
        .iter()
        .filter_map(|c| {
            let (word, why) = match c.reason {
                Reason::Modified => (restore, "edited outside the tool"),
                Reason::Missing => (restore, "removed outside the tool"),
                Reason::Added => (remove, "not in the recipe"),
                _ => return None,
            };
            Some(format!("{word} {} ({why})", c.path))
        })
        .collect();
    if lines.len() <= OUTSIDE_ONE_BY_ONE || verbose {
        for l in lines {
            sh.warn(l);
        }
        return;
    }
    let removed = changes.iter().filter(|c| c.reason == Reason::Added).count();
    sh.warn(format!(
        "{} {} paths changed outside the tool and {} {} not in the recipe (-v lists them)",
        restore.to_lowercase(),
        lines.len() - removed,
        remove.to_lowercase(),
        removed
    ));
}

/// What the shared cache did, in one line.
fn registry_line(t: &assemble_share::Tally) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut parts = vec![format!(
        "{} entries pulled ({:.1} MiB), {} missing there",
        t.pulled,
        mib(t.pulled_bytes),
        t.missed
    )];
    if t.refused > 0 {
        parts.push(format!("{} refused", t.refused));
    }
    parts.push(format!(
        "{} pushed ({:.1} MiB)",
        t.pushed,
        mib(t.pushed_bytes)
    ));
    parts.join(", ")
}

pub(crate) fn report(sh: &Shell, args: &AssembleArgs, r: &Report) {
    let dry_run = r.dry_run;
    let plan = &r.plan;
    let o = &r.outcome;
    let seconds = r.elapsed.as_secs_f64();
    let verbose = sh.verbose();
    if args.json {
        // Streamed: a clean build reports tens of thousands of changes.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let _ = r.write_json(verbose, &mut stdout);
        return;
    }
    for w in &plan.warnings {
        sh.warn(w);
    }
    unit_lines(sh, r, verbose);
    outside_lines(sh, &o.changes, verbose, dry_run);
    if verbose {
        for c in o.changes.iter().filter(|c| c.unit.is_none()) {
            sh.note("Dirty", c);
        }
        for d in plan.elf.iter().filter(|d| d.changes()) {
            sh.note(
                "Patchelf",
                format!(
                    "{}: runpath {} -> {}",
                    d.path,
                    d.old_runpath.as_deref().unwrap_or("(none)"),
                    d.new_runpath.as_deref().unwrap_or("(none)")
                ),
            );
        }
    }
    if verbose {
        for l in &plan.libraries {
            sh.note("Needs", crate::shell::library_line(l));
        }
    }
    if let Some(b) = plan
        .bytecode
        .filter(|b| b.compiled > 0 || b.pulled > 0 || verbose)
    {
        sh.status(
            "Bytecode",
            format!(
                "{} compiled, {} from the cache{}{}",
                b.compiled,
                b.cached,
                if b.pulled > 0 {
                    format!(", {} from the registry", b.pulled)
                } else {
                    String::new()
                },
                if b.failed > 0 {
                    format!(", {} that do not compile", b.failed)
                } else {
                    String::new()
                }
            ),
        );
    }
    if let Some(t) = r.registry.filter(|t| *t != Default::default() || verbose) {
        sh.status("Registry", registry_line(&t));
    }
    if sh.very_verbose() {
        for (phase, time) in &r.phases {
            sh.note(
                "Phase",
                format!("{phase}: {:.1} ms", time.as_secs_f64() * 1e3),
            );
        }
    }
    if dry_run {
        // What the whole tree's steps would make (the bytecode, patched
        // ELF files), after the counts.
        let steps: String = plan
            .would_make
            .iter()
            .filter(|w| w.unit.is_none())
            .map(|w| format!("; {}", w.what))
            .collect();
        sh.status(
            "Planned",
            format!(
                "{} would write {} and remove {} in {}{steps}{}",
                r.name,
                files(o.files_written),
                o.files_removed,
                r.output.display(),
                if verbose {
                    ""
                } else {
                    " (-v: why, path by path)"
                }
            ),
        );
    } else {
        sh.status(
            "Finished",
            format!(
                "{} {} in {} ({} written, {} removed) in {seconds:.2}s",
                r.name,
                r.version,
                r.output.display(),
                files(o.files_written),
                o.files_removed
            ),
        );
    }
    if let Some(h) = &r.nar_hash {
        sh.status("NAR hash", h.to_sri());
    }
}

/// "1 file", "2 files".
fn files(n: usize) -> String {
    if n == 1 {
        "1 file".to_string()
    } else {
        format!("{n} files")
    }
}
