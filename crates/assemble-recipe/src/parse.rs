//! Reading and validating a recipe: its layers merged (see `extends`),
//! each unit's source and keys checked, then the checks across units.

use std::path::{Path, PathBuf};

use toml::Value;

use crate::schema::*;
use crate::{Hash, Location, RecipeError, did_you_mean, extends, suggest};

impl Recipe {
    /// Reads and validates a recipe file.
    /// Its path is made absolute and normalised first, so that every
    /// spelling of it (`./demo/assemble.toml`, `demo/assemble.toml`) gives
    /// the same paths, and so the same fingerprints.
    pub fn load(file: &Path) -> Result<Recipe, RecipeError> {
        let cwd = std::env::current_dir().map_err(RecipeError::Read)?;
        let file = assemble_fs::normalize(&cwd, file);
        let text = read_text(&file).map_err(RecipeError::Read)?;
        Recipe::parse(&file, &text)
    }

    /// Validates recipe text; `file` is used for locations and relative
    /// paths. A recipe that `extends` another reads it (and its bases) from
    /// disk; see [`extends`] for the merge.
    pub fn parse(file: &Path, text: &str) -> Result<Recipe, RecipeError> {
        let chain = extends::Chain::read(file, text)?;
        let raw: RawRecipe =
            Value::Table(chain.merged.clone())
                .try_into()
                .map_err(|e: toml::de::Error| RecipeError::Syntax {
                    location: Location {
                        file: file.to_path_buf(),
                        line: None,
                    },
                    message: e.message().trim().to_string(),
                })?;
        let p = Parsing {
            chain: &chain,
            dir: recipe_dir(file),
        };
        let missing = |table: &str, key: &str| RecipeError::Invalid {
            location: chain.find(&format!("[{table}]")),
            message: format!(
                "[{table}] has no `{key}`: the recipe (or the one it extends) must give it"
            ),
        };
        let name = raw
            .package
            .name
            .clone()
            .ok_or_else(|| missing("package", "name"))?;
        let version = raw
            .package
            .version
            .clone()
            .ok_or_else(|| missing("package", "version"))?;
        let interpreter = raw
            .python
            .interpreter
            .clone()
            .ok_or_else(|| missing("python", "interpreter"))?;
        if name.is_empty() || name.contains('/') {
            return Err(RecipeError::Invalid {
                location: chain.find("name"),
                message: format!("package.name {name:?} must be a plain non-empty file name"),
            });
        }
        let units = raw
            .units
            .iter()
            .map(|(name, u)| p.unit(name, u))
            .collect::<Result<Vec<Unit>, RecipeError>>()?;
        p.check_across(file, &units)?;
        let installer = installer(&raw.python).map_err(|message| RecipeError::Invalid {
            location: chain.find("installer"),
            message,
        })?;
        let dir = p.dir;
        let autopatchelf = raw.autopatchelf.as_ref().map(|a| Autopatchelf {
            libs: a.libs.iter().map(|l| dir.join(l)).collect(),
            ignore_missing: a.ignore_missing.clone(),
            runtime_dependencies: a.runtime_dependencies.iter().map(|l| dir.join(l)).collect(),
            dynamic_linker: a.dynamic_linker.clone(),
            canonical: toml::to_string(a).unwrap_or_default(),
        });
        Ok(Recipe {
            file: file.to_path_buf(),
            files: chain.layers.iter().map(|l| l.file.clone()).collect(),
            places: chain.places.clone(),
            unit_tables: unit_tables(&chain),
            dir,
            name,
            version,
            interpreter,
            installer,
            compile_bytecode: raw.python.compile_bytecode.unwrap_or(false),
            units,
            autopatchelf,
        })
    }
}

/// Where each unit's table header is, in the first file of the chain
/// that writes it.
fn unit_tables(chain: &extends::Chain) -> indexmap::IndexMap<String, Location> {
    chain
        .units
        .keys()
        .filter_map(|name| {
            let header = format!("[units.{name}");
            chain.layers.iter().find_map(|l| {
                let line = crate::find_line(&l.text, &header)?;
                Some((
                    name.clone(),
                    Location {
                        file: l.file.clone(),
                        line: Some(line),
                    },
                ))
            })
        })
        .collect()
}

/// The folder relative paths of the recipe are against.
fn recipe_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A unit's table: the layer (index) and span where its errors point.
type Span = (usize, std::ops::Range<usize>);

/// What validating a recipe's units works with.
struct Parsing<'a> {
    chain: &'a extends::Chain,
    dir: PathBuf,
}

