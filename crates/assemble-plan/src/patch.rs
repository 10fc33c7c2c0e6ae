//! Nix's `substitute --replace-*`, and the hint shown when it does not match.

/// Replaces every occurrence of `pattern`, left to right. `None` means "no
/// match" in Nix's sense: the text is unchanged and `pattern != with`.
pub fn substitute(text: &str, pattern: &str, with: &str) -> Option<String> {
    let result = text.replace(pattern, with);
    if result == text && pattern != with {
        None
    } else {
        Some(result)
    }
}

/// The lines of `text` most like `pattern` (1-based line numbers), best
/// first, for the error shown when a pattern is not found: after an
/// upstream bump the line is usually still there, slightly changed.
pub fn closest_lines(text: &str, pattern: &str, n: usize) -> Vec<(usize, String)> {
    let first = pattern
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(pattern)
        .trim();
    let mut scored: Vec<(f64, usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (strsim::normalized_levenshtein(l.trim(), first), i + 1, l))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(n)
        .filter(|(s, _, _)| *s > 0.3)
        .map(|(_, i, l)| (i, l.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_all_occurrences_in_order() {
        assert_eq!(substitute("a b a", "a", "ab").as_deref(), Some("ab b ab"));
        assert_eq!(substitute("abc", "x", "y"), None);
        // Nix does not fail when pattern == replacement, matched or not.
        assert_eq!(substitute("abc", "x", "x").as_deref(), Some("abc"));
    }

    #[test]
    fn closest_line_finds_the_renamed_one() {
        let text =
            "import os\nBASE_DIR = Path(__file__).resolve().parent.parent.parent\nDEBUG = False\n";
        let got = closest_lines(
            text,
            "BASE_DIR = Path(__file__).absolute().parent.parent.parent",
            1,
        );
        assert_eq!(
            got,
            vec![(
                2,
                "BASE_DIR = Path(__file__).resolve().parent.parent.parent".to_string()
            )]
        );
    }
}
