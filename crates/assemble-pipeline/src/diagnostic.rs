//! A failed run as data: what `--json` prints instead of the report.

use std::path::PathBuf;

use assemble_recipe::{RecipeError, UnitName};

use crate::Error;

/// What failed, for `--json` (kebab-case there). The failure kinds table
/// of docs/json.md lists each (a test holds them equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The recipe is malformed (parsing it, or a mistake planning finds).
    Recipe,
    /// A flag's value cannot be used.
    Usage,
    /// The interpreter cannot be found or probed.
    Interpreter,
    /// `--offline`, and inputs the cache and vendor/ lack.
    Offline,
    /// A path the recipe names is not there.
    MissingPath,
    /// A path inside a source leads out of it through a link.
    Link,
    /// Two units produce one output path.
    Conflict,
    /// A patch's pattern is not in its file.
    Patch,
    /// Something about one unit's files (a script name, a non-UTF-8 link).
    Unit,
    /// An installer or the interpreter failed (a venv build, a compile).
    Python,
    /// A download, a checkout, a hash mismatch, an unsafe archive.
    Fetch,
    /// An ELF file cannot be read or patched.
    Elf,
    /// A cache entry is corrupt and cannot be discarded.
    Cache,
    /// An output path breaks the rules of output paths.
    OutputPath,
    /// Reading an input failed.
    Io,
    /// Reading or writing the output failed.
    Output,
    /// The output or the manifest breaks a rule (not owned, ...).
    Refused,
    /// `assemble.lock` cannot be read, or lacks an entry `--locked` needs.
    Lock,
    /// Another run holds the output (`--no-wait`).
    Busy,
    /// A program the run needs is missing (bash).
    MissingTool,
    /// The shared cache (`--cache-registry-required`) failed, or held an
    /// entry that was refused.
    CacheRegistry,
    /// Any other failure (of a command other than `assemble` and `plan`).
    Error,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 22] = [
        FailureKind::Recipe,
        FailureKind::Usage,
        FailureKind::Interpreter,
        FailureKind::Offline,
        FailureKind::MissingPath,
        FailureKind::Link,
        FailureKind::Conflict,
        FailureKind::Patch,
        FailureKind::Unit,
        FailureKind::Python,
        FailureKind::Fetch,
        FailureKind::Elf,
        FailureKind::Cache,
        FailureKind::OutputPath,
        FailureKind::Io,
        FailureKind::Output,
        FailureKind::Refused,
        FailureKind::Lock,
        FailureKind::Busy,
        FailureKind::MissingTool,
        FailureKind::CacheRegistry,
        FailureKind::Error,
    ];

    /// The name `--json` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Recipe => "recipe",
            FailureKind::Usage => "usage",
            FailureKind::Interpreter => "interpreter",
            FailureKind::Offline => "offline",
            FailureKind::MissingPath => "missing-path",
            FailureKind::Link => "link",
            FailureKind::Conflict => "conflict",
            FailureKind::Patch => "patch",
            FailureKind::Unit => "unit",
            FailureKind::Python => "python",
            FailureKind::Fetch => "fetch",
            FailureKind::Elf => "elf",
            FailureKind::Cache => "cache",
            FailureKind::OutputPath => "output-path",
            FailureKind::Io => "io",
            FailureKind::Output => "output",
            FailureKind::Refused => "refused",
            FailureKind::Lock => "lock",
            FailureKind::Busy => "busy",
            FailureKind::MissingTool => "missing-tool",
            FailureKind::CacheRegistry => "cache-registry",
            FailureKind::Error => "error",
        }
    }
}

const CORRUPT_HINT: &str = "remove the entry (and its .seal) and assemble again: it was corrupt right after it was made, or it lies outside the cache's own folder, where the tool deletes nothing; `cargo xtask verify --cache` lists what is corrupt";

/// A failure as data: what `--json` prints instead of the report. Which
/// fields are set depends on the kind; `message` always is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// What failed.
    pub kind: FailureKind,
    /// The recipe unit at fault, when one is.
    pub unit: Option<UnitName>,
    /// The file at fault (the recipe, for a recipe error), when one is.
    pub file: Option<PathBuf>,
    /// 1-based line and column in `file`, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// What went wrong, without the place or the hint.
    pub message: String,
    /// What to do about it, when the tool knows.
    pub hint: Option<String>,
    /// More than the message says (every folder looked in, a build log's
    /// tail): printed under `-v` in text.
    pub detail: Option<String>,
    /// The other mistakes found in the same run (a recipe's unknown keys
    /// are all reported at once), each as this one is.
    pub related: Vec<Diagnostic>,
}

