//! `@name@` variables, substituted the way Nix's `substitute` does: each known
//! name everywhere it occurs, anything else left verbatim.

/// The values of the recipe's variables for one assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    /// `@out@`: the runtime prefix.
    pub out: String,
    /// `@site@`: `lib/pythonX.Y/site-packages`, relative to the output root.
    pub site: String,
    /// `@python@`: the interpreter's path.
    pub python: String,
    /// `@bash@`: bash's path.
    pub bash: String,
    /// `@webui@`: the web UI path; when `None` the placeholder stays, as in the seed.
    pub webui: Option<String>,
}

/// An output path that still holds a variable after expansion.
#[derive(Debug, Clone, thiserror::Error)]
#[error("output path {path:?} uses `@{name}@`, which {why}")]
pub struct VarsError {
    pub path: String,
    pub name: String,
    pub why: &'static str,
}

const NAMES: [&str; 5] = ["out", "site", "python", "bash", "webui"];

impl Vars {
    fn value(&self, name: &str) -> Option<&str> {
        match name {
            "out" => Some(&self.out),
            "site" => Some(&self.site),
            "python" => Some(&self.python),
            "bash" => Some(&self.bash),
            "webui" => self.webui.as_deref(),
            _ => None,
        }
    }

    /// Substitutes every known, set variable in `text`.
    pub fn expand(&self, text: &str) -> String {
        let mut s = text.to_string();
        for n in NAMES {
            if let Some(v) = self.value(n) {
                s = s.replace(&format!("@{n}@"), v);
            }
        }
        s
    }

    /// Expands an output path (relative to the output root); a variable left
    /// over is an error, since it would create a file literally named `@x@`.
    pub fn expand_path(&self, path: &str) -> Result<String, VarsError> {
        let s = self.expand(path);
        if let Some(name) = leftover(&s) {
            let why = if NAMES.contains(&name.as_str()) {
                "is not set for this build (pass --webui)"
            } else {
                "is not a variable (known: @out@, @site@, @python@, @bash@, @webui@)"
            };
            return Err(VarsError {
                path: path.to_string(),
                name,
                why,
            });
        }
        Ok(s.trim_end_matches('/').to_string())
    }
}

fn leftover(s: &str) -> Option<String> {
    let mut parts = s.split('@');
    parts.next();
    let mut prev_open = true;
    for p in parts {
        if prev_open
            && !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && s.contains(&format!("@{p}@"))
        {
            return Some(p.to_string());
        }
        prev_open = !prev_open;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            out: "/opt/ak".into(),
            site: "lib/python3.11/site-packages".into(),
            python: "/usr/bin/python3.11".into(),
            bash: "/bin/bash".into(),
            webui: None,
        }
    }

    #[test]
    fn expands_known_and_keeps_webui() {
        let v = vars();
        assert_eq!(
            v.expand("Path(\"@out@\") @webui@/x @other@"),
            "Path(\"/opt/ak\") @webui@/x @other@"
        );
        assert_eq!(
            v.expand_path("@site@/authentik/").expect("expands"),
            "lib/python3.11/site-packages/authentik"
        );
    }

    #[test]
    fn leftover_in_path_is_an_error() {
        let e = vars().expand_path("@sit@/x").expect_err("typo");
        assert_eq!(e.name, "sit");
        let e = vars().expand_path("@webui@/x").expect_err("unset");
        assert!(e.to_string().contains("--webui"));
    }
}
