//! The clone rows: an XFS file system in an image file, made and
//! loop-mounted by the bench (as root, with Debian's xfsprogs), the inputs
//! copied onto it, and there `cp -a` (which makes reflinks itself since
//! coreutils 9), `cp -a --reflink=never` and a cold `--link-mode clone`
//! build, taking turns. Without root or `mkfs.xfs` the rows are left out,
//! and said so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::measure::{Series, Stats, measure_interleaved};
use super::{Bench, fresh};

pub(crate) const CP_XFS: &str = "cp -a of the inputs, on XFS";
pub(crate) const CP_XFS_NEVER: &str = "cp -a --reflink=never of the inputs, on XFS";
pub(crate) const CLONE_XFS: &str = "cold assemble, no bytecode, clone, on XFS";

/// A loop-mounted XFS image, unmounted and removed when dropped.
struct Xfs {
    dir: PathBuf,
    image: PathBuf,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Xfs {
    /// An XFS of `bytes` (sparse) mounted at `root/xfs`; `None` where this
    /// machine cannot make one (not root, no mkfs.xfs).
    fn mount(root: &Path, bytes: u64) -> anyhow::Result<Option<Xfs>> {
        if !rustix::process::geteuid().is_root() || assemble_fs::find_program("mkfs.xfs").is_none()
        {
            return Ok(None);
        }
        let (dir, image) = (root.join("xfs"), root.join("xfs.img"));
        // Left mounted by a bench that was killed: unmounted first.
        let _ = Command::new("umount").arg(&dir).output();
        fresh(&dir)?;
        fs_err::create_dir_all(&dir)?;
        fs_err::File::create(&image)?.set_len(bytes)?;
        run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&dir))?;
        Ok(Some(Xfs { dir, image }))
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = fs_err::remove_dir(&self.dir);
        let _ = fs_err::remove_file(&self.image);
    }
}

/// The clone rows (see the module doc); empty where no XFS can be made.
pub(crate) fn clone_rows(
    sh: &crate::shell::Shell,
    b: &Bench,
    input_bytes: u64,
) -> anyhow::Result<Vec<Stats>> {
    // The inputs, two copies of them and the tree, with room to spare.
    let Some(xfs) = Xfs::mount(&b.root, 4 * input_bytes + (512 << 20))? else {
        sh.warn("the clone rows need root and mkfs.xfs (apt-get install xfsprogs): left out");
        return Ok(Vec::new());
    };
    let inputs = xfs.dir.join("inputs");
    run(Command::new("cp")
        .args(["-a", "--reflink=never"])
        .arg(&b.input_dir)
        .arg(&inputs))?;
    let plain = inputs.join("assemble-no-bytecode.toml");
    let (copy, out, state, cache) = (
        xfs.dir.join("copy"),
        xfs.dir.join("out"),
        xfs.dir.join("state"),
        xfs.dir.join("cache"),
    );
    let cp = |never: bool| {
        let mut c = Command::new("cp");
        c.arg("-a");
        if never {
            c.arg("--reflink=never");
        }
        c.arg(inputs.join("venv"))
            .arg(inputs.join("app"))
            .arg(&copy);
        c
    };
    let empty_copy = |_| super::empty(&copy);
    let clone_build = || {
        let mut c = Command::new(&b.exe);
        c.arg("assemble")
            .arg("--recipe")
            .arg(&plain)
            .arg("--out")
            .arg(&out)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--state-dir")
            .arg(&state)
            .args(["--link-mode", "clone", "--json"]);
        c
    };
    let series = vec![
        Series {
            name: CP_XFS,
            setup: Box::new(empty_copy),
            cmd: Box::new(|| cp(false)),
        },
        Series {
            name: CP_XFS_NEVER,
            setup: Box::new(empty_copy),
            cmd: Box::new(|| cp(true)),
        },
        Series {
            name: CLONE_XFS,
            setup: Box::new(|_| {
                fresh(&out)?;
                fresh(&state)
            }),
            cmd: Box::new(clone_build),
        },
    ];
    let rows = measure_interleaved(b.runs, series)?;
    super::check_copies(&clone_build(), &[&out, &state], "cloned")?;
    drop(xfs);
    Ok(rows)
}
