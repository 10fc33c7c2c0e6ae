//! `cargo xtask hash PATH`: what `nix hash path` / `nix hash file` prints.

use std::path::PathBuf;

use anyhow::Context as _;
use assemble_nar::{Format, file_hash, nar_hash};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// The file or folder to hash.
    pub path: PathBuf,
    /// Hash the file's bytes (`nix hash file`) instead of its NAR serialisation.
    #[arg(long)]
    pub flat: bool,
    /// How to print the hash.
    #[arg(long, value_enum, default_value_t = FormatArg::Sri)]
    pub format: FormatArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Sri,
    Nix32,
    Hex,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Sri => Format::Sri,
            FormatArg::Nix32 => Format::Nix32,
            FormatArg::Hex => Format::Hex,
        }
    }
}

pub fn run(args: &HashArgs) -> Result<(), Failure> {
    let h = if args.flat {
        file_hash(&args.path)
    } else {
        nar_hash(&args.path)
    }
    .with_context(|| format!("hashing {}", args.path.display()))?;
    println!("{}", h.format(args.format.into()));
    Ok(())
}
