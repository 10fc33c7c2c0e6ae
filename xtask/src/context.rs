//! Where things are: the workspace, cargo's target dir, the recipe, the cache.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use assemble_recipe::Recipe;

use crate::{Failure, RecipeArgs};

/// The workspace this xtask belongs to, and the folder the command runs in.
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub cwd: PathBuf,
}

impl Workspace {
    /// Asks cargo (honouring CARGO_TARGET_DIR and config) for the target dir.
    pub fn locate() -> anyhow::Result<Workspace> {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let meta = cargo_metadata::MetadataCommand::new()
            .manifest_path(&manifest)
            .no_deps()
            .other_options(vec!["--offline".to_string()])
            .exec()
            .with_context(|| format!("cannot read the workspace at {}", manifest.display()))?;
        Ok(Workspace {
            root: meta.workspace_root.into_std_path_buf(),
            target_dir: meta.target_directory.into_std_path_buf(),
            cwd: std::env::current_dir().context("cannot read the current folder")?,
        })
    }

    /// The recipe named by `--recipe`, else the workspace's `assemble.toml`.
    /// A malformed recipe exits with 2.
    pub fn recipe(&self, args: &RecipeArgs) -> Result<Recipe, Failure> {
        let path = args
            .recipe
            .as_ref()
            .map(|r| self.cwd.join(r))
            .unwrap_or_else(|| self.root.join("assemble.toml"));
        Recipe::load(&path).map_err(|e| Failure {
            code: 2,
            error: e.into(),
        })
    }

    /// `--cache-dir`, else `$ASSEMBLE_CACHE_DIR`, else `<target>/assemble-cache`.
    pub fn cache(&self, arg: Option<&Path>) -> PathBuf {
        arg.map(|c| self.cwd.join(c))
            .or_else(|| std::env::var_os("ASSEMBLE_CACHE_DIR").map(|c| self.cwd.join(c)))
            .unwrap_or_else(|| self.target_dir.join("assemble-cache"))
    }
}
