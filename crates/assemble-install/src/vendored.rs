//! A uv project's distributions in a flat folder (`vendor/pypi/`), so that
//! its venv is synced with no network at all: which files of `uv.lock` a
//! synced venv holds (`used_files`), the build requirements of those that
//! are sdists (`build_requirements`), the lock rewritten to read them from
//! the folder (`rewrite_lock`), and what uv then records of a local
//! archive, removed (`forget_local_archives`).
//!
//! A venv synced from the folder holds the same files as one synced from
//! the index: uv installs a registry distribution the same way whatever
//! the registry, except that for a local archive it writes
//! `uv_cache.json` (the archive's modification time) into the
//! `.dist-info` and lists it in `RECORD`; both are taken out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::Error;

/// One file of `uv.lock` a venv was installed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFile {
    /// The distribution, as the lock names it.
    pub name: String,
    pub version: String,
    /// The file's name, the last segment of its URL.
    pub filename: String,
    pub url: String,
    /// Its sha256, from the lock.
    pub sha256: [u8; 32],
    /// An sdist (built here), not a wheel.
    pub sdist: bool,
}

/// The keys of `[tool.uv]` that belong to a project, which a `uv.toml`
/// may not hold.
const PROJECT_ONLY: &[&str] = &[
    "build-backend",
    "conflicts",
    "default-groups",
    "dependency-groups",
    "dev-dependencies",
    "environments",
    "managed",
    "package",
    "required-environments",
    "sources",
    "workspace",
];

/// The project's own `[tool.uv]` settings as a `uv.toml` (its project-only
/// keys left out): given to uv with `--config-file`, so that uv reads
/// these and no user's or machine's configuration.
pub fn project_config(pyproject: &[u8], path: &Path) -> Result<String, Error> {
    let doc: toml::Table =
        toml::from_str(&String::from_utf8_lossy(pyproject)).map_err(|e| Error::Malformed {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut settings = doc
        .get("tool")
        .and_then(|t| t.get("uv"))
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    settings.retain(|k, _| !PROJECT_ONLY.contains(&k));
    toml::to_string(&settings).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        message: format!("its [tool.uv] as a uv.toml: {e}"),
    })
}

