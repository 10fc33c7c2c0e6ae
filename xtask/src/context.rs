//! Where things are: the workspace root and cargo's target dir.

use std::path::PathBuf;

use anyhow::Context as _;

/// The workspace this xtask belongs to.
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
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
        })
    }
}
