//! A recipe's errors, each naming the recipe file and, where it has one,
//! the `line:col`.

use std::fmt;
use std::path::PathBuf;

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

pub(crate) fn in_table(table: &Option<String>) -> String {
    table
        .as_ref()
        .map(|t| format!(" in {t}"))
        .unwrap_or_default()
}

pub(crate) fn did_you_mean(s: &Option<String>) -> String {
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
