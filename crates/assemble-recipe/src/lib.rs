//! The recipe: a TOML file that declares the deployment tree as a set of units.
//!
//! This crate reads and validates the file; it does no other I/O. Every error
//! carries the recipe's path and, where the file has one, a `line:col`
//! location, so that the CLI can print `assemble.toml:12:1: ...`.
//!
//! The schema (keys are the contract; see the README for the full reference):
//!
//! ```toml
//! [package]
//! name = "authentik-django"
//! version = "2026.2.0"
//!
//! [python]
//! interpreter = "python3.14"
//!
//! [units.python-deps]
//! venv = "vendor/python-deps"        # or: requirements = "requirements.txt"
//! scripts = ["gunicorn", "dumb-init"]
//!
//! [units.opencontainers]
//! pypi = "opencontainers==0.0.15"
//! sha256 = "..."
//! install = { "opencontainers" = "@site@/opencontainers" }
//!
//! [units.authentik]
//! path = "vendor/authentik"
//! install = { "authentik" = "@site@/authentik" }
//! executable = ["@site@/lifecycle/ak"]
//! symlinks = { "lifecycle" = "@site@/lifecycle" }
//!
//! [[units.authentik.patch]]
//! file = "@site@/authentik/root/settings.py"
//! replace = "..."
//! with = "..."
//! on-missing = "fail"
//! ```

mod extends;
mod vars;

use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Value;

pub use assemble_nar::Hash;

pub use vars::{Vars, VarsError};

/// A recipe error, always naming the recipe file.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe: {0}")]
    Read(#[source] std::io::Error),
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },
    #[error("{location}: unknown key `{key}`{table}{hint}", table = in_table(.table), hint = did_you_mean(.suggestion))]
    UnknownKey {
        location: Location,
        key: String,
        table: Option<String>,
        suggestion: Option<String>,
    },
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    /// Several mistakes of one file, in the order they were found.
    #[error("{} mistakes in the recipe:{}", .0.len(), .0.iter().map(|e| format!("\n  {e}")).collect::<String>())]
    Many(Vec<RecipeError>),
}

impl RecipeError {
    /// Each mistake on its own: the list of a `Many`, else this one.
    pub fn each(&self) -> Vec<&RecipeError> {
        match self {
            RecipeError::Many(all) => all.iter().collect(),
            e => vec![e],
        }
    }

    /// Where in which file, when the error has a place (the first
    /// mistake's, for several).
    pub fn location(&self) -> Option<&Location> {
        match self {
            RecipeError::Read(_) => None,
            RecipeError::Many(all) => all.first().and_then(RecipeError::location),
            RecipeError::Syntax { location, .. }
            | RecipeError::UnknownKey { location, .. }
            | RecipeError::Invalid { location, .. } => Some(location),
        }
    }

    /// The message without its place or its hint.
    pub fn detail(&self) -> String {
        match self {
            RecipeError::Read(e) => format!("cannot read recipe: {e}"),
            RecipeError::Syntax { message, .. } | RecipeError::Invalid { message, .. } => {
                message.clone()
            }
            RecipeError::UnknownKey { key, table, .. } => {
                format!("unknown key `{key}`{}", in_table(table))
            }
            RecipeError::Many(all) => all.first().map(RecipeError::detail).unwrap_or_default(),
        }
    }

    /// What to write instead, when it is known.
    pub fn hint(&self) -> Option<String> {
        match self {
            RecipeError::UnknownKey {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean `{s}`?")),
            RecipeError::Many(all) => all.first().and_then(RecipeError::hint),
            _ => None,
        }
    }
}

fn in_table(table: &Option<String>) -> String {
    table
        .as_ref()
        .map(|t| format!(" in {t}"))
        .unwrap_or_default()
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// `file:line:col`, 1-based, or just `file` when no position is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<(usize, usize)>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some((l, c)) => write!(f, "{}:{l}:{c}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// One recipe file as written: every section optional, as a recipe that
/// `extends` another gives only what it changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    extends: Option<String>,
    #[expect(
        dead_code,
        reason = "read for its unknown-key check; merged as a table"
    )]
    package: Option<RawPackage>,
    #[expect(
        dead_code,
        reason = "read for its unknown-key check; merged as a table"
    )]
    python: Option<RawPython>,
    #[serde(default)]
    units: IndexMap<String, toml::Spanned<RawUnit>>,
    #[expect(
        dead_code,
        reason = "read for its unknown-key check; merged as a table"
    )]
    autopatchelf: Option<RawAutopatchelf>,
}

