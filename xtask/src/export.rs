//! `cargo xtask export`: the assembled tree as one file, streamed from the
//! manifest the last assemble recorded: a NAR (`nix-store --restore` makes
//! the tree again; its sha256 is `nix hash path`) or a tar that is the same
//! bytes for the same tree.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use assemble_reconcile::Layout;

use crate::context::Workspace;
use crate::{Failure, RecipeArgs};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Nix's archive: `nix-store --restore DIR < FILE` gives the tree back.
    Nar,
    /// A tar: sorted, owner 0, no names, one mtime ($SOURCE_DATE_EPOCH, else 1).
    Tar,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    #[arg(long, value_enum)]
    pub format: Format,
    /// The file to write (replaced whole when the export is complete);
    /// default: standard output, when it is not a terminal.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The assembled tree (default: TARGET/<package name>, as for assemble).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
}

pub fn run(args: &ExportArgs) -> Result<(), Failure> {
    let ws = Workspace::for_recipe(&args.common)?;
    // A link (a deployed prefix) is read through: export only reads.
    let tree = assemble_fs::canonical(&ws.out(&args.common, args.from.as_deref())?);
    let layout = Layout::new(
        &tree,
        &ws.state_base(args.common.state_dir.as_deref(), &tree),
    );
    let mtime = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        Err(_) => 1,
    };
    let write = |w: &mut dyn Write| -> Result<(), assemble_reconcile::Error> {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, w);
        match args.format {
            Format::Nar => assemble_reconcile::write_nar(&layout, &mut w)?,
            Format::Tar => assemble_reconcile::write_tar(&layout, mtime, &mut w)?,
        }
        w.flush()?;
        Ok(())
    };
    match &args.out {
        Some(file) => {
            let file = ws.cwd.join(file);
            let canonical = |p: &std::path::Path| p.canonicalize().unwrap_or(p.to_path_buf());
            if let Some(parent) = file.parent()
                && canonical(parent).starts_with(canonical(&tree))
            {
                return Err(usage(anyhow!(
                    "--out {} is inside the tree it exports ({}): write it elsewhere",
                    file.display(),
                    tree.display()
                )));
            }
            assemble_fs::files::replace_with(&file, |tmp| -> anyhow::Result<()> {
                let mut f = fs_err::File::create(tmp)?;
                write(&mut f)
                    .map_err(|e| args.common.or_assemble(args.from.as_deref(), e))
                    .with_context(|| format!("exporting {}", tree.display()))?;
                Ok(())
            })?;
            eprintln!(
                "{:>12} {} to {}",
                "Exported",
                tree.display(),
                file.display()
            );
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(usage(anyhow!(
                    "the archive would go to a terminal: give --out FILE, or redirect stdout"
                )));
            }
            write(&mut stdout.lock())
                .map_err(|e| args.common.or_assemble(args.from.as_deref(), e))
                .with_context(|| format!("exporting {}", tree.display()))?;
        }
    }
    Ok(())
}

/// A mistake on the command line: exit 2.
fn usage(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}