impl Parsing<'_> {
    fn invalid(&self, (layer, span): Span, message: String) -> RecipeError {
        RecipeError::Invalid {
            location: self.chain.at(layer, span),
            message,
        }
    }

    fn span(&self, unit: &str) -> Span {
        self.chain.units[unit].clone()
    }

    /// One unit, validated on its own.
    fn unit(&self, name: &str, u: &RawUnit) -> Result<Unit, RecipeError> {
        let span = self.span(name);
        let invalid = |m: String| self.invalid(span.clone(), format!("unit {name}: {m}"));
        let source = self.source(name, u)?;
        let scripts = match &u.scripts {
            None => Scripts::Named(Vec::new()),
            Some(v) if v.iter().any(|s| s == "*") => Scripts::All,
            Some(v) => Scripts::Named(v.clone()),
        };
        if source.is_venv() {
            if !u.install.is_empty() || !u.symlinks.is_empty() {
                return Err(invalid(
                    "a venv unit is installed at the output root; `install` and `symlinks` do not apply to it".into(),
                ));
            }
        } else if u.scripts.is_some() {
            return Err(invalid(
                "`scripts` only goes with `venv` or `requirements`".into(),
            ));
        } else if !u.exclude.is_empty() {
            return Err(invalid(
                "`exclude` (distributions to leave out of a venv) only goes with `venv` or `requirements`".into(),
            ));
        }
        check_paths(u).map_err(invalid)?;
        Ok(Unit {
            name: name.into(),
            source,
            scripts,
            exclude: u.exclude.clone(),
            install: u.install.clone().into_iter().collect(),
            executable: u.executable.clone(),
            symlinks: u.symlinks.clone().into_iter().collect(),
            patches: u.patch.clone(),
            canonical: toml::to_string(u).unwrap_or_default(),
        })
    }

    /// The unit's one source, from whichever of its source keys it has.
    fn source(&self, name: &str, u: &RawUnit) -> Result<Source, RecipeError> {
        let invalid = |m: String| self.invalid(self.span(name), format!("unit {name}: {m}"));
        let dir = &self.dir;
        let mut kinds = Vec::new();
        if let Some(p) = &u.venv {
            kinds.push(Source::Venv { path: dir.join(p) });
        }
        if let Some(p) = &u.requirements {
            kinds.push(Source::Requirements { path: dir.join(p) });
        }
        if let Some(p) = &u.uv_project {
            let project = match p.split_once(':') {
                Some((unit, subdir)) => {
                    let subdir = subdir.trim_matches('/');
                    if unit.is_empty() || (!subdir.is_empty() && !plain_relative(subdir)) {
                        return Err(invalid(format!(
                            "uv-project = {p:?} must read \"UNIT:SUBDIR\" (a plain relative sub-folder) or be a path"
                        )));
                    }
                    Project::In {
                        unit: unit.into(),
                        subdir: subdir.to_string(),
                    }
                }
                None => Project::Path(dir.join(p)),
            };
            kinds.push(Source::UvProject { project });
        }
        if let Some(r) = remote(u).map_err(&invalid)? {
            kinds.push(Source::Remote(r));
        }
        if let Some(f) = &u.from {
            let Some((unit, subdir)) = f.split_once(':') else {
                return Err(invalid(format!("from = {f:?} must read \"UNIT:SUBDIR\"")));
            };
            let subdir = subdir.trim_matches('/');
            if !subdir.is_empty() && !plain_relative(subdir) {
                return Err(invalid(format!(
                    "from = {f:?}: the sub-folder must be a plain relative path inside unit {unit} (no `.`, `..` or empty components)"
                )));
            }
            kinds.push(Source::From {
                unit: unit.into(),
                subdir: subdir.to_string(),
            });
        }
        if let Some(p) = &u.path {
            kinds.push(Source::Path { path: dir.join(p) });
        }
        match kinds.len() {
            1 => Ok(kinds.remove(0)),
            0 => Err(self.invalid(
                self.span(name),
                format!(
                    "unit {name} has no source: give one of `path`, `from`, `github`, `url`, `git`, `pypi`, `venv`, `requirements`"
                ),
            )),
            _ => {
                let keys: Vec<_> = kinds.iter().map(|k| format!("`{}`", k.key())).collect();
                Err(self.invalid(
                    self.span(name),
                    format!(
                        "unit {name} has more than one source ({}): keep one",
                        keys.join(", ")
                    ),
                ))
            }
        }
    }

    /// What no unit can check alone: one venv at most, and every unit that
    /// reads another's source names one that has a folder to read.
    fn check_across(&self, file: &Path, units: &[Unit]) -> Result<(), RecipeError> {
        let venvs: Vec<_> = units.iter().filter(|u| u.source.is_venv()).collect();
        if venvs.len() > 1 {
            return Err(RecipeError::Invalid {
                location: Location {
                    file: file.to_path_buf(),
                    line: None,
                },
                message: format!(
                    "units {} and {} both provide the virtualenv: keep one",
                    venvs[0].name, venvs[1].name
                ),
            });
        }
        for u in units {
            let (Source::From { unit, .. }
            | Source::UvProject {
                project: Project::In { unit, .. },
            }) = &u.source
            else {
                continue;
            };
            let message = match units.iter().find(|o| &o.name == unit) {
                None => {
                    let names: Vec<&str> = units.iter().map(|o| o.name.as_str()).collect();
                    format!(
                        "unit {}: {} names unit `{unit}`, which the recipe does not have{}",
                        u.name,
                        u.source.key(),
                        did_you_mean(&suggest(unit, &names))
                    )
                }
                Some(o) if !matches!(o.source, Source::Path { .. } | Source::Remote(_)) => format!(
                    "unit {}: {} = `{unit}:...` needs a `path` or remote unit; {unit} is a `{}` unit",
                    u.name,
                    u.source.key(),
                    o.source.key()
                ),
                Some(_) => continue,
            };
            return Err(self.invalid(self.span(&u.name), message));
        }
        Ok(())
    }
}