impl Error {
    /// This failure as data (see [`Diagnostic`]).
    pub fn diagnostic(&self) -> Diagnostic {
        let plain = |kind| Diagnostic::new(kind, self.to_string());
        match self {
            Error::Recipe(r) => Diagnostic::of_recipe(r),
            Error::Option { .. } | Error::InterpreterPath(_) => plain(FailureKind::Usage),
            Error::InSource {
                unit, source_dir, ..
            } => Diagnostic {
                unit: Some(unit.clone()),
                file: Some(source_dir.clone()),
                hint: Some(
                    "choose --out, --state-dir and --cache-dir outside every unit's source".into(),
                ),
                ..plain(FailureKind::Usage)
            },
            Error::Interpreter {
                recipe_line,
                source,
            } => {
                let not_found = match source {
                    assemble_install::Error::InterpreterNotFound(nf) => Some(nf),
                    _ => None,
                };
                let line = recipe_line.as_ref().and_then(|at| at.line);
                Diagnostic {
                    file: recipe_line.as_ref().map(|at| at.file.clone()),
                    line: line.map(|(l, _)| l),
                    column: line.map(|(_, c)| c),
                    hint: not_found.map(|nf| nf.hint()),
                    detail: not_found.map(|nf| format!("looked {}", nf.detail)),
                    ..plain(FailureKind::Interpreter)
                }
            }
            Error::NoBash => Diagnostic {
                hint: Some("install bash".into()),
                ..plain(FailureKind::MissingTool)
            },
            Error::Plan(p) => plan_diagnostic(p),
            Error::Inputs { recipe, .. } => Diagnostic {
                file: Some(recipe.clone()),
                ..plain(FailureKind::Io)
            },
            Error::ReadOutput { .. } | Error::Write { .. } => plain(FailureKind::Output),
            Error::Refused(_) => plain(FailureKind::Refused),
            Error::Sources(e) => sources_diagnostic(e),
            Error::Cache { entry, .. } => Diagnostic {
                file: Some(entry.clone()),
                hint: Some("remove it by hand, then assemble again".into()),
                ..plain(FailureKind::Cache)
            },
            Error::Busy { .. } => Diagnostic {
                hint: Some("wait for the other run, or leave out --no-wait".into()),
                ..plain(FailureKind::Busy)
            },
        }
    }
}

impl Diagnostic {
    /// A recipe error, at its place; several, the first with the others
    /// as `related`.
    pub fn of_recipe(r: &RecipeError) -> Diagnostic {
        let one = |r: &RecipeError| {
            let location = r.location();
            Diagnostic {
                kind: FailureKind::Recipe,
                unit: None,
                file: location.map(|l| l.file.clone()),
                line: location.and_then(|l| l.line).map(|(l, _)| l),
                column: location.and_then(|l| l.line).map(|(_, c)| c),
                message: r.detail(),
                hint: r.hint(),
                detail: None,
                related: Vec::new(),
            }
        };
        match r.each().split_first() {
            Some((head, rest)) => Diagnostic {
                related: rest.iter().map(|r| one(r)).collect(),
                ..one(head)
            },
            None => one(r),
        }
    }
}

fn plan_diagnostic(p: &assemble_plan::Error) -> Diagnostic {
    use assemble_plan::Error as P;
    if let P::PatchesNotFound(misses) = p {
        // The first, with the others as `related`.
        let mut each = misses
            .iter()
            .map(|m| plan_diagnostic(&P::PatchNotFound(Box::new(m.clone()))));
        if let Some(first) = each.next() {
            return Diagnostic {
                related: each.collect(),
                ..first
            };
        }
    }
    let (kind, unit) = match p {
        P::MissingPath { unit, .. } => (FailureKind::MissingPath, Some(unit)),
        P::LinkOutside { unit, .. } => (FailureKind::Link, Some(unit)),
        P::Conflict { .. } => (FailureKind::Conflict, None),
        P::PatchNotFound(m) => (FailureKind::Patch, Some(&m.unit)),
        P::PatchesNotFound(_) => (FailureKind::Patch, None),
        P::Recipe(r) => return Diagnostic::of_recipe(r),
        P::Unit { unit, .. } => (FailureKind::Unit, Some(unit)),
        P::Python { unit, .. } => (FailureKind::Python, Some(unit)),
        P::Make { .. } => (FailureKind::Python, None),
        P::Elf(_) => (FailureKind::Elf, None),
        P::Shared(_) => (FailureKind::CacheRegistry, None),
        P::Corrupt(_) => (FailureKind::Cache, None),
        P::BadPath { unit, .. } => (FailureKind::OutputPath, Some(unit)),
        P::Io(_) => (FailureKind::Io, None),
    };
    let hint = match p {
        P::MissingPath { .. } => Some("fix the path in the recipe".to_string()),
        P::Conflict { fix, .. } => Some(fix.clone()),
        P::Shared(_) => Some(SHARED_HINT.to_string()),
        _ if p.corrupt().is_some() => Some(CORRUPT_HINT.to_string()),
        _ => None,
    };
    let file = match p {
        P::PatchNotFound(m) => Some(m.source_file.clone()),
        P::MissingPath { path, .. } => Some(path.clone()),
        P::LinkOutside { root, escape, .. } => match &**escape {
            assemble_fs::Escape::Link { link, .. } => Some(root.join(link)),
            _ => Some(root.clone()),
        },
        _ => None,
    };
    Diagnostic {
        kind,
        unit: unit.cloned(),
        file,
        line: None,
        column: None,
        message: p.to_string(),
        hint,
        detail: None,
        related: Vec::new(),
    }
}

