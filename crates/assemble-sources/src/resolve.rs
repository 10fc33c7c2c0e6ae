//! One unit's source folder, realised.

use std::collections::BTreeMap;
use std::path::Path;

use assemble_cache::Files;
use assemble_plan::{Error as PlanError, beneath, found_instead, recipe_error};
use assemble_recipe::{Recipe, Source, Unit};

use crate::{Error, Stage};

/// The source folder of `unit`: a folder the recipe names, a venv built
/// or synced, a fetched source, or a folder inside another unit's (in
/// `roots`, resolved first).
pub(crate) fn resolve_source(
    stage: &Stage<'_>,
    recipe: &Recipe,
    unit: &Unit,
    roots: &BTreeMap<String, Files>,
    warnings: &mut Vec<String>,
) -> Result<Files, Error> {
    let ctx = stage.config;
    // `wanted`: what belongs there (`a folder`, `a regular file`).
    let missing = |key: &str, path: &Path, wanted: &str, hint: &str| {
        Error::Plan(PlanError::MissingPath {
            unit: unit.name.clone(),
            key: format!("units.{}.{key}", unit.name),
            path: path.to_path_buf(),
            found: found_instead(path, wanted),
            hint: hint.to_string(),
        })
    };
    let py_err = |source| Error::Python {
        unit: unit.name.clone(),
        source,
    };
    match &unit.source {
        Source::Venv { path } => {
            if !path.is_dir() {
                return Err(missing(
                    "venv",
                    path,
                    "a folder",
                    " (a virtualenv folder; or build one from a requirements file with `requirements = \"...\"`)",
                ));
            }
            Ok(Files::plain(path.clone()))
        }
        Source::Path { path } => {
            if !path.is_dir() {
                return Err(missing("path", path, "a folder", ""));
            }
            Ok(Files::plain(path.clone()))
        }
        Source::Requirements { path } => {
            if !path.is_file() {
                return Err(missing("requirements", path, "a regular file", ""));
            }
            let starting = format!(
                "{}: building a virtualenv from {} with {} (once; then cached)",
                unit.name,
                path.display(),
                recipe.installer.label()
            );
            assemble_install::build_venv(
                path,
                &ctx.python,
                &recipe.installer,
                &ctx.cache,
                ctx.policy,
                assemble_install::Progress {
                    reporter: stage.reporter,
                    starting: &starting,
                    waiting: &format!("the venv of {}", unit.name),
                },
            )
            .map_err(py_err)
        }
        Source::UvProject { project } => {
            let files = match project {
                assemble_recipe::Project::Path(p) => Files::plain(p.clone()),
                assemble_recipe::Project::In {
                    unit: other,
                    subdir,
                } => {
                    let base = roots.get(other).ok_or_else(|| {
                        Error::Plan(PlanError::Unit {
                            unit: unit.name.clone(),
                            message: format!(
                                "uv-project names unit {other}, whose source is not resolved"
                            ),
                        })
                    })?;
                    let (_, rel) = beneath(&unit.name, "uv-project", base.root(), subdir)?;
                    base.sub(&rel)
                }
            };
            let dir = files.root();
            for file in ["pyproject.toml", "uv.lock"] {
                if !dir.join(file).is_file() {
                    return Err(missing(
                        "uv-project",
                        &dir.join(file),
                        "a regular file",
                        " (a uv project: its pyproject.toml and the uv.lock made by `uv lock`)",
                    ));
                }
            }
            let assemble_recipe::Installer::Uv { version, sha256 } = &recipe.installer else {
                return Err(Error::Plan(recipe_error(
                    recipe,
                    &unit.name,
                    "uv-project",
                    "a uv project's venv is synced with uv: set [python] installer = \"uv==X.Y.Z\" with installer-sha256".into(),
                )));
            };
            // uv skips a `--no-install-package` it does not know: a name
            // the lock does not have would leave the package installed.
            let locked = assemble_install::locked_packages(&files).map_err(py_err)?;
            for wanted in &unit.exclude {
                let wanted_n = assemble_python::normalize_name(wanted);
                if !locked
                    .iter()
                    .any(|p| assemble_python::normalize_name(p) == wanted_n)
                {
                    let have: Vec<&str> = locked.iter().map(String::as_str).collect();
                    return Err(Error::Plan(recipe_error(
                        recipe,
                        &unit.name,
                        &format!("{wanted:?}"),
                        format!(
                            "`exclude` names {wanted}, which {} does not have{}",
                            dir.join("uv.lock").display(),
                            assemble_recipe::suggest(wanted, &have)
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default()
                        ),
                    )));
                }
            }
            let starting = format!(
                "{}: syncing a virtualenv from {} with uv {version} (once; then cached)",
                unit.name,
                dir.join("uv.lock").display()
            );
            assemble_install::sync_venv(
                &files,
                &ctx.python,
                version,
                sha256,
                &unit.exclude,
                &ctx.cache,
                ctx.policy,
                assemble_install::Progress {
                    reporter: stage.reporter,
                    starting: &starting,
                    waiting: &format!("the venv of {}", unit.name),
                },
            )
            .map_err(py_err)
        }
        Source::Remote(remote) => {
            let vendor = recipe.dir.join("vendor").join(&unit.name);
            let fetched = stage
                .fetcher
                .fetch(&unit.name, remote, &vendor)
                .map_err(|source| Error::Fetch {
                    unit: unit.name.clone(),
                    source,
                })?;
            warnings.extend(fetched.warnings);
            Ok(fetched.files)
        }
        Source::From {
            unit: other,
            subdir,
        } => {
            // The recipe guarantees `other` exists and is resolved first.
            let base = roots.get(other).ok_or_else(|| {
                Error::Plan(PlanError::Unit {
                    unit: unit.name.clone(),
                    message: format!("from names unit {other}, whose source is not resolved"),
                })
            })?;
            let (p, rel) = beneath(&unit.name, "from", base.root(), subdir)?;
            if !p.is_dir() {
                return Err(missing(
                    "from",
                    &p,
                    "a folder",
                    &format!(" (`{subdir}` inside unit {other}'s source)"),
                ));
            }
            Ok(base.sub(&rel))
        }
    }
}
