//! `cargo xtask bench`: generate authentik-shaped inputs from a fixed seed,
//! and time cold, no-op and edit assembles beside `cp -a` of the same
//! inputs and a stat-only walk of them, in one run.
//!
//! Absolute times on shared machines are noise; the ratios measured in the
//! same run are what the targets are about. Nothing here fails on a timing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::Failure;
use crate::context::Workspace;

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
    /// Runs of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The generator's seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A reduced size for CI: a few thousand files.
    #[arg(long)]
    pub smoke: bool,
    /// Where inputs and outputs go (default: `<target dir>/bench`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// xorshift64*: a fixed seed gives the same inputs on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[derive(Debug, Serialize)]
struct Inputs {
    venv_files: usize,
    venv_bytes: u64,
    app_files: usize,
    elf_files: usize,
}

/// Writes a file of `size` pseudo-random bytes (text-like for sources).
fn write_file(path: &Path, size: usize, rng: &mut Rng, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    if path.extension().is_some_and(|e| e == "py") {
        // Python that compiles, as a venv's and an app's sources do: the
        // bytecode step compiles every one of them.
        buf.clear();
        let mut n = 0;
        while buf.len() < size {
            let k = rng.below(1000);
            write!(
                buf,
                "def f{n}(a, b={k}):\n    x = a * {k} + b\n    return (x, {k}, 'v{n}')\n\n"
            )?;
            n += 1;
        }
        fs_err::write(path, &buf)?;
        return Ok(());
    }
    buf.resize(size, 0);
    rng.fill(buf);
    if path.extension().is_some_and(|e| e == "yaml" || e == "txt") {
        for b in buf.iter_mut() {
            *b = b"abcdefghijklmnopqrstuvwxyz _=()\n"[(*b % 32) as usize];
        }
    }
    fs_err::write(path, &buf)?;
    Ok(())
}

