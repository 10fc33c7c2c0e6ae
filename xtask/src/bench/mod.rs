//! `cargo xtask bench`: generate authentik-shaped inputs from a fixed seed,
//! and time cold, no-op and edit assembles beside `cp -a` of the same
//! inputs and a stat-only walk of them, in one run.
//!
//! Absolute times on shared machines are noise; the ratios measured in the
//! same run are what the targets are about. Nothing here fails on a timing.
//! `generate.rs` makes the inputs, `measure.rs` times commands,
//! `imports.rs` the import rows, `report.rs` the ratios and the table.

mod generate;
mod imports;
mod links;
mod measure;
mod registry;
mod report;
mod watch;
mod xfs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::Failure;
use crate::context::Workspace;
use measure::{Series, Stats, measure, measure_interleaved};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Files in the generated venv.
    #[arg(long, default_value_t = 33_000)]
    pub venv_files: usize,
    /// Size of the generated venv, in MiB.
    #[arg(long, default_value_t = 650)]
    pub venv_mib: u64,
    /// Files in the generated authentik checkout.
    #[arg(long, default_value_t = 2_500)]
    pub app_files: usize,
    /// Runs of each measurement (the median is reported; default 5, with
    /// --smoke 3).
    #[arg(long)]
    pub runs: Option<usize>,
    /// The generator's seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A reduced size for CI: 1,500 venv files (20 MiB), 150 app files.
    #[arg(long)]
    pub smoke: bool,
    /// Where inputs and outputs go (default: `<target dir>/bench`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where one benchmark run works: the generated inputs, the output, its
/// state and the cache, all under `root`; the xtask binary it times.
struct Bench {
    root: PathBuf,
    exe: PathBuf,
    input_dir: PathBuf,
    recipe: PathBuf,
    out: PathBuf,
    state: PathBuf,
    cache: PathBuf,
    runs: usize,
    /// The interpreter the recipes name.
    python: PathBuf,
}

impl Bench {
    /// `xtask assemble --json` of `recipe` into `out`, its state in
    /// `state`, with the bench's cache.
    fn assemble_into(&self, recipe: &Path, out: &Path, state: &Path) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("assemble")
            .arg("--recipe")
            .arg(recipe)
            .arg("--out")
            .arg(out)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--state-dir")
            .arg(state)
            .arg("--json");
        c
    }

    /// The bench recipe into the bench output.
    fn assemble(&self) -> Command {
        self.assemble_into(&self.recipe, &self.out, &self.state)
    }
}

/// Runs `build` (an `assemble --json`) into emptied `dirs` and fails
/// unless its report counts some copies as `how` (`linked`, `cloned`):
/// a row is only worth its name if the mode did what it says.
fn check_copies(build: &Command, dirs: &[&Path], how: &str) -> anyhow::Result<()> {
    for d in dirs {
        fresh(d)?;
    }
    let mut c = Command::new(build.get_program());
    c.args(build.get_args());
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the report of {c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let n = report["copies"][how].as_u64().unwrap_or(0);
    if n == 0 {
        anyhow::bail!("no file was {how} by {c:?}: {}", report["copies"]);
    }
    Ok(())
}

/// The row a first cold build with bytecode is compared with.
pub(crate) const CP_COMPILEALL: &str = "cp -a of the inputs, then compileall -j0";

/// `dir` empty: made anew.
fn empty(dir: &Path) -> anyhow::Result<()> {
    fresh(dir)?;
    fs_err::create_dir_all(dir)?;
    Ok(())
}

/// `dir` and all it holds gone, if it was there.
fn fresh(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs_err::remove_dir_all(dir)?;
    }
    Ok(())
}

