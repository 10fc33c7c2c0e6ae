//! The recorded state of an output, its on-disk encoding, and its lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::root::Root;
use assemble_fs::{Durability, files, log};
use assemble_manifest::{Fingerprint, Kind, STATE_VERSION, Sha256, Stat, UnitName};

const STATE_FILE: &str = "state.bin";
const OWNER_FILE: &str = "owner.bin";
const OWNER_MAGIC: &[u8; 8] = b"ASMOWNER";
const JOURNAL_FILE: &str = "journal.bin";
const JOURNAL_MAGIC: &[u8; 8] = b"ASMJOURN";
const LOCK_FILE: &str = "lock";
const STATE_FORMAT: log::Format = log::Format {
    magic: b"ASMSTATE",
    version: STATE_VERSION,
};

/// One recorded output path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub kind: Kind,
    /// The unit that produced it.
    pub unit: UnitName,
    /// The sha256 of the input it was made from (for a patched file, before
    /// patching): tells "its input changed" from "it was regenerated".
    pub source_sha: Option<Sha256>,
    /// The stat of the path as the tool left it.
    pub stat: Option<Stat>,
}

/// Recorded paths and their records, sorted by path: loaded in bulk (no
/// tree to build), searched by bisection, changed by merging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries(Vec<(String, Recorded)>);

impl Entries {
    /// From pairs sorted by path, each path once (as `Disk::decode`
    /// checks).
    fn from_sorted(v: Vec<(String, Recorded)>) -> Entries {
        Entries(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<&Recorded> {
        self.0
            .binary_search_by(|(p, _)| p.as_str().cmp(path))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// In path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Recorded)> {
        self.0.iter().map(|(p, r)| (p, r))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(p, _)| p)
    }

    pub fn as_slice(&self) -> &[(String, Recorded)] {
        &self.0
    }

    /// Sets (`Some`) or removes (`None`) the records of `changes`, sorted
    /// by path, in one merge.
    pub fn merge(&mut self, changes: impl IntoIterator<Item = (String, Option<Recorded>)>) {
        let old = std::mem::take(&mut self.0);
        let mut changes = changes.into_iter().peekable();
        let mut merged = Vec::with_capacity(old.len());
        for (p, r) in old {
            while let Some((c, new)) = changes.next_if(|(c, _)| *c < p) {
                merged.extend(new.map(|new| (c, new)));
            }
            match changes.next_if(|(c, _)| *c == p) {
                Some((c, new)) => merged.extend(new.map(|new| (c, new))),
                None => merged.push((p, r)),
            }
        }
        merged.extend(changes.filter_map(|(c, r)| Some((c, r?))));
        self.0 = merged;
    }
}

/// What the last run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub entries: Entries,
    /// Paths a run was changing when it wrote this state: their content on
    /// disk is unknown until a run completes.
    pub pending: BTreeSet<String>,
    pub units: BTreeMap<UnitName, Fingerprint>,
    /// The stat of the output folder itself.
    pub root: Option<Stat>,
    /// Where `state.bin` and `state.log` stood when this state was loaded.
    at: Option<log::Position>,
    /// How many records `state.bin` itself holds (its log aside).
    base_entries: usize,
}

/// The body of `state.bin` and of each frame of `state.log`: a whole state,
/// or what one run changed in it (a path without a record was removed).
/// Paths are sorted and front-coded (bytes shared with the previous path,
/// then the rest), unit names interned, and a source hash equal to the
/// content hash (any unpatched copy) is a flag: the state of a 36,000-file
/// venv is a third of its naive size, and loading it allocates one string
/// per path.
#[derive(Serialize, Deserialize)]
struct Disk<'a> {
    #[serde(borrow)]
    units: Vec<&'a str>,
    #[serde(borrow)]
    entries: Vec<DiskEntry<'a>>,
    pending: BTreeSet<String>,
    /// `None` in a frame: unchanged.
    fingerprints: Option<BTreeMap<UnitName, Fingerprint>>,
    root: Option<Stat>,
}

