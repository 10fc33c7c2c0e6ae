//! Hard links from a previous tree: a deploy's new generation takes each
//! file it shares with the one before it as a second name of the same
//! inode, instead of a copy.
//!
//! A file is linked only when the previous tree's recorded state says it
//! is a file with the very content and executable bit the new tree wants,
//! and it still stands as that state recorded it (same device, inode,
//! size, mode and modification time: a write or a `chmod` since shows).
//! Its change time is left out: linking the inode (here or for an earlier
//! generation) changes it. A link that cannot be made (another file
//! system, too many links) falls back to the copy. The previous tree is
//! read through its own [`Root`], beneath it and never through a link,
//! and is never written. Whoever links must still verify the new tree
//! before trusting it: `deploy` re-hashes every file before switching.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::AtFlags;

use crate::Error;
use crate::root::{Folder, Root, remove_at, rename_at, stat_at};
use crate::state::{Layout, State};
use assemble_manifest::{Content, Digest, Entry, Kind, Sha256, Stat, hash_stream};

/// A previous tree to hard-link unchanged files from, with its recorded
/// state.
pub struct LinkFrom {
    root: Root,
    state: State,
}

impl LinkFrom {
    /// The tree at `layout`, refused (`NoState`) unless its state is there
    /// and it is the folder that state records.
    pub fn open(layout: &Layout) -> Result<LinkFrom, Error> {
        let (root, state) = layout.open_recorded()?;
        Ok(LinkFrom { root, state })
    }

    /// The previous tree's path.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// The previous tree's folder `dir`, when it has one.
    pub(crate) fn folder(&self, dir: &str) -> Option<Folder<'_>> {
        self.root.locate(dir).ok()
    }

    /// Makes `name` in `dir` (the new tree's folder; at a temporary name
    /// renamed over it unless `fresh`) a hard link to the previous tree's
    /// file `path` (`name` in `from`), when that file is what `e` wants and
    /// stands as recorded. `None`: not linked, copy instead; else the
    /// sha256 of a copy whose hash was left to it (read from its input).
    pub(crate) fn link(
        &self,
        from: &Folder<'_>,
        dir: &impl AsFd,
        path: &str,
        name: &str,
        e: &Entry,
        fresh: bool,
    ) -> Option<io::Result<Option<Sha256>>> {
        let Kind::File {
            sha256: want,
            executable,
            content,
        } = &e.kind
        else {
            return None;
        };
        let recorded = self.state.entries.get(path)?;
        let Kind::File {
            sha256: had,
            executable: was_executable,
            ..
        } = &recorded.kind
        else {
            return None;
        };
        if executable != was_executable || !unchanged(stat_at(from, name)?, recorded.stat?) {
            return None;
        }
        let hashed = match (want, content) {
            (Digest::Known(sha), _) => (sha == had).then_some(None)?,
            (Digest::AfterCopy, Content::Copy(src)) => match input_sha(src, e) {
                Ok(sha) => (sha == *had).then_some(Some(sha))?,
                Err(err) => return Some(Err(err)),
            },
            (Digest::AfterCopy, Content::Bytes(_)) => return None,
        };
        match link_at(from, dir, name, fresh) {
            Ok(true) => Some(Ok(hashed)),
            // Not linkable after all (another file system): copy.
            Ok(false) => None,
            Err(err) => Some(Err(err)),
        }
    }
}

/// Whether `now` is the file `then` recorded, its change time aside.
fn unchanged(now: Stat, then: Stat) -> bool {
    now.is_file()
        && (now.dev, now.ino, now.size, now.mode, now.mtime_ns)
            == (then.dev, then.ino, then.size, then.mode, then.mtime_ns)
}

/// The sha256 of a copy's input, read once.
fn input_sha(src: &Path, e: &Entry) -> io::Result<Sha256> {
    let stat = match e.input_stat {
        Some(s) => s,
        None => Stat::of(&fs_err::symlink_metadata(src)?),
    };
    let mut f = assemble_manifest::open_input(src, &stat)?;
    hash_stream(f.file_mut(), &[], |_| Ok(()))
        .map(|(sha, _)| sha)
        .map_err(|err| io::Error::new(err.kind(), format!("reading {}: {err}", src.display())))
}

/// `linkat` of `name` in `from` to `name` in `dir` (through a temporary
/// name renamed over it unless `fresh`); `Ok(false)` when the kernel
/// cannot link the two (another file system, too many links, not
/// permitted), so the caller copies.
fn link_at(from: &impl AsFd, dir: &impl AsFd, name: &str, fresh: bool) -> io::Result<bool> {
    use rustix::io::Errno;
    let tmp_name = assemble_manifest::path::temp_name(name.as_bytes());
    let tmp = if fresh {
        OsStr::new(name)
    } else {
        remove_at(dir, OsStr::new(&tmp_name))?;
        OsStr::new(&tmp_name)
    };
    match rustix::fs::linkat(from, name, dir, tmp, AtFlags::empty()) {
        Ok(()) => {}
        Err(Errno::XDEV | Errno::MLINK | Errno::PERM | Errno::ACCESS) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    if !fresh {
        if stat_at(dir, name).is_some_and(|s| s.is_dir()) {
            remove_at(dir, OsStr::new(name))?;
        }
        rename_at(dir, tmp, OsStr::new(name))?;
    }
    Ok(true)
}
