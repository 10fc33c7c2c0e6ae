//! `cargo xtask lock [--update UNIT]...`: resolve the recipe's unpinned
//! sources and record their hashes in `assemble.lock`.

use assemble_pipeline::{Event, LockStatus};

use crate::context::Workspace;
use crate::shell::Drawing;
use crate::{Failure, RecipeArgs};

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    /// Fetch this unit again and record what it resolves to now, even if
    /// the lock has it (repeatable).
    #[arg(long, value_name = "UNIT")]
    pub update: Vec<String>,
}

pub fn run(sh: &crate::shell::Shell, args: &LockArgs) -> Result<(), Failure> {
    let ws = Workspace::for_recipe(&args.common)?;
    let recipe = ws.recipe_path(&args.common);
    let cache = ws.cache(args.common.cache_dir.as_deref());
    let drawing = Drawing::new(sh, sh.progress(), true);
    let events = |e: Event| match e {
        Event::Preparing(m) => sh.status("Fetching", m),
        e => drawing.event(e),
    };
    let units =
        assemble_pipeline::lock(&recipe, &cache, args.common.offline, &args.update, &events);
    drawing.clear();
    let units = units.map_err(Failure::from_pipeline)?;
    let lock_file = recipe.with_file_name("assemble.lock");
    if units.is_empty() {
        sh.status(
            "Finished",
            format!(
                "nothing to lock: {} pins no github source without `hash`{}",
                recipe.display(),
                if lock_file.exists() {
                    String::new()
                } else {
                    format!("; {} not written", lock_file.display())
                }
            ),
        );
        return Ok(());
    }
    for u in &units {
        let status = match u.status {
            LockStatus::Unchanged => "Locked",
            LockStatus::Added => "Added",
            LockStatus::Updated => "Updated",
        };
        sh.status(status, format!("{} ({}) {}", u.unit, u.source, u.hash));
    }
    sh.status(
        "Finished",
        format!(
            "{} ({} source{})",
            lock_file.display(),
            units.len(),
            if units.len() == 1 { "" } else { "s" }
        ),
    );
    Ok(())
}
