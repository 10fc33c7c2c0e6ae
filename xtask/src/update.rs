//! `cargo xtask update UNIT (--tag T | --rev R) [--dry-run]`: bumps a
//! `github` unit's pin in one command (see `assemble_pipeline::update`).

use assemble_pipeline::Event;
use assemble_recipe::edit::Pin;

use crate::shell::{Drawing, Shell};
use crate::{AssembleArgs, Failure, RecipeArgs};

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The unit to move (a `github` source).
    #[arg(value_name = "UNIT")]
    pub unit: String,
    /// The new tag.
    #[arg(
        long,
        value_name = "TAG",
        conflicts_with = "rev",
        required_unless_present = "rev"
    )]
    pub tag: Option<String>,
    /// The new revision (a commit).
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Fetch, hash and plan, but write neither the recipe nor the lock.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub common: RecipeArgs,
}

pub fn run(sh: &Shell, args: &UpdateArgs) -> Result<(), Failure> {
    // Planned as `cargo xtask plan` would, into the default output.
    let opts = crate::assemble::options(&AssembleArgs {
        common: args.common.clone(),
        registry: crate::RegistryArgs::default(),
        out: None,
        prefix: None,
        webui: None,
        json: false,
        no_wait: false,
        locked: false,
        nar_hash: false,
        link_mode: crate::LinkModeArg::Clone,
        watch: false,
    })?;
    let pin = match (&args.tag, &args.rev) {
        (Some(t), _) => Pin::Tag(t.clone()),
        (None, Some(r)) => Pin::Rev(r.clone()),
        // clap requires one.
        (None, None) => return Err(anyhow::anyhow!("give --tag or --rev").into()),
    };
    let drawing = Drawing::new(sh, sh.progress(), sh.quiet());
    let events = |e: Event| match e {
        Event::Preparing(m) => sh.status("Fetching", m),
        e => drawing.event(e),
    };
    let result = assemble_pipeline::update(&opts, &args.unit, pin, args.dry_run, &events);
    drawing.clear();
    let u = result.map_err(Failure::from_pipeline)?;
    let old_hash = u.old_hash.map_or("(none)".to_string(), |h| h.to_sri());
    let word = if u.written { "Updated" } else { "Would update" };
    sh.status(
        word,
        format!(
            "{}: {} -> {} ({old_hash} -> {})",
            u.unit,
            u.old,
            u.new,
            u.new_hash.to_sri()
        ),
    );
    let kept = if u.inline {
        "its `hash` line"
    } else {
        "assemble.lock"
    };
    let verb = if u.written {
        "written"
    } else {
        "unchanged (--dry-run)"
    };
    sh.status(
        "Finished",
        format!(
            "every patch applies; {} and {kept} {verb}",
            u.file.display()
        ),
    );
    Ok(())
}
