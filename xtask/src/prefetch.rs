//! `cargo xtask prefetch github:OWNER/REPO@REV | url:URL`: fetch a source,
//! keep it in the cache, print the hash to put in the recipe.

use anyhow::{anyhow, bail};
use assemble_fetch::{Fetcher, Target};
use assemble_nar::Hash;

use crate::Failure;
use crate::context::Workspace;
use crate::hash::FormatArg;

#[derive(Debug, clap::Args)]
pub struct PrefetchArgs {
    /// `github:OWNER/REPO@REV` (a commit or tag) or `url:URL`.
    pub what: String,
    /// For `url:`, hash the downloaded file itself instead of unpacking it.
    #[arg(long)]
    pub flat: bool,
    /// Check the result against this hash (SRI, hex or nix32); exit 1 if it differs.
    #[arg(long, value_name = "HASH")]
    pub hash: Option<String>,
    /// How to print the hash.
    #[arg(long, value_enum, default_value_t = FormatArg::Sri)]
    pub format: FormatArg,
    /// Where fetched sources are cached.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
}

fn target(what: &str, flat: bool) -> anyhow::Result<Target> {
    if let Some(rest) = what.strip_prefix("github:") {
        let (repo, rev) = rest
            .split_once('@')
            .ok_or_else(|| anyhow!("{what}: write github:OWNER/REPO@REV"))?;
        let (owner, repo) = repo
            .split_once('/')
            .ok_or_else(|| anyhow!("{what}: write github:OWNER/REPO@REV"))?;
        if flat {
            bail!("--flat goes with url: sources only");
        }
        return Ok(Target::Github {
            owner: owner.into(),
            repo: repo.into(),
            rev: rev.into(),
        });
    }
    if let Some(url) = what.strip_prefix("url:") {
        return Ok(Target::Url {
            url: url.into(),
            unpack: !flat,
        });
    }
    bail!("{what}: expected github:OWNER/REPO@REV or url:URL")
}

pub fn run(sh: &crate::shell::Shell, args: &PrefetchArgs) -> Result<(), Failure> {
    let target = target(&args.what, args.flat).map_err(|e| Failure { code: 2, error: e })?;
    let want = args
        .hash
        .as_deref()
        .map(Hash::parse)
        .transpose()
        .map_err(|e| Failure {
            code: 2,
            error: e.into(),
        })?;
    let ws = Workspace::locate()?;
    let drawing = crate::shell::Drawing::new(sh, sh.progress(), sh.quiet());
    let reporter = assemble_pipeline::EventReporter {
        events: &|e| drawing.event(e),
    };
    let fetcher = Fetcher::new(
        assemble_fetch::Config::new(ws.cache(args.cache_dir.as_deref())),
        &reporter,
    );
    let fetched = fetcher.prefetch(&target);
    drawing.clear();
    let (got, path) = fetched?;
    sh.status("Cached", path.display());
    println!("{}", got.format(args.format.into()));
    if let Some(want) = want
        && want != got
    {
        return Err(anyhow!(
            "hash mismatch for {}\n  expected: {}\n       got: {}",
            args.what,
            want.to_sri(),
            got.to_sri()
        )
        .into());
    }
    Ok(())
}
