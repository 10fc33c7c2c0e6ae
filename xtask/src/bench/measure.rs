//! Timing commands: several runs each, interleaved when compared, with
//! the peak resident set from GNU time where it is installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// One measurement over several runs.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    pub(crate) name: &'static str,
    pub(crate) median_s: f64,
    pub(crate) min_s: f64,
    pub(crate) max_s: f64,
    /// Peak resident set of the measured process, in MiB (from GNU time).
    pub(crate) peak_rss_mib: Option<f64>,
}

/// One measured command: `setup` (untimed) before each run of `cmd`.
pub(crate) struct Series<'a> {
    pub(crate) name: &'static str,
    pub(crate) setup: Box<dyn FnMut(usize) -> anyhow::Result<()> + 'a>,
    pub(crate) cmd: Box<dyn Fn() -> Command + 'a>,
}

/// Runs `cmd` `runs` times (after `setup`, untimed) and reports the times.
pub(crate) fn measure(
    name: &'static str,
    runs: usize,
    setup: impl FnMut(usize) -> anyhow::Result<()>,
    cmd: impl Fn() -> Command,
) -> anyhow::Result<Stats> {
    let series = vec![Series {
        name,
        setup: Box::new(setup),
        cmd: Box::new(cmd),
    }];
    let mut stats = measure_interleaved(runs, series)?;
    stats.pop().context("one series measured")
}

/// Runs each series `runs` times, taking turns (a run of each, then the
/// next round), so that all of them meet the machine, and the file
/// system, in the same states: what a ratio between them needs.
pub(crate) fn measure_interleaved(
    runs: usize,
    mut series: Vec<Series<'_>>,
) -> anyhow::Result<Vec<Stats>> {
    let gnu_time = Path::new("/usr/bin/time").is_file();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); series.len()];
    let mut rss: Vec<Option<f64>> = vec![None; series.len()];
    let rss_file = std::env::temp_dir().join(format!("assemble-bench-rss-{}", std::process::id()));
    for i in 0..runs {
        for (k, s) in series.iter_mut().enumerate() {
            (s.setup)(i)?;
            // Untimed: let the previous run's writes reach the disk, so that
            // one run's writeback does not land in the next one's time.
            let _ = Command::new("sync").status();
            let inner = (s.cmd)();
            let mut c = if gnu_time {
                let mut c = Command::new("/usr/bin/time");
                c.arg("-f")
                    .arg("%M")
                    .arg("-o")
                    .arg(&rss_file)
                    .arg(inner.get_program());
                c.args(inner.get_args());
                if let Some(d) = inner.get_current_dir() {
                    c.current_dir(d);
                }
                c
            } else {
                inner
            };
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            let start = Instant::now();
            let out = c.output().with_context(|| format!("running {}", s.name))?;
            let t = start.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!(
                    "{} failed: {}",
                    s.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            times[k].push(t);
            if gnu_time
                && let Ok(text) = fs_err::read_to_string(&rss_file)
                && let Some(kib) = text
                    .lines()
                    .last()
                    .and_then(|l| l.trim().parse::<f64>().ok())
            {
                rss[k] = Some(rss[k].unwrap_or(0.0).max(kib / 1024.0));
            }
        }
    }
    let _ = fs_err::remove_file(&rss_file);
    Ok(series
        .iter()
        .zip(times)
        .zip(rss)
        .map(|((s, mut times), rss)| {
            times.sort_by(f64::total_cmp);
            Stats {
                name: s.name,
                median_s: times[times.len() / 2],
                min_s: times[0],
                max_s: times[times.len() - 1],
                peak_rss_mib: rss,
            }
        })
        .collect())
}
