//! Changing a unit's pin in a recipe's text, the rest kept as written
//! (comments, order, spacing): `cargo xtask update`.

/// What a remote source is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Tag(String),
    Rev(String),
}

impl Pin {
    fn key(&self) -> &'static str {
        match self {
            Pin::Tag(_) => "tag",
            Pin::Rev(_) => "rev",
        }
    }

    fn value(&self) -> &str {
        match self {
            Pin::Tag(v) | Pin::Rev(v) => v,
        }
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key(), self.value())
    }
}

/// Why a pin cannot be changed in a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the recipe does not parse as TOML: {0}")]
    Toml(String),
    /// The text has no `[units.NAME]` that writes a `tag` or `rev`.
    #[error("[units.{0}] writes no `tag` or `rev` in this file")]
    NoPin(String),
}

/// `text` with unit `unit`'s `tag` or `rev` replaced by `pin` (the other
/// key removed when the kind changes), and, when given, its `hash` set to
/// `hash`; every other byte kept. Returns the new text and the old pin.
pub fn set_pin(
    text: &str,
    unit: &str,
    pin: &Pin,
    hash: Option<&str>,
) -> Result<(String, Pin), EditError> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Toml(e.to_string()))?;
    let table = doc
        .get_mut("units")
        .and_then(|u| u.get_mut(unit))
        .and_then(|t| t.as_table_like_mut())
        .ok_or_else(|| EditError::NoPin(unit.to_string()))?;
    let old = ["tag", "rev"]
        .iter()
        .find_map(|k| {
            let v = table.get(k)?.as_str()?.to_string();
            Some(if *k == "tag" {
                Pin::Tag(v)
            } else {
                Pin::Rev(v)
            })
        })
        .ok_or_else(|| EditError::NoPin(unit.to_string()))?;
    if old.key() == pin.key() {
        replace_value(table, pin.key(), pin.value());
    } else {
        // The new key, with the old one's comments, at the table's end.
        let item = table
            .remove(old.key())
            .ok_or_else(|| EditError::NoPin(unit.to_string()))?;
        let mut value = toml_edit::Value::from(pin.value());
        if let Some(v) = item.as_value() {
            *value.decor_mut() = v.decor().clone();
        }
        table.insert(pin.key(), toml_edit::Item::Value(value));
    }
    if let Some(hash) = hash {
        replace_value(table, "hash", hash);
    }
    Ok((doc.to_string(), old))
}

/// `key`'s value set to the string `to`, its comments and spacing kept.
fn replace_value(table: &mut dyn toml_edit::TableLike, key: &str, to: &str) {
    let mut value = toml_edit::Value::from(to);
    if let Some(v) = table.get(key).and_then(|i| i.as_value()) {
        *value.decor_mut() = v.decor().clone();
    }
    table.insert(key, toml_edit::Item::Value(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPE: &str = r#"# The recipe.
[units.authentik]
# authentik's source.
github = "goauthentik/authentik"
tag = "version/2026.2.0"   # the release
install = { "authentik" = "@site@/authentik" }

[units.oci]
github = "vsoch/oci-python"
rev = "aaaa"
hash = "sha256-old"  # pinned
"#;

    #[test]
    fn only_the_pin_changes() {
        let (text, old) = set_pin(
            RECIPE,
            "authentik",
            &Pin::Tag("version/2026.2.6".into()),
            None,
        )
        .unwrap();
        assert_eq!(old, Pin::Tag("version/2026.2.0".into()));
        assert_eq!(
            text,
            RECIPE.replace("version/2026.2.0\"", "version/2026.2.6\"")
        );
    }

    #[test]
    fn a_rev_and_its_hash_change_in_place() {
        let (text, old) =
            set_pin(RECIPE, "oci", &Pin::Rev("bbbb".into()), Some("sha256-new")).unwrap();
        assert_eq!(old, Pin::Rev("aaaa".into()));
        assert_eq!(
            text,
            RECIPE
                .replace("rev = \"aaaa\"", "rev = \"bbbb\"")
                .replace("sha256-old", "sha256-new")
        );
    }

    #[test]
    fn a_unit_without_a_pin_here_is_said() {
        let err = set_pin(
            "[units.x]\npath = \"x\"\n",
            "x",
            &Pin::Tag("t".into()),
            None,
        );
        assert_eq!(err, Err(EditError::NoPin("x".into())));
        let err = set_pin(RECIPE, "nothere", &Pin::Tag("t".into()), None);
        assert_eq!(err, Err(EditError::NoPin("nothere".into())));
    }
}