impl Diagnostic {
    /// A diagnostic of `kind` saying `message`, nothing else known.
    pub fn new(kind: FailureKind, message: String) -> Diagnostic {
        Diagnostic {
            kind,
            unit: None,
            file: None,
            line: None,
            column: None,
            message,
            hint: None,
            detail: None,
            related: Vec::new(),
        }
    }
}

/// What to do when a required shared cache fails.
const SHARED_HINT: &str = "the registry is required (--cache-registry-required): fix what it says, or leave the flag out to build here whatever the registry lacks, refuses or cannot give; docs/deploying.md, Sharing builds";

fn sources_diagnostic(e: &assemble_sources::Error) -> Diagnostic {
    use assemble_sources::Error as S;
    let message = e.to_string();
    match e {
        S::Plan(p) => plan_diagnostic(p),
        S::Offline(all) => {
            // The first missing input, with the others as `related`.
            let mut each = all.iter().map(sources_diagnostic);
            let first = each
                .next()
                .unwrap_or_else(|| Diagnostic::new(FailureKind::Offline, message));
            Diagnostic {
                related: each.collect(),
                ..first
            }
        }
        S::Python { unit, .. } | S::Fetch { unit, .. } if e.is_offline_miss() => Diagnostic {
            unit: Some(unit.clone()),
            hint: Some(
                "run once without --offline, or `cargo xtask vendor` where the network is: it keeps the remote sources and every file the venvs are installed from beside the recipe, for builds with no network".into(),
            ),
            ..Diagnostic::new(FailureKind::Offline, message)
        },
        _ if e.corrupt().is_some() => Diagnostic {
            hint: Some(CORRUPT_HINT.into()),
            ..Diagnostic::new(FailureKind::Cache, message)
        },
        S::Python { unit, .. } | S::Fetch { unit, .. } if e.shared().is_some() => Diagnostic {
            unit: Some(unit.clone()),
            hint: Some(SHARED_HINT.into()),
            ..Diagnostic::new(FailureKind::CacheRegistry, message)
        },
        S::Python { unit, source } => {
            let build = match source {
                assemble_install::Error::SourceBuild(b) => Some(b),
                _ => None,
            };
            Diagnostic {
                unit: Some(unit.clone()),
                hint: build.map(|b| match b.missing {
                    Some((_, package)) => format!("apt-get install {package}, then assemble again; docs/authentik.md lists what a real build needs"),
                    None => "the build log's tail is under -v; docs/authentik.md lists the system packages a real build needs".to_string(),
                }),
                detail: build.map(|b| format!("the build log ends:\n{}", b.tail)),
                ..Diagnostic::new(FailureKind::Python, message)
            }
        }
        S::Fetch { unit, source } => Diagnostic {
            unit: Some(unit.clone()),
            hint: source.hint(),
            ..Diagnostic::new(FailureKind::Fetch, message)
        },
        S::Update { .. } => Diagnostic::new(FailureKind::Usage, format!("--update {message}")),
        S::Lock { recipe, .. } => Diagnostic {
            file: Some(recipe.with_file_name("assemble.lock")),
            ..Diagnostic::new(FailureKind::Lock, message)
        },
        S::Locked { unit, lock, why } => Diagnostic {
            unit: Some(unit.clone()),
            file: Some(lock.clone()),
            hint: Some("run `cargo xtask lock` (online), then assemble again".into()),
            ..Diagnostic::new(FailureKind::Lock, format!("{} {why}", lock.display()))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::FailureKind;

    #[test]
    fn each_kind_is_named_in_json_as_as_str_says() {
        for k in FailureKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    /// The table of failure kinds in docs/json.md lists every kind
    /// `--json` can print, and no other.
    #[test]
    fn the_docs_list_every_failure_kind_and_no_other() {
        let doc = include_str!("../../../docs/json.md");
        let table = doc
            .split_once("**Failure kinds**")
            .expect("docs/json.md: a **Failure kinds** table")
            .1;
        let listed: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.strip_prefix("| `")?.split_once('`'))
            .map(|(kind, _)| kind)
            .collect();
        let kinds: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(listed, kinds);
    }
}
