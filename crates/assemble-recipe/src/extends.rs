//! `extends = "BASE.toml"`: a recipe written as changes to another.
//!
//! The demo, the bench and a packager's variant of the authentik recipe
//! keep the install maps and the patches in one file and change only what
//! differs, usually where the sources come from. The rules, in the order
//! they are applied (the recipe wins over its base, which may itself
//! extend another):
//!
//! | Section | Merge |
//! |---|---|
//! | `[package]`, `[autopatchelf]` | key by key |
//! | `[python]` | key by key; `installer` given replaces the base's `installer-sha256` too |
//! | `[units.NAME]` not in the base | added after the base's units |
//! | `[units.NAME]` in both | key by key; a source key given (`path`, `github`, `pypi`, ...) replaces *all* the base's source keys (`tag`, `hash`, `sha256` with them) |
//!
//! A value is replaced whole (an `install` table, an `executable` list),
//! but for the one list of tables, `[[units.NAME.patch]]`: a recipe's
//! patches follow its base's (one equal to a base's is kept once), unless
//! the unit says `replace-patches = true`. Paths
//! written in a base (`path`, `venv`, `requirements`, `uv-project`,
//! `[autopatchelf]` folders) are relative to the base's own folder. Each
//! file is checked on its own first, so an unknown key is reported at its
//! `file:line:col`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use toml::{Table, Value};

use crate::locate::Place;
use crate::{Location, RawLayer, RecipeError, de_error, line_col};

/// How many files an `extends` chain may hold.
const MAX_DEPTH: usize = 8;

/// The keys that say where a unit's files come from: a recipe that gives
/// one of them replaces every one of them from its base.
const SOURCE_KEYS: &[&str] = &[
    "venv",
    "requirements",
    "uv-project",
    "pypi",
    "sha256",
    "github",
    "rev",
    "tag",
    "url",
    "unpack",
    "git",
    "hash",
    "from",
    "path",
];

/// Unit keys holding a path relative to the recipe that writes them.
const UNIT_PATH_KEYS: &[&str] = &["venv", "requirements", "path"];

/// One file of the chain, checked on its own.
pub(crate) struct Layer {
    pub file: PathBuf,
    pub text: String,
    pub raw: RawLayer,
}

/// The chain, the recipe itself first, then its base, and so on.
pub(crate) struct Chain {
    pub layers: Vec<Layer>,
    /// Every file's sections merged by the rules above.
    pub merged: Table,
    /// For each unit, the layer (index) and span of its table in the first
    /// file that writes it: where its errors point.
    pub units: IndexMap<String, (usize, Range<usize>)>,
    /// For each unit, every key and string value written in its tables,
    /// with where: the recipe's first, then its bases'.
    pub places: IndexMap<String, Vec<Place>>,
}

impl Chain {
    pub fn read(file: &Path, text: &str) -> Result<Chain, RecipeError> {
        let mut layers: Vec<Layer> = Vec::new();
        let mut next = Some((file.to_path_buf(), text.to_string()));
        while let Some((file, text)) = next.take() {
            let raw: RawLayer = crate::from_toml(&file, &text)?;
            if let Some(base) = &raw.extends {
                let at = Location {
                    file: file.clone(),
                    line: crate::find_line(&text, "extends"),
                };
                let invalid = |message: String| RecipeError::Invalid {
                    location: at.clone(),
                    message,
                };
                let dir = file.parent().unwrap_or(Path::new("."));
                let base_file = assemble_fs::normalize(dir, Path::new(base));
                let mut seen = layers.iter().map(|l| &l.file).chain([&file]);
                if seen.any(|f| *f == base_file) {
                    return Err(invalid(format!(
                        "extends = {base:?} makes a cycle: {} extends itself through {}",
                        base_file.display(),
                        file.display()
                    )));
                }
                if layers.len() + 1 >= MAX_DEPTH {
                    return Err(invalid(format!(
                        "extends = {base:?}: a chain of more than {MAX_DEPTH} recipes"
                    )));
                }
                let base_text = crate::read_text(&base_file)
                    .map_err(|e| invalid(format!("extends = {base:?}: {e}")))?;
                next = Some((base_file, base_text));
            }
            layers.push(Layer { file, text, raw });
        }

        let mut units = IndexMap::new();
        let mut places: IndexMap<String, Vec<Place>> = IndexMap::new();
        for (i, layer) in layers.iter().enumerate() {
            for (name, unit) in &layer.raw.units {
                units.entry(name.clone()).or_insert((i, unit.span()));
            }
            crate::locate::unit_places(&layer.file, &layer.text, &mut places);
        }
        // Merged from the deepest base up, paths of the bases made absolute.
        let mut merged = Table::new();
        for (i, layer) in layers.iter().enumerate().rev() {
            let mut table: Table =
                toml::from_str(&layer.text).map_err(|e| de_error(&layer.file, &layer.text, &e))?;
            table.remove("extends");
            if i > 0 {
                rebase(&mut table, &layer.file).map_err(|message| RecipeError::Invalid {
                    location: Location {
                        file: layer.file.clone(),
                        line: None,
                    },
                    message,
                })?;
            }
            merge(&mut merged, table);
        }
        // A unit written first in a base keeps its place; the order of units
        // is the order of the deepest file that has them.
        Ok(Chain {
            layers,
            merged,
            units,
            places,
        })
    }