#[derive(Serialize, Deserialize)]
struct DiskEntry<'a> {
    shared: u32,
    tail: &'a str,
    record: Option<DiskRecord>,
}

#[derive(Serialize, Deserialize)]
struct DiskRecord {
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

impl<'a> Disk<'a> {
    /// `entries` must be sorted by path.
    fn encode(
        entries: impl Iterator<Item = (&'a str, Option<&'a Recorded>)>,
        pending: &BTreeSet<String>,
        fingerprints: Option<&BTreeMap<UnitName, Fingerprint>>,
        root: Option<Stat>,
    ) -> Disk<'a> {
        let mut units: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut last = "";
        let entries = entries
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
                let record = r.map(|r| DiskRecord {
                    kind: r.kind.clone(),
                    unit: *index.entry(&r.unit).or_insert_with(|| {
                        units.push(&r.unit);
                        units.len() as u32 - 1
                    }),
                    source_sha: match (r.source_sha, &r.kind) {
                        (None, _) => SourceSha::None,
                        (Some(s), Kind::File { sha256, .. }) if s == *sha256 => SourceSha::Content,
                        (Some(s), _) => SourceSha::Other(s),
                    },
                    stat: r.stat,
                });
                DiskEntry {
                    shared: shared as u32,
                    tail: &path[shared..],
                    record,
                }
            })
            .collect();
        Disk {
            units,
            entries,
            pending: pending.clone(),
            fingerprints: fingerprints.cloned(),
            root,
        }
    }

    /// Hands each path, with its record or `None` (removed), to `each`, in
    /// order. `None` when the body is inconsistent (a unit index out of
    /// range, paths out of order).
    fn decode(self, mut each: impl FnMut(String, Option<Recorded>)) -> Option<Tail> {
        let units: Vec<UnitName> = self.units.into_iter().map(UnitName::from).collect();
        let mut last = String::new();
        for (i, e) in self.entries.into_iter().enumerate() {
            let prefix = last.get(..e.shared as usize)?;
            let mut path = String::with_capacity(prefix.len() + e.tail.len());
            path.push_str(prefix);
            path.push_str(e.tail);
            if i > 0 && path <= last {
                return None;
            }

            let record = match e.record {
                None => None,
                Some(r) => Some(Recorded {
                    source_sha: match (r.source_sha, &r.kind) {
                        (SourceSha::None, _) => None,
                        (SourceSha::Content, Kind::File { sha256, .. }) => Some(*sha256),
                        (SourceSha::Content, _) => return None,
                        (SourceSha::Other(s), _) => Some(s),
                    },
                    kind: r.kind,
                    unit: units.get(r.unit as usize)?.clone(),
                    stat: r.stat,
                }),
            };
            last.clear();
            last.push_str(&path);
            each(path, record);
        }
        Some(Tail {
            pending: self.pending,
            fingerprints: self.fingerprints,
            root: self.root,
        })
    }
}

