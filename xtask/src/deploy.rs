//! `cargo xtask deploy --to PREFIX`: generations beside the prefix, an
//! atomic switch, rollback.
//!
//! `PREFIX` is a link, `NAME.generations/<n>` (relative, in the same
//! folder), to the generation that runs. A deploy builds generation n+1
//! with `--prefix PREFIX` into `PREFIX.generations/<n+1>` (its files that
//! the current generation holds unchanged hard-linked from it), re-hashes
//! every file against the manifest just recorded, writes `<n+1>.json` (its
//! NAR hash, date, recipe), and only then renames a new link over
//! `PREFIX`: a process sees the old tree or the new one, never a mix, and
//! one started before keeps the folder it resolved. The tool never deletes
//! outside `PREFIX.generations/` and the link itself: a `PREFIX` that is not
//! such a link is refused, never replaced, and only numbered entries of the
//! generations folder are removed (a failed build's, or by `--keep`),
//! through a handle on that folder that follows no link.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use assemble_pipeline::Mode;
use assemble_reconcile::Layout;

use crate::context::Workspace;
use crate::shell::Shell;
use crate::{Failure, TreeArgs};

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Where the tree runs from: a link to its current generation, made
    /// and switched by deploy (PREFIX.generations/<n> beside it).
    #[arg(long, value_name = "PREFIX")]
    pub to: PathBuf,
    /// Switch PREFIX back to the generation before the current one
    /// (after re-hashing it); builds nothing.
    #[arg(long, conflicts_with = "list")]
    pub rollback: bool,
    /// List the generations: number, NAR hash, date; the current one marked.
    #[arg(long)]
    pub list: bool,
    /// After switching, remove all but the newest N generations (the
    /// current one is always kept).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Print what was done (or the list) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What `<n>.json` beside a generation holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Info {
    generation: u64,
    nar_hash: String,
    /// Seconds since the epoch, when it was deployed.
    created: u64,
    package: String,
    version: String,
    recipe: PathBuf,
}

pub fn run(sh: &Shell, args: &DeployArgs) -> Result<(), Failure> {
    let ws = Workspace::for_recipe(&args.tree.common)?;
    let prefix = Prefix::new(&ws.cwd, &args.to)?;
    if args.list {
        return list(&prefix, args.json);
    }
    // Refused before anything is made beside it, then read again under
    // the lock.
    prefix.current()?;
    let gens = prefix.open_generations()?;
    let _lock = assemble_fs::lock::exclusive(&prefix.gens.join(".deploy.lock"), &|| {
        sh.status("Waiting", "for another deploy to this prefix to finish")
    })
    .context("locking the generations folder")?;
    let current = prefix.current()?;
    let state_base = |out: &Path| ws.state_base(args.tree.common.state_dir.as_deref(), out);
    let target = if args.rollback {
        let to = rollback_target(&prefix, current)?;
        check(&prefix, to, &state_base(&prefix.generation(to)))?;
        to
    } else {
        build(sh, args, &prefix, &gens, current, &state_base)?
    };
    prefix.switch(target)?;
    let word = if args.rollback {
        "Rolled back"
    } else {
        "Deployed"
    };
    sh.status(
        word,
        format!(
            "{} -> generation {target} ({})",
            prefix.link.display(),
            prefix
                .info(target)
                .map_or_else(|| "no record".into(), |i| i.nar_hash)
        ),
    );
    let removed = match args.keep {
        Some(keep) => prefix.keep(&gens, keep as usize, target, &state_base)?,
        None => Vec::new(),
    };
    for n in &removed {
        sh.note("Removed", format!("generation {n}"));
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "prefix": prefix.link,
                "generation": target,
                "path": prefix.generation(target),
                "previous": current,
                "nar_hash": prefix.info(target).map(|i| i.nar_hash),
                "removed": removed,
            })
        );
    }
    Ok(())
}

/// Builds generation n+1 (linking from the current one), verifies it and
/// records its `<n>.json`; a generation that fails is removed.
fn build(
    sh: &Shell,
    args: &DeployArgs,
    prefix: &Prefix,
    gens: &OwnedFd,
    current: Option<u64>,
    state_base: &dyn Fn(&Path) -> PathBuf,
) -> Result<u64, Failure> {
    let next = prefix.numbered(false)?.last().map_or(1, |n| n + 1);
    let out = prefix.generation(next);
    let assemble = args
        .tree
        .assemble_args(out.clone(), prefix.link.clone(), args.json);
    let mut opts = crate::assemble::options(&assemble)?;
    opts.link_from = current
        .map(|n| prefix.generation(n))
        .filter(|g| Layout::new(g, &state_base(g)).state.is_dir());
    let built = crate::assemble::build(sh, &opts, args.json, Mode::Apply).and_then(|report| {
        check(prefix, next, &opts.state_base)?;
        let nar = report
            .nar_hash
            .ok_or_else(|| anyhow!("the build reported no NAR hash"))?
            .to_sri();
        let same = current.filter(|&n| prefix.info(n).is_some_and(|i| i.nar_hash == nar));
        if same.is_none() {
            prefix.record(next, &nar, &report, &opts.recipe)?;
        }
        Ok(same)
    });
    match built {
        Ok(None) => Ok(next),
        // The tree that runs already: no new generation.
        Ok(Some(same)) => {
            prefix.remove(gens, next, &opts.state_base)?;
            sh.status("Fresh", format!("generation {same} is this tree already"));
            Ok(same)
        }
        Err(e) => {
            // Never leave a half-built generation behind.
            let _ = prefix.remove(gens, next, &opts.state_base);
            Err(e)
        }
    }
}

