//! What an output path may be: relative, `/`-separated, with no empty, `.`
//! or `..` component, no NUL, every name at most [`NAME_MAX`] bytes, and
//! none of the tool's reserved names (its temporary files). The desired
//! manifest is keyed by [`OutPath`], which only a string that passes
//! [`check`] becomes (after variable expansion); a path read from a state
//! file passes it where the run would act on it (pending and stale paths).
//!
//! The check gives clear errors before anything is written; confinement does
//! not rest on it: the writer resolves every path beneath the output's root
//! without following links (see `root`), whatever the string holds.

/// The longest name a Linux file system takes.
pub const NAME_MAX: usize = 255;

/// The names of the tool's temporary files in the output start with this:
/// `.assemble-tmp-` and 16 hex digits, whatever the length of the name they
/// stand for.
pub const TEMP_PREFIX: &str = ".assemble-tmp-";

/// Why a string is not an output path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("output path {0:?} is empty")]
    Empty(String),
    #[error("output path {0:?} is absolute; output paths are relative to the output root")]
    Absolute(String),
    #[error(
        "output path {0:?} has an empty, `.` or `..` component; write it as a plain relative path"
    )]
    Component(String),
    #[error("output path {0:?} holds a NUL byte")]
    Nul(String),
    #[error("output path {path:?} has a name of {len} bytes; names are at most {NAME_MAX}")]
    TooLong { path: String, len: usize },
    #[error(
        "output path {0:?} uses a name reserved for the tool's temporary files ({TEMP_PREFIX}...)"
    )]
    Reserved(String),
}

/// A path of the output: relative, `/`-separated, every component a plain
/// name (see [`check`]). Made only by [`OutPath::new`], so a manifest keyed
/// by it cannot hold anything else; it reads as a `&str` (and looks up as
/// one in a map).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutPath(String);

impl OutPath {
    /// `path`, if it is a plain relative output path.
    pub fn new(path: impl Into<String>) -> Result<OutPath, PathError> {
        let path = path.into();
        check(&path)?;
        Ok(OutPath(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Each path of `batch` with its value, all checked on every core, in
    /// place (no copy of the batch); or the first bad one's error and value.
    pub fn new_all<T: Sync>(
        mut batch: Vec<(String, T)>,
    ) -> Result<Vec<(OutPath, T)>, (PathError, T)> {
        use rayon::prelude::*;
        let bad = batch
            .par_iter()
            .enumerate()
            .find_map_first(|(i, (p, _))| check(p).err().map(|e| (i, e)));
        if let Some((i, e)) = bad {
            let (_, t) = batch.swap_remove(i);
            return Err((e, t));
        }
        Ok(batch.into_iter().map(|(p, t)| (OutPath(p), t)).collect())
    }
}

impl std::ops::Deref for OutPath {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for OutPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OutPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for OutPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl From<OutPath> for String {
    fn from(p: OutPath) -> String {
        p.0
    }
}

/// Checks that `path` is a plain relative output path. It runs on every
/// path of the manifest and of the state, every run: kept to a byte scan.
pub fn check(path: &str) -> Result<(), PathError> {
    let b = path.as_bytes();
    match b.first() {
        None => return Err(PathError::Empty(path.to_string())),
        Some(b'/') => return Err(PathError::Absolute(path.to_string())),
        Some(_) => {}
    }
    // `contains` and `split` on bytes search with memchr.
    if b.contains(&0) {
        return Err(PathError::Nul(path.to_string()));
    }
    b.split(|c| *c == b'/').try_for_each(|c| component(path, c))
}

/// One component of `path`.
fn component(path: &str, c: &[u8]) -> Result<(), PathError> {
    if c.is_empty() || c == b"." || c == b".." {
        return Err(PathError::Component(path.to_string()));
    }
    if c.len() > NAME_MAX {
        return Err(PathError::TooLong {
            path: path.to_string(),
            len: c.len(),
        });
    }
    // Every temporary name starts with a dot: one comparison for most names.
    if c[0] == b'.' && c.starts_with(TEMP_PREFIX.as_bytes()) {
        return Err(PathError::Reserved(path.to_string()));
    }
    Ok(())
}

/// The temporary name a file `name` is written under before it is renamed
/// into place: fixed length, so any valid name has one.
pub fn temp_name(name: &[u8]) -> String {
    let h = crate::Sha256::of(name);
    format!("{TEMP_PREFIX}{}", &h.hex()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the spellings that once escaped or broke the output.
    #[test]
    fn refuses_what_is_not_a_plain_relative_path() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            ".",
            "./y.py",
            "./.assemble/state.bin",
            "d//y.py",
            "d/",
            "a\0b",
            ".assemble-tmp-0123456789abcdef",
        ] {
            assert!(check(bad).is_err(), "{bad:?} passed");
        }
        let long = "x".repeat(256);
        assert!(matches!(
            check(&long),
            Err(PathError::TooLong { len: 256, .. })
        ));
        for good in [
            "a",
            "a/b.py",
            ".hidden/x",
            "x".repeat(255).as_str(),
            "..a/b..",
        ] {
            assert_eq!(check(good), Ok(()), "{good:?}");
        }
        assert_eq!(
            temp_name("x".repeat(255).as_bytes()).len(),
            TEMP_PREFIX.len() + 16
        );
    }
}
