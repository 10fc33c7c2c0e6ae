//! `cargo xtask verify`: re-hash the whole output against the manifest the
//! last assemble recorded; list every difference; exit 1 on any.

use std::path::PathBuf;

use assemble_reconcile::Layout;

use crate::context::{Workspace, output};

use crate::{Failure, RecipeArgs};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    /// The output to check (default: TARGET/<package name>, as for assemble).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the differences as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(sh: &crate::shell::Shell, args: &VerifyArgs) -> Result<(), Failure> {
    let ws = Workspace::for_recipe(&args.common)?;
    let out = match &args.out {
        Some(o) => output(&ws, None, Some(o)),
        None => output(&ws, Some(&ws.recipe(&args.common)?), None),
    };
    let layout = Layout::new(&out, &ws.state_base(args.common.state_dir.as_deref()));
    let found = assemble_reconcile::verify(&layout)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "output": out, "differences": found })
        );
    } else {
        for d in &found {
            sh.note("Differs", format!("{}: {}", d.path, d.what));
        }
        sh.status(
            if found.is_empty() {
                "Verified"
            } else {
                "Failed"
            },
            format!(
                "{}: {} difference{}",
                out.display(),
                found.len(),
                if found.len() == 1 { "" } else { "s" }
            ),
        );
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            error: crate::Reported(format!(
                "{} does not match its recorded manifest ({} difference{}); run `cargo xtask assemble` to repair it",
                out.display(),
                found.len(),
                if found.len() == 1 { "" } else { "s" }
            ))
            .into(),
        })
    }
}