/// A unit's paths: install sources relative and inside it, output paths
/// plain, no patch with an empty `replace`.
fn check_paths(u: &RawUnit) -> Result<(), String> {
    for (from, to) in &u.install {
        if !plain_relative(from.trim_end_matches('/')) {
            return Err(format!(
                "install source {from:?} must be a relative path inside the unit"
            ));
        }
        check_out_path(to)?;
    }
    for p in u
        .executable
        .iter()
        .chain(u.symlinks.keys())
        .chain(u.symlinks.values())
        .chain(u.patch.iter().map(|p| &p.file))
    {
        check_out_path(p)?;
    }
    match u.patch.iter().position(|p| p.replace.is_empty()) {
        Some(i) => Err(format!("patch {} has an empty `replace`", i + 1)),
        None => Ok(()),
    }
}

/// Reads the remote-source keys of a unit; `Ok(None)` when it has none.
fn remote(u: &RawUnit) -> Result<Option<Remote>, String> {
    let kinds = [
        u.pypi.is_some(),
        u.github.is_some(),
        u.url.is_some(),
        u.git.is_some(),
    ];
    let any = kinds.iter().any(|k| *k);
    let parse_hash = |h: &str| Hash::parse(h).map_err(|e| e.to_string());
    if !any {
        for (key, set) in [
            ("sha256", u.sha256.is_some()),
            ("rev", u.rev.is_some()),
            ("tag", u.tag.is_some()),
            ("hash", u.hash.is_some()),
            ("unpack", u.unpack.is_some()),
        ] {
            if set {
                return Err(format!(
                    "`{key}` only goes with `github`, `url`, `git` or `pypi`"
                ));
            }
        }
        return Ok(None);
    }
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err("give one of `github`, `url`, `git`, `pypi`, not several".into());
    }
    let not_here = |key: &str, set: bool, kind: &str| {
        if set {
            Err(format!("`{key}` does not go with `{kind}`"))
        } else {
            Ok(())
        }
    };
    let need_hash = |kind: &str| {
        u.hash.as_deref().ok_or_else(|| {
            format!("`{kind}` needs `hash` (SRI, hex or nix32; `cargo xtask prefetch` prints it)")
        })
    };
    if let Some(spec) = &u.pypi {
        not_here("hash", u.hash.is_some(), "pypi (it takes `sha256`)")?;
        for (k, set) in [
            ("rev", u.rev.is_some()),
            ("tag", u.tag.is_some()),
            ("unpack", u.unpack.is_some()),
        ] {
            not_here(k, set, "pypi")?;
        }
        let sha = u.sha256.as_deref().ok_or_else(|| {
            format!(
                "`pypi = {spec:?}` needs `sha256` (the sdist's sha256, as `pip hash` prints it)"
            )
        })?;
        if !spec.contains("==") {
            return Err(format!(
                "pypi = {spec:?} must pin one version, as `name==version`"
            ));
        }
        return Ok(Some(Remote::Pypi {
            spec: spec.clone(),
            sha256: parse_hash(sha)?,
        }));
    }
    not_here(
        "sha256",
        u.sha256.is_some(),
        "github, url or git (they take `hash`)",
    )?;
    if let Some(gh) = &u.github {
        not_here("unpack", u.unpack.is_some(), "github")?;
        let Some((owner, repo)) = gh
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
        else {
            return Err(format!("github = {gh:?} must read \"OWNER/REPO\""));
        };
        let name_ok = |n: &str| {
            n != "."
                && n != ".."
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(owner) || !name_ok(repo) {
            return Err(format!(
                "github = {gh:?}: OWNER and REPO are names (letters, digits, `-`, `_`, `.`)"
            ));
        }
        let rev = match (&u.rev, &u.tag) {
            (Some(r), None) => r.clone(),
            (None, Some(t)) => t.clone(),
            (Some(_), Some(_)) => return Err("give `rev` or `tag`, not both".into()),
            (None, None) => return Err(format!("github = {gh:?} needs `rev` (a commit) or `tag`")),
        };
        // As git's check-ref-format: it names a path in URLs and mirrors.
        if rev.is_empty()
            || rev.starts_with('/')
            || rev.ends_with('/')
            || rev.contains("..")
            || rev.contains("//")
            || rev
                .chars()
                .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
        {
            return Err(format!(
                "{rev:?} is not a git revision or tag name (git check-ref-format)"
            ));
        }
        return Ok(Some(Remote::Github {
            owner: owner.to_string(),
            repo: repo.to_string(),
            rev,
            // Without `hash`, the lock file (assemble.lock) pins it.
            hash: u.hash.as_deref().map(parse_hash).transpose()?,
        }));
    }
    if let Some(url) = &u.url {
        not_here("rev", u.rev.is_some(), "url")?;
        not_here("tag", u.tag.is_some(), "url")?;
        return Ok(Some(Remote::Url {
            url: url.clone(),
            hash: parse_hash(need_hash("url")?)?,
            unpack: u.unpack.unwrap_or(true),
        }));
    }
    let url = u.git.clone().unwrap_or_default();
    not_here("unpack", u.unpack.is_some(), "git")?;
    not_here("tag", u.tag.is_some(), "git (pin the commit with `rev`)")?;
    let rev = u
        .rev
        .clone()
        .ok_or_else(|| format!("git = {url:?} needs `rev`, a full commit id"))?;
    if rev.len() != 40 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "git rev {rev:?} must be a full 40-digit commit id, so that the source cannot move"
        ));
    }
    Ok(Some(Remote::Git {
        url,
        rev: rev.to_ascii_lowercase(),
        hash: u.hash.as_deref().map(parse_hash).transpose()?,
    }))
}

