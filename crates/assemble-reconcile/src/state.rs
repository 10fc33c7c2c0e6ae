//! The recorded state of an output, its on-disk encoding, and its lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Fingerprint, Kind, Sha256};

/// The folder inside the output that holds the tool's state.
pub const STATE_DIR: &str = ".assemble";

/// Bumped whenever the format of `state.bin` or `inputs.bin` changes; a file
/// of another version is read as "no state" and leads to a clean reconcile.
pub const STATE_VERSION: u32 = 5;

const STATE_FILE: &str = "state.bin";
const JOURNAL_FILE: &str = "journal.bin";
const JOURNAL_MAGIC: &[u8; 8] = b"ASMJOURN";
const LOCK_FILE: &str = "lock";
const STATE_MAGIC: &[u8; 8] = b"ASMSTATE";

/// What `lstat` says of a path, as far as change detection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            mode: m.mode(),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == 0o120000
    }

    /// `lstat` of a path, `None` when it does not exist (or cannot be read).
    pub fn lstat(path: &Path) -> Option<Stat> {
        std::fs::symlink_metadata(path).ok().map(|m| Stat::of(&m))
    }
}

/// One recorded output path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub kind: Kind,
    /// The unit that produced it.
    pub unit: Arc<str>,
    /// The sha256 of the input it was made from (for a patched file, before
    /// patching): tells "its input changed" from "it was regenerated".
    pub source_sha: Option<Sha256>,
    /// The stat of the path as the tool left it.
    pub stat: Option<Stat>,
}

/// What the last run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub entries: BTreeMap<String, Recorded>,
    /// Paths a run was changing when it wrote this state: their content on
    /// disk is unknown until a run completes.
    pub pending: BTreeSet<String>,
    pub units: BTreeMap<String, Fingerprint>,
    /// The stat of the output folder itself.
    pub root: Option<Stat>,
}

/// `state.bin`'s body. Paths are sorted and front-coded (bytes shared with
/// the previous path, then the rest), unit names interned, and a source
/// hash equal to the content hash (any unpatched copy) is a flag: the
/// state of a 36,000-file venv is a third of its naive size, and loading it
/// allocates one string per path.
#[derive(Serialize, Deserialize)]
struct Disk<'a> {
    #[serde(borrow)]
    units: Vec<&'a str>,
    #[serde(borrow)]
    entries: Vec<DiskEntry<'a>>,
    pending: BTreeSet<String>,
    fingerprints: BTreeMap<String, Fingerprint>,
    root: Option<Stat>,
}

#[derive(Serialize, Deserialize)]
struct DiskEntry<'a> {
    shared: u32,
    tail: &'a str,
    kind: Kind,
    unit: u32,
    source_sha: SourceSha,
    stat: Option<Stat>,
}

#[derive(Serialize, Deserialize)]
enum SourceSha {
    None,
    /// The same as the entry's content hash.
    Content,
    Other(Sha256),
}

impl State {
    fn to_disk(&self) -> Disk<'_> {
        let mut units: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut last = "";
        let entries = self
            .entries
            .iter()
            .map(|(path, r)| {
                let mut shared = last
                    .bytes()
                    .zip(path.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                while !path.is_char_boundary(shared) {
                    shared -= 1;
                }
                last = path;
                let unit = *index.entry(&r.unit).or_insert_with(|| {
                    units.push(&r.unit);
                    units.len() as u32 - 1
                });
                let source_sha = match (r.source_sha, &r.kind) {
                    (None, _) => SourceSha::None,
                    (Some(s), Kind::File { sha256, .. }) if s == *sha256 => SourceSha::Content,
                    (Some(s), _) => SourceSha::Other(s),
                };
                DiskEntry {
                    shared: shared as u32,
                    tail: &path[shared..],
                    kind: r.kind.clone(),
                    unit,
                    source_sha,
                    stat: r.stat,
                }
            })
            .collect();
        Disk {
            units,
            entries,
            pending: self.pending.clone(),
            fingerprints: self.units.clone(),
            root: self.root,
        }
    }

    /// `None` when the body is inconsistent (a unit index out of range,
    /// paths out of order).
    fn from_disk(d: Disk<'_>) -> Option<State> {
        let units: Vec<Arc<str>> = d.units.into_iter().map(Arc::from).collect();
        let mut entries: Vec<(String, Recorded)> = Vec::with_capacity(d.entries.len());
        for e in d.entries {
            let last = entries.last().map_or("", |(p, _)| p.as_str());
            let prefix = last.get(..e.shared as usize)?;
            let mut path = String::with_capacity(prefix.len() + e.tail.len());
            path.push_str(prefix);
            path.push_str(e.tail);
            if path.as_str() <= last && !entries.is_empty() {
                return None;
            }
            let source_sha = match (e.source_sha, &e.kind) {
                (SourceSha::None, _) => None,
                (SourceSha::Content, Kind::File { sha256, .. }) => Some(*sha256),
                (SourceSha::Content, _) => return None,
                (SourceSha::Other(s), _) => Some(s),
            };
            let record = Recorded {
                kind: e.kind,
                unit: units.get(e.unit as usize)?.clone(),
                source_sha,
                stat: e.stat,
            };
            entries.push((path, record));
        }
        Some(State {
            // Sorted already: built in bulk, without a search per path.
            entries: entries.into_iter().collect(),
            pending: d.pending,
            units: d.fingerprints,
            root: d.root,
        })
    }
}

impl State {
    fn path(out: &Path) -> PathBuf {
        out.join(STATE_DIR).join(STATE_FILE)
    }