/// What a body holds besides its entries.
struct Tail {
    pending: BTreeSet<String>,
    fingerprints: Option<BTreeMap<UnitName, Fingerprint>>,
    root: Option<Stat>,
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state recorded in the state folder `dir`, or `None` when there
    /// is none that this version of the tool can trust (missing, unreadable,
    /// corrupt, other version, a path that is not a plain relative path).
    /// The paths of a journal left by an interrupted run are moved from
    /// `entries` to `pending`.
    pub fn load(dir: &Path) -> Option<State> {
        let loaded = log::load(&State::path(dir), STATE_FORMAT)?;
        let base: Disk = postcard::from_bytes(loaded.body()).ok()?;
        let mut entries: Vec<(String, Recorded)> = Vec::with_capacity(base.entries.len());
        let mut complete = true;
        let tail = base.decode(|p, r| match r {
            Some(r) => entries.push((p, r)),
            None => complete = false,
        })?;
        if !complete || tail.fingerprints.is_none() {
            return None;
        }
        let base_entries = entries.len();
        let mut state = State {
            entries: Entries::from_sorted(entries),
            pending: tail.pending,
            units: tail.fingerprints.unwrap_or_default(),
            root: tail.root,
            at: Some(loaded.at),
            base_entries,
        };
        // The frames' changes, the last one for a path winning, applied in
        // one merge.
        let mut changes: BTreeMap<String, Option<Recorded>> = BTreeMap::new();
        for frame in loaded.frames() {
            let delta: Disk = postcard::from_bytes(frame).ok()?;
            let tail = delta.decode(|p, r| {
                changes.insert(p, r);
            })?;
            state.pending = tail.pending;
            if let Some(f) = tail.fingerprints {
                state.units = f;
            }
            state.root = tail.root;
        }
        let journal = dir.join(JOURNAL_FILE);
        if Stat::lstat(&journal).is_some() {
            let paths: BTreeSet<String> = read_versioned(&journal, JOURNAL_MAGIC)?;
            for p in paths {
                changes.insert(p.clone(), None);
                state.pending.insert(p);
            }
        }
        // A path from a state file is data, never an instruction: a pending
        // one that is not a plain relative path makes the state corrupt. (A
        // recorded one is checked by the diff when the run would act on it:
        // checking tens of thousands here would cost every run.)
        if state
            .pending
            .iter()
            .any(|p| assemble_manifest::path::check(p).is_err())
        {
            return None;
        }
        if !changes.is_empty() {
            state.entries.merge(changes);
        }
        Some(state)
    }

    /// Whether the state folder `dir` holds a state file (a hint: it may
    /// still be unusable).
    pub fn recorded(dir: &Path) -> bool {
        Stat::lstat(&State::path(dir)).is_some_and(|s| s.is_file())
    }

    /// The stats of the owner record, `state.bin`, `state.log` and
    /// `journal.bin`: a run that claims the output, stores a state or
    /// leaves a journal changes them.
    pub(crate) fn ident(dir: &Path) -> [Option<Stat>; 4] {
        let path = State::path(dir);
        [
            Stat::lstat(&dir.join(OWNER_FILE)),
            Stat::lstat(&path),
            Stat::lstat(&log::log_path(&path)),
            Stat::lstat(&dir.join(JOURNAL_FILE)),
        ]
    }

    /// Records, before the first change, every path a run is about to
    /// change: until the run completes, their content on disk is unknown.
    pub fn write_journal(dir: &Path, paths: &BTreeSet<String>) -> Result<(), Error> {
        write_versioned(
            &dir.join(JOURNAL_FILE),
            JOURNAL_MAGIC,
            paths,
            Durability::Unsynced,
        )
    }

    /// Removes the journal once the final state is stored.
    pub fn clear_journal(dir: &Path) -> Result<(), Error> {
        Ok(files::remove(&dir.join(JOURNAL_FILE))?)
    }

    /// Forgets the state in `dir` (the output it was for is gone).
    fn discard(dir: &Path) -> Result<(), Error> {
        let path = State::path(dir);
        for p in [log::log_path(&path), path, dir.join(JOURNAL_FILE)] {
            files::remove(&p)?;
        }
        Ok(())
    }

    /// Replaces the state (`state.bin`, and no log) atomically.
    pub fn store(&self, dir: &Path) -> Result<(), Error> {
        let disk = Disk::encode(
            self.entries.iter().map(|(p, r)| (p.as_str(), Some(r))),
            &self.pending,
            Some(&self.units),
            self.root,
        );
        log::store(
            &State::path(dir),
            STATE_FORMAT,
            &encode(&State::path(dir), &disk)?,
            Durability::Synced,
        )?;
        Ok(())
    }

