//! The recipe's schema: what a file holds (`Raw*`, as serde reads one
//! layer), and what a validated recipe is (`Recipe`, `Unit`, `Source`).

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::{Hash, UnitName};

/// One recipe file as written: every section optional, as a recipe that
/// `extends` another gives only what it changes.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "authentik-assemble recipe (assemble.toml)")]
pub(crate) struct RawLayer {
    pub(crate) extends: Option<String>,
    #[expect(
        dead_code,
        reason = "read for its unknown-key check; merged as a table"
    )]
    pub(crate) package: Option<RawPackage>,
    #[expect(
        dead_code,
        reason = "read for its unknown-key check; merged as a table"
    )]
    pub(crate) python: Option<RawPython>,
    #[serde(default)]
    #[schemars(with = "IndexMap<String, RawUnit>")]
    pub(crate) units: IndexMap<String, toml::Spanned<RawUnit>>,
    #[expect(
        dead_code,
        reason = "read for its unknown-key check; merged as a table"
    )]
    pub(crate) autopatchelf: Option<RawAutopatchelf>,
}

/// The recipe after its `extends` chain is merged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecipe {
    #[serde(default)]
    pub(crate) package: RawPackage,
    #[serde(default)]
    pub(crate) python: RawPython,
    #[serde(default)]
    pub(crate) units: IndexMap<String, RawUnit>,
    pub(crate) autopatchelf: Option<RawAutopatchelf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
/// `[autopatchelf]`: runpaths set as Nix's autoPatchelfHook sets them.
pub(crate) struct RawAutopatchelf {
    /// Library folders (Nix's buildInputs).
    #[serde(default)]
    pub(crate) libs: Vec<String>,
    /// Sonames (globs) that may stay unresolved, with a warning.
    #[serde(default)]
    pub(crate) ignore_missing: Vec<String>,
    /// Folders added to every executable's runpath.
    #[serde(default)]
    pub(crate) runtime_dependencies: Vec<String>,
    /// The interpreter of every dynamic executable, when set.
    pub(crate) dynamic_linker: Option<String>,
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

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
/// `[package]`: what the tree is.
pub(crate) struct RawPackage {
    /// The package's name: the default output's folder name.
    pub(crate) name: Option<String>,
    /// Its version (reported, and in an image's labels).
    pub(crate) version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
/// `[python]`: the interpreter the tree runs on, and what builds venvs.
pub(crate) struct RawPython {
    /// A name on PATH (`python3.14`) or a path; `--python` overrides it.
    pub(crate) interpreter: Option<String>,
    /// `pip` (the default) or `uv==VERSION`, bootstrapped from its wheel.
    pub(crate) installer: Option<String>,
    /// A `.pyc` for every `.py` of the tree (hash-based, checked).
    pub(crate) compile_bytecode: Option<bool>,
    /// The sha256 of uv's wheel, one per platform.
    #[serde(default)]
    pub(crate) installer_sha256: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
/// `[units.NAME]`: one source input, and how its files enter the tree.
/// Exactly one source key: `venv`, `requirements`, `uv-project`, `pypi`,
/// `github`, `url`, `git`, `from` or `path`.
pub(crate) struct RawUnit {
    /// An existing virtualenv (a folder).
    pub(crate) venv: Option<String>,
    /// A requirements file: a venv built from it into the cache.
    pub(crate) requirements: Option<String>,
    /// A uv project (a folder, or `UNIT:SUBDIR`): a venv synced from its
    /// uv.lock into the cache.
    pub(crate) uv_project: Option<String>,
    /// An sdist from the package index (`NAME==VERSION`), with `sha256`.
    pub(crate) pypi: Option<String>,
    /// The sha256 of a `pypi` sdist (hex).
    pub(crate) sha256: Option<String>,
    /// `OWNER/REPO` on GitHub, at `rev` or `tag`, checked by `hash` (or
    /// assemble.lock).
    pub(crate) github: Option<String>,
    /// A commit (`github`, `git`).
    pub(crate) rev: Option<String>,
    /// A tag (`github`).
    pub(crate) tag: Option<String>,
    /// An archive (unpacked, NAR `hash`) or, with `unpack = false`, one
    /// file (flat `hash`).
    pub(crate) url: Option<String>,
    /// Whether a `url` is an archive to unpack (default true).
    pub(crate) unpack: Option<bool>,
    /// A git repository, at `rev`.
    pub(crate) git: Option<String>,
    /// The SRI hash (`sha256-...`) a remote source is checked against.
    pub(crate) hash: Option<String>,
    /// A sub-folder of another unit's source: `UNIT:SUBDIR`.
    pub(crate) from: Option<String>,
    /// A local folder.
    pub(crate) path: Option<String>,
    /// A venv unit's console scripts that get a launcher in `bin/`.
    pub(crate) scripts: Option<Vec<String>>,
    /// Distributions a venv unit leaves out (another unit provides them).
    #[serde(default)]
    pub(crate) exclude: Vec<String>,
    /// Source path -> output path (variables allowed: `@site@`, `@out@`).
    #[serde(default)]
    pub(crate) install: IndexMap<String, String>,
    /// Output paths to mark executable.
    #[serde(default)]
    pub(crate) executable: Vec<String>,
    /// Output path of a link -> the output path it points at.
    #[serde(default)]
    pub(crate) symlinks: IndexMap<String, String>,
    /// Text replacements in installed files (Nix's `substitute`), in
    /// order; in a recipe that `extends` another, after the base's.
    #[serde(default)]
    pub(crate) patch: Vec<Patch>,
    /// In a recipe that `extends` another: this unit's `patch` list
    /// replaces the base's instead of following it.
    #[serde(default)]
    pub(crate) replace_patches: bool,
}

/// What a patch does when its pattern is not in the file.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Patch {
    /// Output path of the file to patch (variables allowed).
    pub file: String,
    /// The text to replace (every occurrence).
    pub replace: String,
    /// What replaces it (variables allowed: `@out@`, `@bash@`, `@webui@`).
    pub with: String,
    /// When the text is not there: `fail` (the default), `warn` or `quiet`.
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
    /// Each unit's keys and string values, where parsing found them.
    pub(crate) places: IndexMap<String, Vec<crate::locate::Place>>,
    /// Each unit's table header, in the first file that writes it.
    pub(crate) unit_tables: IndexMap<String, crate::Location>,
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
        unit: UnitName,
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
    From { unit: UnitName, subdir: String },
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

/// Which `bin/` entries a venv unit provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripts {
    All,
    Named(Vec<String>),
}

/// A unit: one source input and what it installs.
#[derive(Debug, Clone)]
pub struct Unit {
    pub name: UnitName,
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

/// The JSON Schema of a recipe file, generated from the types that read
/// one (`RawLayer`): what editors check `assemble.toml` against (taplo and
/// the TOML plugins that read a `#:schema` line). `cargo xtask schema`
/// prints it; `assemble.schema.json` is it, checked by a test.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawLayer);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
