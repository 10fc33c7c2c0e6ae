//! The watch rows: `assemble --watch` on the bench's output, each edit
//! timed from the write's return until the tree's file holds the new bytes;
//! a 1,000-file checkout until its last file is in the tree and the run
//! ended; the watch's peak resident set.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Bench;
use super::measure::Stats;

/// Row names, for the ratios.
pub(crate) const WATCH_EDIT: &str = "watch: one edit, written until in the tree";
pub(crate) const WATCH_CHECKOUT: &str = "watch: a 1,000-file checkout, until applied";

/// How long one update may take before the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(600);

/// A running watch and its status lines.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(b: &Bench) -> anyhow::Result<Watch> {
        let mut c = b.assemble();
        // `--json` is the bench's default; a watch reports in lines.
        let args: Vec<_> = c
            .get_args()
            .filter(|a| *a != "--json")
            .map(|a| a.to_os_string())
            .collect();
        c = Command::new(c.get_program());
        c.args(args).arg("--watch");
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting assemble --watch")?;
        let stderr = child.stderr.take().context("the watch's stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let w = Watch { child, lines };
        w.wait(|n| n > 0, "Watching")?;
        Ok(w)
    }

    fn count(&self, word: &str) -> usize {
        self.lines
            .lock()
            .map_or(0, |l| l.iter().filter(|l| l.contains(word)).count())
    }

    /// Waits until `ok(count of lines holding word)`.
    fn wait(&self, ok: impl Fn(usize) -> bool, word: &str) -> anyhow::Result<()> {
        until(|| Ok(ok(self.count(word))), &format!("a line `{word}`"))
    }

    /// The peak resident set so far, in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = fs_err::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid =
            rustix::process::Pid::from_raw(self.child.id() as i32).context("the watch's pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::INT)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the watch ended with {status}");
        }
        Ok(())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` (every 200 µs) until it holds.
fn until(mut f: impl FnMut() -> anyhow::Result<bool>, what: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while !f()? {
        if start.elapsed() > GIVE_UP {
            bail!("the watch did not show {what} within {GIVE_UP:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Whether the file at `p` ends with `tail`.
fn ends_with(p: &Path, tail: &str) -> bool {
    fs_err::read(p).is_ok_and(|b| b.ends_with(tail.as_bytes()))
}

fn append(p: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = fs_err::OpenOptions::new().append(true).open(p)?;
    f.write_all(line.as_bytes())?;
    Ok(())
}

/// Stats of the samples `s` (seconds): the median, the fastest and the
/// 99th percentile as the slowest.
fn stats(name: &'static str, mut s: Vec<f64>, rss: Option<f64>) -> Stats {
    s.sort_by(f64::total_cmp);
    let p99 = s[((s.len() * 99).div_ceil(100)).saturating_sub(1)];
    Stats {
        name,
        median_s: s[s.len() / 2],
        min_s: s[0],
        max_s: p99,
        peak_rss_mib: rss,
    }
}

/// The watch rows (see the module doc): `edits` single edits of app
/// sources, then one checkout of 1,000 of them. `site` is where the app's
/// `authentik` package lands in the tree.
pub(crate) fn watch_rows(b: &Bench, site: &Path, edits: usize) -> anyhow::Result<Vec<Stats>> {
    let app = b.input_dir.join("app");
    let app_py: Vec<PathBuf> = super::sources(&app.join("authentik"), |_| true);
    if app_py.is_empty() {
        bail!("no app sources to edit");
    }
    let in_tree = |p: &Path| -> anyhow::Result<PathBuf> {
        Ok(site.join(p.strip_prefix(&app).context("an app source")?))
    };
    let w = Watch::start(b)?;
    let mut latency = Vec::new();
    for i in 0..edits {
        let src = &app_py[(i * 7919) % app_py.len()];
        let (dest, tail) = (in_tree(src)?, format!("# watched edit {i}\n"));
        let runs = w.count("Updated");
        append(src, &tail)?;
        let start = Instant::now();
        until(|| Ok(ends_with(&dest, &tail)), "an edit in the tree")?;
        latency.push(start.elapsed().as_secs_f64());
        // The run ends (its pyc, its state) before the next edit.
        w.wait(|n| n > runs, "Updated")?;
    }
    let runs = w.count("Updated");
    let tail = "# checked out\n";
    let start = Instant::now();
    let picked: Vec<&PathBuf> = (0..1000)
        .map(|k| &app_py[(k * 31) % app_py.len()])
        .collect();
    for src in &picked {
        if !ends_with(src, tail) {
            append(src, tail)?;
        }
    }
    let last = in_tree(picked.last().context("1,000 sources")?)?;
    until(|| Ok(ends_with(&last, tail)), "the checkout in the tree")?;
    w.wait(|n| n > runs, "Updated")?;
    let checkout = start.elapsed().as_secs_f64();
    let rss = w.peak_rss_mib();
    w.stop()?;
    Ok(vec![
        stats(WATCH_EDIT, latency, rss),
        stats(WATCH_CHECKOUT, vec![checkout], rss),
    ])
}