/// The recipe after its `extends` chain is merged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[serde(default)]
    package: RawPackage,
    #[serde(default)]
    python: RawPython,
    #[serde(default)]
    units: IndexMap<String, RawUnit>,
    autopatchelf: Option<RawAutopatchelf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAutopatchelf {
    #[serde(default)]
    libs: Vec<String>,
    #[serde(default)]
    ignore_missing: Vec<String>,
    #[serde(default)]
    runtime_dependencies: Vec<String>,
    dynamic_linker: Option<String>,
}

/// The `[autopatchelf]` section: Nix's autoPatchelfHook settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Autopatchelf {
    /// Library folders (Nix's buildInputs), resolved against the recipe.
    pub libs: Vec<PathBuf>,
    /// Sonames (globs) that may stay unresolved, with a warning.
    pub ignore_missing: Vec<String>,
    /// Folders added to every executable's runpath.
    pub runtime_dependencies: Vec<PathBuf>,
    /// When set, the interpreter of every dynamic executable.
    pub dynamic_linker: Option<String>,
    /// The section, canonically serialised: part of every ELF's fingerprint.
    pub canonical: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPython {
    interpreter: Option<String>,
    installer: Option<String>,
    compile_bytecode: Option<bool>,
    #[serde(default)]
    installer_sha256: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawUnit {
    venv: Option<String>,
    requirements: Option<String>,
    uv_project: Option<String>,
    pypi: Option<String>,
    sha256: Option<String>,
    github: Option<String>,
    rev: Option<String>,
    tag: Option<String>,
    url: Option<String>,
    unpack: Option<bool>,
    git: Option<String>,
    hash: Option<String>,
    from: Option<String>,
    path: Option<String>,
    scripts: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    install: IndexMap<String, String>,
    #[serde(default)]
    executable: Vec<String>,
    #[serde(default)]
    symlinks: IndexMap<String, String>,
    #[serde(default)]
    patch: Vec<Patch>,
}

/// What a patch does when its pattern is not in the file.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnMissing {
    /// Fail the build, showing the closest lines (Nix's `--replace-fail`).
    #[default]
    Fail,
    /// Print a warning and go on (Nix's `--replace-warn`).
    Warn,
    /// Go on silently (Nix's `--replace-quiet`).
    Quiet,
}

/// One `substituteInPlace --replace-*` of the seed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Patch {
    /// Output path of the file to patch (variables allowed).
    pub file: String,
    pub replace: String,
    pub with: String,
    #[serde(default)]
    pub on_missing: OnMissing,
}

/// A validated recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file, absolute and normalised by [`Recipe::load`].
    pub file: PathBuf,
    /// The recipe file, then the one it `extends`, and so on: where its
    /// text is written.
    pub files: Vec<PathBuf>,
    /// The folder relative paths resolve against.
    pub dir: PathBuf,
    pub name: String,
    pub version: String,
    pub interpreter: String,
    /// What builds virtualenvs (`requirements` units): `[python] installer`.
    pub installer: Installer,
    /// `[python] compile-bytecode`: a `.pyc` for every `.py` of the tree.
    pub compile_bytecode: bool,
    pub units: Vec<Unit>,
    /// `None` without an `[autopatchelf]` section: ELF files are copied as they are.
    pub autopatchelf: Option<Autopatchelf>,
}