    /// Records what a run that started from this state (as loaded) changed:
    /// `changes`, sorted by path, are new records or (`None`) removals; no
    /// path stays pending. Appended to `state.log` when that is small and
    /// the base is not mostly dead records, else the whole state is
    /// rewritten.
    pub(crate) fn commit(
        mut self,
        dir: &Path,
        changes: Vec<(String, Option<Recorded>)>,
        units: &BTreeMap<UnitName, Fingerprint>,
        root: Option<Stat>,
    ) -> Result<(), Error> {
        let path = State::path(dir);
        let removed = changes.iter().filter(|(_, r)| r.is_none()).count();
        // Half the base's records gone: rewrite, so that the state's size
        // follows the tree's.
        let compact = self.entries.len().saturating_sub(removed) * 2 < self.base_entries;
        if let Some(at) = self.at
            && !compact
        {
            let delta = Disk::encode(
                changes.iter().map(|(p, r)| (p.as_str(), r.as_ref())),
                &BTreeSet::new(),
                (*units != self.units).then_some(units),
                root,
            );
            let body = encode(&path, &delta)?;
            if log::append(&path, STATE_FORMAT, at, &body, Durability::Synced)? {
                return Ok(());
            }
        }
        self.entries.merge(changes);
        self.pending.clear();
        self.units = units.clone();
        self.root = root;
        self.store(dir)
    }
}

/// A postcard body; the error names the file it was for.
pub(crate) fn encode<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, Error> {
    Ok(postcard::to_stdvec(value)
        .map_err(|e| io::Error::other(format!("{}: cannot encode: {e}", path.display())))?)
}

/// The format of a single state file (`owner.bin`, `journal.bin`).
fn single(magic: &'static [u8; 8]) -> log::Format {
    log::Format {
        magic,
        version: STATE_VERSION,
    }
}

/// Reads a single file of `magic` and the state's format version (see
/// `assemble_fs::log`), its postcard body decoded; `None` on any mismatch
/// or error.
pub(crate) fn read_versioned<T: DeserializeOwned>(
    path: &Path,
    magic: &'static [u8; 8],
) -> Option<T> {
    postcard::from_bytes(&log::read_single(path, single(magic))?).ok()
}

/// Writes `value` as a single file of `magic`, atomically.
pub(crate) fn write_versioned<T: Serialize>(
    path: &Path,
    magic: &'static [u8; 8],
    value: &T,
    durability: Durability,
) -> Result<(), Error> {
    let body = encode(path, value)?;
    Ok(log::write_single(path, single(magic), &body, durability)?)
}

/// Where an output is, and where the tool keeps its state: outside the
/// output, in a folder of the state base named by the output's canonical
/// path (as cargo keeps fingerprints beside its artifacts, not in them).
/// Nobody who can write the output can forge its state, and the output
/// holds exactly the recipe's tree.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The output folder, absolute.
    pub out: PathBuf,
    /// Its state folder.
    pub state: PathBuf,
}

impl Layout {
    /// The output's root handle and its recorded state, for the commands
    /// that read a finished tree (`verify`, `export`): refused when the
    /// output is not the one its state records.
    pub(crate) fn open_recorded(&self) -> Result<(Root, State), Error> {
        let no_state = || Error::NoState(self.out.clone());
        let root = Root::open(&self.out).map_err(|_| no_state())?;
        if !self.owns(&root) {
            return Err(no_state());
        }
        let state = State::load(&self.state).ok_or_else(no_state)?;
        Ok((root, state))
    }

    /// The layout of `out` (absolute) with its state under `base`.
    pub fn new(out: &Path, base: &Path) -> Layout {
        use std::os::unix::ffi::OsStrExt;
        let canonical = assemble_fs::canonical(out);
        let key = Sha256::of(canonical.as_os_str().as_bytes()).hex();
        Layout {
            out: out.to_path_buf(),
            state: base.join(&key[..32]),
        }
    }