    /// The location of `span` in layer `layer`.
    pub fn at(&self, layer: usize, span: Range<usize>) -> Location {
        let l = &self.layers[layer];
        Location {
            file: l.file.clone(),
            line: Some(line_col(&l.text, span.start)),
        }
    }

    /// The first line starting with `needle`, in the recipe then its bases.
    pub fn find(&self, needle: &str) -> Location {
        self.layers
            .iter()
            .find_map(|l| {
                crate::find_line(&l.text, needle).map(|line| Location {
                    file: l.file.clone(),
                    line: Some(line),
                })
            })
            .unwrap_or_else(|| Location {
                file: self.layers[0].file.clone(),
                line: None,
            })
    }
}

fn merge(into: &mut Table, over: Table) {
    for (section, value) in over {
        match (section.as_str(), value, into.get_mut(&section)) {
            ("units", Value::Table(units), Some(Value::Table(base))) => {
                for (name, unit) in units {
                    match (unit, base.get_mut(&name)) {
                        (Value::Table(unit), Some(Value::Table(base))) => merge_unit(base, unit),
                        (unit, _) => {
                            base.insert(name, unit);
                        }
                    }
                }
            }
            (_, Value::Table(keys), Some(Value::Table(base))) => {
                if section == "python" && keys.contains_key("installer") {
                    base.remove("installer-sha256");
                }
                base.extend(keys);
            }
            (_, value, _) => {
                into.insert(section, value);
            }
        }
    }
}

fn merge_unit(base: &mut Table, mut over: Table) {
    if over.keys().any(|k| SOURCE_KEYS.contains(&k.as_str())) {
        base.retain(|k, _| !SOURCE_KEYS.contains(&k));
    }
    // A list of tables follows the base's (a variant that adds a patch
    // keeps the base's six), each patch once: a recipe that repeats the
    // base's patches means them once. `replace-patches = true` replaces.
    let replace = over
        .remove("replace-patches")
        .is_some_and(|v| v.as_bool() == Some(true));
    if !replace
        && let Some(Value::Array(theirs)) = base.get("patch")
        && let Some(Value::Array(mine)) = over.get_mut("patch")
    {
        let mut all = theirs.clone();
        for p in mine.drain(..) {
            if !all.contains(&p) {
                all.push(p);
            }
        }
        *mine = all;
    }
    base.extend(over);
}

