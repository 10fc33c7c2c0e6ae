//! The benchmark's report: the measurements, the ratios between them
//! with their targets, as a table or JSON.

use serde::Serialize;

use super::CP_COMPILEALL;
use super::generate::Inputs;
use super::imports::{IMPORT_OWN, IMPORT_WITH, IMPORT_WITHOUT};
use super::links::{CP_LIB, FETCHED_COPY, FETCHED_HARDLINK};
use super::measure::Stats;
use super::watch::{WATCH_CHECKOUT, WATCH_EDIT};
use super::xfs::{CLONE_XFS, CP_XFS, CP_XFS_NEVER};

#[derive(Debug, Serialize)]
pub(crate) struct Ratio {
    name: &'static str,
    value: f64,
    /// `None`: a figure to read, with no target.
    target: Option<f64>,
    met: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct BenchReport {
    pub(crate) machine: String,
    pub(crate) inputs: Inputs,
    pub(crate) runs: usize,
    pub(crate) measurements: Vec<Stats>,
    pub(crate) ratios: Vec<Ratio>,
}

/// The ratios between the measurements `ms`, each with its target (none:
/// a figure to read).
pub(crate) fn ratios(ms: &[Stats]) -> Vec<Ratio> {
    let get = |n: &str| {
        ms.iter()
            .find(|s| s.name == n)
            .map_or(f64::NAN, |s| s.median_s)
    };
    // The slowest run (for the watch's edits: the 99th percentile).
    let max = |n: &str| {
        ms.iter()
            .find(|s| s.name == n)
            .map_or(f64::NAN, |s| s.max_s)
    };
    let peak = ms
        .iter()
        .filter(|s| !s.name.starts_with("launcher") && !s.name.starts_with("watch"))
        .filter(|s| s.name.contains("assemble") || s.name.contains("edit"))
        .filter_map(|s| s.peak_rss_mib)
        .fold(0.0, f64::max);
    let ratio = |name, value: f64, target: Option<f64>| Ratio {
        name,
        value,
        target,
        met: target.is_none_or(|t| value <= t),
    };
    vec![
        ratio(
            "cold, no bytecode / cp -a",
            get("cold assemble, no bytecode") / get("cp -a of the inputs"),
            Some(1.0),
        ),
        ratio(
            "cold from the cache, hardlink / cp -a",
            get(FETCHED_HARDLINK) / get(CP_LIB),
            Some(0.25),
        ),
        ratio(
            "cold from the cache, copy / cp -a",
            get(FETCHED_COPY) / get(CP_LIB),
            None,
        ),
        ratio(
            "on XFS: cold, no bytecode, clone / cp -a",
            get(CLONE_XFS) / get(CP_XFS),
            Some(0.25),
        ),
        ratio(
            "on XFS: cold, no bytecode, clone / cp -a --reflink=never",
            get(CLONE_XFS) / get(CP_XFS_NEVER),
            None,
        ),
        ratio(
            "cold, bytecode compiled (empty cache) / cp -a, then compileall -j0",
            get("cold assemble") / get(CP_COMPILEALL),
            Some(1.0),
        ),
        ratio(
            "cold with bytecode / without",
            get("cold assemble") / get("cold assemble, no bytecode"),
            None,
        ),
        ratio(
            "cold, bytecode from a registry / compiled here",
            get("cold assemble, bytecode from a registry") / get("cold assemble"),
            None,
        ),
        // What the bytecode adds to a cold build, taken from a registry
        // against compiled here (each less the cold build without it).
        ratio(
            "bytecode's cost: from a registry / compiled here",
            (get("cold assemble, bytecode from a registry") - get("cold assemble, no bytecode"))
                / (get("cold assemble") - get("cold assemble, no bytecode")),
            Some(0.2),
        ),
        ratio(
            "no-op / stat walk",
            get("no-op assemble") / get("stat walk of the inputs"),
            Some(1.5),
        ),
        ratio(
            "one-file edit (its bytecode too) / no-op",
            get("one-file edit") / get("no-op assemble"),
            Some(1.3),
        ),
        ratio(
            "100-file edit / no-op",
            get("100-file edit") / get("no-op assemble"),
            Some(1.5),
        ),
        ratio("peak RSS (MiB) / 200", peak / 200.0, Some(1.0)),
        ratio(
            "watch: an edit until in the tree, p50 (ms) / 20",
            get(WATCH_EDIT) * 1e3 / 20.0,
            Some(1.0),
        ),
        ratio(
            "watch: an edit until in the tree, p99 (ms) / 100",
            max(WATCH_EDIT) * 1e3 / 100.0,
            Some(1.0),
        ),
        ratio(
            "watch: a 1,000-file checkout / no-op",
            get(WATCH_CHECKOUT) / get("no-op assemble"),
            Some(2.0),
        ),
        ratio(
            "watch: peak RSS (MiB) / 250",
            ms.iter()
                .find(|s| s.name == WATCH_EDIT)
                .and_then(|s| s.peak_rss_mib)
                .unwrap_or(f64::NAN)
                / 250.0,
            Some(1.0),
        ),
        ratio(
            "launcher ours / seed's",
            get("launcher: ours (direct import)") / get("launcher: seed's (importlib.metadata)"),
            Some(0.7),
        ),
        ratio(
            "import with the tree's bytecode / without",
            get(IMPORT_WITH) / get(IMPORT_WITHOUT),
            Some(1.0 / 3.0),
        ),
        // What bytecode can give at most: the imports' remaining time is
        // the modules' own work (C extensions, module bodies).
        ratio(
            "import with the tree's bytecode / the interpreter's own pycs",
            get(IMPORT_WITH) / get(IMPORT_OWN),
            None,
        ),
        ratio(
            "import without bytecode / the interpreter's own pycs",
            get(IMPORT_WITHOUT) / get(IMPORT_OWN),
            None,
        ),
    ]
}

pub(crate) fn print_table(r: &BenchReport) {
    println!("machine: {}", r.machine);
    println!(
        "inputs: {} venv files ({} MiB, {} ELF), {} app files; {} runs each\n",
        r.inputs.venv_files,
        r.inputs.venv_bytes >> 20,
        r.inputs.elf_files,
        r.inputs.app_files,
        r.runs
    );
    println!("| measurement | median | min | max | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    for s in &r.measurements {
        println!(
            "| {} | {:.3} s | {:.3} s | {:.3} s | {} |",
            s.name,
            s.median_s,
            s.min_s,
            s.max_s,
            s.peak_rss_mib
                .map_or("n/a".into(), |m| format!("{m:.0} MiB"))
        );
    }
    println!("\n| ratio (medians) | value | target | met |");
    println!("|---|---:|---:|:---:|");
    for q in &r.ratios {
        match q.target {
            Some(t) => println!(
                "| {} | {:.2} | <= {:.2} | {} |",
                q.name,
                q.value,
                t,
                if q.met { "yes" } else { "no" }
            ),
            None => println!("| {} | {:.2} | | |", q.name, q.value),
        }
    }
}

pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs_err::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .map_or("?".into(), |kib| format!("{} GiB", kib >> 20));
    let cpu = fs_err::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpus} cores ({cpu}), {mem}, Linux {}",
        std::env::consts::ARCH
    )
}
