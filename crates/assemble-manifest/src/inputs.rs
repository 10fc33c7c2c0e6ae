//! The input stat cache: re-hash a file only when its stat changed.

use std::io::Read;
use std::path::Path;

use rustc_hash::FxHashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use assemble_fs::Durability;
use assemble_fs::log;

use crate::{ELF_MAGIC, STATE_VERSION, Sha256, Stat, hash_stream, open_input};

const INPUTS_FILE: &str = "inputs.bin";
const INPUTS_FORMAT: log::Format = log::Format {
    magic: b"ASMINPUT",
    version: STATE_VERSION,
};
/// Timestamps closer than this to the run's start are not trusted: enough
/// for file systems that keep whole seconds.
pub const RACY_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// What is known of one input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub stat: Stat,
    pub sha256: Sha256,
    /// Whether the content starts like an ELF file.
    pub elf: bool,
    /// Hashed so soon after its last change that the same stat could hide
    /// a later one: re-hash next time.
    pub racy: bool,
}

impl InputRecord {
    fn key(&self) -> (u64, u64) {
        (self.stat.dev, self.stat.ino)
    }
}

/// The input stat cache: (device, inode) -> record.
///
/// Keyed by the file's identity rather than its path: no path strings to
/// store, load or hash, and a record can only be reused for the very same
/// file, whose size, times and mode must then also match. A new file that
/// gets a freed inode number back has a new ctime, which nothing can set
/// back, so it never matches the old record; hard links share content.
#[derive(Debug, Clone, Default)]
pub struct InputCache {
    entries: Records,
    started_ns: i64,
    racy_ns: i64,
    /// Where `inputs.bin` and `inputs.log` stood when loaded.
    at: Option<log::Position>,
    /// How many records `inputs.bin` itself holds (its log aside).
    base_len: usize,
    /// What differs from the loaded cache.
    delta: Delta,
}

/// (device, inode) -> record.
type Records = FxHashMap<(u64, u64), InputRecord>;

/// A frame of `inputs.log`: records added or changed, and keys dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Delta {
    upsert: Vec<InputRecord>,
    remove: Vec<(u64, u64)>,
}

impl InputCache {
    /// The cache recorded in the state folder `dir`, or an empty one.
    pub fn load(dir: &Path) -> InputCache {
        InputCache::load_with_racy_window(dir, RACY_WINDOW)
    }

    /// As [`InputCache::load`], trusting timestamps older than `window`
    /// before the run's start (tests use a zero window, so that the cache
    /// is trusted even for files changed a moment ago).
    pub fn load_with_racy_window(dir: &Path, window: std::time::Duration) -> InputCache {
        let (entries, at, base_len) = InputCache::read(&dir.join(INPUTS_FILE))
            .map_or_else(Default::default, |(e, at, n)| (e, Some(at), n));
        InputCache {
            entries,
            started_ns: now_ns(),
            racy_ns: window.as_nanos() as i64,
            at,
            base_len,
            delta: Delta::default(),
        }
    }

    fn read(path: &Path) -> Option<(Records, log::Position, usize)> {
        let loaded = log::load(path, INPUTS_FORMAT)?;
        let base: Vec<InputRecord> = postcard::from_bytes(loaded.body()).ok()?;
        let base_len = base.len();
        let mut entries: Records = base.into_iter().map(|r| (r.key(), r)).collect();
        for frame in loaded.frames() {
            let d: Delta = postcard::from_bytes(frame).ok()?;
            for k in d.remove {
                entries.remove(&k);
            }
            entries.extend(d.upsert.into_iter().map(|r| (r.key(), r)));
        }
        Some((entries, loaded.at, base_len))
    }

