//! One unit's source folder, realised: one function per kind of source.

use std::collections::BTreeMap;
use std::path::Path;

use assemble_cache::Files;
use assemble_plan::{Error as PlanError, beneath, found_instead, recipe_error};
use assemble_recipe::{Project, Recipe, Remote, Source, Unit, UnitName};

use crate::{Error, Stage};

/// What a unit's source is resolved with: the stage, the recipe, the
/// folders of the units resolved so far (`from` and `uv-project` read
/// another unit's), and where warnings go.
pub(crate) struct Resolving<'a, 's> {
    pub(crate) stage: &'a Stage<'s>,
    pub(crate) recipe: &'a Recipe,
    pub(crate) roots: &'a BTreeMap<UnitName, Files>,
    pub(crate) warnings: &'a mut Vec<String>,
}

/// The source folder of `unit`: a folder the recipe names, a venv built
/// or synced, a fetched source, or a folder inside another unit's (in
/// `roots`, resolved first).
pub(crate) fn resolve_source(r: &mut Resolving<'_, '_>, unit: &Unit) -> Result<Files, Error> {
    match &unit.source {
        Source::Venv { path } => folder(
            unit,
            "venv",
            path,
            " (a virtualenv folder; or build one from a requirements file with `requirements = \"...\"`)",
        ),
        Source::Path { path } => folder(unit, "path", path, ""),
        Source::Requirements { path } => requirements_venv(r, unit, path),
        Source::UvProject { project } => uv_project_venv(r, unit, project),
        Source::Remote(remote) => fetched(r, unit, remote),
        Source::From {
            unit: other,
            subdir,
        } => {
            let (files, _) = inside(r, unit, "from", other, subdir)?;
            if !files.root().is_dir() {
                return Err(missing(
                    unit,
                    "from",
                    files.root(),
                    "a folder",
                    &format!(" (`{subdir}` inside unit {other}'s source)"),
                ));
            }
            Ok(files)
        }
    }
}

/// A missing path the recipe names at `units.NAME.KEY`, where `wanted`
/// (`a folder`, `a regular file`) belongs.
fn missing(unit: &Unit, key: &str, path: &Path, wanted: &str, hint: &str) -> Error {
    Error::Plan(PlanError::MissingPath {
        unit: unit.name.clone(),
        key: format!("units.{}.{key}", unit.name),
        path: path.to_path_buf(),
        found: found_instead(path, wanted),
        hint: hint.to_string(),
    })
}

fn python_error(unit: &Unit) -> impl Fn(assemble_install::Error) -> Error + '_ {
    |source| Error::Python {
        unit: unit.name.clone(),
        source,
    }
}

/// A folder the recipe names, read as it is.
fn folder(unit: &Unit, key: &str, path: &Path, hint: &str) -> Result<Files, Error> {
    if !path.is_dir() {
        return Err(missing(unit, key, path, "a folder", hint));
    }
    Ok(Files::plain(path.to_path_buf()))
}

/// `subdir` inside the source of the unit `other` (resolved first, the
/// recipe guarantees), its links followed only while they stay inside;
/// with `subdir` as resolved.
fn inside(
    r: &Resolving<'_, '_>,
    unit: &Unit,
    key: &'static str,
    other: &str,
    subdir: &str,
) -> Result<(Files, String), Error> {
    let base = r.roots.get(other).ok_or_else(|| {
        Error::Plan(PlanError::Unit {
            unit: unit.name.clone(),
            message: format!("{key} names unit {other}, whose source is not resolved"),
        })
    })?;
    let (_, rel) = beneath(&unit.name, key, base.root(), subdir)?;
    Ok((base.sub(&rel), rel))
}

/// How a venv build tells what it does: `starting` when it starts, and
/// waits for another run's build of the same venv.
fn progress<'a>(
    r: &Resolving<'a, '_>,
    unit: &'a Unit,
    starting: &'a str,
    waiting: &'a str,
) -> assemble_install::Progress<'a> {
    assemble_install::Progress {
        reporter: r.stage.reporter,
        starting,
        waiting,
        unit: unit.name.as_ref(),
        shared: r.stage.config.shared(),
    }
}

