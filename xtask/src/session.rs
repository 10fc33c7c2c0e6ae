//! What `assemble`, `plan` and `verify` share: the recipe, the output, the
//! prefix, and the planning context built from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use assemble_plan::{Context, Plan};
use assemble_python::{Interpreter, carriable, find_program};
use assemble_recipe::Recipe;
use assemble_reconcile::{InputCache, Layout};

use crate::context::Workspace;
use crate::{AssembleArgs, Failure};

pub struct Session {
    pub recipe: Recipe,
    /// The output, and where its state lives (outside it).
    pub layout: Layout,
    pub ctx: Context,
}

impl Session {
    pub fn new(args: &AssembleArgs) -> Result<Session, Failure> {
        let ws = Workspace::locate()?;
        let recipe = ws.recipe(&args.common)?;
        let out = output(&ws, Some(&recipe), args.out.as_deref());
        let state_base = ws.state_base(args.common.state_dir.as_deref());
        let layout = Layout::new(&out, &state_base);
        let prefix = match &args.prefix {
            Some(p) if p.is_absolute() => normalize(p),
            Some(p) => {
                return Err(Failure {
                    code: 2,
                    error: anyhow!("--prefix {} must be an absolute path", p.display()),
                });
            }
            None => out.clone(),
        };
        if let Some(why) = carriable(&prefix.to_string_lossy()) {
            return Err(Failure {
                code: 2,
                error: anyhow!("the prefix (--prefix, else --out) {why}"),
            });
        }
        let cache = ws.cache(args.common.cache_dir.as_deref());
        // Anything inside the output that the recipe does not produce is
        // removed: the tool's own folders must not be there, nor hold it.
        for (flag, dir) in [("--state-dir", &state_base), ("--cache-dir", &cache)] {
            let dir = normalize(dir);
            if dir.starts_with(&out) || out.starts_with(&dir) {
                return Err(Failure {
                    code: 2,
                    error: anyhow!(
                        "{flag} {} and --out {} overlap: the output is the recipe's tree alone, and what else is in it is removed; choose folders outside each other",
                        dir.display(),
                        out.display()
                    ),
                });
            }
        }
        let python = Interpreter::probe_cached(&recipe.interpreter, &cache)
            .with_context(|| format!("[python] interpreter in {}", recipe.file.display()))?;
        if let Some(why) = carriable(&python.executable.to_string_lossy()) {
            return Err(anyhow!("the interpreter's path {why}").into());
        }
        let bash = find_program("bash")
            .ok_or_else(|| anyhow!("bash not found on PATH; @bash@ needs it (install bash)"))?;
        let ctx = Context {
            prefix: prefix.to_string_lossy().into_owned(),
            python,
            bash,
            webui: args.webui.clone(),
            cache,
            offline: args.common.offline,
            // A clean build hashes inputs as it copies them (read once);
            // if a state turns up after all, they are hashed before the diff.
            defer_hashes: !layout.recorded(),
        };
        Ok(Session {
            recipe,
            layout,
            ctx,
        })
    }

    /// Plans the recipe, with the output's input stat cache. Reports
    /// progress on stderr unless `quiet`.
    pub fn plan(&self, quiet: bool) -> Result<Plan, Failure> {
        let progress = move |m: &str| {
            if !quiet {
                eprintln!("{:>12} {m}", "Preparing");
            }
        };
        // ASSEMBLE_RACY_WINDOW_MS: how close to a run's start a timestamp
        // may be and still be trusted next time (default one second, for
        // file systems that keep whole seconds).
        let window = std::env::var("ASSEMBLE_RACY_WINDOW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(
                assemble_reconcile::RACY_WINDOW,
                std::time::Duration::from_millis,
            );
        let inputs = || InputCache::load_with_racy_window(&self.layout.state, window);
        Ok(assemble_plan::plan(
            &self.recipe,
            &self.ctx,
            inputs,
            &progress,
        )?)
    }
}

/// `--out`, else `<cargo target dir>/<package name>`, made absolute.
pub fn output(ws: &Workspace, recipe: Option<&Recipe>, arg: Option<&Path>) -> PathBuf {
    normalize(&match (arg, recipe) {
        (Some(o), _) => ws.cwd.join(o),
        (None, Some(r)) => ws.target_dir.join(&r.name),
        (None, None) => ws.target_dir.clone(),
    })
}

/// Removes `.` and `..` components lexically, so that the prefix written into
/// files is the plain absolute path.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