/// What builds a unit's virtualenv: one tool, named by the recipe, so
/// that the tree does not depend on what else is on PATH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Installer {
    /// The interpreter's own pip (`installer = "pip"`, the default).
    #[default]
    Pip,
    /// uv at a pinned version (`installer = "uv==X.Y.Z"`), bootstrapped from
    /// its wheel, which must match one of `installer-sha256` (one per
    /// platform).
    Uv {
        version: String,
        sha256: Vec<[u8; 32]>,
    },
}

impl Installer {
    /// Its name and version, for cache keys and reports.
    pub fn label(&self) -> String {
        match self {
            Installer::Pip => "pip (the interpreter's own)".into(),
            Installer::Uv { version, .. } => format!("uv {version}"),
        }
    }
}

/// Where a uv project is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Project {
    Path(PathBuf),
    /// In another unit's source.
    In {
        unit: String,
        subdir: String,
    },
}

/// Where a unit's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An existing virtualenv (normal, or Nix-FOD style without `bin/`).
    Venv { path: PathBuf },
    /// A virtualenv built from a requirements file into the cache.
    Requirements { path: PathBuf },
    /// A virtualenv synced with uv from a uv project's lock (`uv-project`):
    /// the folder holding `pyproject.toml` and `uv.lock`, a path or a
    /// sub-folder of another unit's source (`UNIT:SUBDIR`).
    UvProject { project: Project },
    /// A pinned remote source, fetched once into the cache.
    Remote(Remote),
    /// A sub-tree of another unit's source.
    From { unit: String, subdir: String },
    /// A local folder.
    Path { path: PathBuf },
}

impl Source {
    /// The recipe key that selects this kind.
    pub fn key(&self) -> &'static str {
        match self {
            Source::Venv { .. } => "venv",
            Source::Requirements { .. } => "requirements",
            Source::UvProject { .. } => "uv-project",
            Source::Remote(r) => r.key(),
            Source::From { .. } => "from",
            Source::Path { .. } => "path",
        }
    }

    /// The source as one plain line, the same for every spelling of it
    /// in the recipe (paths are absolute and normalised when loaded): a
    /// fingerprint component.
    pub fn describe(&self) -> String {
        match self {
            Source::Venv { path } => format!("venv {}", path.display()),
            Source::Requirements { path } => format!("requirements {}", path.display()),
            Source::UvProject {
                project: Project::Path(path),
            } => format!("uv project {}", path.display()),
            Source::UvProject {
                project: Project::In { unit, subdir },
            } => format!("uv project {unit}:{subdir}"),
            Source::Path { path } => format!("path {}", path.display()),
            Source::From { unit, subdir } => format!("from {unit}:{subdir}"),
            Source::Remote(Remote::Pypi { spec, sha256 }) => {
                format!("pypi {spec} sha256 {}", sha256.to_hex())
            }
            Source::Remote(Remote::Github {
                owner,
                repo,
                rev,
                hash,
            }) => format!(
                "github {owner}/{repo} at {rev}, {}",
                hash.map_or_else(|| "hash from the lock file".into(), |h| h.to_sri())
            ),
            Source::Remote(Remote::Url { url, hash, unpack }) => format!(
                "url {url} ({}), {}",
                if *unpack { "unpacked" } else { "one file" },
                hash.to_sri()
            ),
            Source::Remote(Remote::Git { url, rev, hash }) => format!(
                "git {url} at {rev}, {}",
                hash.map_or_else(|| "no hash".into(), |h| h.to_sri())
            ),
        }
    }

    /// The unit whose source this one reads (`from`, or a uv project in
    /// another unit's source), if any.
    pub fn base(&self) -> Option<&str> {
        match self {
            Source::From { unit, .. }
            | Source::UvProject {
                project: Project::In { unit, .. },
            } => Some(unit),
            _ => None,
        }
    }

    /// True for the unit that provides the virtualenv at the output root.
    pub fn is_venv(&self) -> bool {
        matches!(
            self,
            Source::Venv { .. } | Source::Requirements { .. } | Source::UvProject { .. }
        )
    }
}

