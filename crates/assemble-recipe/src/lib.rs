//! The recipe: a TOML file that declares the deployment tree as a set of units.
//!
//! This crate reads and validates the file; it does no other I/O. Every error
//! carries the recipe's path and, where the file has one, a `line:col`
//! location, so that the CLI can print `assemble.toml:12:1: ...`.
//!
//! The schema (keys are the contract; docs/recipe.md is the full reference):
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

pub mod edit;
mod error;
mod extends;
mod locate;
mod parse;
mod schema;
mod vars;

pub use assemble_manifest::UnitName;
pub use assemble_nar::Hash;

pub(crate) use error::did_you_mean;
pub use error::{Location, RecipeError};
pub use locate::suggest;
pub(crate) use locate::{de_error, find_line, from_toml, line_col};
pub use parse::read_text;
pub(crate) use schema::RawLayer;
pub use schema::{
    Autopatchelf, Installer, OnMissing, Patch, Project, Recipe, Remote, Scripts, Source, Unit,
    json_schema,
};
pub use vars::{Vars, VarsError};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

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

    /// A mistake found after parsing is placed where parsing found the
    /// value: not at a comment, nor at the same text in another unit.
    #[test]
    fn a_later_mistake_is_placed_at_the_parsed_value() {
        let t = OK
            .replace("[units.deps]", "# scripts = [\"gunicorn\"]\n[units.deps]")
            .replace("[units.app]", "[units.app]\n# @site@/app/x.py");
        let r = parse(&t).expect("valid recipe");
        let line = |needle: &str| t.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
        let at = |unit: &str, written: &str| r.locate(unit, written).line;
        assert_eq!(at("deps", "gunicorn"), Some((line("scripts ="), 12)));
        assert_eq!(at("app", "@site@/app/x.py"), Some((line("file ="), 8)));
        // Not written in the unit: its table.
        assert_eq!(
            at("deps", "@site@/app/x.py"),
            Some((line("[units.deps]"), 1))
        );
    }

    /// A github pin names paths (in URLs, in a `vendor --mirror` folder):
    /// one that would climb out, or is not a git ref name, is refused.
    #[test]
    fn a_github_pin_names_no_path_outside() {
        let with = |source: &str| {
            OK.replace(
                "path = \"src\"",
                &format!(
                    "{source}\nhash = \"sha256-Q6SJed0K6eIrqQ9mNAD4RGx+YCJvnI5E+0KGp5fBtTU=\""
                ),
            )
        };
        for bad in [
            "github = \"../x\"\nrev = \"a\"",
            "github = \"o/..\"\nrev = \"a\"",
            "github = \"o/r\"\ntag = \"../../etc/x\"",
            "github = \"o/r\"\ntag = \"/etc/x\"",
            "github = \"o/r\"\nrev = \"a b\"",
        ] {
            assert!(parse(&with(bad)).is_err(), "accepted: {bad}");
        }
        for good in [
            "github = \"goauthentik/authentik\"\ntag = \"version/2026.2.0\"",
            "github = \"vsoch/oci-python\"\nrev = \"ceb4fcc090851717a3069d78e85ceb1e86c2740c\"",
        ] {
            assert!(parse(&with(good)).is_ok(), "refused: {good}");
        }
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
