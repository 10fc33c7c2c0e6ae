//! A unit other than the venv: its `install` mappings, `executable`
//! marks, patches and symlinks; and the way out of a conflict with the
//! venv.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use assemble_cache::Files;
use assemble_manifest::{Content, Entry, Kind, Sha256};
use assemble_recipe::{OnMissing, Recipe, Unit, Vars};

use crate::builder::Builder;
use crate::patch::{closest_lines, substitute};
use crate::{Context, Error, PatchMiss, beneath};

pub(crate) const INSTALL_FIX: &str = "change one of their `install` mappings";

/// A conflict with the venv unit gets the way out that fits it: the other
/// unit provides a package the venv also has (as the seed installs
/// opencontainers from its own source), so the venv leaves that
/// distribution out.
pub(crate) fn venv_overlap(
    e: Error,
    recipe: &Recipe,
    roots: &BTreeMap<String, Files>,
    ctx: &Context,
) -> Error {
    let Error::Conflict {
        path,
        first,
        second,
        fix,
    } = e
    else {
        return e;
    };
    let Some(venv) = recipe
        .units
        .iter()
        .find(|u| u.source.is_venv() && (u.name == first || u.name == second))
    else {
        return Error::Conflict {
            path,
            first,
            second,
            fix,
        };
    };
    let other = if venv.name == first { &second } else { &first };
    let site_rel = ctx.python.site_packages();
    let dist = roots
        .get(&venv.name)
        .and_then(|files| assemble_python::read_dists(files, &files.root().join(&site_rel)).ok())
        .and_then(|dists| {
            let inside = path.strip_prefix(&format!("{site_rel}/"))?;
            dists.into_iter().find(|d| {
                d.record_paths().is_ok_and(|ps| {
                    ps.iter()
                        .any(|p| p == inside || p.starts_with(&format!("{inside}/")))
                })
            })
        })
        .map_or_else(|| "DISTRIBUTION".to_string(), |d| d.name);
    // The whole list to write, with what the unit already leaves out.
    let exclude: Vec<String> = venv
        .exclude
        .iter()
        .chain([&dist])
        .map(|d| format!("{d:?}"))
        .collect();
    Error::Conflict {
        fix: format!(
            "the venv has it too. If {other} is to provide it, leave it out of the venv: `exclude = [{}]` in [units.{}]; else change {other}'s `install` mappings",
            exclude.join(", "),
            venv.name
        ),
        path,
        first,
        second,
    }
}

/// A recipe mistake found while planning: `needle` is the text at fault
/// as written in the unit's tables.
pub fn recipe_error(recipe: &Recipe, unit: &str, needle: &str, message: String) -> Error {
    Error::Recipe(Box::new(recipe.error_at(unit, needle, message)))
}