/// Whether `p` is relative, with no empty, `.` or `..` component.
fn plain_relative(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// An output path in a recipe, as written (it is checked again after
/// expansion, when the variables' values are known): relative to the
/// output root.
fn check_out_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("an output path is empty".into());
    }
    if p.starts_with('/') {
        return Err(format!(
            "output path {p:?} is absolute; output paths are relative to the output root (use @site@/... or a plain relative path)"
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("output path {p:?} leaves the output root"));
    }
    if !plain_relative(p.trim_end_matches('/')) {
        return Err(format!(
            "output path {p:?} has an empty or `.` component; write it as a plain relative path (`a/b`, not `./a` or `a//b`)"
        ));
    }
    Ok(())
}

/// `[python] installer` and `installer-sha256`.
fn installer(raw: &RawPython) -> Result<Installer, String> {
    match raw.installer.as_deref() {
        None | Some("pip") if raw.installer_sha256.is_empty() => Ok(Installer::Pip),
        None | Some("pip") => Err(
            "[python] installer-sha256 pins uv's wheel; it goes with installer = \"uv==X.Y.Z\""
                .into(),
        ),
        Some(spec) => {
            let Some(version) = spec.strip_prefix("uv==").filter(|v| {
                !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c))
            }) else {
                return Err(format!(
                    "[python] installer {spec:?} is not one this tool knows: write \"pip\" (the default) or \"uv==X.Y.Z\" with installer-sha256"
                ));
            };
            if raw.installer_sha256.is_empty() {
                return Err(format!(
                    "[python] installer {spec:?} needs installer-sha256: the sha256 of uv's wheel for each platform it builds on (`pip download --no-deps --only-binary :all: {spec}`, then sha256sum)"
                ));
            }
            let sha256 = raw
                .installer_sha256
                .iter()
                .map(|h| {
                    hex::decode(h)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| {
                            format!("[python] installer-sha256 {h:?} is not 64 hex digits")
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Installer::Uv {
                version: version.to_string(),
                sha256,
            })
        }
    }
}

/// A recipe file's text: a regular file of at most a few MB (a FIFO or a
/// device is refused, never read).
pub fn read_text(file: &Path) -> std::io::Result<String> {
    assemble_fs::files::read_named_text(file, assemble_fs::files::NAMED_FILE_LIMIT)
}