/// The distributions the project's settings say to build from source:
/// `no-binary-package`, or all with `no-binary = true`.
fn no_binary(pyproject: &[u8]) -> (bool, BTreeSet<String>) {
    let doc: toml::Table = toml::from_str(&String::from_utf8_lossy(pyproject)).unwrap_or_default();
    let uv = doc.get("tool").and_then(|t| t.get("uv"));
    let all = uv
        .and_then(|u| u.get("no-binary"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    let some = uv
        .and_then(|u| u.get("no-binary-package"))
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(assemble_python::normalize_name))
        .collect();
    (all, some)
}

/// The files of `uv.lock` (`lock`, read from `lock_path`) that the venv
/// whose site-packages is `site` was installed from: for each
/// distribution it holds that the lock takes from an index, the wheel
/// whose tags are the ones its `WHEEL` records, else (none fits, or the
/// project asks for it with `no-binary-package`) the sdist it was built
/// from. Sorted by name.
pub fn used_files(
    lock: &[u8],
    lock_path: &Path,
    pyproject: &[u8],
    site: &Path,
) -> Result<Vec<DistFile>, Error> {
    let malformed = |message: String| Error::Malformed {
        path: lock_path.to_path_buf(),
        message,
    };
    let doc: toml::Table =
        toml::from_str(&String::from_utf8_lossy(lock)).map_err(|e| malformed(e.to_string()))?;
    let (all_sdists, sdists) = no_binary(pyproject);
    let mut out = Vec::new();
    for (name, version, tags) in installed(site)? {
        let Some(package) = doc
            .get("package")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| {
                p.get("name")
                    .and_then(toml::Value::as_str)
                    .is_some_and(|n| assemble_python::normalize_name(n) == name)
                    && p.get("version").and_then(toml::Value::as_str) == Some(version.as_str())
            })
        else {
            continue;
        };
        let from_index = package
            .get("source")
            .and_then(|s| s.get("registry"))
            .is_some();
        if !from_index {
            continue;
        }
        let wheel = package
            .get("wheels")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .find(|w| {
                w.get("url")
                    .and_then(toml::Value::as_str)
                    .is_some_and(|u| wheel_tags(file_name(u)) == tags)
            })
            .filter(|_| !all_sdists && !sdists.contains(&name));
        let (file, sdist) = match wheel {
            Some(w) => (w, false),
            None => (
                package.get("sdist").ok_or_else(|| {
                    malformed(format!(
                        "{name} {version}: no wheel of the lock has the tags the venv's holds, and it has no sdist"
                    ))
                })?,
                true,
            ),
        };
        out.push(dist_file(&name, &version, file, sdist).map_err(malformed)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A lock entry (`{ url, hash, ... }`) as a [`DistFile`].
fn dist_file(
    name: &str,
    version: &str,
    file: &toml::Value,
    sdist: bool,
) -> Result<DistFile, String> {
    let url = file
        .get("url")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{name} {version}: a file without `url`"))?;
    let hash = file
        .get("hash")
        .and_then(toml::Value::as_str)
        .and_then(|h| h.strip_prefix("sha256:"))
        .and_then(|h| hex::decode(h).ok())
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| format!("{name} {version}: {url} has no sha256 `hash`"))?;
    Ok(DistFile {
        name: name.to_string(),
        version: version.to_string(),
        filename: file_name(url).to_string(),
        url: url.to_string(),
        sha256: hash,
        sdist,
    })
}

/// The last segment of a URL.
fn file_name(url: &str) -> &str {
    url.split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or(url)
}

/// The tags a wheel's file name stands for (`py2.py3-none-any` is two).
fn wheel_tags(filename: &str) -> BTreeSet<String> {
    let stem = filename.strip_suffix(".whl").unwrap_or(filename);
    let parts: Vec<&str> = stem.split('-').collect();
    let [.., py, abi, plat] = parts.as_slice() else {
        return BTreeSet::new();
    };
    let mut tags = BTreeSet::new();
    for p in py.split('.') {
        for a in abi.split('.') {
            for pl in plat.split('.') {
                tags.insert(format!("{p}-{a}-{pl}"));
            }
        }
    }
    tags
}

/// Each distribution in `site`: its normalised name, its version and the
/// tags its `WHEEL` records.
fn installed(site: &Path) -> Result<Vec<(String, String, BTreeSet<String>)>, Error> {
    let mut out = Vec::new();
    for entry in fs_err::read_dir(site)? {
        let entry = entry?;
        let dir = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = dir.strip_suffix(".dist-info") else {
            continue;
        };
        let Some((name, version)) = stem.rsplit_once('-') else {
            continue;
        };
        let wheel = fs_err::read_to_string(entry.path().join("WHEEL")).unwrap_or_default();
        let tags = wheel
            .lines()
            .filter_map(|l| l.strip_prefix("Tag:"))
            .map(|t| t.trim().to_string())
            .collect();
        out.push((
            assemble_python::normalize_name(name),
            version.to_string(),
            tags,
        ));
    }
    Ok(out)
}

/// The build requirements of the sdist `archive` (a `.tar.gz` or `.zip`):
/// its `pyproject.toml`'s `[build-system] requires`, or setuptools's
/// default when it has none (as uv and pip read it).
pub fn build_requirements(archive: &Path) -> Result<Vec<String>, Error> {
    let text = sdist_pyproject(archive)?;
    let doc: toml::Table = match text {
        Some(t) => toml::from_str(&t).map_err(|e| Error::Malformed {
            path: archive.to_path_buf(),
            message: format!("its pyproject.toml: {e}"),
        })?,
        None => toml::Table::new(),
    };
    let requires = doc
        .get("build-system")
        .and_then(|b| b.get("requires"))
        .and_then(toml::Value::as_array);
    Ok(match requires {
        Some(r) => r
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        None => vec!["setuptools>=40.8.0".to_string()],
    })
}

/// The text of `NAME-VERSION/pyproject.toml` in an sdist, if it has one.
fn sdist_pyproject(archive: &Path) -> Result<Option<String>, Error> {
    use std::io::Read;
    let is_top_pyproject = |p: &str| {
        let parts: Vec<&str> = p.trim_start_matches("./").split('/').collect();
        parts.len() == 2 && parts[1] == "pyproject.toml"
    };
    let name = archive.to_string_lossy();
    if name.ends_with(".zip") {
        let file = fs_err::File::open(archive)?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| Error::Malformed {
            path: archive.to_path_buf(),
            message: e.to_string(),
        })?;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| Error::Malformed {
                path: archive.to_path_buf(),
                message: e.to_string(),
            })?;
            if entry.name().is_ok_and(|n| is_top_pyproject(&n)) {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                return Ok(Some(text));
            }
        }
        return Ok(None);
    }
    let gz = flate2::read::GzDecoder::new(fs_err::File::open(archive)?);
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if is_top_pyproject(&path) {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// `lock` with every distribution taken from an index read from the flat
/// folder `folder` instead: each `registry` source names the folder, each
/// file's `url` becomes its `path` there (its hash kept, and checked by uv).
pub fn rewrite_lock(lock: &str, lock_path: &Path, folder: &Path) -> Result<String, Error> {
    let mut doc: toml_edit::DocumentMut =
        lock.parse()
            .map_err(|e: toml_edit::TomlError| Error::Malformed {
                path: lock_path.to_path_buf(),
                message: e.to_string(),
            })?;
    let folder = folder.to_string_lossy().into_owned();
    let Some(packages) = doc
        .get_mut("package")
        .and_then(|p| p.as_array_of_tables_mut())
    else {
        return Ok(doc.to_string());
    };
    for package in packages.iter_mut() {
        let registry = package
            .get_mut("source")
            .and_then(|s| s.as_inline_table_mut())
            .filter(|s| s.contains_key("registry"));
        let Some(source) = registry else { continue };
        source.insert("registry", folder.as_str().into());
        if let Some(sdist) = package
            .get_mut("sdist")
            .and_then(|s| s.as_inline_table_mut())
        {
            url_to_path(sdist);
        }
        if let Some(wheels) = package.get_mut("wheels").and_then(|w| w.as_array_mut()) {
            for wheel in wheels.iter_mut() {
                if let Some(w) = wheel.as_inline_table_mut() {
                    url_to_path(w);
                }
            }
        }
    }
    Ok(doc.to_string())
}

/// `{ url = ".../f.whl", ... }` as `{ path = "f.whl", ... }`.
fn url_to_path(file: &mut toml_edit::InlineTable) {
    let Some(url) = file.remove("url") else {
        return;
    };
    let name = url
        .as_str()
        .map(|u| file_name(u).to_string())
        .unwrap_or_default();
    file.insert("path", name.as_str().into());
}

/// Takes out of every `.dist-info` under `venv` the `uv_cache.json` uv
/// writes for a distribution installed from a local archive (its
/// modification time), and its line in `RECORD`.
pub fn forget_local_archives(venv: &Path) -> Result<(), Error> {
    for site in site_packages(venv)? {
        for entry in fs_err::read_dir(&site)? {
            let dir = entry?.path();
            let cache_json = dir.join("uv_cache.json");
            if !dir.to_string_lossy().ends_with(".dist-info") || !cache_json.is_file() {
                continue;
            }
            fs_err::remove_file(&cache_json)?;
            let record = dir.join("RECORD");
            let name = format!(
                "{}/uv_cache.json,",
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
            let text = fs_err::read_to_string(&record)?;
            let kept: String = text
                .split_inclusive('\n')
                .filter(|l| !l.starts_with(&name))
                .collect();
            fs_err::write(&record, kept)?;
        }
    }
    Ok(())
}

/// The `lib/pythonX.Y/site-packages` folders of a venv.
pub fn site_packages(venv: &Path) -> Result<Vec<PathBuf>, Error> {
    let lib = venv.join("lib");
    let mut out = Vec::new();
    for entry in fs_err::read_dir(&lib)? {
        let site = entry?.path().join("site-packages");
        if site.is_dir() {
            out.push(site);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wheel_name_stands_for_every_tag_it_compresses() {
        let tags = wheel_tags(
            "dumb_init-1.2.5.post1-py2.py3-none-manylinux_2_12_x86_64.manylinux2010_x86_64.whl",
        );
        assert_eq!(tags.len(), 4);
        assert!(tags.contains("py3-none-manylinux2010_x86_64"));
        assert_eq!(
            wheel_tags("click-8.5.1-py3-none-any.whl"),
            BTreeSet::from(["py3-none-any".to_string()])
        );
    }

    #[test]
    fn the_lock_reads_from_the_folder() {
        let lock = r#"version = 1

[[package]]
name = "click"
version = "8.5.1"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://files.example/p/click-8.5.1.tar.gz", hash = "sha256:aa", size = 1 }
wheels = [
    { url = "https://files.example/p/click-8.5.1-py3-none-any.whl", hash = "sha256:bb", size = 2 },
]

[[package]]
name = "x"
version = "0"
source = { virtual = "." }
"#;
        let out = rewrite_lock(lock, Path::new("uv.lock"), Path::new("/v/pypi")).unwrap();
        assert!(
            out.contains(r#"source = { registry = "/v/pypi" }"#),
            "{out}"
        );
        assert!(out.contains(r#"path = "click-8.5.1.tar.gz""#), "{out}");
        assert!(
            out.contains(r#"path = "click-8.5.1-py3-none-any.whl""#),
            "{out}"
        );
        assert!(out.contains(r#"hash = "sha256:bb""#), "{out}");
        assert!(!out.contains("files.example"), "{out}");
        assert!(out.contains(r#"source = { virtual = "." }"#), "{out}");
    }

    #[test]
    fn the_projects_settings_without_its_project_keys() {
        let config = project_config(
            b"[tool.uv]\npackage = false\nno-binary-package = [\"lxml\"]\n[tool.uv.sources]\nx = { git = \"y\" }\n",
            Path::new("pyproject.toml"),
        )
        .unwrap();
        assert_eq!(config.trim(), "no-binary-package = [\"lxml\"]");
    }
}
