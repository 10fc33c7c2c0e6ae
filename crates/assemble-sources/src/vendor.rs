//! `cargo xtask vendor`'s Python side: every file a uv project's venv is
//! installed from, in one flat folder (`vendor/pypi/`), so that a build
//! with that folder and an empty cache reaches no index at all.
//!
//! What goes in: the lock's file of each distribution the venv synced from
//! the index holds (see `assemble_install::vendored::used_files`), each
//! checked against the lock's sha256; the wheels that build its sdists
//! (their `[build-system] requires`, with what those need); and uv's own
//! wheel, checked against `installer-sha256`.

use std::path::Path;

use assemble_cache::Reporter;
use assemble_install::vendored::{self, DistFile};
use assemble_recipe::{Installer, Project, Recipe, Source};

use crate::{Config, Error, realise};

/// What [`vendor_pypi`] put in the folder.
#[derive(Debug, Default)]
pub struct VendoredPypi {
    /// The lock's files, per uv project unit.
    pub dists: Vec<DistFile>,
    /// Wheels downloaded to build the sdists among them.
    pub build_wheels: usize,
    /// uv's wheel, when the recipe's installer is uv.
    pub uv: Option<String>,
}

/// Fills `dest` (made if missing) with every file the recipe's uv-project
/// venvs are installed from, the build wheels of their sdists and uv's
/// wheel. The venvs are synced from the index (into the cache) first.
pub fn vendor_pypi(
    recipe: &Recipe,
    config: &Config,
    reporter: &dyn Reporter,
    dest: &Path,
) -> Result<VendoredPypi, Error> {
    let uv_units: Vec<_> = recipe
        .units
        .iter()
        .filter_map(|u| match &u.source {
            Source::UvProject { project } => Some((u, project)),
            _ => None,
        })
        .collect();
    let mut out = VendoredPypi::default();
    if uv_units.is_empty() {
        return Ok(out);
    }
    let from_index = Config {
        vendored_pypi: false,
        ..config.clone()
    };
    let realised = realise(recipe, &from_index, reporter)?;
    let fetcher = config.fetcher(reporter);
    fs_err::create_dir_all(dest).map_err(io)?;
    for (unit, project) in &uv_units {
        let python_error = |source| Error::Python {
            unit: unit.name.clone(),
            source,
        };
        let project_dir = match project {
            Project::Path(p) => p.clone(),
            Project::In { unit: base, subdir } => realised
                .sources
                .roots
                .get(base)
                .map(|f| f.root().join(subdir))
                .unwrap_or_default(),
        };
        let venv = realised
            .sources
            .roots
            .get(&unit.name)
            .map(|f| f.root().to_path_buf())
            .unwrap_or_default();
        let lock_path = project_dir.join("uv.lock");
        let lock = fs_err::read(&lock_path).map_err(io)?;
        let pyproject = fs_err::read(project_dir.join("pyproject.toml")).map_err(io)?;
        let mut dists = Vec::new();
        for site in vendored::site_packages(&venv).map_err(python_error)? {
            dists.extend(
                vendored::used_files(&lock, &lock_path, &pyproject, &site).map_err(python_error)?,
            );
        }
        for d in &dists {
            let cached = fetcher
                .fetch_file(&unit.name, &d.url, assemble_recipe::Hash(d.sha256))
                .map_err(|source| Error::Fetch {
                    unit: unit.name.clone(),
                    source,
                })?;
            copy_in(&cached, &dest.join(&d.filename))?;
            if d.sdist {
                let requires = vendored::build_requirements(&cached).map_err(python_error)?;
                out.build_wheels +=
                    assemble_install::pip_download_wheels(&requires, &config.python, dest)
                        .map_err(python_error)?;
            }
        }
        out.dists.extend(dists);
    }
    // uv-project units need the recipe's uv (checked by `realise`).
    if let Installer::Uv { version, sha256 } = &recipe.installer {
        let unit = &uv_units[0].0.name;
        out.uv = Some(
            assemble_install::download_uv_wheel(version, sha256, &config.python, dest).map_err(
                |source| Error::Python {
                    unit: unit.clone(),
                    source,
                },
            )?,
        );
    }
    Ok(out)
}

/// `from` copied to `to` through a temporary file beside it.
fn copy_in(from: &Path, to: &Path) -> Result<(), Error> {
    let bytes = fs_err::read(from).map_err(io)?;
    assemble_fs::write_atomic(to, &bytes, assemble_fs::Durability::Unsynced).map_err(|e| {
        io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", to.display()),
        ))
    })
}

/// An I/O error (fs-err's: it names the path).
fn io(e: std::io::Error) -> Error {
    Error::Plan(assemble_plan::Error::Io(e))
}