/// Makes the relative paths a base writes absolute, against its folder.
fn rebase(table: &mut Table, file: &Path) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    let absolute = |v: &mut Value| -> Result<(), String> {
        if let Value::String(s) = v
            && !s.starts_with('/')
        {
            let p = dir.join(&*s);
            *s = p
                .to_str()
                .ok_or_else(|| format!("the folder of {} is not UTF-8", file.display()))?
                .to_string();
        }
        Ok(())
    };
    if let Some(Value::Table(units)) = table.get_mut("units") {
        for (_, unit) in units.iter_mut() {
            let Value::Table(unit) = unit else { continue };
            for key in UNIT_PATH_KEYS {
                if let Some(v) = unit.get_mut(*key) {
                    absolute(v)?;
                }
            }
            // `UNIT:SUBDIR` names a unit; anything else is a path.
            if let Some(v) = unit.get_mut("uv-project")
                && v.as_str().is_some_and(|s| !s.contains(':'))
            {
                absolute(v)?;
            }
        }
    }
    if let Some(Value::Table(a)) = table.get_mut("autopatchelf") {
        for key in ["libs", "runtime-dependencies"] {
            if let Some(Value::Array(list)) = a.get_mut(key) {
                for v in list {
                    absolute(v)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::{Installer, Recipe, Source};

    const BASE: &str = r#"
[package]
name = "base"
version = "1"

[python]
interpreter = "python3.14"
installer = "uv==0.9.5"
installer-sha256 = ["6507bbbcd788553ec4ad5a96fa19364dc0f58b023e31d79868773559a83ec181"]

[units.deps]
venv = "venv"
scripts = ["gunicorn"]

[units.app]
github = "o/app"
tag = "v1"
install = { "app" = "@site@/app" }

[[units.app.patch]]
file = "@site@/app/x.py"
replace = "a"
with = "b"

[autopatchelf]
libs = ["libs"]
"#;

    /// A base in `dir/base/assemble.toml` and a recipe extending it in
    /// `dir/variant/assemble.toml`.
    fn files(variant: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in [
            ("base/assemble.toml", BASE),
            ("variant/assemble.toml", variant),
        ] {
            let p = dir.path().join(rel);
            fs_err::create_dir_all(p.parent().unwrap()).unwrap();
            fs_err::write(&p, text).unwrap();
        }
        let top = dir.path().join("variant/assemble.toml");
        (dir, top)
    }

    /// A variant that adds a patch keeps the base's; one that repeats the
    /// base's patch has it once; `replace-patches = true` replaces them.
    #[test]
    fn patches_follow_the_bases_unless_replaced() {
        let child = |extra: &str| {
            format!(
                "extends = \"../base/assemble.toml\"\n[units.app]\n{extra}\n[[units.app.patch]]\nfile = \"@site@/app/x.py\"\nreplace = \"c\"\nwith = \"d\"\n"
            )
        };
        let replaces = |r: &Recipe| -> Vec<String> {
            r.unit("app")
                .unwrap()
                .patches
                .iter()
                .map(|p| p.replace.clone())
                .collect()
        };
        let (_dir, top) = files(&child(""));
        assert_eq!(replaces(&Recipe::load(&top).unwrap()), ["a", "c"]);
        let repeated = format!(
            "{}[[units.app.patch]]\nfile = \"@site@/app/x.py\"\nreplace = \"a\"\nwith = \"b\"\n",
            child("")
        );
        let (_dir, top) = files(&repeated);
        assert_eq!(replaces(&Recipe::load(&top).unwrap()), ["a", "c"]);
        let (_dir, top) = files(&child("replace-patches = true"));
        assert_eq!(replaces(&Recipe::load(&top).unwrap()), ["c"]);
    }

    #[test]
    fn a_source_replaces_the_bases_source_keys_and_keeps_the_rest() {
        let (dir, top) = files(
            "extends = \"../base/assemble.toml\"\n[package]\nname = \"variant\"\n[units.app]\npath = \"src\"\n[units.extra]\npath = \"x\"\n",
        );
        let r = Recipe::load(&top).unwrap();
        assert_eq!((r.name.as_str(), r.version.as_str()), ("variant", "1"));
        let app = r.unit("app").unwrap();
        // `tag` went with `github`: a path unit with a tag would be refused.
        assert_eq!(
            app.source,
            Source::Path {
                path: dir.path().join("variant/src")
            }
        );
        assert_eq!(app.patches.len(), 1, "the base's patch stays");
        assert_eq!(app.install, [("app".into(), "@site@/app".into())]);
        // The base's own relative paths are the base's folder's.
        assert_eq!(
            r.unit("deps").unwrap().source,
            Source::Venv {
                path: dir.path().join("base/venv")
            }
        );
        assert_eq!(r.autopatchelf.unwrap().libs, [dir.path().join("base/libs")]);
        let names: Vec<_> = r.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["deps", "app", "extra"]);
        assert_eq!(
            r.files,
            [top.clone(), dir.path().join("base/assemble.toml")]
        );
    }

    #[test]
    fn an_installer_given_replaces_the_bases_hashes() {
        let (_dir, top) = files(
            "extends = \"../base/assemble.toml\"\n[python]\ninterpreter = \"python3\"\ninstaller = \"pip\"\n",
        );
        let r = Recipe::load(&top).unwrap();
        assert_eq!(r.installer, Installer::Pip);
        assert_eq!(r.interpreter, "python3");
    }

    #[test]
    fn a_mistake_in_the_base_is_reported_in_the_base() {
        let (dir, top) = files("extends = \"../base/assemble.toml\"\n");
        let base = dir.path().join("base/assemble.toml");
        fs_err::write(&base, BASE.replace("scripts =", "scrpts =")).unwrap();
        let e = Recipe::load(&top).unwrap_err().to_string();
        let line = BASE.lines().position(|l| l.starts_with("scripts")).unwrap() + 1;
        assert!(e.starts_with(&format!("{}:{line}:", base.display())), "{e}");
        assert!(e.contains("did you mean `scripts`"), "{e}");
    }

    #[test]
    fn a_cycle_and_a_missing_base_are_errors_at_the_extends_line() {
        let (dir, top) = files("\nextends = \"../nowhere.toml\"\n");
        let e = Recipe::load(&top).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:", top.display())), "{e}");
        assert!(e.contains("nowhere.toml"), "{e}");

        let base = dir.path().join("base/assemble.toml");
        fs_err::write(
            &base,
            format!("extends = \"../variant/assemble.toml\"\n{BASE}"),
        )
        .unwrap();
        fs_err::write(&top, "extends = \"../base/assemble.toml\"\n").unwrap();
        let e = Recipe::load(&top).unwrap_err().to_string();
        assert!(e.contains("makes a cycle"), "{e}");
    }
}
