//! Unit fingerprints: the recipe and environment parts a unit's output
//! depends on, by name, so that a change can be said in a sentence.
//!
//! Every component is built from typed, normalised values: the source's
//! [`assemble_recipe::Source::describe`] (paths absolute and normalised when
//! the recipe is loaded), mappings and marks sorted (their order in the
//! recipe does not change the output), patches in order (it does) as JSON.
//! No `Debug` string: its format is the compiler's, not ours.

use std::collections::BTreeMap;

use assemble_manifest::{Component, Env, Fingerprint, STATE_VERSION, UnitName};
use assemble_recipe::{Patch, Recipe, Scripts, Source};

use crate::Context;

/// Every unit's fingerprint.
pub(crate) fn all(recipe: &Recipe, ctx: &Context) -> BTreeMap<UnitName, Fingerprint> {
    let env: [(Env, String); 6] = [
        (
            Env::ToolVersion,
            format!(
                "{} (state format {STATE_VERSION})",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        (
            Env::Interpreter,
            format!(
                "{} {}",
                ctx.python.executable.display(),
                ctx.python.full_version
            ),
        ),
        (Env::Prefix, ctx.prefix.clone()),
        (Env::Bash, ctx.bash.display().to_string()),
        (
            Env::WebUi,
            ctx.webui.clone().unwrap_or_else(|| "(unset)".into()),
        ),
        (
            Env::AutopatchelfSettings,
            recipe
                .autopatchelf
                .as_ref()
                .map_or_else(|| "(none)".into(), |a| a.canonical.clone()),
        ),
    ];
    recipe
        .units
        .iter()
        .map(|u| {
            let mut fp = Fingerprint::new();
            fp.insert(Component::Source, u.source.describe());
            fp.insert(Component::InstallMappings, pairs(&u.install));
            fp.insert(Component::Symlinks, pairs(&u.symlinks));
            fp.insert(Component::ExecutableMarks, sorted(&u.executable).join(", "));
            if u.source.is_venv() {
                let scripts = match &u.scripts {
                    Scripts::All => "*".to_string(),
                    Scripts::Named(v) => sorted(v).join(", "),
                };
                fp.insert(Component::Scripts, scripts);
                if matches!(
                    u.source,
                    Source::Requirements { .. } | Source::UvProject { .. }
                ) {
                    fp.insert(Component::Installer, recipe.installer.label());
                }
                fp.insert(Component::Excluded, sorted(&u.exclude).join(", "));
            }
            // Patches apply in order: their order is part of the key.
            for (i, p) in u.patches.iter().enumerate() {
                fp.insert(Component::Patch(i + 1), patch(p));
            }
            for (e, v) in &env {
                fp.insert(Component::Env(*e), v.clone());
            }
            (u.name.clone(), fp)
        })
        .collect()
}

/// Mappings as `from -> to`, sorted: the order they are written in the
/// recipe does not change the output (two mappings to one path are an
/// error whatever their order).
fn pairs(v: &[(String, String)]) -> String {
    let mut v: Vec<String> = v.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
    v.sort();
    v.join(", ")
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A patch as JSON, a format that does not change with the compiler (a
/// `Debug` string may).
fn patch(p: &Patch) -> String {
    serde_json::to_string(p).unwrap_or_else(|e| format!("(unencodable patch: {e})"))
}