pub fn run(sh: &crate::shell::Shell, args: &BenchArgs) -> Result<(), Failure> {
    let ws = Workspace::locate()?;
    let root = args
        .dir
        .as_ref()
        .map(|d| ws.cwd.join(d))
        .unwrap_or_else(|| ws.target_dir.join("bench"));
    let python = assemble_install::probe("python3")?;
    let xy = format!("{}.{}", python.major, python.minor);
    sh.status("Generating", format!("inputs in {}", root.display()));
    let generating = std::time::Instant::now();
    let inputs = generate::generate(
        args,
        &root,
        &ws.root.join("assemble.toml"),
        &python.executable,
        &xy,
    )?;
    let input_dir = root.join("inputs");
    // The output's state (and input cache) lives outside it: a cold run
    // starts without either.
    let b = Bench {
        exe: std::env::current_exe().context("locating the xtask binary")?,
        recipe: input_dir.join("assemble.toml"),
        out: root.join("out"),
        state: root.join("state"),
        cache: root.join("cache"),
        runs: args.runs.unwrap_or(if args.smoke { 3 } else { 5 }).max(1),
        python: python.executable.clone(),
        input_dir,
        root,
    };
    sh.status(
        "Measuring",
        format!(
            "{} venv files ({} MiB), {} app files, {} runs each (generated in {:.0} s)",
            inputs.venv_files,
            inputs.venv_bytes >> 20,
            inputs.app_files,
            b.runs,
            generating.elapsed().as_secs_f64()
        ),
    );
    // One line per phase, when it ends, with its time.
    let started = std::time::Instant::now();
    let phase = |name: &str, rows: anyhow::Result<Vec<Stats>>| -> anyhow::Result<Vec<Stats>> {
        let rows = rows?;
        sh.status(
            "Measured",
            format!("{name} ({:.0} s in all)", started.elapsed().as_secs_f64()),
        );
        Ok(rows)
    };
    let mut ms = phase("cold builds, the stat walk and the no-op", cold_rows(&b))?;
    ms.extend(phase(
        "reflinks on a loop-mounted XFS",
        xfs::clone_rows(sh, &b, inputs.venv_bytes + (inputs.venv_bytes >> 3)),
    )?);
    ms.extend(phase(
        "hard links to the cache",
        links::link_rows(&b, &python.executable),
    )?);
    ms.extend(phase("edits", edit_rows(&b))?);
    let site = b.out.join(format!("lib/python{xy}/site-packages"));
    ms.extend(phase(
        "assemble --watch: 24 edits, then a 1,000-file checkout",
        watch::watch_rows(&b, &site, 24),
    )?);
    ms.extend(phase("launchers", launcher_rows(&b, &xy))?);
    ms.extend(phase(
        "imports",
        imports::import_times(
            sh,
            &b.root,
            &python.executable,
            &b.exe,
            &b.cache,
            // Starts vary more than builds: ten runs at least, but for the
            // smoke test, which shows that the rows run (CI's time).
            if args.smoke { b.runs } else { b.runs.max(10) },
        ),
    )?);
    let report = report::BenchReport {
        machine: report::machine(),
        inputs,
        runs: b.runs,
        ratios: report::ratios(&ms),
        measurements: ms,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        report::print_table(&report);
    }
    Ok(())
}

/// `cp -a` of the inputs, the cold assemble without and with bytecode
/// (taking turns: each creates as many files as the other just deleted,
/// and the file system's state matters), the stat walk of the inputs,
/// and the no-op assemble.
fn cold_rows(b: &Bench) -> anyhow::Result<Vec<Stats>> {
    // The same recipe without bytecode, for the cold build's cost of it.
    let plain = b.input_dir.join("assemble-no-bytecode.toml");
    fs_err::write(
        &plain,
        "extends = \"assemble.toml\"\n\n[python]\ncompile-bytecode = false\n",
    )?;
    let (plain_out, plain_state) = (
        b.root.join("out-no-bytecode"),
        b.root.join("state-no-bytecode"),
    );
    let copy = b.root.join("copy");
    let compiled = b.root.join("copy-compiled");
    // A registry filled by one cold build, for the row that takes the
    // bytecode from it (with the same prefix, so the same keys).
    let shared = registry::LocalRegistry::start(&b.root.join("registry"))?;
    let (shared_out, shared_state) = (b.root.join("out-registry"), b.root.join("state-registry"));
    let from_registry = |repository: &str| {
        let mut c = b.assemble_into(&b.recipe, &shared_out, &shared_state);
        c.arg("--prefix")
            .arg(&b.out)
            .arg("--cache-registry")
            .arg(repository);
        c
    };
    if let Some(r) = &shared {
        fresh(&b.cache.join("bytecode"))?;
        let out = from_registry(&r.repository)
            .stdout(std::process::Stdio::null())
            .output()
            .context("filling the registry")?;
        if !out.status.success() {
            anyhow::bail!(
                "filling the registry: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut series = vec![
        Series {
            name: "cp -a of the inputs",
            setup: Box::new(|_| empty(&copy)),
            cmd: Box::new(|| {
                let mut c = Command::new("cp");
                c.arg("-a")
                    .arg(b.input_dir.join("venv"))
                    .arg(b.input_dir.join("app"))
                    .arg(&copy);
                c
            }),
        },
        Series {
            // What a first build with bytecode competes with: the copy, then
            // every source compiled on every core (a source that does not
            // compile is not an error here).
            name: CP_COMPILEALL,
            setup: Box::new(|_| empty(&compiled)),
            cmd: Box::new(|| {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg("cp -a \"$1\" \"$2\" \"$3\" && { \"$4\" -m compileall -q -j0 \"$3\" >/dev/null; true; }")
                    .arg("bash")
                    .arg(b.input_dir.join("venv"))
                    .arg(b.input_dir.join("app"))
                    .arg(&compiled)
                    .arg(&b.python);
                c
            }),
        },
        Series {
            name: "cold assemble, no bytecode",
            setup: Box::new(|_| {
                fresh(&plain_out)?;
                fresh(&plain_state)
            }),
            cmd: Box::new(|| {
                let mut c = b.assemble_into(&plain, &plain_out, &plain_state);
                c.args(["--link-mode", "copy"]);
                c
            }),
        },
        Series {
            // Every source compiled: the bytecode cache is emptied too.
            name: "cold assemble",
            setup: Box::new(|_| {
                fresh(&b.out)?;
                fresh(&b.state)?;
                fresh(&b.cache.join("bytecode"))
            }),
            cmd: Box::new(|| b.assemble()),
        },
    ];
    if let Some(r) = &shared {
        series.push(Series {
            // The same, its bytecode from the registry (read-only).
            name: "cold assemble, bytecode from a registry",
            setup: Box::new(|_| {
                fresh(&shared_out)?;
                fresh(&shared_state)?;
                fresh(&b.cache.join("bytecode"))
            }),
            cmd: Box::new(|| {
                let mut c = from_registry(&r.repository);
                c.arg("--cache-registry-read-only");
                c
            }),
        });
    }
    let cold = measure_interleaved(b.runs, series)?;
    drop(shared);
    fresh(&shared_out)?;
    fresh(&shared_state)?;
    fresh(&plain_out)?;
    fresh(&plain_state)?;
    fs_err::remove_dir_all(&copy)?;
    fresh(&compiled)?;
    let mut cold = cold.into_iter();
    let mut ms: Vec<Stats> = cold.by_ref().take(3).collect();
    ms.push(measure(
        "stat walk of the inputs",
        b.runs,
        |_| Ok(()),
        || {
            let mut c = Command::new("find");
            c.arg(b.input_dir.join("venv"))
                .arg(b.input_dir.join("app"))
                .args(["-printf", "%s\n"]);
            c
        },
    )?);
    ms.extend(cold);
    ms.push(measure(
        "no-op assemble",
        b.runs,
        |_| Ok(()),
        || b.assemble(),
    )?);
    Ok(ms)
}

/// The `.py` files under `dir` whose path passes `keep`, in name order.
pub(crate) fn sources(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "py") && keep(e.path()))
        .map(|e| e.into_path())
        .collect()
}