    /// Records what changed since the cache was loaded: appended to
    /// `inputs.log` when that is small and the base is not mostly dead
    /// records, else the whole cache is rewritten.
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(INPUTS_FILE);
        let compact = self.entries.len() * 2 < self.base_len;
        if let Some(at) = self.at
            && !compact
            && log::append(
                &path,
                INPUTS_FORMAT,
                at,
                &encode(&path, &self.delta)?,
                Durability::Unsynced,
            )?
        {
            return Ok(());
        }
        let mut records: Vec<&InputRecord> = self.entries.values().collect();
        records.sort_by_key(|r| r.key());
        log::store(
            &path,
            INPUTS_FORMAT,
            &encode(&path, &records)?,
            Durability::Unsynced,
        )
    }

    /// A cache holding only `records`, with this cache's start time: what a
    /// run keeps (inputs no longer used fall out). Consumes the loaded cache,
    /// which is kept as it is when nothing changed.
    pub fn with_records(mut self, records: Vec<InputRecord>) -> InputCache {
        let mut keys: Vec<(u64, u64)> = records.iter().map(InputRecord::key).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut upsert: Vec<InputRecord> = records
            .into_iter()
            .filter(|r| self.entries.get(&r.key()) != Some(r))
            .collect();
        upsert.sort_by_key(InputRecord::key);
        upsert.dedup_by_key(|r| r.key());
        // Every used key is either cached or new; if the cached ones are as
        // many as the cache holds, none is left unused.
        let new = upsert
            .iter()
            .filter(|r| !self.entries.contains_key(&r.key()))
            .count();
        let remove: Vec<(u64, u64)> = if keys.len() - new == self.entries.len() {
            Vec::new()
        } else {
            let mut r: Vec<(u64, u64)> = self
                .entries
                .keys()
                .filter(|k| keys.binary_search(k).is_err())
                .copied()
                .collect();
            r.sort_unstable();
            r
        };
        // The common case, a no-op or an edit: the loaded map, amended.
        for k in &remove {
            self.entries.remove(k);
        }
        self.entries.extend(upsert.iter().map(|r| (r.key(), *r)));
        self.delta = Delta { upsert, remove };
        self
    }

    /// Whether this cache must be stored: it differs from the loaded one.
    pub fn changed(&self) -> bool {
        !self.delta.upsert.is_empty() || !self.delta.remove.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The record of a file: from the cache when its stat is unchanged and
    /// the entry was not racy, else by reading it (one read for the hash
    /// and the ELF magic). The flag says whether the file was read.
    /// `known` is the file's stat when the caller has just taken it.
    pub fn record(&self, path: &Path, known: Option<Stat>) -> std::io::Result<(InputRecord, bool)> {
        let stat = self.stat(path, known)?;
        if let Some(r) = self.vouched(&stat) {
            return Ok((r, false));
        }
        let (sha256, elf) = hash_stream(&mut open_input(path, &stat)?, &[], |_| Ok(()))?;
        Ok((self.record_of(stat, sha256, elf), true))
    }

    /// As [`InputCache::record`], but a file the cache does not vouch for
    /// is only sniffed: unless it is ELF (whose hash the autoPatchelf step
    /// needs now), its hash is left to the copy that writes it, which
    /// reads it anyway.
    pub fn lookup_or_defer(&self, path: &Path, known: Option<Stat>) -> std::io::Result<Lookup> {
        let stat = self.stat(path, known)?;
        if let Some(r) = self.vouched(&stat) {
            return Ok(Lookup::Known(r, false));
        }
        let mut f = open_input(path, &stat)?;
        let mut magic = [0u8; 4];
        let mut n = 0;
        while n < magic.len() {
            match f.read(&mut magic[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if magic[..n] != *ELF_MAGIC {
            return Ok(Lookup::Deferred(stat));
        }
        let (sha256, elf) = hash_stream(&mut f, &magic, |_| Ok(()))?;
        Ok(Lookup::Known(self.record_of(stat, sha256, elf), true))
    }

    fn stat(&self, path: &Path, known: Option<Stat>) -> std::io::Result<Stat> {
        match known {
            Some(s) => Ok(s),
            None => Ok(Stat::of(&fs_err::symlink_metadata(path)?)),
        }
    }

    /// The cached record, if the stat matches it and it was not racy.
    pub fn vouched(&self, stat: &Stat) -> Option<InputRecord> {
        self.entries
            .get(&(stat.dev, stat.ino))
            .filter(|r| r.stat == *stat && !r.racy)
            .copied()
    }

    /// The record of an input of `stat` whose content hashed to `sha256`.
    pub fn record_of(&self, stat: Stat, sha256: Sha256, elf: bool) -> InputRecord {
        let racy = stat.mtime_ns >= self.started_ns - self.racy_ns
            || stat.ctime_ns >= self.started_ns - self.racy_ns;
        InputRecord {
            stat,
            sha256,
            elf,
            racy,
        }
    }

    /// Adds records found after [`InputCache::with_records`] (inputs hashed
    /// while they were copied).
    pub fn add(&mut self, records: Vec<InputRecord>) {
        let added: rustc_hash::FxHashSet<(u64, u64)> =
            records.iter().map(InputRecord::key).collect();
        self.delta.remove.retain(|k| !added.contains(k));
        for r in records {
            if self.entries.insert(r.key(), r) != Some(r) {
                self.delta.upsert.push(r);
            }
        }
        self.delta.upsert.sort_by_key(InputRecord::key);
        self.delta.upsert.dedup_by_key(|r| r.key());
    }
}

/// What [`InputCache::lookup_or_defer`] found.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// From the cache, or read now (`true`).
    Known(InputRecord, bool),
    /// Not known and not ELF: to be hashed while copied.
    Deferred(Stat),
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The postcard encoding of `value`, the error naming the file it was for.
fn encode<T: Serialize>(path: &Path, value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_stdvec(value)
        .map_err(|e| std::io::Error::other(format!("{}: cannot encode: {e}", path.display())))
}
