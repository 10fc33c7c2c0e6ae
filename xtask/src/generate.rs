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
    /// The folder to write the pages into (created if missing; default:
    /// TARGET/man, TARGET being this checkout's target dir).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
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
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => crate::context::Workspace::locate()?.target_dir.join("man"),
    };
    fs_err::create_dir_all(&out)?;
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
        fs_err::write(out.join(format!("{name}.1")), buf)?;
    }
    sh.status(
        "Written",
        format!("{} manual pages in {}", pages.len(), out.display()),
    );
    Ok(())
}

/// `cargo xtask schema`: the recipe's JSON Schema, generated from the
/// types that read a recipe (`assemble.schema.json` is it).
pub fn schema() -> Result<(), Failure> {
    use std::io::Write;
    std::io::stdout().write_all(assemble_recipe::json_schema().as_bytes())?;
    Ok(())
}
