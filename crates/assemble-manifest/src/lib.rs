//! The desired output manifest and the types it is made of, apart from the
//! code that writes it: the planner (`assemble-plan`) builds a [`Target`]
//! and the reconciler (`assemble-reconcile`) carries it out, and since the
//! planner depends on this crate only, it cannot reach the writer.
//!
//! - [`OutPath`] (in [`path`]): an output path, checked when it is made.
//! - [`Entry`] and [`Kind`]: what one output path is to be and where its
//!   bytes come from; a file's content hash is a [`Digest`], which may be
//!   known only after the copy (a clean build hashes what it copies as it
//!   copies it, reading each input once).
//! - [`InputCache`] (in `inputs`): the input stat cache, (device, inode)
//!   and stat -> sha256, kept in the state folder.
//! - [`walk`]: the parallel walk of an input tree.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod inputs;
pub mod path;
pub mod walk;

pub use inputs::{InputCache, InputRecord, Lookup, RACY_WINDOW};
pub use path::OutPath;

/// Bumped whenever the format of `state.bin` or `inputs.bin` changes; a file
/// of another version is read as "no state" and leads to a clean reconcile.
pub const STATE_VERSION: u32 = 9;

/// A sha256 digest, printed as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sha256(pub [u8; 32]);

/// As a byte string: one length and 32 bytes copied at once (serde's
/// `[u8; 32]` goes element by element), tens of thousands per state.
impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sha256, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Sha256;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Sha256, E> {
                v.try_into()
                    .map(Sha256)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

impl Sha256 {
    pub fn of(bytes: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// Hashes a file's content, streaming.
    pub fn of_file(path: &Path) -> io::Result<Sha256> {
        let (sha, _) = hash_stream(&mut fs_err::File::open(path)?, &[], |_| Ok(()))?;
        Ok(sha)
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hex())
    }
}

pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Reads `src` to its end through one buffer per thread, hashing `prefix`
/// and then the bytes read, and handing each chunk read to `sink` (a
/// copy's destination, or nothing). Returns the sha256 and whether the
/// whole starts like an ELF file.
pub fn hash_stream(
    src: &mut impl io::Read,
    prefix: &[u8],
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(Sha256, bool)> {
    use sha2::Digest;
    // One buffer per thread: zeroing a fresh one for each of thousands of
    // small files cost more than hashing them.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 256 * 1024]);
    }
    let mut h = sha2::Sha256::new();
    h.update(prefix);
    let mut head = prefix.to_vec();
    BUF.with_borrow_mut(|buf| -> io::Result<()> {
        loop {
            let n = src.read(buf)?;
            if n == 0 {
                return Ok(());
            }
            if head.len() < ELF_MAGIC.len() {
                let take = (ELF_MAGIC.len() - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            h.update(&buf[..n]);
            sink(&buf[..n])?;
        }
    })?;
    Ok((Sha256(h.finalize().into()), head.starts_with(ELF_MAGIC)))
}

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

    /// From `statx`, as `std` builds its metadata from it.
    pub fn of_statx(x: &rustix::fs::Statx) -> Stat {
        let ns = |t: &rustix::fs::StatxTimestamp| {
            t.tv_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.tv_nsec))
        };
        Stat {
            dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
            ino: x.stx_ino,
            size: x.stx_size,
            mtime_ns: ns(&x.stx_mtime),
            ctime_ns: ns(&x.stx_ctime),
            mode: u32::from(x.stx_mode),
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

/// Opens an input file that the plan stat'ed as `planned`, refusing
/// anything but that very file: a link now at its name (never followed),
/// another file put there (device and inode), or the file written since
/// (size and mtime). So what a run hashes, patches or copies is the file
/// its walk found inside the source, whatever happened to the name
/// meanwhile. The ctime is left out here: a hard link made to the file
/// elsewhere changes it, not the content (uv links its cache's files into
/// every venv it installs); the stat caches, which decide what need not be
/// read at all, do compare it.
pub fn open_input(path: &Path, planned: &Stat) -> io::Result<fs_err::File> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    let changed = || {
        io::Error::other(format!(
            "{} changed while this run was reading its inputs (it is no longer the file the plan found); run again",
            path.display()
        ))
    };
    let f = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                changed()
            } else {
                e
            }
        })?;
    let now = Stat::of(&f.metadata()?);
    if (now.dev, now.ino, now.size, now.mtime_ns)
        != (planned.dev, planned.ino, planned.size, planned.mtime_ns)
    {
        return Err(changed());
    }
    Ok(f)
}

