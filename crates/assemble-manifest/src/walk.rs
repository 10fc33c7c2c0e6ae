//! A parallel walk of a folder tree that stats every entry once.
//!
//! Each folder is listed once, and each entry is `statx`ed relative to its
//! folder's descriptor (what `std`'s `DirEntry::metadata` does on Linux), so
//! the kernel never resolves a long path from the root again: that is what
//! makes `find` fast, and the walk does the same work. Sub-folders are
//! walked in parallel on rayon's pool, and the result comes sorted by path
//! from small per-folder sorts.

use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::Stat;

/// What a walked entry is (never followed: a link is a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Link,
    /// A fifo, socket or device.
    Other,
}

impl FileKind {
    pub fn of(t: std::fs::FileType) -> FileKind {
        if t.is_dir() {
            FileKind::Dir
        } else if t.is_file() {
            FileKind::File
        } else if t.is_symlink() {
            FileKind::Link
        } else {
            FileKind::Other
        }
    }
}

/// One entry found by [`walk`].
#[derive(Debug, Clone)]
pub struct Walked {
    /// The path relative to the walk's root, `/`-separated.
    pub rel: String,
    pub kind: FileKind,
    pub stat: Stat,
}

/// What to do with an entry the walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Leave it (and anything under it) out.
    Skip,
    /// Report it; do not list it if it is a folder.
    Keep,
    /// Report it, and list it if it is a folder.
    Descend,
}

/// A walk that failed; names the path.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} has a name that is not UTF-8; rename it", .0.display())]
    NotUtf8(PathBuf),
}

impl From<WalkError> for io::Error {
    fn from(e: WalkError) -> io::Error {
        match e {
            WalkError::Io { ref source, .. } => io::Error::new(source.kind(), e.to_string()),
            WalkError::NotUtf8(_) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        }
    }
}

/// Everything under the folder `root` (not `root` itself), sorted by
/// relative path as a `BTreeMap<String, _>` would be. `visit` decides, from
/// an entry's relative path and kind, whether it is reported and whether a
/// folder is listed. An entry that disappears while the walk runs is left
/// out, as if the walk had come a moment later.
pub fn walk(
    root: &Path,
    visit: &(dyn Fn(&str, FileKind) -> Visit + Sync),
) -> Result<Vec<Walked>, WalkError> {
    let mut chunks = Vec::new();
    list(root, "", visit, &mut chunks)?;
    let mut all = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for c in chunks {
        all.extend(c);
    }
    Ok(all)
}

/// Appends the entries under `dir` to `chunks`, in order. The order comes
/// without a global sort: in each folder, an entry sorts by its name and the
/// entries below a sub-folder `x` as one block keyed `x/`, which is where
/// all of `x/...` falls among the folder's paths (`x` < `x.txt` < `x/...`
/// < `x0`).
fn list(
    dir: &Path,
    rel: &str,
    visit: &(dyn Fn(&str, FileKind) -> Visit + Sync),
    chunks: &mut Vec<Vec<Walked>>,
) -> Result<(), WalkError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalkError::Io { path, source }
    };
    let mut found = Vec::new();
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| WalkError::NotUtf8(entry.path()))?;
        let mut child = String::with_capacity(rel.len() + 1 + name.len());
        if !rel.is_empty() {
            child.push_str(rel);
            child.push('/');
        }
        child.push_str(name);
        // statx relative to the folder's descriptor, not following links.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&entry.path())(e)),
        };
        let kind = FileKind::of(meta.file_type());
        match visit(&child, kind) {
            Visit::Skip => continue,
            Visit::Keep => {}
            Visit::Descend if kind == FileKind::Dir => folders.push((entry.path(), child.clone())),
            Visit::Descend => {}
        }
        found.push(Walked {
            rel: child,
            kind,
            stat: Stat::of(&meta),
        });
    }
    found.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    let below: Vec<(String, Vec<Vec<Walked>>)> = folders
        .into_par_iter()
        .map(|(path, rel)| {
            let mut mine = Vec::new();
            match list(&path, &rel, visit, &mut mine) {
                // Listed a moment ago, gone now: as if it had never been there.
                Err(WalkError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    Ok((rel + "/", Vec::new()))
                }
                other => other.map(|()| (rel + "/", mine)),
            }
        })
        .collect::<Result<_, _>>()?;
    // Merge this folder's entries with the blocks below its sub-folders.
    let mut blocks = below.into_iter().collect::<Vec<_>>();
    blocks.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut blocks = blocks.into_iter().peekable();
    let mut run = Vec::new();
    for w in found {
        while let Some((_, block)) = blocks.next_if(|(key, _)| *key < w.rel) {
            chunks.push(std::mem::take(&mut run));
            chunks.extend(block);
        }
        run.push(w);
    }
    chunks.push(run);
    for (_, block) in blocks {
        chunks.extend(block);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_sorted_with_stats_and_honours_visit() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        fs_err::create_dir_all(r.join("a/b")).unwrap();
        fs_err::create_dir_all(r.join("skip/x")).unwrap();
        fs_err::create_dir_all(r.join("flat/y")).unwrap();
        fs_err::write(r.join("a/b/f"), "hello").unwrap();
        fs_err::write(r.join("a.txt"), "").unwrap();
        std::os::unix::fs::symlink("a.txt", r.join("l")).unwrap();
        let got = walk(r, &|rel, _| match rel {
            "skip" => Visit::Skip,
            "flat" => Visit::Keep,
            _ => Visit::Descend,
        })
        .unwrap();
        let names: Vec<(&str, FileKind)> = got.iter().map(|w| (w.rel.as_str(), w.kind)).collect();
        assert_eq!(
            names,
            [
                ("a", FileKind::Dir),
                ("a.txt", FileKind::File),
                ("a/b", FileKind::Dir),
                ("a/b/f", FileKind::File),
                ("flat", FileKind::Dir),
                ("l", FileKind::Link),
            ]
        );
        let f = got.iter().find(|w| w.rel == "a/b/f").unwrap();
        assert_eq!(Some(f.stat), Stat::lstat(&r.join("a/b/f")));
        assert_eq!(f.stat.size, 5);
    }

    /// Guards the per-folder ordering: names that sort around `/` (`x`,
    /// `x.txt`, `x-y`, `x0`, `x/...`) come out exactly as a full sort would
    /// put them.
    #[test]
    fn order_is_the_full_sort() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for d in ["x/a", "x/a/b", "x-y", "x.d/z", "y/x/x"] {
            fs_err::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "x.txt", "x0", "x/a.py", "x/a/b/c", "x/a0", "x.d/z/q", "y/x/x/.h", "y/x0", "A",
        ] {
            fs_err::write(r.join(f), "").unwrap();
        }
        let got: Vec<String> = walk(r, &|_, _| Visit::Descend)
            .unwrap()
            .into_iter()
            .map(|w| w.rel)
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(got, sorted);
        assert_eq!(got.len(), 18);
    }

    #[test]
    fn a_missing_root_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");
        let e = walk(&gone, &|_, _| Visit::Descend).unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
    }
}