/// A pinned remote source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// An sdist from the Python package index (`pip download`), checked
    /// against the archive's sha256.
    Pypi { spec: String, sha256: Hash },
    /// `https://github.com/OWNER/REPO/archive/REV.tar.gz`, unpacked with its
    /// top folder stripped, checked by NAR hash (fetchFromGitHub).
    Github {
        owner: String,
        repo: String,
        rev: String,
        /// `None`: not in the recipe; `assemble.lock` records it (see
        /// `assemble_fetch::Lockfile`), and the run fills it in before
        /// planning.
        hash: Option<Hash>,
    },
    /// An archive (unpacked, NAR hash) or, with `unpack = false`, one file
    /// (flat hash), as fetchzip and fetchurl.
    Url {
        url: String,
        hash: Hash,
        unpack: bool,
    },
    /// A git repository at a commit, through the git CLI (fetchgit, without
    /// `.git`); the NAR hash is checked when given.
    Git {
        url: String,
        rev: String,
        hash: Option<Hash>,
    },
}

impl Remote {
    /// The recipe key that selects this kind.
    pub fn key(&self) -> &'static str {
        match self {
            Remote::Pypi { .. } => "pypi",
            Remote::Github { .. } => "github",
            Remote::Url { .. } => "url",
            Remote::Git { .. } => "git",
        }
    }

    /// The pinned hash, if the kind has one.
    pub fn hash(&self) -> Option<Hash> {
        match self {
            Remote::Pypi { sha256, .. } => Some(*sha256),
            Remote::Url { hash, .. } => Some(*hash),
            Remote::Github { hash, .. } | Remote::Git { hash, .. } => *hash,
        }
    }

    /// Whether the hash is of a NAR (a tree) rather than of one file.
    pub fn is_tree_hash(&self) -> bool {
        match self {
            Remote::Pypi { .. } => false,
            Remote::Url { unpack, .. } => *unpack,
            Remote::Github { .. } | Remote::Git { .. } => true,
        }
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
        let rev = match (&u.rev, &u.tag) {
            (Some(r), None) => r.clone(),
            (None, Some(t)) => t.clone(),
            (Some(_), Some(_)) => return Err("give `rev` or `tag`, not both".into()),
            (None, None) => return Err(format!("github = {gh:?} needs `rev` (a commit) or `tag`")),
        };
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

/// Which `bin/` entries a venv unit provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripts {
    All,
    Named(Vec<String>),
}

/// A unit: one source input and what it installs.
#[derive(Debug, Clone)]
pub struct Unit {
    pub name: String,
    pub source: Source,
    pub scripts: Scripts,
    /// Distributions a venv unit leaves out (another unit provides them):
    /// their RECORDed files and their `.dist-info`.
    pub exclude: Vec<String>,
    /// Source path (relative to the unit's tree) -> output path (with variables).
    pub install: Vec<(String, String)>,
    /// Output paths (with variables) to mark executable.
    pub executable: Vec<String>,
    /// Top-level link (output path) -> what it points at (output path).
    pub symlinks: Vec<(String, String)>,
    pub patches: Vec<Patch>,
    /// The unit's section, canonically serialised: its recipe fingerprint.
    pub canonical: String,
}