fn generate(
    args: &BenchArgs,
    root: &Path,
    authentik_recipe: &Path,
    python: &Path,
    xy: &str,
) -> anyhow::Result<Inputs> {
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut buf = Vec::new();
    let (venv_files, venv_mib, app_files) = if args.smoke {
        (3_000, 40, 300)
    } else {
        (args.venv_files, args.venv_mib, args.app_files)
    };
    // Everything from a previous run goes, but the import rows' venv (pip
    // made it from pinned versions: it is the same every time).
    if root.exists() {
        for entry in fs_err::read_dir(root)? {
            let entry = entry?;
            if entry.file_name() == IMPORT_VENV {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs_err::remove_dir_all(&path)?;
            } else {
                fs_err::remove_file(&path)?;
            }
        }
    }
    let venv = root.join("inputs/venv");
    let site = venv.join(format!("lib/python{xy}/site-packages"));
    fs_err::create_dir_all(&site)?;
    fs_err::write(
        venv.join("pyvenv.cfg"),
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3\n",
    )?;

    // Sizes: ~1 in 330 files is MB-scale (wheels' native libraries, data),
    // the rest spread log-uniformly from 200 B to 60 KB, scaled to the total.
    let big = (venv_files / 330).max(3);
    let elf = if args.smoke { 10 } else { 50 };
    let small = venv_files.saturating_sub(big + elf);
    let total = venv_mib << 20;
    let big_sizes: Vec<u64> = (0..big).map(|_| (1 << 20) + rng.below(5 << 20)).collect();
    let big_total: u64 = big_sizes.iter().sum();
    let raw: Vec<f64> = (0..small)
        .map(|_| {
            let u = (rng.below(1_000_000) as f64) / 1_000_000.0;
            (200f64.ln() + u * (60_000f64.ln() - 200f64.ln())).exp()
        })
        .collect();
    let raw_total: f64 = raw.iter().sum();
    let scale = (total.saturating_sub(big_total)) as f64 / raw_total.max(1.0);
    let packages = (venv_files / 100).max(5);
    let mut written = 0usize;
    let mut bytes = 0u64;
    for (i, s) in raw.iter().enumerate() {
        let pkg = i % packages;
        let sub = (i / packages) % 4;
        let dir = site.join(format!("pkg{pkg:03}/sub{sub}"));
        let name = if i % 3 == 0 {
            format!("__pycache__/mod{i}.cpython-311.pyc")
        } else {
            format!("mod{i}.py")
        };
        let path = dir.join(name);
        fs_err::create_dir_all(path.parent().unwrap_or(&dir))?;
        let size = ((*s * scale) as usize).max(1);
        write_file(&path, size, &mut rng, &mut buf)?;
        written += 1;
        bytes += size as u64;
    }
    for (i, size) in big_sizes.iter().enumerate() {
        let path = site.join(format!("pkg{:03}/data/blob{i}.bin", i % packages));
        fs_err::create_dir_all(path.parent().unwrap_or(&site))?;
        write_file(&path, *size as usize, &mut rng, &mut buf)?;
        written += 1;
        bytes += size;
    }
    for pkg in 0..packages {
        let di = site.join(format!("pkg{pkg:03}-1.0.dist-info"));
        fs_err::create_dir_all(&di)?;
        fs_err::write(
            di.join("METADATA"),
            format!("Metadata-Version: 2.1\nName: pkg{pkg:03}\nVersion: 1.0\n\n"),
        )?;
        fs_err::write(di.join("RECORD"), format!("pkg{pkg:03}/__init__.py,,\n"))?;
        fs_err::write(
            site.join(format!("pkg{pkg:03}/__init__.py")),
            "def main():\n    return 0\n",
        )?;
        if pkg == 0 {
            fs_err::write(
                di.join("entry_points.txt"),
                "[console_scripts]\ntool = pkg000:main\n",
            )?;
        }
    }
    // ELF shared libraries, built once with gcc and padded to distinct contents.
    let mut elf_files = 0;
    let src = root.join("elf.c");
    fs_err::write(&src, "int bench_lib(void) { return 7; }\n")?;
    let lib = root.join("libbench.so");
    let built = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if built {
        let base = fs_err::read(&lib)?;
        for i in 0..elf {
            let dir = site.join(format!("pkg{:03}.libs", i % packages));
            fs_err::create_dir_all(&dir)?;
            let mut content = base.clone();
            let mut pad = vec![0u8; 4096 + rng.below(1 << 20) as usize];
            rng.fill(&mut pad);
            content.extend_from_slice(&pad);
            fs_err::write(dir.join(format!("libbench{i}.so")), &content)?;
            elf_files += 1;
            bytes += content.len() as u64;
        }
    }

    // The authentik checkout: the seed's patch targets and bulk modules.
    let app = root.join("inputs/app");
    let fixed: &[(&str, &str)] = &[
        ("authentik/__init__.py", ""),
        (
            "authentik/root/settings.py",
            "from pathlib import Path\nBASE_DIR = Path(__file__).absolute().parent.parent.parent\n",
        ),
        ("authentik/lib/default.yml", "blueprints_dir: /blueprints\n"),
        (
            "authentik/stages/email/utils.py",
            "p = [Path(\"web/icons/icon_left_brand.png\"), Path(\"web/dist/assets/icons/icon_left_brand.png\")]\n",
        ),
        (
            "authentik/rbac/migrations/0010_remove_role_group_alter_role_name.py",
            "deps = [\n    (\"authentik_rbac\", \"0009_remove_initialpermissions_mode\"),\n]\n",
        ),
        ("lifecycle/ak", "#!/usr/bin/env -S bash\necho ak\n"),
        ("manage.py", "print('manage')\n"),
        ("packages/ak-guardian/guardian/__init__.py", ""),
        (
            "packages/django-channels-postgres/django_channels_postgres/__init__.py",
            "",
        ),
        (
            "packages/django-dramatiq-postgres/django_dramatiq_postgres/__init__.py",
            "",
        ),
        (
            "packages/django-postgres-cache/django_postgres_cache/__init__.py",
            "",
        ),
    ];
    for (p, c) in fixed {
        let path = app.join(p);
        fs_err::create_dir_all(path.parent().unwrap_or(&app))?;
        fs_err::write(&path, c)?;
    }
    for i in 0..app_files.saturating_sub(fixed.len()) {
        let path = if i % 25 == 0 {
            app.join(format!("blueprints/b{}/bp{i}.yaml", i % 7))
        } else {
            app.join(format!("authentik/app{}/m{}/mod{i}.py", i % 40, i % 3))
        };
        fs_err::create_dir_all(path.parent().unwrap_or(&app))?;
        write_file(&path, 500 + rng.below(8_000) as usize, &mut rng, &mut buf)?;
    }
    // opencontainers' place, as the authentik recipe installs it.
    let oci = root.join("inputs/oci/opencontainers");
    fs_err::create_dir_all(&oci)?;
    fs_err::write(oci.join("__init__.py"), "")?;
    // The authentik recipe itself (its units, install maps and patches),
    // with the sources replaced by the generated inputs. The interpreter by
    // its real path, as a packager's recipe names it (a name on PATH may be
    // a shim that costs a shell on every run).
    let base = authentik_recipe
        .to_str()
        .with_context(|| format!("{} is not UTF-8", authentik_recipe.display()))?;
    fs_err::write(
        root.join("inputs/assemble.toml"),
        format!(
            r#"extends = {base:?}

[package]
name = "bench"
version = "0"

[python]
interpreter = {python:?}
installer = "pip"

[units.python-deps]
venv = "venv"
exclude = []
scripts = ["tool"]

[units.opencontainers]
path = "oci"

[units.authentik]
path = "app"
"#,
            python = python.display().to_string()
        ),
    )?;
    Ok(Inputs {
        venv_files: written + elf_files + packages * 3 + 2,
        venv_bytes: bytes,
        app_files,
        elf_files,
    })
}