/// A file's content hash as the manifest knows it.
///
/// A clean build leaves the hash of a copied input to the copy, which
/// reads the bytes anyway (each input is read once); such a digest is
/// [`Digest::AfterCopy`] and has no value to compare: whatever needs one
/// must ask [`Digest::known`] and handle its absence, or have the plan's
/// [`Target::hash_deferred`] fill it first. There is no zero placeholder
/// to mistake for a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Known(Sha256),
    /// To be computed by the apply while it copies the file.
    AfterCopy,
}

impl Digest {
    pub fn known(self) -> Option<Sha256> {
        match self {
            Digest::Known(s) => Some(s),
            Digest::AfterCopy => None,
        }
    }
}

/// What an output path is. In the recorded state a file's hash is a
/// [`Sha256`] and it has no content; in the desired manifest
/// ([`Wanted`]) its hash is a [`Digest`] and a file cannot lack the
/// [`Content`] it is written from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind<H = Sha256, C = ()> {
    Dir,
    File {
        sha256: H,
        executable: bool,
        /// Where its bytes come from (desired files only).
        #[serde(skip)]
        content: C,
    },
    Link {
        target: String,
    },
}

/// What a desired output path is: a file with its digest and content.
pub type Wanted = Kind<Digest, Content>;

impl<H, C> Kind<H, C> {
    pub fn is_dir(&self) -> bool {
        matches!(self, Kind::Dir)
    }
}

impl Kind {
    /// A recorded file.
    pub fn file(sha256: Sha256, executable: bool) -> Kind {
        Kind::File {
            sha256,
            executable,
            content: (),
        }
    }
}

impl Wanted {
    /// Its content, if it is a file.
    pub fn content(&self) -> Option<&Content> {
        match self {
            Kind::File { content, .. } => Some(content),
            _ => None,
        }
    }

    /// Whether a recorded kind is this one; a hash left to the copy
    /// matches nothing.
    pub fn matches(&self, recorded: &Kind) -> bool {
        match (self, recorded) {
            (Kind::Dir, Kind::Dir) => true,
            (
                Kind::File {
                    sha256, executable, ..
                },
                Kind::File {
                    sha256: r,
                    executable: x,
                    ..
                },
            ) => sha256.known() == Some(*r) && executable == x,
            (Kind::Link { target }, Kind::Link { target: t }) => target == t,
            _ => false,
        }
    }

    /// The kind with its hash, `None` for a file whose hash is left to the
    /// copy.
    pub fn known(&self) -> Option<Kind> {
        Some(match self {
            Kind::Dir => Kind::Dir,
            Kind::File {
                sha256, executable, ..
            } => Kind::file(sha256.known()?, *executable),
            Kind::Link { target } => Kind::Link {
                target: target.clone(),
            },
        })
    }
}

/// A recipe unit's name (`python-deps`, `authentik`): the one type every
/// crate names a unit with. Cheap to clone; read as a `&str`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitName(Arc<str>);

impl Serialize for UnitName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UnitName, D::Error> {
        String::deserialize(d).map(UnitName::from)
    }
}

impl UnitName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for UnitName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for UnitName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UnitName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for UnitName {
    fn as_ref(&self) -> &Path {
        Path::new(&*self.0)
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for UnitName {
    fn from(s: &str) -> UnitName {
        UnitName(Arc::from(s))
    }
}

impl From<String> for UnitName {
    fn from(s: String) -> UnitName {
        UnitName(Arc::from(s))
    }
}

impl PartialEq<str> for UnitName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for UnitName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// Where a file's bytes come from when it has to be written.
#[derive(Debug, Clone)]
pub enum Content {
    /// Copy this source file (its sha256 is the entry's).
    Copy(PathBuf),
    /// Write these bytes (patched or generated content).
    Bytes(Arc<[u8]>),
}

/// One desired output path.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Wanted,
    pub unit: UnitName,
    pub step: &'static str,
    /// The input it comes from, relative to the unit's source, if any.
    pub source: Option<Arc<str>>,
    /// That input's sha256 (for a patched file, before patching); `None`
    /// for generated content, and for a copy whose hash is left to it.
    pub source_sha: Option<Sha256>,
    /// For a copy, the input's stat as the plan's walk found it (`None`:
    /// not known yet, `lstat` it).
    pub input_stat: Option<Stat>,
}

impl Entry {
    pub fn dir(unit: &UnitName, step: &'static str) -> Entry {
        Entry {
            kind: Kind::Dir,
            unit: unit.clone(),
            step,
            source: None,
            source_sha: None,
            input_stat: None,
        }
    }

    pub fn link(unit: &UnitName, step: &'static str, target: impl Into<String>) -> Entry {
        Entry {
            kind: Kind::Link {
                target: target.into(),
            },
            ..Entry::dir(unit, step)
        }
    }