    /// Whether a state is recorded for the output as it is now (its owner
    /// is this folder): a hint for planning, the state may still be unusable.
    pub fn recorded(&self) -> bool {
        Root::open(&self.out).is_ok_and(|r| self.owns(&r)) && State::recorded(&self.state)
    }

    /// Whether the output is the folder recorded as the state's owner (same
    /// device and inode): only then is its state used, and only then may a
    /// run delete what it finds there.
    pub(crate) fn owns(&self, root: &Root) -> bool {
        let owner: Option<Owner> = read_versioned(&self.state.join(OWNER_FILE), OWNER_MAGIC);
        match (owner, root.stat_self()) {
            (Some(o), Ok(s)) => o.dev == s.dev && o.ino == s.ino,
            _ => false,
        }
    }
}

/// The output a state folder belongs to: its folder's identity.
#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    dev: u64,
    ino: u64,
    /// For people reading the state folder; not compared.
    path: String,
}

/// An exclusive lock on an output's state, held until dropped. Only under
/// it is the output claimed and its handle opened for writing
/// ([`Lock::claim`], which `apply` calls).
#[derive(Debug)]
pub struct Lock {
    _file: fs_err::File,
    pub(crate) layout: Layout,
}

impl Lock {
    /// Makes the state folder a real folder of ours and opens its lock file.
    /// Another run may be making the same folder at the same instant: it
    /// is created without looking first, and "it exists" means that run
    /// made it.
    fn open(layout: &Layout) -> Result<fs_err::File, Error> {
        let dir = &layout.state;
        if let Some(parent) = dir.parent() {
            fs_err::create_dir_all(parent)?;
        }
        assemble_fs::pause::at("state-folder");
        own_folder(dir)?;
        use fs_err::os::unix::fs::OpenOptionsExt;
        let lock = dir.join(LOCK_FILE);
        if Stat::lstat(&lock).is_some_and(|s| !s.is_file()) {
            files::remove(&lock)?;
        }
        Ok(fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(lock)?)
    }

    /// Under the lock, once the diff has found nothing to refuse: opens the
    /// output (creating it if missing) and makes sure it is ours. A
    /// non-empty folder the state does not name as its owner is refused; an
    /// empty one is claimed (any state left for a previous folder at that
    /// path is dropped). So a run that fails while planning or diffing
    /// creates nothing, not even an empty output.
    pub(crate) fn claim(&self) -> Result<Root, Error> {
        let layout = &self.layout;
        // Temporary files of a run killed while writing its state.
        for e in fs_err::read_dir(&layout.state)? {
            let e = e?;
            if e.file_name()
                .as_encoded_bytes()
                .starts_with(files::TEMP_PREFIX.as_bytes())
            {
                files::remove(&e.path())?;
            }
        }
        let out = &layout.out;
        match Stat::lstat(out) {
            None => fs_err::create_dir_all(out)?,
            Some(s) if s.is_dir() => {}
            Some(s) if s.is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link; pass the folder it points to as --out",
                    out.display()
                ))
                .into());
            }
            Some(_) => {
                return Err(io::Error::other(format!("{} is not a folder", out.display())).into());
            }
        }
        let root = Root::open(out)?;
        if !layout.owns(&root) {
            if !root.list("")?.is_empty() {
                return Err(Error::NotOwned {
                    out: out.clone(),
                    state: layout.state.clone(),
                });
            }
            State::discard(&layout.state)?;
            let s = root.stat_self()?;
            write_versioned(
                &layout.state.join(OWNER_FILE),
                OWNER_MAGIC,
                &Owner {
                    dev: s.dev,
                    ino: s.ino,
                    path: out.to_string_lossy().into_owned(),
                },
                Durability::Synced,
            )?;
        }
        Ok(root)
    }

    /// Takes the lock if it is free; `Ok(None)` when another run holds it.
    pub fn try_acquire(layout: &Layout) -> Result<Option<Lock>, Error> {
        let file = Lock::open(layout)?;
        match file.file().try_lock() {
            Ok(()) => Ok(Some(Lock {
                _file: file,
                layout: layout.clone(),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", file.path().display()),
            )
            .into()),
        }
    }

    /// The output (and state) this lock is for.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Waits for the lock.
    pub fn acquire(layout: &Layout) -> Result<Lock, Error> {
        let file = Lock::open(layout)?;
        file.file().lock().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", file.path().display()),
            )
        })?;
        Ok(Lock {
            _file: file,
            layout: layout.clone(),
        })
    }
}

