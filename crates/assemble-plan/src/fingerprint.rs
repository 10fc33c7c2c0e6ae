//! Unit fingerprints: the recipe and environment parts a unit's output
//! depends on, by name, so that a change can be said in a sentence.
//!
//! Every component is built from typed, normalised values: the source's
//! [`assemble_recipe::Source::describe`] (paths absolute and normalised when
//! the recipe is loaded), mappings and marks sorted (their order in the
//! recipe does not change the output), patches in order (it does) as JSON.
//! No `Debug` string: its format is the compiler's, not ours.

use std::collections::BTreeMap;

use assemble_manifest::{Fingerprint, STATE_VERSION};
use assemble_recipe::{Patch, Recipe, Scripts, Source};

use crate::Context;

/// Every unit's fingerprint.
pub(crate) fn all(recipe: &Recipe, ctx: &Context) -> BTreeMap<String, Fingerprint> {
    let env: [(&str, String); 6] = [
        (
            "env:tool version",
            format!(
                "{} (state format {STATE_VERSION})",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        (
            "env:interpreter",
            format!(
                "{} {}",
                ctx.python.executable.display(),
                ctx.python.full_version
            ),
        ),
        ("env:prefix (@out@)", ctx.prefix.clone()),
        ("env:bash (@bash@)", ctx.bash.display().to_string()),
        (
            "env:web UI (@webui@)",
            ctx.webui.clone().unwrap_or_else(|| "(unset)".into()),
        ),
        (
            "env:autoPatchelf settings",
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
            fp.insert("source".into(), u.source.describe());
            fp.insert("install mappings".into(), pairs(&u.install));
            fp.insert("symlinks".into(), pairs(&u.symlinks));
            fp.insert("executable marks".into(), sorted(&u.executable).join(", "));
            if u.source.is_venv() {
                let scripts = match &u.scripts {
                    Scripts::All => "*".to_string(),
                    Scripts::Named(v) => sorted(v).join(", "),
                };
                fp.insert("scripts list".into(), scripts);
                if matches!(
                    u.source,
                    Source::Requirements { .. } | Source::UvProject { .. }
                ) {
                    fp.insert("installer".into(), recipe.installer.label());
                }
                fp.insert(
                    "excluded distributions".into(),
                    sorted(&u.exclude).join(", "),
                );
            }
            // Patches apply in order: their order is part of the key.
            for (i, p) in u.patches.iter().enumerate() {
                fp.insert(format!("patch {}", i + 1), patch(p));
            }
            for (k, v) in &env {
                fp.insert((*k).to_string(), v.clone());
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
