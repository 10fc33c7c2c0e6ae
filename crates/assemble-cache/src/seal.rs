//! The record of what a folder entry holds, written when it is complete.
//!
//! `X.seal` beside the entry `X`: every path of it (the folder itself is
//! `""`), sorted as a walk lists them, with its kind (a folder; a file with
//! its sha256, executable bit and whether it starts like an ELF file; a link
//! with its target) and its stat when sealed. A checksummed base in the
//! `assemble_fs::log` format: a seal with one bit flipped is no seal, and
//! the entry is made again.
//!
//! A stat is trusted as git trusts its index: only if it is the same as
//! sealed and the file was not changed so shortly before its hash was taken
//! that a later change could keep the same timestamps (`racy`: such a file
//! is hashed when used, and the seal then refreshed).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use assemble_fs::log;
use assemble_manifest::walk::{self, FileKind, Visit, Walked};
use assemble_manifest::{InputRecord, RACY_WINDOW, Sha256, Stat, hash_stream, open_input};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Corrupt, Error};

const FORMAT: log::Format = log::Format {
    magic: b"ASMSEAL\0",
    version: 1,
};

/// What a sealed path is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealedKind {
    Dir,
    File {
        sha256: Sha256,
        executable: bool,
        /// Whether it starts like an ELF file (autoPatchelf's question).
        elf: bool,
    },
    Link {
        target: String,
    },
}

/// One path of a sealed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Relative to the entry, `/`-separated; `""` is the entry's folder.
    pub path: String,
    pub kind: SealedKind,
    /// Its stat when it was hashed.
    pub stat: Stat,
    /// Changed so shortly before it was hashed that the stat alone cannot
    /// vouch for it: hashed when used.
    pub racy: bool,
}

/// A folder entry's record (see the module doc).
#[derive(Debug, Clone)]
pub struct Seal {
    entry: PathBuf,
    entries: Vec<Sealed>,
}

