//! Where in the recipe's files a mistake is written: positions from a
//! TOML error's span, or from the places parsing found a unit's table and
//! each key and string value in it (`Recipe::locate`); "did you mean";
//! and every unknown key of a file in one run (`from_toml`).

use std::path::Path;

use indexmap::IndexMap;

use crate::schema::{Recipe, Unit};
use crate::{Location, RecipeError};

impl Recipe {
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }

    /// What to say when a flag names `name` and it is no unit of this
    /// recipe: the recipe's file, and the unit meant when one is close.
    pub fn no_unit_named(&self, name: &str) -> String {
        let all: Vec<&str> = self.units.iter().map(|u| u.name.as_str()).collect();
        let hint = suggest(name, &all)
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_else(|| format!(" (its units: {})", all.join(", ")));
        format!("{name} is no unit of {}{hint}", self.file.display())
    }

    /// A recipe mistake found after parsing (while planning): `message`
    /// at the first place `written` (a key, or a string value, as the
    /// recipe writes it) is in unit `unit`'s tables, or at the unit's
    /// table when it is not there.
    pub fn error_at(&self, unit: &str, written: &str, message: String) -> RecipeError {
        RecipeError::Invalid {
            location: self.locate(unit, written),
            message: format!("unit {unit}: {message}"),
        }
    }

    /// Where `written` (a key, or a string value) first stands in unit
    /// `unit`'s tables, as parsing found them: in the recipe, then in the
    /// files it extends.
    pub fn locate(&self, unit: &str, written: &str) -> Location {
        self.places
            .get(unit)
            .and_then(|places| places.iter().find(|p| p.text == written))
            .map(|p| p.location.clone())
            .unwrap_or_else(|| self.unit_location(unit))
    }

    /// The location of a unit's table, for errors found after parsing: in
    /// the first file of the chain that writes it.
    pub fn unit_location(&self, name: &str) -> Location {
        self.unit_tables
            .get(name)
            .cloned()
            .unwrap_or_else(|| Location {
                file: self.file.clone(),
                line: None,
            })
    }
}

/// The entry of `places` that holds the `[python]` table's (a unit's
/// name cannot hold a newline).
const PYTHON: &str = "\n[python]";

impl Recipe {
    /// Where the `[python]` table's `key` is written: in the recipe, else
    /// in the first file it extends that writes it.
    pub fn python_location(&self, key: &str) -> Location {
        self.places
            .get(PYTHON)
            .and_then(|places| places.iter().find(|p| p.text == key))
            .map(|p| p.location.clone())
            .unwrap_or_else(|| Location {
                file: self.file.clone(),
                line: None,
            })
    }
}

/// A key or a string value written in a unit's tables, and where.
#[derive(Debug, Clone)]
pub struct Place {
    pub text: String,
    pub location: Location,
}

/// Adds to `places` every key and string value of each unit's tables in
/// `text` (the file `file`), in the order written. A text that does not
/// parse adds nothing (parsing it as a recipe reports why).
pub(crate) fn unit_places(file: &Path, text: &str, places: &mut IndexMap<String, Vec<Place>>) {
    use toml::de::DeValue;
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return;
    };
    let at = |span: std::ops::Range<usize>| Location {
        file: file.to_path_buf(),
        line: Some(line_col(text, span.start)),
    };
    if let Some(python) = doc.get_ref().get("python") {
        collect(python, &at, places.entry(PYTHON.to_string()).or_default());
    }
    let Some(DeValue::Table(units)) = doc.get_ref().get("units").map(|v| v.get_ref()) else {
        return;
    };
    for (name, unit) in units.iter() {
        let list = places.entry(name.get_ref().to_string()).or_default();
        collect(unit, &at, list);
    }
}

/// The keys and string values in `value`, depth first.
fn collect(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    at: &dyn Fn(std::ops::Range<usize>) -> Location,
    out: &mut Vec<Place>,
) {
    use toml::de::DeValue;
    match value.get_ref() {
        DeValue::String(s) => out.push(Place {
            text: s.to_string(),
            location: at(value.span()),
        }),
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                out.push(Place {
                    text: k.get_ref().to_string(),
                    location: at(k.span()),
                });
                collect(v, at, out);
            }
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                collect(item, at, out);
            }
        }
        _ => {}
    }
}

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

pub(crate) fn find_line(text: &str, needle: &str) -> Option<(usize, usize)> {
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
pub(crate) fn find_entry(
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
pub(crate) fn entry_ranges(
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

pub(crate) fn de_error(file: &Path, text: &str, e: &toml::de::Error) -> RecipeError {
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
pub(crate) fn enclosing_table(text: &str, offset: usize) -> Option<String> {
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