pub(crate) fn plan_unit(
    b: &mut Builder,
    recipe: &Recipe,
    unit: &Unit,
    files: &Files,
    vars: &Vars,
) -> Result<(), Error> {
    let root = files.root();
    let name: Arc<str> = Arc::from(unit.name.as_str());
    // Every output path is checked after its variables are expanded: a
    // `--prefix` or `--webui` value can make `@out@/x` absolute or `@webui@/x`
    // climb out with `..`.
    let expand_path = |p: &str| -> Result<String, Error> {
        let expanded = vars
            .expand_path(p)
            .map_err(|e| recipe_error(recipe, &unit.name, p, e.to_string()))?;
        assemble_manifest::path::check(&expanded).map_err(|e| {
            recipe_error(
                recipe,
                &unit.name,
                p,
                format!("{e} (written {p:?} in the recipe)"),
            )
        })?;
        Ok(expanded)
    };
    let mut produced: Vec<String> = Vec::new();
    for (from, to) in &unit.install {
        let (src, _) = beneath(&unit.name, "install mapping", root, from)?;
        if std::fs::symlink_metadata(&src).is_err() {
            return Err(Error::MissingPath {
                unit: unit.name.clone(),
                key: format!("units.{}.install.\"{from}\"", unit.name),
                path: src,
                found: "does not exist".to_string(),
                hint: format!(" (inside the unit's source {})", root.display()),
            });
        }
        let dest = expand_path(to)?;
        b.copy_tree(&name, "copy", files, &src, from, &dest, &|_| false)?;
        produced.push(dest);
    }
    let owns = |p: &str| {
        produced
            .iter()
            .any(|d| p == d || p.starts_with(&format!("{d}/")))
    };

    for x in &unit.executable {
        let p = expand_path(x)?;
        match b.desired.get_mut(p.as_str()) {
            Some(Entry {
                kind: Kind::File { executable, .. },
                unit: u,
                ..
            }) if owns(&p) && **u == *unit.name => *executable = true,
            _ => {
                return Err(recipe_error(
                    recipe,
                    &unit.name,
                    x,
                    format!(
                        "`executable` names {p}, which is not a file this unit installs; check the path against its `install` mappings"
                    ),
                ));
            }
        }
    }

    for (i, patch) in unit.patches.iter().enumerate() {
        let p = expand_path(&patch.file)?;
        let (source_file, executable) = match b.desired.get(p.as_str()) {
            Some(Entry {
                kind:
                    Kind::File {
                        executable,
                        content,
                        ..
                    },
                ..
            }) if owns(&p) => match content {
                // Not hashed yet: the input's own executable bit counts too.
                Content::Copy(s) => (
                    s.clone(),
                    *executable || fs_err::metadata(s)?.permissions().mode() & 0o100 != 0,
                ),
                _ => (PathBuf::from(&p), *executable),
            },
            _ => {
                return Err(recipe_error(
                    recipe,
                    &unit.name,
                    &patch.file,
                    format!(
                        "patch {} names {p}, which is not a file this unit installs; check `file` against the unit's `install` mappings",
                        i + 1
                    ),
                ));
            }
        };
        let bytes = b.content(&p)?;
        // Provenance: the input before the first patch.
        let (source, source_sha) = match &b.desired[p.as_str()] {
            Entry {
                source_sha: Some(sha),
                source,
                kind:
                    Kind::File {
                        content: Content::Bytes(_),
                        ..
                    },
                ..
            } => (source.clone(), *sha),
            e => (e.source.clone(), Sha256::of(&bytes)),
        };
        let text = String::from_utf8(bytes).map_err(|_| Error::Unit {
            unit: unit.name.clone(),
            message: format!("patch {} targets {p}, which is not UTF-8 text", i + 1),
        })?;
        let pattern = vars.expand(&patch.replace);
        let with = vars.expand(&patch.with);
        let result = match substitute(&text, &pattern, &with) {
            Some(r) => r,
            None => match patch.on_missing {
                OnMissing::Fail => {
                    return Err(Error::PatchNotFound(Box::new(PatchMiss {
                        unit: unit.name.clone(),
                        index: i + 1,
                        file: p,
                        source_file,
                        closest: closest_lines(&text, &pattern, 3),
                        pattern,
                    })));
                }
                OnMissing::Warn => {
                    b.warnings.push(format!(
                        "unit {}: patch {} did not match in {p}: {pattern}",
                        unit.name,
                        i + 1
                    ));
                    text
                }
                OnMissing::Quiet => text,
            },
        };
        let mut patched = Entry::bytes(&name, "patch", result.into_bytes(), executable);
        patched.source = source;
        patched.source_sha = Some(source_sha);
        if let Some(slot) = b.desired.get_mut(p.as_str()) {
            *slot = patched;
        }
    }

    for (link, written) in &unit.symlinks {
        let link = expand_path(link)?;
        let target = expand_path(written)?;
        if !b.desired.contains_key(target.as_str()) {
            return Err(recipe_error(
                recipe,
                &unit.name,
                written,
                format!("symlink {link} points at {target}, which nothing in the output provides"),
            ));
        }
        b.parents(&link, &name)?;
        b.insert(
            link.clone(),
            Entry::link(&name, "symlink", relative_link(&link, &target)),
        )?;
    }
    Ok(())
}

/// The relative target for a link at `link` pointing at `target`, both
/// relative to the output root, so that the tree can move.
pub fn relative_link(link: &str, target: &str) -> String {
    let from: Vec<&str> = link.split('/').collect();
    let from = &from[..from.len() - 1];
    let to: Vec<&str> = target.split('/').collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_link("lifecycle", "lib/python3.11/site-packages/lifecycle"),
            "lib/python3.11/site-packages/lifecycle"
        );
        assert_eq!(relative_link("bin/python3", "bin/python3.11"), "python3.11");
        assert_eq!(relative_link("a/b/c", "a/x"), "../x");
    }
}