    /// The recorded state, or `None` when there is none that this version of
    /// the tool can trust (missing, unreadable, corrupt, other version). The
    /// paths of a journal left by an interrupted run are moved from
    /// `entries` to `pending`.
    pub fn load(out: &Path) -> Option<State> {
        let bytes = read_body(&State::path(out), STATE_MAGIC)?;
        let mut state = State::from_disk(postcard::from_bytes(&bytes[BODY..]).ok()?)?;
        let journal = out.join(STATE_DIR).join(JOURNAL_FILE);
        if journal.exists() {
            let paths: BTreeSet<String> = read_versioned(&journal, JOURNAL_MAGIC)?;
            for p in paths {
                state.entries.remove(&p);
                state.pending.insert(p);
            }
        }
        Some(state)
    }

    /// The stats of `state.bin` and `journal.bin`: a run that stores a
    /// state or leaves a journal changes them (a new file each time).
    pub(crate) fn ident(out: &Path) -> [Option<Stat>; 2] {
        let dir = out.join(STATE_DIR);
        [
            Stat::lstat(&dir.join(STATE_FILE)),
            Stat::lstat(&dir.join(JOURNAL_FILE)),
        ]
    }

    /// Records, before the first change, every path a run is about to
    /// change: until the run completes, their content on disk is unknown.
    pub fn write_journal(out: &Path, paths: &BTreeSet<String>) -> Result<(), Error> {
        write_versioned(
            &out.join(STATE_DIR).join(JOURNAL_FILE),
            JOURNAL_MAGIC,
            paths,
        )
    }

    /// Removes the journal once the final state is stored.
    pub fn clear_journal(out: &Path) -> Result<(), Error> {
        match fs_err::remove_file(out.join(STATE_DIR).join(JOURNAL_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Replaces the state file atomically.
    pub fn store(&self, out: &Path) -> Result<(), Error> {
        write_versioned(&State::path(out), STATE_MAGIC, &self.to_disk())
    }
}

/// Where the postcard body starts: after the magic and the version.
const BODY: usize = 12;

/// The bytes of a file that starts with `magic` and this format version;
/// `None` on any mismatch or error.
fn read_body(path: &Path, magic: &[u8; 8]) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let version = bytes.strip_prefix(magic.as_slice())?.get(..4)?;
    (u32::from_le_bytes(version.try_into().ok()?) == STATE_VERSION).then_some(bytes)
}

/// Reads `magic`, the format version and a postcard body; `None` on any
/// mismatch or error.
pub(crate) fn read_versioned<T: DeserializeOwned>(path: &Path, magic: &[u8; 8]) -> Option<T> {
    postcard::from_bytes(&read_body(path, magic)?[BODY..]).ok()
}

/// Writes `magic`, the format version and `value` to a temporary file, and
/// renames it over `path`.
pub(crate) fn write_versioned<T: Serialize>(
    path: &Path,
    magic: &[u8; 8],
    value: &T,
) -> Result<(), Error> {
    let body = postcard::to_stdvec(value)
        .map_err(|e| io::Error::other(format!("{}: cannot encode: {e}", path.display())))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs_err::File::create(&tmp)?;
    f.write_all(magic)?;
    f.write_all(&STATE_VERSION.to_le_bytes())?;
    f.write_all(&body)?;
    drop(f);
    fs_err::rename(&tmp, path)?;
    Ok(())
}

/// An exclusive lock on an output's state, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: fs_err::File,
}

impl Lock {
    /// Prepares `out` for a run: refuses a non-empty folder the tool does not
    /// own, creates the state folder, and opens the lock file.
    fn open(out: &Path) -> Result<fs_err::File, Error> {
        let marker = out.join(STATE_DIR);
        match fs_err::read_dir(out) {
            Ok(mut entries) => {
                if !marker.is_dir() && entries.next().is_some() {
                    return Err(Error::NotOwned(out.to_path_buf()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs_err::create_dir_all(out)?,
            Err(e) => return Err(e.into()),
        }
        fs_err::create_dir_all(&marker)?;
        Ok(fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(marker.join(LOCK_FILE))?)
    }

    /// Takes the lock if it is free; `Ok(None)` when another run holds it.
    pub fn try_acquire(out: &Path) -> Result<Option<Lock>, Error> {
        let file = Lock::open(out)?;
        match file.file().try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", file.path().display()),
            )
            .into()),
        }
    }

    /// Waits for the lock.
    pub fn acquire(out: &Path) -> Result<Lock, Error> {
        let file = Lock::open(out)?;
        file.file().lock().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", file.path().display()),
            )
        })?;
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the front coding: paths that share part of a multi-byte
    /// character, links, patched files and pending paths survive a store.
    #[test]
    fn state_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(tmp.path().join(STATE_DIR)).unwrap();
        let unit: Arc<str> = Arc::from("venv");
        let other: Arc<str> = Arc::from("authentik");
        let file = |b: u8| Kind::File {
            sha256: Sha256([b; 32]),
            executable: b > 1,
        };
        let stat = Stat::lstat(tmp.path());
        let mut state = State::default();
        for (path, kind, unit, source_sha) in [
            ("a", Kind::Dir, &unit, None),
            ("a/é", file(1), &unit, Some(Sha256([1; 32]))),
            ("a/è", file(2), &other, Some(Sha256([9; 32]))),
            (
                "a/èx",
                Kind::Link {
                    target: "../b".into(),
                },
                &other,
                None,
            ),
            ("b", file(3), &unit, None),
        ] {
            state.entries.insert(
                path.into(),
                Recorded {
                    kind,
                    unit: unit.clone(),
                    source_sha,
                    stat,
                },
            );
        }
        state.pending.insert("c".into());
        state
            .units
            .insert("venv".into(), [("k".into(), "v".into())].into());
        state.root = stat;
        state.store(tmp.path()).unwrap();
        assert_eq!(State::load(tmp.path()), Some(state));
    }
}
