//! The desired manifest under construction, and the hashing of its inputs.

use std::path::Path;
use std::sync::Arc;

use assemble_cache::Files;
use assemble_manifest::walk;
use assemble_manifest::{
    Content, Desired, Digest, Entry, InputCache, InputRecord, Kind, Lookup, OutPath, Stat, UnitName,
};

use crate::unit::INSTALL_FIX;
use crate::{Error, Make};

/// What [`look_up`] needs besides the entry: the input cache, whether a
/// hash may be left to the copy, and the read counters.
#[derive(Clone, Copy)]
pub(crate) struct Hashing<'a> {
    pub inputs: &'a InputCache,
    /// What the seals of the cache entries walked vouch for.
    pub sealed: &'a Sealed,
    pub defer: bool,
    pub hashed: &'a std::sync::atomic::AtomicU64,
    pub hashed_bytes: &'a std::sync::atomic::AtomicU64,
}

/// The content hash of a copy, from the stat cache where it vouches for
/// the input, else read (or, with `defer`, left to the copy unless it is
/// ELF); the same read tells whether it is ELF. Returns the path if it is
/// ELF, and the input's record for the cache.
pub(crate) fn look_up(
    path: &OutPath,
    e: &mut Entry,
    h: &Hashing<'_>,
) -> Result<(Option<OutPath>, Option<InputRecord>), Error> {
    let (inputs, defer, hashed, hashed_bytes) = (h.inputs, h.defer, h.hashed, h.hashed_bytes);
    Ok(match &mut e.kind {
        Kind::File {
            sha256,
            executable,
            content: Content::Copy(src),
        } => {
            // A cache entry's file, checked against its seal when walked:
            // not an input of the output's own (not kept in its stat cache).
            if let Some(stat) = e.input_stat
                && let Some(r) = h.sealed.get(&(stat.dev, stat.ino))
                && r.stat == stat
            {
                *executable |= r.stat.mode & 0o100 != 0;
                *sha256 = Digest::Known(r.sha256);
                e.source_sha = Some(r.sha256);
                return Ok((r.elf.then(|| path.clone()), None));
            }
            let found = if defer {
                inputs.lookup_or_defer(src, e.input_stat)?
            } else {
                let (r, read) = inputs.record(src, e.input_stat)?;
                Lookup::Known(r, read)
            };
            let (r, read) = match found {
                Lookup::Known(r, read) => (r, read),
                Lookup::Deferred(stat) => {
                    *executable |= stat.mode & 0o100 != 0;
                    e.input_stat = Some(stat);
                    // Its digest stays `AfterCopy`.
                    return Ok((None, None));
                }
            };
            // Executable if the input is, or the recipe marks it.
            *executable |= r.stat.mode & 0o100 != 0;
            e.input_stat = Some(r.stat);
            if read {
                hashed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                hashed_bytes.fetch_add(r.stat.size, std::sync::atomic::Ordering::Relaxed);
            }
            *sha256 = Digest::Known(r.sha256);
            e.source_sha = Some(r.sha256);
            (r.elf.then(|| path.clone()), Some(r))
        }
        Kind::File {
            content: Content::Bytes(bytes),
            ..
        } => (assemble_elf::is_elf(bytes).then(|| path.clone()), None),
        _ => (None, None),
    })
}

/// The bytes of a desired file: its own, or its input's, read only if the
/// input is still the file the plan found (`assemble_manifest::open_input`).
pub(crate) fn read_content(e: &Entry) -> std::io::Result<Vec<u8>> {
    match e.kind.content() {
        Some(Content::Bytes(b)) => Ok(b.to_vec()),
        Some(Content::Copy(src)) => {
            let stat = match e.input_stat {
                Some(s) => s,
                None => Stat::of(&fs_err::symlink_metadata(src)?),
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut assemble_manifest::open_input(src, &stat)?,
                &mut bytes,
            )?;
            Ok(bytes)
        }
        None => Err(std::io::Error::other("not a file")),
    }
}

/// `path` as a manifest key, or the error naming its unit.
fn out_path(path: String, unit: &str) -> Result<OutPath, Error> {
    OutPath::new(path).map_err(|source| bad_path(source, unit))
}

fn bad_path(source: assemble_manifest::path::PathError, unit: &str) -> Error {
    Error::BadPath {
        unit: UnitName::from(unit),
        source,
    }
}

/// The records of cache entries' files that their seals vouch for, by
/// (device, inode).
pub(crate) type Sealed = rustc_hash::FxHashMap<(u64, u64), InputRecord>;

/// The desired manifest under construction; enforces one owner per path.
pub(crate) struct Builder<'m> {
    pub(crate) desired: Desired,
    pub(crate) warnings: Vec<String>,
    /// Makes what the plan needs in the cache (or, in a dry run, not).
    pub(crate) make: &'m dyn Make,
    /// What this run would make, when `make` makes nothing.
    pub(crate) would_make: Vec<crate::WouldMake>,
    /// Facts computed now (the ELF scan, the library index), for a run
    /// that writes to keep.
    pub(crate) memos: Vec<assemble_fs::Memo>,
    /// The records of the cache entries' files copied so far, each checked
    /// against its entry's seal when walked.
    pub(crate) sealed: Vec<InputRecord>,
}