/// Re-hashes generation `n` against the manifest recorded for it.
fn check(prefix: &Prefix, n: u64, state_base: &Path) -> Result<(), Failure> {
    let out = prefix.generation(n);
    let found = assemble_reconcile::verify(&Layout::new(&out, state_base))?;
    if let Some(first) = found.first() {
        return Err(Failure {
            code: 1,
            error: anyhow!(
                "generation {n} ({}) does not match its manifest ({} difference{}, the first: {}: {}); {} was not switched",
                out.display(),
                found.len(),
                if found.len() == 1 { "" } else { "s" },
                first.path,
                first.what,
                prefix.link.display()
            ),
        });
    }
    Ok(())
}

/// The newest generation older than the current one.
fn rollback_target(prefix: &Prefix, current: Option<u64>) -> Result<u64, Failure> {
    let current = current.ok_or_else(|| {
        anyhow!(
            "{} is not deployed yet: nothing to roll back",
            prefix.link.display()
        )
    })?;
    let older = prefix
        .generations()?
        .into_iter()
        .filter(|n| *n < current)
        .max();
    older.ok_or_else(|| {
        Failure::from(anyhow!(
            "{} is at generation {current}, the oldest there is: nothing to roll back to",
            prefix.link.display()
        ))
    })
}

/// `deploy --list`.
fn list(prefix: &Prefix, json: bool) -> Result<(), Failure> {
    let current = prefix.current()?;
    let all = if prefix.gens.is_dir() {
        prefix.generations()?
    } else {
        Vec::new()
    };
    let rows: Vec<serde_json::Value> = all
        .iter()
        .map(|&n| {
            let info = prefix.info(n);
            serde_json::json!({
                "generation": n,
                "current": Some(n) == current,
                "path": prefix.generation(n),
                "nar_hash": info.as_ref().map(|i| &i.nar_hash),
                "created": info.as_ref().map(|i| i.created),
                "version": info.as_ref().map(|i| &i.version),
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({ "prefix": prefix.link, "generations": rows })
        );
        return Ok(());
    }
    for &n in &all {
        let mark = if Some(n) == current { "*" } else { " " };
        match prefix.info(n) {
            Some(i) => println!(
                "{mark} {n:>4}  {}  {}  {} {}",
                assemble_image::rfc3339(i.created),
                i.nar_hash,
                i.package,
                i.version
            ),
            None => println!("{mark} {n:>4}  (no record)"),
        }
    }
    Ok(())
}

/// A prefix and its generations folder.
struct Prefix {
    /// PREFIX, absolute.
    link: PathBuf,
    /// PREFIX.generations.
    gens: PathBuf,
    /// What the link holds for generation n, without n:
    /// `NAME.generations/`.
    relative: String,
}

impl Prefix {
    fn new(cwd: &Path, to: &Path) -> Result<Prefix, Failure> {
        let link = assemble_fs::normalize(cwd, to);
        let usage = |why: &str| Failure {
            code: 2,
            error: anyhow!("--to {}: {why}", to.display()),
        };
        let name = link
            .file_name()
            .and_then(OsStr::to_str)
            .ok_or_else(|| usage("needs a folder name (UTF-8) to deploy to"))?
            .to_string();
        if link.parent().is_none_or(|p| p == Path::new("")) {
            return Err(usage("needs a parent folder"));
        }
        let relative = format!("{name}.generations/");
        Ok(Prefix {
            gens: link.with_file_name(format!("{name}.generations")),
            link,
            relative,
        })
    }

    fn generation(&self, n: u64) -> PathBuf {
        self.gens.join(n.to_string())
    }

    /// The generation PREFIX links to; `None` when there is no PREFIX.
    /// Anything else at PREFIX is refused: deploy never replaces it.
    fn current(&self) -> Result<Option<u64>, Failure> {
        let meta = match fs_err::symlink_metadata(&self.link) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other.context("reading the prefix")?,
        };
        let not_ours = || Failure {
            code: 1,
            error: anyhow!(
                "{} exists and is not a link deploy made (to {}<n>); move it away first: deploy never replaces it",
                self.link.display(),
                self.relative
            ),
        };
        if !meta.is_symlink() {
            return Err(not_ours());
        }
        let target = fs_err::read_link(&self.link).context("reading the prefix")?;
        let n = target
            .to_str()
            .and_then(|t| t.strip_prefix(&self.relative))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(not_ours)?;
        Ok(Some(n))
    }

    /// The generations folder, made if missing; a link there is refused.
    fn open_generations(&self) -> Result<OwnedFd, Failure> {
        match fs_err::symlink_metadata(&self.gens) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = self.gens.parent().unwrap_or(Path::new("/"));
                if !parent.is_dir() {
                    // Deploy makes PREFIX and its generations, never the
                    // folders above them: those are the machine's.
                    return Err(Failure {
                        code: 1,
                        error: anyhow!(
                            "{} does not exist: deploy makes {} and its generations beside it, not the folders above; make it first (mkdir -p {})",
                            parent.display(),
                            self.link.display(),
                            parent.display()
                        ),
                    });
                }
                fs_err::create_dir(&self.gens).context("making the generations folder")?
            }
            Err(e) => return Err(anyhow::Error::from(e).into()),
            Ok(m) if !m.is_dir() => {
                return Err(anyhow!(
                    "{} is not a folder (a link or a file); deploy keeps generations only in a folder of its own",
                    self.gens.display()
                )
                .into());
            }
            Ok(_) => {}
        }
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::open(&self.gens, flags, Mode::empty())
            .with_context(|| format!("opening {}", self.gens.display()))
            .map_err(Failure::from)
    }

    /// The generations there are, oldest first: the entries whose name is
    /// a number and that are folders.
    fn generations(&self) -> Result<Vec<u64>, Failure> {
        self.numbered(true)
    }

    /// The numbers the generations folder's entries are named by (only
    /// folders' with `folders`), sorted.
    fn numbered(&self, folders: bool) -> Result<Vec<u64>, Failure> {
        let mut found = Vec::new();
        for e in fs_err::read_dir(&self.gens).context("listing the generations")? {
            let e = e.context("listing the generations")?;
            let n = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = n
                && n.to_string() == e.file_name().to_string_lossy()
                && (!folders || e.file_type().is_ok_and(|t| t.is_dir()))
            {
                found.push(n);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    fn info(&self, n: u64) -> Option<Info> {
        let path = self.gens.join(format!("{n}.json"));
        let text = assemble_fs::files::read_named(&path, 1 << 20).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes `<n>.json`.
    fn record(
        &self,
        n: u64,
        nar_hash: &str,
        report: &assemble_pipeline::Report,
        recipe: &Path,
    ) -> anyhow::Result<()> {
        let info = Info {
            generation: n,
            nar_hash: nar_hash.to_string(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            package: report.name.clone(),
            version: report.version.clone(),
            recipe: recipe.to_path_buf(),
        };
        let path = self.gens.join(format!("{n}.json"));
        assemble_fs::write_atomic(
            &path,
            &serde_json::to_vec_pretty(&info)?,
            assemble_fs::Durability::Synced,
        )
        .with_context(|| format!("writing {}", path.display()))
    }

    /// Makes PREFIX a link to generation `n`: a new link beside it, renamed
    /// over it (atomic: PREFIX always names one whole generation).
    fn switch(&self, n: u64) -> Result<(), Failure> {
        let target = format!("{}{n}", self.relative);
        let name = self.link.file_name().unwrap_or_default().as_encoded_bytes();
        let tmp = self
            .link
            .with_file_name(assemble_manifest::path::temp_name(name));
        let _ = fs_err::remove_file(&tmp);
        fs_err::os::unix::fs::symlink(&target, &tmp).context("making the new link")?;
        if let Err(e) = fs_err::rename(&tmp, &self.link) {
            let _ = fs_err::remove_file(&tmp);
            return Err(anyhow::Error::from(e)
                .context(format!("switching {}", self.link.display()))
                .into());
        }
        Ok(())
    }

    /// Removes generation `n`: its folder (through `gens`, following no
    /// link), its `<n>.json` and its state under `state_base`.
    fn remove(&self, gens: &OwnedFd, n: u64, state_base: &Path) -> Result<(), Failure> {
        let out = self.generation(n);
        let state = Layout::new(&out, state_base).state;
        for name in [n.to_string(), format!("{n}.json")] {
            assemble_reconcile::root::remove_at(gens, OsStr::new(&name))
                .with_context(|| format!("removing {}", self.gens.join(&name).display()))?;
        }
        if state.is_dir() {
            fs_err::remove_dir_all(&state).context("removing a generation's state")?;
        }
        Ok(())
    }

    /// Removes all but the newest `keep` generations, never `current`:
    /// each folder (through `gens`, following no link), its `<n>.json`
    /// and its state.
    fn keep(
        &self,
        gens: &OwnedFd,
        keep: usize,
        current: u64,
        state_base: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<Vec<u64>, Failure> {
        let all = self.generations()?;
        let old = all.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for &n in all[..old].iter().filter(|n| **n != current) {
            let out = self.generation(n);
            self.remove(gens, n, &state_base(&out))?;
            removed.push(n);
        }
        Ok(removed)
    }
}
