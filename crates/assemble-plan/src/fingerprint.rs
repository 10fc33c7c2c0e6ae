//! Unit fingerprints: the recipe and environment parts a unit's output
//! depends on, by name, so that a change can be said in a sentence.

use std::collections::BTreeMap;

use assemble_manifest::{Fingerprint, STATE_VERSION};
use assemble_recipe::{Recipe, Scripts};

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
            fp.insert("source".into(), format!("{:?}", u.source));
            let pairs = |v: &[(String, String)]| {
                v.iter()
                    .map(|(a, b)| format!("{a} -> {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            fp.insert("install mappings".into(), pairs(&u.install));
            fp.insert("symlinks".into(), pairs(&u.symlinks));
            fp.insert("executable marks".into(), u.executable.join(", "));
            if u.source.is_venv() {
                let scripts = match &u.scripts {
                    Scripts::All => "*".to_string(),
                    Scripts::Named(v) => v.join(", "),
                };
                fp.insert("scripts list".into(), scripts);
            }
            for (i, p) in u.patches.iter().enumerate() {
                fp.insert(format!("patch {}", i + 1), format!("{p:?}"));
            }
            for (k, v) in &env {
                fp.insert((*k).to_string(), v.clone());
            }
            (u.name.clone(), fp)
        })
        .collect()
}
