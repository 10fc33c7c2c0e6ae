//! Where things are: the workspace, cargo's target dir, the recipe, and
//! the one place that derives the default output, cache and state folders
//! (`Workspace::out`, `cache`, `state_base`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use assemble_recipe::Recipe;
use assemble_reconcile::Layout;

use crate::{Failure, RecipeArgs};

/// The workspace this xtask belongs to, and the folder the command runs in.
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub cwd: PathBuf,
}

impl Workspace {
    /// The workspace this binary was built from, and the target dir it was
    /// built in (found by build.rs); when that is gone, cargo is asked
    /// (honouring CARGO_TARGET_DIR and config).
    pub fn locate() -> anyhow::Result<Workspace> {
        let cwd = std::env::current_dir().context("cannot read the current folder")?;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if let Some(target) = option_env!("ASSEMBLE_TARGET_DIR")
            && Path::new(target).is_dir()
            && root.join("Cargo.toml").is_file()
            && std::env::var_os("CARGO_TARGET_DIR")
                .is_none_or(|t| Path::new(&t) == Path::new(target))
        {
            return Ok(Workspace {
                root: root.canonicalize().unwrap_or(root),
                target_dir: PathBuf::from(target),
                cwd,
            });
        }
        let manifest = root.join("Cargo.toml");
        let meta = cargo_metadata::MetadataCommand::new()
            .manifest_path(&manifest)
            .no_deps()
            .other_options(vec!["--offline".to_string()])
            .exec();
        Ok(match meta {
            Ok(meta) => Workspace {
                root: meta.workspace_root.into_std_path_buf(),
                target_dir: meta.target_directory.into_std_path_buf(),
                cwd,
            },
            // The binary without its checkout (copied elsewhere) or without
            // cargo: flags name what the defaults would have, and a default
            // still needed lands in ./target, as for a recipe in no
            // workspace (the recipe's own default is said missing by name).
            Err(_) => Workspace {
                root,
                target_dir: cwd.join("target"),
                cwd,
            },
        })
    }

    /// As [`Workspace::locate`], with the target dir of the workspace the
    /// recipe lives in (see [`target_dir_for`]): where the default output,
    /// cache and state go.
    pub fn for_recipe(args: &RecipeArgs) -> anyhow::Result<Workspace> {
        let mut ws = Workspace::locate()?;
        let recipe = ws.recipe_path(args);
        ws.target_dir = target_dir_for(&recipe, &ws);
        Ok(ws)
    }

    /// The path of the recipe named by `--recipe`, else of the workspace's
    /// `assemble.toml`.
    pub fn recipe_path(&self, args: &RecipeArgs) -> PathBuf {
        args.recipe
            .as_ref()
            .map(|r| self.cwd.join(r))
            .unwrap_or_else(|| self.root.join("assemble.toml"))
    }

    /// `--python` as the pipeline takes it: a name (no `/`) stays a name,
    /// looked up on PATH as uv does; a relative path is made absolute.
    pub fn python(&self, args: &RecipeArgs) -> Option<String> {
        let named = args.python.as_ref()?;
        Some(if named.contains('/') {
            self.cwd
                .join(named.strip_prefix("./").unwrap_or(named))
                .to_string_lossy()
                .into_owned()
        } else {
            named.clone()
        })
    }

    /// The recipe named by `--recipe`, else the workspace's `assemble.toml`.
    /// A malformed recipe exits with 2.
    pub fn recipe(&self, args: &RecipeArgs) -> Result<Recipe, Failure> {
        Recipe::load(&self.recipe_path(args)).map_err(|e| Failure {
            code: 2,
            error: e.into(),
        })
    }

    /// `--state-dir`, else `$ASSEMBLE_STATE_DIR`, else the user's state
    /// home (see [`state_home`]): the same for every recipe and working
    /// folder, so that any output built with the defaults can be found
    /// from its path alone. An output whose state an earlier version kept
    /// in `<target>/assemble-state` (the recipe's workspace) is still
    /// found there, while the state home has none for it.
    pub fn state_base(&self, arg: Option<&Path>, out: &Path) -> PathBuf {
        if let Some(named) = arg
            .map(|c| self.cwd.join(c))
            .or_else(|| std::env::var_os("ASSEMBLE_STATE_DIR").map(|c| self.cwd.join(c)))
        {
            return named;
        }
        let home = state_home().unwrap_or_else(|| self.target_dir.join("assemble-state"));
        let legacy = self.target_dir.join("assemble-state");
        let has = |base: &Path| Layout::new(out, base).state.is_dir();
        if !has(&home) && has(&legacy) {
            return legacy;
        }
        home
    }

