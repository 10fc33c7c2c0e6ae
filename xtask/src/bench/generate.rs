//! The benchmark's inputs: an authentik-shaped venv and checkout,
//! generated from a fixed seed, and the recipe over them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use serde::Serialize;

use super::BenchArgs;
use super::imports::IMPORT_VENV;

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
pub(crate) struct Inputs {
    pub(crate) venv_files: usize,
    pub(crate) venv_bytes: u64,
    pub(crate) app_files: usize,
    pub(crate) elf_files: usize,
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

/// The inputs: a venv and an authentik checkout of the sizes `args`
/// asks for (`--smoke`: a few thousand files), and the recipe over them.
pub(crate) fn generate(
    args: &BenchArgs,
    root: &Path,
    authentik_recipe: &Path,
    python: &Path,
    xy: &str,
) -> anyhow::Result<Inputs> {
    let mut g = Generator {
        rng: Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        buf: Vec::new(),
    };
    let (venv_files, venv_mib, app_files) = if args.smoke {
        (1_500, 20, 150)
    } else {
        (args.venv_files, args.venv_mib, args.app_files)
    };
    clear(root)?;
    let site = root.join(format!("inputs/venv/lib/python{xy}/site-packages"));
    fs_err::create_dir_all(&site)?;
    fs_err::write(
        root.join("inputs/venv/pyvenv.cfg"),
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3\n",
    )?;
    let packages = (venv_files / 100).max(5);
    let elf = if args.smoke { 10 } else { 50 };
    let (written, mut bytes) = g.venv_files(&site, venv_files, venv_mib, packages, elf)?;
    distributions(&site, packages)?;
    let (elf_files, elf_bytes) = g.elf_libraries(root, &site, packages, elf)?;
    bytes += elf_bytes;
    g.app(&root.join("inputs/app"), app_files)?;
    // opencontainers' place, as the authentik recipe installs it.
    let oci = root.join("inputs/oci/opencontainers");
    fs_err::create_dir_all(&oci)?;
    fs_err::write(oci.join("__init__.py"), "")?;
    write_recipe(root, authentik_recipe, python)?;
    Ok(Inputs {
        venv_files: written + elf_files + packages * 3 + 2,
        venv_bytes: bytes,
        app_files,
        elf_files,
    })
}

/// Everything from a previous run goes, but the import rows' venv (pip
/// made it from pinned versions: it is the same every time).
fn clear(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
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
    Ok(())
}

/// A seeded generator and its write buffer.
struct Generator {
    rng: Rng,
    buf: Vec<u8>,
}

impl Generator {
    fn write(&mut self, path: &Path, size: usize) -> anyhow::Result<()> {
        write_file(path, size, &mut self.rng, &mut self.buf)
    }

    /// The venv's modules and data, `files` of them (less `big` and `elf`
    /// files) in `mib` MiB, over `packages` packages: ~1 in 330 files is
    /// MB-scale (wheels' native libraries, data), the rest spread
    /// log-uniformly from 200 B to 60 KB, scaled to the total. Returns the
    /// files and bytes written.
    fn venv_files(
        &mut self,
        site: &Path,
        files: usize,
        mib: u64,
        packages: usize,
        elf: usize,
    ) -> anyhow::Result<(usize, u64)> {
        let rng = &mut self.rng;
        let big = (files / 330).max(3);
        let small = files.saturating_sub(big + elf);
        let total = mib << 20;
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
            self.write(&path, size)?;
            written += 1;
            bytes += size as u64;
        }
        for (i, size) in big_sizes.iter().enumerate() {
            let path = site.join(format!("pkg{:03}/data/blob{i}.bin", i % packages));
            fs_err::create_dir_all(path.parent().unwrap_or(site))?;
            self.write(&path, *size as usize)?;
            written += 1;
            bytes += size;
        }
        Ok((written, bytes))
    }

    /// `count` ELF shared libraries, built once with gcc and padded to
    /// distinct contents (none when gcc is missing). Returns the files
    /// and bytes written.
    fn elf_libraries(
        &mut self,
        root: &Path,
        site: &Path,
        packages: usize,
        count: usize,
    ) -> anyhow::Result<(usize, u64)> {
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
        if !built {
            return Ok((0, 0));
        }
        let base = fs_err::read(&lib)?;
        let mut bytes = 0;
        for i in 0..count {
            let dir = site.join(format!("pkg{:03}.libs", i % packages));
            fs_err::create_dir_all(&dir)?;
            let mut content = base.clone();
            let mut pad = vec![0u8; 4096 + self.rng.below(1 << 20) as usize];
            self.rng.fill(&mut pad);
            content.extend_from_slice(&pad);
            fs_err::write(dir.join(format!("libbench{i}.so")), &content)?;
            bytes += content.len() as u64;
        }
        Ok((count, bytes))
    }

    /// The authentik checkout: the seed's patch targets, then bulk modules
    /// and blueprints up to `files`.
    fn app(&mut self, app: &Path, files: usize) -> anyhow::Result<()> {
        for (p, c) in APP_FILES {
            let path = app.join(p);
            fs_err::create_dir_all(path.parent().unwrap_or(app))?;
            fs_err::write(&path, c)?;
        }
        for i in 0..files.saturating_sub(APP_FILES.len()) {
            let path = if i % 25 == 0 {
                app.join(format!("blueprints/b{}/bp{i}.yaml", i % 7))
            } else {
                app.join(format!("authentik/app{}/m{}/mod{i}.py", i % 40, i % 3))
            };
            fs_err::create_dir_all(path.parent().unwrap_or(app))?;
            let size = 500 + self.rng.below(8_000) as usize;
            self.write(&path, size)?;
        }
        Ok(())
    }
}

/// Each package's dist-info (METADATA, RECORD) and `__init__.py`; the
/// first has the `tool` console script.
fn distributions(site: &Path, packages: usize) -> anyhow::Result<()> {
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
    Ok(())
}

/// The files of the checkout the seed patches or installs by name.
const APP_FILES: &[(&str, &str)] = &[
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

/// The authentik recipe itself (its units, install maps and patches),
/// with the sources replaced by the generated inputs. The interpreter by
/// its real path, as a packager's recipe names it (a name on PATH may be
/// a shim that costs a shell on every run).
fn write_recipe(root: &Path, authentik_recipe: &Path, python: &Path) -> anyhow::Result<()> {
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
    Ok(())
}
