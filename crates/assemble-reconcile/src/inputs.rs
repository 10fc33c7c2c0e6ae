//! The input stat cache: re-hash a file only when its stat changed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::state::{STATE_DIR, read_versioned, write_versioned};
use crate::{Error, Sha256, Stat};

const INPUTS_FILE: &str = "inputs.bin";
const INPUTS_MAGIC: &[u8; 8] = b"ASMINPUT";
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

/// Absolute input path -> record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputCache {
    entries: HashMap<PathBuf, InputRecord>,
    #[serde(skip)]
    started_ns: i64,
    #[serde(skip)]
    racy_ns: i64,
    /// Whether this cache differs from the one loaded at the start.
    #[serde(skip)]
    changed: bool,
}

impl InputCache {
    /// The cache recorded in `out`, or an empty one.
    pub fn load(out: &Path) -> InputCache {
        InputCache::load_with_racy_window(out, RACY_WINDOW)
    }

    /// As [`InputCache::load`], trusting timestamps older than `window`
    /// before the run's start (tests use a zero window, so that the cache
    /// is trusted even for files changed a moment ago).
    pub fn load_with_racy_window(out: &Path, window: std::time::Duration) -> InputCache {
        let mut c: InputCache =
            read_versioned(&out.join(STATE_DIR).join(INPUTS_FILE), INPUTS_MAGIC)
                .unwrap_or_default();
        c.started_ns = now_ns();
        c.racy_ns = window.as_nanos() as i64;
        c
    }

    pub fn store(&self, out: &Path) -> Result<(), Error> {
        write_versioned(&out.join(STATE_DIR).join(INPUTS_FILE), INPUTS_MAGIC, self)
    }

    /// A cache holding only `records`, with this cache's start time: what a
    /// run keeps (inputs no longer used fall out). Consumes the loaded cache,
    /// which is kept as it is when nothing changed.
    pub fn with_records(self, records: Vec<(PathBuf, InputRecord)>) -> InputCache {
        // The common case, a no-op: every record as loaded. Keep the map.
        if records.len() == self.entries.len()
            && records.iter().all(|(p, r)| self.entries.get(p) == Some(r))
        {
            return InputCache {
                changed: false,
                ..self
            };
        }
        let entries: HashMap<PathBuf, InputRecord> = records.into_iter().collect();
        let changed = entries.len() != self.entries.len()
            || entries.iter().any(|(p, r)| self.entries.get(p) != Some(r));
        InputCache {
            entries,
            started_ns: self.started_ns,
            racy_ns: self.racy_ns,
            changed,
        }
    }

    /// Whether this cache must be stored: it differs from the loaded one.
    pub fn changed(&self) -> bool {
        self.changed
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
    pub fn record(&self, path: &Path) -> std::io::Result<(InputRecord, bool)> {
        let meta = fs_err::symlink_metadata(path)?;
        let stat = Stat::of(&meta);
        if let Some(r) = self.entries.get(path)
            && r.stat == stat
            && !r.racy
        {
            return Ok((*r, false));
        }
        let (sha256, elf) = hash_with_magic(path)?;
        let racy = stat.mtime_ns >= self.started_ns - self.racy_ns
            || stat.ctime_ns >= self.started_ns - self.racy_ns;
        Ok((
            InputRecord {
                stat,
                sha256,
                elf,
                racy,
            },
            true,
        ))
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn hash_with_magic(path: &Path) -> std::io::Result<(Sha256, bool)> {
    use sha2::Digest;
    let mut f = fs_err::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::with_capacity(4);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 4 {
            let take = (4 - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        h.update(&buf[..n]);
    }
    Ok((Sha256(h.finalize().into()), head == b"\x7fELF"))
}