    pub fn bytes(
        unit: &UnitName,
        step: &'static str,
        bytes: impl Into<Arc<[u8]>>,
        executable: bool,
    ) -> Entry {
        let bytes = bytes.into();
        Entry {
            kind: Kind::File {
                sha256: Digest::Known(Sha256::of(&bytes)),
                executable,
                content: Content::Bytes(bytes),
            },
            ..Entry::dir(unit, step)
        }
    }

    /// A copy of `source`; its digest is [`Digest::AfterCopy`] until the
    /// plan hashes the input (or leaves it to the copy).
    pub fn copy(
        unit: &UnitName,
        step: &'static str,
        source: PathBuf,
        sha256: Digest,
        executable: bool,
    ) -> Entry {
        Entry {
            kind: Kind::File {
                sha256,
                executable,
                content: Content::Copy(source),
            },
            ..Entry::dir(unit, step)
        }
    }

    /// Records which input (relative to its unit) this entry comes from.
    pub fn from_source(mut self, source: &str) -> Entry {
        self.source = Some(Arc::from(source));
        self
    }

    /// Whether this is a file whose hash is left to the copy.
    pub fn after_copy(&self) -> bool {
        matches!(
            self.kind,
            Kind::File {
                sha256: Digest::AfterCopy,
                ..
            }
        )
    }
}

/// The desired output: path -> entry, sorted. The root itself is implicit.
/// Its keys are [`OutPath`]s: checked when they are made.
pub type Desired = BTreeMap<OutPath, Entry>;

/// A unit's fingerprint: its components and their values.
pub type Fingerprint = BTreeMap<Component, String>;

/// What a part of a unit's fingerprint is: of the unit's recipe, or of
/// the environment every unit shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Component {
    Source,
    InstallMappings,
    Symlinks,
    ExecutableMarks,
    /// A venv unit's `scripts`.
    Scripts,
    /// What builds a venv unit (pip, or uv at a version).
    Installer,
    /// A venv unit's `exclude`.
    Excluded,
    /// The unit's patch at this 1-based position (their order matters).
    Patch(usize),
    Env(Env),
}

/// A part of the environment that every unit's output depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Env {
    ToolVersion,
    Interpreter,
    /// `@out@`.
    Prefix,
    /// `@bash@`.
    Bash,
    /// `@webui@`.
    WebUi,
    AutopatchelfSettings,
}

impl fmt::Display for Component {
    /// As a sentence's subject: `patch 2`, `install mappings`, `interpreter`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::Source => f.write_str("source"),
            Component::InstallMappings => f.write_str("install mappings"),
            Component::Symlinks => f.write_str("symlinks"),
            Component::ExecutableMarks => f.write_str("executable marks"),
            Component::Scripts => f.write_str("scripts list"),
            Component::Installer => f.write_str("installer"),
            Component::Excluded => f.write_str("excluded distributions"),
            Component::Patch(n) => write!(f, "patch {n}"),
            Component::Env(e) => f.write_str(match e {
                Env::ToolVersion => "tool version",
                Env::Interpreter => "interpreter",
                Env::Prefix => "prefix (@out@)",
                Env::Bash => "bash (@bash@)",
                Env::WebUi => "web UI (@webui@)",
                Env::AutopatchelfSettings => "autoPatchelf settings",
            }),
        }
    }
}

/// Everything a run wants the output to be.
#[derive(Debug, Default)]
pub struct Target {
    pub desired: Desired,
    /// Unit name -> fingerprint.
    pub units: BTreeMap<UnitName, Fingerprint>,
    /// The input stat cache after this run's lookups.
    pub inputs: InputCache,
}

impl Target {
    /// Whether some copy's hash was left to the apply.
    pub fn has_deferred(&self) -> bool {
        self.desired.values().any(Entry::after_copy)
    }

    /// Hashes now the inputs whose hash was left to the apply: what a diff
    /// against a recorded state needs (the plan defers only when the output
    /// had no state, and another run may have recorded one since).
    pub fn hash_deferred(&mut self) -> io::Result<()> {
        use rayon::prelude::*;
        // Every run with a state calls this: a no-op must not pay for it.
        if !self.has_deferred() {
            return Ok(());
        }
        let inputs = &self.inputs;
        let records = self
            .desired
            .par_iter_mut()
            .filter(|(_, e)| e.after_copy())
            .map(|(_, e)| -> io::Result<InputRecord> {
                let Kind::File {
                    sha256,
                    content: Content::Copy(src),
                    ..
                } = &mut e.kind
                else {
                    return Err(io::Error::other("a deferred entry is not a copy"));
                };
                let (r, _) = inputs.record(src, e.input_stat)?;
                *sha256 = Digest::Known(r.sha256);
                e.source_sha = Some(r.sha256);
                Ok(r)
            })
            .collect::<io::Result<Vec<_>>>()?;
        self.inputs.add(records);
        Ok(())
    }
}