/// A recipe file's text: a regular file of at most a few MB (a FIFO or a
/// device is refused, never read).
pub(crate) fn read_text(file: &Path) -> std::io::Result<String> {
    assemble_fs::files::read_named_text(file, assemble_fs::files::NAMED_FILE_LIMIT)
}

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
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let span_of = |name: &str| chain.units[name].clone();
        let invalid = |(layer, span): (usize, std::ops::Range<usize>), message: String| {
            RecipeError::Invalid {
                location: chain.at(layer, span),
                message,
            }
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

        let mut units = Vec::new();
        for (name, u) in &raw.units {
            let span = span_of(name);
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
                            return Err(invalid(
                                span,
                                format!(
                                    "unit {name}: uv-project = {p:?} must read \"UNIT:SUBDIR\" (a plain relative sub-folder) or be a path"
                                ),
                            ));
                        }
                        Project::In {
                            unit: unit.to_string(),
                            subdir: subdir.to_string(),
                        }
                    }
                    None => Project::Path(dir.join(p)),
                };
                kinds.push(Source::UvProject { project });
            }
            match remote(u) {
                Ok(Some(r)) => kinds.push(Source::Remote(r)),
                Ok(None) => {}
                Err(m) => return Err(invalid(span, format!("unit {name}: {m}"))),
            }
            if let Some(f) = &u.from {
                let Some((unit, subdir)) = f.split_once(':') else {
                    return Err(invalid(
                        span,
                        format!("unit {name}: from = {f:?} must read \"UNIT:SUBDIR\""),
                    ));
                };
                let subdir = subdir.trim_matches('/');
                if !subdir.is_empty() && !plain_relative(subdir) {
                    return Err(invalid(
                        span,
                        format!(
                            "unit {name}: from = {f:?}: the sub-folder must be a plain relative path inside unit {unit} (no `.`, `..` or empty components)"
                        ),
                    ));
                }
                kinds.push(Source::From {
                    unit: unit.to_string(),
                    subdir: subdir.to_string(),
                });
            }
            if let Some(p) = &u.path {
                kinds.push(Source::Path { path: dir.join(p) });
            }
            let source = match kinds.len() {
                1 => kinds.remove(0),
                0 => {
                    return Err(invalid(
                        span,
                        format!(
                            "unit {name} has no source: give one of `path`, `from`, `github`, `url`, `git`, `pypi`, `venv`, `requirements`"
                        ),
                    ));
                }
                _ => {
                    let keys: Vec<_> = kinds.iter().map(|k| format!("`{}`", k.key())).collect();
                    return Err(invalid(
                        span,
                        format!(
                            "unit {name} has more than one source ({}): keep one",
                            keys.join(", ")
                        ),
                    ));
                }
            };
            let scripts = match &u.scripts {
                None => Scripts::Named(Vec::new()),
                Some(v) if v.iter().any(|s| s == "*") => Scripts::All,
                Some(v) => Scripts::Named(v.clone()),
            };
            if source.is_venv() {
                if !u.install.is_empty() || !u.symlinks.is_empty() {
                    return Err(invalid(
                        span,
                        format!(
                            "unit {name}: a venv unit is installed at the output root; `install` and `symlinks` do not apply to it"
                        ),
                    ));
                }
            } else if u.scripts.is_some() {
                return Err(invalid(
                    span,
                    format!("unit {name}: `scripts` only goes with `venv` or `requirements`"),
                ));
            } else if !u.exclude.is_empty() {
                return Err(invalid(
                    span,
                    format!(
                        "unit {name}: `exclude` (distributions to leave out of a venv) only goes with `venv` or `requirements`"
                    ),
                ));
            }
            for (from, to) in &u.install {
                if !plain_relative(from.trim_end_matches('/')) {
                    return Err(invalid(
                        span,
                        format!(
                            "unit {name}: install source {from:?} must be a relative path inside the unit"
                        ),
                    ));
                }
                check_out_path(to)
                    .map_err(|m| invalid(span.clone(), format!("unit {name}: {m}")))?;
            }
            for p in u
                .executable
                .iter()
                .chain(u.symlinks.keys())
                .chain(u.symlinks.values())
                .chain(u.patch.iter().map(|p| &p.file))
            {
                check_out_path(p)
                    .map_err(|m| invalid(span.clone(), format!("unit {name}: {m}")))?;
            }
            for (i, p) in u.patch.iter().enumerate() {
                if p.replace.is_empty() {
                    return Err(invalid(
                        span,
                        format!("unit {name}: patch {} has an empty `replace`", i + 1),
                    ));
                }
            }
            let canonical = toml::to_string(u).unwrap_or_default();
            units.push(Unit {
                name: name.clone(),
                source,
                scripts,
                exclude: u.exclude.clone(),
                install: u.install.clone().into_iter().collect(),
                executable: u.executable.clone(),
                symlinks: u.symlinks.clone().into_iter().collect(),
                patches: u.patch.clone(),
                canonical,
            });
        }

        // Cross-unit checks.
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
        for u in &units {
            let other = match &u.source {
                Source::From { unit, .. }
                | Source::UvProject {
                    project: Project::In { unit, .. },
                } => Some(unit),
                _ => None,
            };
            if let Some(unit) = other {
                let span = span_of(&u.name);
                match units.iter().find(|o| &o.name == unit) {
                    None => {
                        let names: Vec<&str> = units.iter().map(|o| o.name.as_str()).collect();
                        return Err(invalid(
                            span,
                            format!(
                                "unit {}: {} names unit `{unit}`, which the recipe does not have{}",
                                u.name,
                                u.source.key(),
                                did_you_mean(&suggest(unit, &names))
                            ),
                        ));
                    }
                    Some(o) if !matches!(o.source, Source::Path { .. } | Source::Remote(_)) => {
                        return Err(invalid(
                            span,
                            format!(
                                "unit {}: {} = `{unit}:...` needs a `path` or remote unit; {unit} is a `{}` unit",
                                u.name,
                                u.source.key(),
                                o.source.key()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }

        let installer = installer(&raw.python).map_err(|message| RecipeError::Invalid {
            location: chain.find("installer"),
            message,
        })?;
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

    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }

    /// A recipe mistake found after parsing (while planning): `message`
    /// at the first place `needle` is written in unit `unit`'s tables, or
    /// at the unit's table when it cannot be found there.
    pub fn error_at(&self, unit: &str, needle: &str, message: String) -> RecipeError {
        RecipeError::Invalid {
            location: self.locate(unit, needle),
            message: format!("unit {unit}: {message}"),
        }
    }

    /// Where `needle` is first written in unit `unit`'s tables
    /// (`[units.NAME]` and its sub-tables, up to the next other table), in
    /// the recipe, then in the files it extends.
    pub fn locate(&self, unit: &str, needle: &str) -> Location {
        let header = format!("units.{unit}");
        let in_file = |file: &PathBuf| {
            let text = read_text(file).ok()?;
            let mut inside = false;
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                let t = line.trim_start();
                if t.starts_with('[') {
                    let name = t.trim_start_matches('[').trim_start();
                    inside = name.strip_prefix(&header).is_some_and(|rest| {
                        rest.starts_with(']') || rest.starts_with('.') || rest.starts_with(' ')
                    });
                }
                if inside
                    && !needle.is_empty()
                    && let Some(i) = line.find(needle)
                {
                    return Some(Location {
                        file: file.clone(),
                        line: Some(line_col(&text, offset + i)),
                    });
                }
                offset += line.len();
            }
            None
        };
        self.files
            .iter()
            .find_map(in_file)
            .unwrap_or_else(|| self.unit_location(unit))
    }

    /// The location of a unit's table, for errors found after parsing: in
    /// the first file of the chain that writes it.
    pub fn unit_location(&self, name: &str) -> Location {
        let header = format!("[units.{name}");
        self.files
            .iter()
            .find_map(|file| {
                let text = read_text(file).ok()?;
                find_line(&text, &header).map(|line| Location {
                    file: file.clone(),
                    line: Some(line),
                })
            })
            .unwrap_or_else(|| Location {
                file: self.file.clone(),
                line: None,
            })
    }
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

fn find_line(text: &str, needle: &str) -> Option<(usize, usize)> {
    text.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .map(|i| (i + 1, 1))
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// At most this many mistakes of one file are reported together.
const MAX_REPORTED: usize = 20;

/// Parses `text` (the content of `file`) as `T`, reporting every unknown
/// key rather than only the first: each one found is blanked out (its key
/// and value, or a misspelt table with all it holds; line breaks kept, so
/// every later position stays right) and the text parsed again. Another
/// kind of mistake ends the search: reported when it comes first, left
/// for the next run when it comes after an unknown key (a blanked
/// `replce = ...` makes `replace` missing: that is no second mistake).
pub(crate) fn from_toml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, RecipeError> {
    let mut work = text.to_string();
    let mut found = Vec::new();
    loop {
        let e = match toml::from_str::<T>(&work) {
            Ok(v) if found.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let err = de_error(file, &work, &e);
        let unknown = matches!(err, RecipeError::UnknownKey { .. });
        if !unknown && !found.is_empty() {
            break;
        }
        found.push(err);
        if !unknown || found.len() >= MAX_REPORTED {
            break;
        }
        let Some(at) = e.span().map(|s| s.start) else {
            break;
        };
        let mut ranges = Vec::new();
        match toml::de::DeTable::parse(&work) {
            Ok(doc) if find_entry(doc.get_ref(), at, &mut ranges) => {}
            _ => break,
        }
        let mut bytes = std::mem::take(&mut work).into_bytes();
        for r in ranges {
            for b in &mut bytes[r.start.min(text.len())..r.end.min(text.len())] {
                if *b != b'\n' && *b != b'\r' {
                    *b = b' ';
                }
            }
        }
        // Whole characters were replaced by spaces: still UTF-8.
        work = String::from_utf8_lossy(&bytes).into_owned();
    }
    Err(if found.len() == 1 {
        found.remove(0)
    } else {
        RecipeError::Many(found)
    })
}

/// Finds the entry whose key starts at byte `at` and pushes the ranges
/// that hold it.
fn find_entry(
    table: &toml::de::DeTable<'_>,
    at: usize,
    out: &mut Vec<std::ops::Range<usize>>,
) -> bool {
    use toml::de::DeValue;
    for (k, v) in table.iter() {
        if k.span().start == at {
            entry_ranges(k.span(), v, out);
            return true;
        }
        let found = match v.get_ref() {
            DeValue::Table(t) => find_entry(t, at, out),
            DeValue::Array(items) => items.iter().any(|item| match item.get_ref() {
                DeValue::Table(t) => find_entry(t, at, out),
                _ => false,
            }),
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

/// The ranges of an entry: `key = value` from the key to the value's
/// end; a table from a header, the header and everything it holds.
fn entry_ranges(
    key: std::ops::Range<usize>,
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    out: &mut Vec<std::ops::Range<usize>>,
) {
    use toml::de::DeValue;
    let span = value.span();
    if span.start >= key.end {
        out.push(key.start..span.end);
        return;
    }
    out.push(span);
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                entry_ranges(k.span(), v, out);
            }
        }
        DeValue::Array(items) => {
            for item in items {
                let item_span = item.span();
                out.push(item_span);
                if let DeValue::Table(t) = item.get_ref() {
                    for (k, v) in t.iter() {
                        entry_ranges(k.span(), v, out);
                    }
                }
            }
        }
        _ => {}
    }
}

fn de_error(file: &Path, text: &str, e: &toml::de::Error) -> RecipeError {
    let location = Location {
        file: file.to_path_buf(),
        line: e.span().map(|s| line_col(text, s.start)),
    };
    let message = e.message().trim().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default().to_string();
        let expected: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let table = e.span().and_then(|s| enclosing_table(text, s.start));
        return RecipeError::UnknownKey {
            location,
            suggestion: suggest(&key, &expected),
            key,
            table,
        };
    }
    RecipeError::Syntax { location, message }
}

/// The table a key at `offset` belongs to: the `[table]` header it falls
/// under, or, for a name in a header itself (`[pyhton]`, `[units.a.bogus]`),
/// the table that header's path goes through; "the top level" when none.
fn enclosing_table(text: &str, offset: usize) -> Option<String> {
    const TOP: &str = "the top level";
    let before = &text[..offset.min(text.len())];
    let current = before.rsplit('\n').next().unwrap_or(before).trim_start();
    if current.starts_with('[') {
        let path = current.trim_start_matches('[').trim().trim_end_matches('.');
        return Some(if path.is_empty() {
            TOP.to_string()
        } else {
            format!("[{path}]")
        });
    }
    let header = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.split('#').next().unwrap_or(l).trim().to_string());
    Some(header.unwrap_or_else(|| TOP.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[package]
name = "demo"
version = "1"

[python]
interpreter = "python3"

[units.deps]
venv = "v"
scripts = ["gunicorn"]

[units.app]
path = "src"
install = { "app" = "@site@/app" }

[[units.app.patch]]
file = "@site@/app/x.py"
replace = "a"
with = "b"
"#;

    fn parse(t: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse(Path::new("r/assemble.toml"), t)
    }

    #[test]
    fn parses_units_in_order() {
        let r = parse(OK).expect("valid recipe");
        let names: Vec<_> = r.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["deps", "app"]);
        assert_eq!(
            r.units[1].source,
            Source::Path {
                path: PathBuf::from("r/src")
            }
        );
        assert_eq!(r.units[1].patches[0].on_missing, OnMissing::Fail);
    }

    #[test]
    fn unknown_key_names_it_and_suggests() {
        let t = OK.replace("replace = \"a\"", "replce = \"a\"");
        let e = parse(&t).expect_err("typo must fail").to_string();
        assert!(e.contains("unknown key `replce`"), "{e}");
        assert!(e.contains("did you mean `replace`"), "{e}");
        assert!(e.contains("[[units.app.patch]]"), "{e}");
        assert!(e.starts_with("r/assemble.toml:19:"), "{e}");
    }

    #[test]
    fn every_unknown_key_is_reported_and_nothing_that_blanking_them_causes() {
        let t = OK
            .replace("replace = \"a\"", "replce = \"a\"")
            .replace("[python]", "[pyhton]")
            .replace(
                "scripts = [\"gunicorn\"]",
                "scripts = [\"gunicorn\"]\nsrcipts = 1",
            );
        let e = parse(&t).expect_err("three typos");
        let each: Vec<String> = e.each().iter().map(|e| e.to_string()).collect();
        assert_eq!(each.len(), 3, "{each:#?}");
        assert!(each[0].contains("`pyhton` in the top level"), "{each:#?}");
        assert!(each[1].contains("`srcipts` in [units.deps]"), "{each:#?}");
        assert!(
            each[2].contains("`replce` in [[units.app.patch]]"),
            "{each:#?}"
        );
        assert!(!e.to_string().contains("missing field"), "{e}");
    }

    #[test]
    fn a_misspelt_table_is_named_in_the_top_level_or_its_parent() {
        let t = OK.replace("[python]", "[pyhton]");
        let e = parse(&t).expect_err("typo must fail").to_string();
        assert!(e.contains("unknown key `pyhton` in the top level"), "{e}");
        assert!(e.contains("did you mean `python`"), "{e}");
        let t = OK.replace("[units.deps]", "[units.deps]\nbogus = 1");
        let e = parse(&t).expect_err("unknown key").to_string();
        assert!(e.contains("`bogus` in [units.deps]"), "{e}");
        let t = format!("nmae = 1\n{OK}");
        let e = parse(&t).expect_err("unknown key").to_string();
        assert!(e.contains("`nmae` in the top level"), "{e}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let t = OK.replace("version = \"1\"", "version = \"1");
        let e = parse(&t).expect_err("syntax").to_string();
        assert!(e.starts_with("r/assemble.toml:4:"), "{e}");
    }

    #[test]
    fn from_must_name_a_unit() {
        let t = format!("{OK}\n[units.g]\nfrom = \"ap:pkg\"\n");
        let e = parse(&t).expect_err("bad from").to_string();
        assert!(e.contains("did you mean `app`"), "{e}");
    }

    #[test]
    fn two_sources_rejected() {
        let t = OK.replace("path = \"src\"", "path = \"src\"\nvenv = \"x\"");
        let e = parse(&t).expect_err("two sources").to_string();
        assert!(e.contains("more than one source"), "{e}");
    }
}
