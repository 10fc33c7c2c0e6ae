//! How a copied file gets its bytes into the output: `--link-mode`, with
//! uv's names.
//!
//! - `copy`: the bytes are copied (in the kernel where the file system
//!   allows it: `copy_file_range`).
//! - `clone`: the new file shares the input's extents (`FICLONE`, a
//!   reflink) where the file system can (btrfs, XFS, bcachefs), a copy
//!   elsewhere; the two files are then independent, as copies are.
//! - `hardlink`: an unpatched file of a sealed cache entry (a venv's, a
//!   fetched source's) becomes a second name of the cache's inode. Patched,
//!   generated and compiled files, and files of the user's own folders, are
//!   always written. The risk is the one uv's mode has: a write *into* such
//!   a file through the output changes the cache's copy too. It is caught:
//!   the output's record and the entry's seal both hold the file's stat, so
//!   the next run finds the output drifted and the cache entry corrupt,
//!   discards and makes the entry again, and writes the file anew.
//!
//! A file is linked only when it is the very inode the plan checked (opened
//! without following links and compared by device, inode, size and time,
//! then linked through that open file), its mode is the one the tree wants
//! and it lies inside the cache folder this run was given; anything else
//! is copied.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use assemble_manifest::{Content, Digest, Entry, Kind};
use rustix::fs::AtFlags;
use rustix::io::Errno;

/// `--link-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkMode {
    Copy,
    /// A reflink where the output's file system has them, else a copy.
    #[default]
    Clone,
    Hardlink,
}

impl LinkMode {
    pub const ALL: [LinkMode; 3] = [LinkMode::Copy, LinkMode::Clone, LinkMode::Hardlink];

    pub fn name(self) -> &'static str {
        match self {
            LinkMode::Copy => "copy",
            LinkMode::Clone => "clone",
            LinkMode::Hardlink => "hardlink",
        }
    }
}

/// How an apply writes its copies, and how many took each way.
#[derive(Debug, Default)]
pub struct Writing {
    pub mode: LinkMode,
    /// The cache folder, as given and canonical: only files beneath it
    /// are hard-linked.
    cache: Vec<PathBuf>,
    /// Set once the output's file system refused a reflink: no more tries.
    no_clone: AtomicBool,
    pub(crate) cloned: AtomicUsize,
    pub(crate) linked: AtomicUsize,
}

impl Writing {
    /// Copies written with `mode`; hard links only to files under `cache`.
    pub fn new(mode: LinkMode, cache: Option<&Path>) -> Writing {
        Writing {
            mode,
            cache: cache
                .map(|c| vec![c.to_path_buf(), assemble_fs::canonical(c)])
                .unwrap_or_default(),
            ..Writing::default()
        }
    }

    /// Whether `e` may be a hard link to its input: an unpatched copy of a
    /// cache entry's file, its hash known (from the entry's seal).
    fn may_link(&self, e: &Entry, src: &Path) -> bool {
        let Kind::File {
            sha256: Digest::Known(sha),
            ..
        } = &e.kind
        else {
            return false;
        };
        self.mode == LinkMode::Hardlink
            && e.step != "bytecode"
            && e.source_sha.as_ref() == Some(sha)
            && self.cache.iter().any(|c| src.starts_with(c))
    }

    /// Makes `tmp` in `dir` a hard link to `e`'s input when it may be one
    /// (see the module doc). `false`: not linked, write it instead.
    pub(crate) fn hardlink(
        &self,
        e: &Entry,
        dir: &impl AsFd,
        tmp: &OsStr,
        mode: u32,
    ) -> io::Result<bool> {
        let Some(Content::Copy(src)) = e.kind.content() else {
            return Ok(false);
        };
        if !self.may_link(e, src) {
            return Ok(false);
        }
        let s = crate::apply::open_copied(src, e)?;
        if s.metadata()?.permissions().mode() & 0o7777 != mode {
            return Ok(false);
        }
        // Through the open file: the inode checked is the one linked.
        let by_fd = format!("/proc/self/fd/{}", s.file().as_raw_fd());
        match rustix::fs::linkat(
            rustix::fs::CWD,
            by_fd.as_str(),
            dir,
            tmp,
            AtFlags::SYMLINK_FOLLOW,
        ) {
            Ok(()) => {
                self.linked.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            // Another file system, too many links, no /proc: copy.
            Err(Errno::XDEV | Errno::MLINK | Errno::PERM | Errno::ACCESS | Errno::NOENT) => {
                Ok(false)
            }
            Err(err) => Err(io::Error::new(
                err.kind(),
                format!("linking {}: {err}", src.display()),
            )),
        }
    }

    /// Makes `to` share `from`'s extents when the mode is `clone` and the
    /// file system can; `false`: copy the bytes instead.
    pub(crate) fn clone_file(&self, from: &impl AsFd, to: &impl AsFd) -> io::Result<bool> {
        if self.mode != LinkMode::Clone || self.no_clone.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match rustix::fs::ioctl_ficlone(to, from) {
            Ok(()) => {
                self.cloned.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            // The output's file system has no reflinks: stop asking.
            Err(Errno::OPNOTSUPP | Errno::NOTTY | Errno::INVAL) => {
                self.no_clone.store(true, Ordering::Relaxed);
                Ok(false)
            }
            // The input is on another file system: this one is copied.
            Err(Errno::XDEV | Errno::PERM | Errno::BADF) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