/// Makes `dir` a folder: created if missing, kept if it is one (whoever
/// made it), and anything else at that name (a planted link, a file)
/// removed and replaced, never followed.
fn own_folder(dir: &Path) -> io::Result<()> {
    // Each turn either makes the folder or removes what is in its way; a
    // few turns suffice unless something keeps putting files there.
    for _ in 0..4 {
        match fs_err::create_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match Stat::lstat(dir) {
                Some(s) if s.is_dir() => return Ok(()),
                Some(_) => files::remove(dir)?,
                None => {}
            },
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{}: something keeps replacing this folder",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the snapshot's stats: `statx` relative to a folder gives
    /// exactly what `lstat` through `std` gives, or every path would look
    /// changed on every run.
    #[test]
    fn statx_and_lstat_agree() {
        use rustix::fs::{AtFlags, StatxFlags};
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs_err::write(d.join("f"), "x").unwrap();
        fs_err::create_dir(d.join("d")).unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        let dir = fs_err::File::open(d).unwrap();
        for name in ["f", "d", "l"] {
            let x = rustix::fs::statx(
                &dir,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
                StatxFlags::BASIC_STATS,
            )
            .unwrap();
            assert_eq!(
                Some(Stat::of_statx(&x)),
                Stat::lstat(&d.join(name)),
                "{name}"
            );
        }
    }

    /// Guards the front coding: paths that share part of a multi-byte
    /// character, links, patched files and pending paths survive a store.
    #[test]
    fn state_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let unit: UnitName = UnitName::from("venv");
        let other: UnitName = UnitName::from("authentik");
        let file = |b: u8| Kind::file(Sha256([b; 32]), b > 1);
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
            state.entries.merge([(
                path.into(),
                Some(Recorded {
                    kind,
                    unit: unit.clone(),
                    source_sha,
                    stat,
                }),
            )]);
        }
        state.pending.insert("c".into());
        state.units.insert(
            "venv".into(),
            [(assemble_manifest::Component::Source, "v".into())].into(),
        );
        state.root = stat;
        state.store(tmp.path()).unwrap();
        let loaded = State::load(tmp.path()).unwrap();
        assert_eq!(unloaded(loaded), state);
        // One bit flipped anywhere in the file: no state, never a wrong one.
        let bytes = fs_err::read(State::path(tmp.path())).unwrap();
        for i in [0, 13, bytes.len() / 2, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            fs_err::write(State::path(tmp.path()), &flipped).unwrap();
            assert_eq!(State::load(tmp.path()), None, "bit flipped at {i}");
        }
    }

    fn unloaded(s: State) -> State {
        State {
            at: None,
            base_entries: 0,
            ..s
        }
    }

    /// Guards the state's size: once most records are gone the base is
    /// rewritten, not appended to.
    #[test]
    fn a_large_removal_compacts_the_state() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let unit: UnitName = UnitName::from("u");
        let rec = Recorded {
            kind: Kind::Dir,
            unit,
            source_sha: None,
            stat: None,
        };
        let mut state = State::default();
        state
            .entries
            .merge((0..1000).map(|i| (format!("f{i:04}"), Some(rec.clone()))));
        state.store(dir).unwrap();
        let before = fs_err::metadata(State::path(dir)).unwrap().len();
        let removed = (10..1000).map(|i| (format!("f{i:04}"), None)).collect();
        State::load(dir)
            .unwrap()
            .commit(dir, removed, &BTreeMap::new(), None)
            .unwrap();
        assert!(!log::log_path(&State::path(dir)).exists());
        let after = fs_err::metadata(State::path(dir)).unwrap().len();
        assert!(after * 10 < before, "{before} -> {after} bytes");
        assert_eq!(State::load(dir).unwrap().entries.len(), 10);
    }

    /// Guards the loader: a pending path (from the state or the journal)
    /// that is not a plain relative path makes the state unusable (a clean
    /// reconcile), never an instruction to touch `..` or `/`. (Recorded
    /// paths: the diff's test `a_crafted_state_naming_outside_is_no_state`.)
    #[test]
    fn a_state_naming_paths_outside_is_no_state() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../victim", "/etc", "a/../../b", "./x", "a//b"] {
            State::write_journal(tmp.path(), &[bad.to_string()].into()).unwrap();
            State::default().store(tmp.path()).unwrap();
            assert_eq!(State::load(tmp.path()), None, "journal {bad}");
            State::clear_journal(tmp.path()).unwrap();
            let mut state = State::default();
            state.pending.insert(bad.to_string());
            state.store(tmp.path()).unwrap();
            assert_eq!(State::load(tmp.path()), None, "pending {bad}");
        }
    }

    /// Guards the log: a state loaded from a base and appended changes
    /// equals the one stored whole.
    #[test]
    fn committed_changes_load_like_a_whole_state() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let unit: UnitName = UnitName::from("u");
        let rec = |b: u8| Recorded {
            kind: Kind::file(Sha256([b; 32]), false),
            unit: unit.clone(),
            source_sha: None,
            stat: None,
        };
        let mut state = State::default();
        state
            .entries
            .merge((0..100u8).map(|i| (format!("f{i:03}"), Some(rec(i)))));
        state.store(out).unwrap();
        let fp: BTreeMap<UnitName, Fingerprint> = [("u".into(), Fingerprint::new())].into();
        let changes = vec![("f001".into(), Some(rec(200))), ("f002".into(), None)];
        State::load(out)
            .unwrap()
            .commit(out, changes, &fp, None)
            .unwrap();
        assert!(
            log::log_path(&State::path(out)).exists(),
            "appended, not rewritten"
        );
        let mut whole = state.clone();
        whole
            .entries
            .merge([("f001".into(), Some(rec(200))), ("f002".into(), None)]);
        assert_eq!(whole.entries.len(), 99);
        assert_eq!(whole.entries.get("f001"), Some(&rec(200)));
        whole.units = fp;
        let loaded = State::load(out).unwrap();
        assert_eq!(unloaded(loaded), whole);
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(b: u8) -> Recorded {
        Recorded {
            kind: Kind::Dir,
            unit: UnitName::from(format!("u{b}")),
            source_sha: None,
            stat: None,
        }
    }

    proptest! {
        /// Guards the merge: it does what a map's inserts and removes do.
        #[test]
        fn merge_is_a_map_update(
            old in proptest::collection::btree_map("[a-d/.]{1,4}", any::<u8>(), 0..20),
            changes in proptest::collection::btree_map("[a-d/.]{1,4}", proptest::option::of(any::<u8>()), 0..20),
        ) {
            let mut e = Entries::from_sorted(old.iter().map(|(p, b)| (p.clone(), rec(*b))).collect());
            e.merge(changes.iter().map(|(p, b)| (p.clone(), b.map(rec))));
            let mut want = old.clone();
            for (p, b) in &changes {
                match b {
                    Some(b) => { want.insert(p.clone(), *b); }
                    None => { want.remove(p); }
                }
            }
            let want: Vec<(String, Recorded)> = want.into_iter().map(|(p, b)| (p, rec(b))).collect();
            prop_assert_eq!(e.as_slice(), want.as_slice());
        }
    }
}
