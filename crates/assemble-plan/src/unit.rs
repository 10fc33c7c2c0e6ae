//! A unit other than the venv: its `install` mappings, `executable`
//! marks, patches and symlinks; and the way out of a conflict with the
//! venv.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use assemble_cache::Files;
use assemble_manifest::{Content, Entry, Kind, Sha256, UnitName};
use assemble_recipe::{OnMissing, Patch, Recipe, Unit, Vars};

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
    roots: &BTreeMap<UnitName, Files>,
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

/// A unit being planned: what its steps share.
struct Planning<'a> {
    recipe: &'a Recipe,
    unit: &'a Unit,
    name: UnitName,
    vars: &'a Vars,
    /// The output paths its `install` mappings produced: what its
    /// `executable` marks and patches may name.
    produced: Vec<String>,
}

impl Planning<'_> {
    /// An output path as the recipe writes it, its variables expanded and
    /// then checked: a `--prefix` or `--webui` value can make `@out@/x`
    /// absolute or `@webui@/x` climb out with `..`.
    fn expand_path(&self, p: &str) -> Result<String, Error> {
        let expanded = self
            .vars
            .expand_path(p)
            .map_err(|e| self.recipe_error(p, e.to_string()))?;
        assemble_manifest::path::check(&expanded)
            .map_err(|e| self.recipe_error(p, format!("{e} (written {p:?} in the recipe)")))?;
        Ok(expanded)
    }

    fn recipe_error(&self, needle: &str, message: String) -> Error {
        recipe_error(self.recipe, &self.unit.name, needle, message)
    }

    /// Whether `p` is a path this unit's mappings produced.
    fn owns(&self, p: &str) -> bool {
        self.produced
            .iter()
            .any(|d| p == d || p.starts_with(&format!("{d}/")))
    }
}

/// A unit other than the venv, in the seed's order: its `install`
/// mappings, `executable` marks, patches, then symlinks.
pub(crate) fn plan_unit(
    b: &mut Builder,
    recipe: &Recipe,
    unit: &Unit,
    files: &Files,
    vars: &Vars,
) -> Result<(), Error> {
    let mut u = Planning {
        recipe,
        unit,
        name: unit.name.clone(),
        vars,
        produced: Vec::new(),
    };
    install(b, &mut u, files)?;
    for x in &unit.executable {
        mark_executable(b, &u, x)?;
    }
    // Every patch is tried: all that no longer match are said at once.
    let mut misses = Vec::new();
    for (i, patch) in unit.patches.iter().enumerate() {
        match apply_patch(b, &u, i + 1, patch) {
            Err(Error::PatchNotFound(miss)) => misses.push(*miss),
            other => other?,
        }
    }
    if misses.len() == 1 {
        return Err(Error::PatchNotFound(Box::new(misses.remove(0))));
    }
    if !misses.is_empty() {
        return Err(Error::PatchesNotFound(misses));
    }
    for (link, target) in &unit.symlinks {
        symlink(b, &u, link, target)?;
    }
    Ok(())
}

/// The unit's `install` mappings: each source path copied (a file, link
/// or folder tree) to its output path.
fn install(b: &mut Builder, u: &mut Planning<'_>, files: &Files) -> Result<(), Error> {
    let (unit, root) = (u.unit, files.root());
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
        let dest = u.expand_path(to)?;
        b.copy_tree(&u.name, "copy", files, &src, from, &dest, &|_| false)?;
        u.produced.push(dest);
    }
    Ok(())
}

/// An `executable` mark: a file the unit installs gets its exec bit.
fn mark_executable(b: &mut Builder, u: &Planning<'_>, x: &str) -> Result<(), Error> {
    let p = u.expand_path(x)?;
    match b.desired.get_mut(p.as_str()) {
        Some(Entry {
            kind: Kind::File { executable, .. },
            unit: owner,
            ..
        }) if u.owns(&p) && **owner == *u.unit.name => {
            *executable = true;
            Ok(())
        }
        _ => Err(u.recipe_error(
            x,
            format!(
                "`executable` names {p}, which is not a file this unit installs; check the path against its `install` mappings"
            ),
        )),
    }
}

/// Patch number `n` (1-based) of the unit, with Nix `substitute`'s
/// semantics: the file's content replaced in the manifest, its provenance
/// (the input before the first patch) kept.
fn apply_patch(b: &mut Builder, u: &Planning<'_>, n: usize, patch: &Patch) -> Result<(), Error> {
    let p = u.expand_path(&patch.file)?;
    let (source_file, executable) = match b.desired.get(p.as_str()) {
        Some(Entry {
            kind:
                Kind::File {
                    executable,
                    content,
                    ..
                },
            ..
        }) if u.owns(&p) => match content {
            // Not hashed yet: the input's own executable bit counts too.
            Content::Copy(s) => (
                s.clone(),
                *executable || fs_err::metadata(s)?.permissions().mode() & 0o100 != 0,
            ),
            _ => (PathBuf::from(&p), *executable),
        },
        _ => {
            return Err(u.recipe_error(
                &patch.file,
                format!(
                    "patch {n} names {p}, which is not a file this unit installs; check `file` against the unit's `install` mappings"
                ),
            ));
        }
    };
    let bytes = b.content(&p)?;
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
    let unit = &u.unit.name;
    let text = String::from_utf8(bytes).map_err(|_| Error::Unit {
        unit: unit.clone(),
        message: format!("patch {n} targets {p}, which is not UTF-8 text"),
    })?;
    let pattern = u.vars.expand(&patch.replace);
    let with = u.vars.expand(&patch.with);
    let result = match (substitute(&text, &pattern, &with), patch.on_missing) {
        (Some(r), _) => r,
        (None, OnMissing::Fail) => {
            return Err(Error::PatchNotFound(Box::new(PatchMiss {
                unit: unit.clone(),
                index: n,
                file: p,
                source_file,
                closest: closest_lines(&text, &pattern, 3),
                pattern,
            })));
        }
        (None, OnMissing::Warn) => {
            b.warnings.push(format!(
                "unit {unit}: patch {n} did not match in {p}: {pattern}"
            ));
            text
        }
        (None, OnMissing::Quiet) => text,
    };
    let mut patched = Entry::bytes(&u.name, "patch", result.into_bytes(), executable);
    patched.source = source;
    patched.source_sha = Some(source_sha);
    if let Some(slot) = b.desired.get_mut(p.as_str()) {
        *slot = patched;
    }
    Ok(())
}

/// A top-level symlink, made relative so that the tree can move; its
/// target must be in the output.
fn symlink(b: &mut Builder, u: &Planning<'_>, link: &str, written: &str) -> Result<(), Error> {
    let link = u.expand_path(link)?;
    let target = u.expand_path(written)?;
    if !b.desired.contains_key(target.as_str()) {
        return Err(u.recipe_error(
            written,
            format!("symlink {link} points at {target}, which nothing in the output provides"),
        ));
    }
    b.parents(&link, &u.name)?;
    b.insert(
        link.clone(),
        Entry::link(&u.name, "symlink", relative_link(&link, &target)),
    )
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
