//! `cargo xtask completions SHELL` and `cargo xtask man`: generated from
//! the flags themselves (clap_complete, clap_mangen), so they cannot drift
//! from them.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::shell::Shell;
use crate::{Cli, Failure};

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The folder to write the pages into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "xtask", &mut std::io::stdout());
    Ok(())
}

/// `xtask.1`, and `xtask-COMMAND.1` for each command.
pub fn man(sh: &Shell, args: &ManArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    // Built, so that the global flags reach every command's page.
    cmd.build();
    fs_err::create_dir_all(&args.out)?;
    let mut pages = vec![("xtask".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("xtask-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .display_name(name.clone())
            .bin_name(format!("xtask {}", sub.get_name()));
        pages.push((name, page));
    }
    for (name, page) in &pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page.clone())
            .title(name.as_str())
            .render(&mut buf)?;
        fs_err::write(args.out.join(format!("{name}.1")), buf)?;
    }
    sh.status(
        "Written",
        format!("{} manual pages in {}", pages.len(), args.out.display()),
    );
    Ok(())
}