/// Where the seal of `entry` is kept: `X.seal` beside `X`.
pub fn seal_path(entry: &Path) -> PathBuf {
    crate::beside(entry, ".seal")
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Whether a file of `stat`, hashed after `started_ns`, changed too shortly
/// before it for the stat to vouch for it later.
fn is_racy(stat: &Stat, started_ns: i64) -> bool {
    let limit = started_ns - RACY_WINDOW.as_nanos() as i64;
    stat.mtime_ns >= limit || stat.ctime_ns >= limit
}

/// The fields of a stat that say whether a file changed.
fn same(a: &Stat, b: &Stat) -> bool {
    (a.dev, a.ino, a.size, a.mtime_ns, a.ctime_ns, a.mode)
        == (b.dev, b.ino, b.size, b.mtime_ns, b.ctime_ns, b.mode)
}

impl Seal {
    /// Seals the entry at `entry` as it is now: every path walked, every
    /// file hashed (in parallel), the seal written beside it. For a complete
    /// entry, under its lock.
    pub fn make(entry: &Path) -> io::Result<Seal> {
        let started = now_ns();
        // The entry's own name may be a link (a folder shared into this
        // cache); what is below it is taken as it is.
        let top = fs_err::metadata(entry)?;
        let mut found = vec![Walked {
            rel: String::new(),
            kind: FileKind::of(top.file_type()),
            stat: Stat::of(&top),
        }];
        if top.is_dir() {
            found.extend(walk::walk(entry, &|_, _| Visit::Descend)?);
        }
        let entries = found
            .into_par_iter()
            .map(|w| seal_one(entry, w, started))
            .collect::<io::Result<Vec<_>>>()?;
        let seal = Seal {
            entry: entry.to_path_buf(),
            entries,
        };
        seal.store()?;
        Ok(seal)
    }

    fn store(&self) -> io::Result<()> {
        let path = seal_path(&self.entry);
        let body = postcard::to_stdvec(&self.entries)
            .map_err(|e| io::Error::other(format!("{}: cannot encode: {e}", path.display())))?;
        log::store(&path, FORMAT, &body, assemble_fs::Durability::Unsynced)
    }

    /// The seal of `entry`; `None` when it is missing or unreadable, or the
    /// entry itself is gone, which makes the entry incomplete.
    pub fn load(entry: &Path) -> Option<Seal> {
        std::fs::metadata(entry).ok()?;
        let loaded = log::load(&seal_path(entry), FORMAT)?;
        let entries: Vec<Sealed> = postcard::from_bytes(loaded.body()).ok()?;
        if !entries.windows(2).all(|w| w[0].path < w[1].path) {
            return None;
        }
        Some(Seal {
            entry: entry.to_path_buf(),
            entries,
        })
    }

    /// The entry this seal is of.
    pub fn entry(&self) -> &Path {
        &self.entry
    }

    /// Every sealed path, in order (`""`, the entry's folder, first).
    pub fn entries(&self) -> &[Sealed] {
        &self.entries
    }

    /// The sealed record of `path` (relative to the entry).
    pub fn get(&self, path: &str) -> Option<&Sealed> {
        self.entries
            .binary_search_by(|s| s.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    fn corrupt(&self, path: &str, why: impl Into<String>) -> Error {
        Error::corrupt(Corrupt {
            entry: self.entry.clone(),
            path: self.entry.join(path),
            why: why.into(),
        })
    }

    /// Checks bytes read from the file `path` of the entry, whose stat was
    /// `stat` when read: trusted by the stat, else by their hash.
    pub(crate) fn check_read(&self, path: &str, stat: &Stat, bytes: &[u8]) -> Result<(), Error> {
        let sealed = self
            .get(path)
            .ok_or_else(|| self.corrupt(path, "not in the entry as it was made"))?;
        let SealedKind::File { sha256, .. } = &sealed.kind else {
            return Err(self.corrupt(path, "not a file when the entry was made"));
        };
        if (same(stat, &sealed.stat) && !sealed.racy) || Sha256::of(bytes) == *sha256 {
            Ok(())
        } else {
            Err(self.corrupt(path, "changed since the entry was made"))
        }
    }

    /// Checks what a walk found at `top` (a path of the entry, `""` for its
    /// folder; the first of `found`, whose paths are relative to `top`)
    /// against the seal, and returns the record of every file found: each
    /// path must be sealed, as the same kind, a link with the same target;
    /// a file whose stat is not the sealed one (or is racy) is hashed and
    /// must have the sealed hash; a folder whose stat changed must still
    /// hold every sealed path in it that the walk did not `skip`
    /// (relative to `top`, as the walk's own).
    pub(crate) fn check_walk(
        &self,
        top: &str,
        found: &[Walked],
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<Checked, Error> {
        let started = now_ns();
        let join = |rel: &str| match (top.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => top.to_string(),
            (false, false) => format!("{top}/{rel}"),
        };
        let mut records = Vec::with_capacity(found.len());
        let mut to_hash = Vec::new();
        for w in found {
            let path = join(&w.rel);
            let sealed = self
                .get(&path)
                .ok_or_else(|| self.corrupt(&path, "not in the entry as it was made"))?;
            match (&sealed.kind, w.kind) {
                (SealedKind::Dir, FileKind::Dir) => {
                    if !same(&w.stat, &sealed.stat) {
                        self.check_listing(&path, &w.rel, found, skip)?;
                    }
                }
                (SealedKind::File { sha256, elf, .. }, FileKind::File) => {
                    if same(&w.stat, &sealed.stat) && !sealed.racy {
                        records.push(InputRecord {
                            stat: w.stat,
                            sha256: *sha256,
                            elf: *elf,
                            racy: false,
                        });
                    } else {
                        to_hash.push((path, w.stat, *sha256));
                    }
                }
                (SealedKind::Link { target }, FileKind::Link) => {
                    let now = fs_err::read_link(self.entry.join(&path))?;
                    if now.as_os_str() != target.as_str() {
                        return Err(self.corrupt(
                            &path,
                            format!("a link to {}, made as a link to {target}", now.display()),
                        ));
                    }
                }
                (kind, now) => {
                    return Err(self.corrupt(
                        &path,
                        format!("{} now, made as {}", kind_words(now), sealed_words(kind)),
                    ));
                }
            }
        }
        let hashed = to_hash
            .par_iter()
            .map(|(path, stat, want)| -> Result<InputRecord, Error> {
                let file = self.entry.join(path);
                let (sha256, elf) = hash_stream(&mut open_input(&file, stat)?, &[], |_| Ok(()))?;
                if sha256 != *want {
                    return Err(self.corrupt(path, "changed since the entry was made"));
                }
                Ok(InputRecord {
                    stat: *stat,
                    sha256,
                    elf,
                    racy: false,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let refreshed: Vec<(String, Stat, bool)> = to_hash
            .into_iter()
            .map(|(path, stat, _)| {
                let racy = is_racy(&stat, started);
                (path, stat, racy)
            })
            .collect();
        records.extend(hashed);
        Ok(Checked { records, refreshed })
    }

    /// A folder whose stat changed must still hold every sealed path in
    /// it, but those a walk skips: none was removed or renamed away.
    fn check_listing(
        &self,
        path: &str,
        rel: &str,
        found: &[Walked],
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<(), Error> {
        // What is below `path` sorts together, from `path/` on (not right
        // after `path`: `a.txt` sorts between `a` and `a/b`).
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let start = self
            .entries
            .partition_point(|s| s.path.as_str() < prefix.as_str());
        for s in self.entries[start..]
            .iter()
            .take_while(|s| s.path.starts_with(&prefix))
        {
            let name = &s.path[prefix.len()..];
            if name.is_empty() || name.contains('/') {
                continue;
            }
            let child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            if skip(&child) {
                continue;
            }
            if found
                .binary_search_by(|w| w.rel.as_str().cmp(&child))
                .is_err()
            {
                return Err(self.corrupt(&s.path, "missing: it was in the entry as it was made"));
            }
        }
        Ok(())
    }

    /// Records the stats of files just checked by hash (`Checked::
    /// refreshed`), so that the next use trusts them by stat: rewritten only
    /// if no other run holds the entry's lock (it may be replacing it).
    pub(crate) fn refresh(&self, refreshed: &[(String, Stat, bool)]) -> io::Result<()> {
        let Some(_lock) = assemble_fs::lock::try_exclusive(&crate::entry::lock_path(&self.entry))?
        else {
            return Ok(());
        };
        let Some(mut now) = Seal::load(&self.entry) else {
            return Ok(());
        };
        let mut changed = false;
        for (path, stat, racy) in refreshed {
            if let Ok(i) = now.entries.binary_search_by(|s| s.path.as_str().cmp(path)) {
                let s = &mut now.entries[i];
                if (s.stat, s.racy) != (*stat, *racy) {
                    s.stat = *stat;
                    s.racy = *racy;
                    changed = true;
                }
            }
        }
        if changed { now.store() } else { Ok(()) }
    }

    /// Re-hashes every path of the entry, whatever its stat (`verify
    /// --cache`): the first difference, if any.
    pub fn check_all(&self) -> Result<(), Error> {
        let top = fs_err::metadata(&self.entry)?;
        let mut found = vec![Walked {
            rel: String::new(),
            kind: FileKind::of(top.file_type()),
            stat: Stat::of(&top),
        }];
        if top.is_dir() {
            found.extend(walk::walk(&self.entry, &|_, _| Visit::Descend).map_err(io::Error::from)?);
        }
        // Every path as if its stat had changed: hashed, listings compared.
        let forgetful = Seal {
            entry: self.entry.clone(),
            entries: self
                .entries
                .iter()
                .map(|s| Sealed {
                    racy: true,
                    stat: Stat {
                        ino: u64::MAX,
                        ..s.stat
                    },
                    ..s.clone()
                })
                .collect(),
        };
        forgetful.check_walk("", &found, &|_| false).map(|_| ())
    }
}

/// What [`Seal::check_walk`] found.
pub(crate) struct Checked {
    /// Each file's record: sealed, or just hashed and matching.
    pub records: Vec<InputRecord>,
    /// The files hashed because their stat did not vouch: (path, stat now,
    /// still racy), for [`Seal::refresh`].
    pub refreshed: Vec<(String, Stat, bool)>,
}

fn seal_one(entry: &Path, w: Walked, started: i64) -> io::Result<Sealed> {
    let path = if w.rel.is_empty() {
        entry.to_path_buf()
    } else {
        entry.join(&w.rel)
    };
    let kind = match w.kind {
        FileKind::Dir => SealedKind::Dir,
        FileKind::File => {
            let (sha256, elf) = hash_stream(&mut open_input(&path, &w.stat)?, &[], |_| Ok(()))?;
            SealedKind::File {
                sha256,
                executable: w.stat.mode & 0o100 != 0,
                elf,
            }
        }
        FileKind::Link => {
            let target = fs_err::read_link(&path)?;
            SealedKind::Link {
                target: target
                    .to_str()
                    .ok_or_else(|| {
                        io::Error::other(format!(
                            "{}: a link whose target is not UTF-8",
                            path.display()
                        ))
                    })?
                    .to_string(),
            }
        }
        FileKind::Other => {
            return Err(io::Error::other(format!(
                "{} is not a file, folder or link; a cache entry holds none",
                path.display()
            )));
        }
    };
    Ok(Sealed {
        racy: is_racy(&w.stat, started),
        path: w.rel,
        kind,
        stat: w.stat,
    })
}

fn kind_words(k: FileKind) -> &'static str {
    match k {
        FileKind::Dir => "a folder",
        FileKind::File => "a file",
        FileKind::Link => "a link",
        FileKind::Other => "a special file",
    }
}

fn sealed_words(k: &SealedKind) -> &'static str {
    match k {
        SealedKind::Dir => "a folder",
        SealedKind::File { .. } => "a file",
        SealedKind::Link { .. } => "a link",
    }
}