impl Builder<'_> {
    /// Adds an entry; folders may be shared, anything else has one producer.
    pub(crate) fn insert(&mut self, path: String, e: Entry) -> Result<(), Error> {
        if let Some(old) = self.desired.get(path.as_str()) {
            if old.kind.is_dir() && e.kind.is_dir() {
                return Ok(());
            }
            return Err(Error::Conflict {
                path,
                first: old.unit.clone(),
                second: e.unit.clone(),
                fix: INSTALL_FIX.to_string(),
            });
        }
        self.desired.insert(out_path(path, &e.unit)?, e);
        Ok(())
    }

    /// Adds the folders leading to `path` (not `path` itself).
    pub(crate) fn parents(&mut self, path: &str, unit: &UnitName) -> Result<(), Error> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if !self.desired.contains_key(dir) {
                self.insert(dir.to_string(), Entry::dir(unit, "mkdir"))?;
            }
            at += i + 1;
        }
        Ok(())
    }

    /// Copies `src` (a file, link or folder tree) to `dest`.
    /// `label` is `src`'s path relative to the unit's source, for provenance.
    /// Folders are walked in parallel, each entry stat'ed once; that stat
    /// goes with the entry to the hashing pass.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_tree(
        &mut self,
        unit: &UnitName,
        step: &'static str,
        files: &Files,
        src: &Path,
        label: &str,
        dest: &str,
        skip: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(), Error> {
        self.parents(dest, unit)?;
        let unit_err = |e: walk::WalkError| match e {
            walk::WalkError::NotUtf8(_) => Error::Unit {
                unit: unit.clone(),
                message: e.to_string(),
            },
            e => Error::Io(e.into()),
        };
        // `src` is a unit's source folder, whose own path the recipe names
        // (it may be a link: a venv is often one into a store), or a path
        // inside one, resolved beneath it (`beneath`): its last part is no
        // link then. Links below it are copied as links.
        let top = fs_err::metadata(src)?;
        let mut found = vec![walk::Walked {
            rel: String::new(),
            kind: walk::FileKind::of(top.file_type()),
            stat: Stat::of(&top),
        }];
        if top.is_dir() {
            let visit = |rel: &str, _| {
                if skip(rel) {
                    walk::Visit::Skip
                } else {
                    walk::Visit::Descend
                }
            };
            found.extend(walk::walk(src, &visit).map_err(unit_err)?);
        }
        // A cache entry's files are what its seal says, or it is corrupt.
        if let Some(records) = files.check(src, &found, skip)? {
            self.sealed.extend(records);
        }
        let mut batch = Vec::with_capacity(found.len());
        for item in found {
            let rel = item.rel.as_str();
            if dest.is_empty() && rel.is_empty() {
                continue;
            }
            let path = if rel.is_empty() {
                src.to_path_buf()
            } else {
                src.join(rel)
            };
            let mut entry = match item.kind {
                walk::FileKind::Dir => Entry::dir(unit, step),
                walk::FileKind::Link => {
                    let target = fs_err::read_link(&path)?;
                    let target = target.to_str().ok_or_else(|| Error::Unit {
                        unit: unit.clone(),
                        message: format!("{}: link target is not UTF-8", path.display()),
                    })?;
                    Entry::link(unit, step, target)
                }
                // Hash and executable bit come later, in the parallel
                // hashing pass, from this stat.
                walk::FileKind::File => Entry {
                    input_stat: Some(item.stat),
                    ..Entry::copy(unit, step, path, Digest::AfterCopy, false)
                },
                walk::FileKind::Other => {
                    return Err(Error::Unit {
                        unit: unit.clone(),
                        message: format!(
                            "{} is not a file, folder or link (a fifo, socket or device); remove it from the source",
                            path.display()
                        ),
                    });
                }
            };
            entry.source = Some(match (label.is_empty(), rel.is_empty()) {
                (true, _) => Arc::from(rel),
                (false, true) => Arc::from(label),
                (false, false) => Arc::from(format!("{label}/{rel}")),
            });
            let out = match (dest.is_empty(), rel.is_empty()) {
                // The walk's string becomes the key: most of a venv.
                (true, _) => item.rel,
                (false, true) => dest.to_string(),
                (false, false) => format!("{dest}/{rel}"),
            };
            batch.push((out, entry));
        }
        self.insert_sorted(batch)
    }

    /// Adds entries sorted by path, as [`Builder::insert`] would one by one,
    /// but a large batch goes into the manifest in one merge, not a search
    /// per path.
    pub(crate) fn insert_sorted(&mut self, batch: Vec<(String, Entry)>) -> Result<(), Error> {
        if self.desired.is_empty() {
            // Nothing to collide with (a walk yields each path once): the
            // batch, its paths checked on every core, becomes the manifest,
            // built in bulk.
            self.desired = OutPath::new_all(batch)
                .map_err(|(source, e)| bad_path(source, &e.unit))?
                .into_iter()
                .collect();
            return Ok(());
        }
        if batch.len() * 8 < self.desired.len() {
            for (path, e) in batch {
                self.insert(path, e)?;
            }
            return Ok(());
        }
        let mut fresh = Vec::with_capacity(batch.len());
        for (path, e) in batch {
            match self.desired.get(path.as_str()) {
                None => fresh.push((out_path(path, &e.unit)?, e)),
                Some(old) if old.kind.is_dir() && e.kind.is_dir() => {}
                Some(old) => {
                    return Err(Error::Conflict {
                        first: old.unit.clone(),
                        second: e.unit.clone(),
                        fix: INSTALL_FIX.to_string(),
                        path,
                    });
                }
            }
        }
        let mut fresh: Desired = fresh.into_iter().collect();
        self.desired.append(&mut fresh);
        Ok(())
    }

    /// The current bytes of a desired file.
    pub(crate) fn content(&self, path: &str) -> Result<Vec<u8>, Error> {
        let Some(e) = self.desired.get(path) else {
            return Err(std::io::Error::other(format!("{path}: not in the tree")).into());
        };
        Ok(read_content(e)?)
    }
}
