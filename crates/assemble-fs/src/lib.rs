//! The small file-system helpers that every assemble crate needs, written
//! once: errors name the path they failed on (through `fs-err`).
//!
//! - [`files`]: read without following a link planted at the name, and
//!   replace a file atomically (an exclusively created temporary renamed
//!   over it), synced where a write is a commit point.
//! - [`resolve_beneath`]: a path inside a source folder with its links
//!   followed only while they stay inside it.
//! - [`log`]: a checksummed file rewritten rarely and appended to often
//!   (the recorded state and the input cache).
//! - [`lock`]: exclusive locks between runs, a wait said before it starts.
//! - [`find_program`]: a program looked up on `PATH` the way a shell does.
//! - [`pause`]: pause points that let a test make a race happen on purpose.
//! - [`StatCache`]: small answers about a file (an interpreter's probe, a
//!   library's ELF facts) kept in a cache folder under a key made of the
//!   file's path and stat with sha256, so that the key is the same on every
//!   build of the tool (`std`'s `DefaultHasher` is not).
//!
//! Nothing here knows about the output tree: writing to it is
//! `assemble-reconcile`'s alone, through its `Root` handle.

mod beneath;
pub mod files;
pub mod lock;
pub mod log;
pub mod pause;
mod stat_cache;
mod which;

pub use beneath::{Escape, open_beneath, resolve_beneath};
pub use files::{Durability, write_atomic};
pub use stat_cache::{Memo, StatCache};
pub use which::{find_program, is_executable, path_dirs};

/// `path` made absolute against `cwd` and rid of `.` and `..` components
/// lexically (as cargo treats manifest paths): every spelling of one path
/// gives one value, for keys, fingerprints and the prefix written into
/// files. Links are not resolved.
pub fn normalize(cwd: &std::path::Path, path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in cwd.join(path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `path` with every link in the part that exists resolved (what does not
/// exist yet is kept as written): one spelling for a folder that may not
/// be made yet, through whatever links lead to it.
pub fn canonical(path: &std::path::Path) -> std::path::PathBuf {
    if let Ok(c) = path.canonicalize() {
        return c;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => canonical(parent).join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    #[test]
    fn normalize_gives_one_spelling() {
        let cwd = Path::new("/w");
        for p in [
            "demo/a.toml",
            "./demo/a.toml",
            "demo/./x/../a.toml",
            "/w/demo//a.toml",
        ] {
            assert_eq!(
                super::normalize(cwd, Path::new(p)),
                PathBuf::from("/w/demo/a.toml"),
                "{p}"
            );
        }
        assert_eq!(
            super::normalize(cwd, Path::new("/../x")),
            PathBuf::from("/x")
        );
    }
}