/// A venv built (once; then cached) from a requirements file with the
/// recipe's installer.
fn requirements_venv(r: &mut Resolving<'_, '_>, unit: &Unit, path: &Path) -> Result<Files, Error> {
    if !path.is_file() {
        return Err(missing(unit, "requirements", path, "a regular file", ""));
    }
    let config = r.stage.config;
    let starting = format!(
        "{}: building a virtualenv from {} with {} (once; then cached)",
        unit.name,
        path.display(),
        r.recipe.installer.label()
    );
    let waiting = format!("the venv of {}", unit.name);
    assemble_install::build_venv(
        path,
        &config.python,
        &r.recipe.installer,
        &config.cache,
        config.policy,
        progress(r, unit, &starting, &waiting),
    )
    .map_err(python_error(unit))
}

/// A venv synced (once; then cached) with the recipe's uv from a uv
/// project's `uv.lock`, without the distributions `exclude` names (each
/// checked to be in the lock: uv skips a name it does not know).
fn uv_project_venv(
    r: &mut Resolving<'_, '_>,
    unit: &Unit,
    project: &Project,
) -> Result<Files, Error> {
    let files = match project {
        Project::Path(p) => Files::plain(p.clone()),
        Project::In {
            unit: other,
            subdir,
        } => inside(r, unit, "uv-project", other, subdir)?.0,
    };
    let dir = files.root();
    for file in ["pyproject.toml", "uv.lock"] {
        if !dir.join(file).is_file() {
            return Err(missing(
                unit,
                "uv-project",
                &dir.join(file),
                "a regular file",
                " (a uv project: its pyproject.toml and the uv.lock made by `uv lock`)",
            ));
        }
    }
    let assemble_recipe::Installer::Uv { version, sha256 } = &r.recipe.installer else {
        return Err(Error::Plan(recipe_error(
            r.recipe,
            &unit.name,
            "uv-project",
            "a uv project's venv is synced with uv: set [python] installer = \"uv==X.Y.Z\" with installer-sha256".into(),
        )));
    };
    check_excluded(r.recipe, unit, &files)?;
    let config = r.stage.config;
    let starting = format!(
        "{}: syncing a virtualenv from {} with uv {version} (once; then cached)",
        unit.name,
        dir.join("uv.lock").display()
    );
    let waiting = format!("the venv of {}", unit.name);
    // `cargo xtask vendor` keeps the lock's files beside the recipe.
    let vendor = r.recipe.dir.join("vendor").join("pypi");
    let sync = assemble_install::UvSync {
        project: &files,
        python: &config.python,
        uv_version: version,
        uv_sha256: sha256,
        exclude: &unit.exclude,
        vendor: (config.vendored_pypi && vendor.is_dir()).then_some(vendor.as_path()),
        progress: progress(r, unit, &starting, &waiting),
    };
    assemble_install::sync_venv(&sync, &config.cache, config.policy).map_err(python_error(unit))
}

/// Every distribution `exclude` names is in the project's `uv.lock`: uv
/// skips a `--no-install-package` it does not know, which would leave
/// the package installed.
fn check_excluded(recipe: &Recipe, unit: &Unit, project: &Files) -> Result<(), Error> {
    let locked = assemble_install::locked_packages(project).map_err(python_error(unit))?;
    for wanted in &unit.exclude {
        let wanted_n = assemble_python::normalize_name(wanted);
        if locked
            .iter()
            .any(|p| assemble_python::normalize_name(p) == wanted_n)
        {
            continue;
        }
        let have: Vec<&str> = locked.iter().map(String::as_str).collect();
        return Err(Error::Plan(recipe_error(
            recipe,
            &unit.name,
            wanted,
            format!(
                "`exclude` names {wanted}, which {} does not have{}",
                project.root().join("uv.lock").display(),
                assemble_recipe::suggest(wanted, &have)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default()
            ),
        )));
    }
    Ok(())
}

/// A pinned remote source: from `vendor/<unit>` beside the recipe, the
/// cache, or the network.
fn fetched(r: &mut Resolving<'_, '_>, unit: &Unit, remote: &Remote) -> Result<Files, Error> {
    let vendor = r.recipe.dir.join("vendor").join(&unit.name);
    let fetched = r
        .stage
        .fetcher
        .fetch(&unit.name, remote, &vendor)
        .map_err(|source| Error::Fetch {
            unit: unit.name.clone(),
            source,
        })?;
    r.warnings.extend(fetched.warnings);
    Ok(fetched.files)
}