/// An assemble after one app source changed, and after 100 sources did
/// (half the app's, half the venv's).
fn edit_rows(b: &Bench) -> anyhow::Result<Vec<Stats>> {
    let app_py = sources(&b.input_dir.join("app/authentik"), |p| {
        p.to_string_lossy().contains("/app")
    });
    let venv_py = sources(&b.input_dir.join("venv"), |_| true);
    let append = |p: &Path, i: usize| -> anyhow::Result<()> {
        let mut f = fs_err::OpenOptions::new().append(true).open(p)?;
        writeln!(f, "# edit {i}")?;
        Ok(())
    };
    Ok(vec![
        measure(
            "one-file edit",
            b.runs,
            |i| append(&app_py[(i * 7919) % app_py.len()], i),
            || b.assemble(),
        )?,
        measure(
            "100-file edit",
            b.runs,
            |i| {
                for k in 0..50 {
                    append(&app_py[(i * 50 + k) * 31 % app_py.len()], i)?;
                    append(&venv_py[(i * 50 + k) * 101 % venv_py.len()], i)?;
                }
                Ok(())
            },
            || b.assemble(),
        )?,
    ])
}

/// Launchers: ours (a direct import) against the seed's, which looks the
/// entry point up through importlib.metadata, in the assembled tree with
/// its hundreds of distributions (authentik's venv has ~200).
fn launcher_rows(b: &Bench, xy: &str) -> anyhow::Result<Vec<Stats>> {
    let seed = b.root.join("seed-tool");
    fs_err::write(
        &seed,
        format!(
            "#!{}/bin/python{xy}\nimport sys\nfrom importlib.metadata import entry_points\neps = entry_points(group='console_scripts', name='tool')\nif eps:\n    sys.exit(next(iter(eps)).load()())\n",
            b.out.display()
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&seed, std::fs::Permissions::from_mode(0o755))?;
    }
    let launches = b.runs.max(10);
    Ok(vec![
        measure(
            "launcher: seed's (importlib.metadata)",
            launches,
            |_| Ok(()),
            || Command::new(&seed),
        )?,
        measure(
            "launcher: ours (direct import)",
            launches,
            |_| Ok(()),
            || Command::new(b.out.join("bin/tool")),
        )?,
    ])
}
