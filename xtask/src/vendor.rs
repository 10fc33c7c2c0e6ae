//! `cargo xtask vendor`: copy every remote unit's verified source into
//! `vendor/<unit>/` beside the recipe, and every file the uv-project venvs
//! are installed from (with uv's wheel and what builds their sdists) into
//! `vendor/pypi/`, so that builds need no network at all.

use anyhow::Context as _;
use assemble_fetch::Fetcher;
use assemble_recipe::{Remote, Source};

use crate::context::Workspace;
use crate::{Failure, RecipeArgs};

#[derive(Debug, clap::Args)]
pub struct VendorArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    /// Also write each `github` unit's source into DIR as GitHub archives
    /// it (`OWNER/REPO/archive/REV.tar.gz`): a mirror for
    /// `ASSEMBLE_GITHUB_URL=file://DIR` (or served over http).
    #[arg(long, value_name = "DIR")]
    pub mirror: Option<std::path::PathBuf>,
}

pub fn run(sh: &crate::shell::Shell, args: &VendorArgs) -> Result<(), Failure> {
    let ws = Workspace::for_recipe(&args.common)?;
    // With the hashes assemble.lock pins filled in.
    let recipe = assemble_pipeline::locked_recipe(
        &ws.recipe_path(&args.common),
        &ws.cache(args.common.cache_dir.as_deref()),
        args.common.offline,
        false,
        &|_| {},
    )
    .map_err(Failure::from_pipeline)?;
    let cache = ws.cache(args.common.cache_dir.as_deref());
    let mut config = assemble_fetch::Config::new(cache.clone());
    if args.common.offline {
        config.policy = assemble_cache::Policy::Offline;
    }
    let remotes: Vec<(&str, &Remote)> = recipe
        .units
        .iter()
        .filter_map(|u| match &u.source {
            Source::Remote(r) => Some((u.name.as_str(), r)),
            _ => None,
        })
        .collect();
    let needs_python = remotes
        .iter()
        .any(|(_, r)| matches!(r, Remote::Pypi { .. }))
        || recipe
            .units
            .iter()
            .any(|u| matches!(u.source, Source::UvProject { .. }));
    if needs_python {
        let named = ws.python(&args.common);
        let python = assemble_pipeline::locate_interpreter(
            &recipe,
            named.as_deref(),
            &cache,
            assemble_cache::Policy::Make,
        )
        .and_then(|exe| assemble_install::probe(&exe.to_string_lossy()))
        .map_err(|e| {
            Failure::from_pipeline(assemble_pipeline::interpreter_error(
                &recipe,
                named.as_deref(),
                e,
            ))
        })?;
        config.python = Some(python);
    }
    let drawing = crate::shell::Drawing::new(sh, sh.progress(), sh.quiet());
    let reporter = assemble_pipeline::EventReporter {
        events: &|e| drawing.event(e),
    };
    let python = config.python.clone();
    let fetcher = Fetcher::new(config, &reporter);
    for (unit, remote) in remotes {
        let dest = recipe.dir.join("vendor").join(unit);
        fetcher
            .vendor(unit, remote, &dest)
            .with_context(|| format!("vendoring unit {unit}"))?;
        sh.status("Vendored", format!("{unit} into {}", dest.display()));
        if let Some(mirror) = &args.mirror {
            let mirror = ws.cwd.join(mirror);
            if let Some(archive) = fetcher
                .mirror(unit, remote, &mirror)
                .with_context(|| format!("mirroring unit {unit}"))?
            {
                sh.status("Mirrored", format!("{unit} as {}", archive.display()));
            }
        }
    }
    if let Some(python) = python {
        let dest = recipe.dir.join("vendor").join("pypi");
        let done = assemble_pipeline::vendor_pypi(
            &recipe,
            &cache,
            python,
            args.common.offline,
            &dest,
            &|e| drawing.event(e),
        );
        drawing.clear();
        let done = done.map_err(Failure::from_pipeline)?;
        if !done.dists.is_empty() || done.uv.is_some() {
            let sdists = done.dists.iter().filter(|d| d.sdist).count();
            sh.status(
                "Vendored",
                format!(
                    "{} distributions ({sdists} sdists, {} wheels to build them){} into {}",
                    done.dists.len(),
                    done.build_wheels,
                    done.uv.map(|u| format!(", {u}")).unwrap_or_default(),
                    dest.display()
                ),
            );
        }
    }
    Ok(())
}