/// One measurement over several runs.
#[derive(Debug, Serialize)]
struct Stats {
    name: &'static str,
    median_s: f64,
    min_s: f64,
    max_s: f64,
    /// Peak resident set of the measured process, in MiB (from GNU time).
    peak_rss_mib: Option<f64>,
}

/// One measured command: `setup` (untimed) before each run of `cmd`.
struct Series<'a> {
    name: &'static str,
    setup: Box<dyn FnMut(usize) -> anyhow::Result<()> + 'a>,
    cmd: Box<dyn Fn() -> Command + 'a>,
}

/// Runs `cmd` `runs` times (after `setup`, untimed) and reports the times.
fn measure(
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
fn measure_interleaved(runs: usize, mut series: Vec<Series<'_>>) -> anyhow::Result<Vec<Stats>> {
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

#[derive(Debug, Serialize)]
struct Ratio {
    name: &'static str,
    value: f64,
    /// `None`: a figure to read, with no target.
    target: Option<f64>,
    met: bool,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    machine: String,
    inputs: Inputs,
    runs: usize,
    measurements: Vec<Stats>,
    ratios: Vec<Ratio>,
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
    let runs = args.runs.max(1);
    sh.status("Generating", format!("inputs in {}", root.display()));
    let inputs = generate(
        args,
        &root,
        &ws.root.join("assemble.toml"),
        &python.executable,
        &xy,
    )?;
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let input_dir = root.join("inputs");
    let recipe = input_dir.join("assemble.toml");
    let out = root.join("out");
    // The output's state (and input cache) lives outside it: a cold run
    // starts without either.
    let state = root.join("state");
    let cache = root.join("cache");
    let assemble_into = |recipe: &Path, out: &Path, state: &Path| {
        let mut c = Command::new(&exe);
        c.arg("assemble")
            .arg("--recipe")
            .arg(recipe)
            .arg("--out")
            .arg(out)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--state-dir")
            .arg(state)
            .arg("--json");
        c
    };
    let assemble = || assemble_into(&recipe, &out, &state);
    // The same recipe without bytecode, for the cold build's cost of it.
    let plain = input_dir.join("assemble-no-bytecode.toml");
    fs_err::write(
        &plain,
        "extends = \"assemble.toml\"\n\n[python]\ncompile-bytecode = false\n",
    )?;
    let (plain_out, plain_state) = (root.join("out-no-bytecode"), root.join("state-no-bytecode"));
    sh.status(
        "Measuring",
        format!(
            "{} venv files ({} MiB), {} app files, {} runs each",
            inputs.venv_files,
            inputs.venv_bytes >> 20,
            inputs.app_files,
            runs
        ),
    );
    let mut ms = Vec::new();
    let copy = root.join("copy");
    // cp -a and the cold assemble take turns: each creates as many files
    // as the other just deleted, and the file system's state matters.
    let fresh = |dir: &Path| -> anyhow::Result<()> {
        if dir.exists() {
            fs_err::remove_dir_all(dir)?;
        }
        Ok(())
    };
    let both = measure_interleaved(
        runs,
        vec![
            Series {
                name: "cp -a of the inputs",
                setup: Box::new(|_| {
                    fresh(&copy)?;
                    fs_err::create_dir_all(&copy)?;
                    Ok(())
                }),
                cmd: Box::new(|| {
                    let mut c = Command::new("cp");
                    c.arg("-a")
                        .arg(input_dir.join("venv"))
                        .arg(input_dir.join("app"))
                        .arg(&copy);
                    c
                }),
            },
            Series {
                name: "cold assemble, no bytecode",
                setup: Box::new(|_| {
                    fresh(&plain_out)?;
                    fresh(&plain_state)
                }),
                cmd: Box::new(|| assemble_into(&plain, &plain_out, &plain_state)),
            },
            Series {
                // Every source compiled: the bytecode cache is emptied too.
                name: "cold assemble",
                setup: Box::new(|_| {
                    fresh(&out)?;
                    fresh(&state)?;
                    fresh(&cache.join("bytecode"))
                }),
                cmd: Box::new(assemble),
            },
        ],
    )?;
    fresh(&plain_out)?;
    fresh(&plain_state)?;
    fs_err::remove_dir_all(&copy)?;
    let mut both = both.into_iter();
    ms.extend(both.next());
    ms.extend(both.next());
    ms.push(measure(
        "stat walk of the inputs",
        runs,
        |_| Ok(()),
        || {
            let mut c = Command::new("find");
            c.arg(input_dir.join("venv"))
                .arg(input_dir.join("app"))
                .args(["-printf", "%s\n"]);
            c
        },
    )?);
    ms.extend(both);
    ms.push(measure("no-op assemble", runs, |_| Ok(()), assemble)?);
    let app_py: Vec<PathBuf> = walkdir::WalkDir::new(input_dir.join("app/authentik"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.path().extension().is_some_and(|x| x == "py")
                && e.path().to_string_lossy().contains("/app")
        })
        .map(|e| e.into_path())
        .collect();
    let venv_py: Vec<PathBuf> = walkdir::WalkDir::new(input_dir.join("venv"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "py"))
        .map(|e| e.into_path())
        .collect();
    let append = |p: &Path, i: usize| -> anyhow::Result<()> {
        let mut f = fs_err::OpenOptions::new().append(true).open(p)?;
        writeln!(f, "# edit {i}")?;
        Ok(())
    };
    ms.push(measure(
        "one-file edit",
        runs,
        |i| append(&app_py[(i * 7919) % app_py.len()], i),
        assemble,
    )?);
    ms.push(measure(
        "100-file edit",
        runs,
        |i| {
            for k in 0..50 {
                append(&app_py[(i * 50 + k) * 31 % app_py.len()], i)?;
                append(&venv_py[(i * 50 + k) * 101 % venv_py.len()], i)?;
            }
            Ok(())
        },
        assemble,
    )?);

    // Launchers: ours (a direct import) against the seed's, which looks
    // the entry point up through importlib.metadata, in the assembled tree
    // with its hundreds of distributions (authentik's venv has ~200).
    let seed = root.join("seed-tool");
    fs_err::write(
        &seed,
        format!(
            "#!{}/bin/python{xy}\nimport sys\nfrom importlib.metadata import entry_points\neps = entry_points(group='console_scripts', name='tool')\nif eps:\n    sys.exit(next(iter(eps)).load()())\n",
            out.display()
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&seed, std::fs::Permissions::from_mode(0o755))?;
    }
    let launches = runs.max(10);
    ms.push(measure(
        "launcher: seed's (importlib.metadata)",
        launches,
        |_| Ok(()),
        || Command::new(&seed),
    )?);
    ms.push(measure(
        "launcher: ours (direct import)",
        launches,
        |_| Ok(()),
        || Command::new(out.join("bin/tool")),
    )?);

    ms.extend(import_times(
        sh,
        &root,
        &python.executable,
        &exe,
        &cache,
        launches,
    )?);

    let get = |n: &str| {
        ms.iter()
            .find(|s| s.name == n)
            .map_or(f64::NAN, |s| s.median_s)
    };
    let peak = ms
        .iter()
        .filter(|s| !s.name.starts_with("launcher"))
        .filter(|s| s.name.contains("assemble") || s.name.contains("edit"))
        .filter_map(|s| s.peak_rss_mib)
        .fold(0.0, f64::max);
    let ratio = |name, value: f64, target: Option<f64>| Ratio {
        name,
        value,
        target,
        met: target.is_none_or(|t| value <= t),
    };
    let ratios = vec![
        ratio(
            "cold, no bytecode / cp -a",
            get("cold assemble, no bytecode") / get("cp -a of the inputs"),
            Some(1.0),
        ),
        ratio(
            "cold with bytecode / without",
            get("cold assemble") / get("cold assemble, no bytecode"),
            None,
        ),
        ratio(
            "no-op / stat walk",
            get("no-op assemble") / get("stat walk of the inputs"),
            Some(2.0),
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
    ];
    let report = BenchReport {
        machine: machine(),
        inputs,
        runs,
        measurements: ms,
        ratios,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_table(&report);
    }
    Ok(())
}

const IMPORT_WITH: &str =
    "import django, rest_framework, cryptography, pydantic: the tree's bytecode";
const IMPORT_WITHOUT: &str = "import django, rest_framework, cryptography, pydantic: no bytecode";
const IMPORT_OWN: &str =
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
const IMPORT_VENV: &str = "import-venv";
const IMPORT_CODE: &str = "import django.db.models, django.forms, django.template, rest_framework.fields, cryptography.x509; from pydantic import BaseModel";

/// A start's imports of a heavy set of real packages (a venv made once
/// with pip, in `root/import-venv`), from a tree assembled with its
/// bytecode, from one without (`-B`: nothing is written back, as when
/// every assemble removed what the interpreter wrote), and from one where
/// a first start wrote the interpreter's own pycs: the most bytecode can
/// give, against which the first two are read.
fn import_times(
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
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
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

fn print_table(r: &BenchReport) {
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

fn machine() -> String {
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