    /// `--out` (`arg`), else `<target>/<the recipe's package name>`, made
    /// absolute: the output of `assemble`, `verify` and `export`. The
    /// recipe is read only when there is no `--out`.
    pub fn out(&self, args: &RecipeArgs, arg: Option<&Path>) -> Result<PathBuf, Failure> {
        let out = match arg {
            Some(o) => self.cwd.join(o),
            None => self.target_dir.join(self.recipe(args)?.name),
        };
        Ok(assemble_fs::normalize(&self.cwd, &out))
    }

    /// `--cache-dir`, else `$ASSEMBLE_CACHE_DIR`, else `<target>/assemble-cache`.
    pub fn cache(&self, arg: Option<&Path>) -> PathBuf {
        arg.map(|c| self.cwd.join(c))
            .or_else(|| std::env::var_os("ASSEMBLE_CACHE_DIR").map(|c| self.cwd.join(c)))
            .unwrap_or_else(|| self.target_dir.join("assemble-cache"))
    }
}

/// The target dir of the cargo workspace `recipe` lives in: this tool's own
/// (as built) when it is this workspace, else `$CARGO_TARGET_DIR` or the
/// workspace's `target/`; for a recipe in no workspace, `target/` in the
/// current folder. The workspace is the topmost folder above the recipe
/// whose Cargo.toml has a `[workspace]` table, else the nearest folder
/// with a Cargo.toml. (A `build.target-dir` in a `.cargo/config.toml` of
/// another workspace is not read.)
pub fn target_dir_for(recipe: &Path, ws: &Workspace) -> PathBuf {
    let dir = assemble_fs::normalize(&ws.cwd, recipe.parent().unwrap_or(Path::new(".")));
    let manifests: Vec<&Path> = dir
        .ancestors()
        .filter(|d| d.join("Cargo.toml").is_file())
        .collect();
    let is_workspace = |d: &&&Path| {
        fs_err::read_to_string(d.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
    };
    let root = manifests
        .iter()
        .rev()
        .find(is_workspace)
        .or(manifests.first());
    match root {
        None => ws.cwd.join("target"),
        Some(r) if same_folder(r, &ws.root) => ws.target_dir.clone(),
        Some(r) => std::env::var_os("CARGO_TARGET_DIR")
            .map(|t| ws.cwd.join(t))
            .unwrap_or_else(|| r.join("target")),
    }
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Where each output's state is kept by default: `$XDG_STATE_HOME`, else
/// `~/.local/state` (as the XDG base directory spec says; a relative
/// `XDG_STATE_HOME` is ignored, as it asks), then `authentik-assemble`.
/// None without a home.
pub fn state_home() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|h| h.join(".local/state"))
    })?;
    Some(base.join("authentik-assemble"))
}

impl RecipeArgs {
    /// `err`, and when an `assemble` is its fix, that command as these
    /// flags were given (`out`: the `--out` or `--from` given).
    pub fn or_assemble(&self, out: Option<&Path>, err: assemble_reconcile::Error) -> anyhow::Error {
        if err.wants_assemble() {
            anyhow::anyhow!("{err}: `{}`", self.assemble_command(out))
        } else {
            err.into()
        }
    }

    /// The `assemble` command line that builds what these flags name, as
    /// they were given (a hint repeats `--recipe`, `--out`, the folders),
    /// each value quoted for a shell when it needs it.
    pub fn assemble_command(&self, out: Option<&Path>) -> String {
        let mut line = String::from("cargo xtask assemble");
        let flags = [
            ("--recipe", self.recipe.as_deref()),
            ("--out", out),
            ("--cache-dir", self.cache_dir.as_deref()),
            ("--state-dir", self.state_dir.as_deref()),
        ];
        for (flag, value) in flags {
            if let Some(v) = value {
                let v = v.to_string_lossy();
                // shlex quotes what a shell would split or expand; a NUL,
                // which no path holds, is shown as it is.
                let quoted = shlex::try_quote(&v).unwrap_or(v.clone());
                line.push_str(&format!(" {flag} {quoted}"));
            }
        }
        line
    }
}
