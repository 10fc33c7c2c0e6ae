//! The cache shared through an OCI registry (`--cache-registry
//! REGISTRY/REPOSITORY`): before an entry is made, it is asked for by its
//! key; what comes is checked, then enters the cache as a local entry
//! does; what is made here is pushed (unless read-only).
//!
//! # What is checked, and what a registry could do
//!
//! Every blob is checked against its digest as it arrives (`assemble-registry`);
//! the manifest must be this tool's artifact for the key asked (its
//! `artifactType`, its kind and key annotations); the tree is unpacked
//! into a folder of its own (confined by construction: `pack::unpack`),
//! sealed there as any entry is, and its seal must equal the listing it
//! was pushed with, path for path: kind, sha256, executable bit, link
//! target. Only then is it renamed into the cache. A set of file
//! entries (a unit's pycs, a patched file) is taken file by file
//! (`pack::unpack_files`): each name one the caller places, each file's
//! bytes hashed against the listing before it is written, its digest link
//! made after; a refused set leaves none of its files.
//!
//! A fetched tree's key is its NAR hash, and the fetcher checks it again
//! when it is pulled. The other keys are sha256s of everything that
//! decides an entry's content, not of the content itself: a venv's key is its lock, interpreter and
//! installer; a pyc's is its source's path and sha256 and the
//! interpreter's magic; a patched ELF file's is its input's sha256 and the
//! runpath decision. So whoever may push to the repository can put there
//! an entry that is consistent in itself but was not built from those
//! inputs; the checks above stop corruption and a registry that serves
//! other bytes than were pushed, not a malicious pusher. Give push rights
//! to the machines that build (CI), and read the rest with
//! `--cache-registry-read-only`. A registry that withholds or refuses
//! only makes a run build locally.

mod artifact;
mod pack;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use assemble_cache::{Member, Seal, SharedEntry, SharedError};
use assemble_registry::Registry;

pub use artifact::{ARTIFACT_TYPE, Origin};

/// How the shared cache is used.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `REGISTRY/REPOSITORY`.
    pub repository: String,
    /// Plain http to a registry that is not on loopback.
    pub insecure: bool,
    /// Pull, never push.
    pub read_only: bool,
    /// A registry that fails, or an entry it holds that is refused, fails
    /// the run instead of being warned of.
    pub required: bool,
    /// Offer every entry a run uses, not only those it makes (`cache
    /// push`).
    pub offer_all: bool,
}

/// What the shared cache did in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Entries taken from the registry, and their compressed size.
    pub pulled: u64,
    pub pulled_bytes: u64,
    /// Entries the registry lacked.
    pub missed: u64,
    /// Entries the registry had, refused.
    pub refused: u64,
    /// Entries pushed, and their compressed size.
    pub pushed: u64,
    pub pushed_bytes: u64,
    /// Entries offered that the registry had already.
    pub present: u64,
}

/// An entry the registry holds, as `cache ls` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Held {
    pub tag: String,
    pub kind: String,
    pub unit: Option<String>,
    pub what: String,
    pub package: String,
    pub package_version: String,
    pub tool_version: String,
    /// The compressed size of its blobs.
    pub bytes: u64,
}

/// The shared cache of a run.
pub struct Remote {
    registry: Registry,
    settings: Settings,
    origin: Origin,
    /// `<cache>/share`: blobs on their way in or out.
    scratch: PathBuf,
    /// Set when the registry could not be reached: not asked again.
    down: AtomicBool,
    pulled: AtomicU64,
    pulled_bytes: AtomicU64,
    missed: AtomicU64,
    refused: AtomicU64,
    pushed: AtomicU64,
    pushed_bytes: AtomicU64,
    present: AtomicU64,
    warnings: Mutex<Vec<String>>,
}

impl Remote {
    /// The shared cache `settings` name, for entries of `cache`. Contacts
    /// nothing yet: only a repository that is not a reference fails.
    pub fn connect(
        settings: Settings,
        origin: Origin,
        cache: &Path,
    ) -> Result<Remote, SharedError> {
        let registry = Registry::connect(&settings.repository, settings.insecure).map_err(|e| {
            SharedError {
                registry: settings.repository.clone(),
                what: "the repository".into(),
                tag: String::new(),
                why: e.to_string(),
            }
        })?;
        Ok(Remote {
            registry,
            origin,
            scratch: cache.join("share"),
            settings,
            down: AtomicBool::new(false),
            pulled: AtomicU64::new(0),
            pulled_bytes: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            pushed_bytes: AtomicU64::new(0),
            present: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
        })
    }

    /// What it did so far.
    pub fn tally(&self) -> Tally {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Tally {
            pulled: n(&self.pulled),
            pulled_bytes: n(&self.pulled_bytes),
            missed: n(&self.missed),
            refused: n(&self.refused),
            pushed: n(&self.pushed),
            pushed_bytes: n(&self.pushed_bytes),
            present: n(&self.present),
        }
    }

    /// The warnings so far, taken.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every entry of this tool the repository holds (tags of other
    /// artifacts are left out).
    pub fn list(&self) -> Result<Vec<Held>, SharedError> {
        let fail = |tag: &str, why: String| self.error("the repository", tag, why);
        let mut held = Vec::new();
        for tag in self.registry.tags().map_err(|e| fail("", e.to_string()))? {
            let Some((bytes, _)) = self
                .registry
                .pull_manifest_tagged(&tag, &[artifact::MANIFEST_TYPE])
                .map_err(|e| fail(&tag, e.to_string()))?
            else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<artifact::Manifest>(&bytes) else {
                continue;
            };
            if m.artifact_type != ARTIFACT_TYPE {
                continue;
            }
            let said = |k: &str| m.annotations.get(k).cloned().unwrap_or_default();
            held.push(Held {
                kind: said(artifact::KIND),
                unit: m.annotations.get(artifact::UNIT).cloned(),
                what: said(artifact::TITLE),
                package: said(artifact::PACKAGE),
                package_version: said(artifact::PACKAGE_VERSION),
                tool_version: said(artifact::TOOL_VERSION),
                bytes: m.layers.iter().map(|l| l.size).sum(),
                tag,
            });
        }
        held.sort_by(|a, b| (&a.package, &a.kind, &a.what).cmp(&(&b.package, &b.kind, &b.what)));
        Ok(held)
    }

    fn error(&self, what: &str, tag: &str, why: String) -> SharedError {
        SharedError {
            registry: self.registry.reference().to_string(),
            what: what.to_string(),
            tag: tag.to_string(),
            why,
        }
    }

    /// A failure about `entry`: the run's error when the shared cache is
    /// required, else a warning. `unreachable`: the registry is not asked
    /// again in this run.
    fn failed(
        &self,
        entry: &SharedEntry<'_>,
        doing: &str,
        why: String,
        unreachable: bool,
    ) -> Result<(), SharedError> {
        let e = self.error(
            &entry.what,
            &artifact::tag(entry),
            format!("{doing}: {why}"),
        );
        if self.settings.required {
            return Err(e);
        }
        if unreachable {
            if self.down.swap(true, Ordering::Relaxed) {
                return Ok(());
            }
            self.warn(format!(
                "{e}; not asked again in this run, everything is built here"
            ));
        } else {
            self.warn(e.to_string());
        }
        Ok(())
    }

    fn warn(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w);
    }

    fn scratch_file(&self) -> std::io::Result<tempfile::TempPath> {
        fs_err::create_dir_all(&self.scratch)?;
        Ok(tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&self.scratch)?
            .into_temp_path())
    }

    /// The manifest of `entry`'s tag, if the registry has one.
    fn manifest(
        &self,
        entry: &SharedEntry<'_>,
    ) -> Result<Option<Vec<u8>>, assemble_registry::Error> {
        Ok(self
            .registry
            .pull_manifest_tagged(&artifact::tag(entry), &[artifact::MANIFEST_TYPE])?
            .map(|(bytes, _)| bytes))
    }

    /// The listing and the tree of `entry` (whose manifest is
    /// `manifest`), each checked against its digest; their size.
    fn pull_blobs(
        &self,
        entry: &SharedEntry<'_>,
        manifest: &[u8],
    ) -> Result<(artifact::Listing, tempfile::TempPath, u64), Refused> {
        let m: artifact::Manifest = serde_json::from_slice(manifest)
            .map_err(|e| Refused::Content(format!("its manifest is not one: {e}")))?;
        let (listing, tree) = m.layers_for(entry).map_err(Refused::Content)?;
        let listing_file = self.scratch_file().map_err(Refused::Local)?;
        self.registry
            .pull_blob(&listing.digest, &listing_file)
            .map_err(Refused::registry)?;
        let listed: artifact::Listing =
            serde_json::from_slice(&fs_err::read(&listing_file).map_err(Refused::Local)?)
                .map_err(|e| Refused::Content(format!("its listing is not one: {e}")))?;
        let tree_file = self.scratch_file().map_err(Refused::Local)?;
        self.registry
            .pull_blob(&tree.digest, &tree_file)
            .map_err(Refused::registry)?;
        Ok((listed, tree_file, listing.size + tree.size))
    }

    /// Asks for `entry` and, when the registry has it, takes it with
    /// `take` (given its manifest): what `take` gave, counted; `None` for
    /// a miss, or when it failed and the shared cache is not required.
    fn pulling<T>(
        &self,
        entry: &SharedEntry<'_>,
        take: impl FnOnce(&[u8]) -> Result<(T, u64), Refused>,
    ) -> Result<Option<T>, SharedError> {
        if self.down.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let manifest = match self.manifest(entry) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.missed.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => {
                self.failed(entry, "asking for it", e.to_string(), true)?;
                return Ok(None);
            }
        };
        match take(&manifest) {
            Ok((taken, bytes)) => {
                self.pulled.fetch_add(1, Ordering::Relaxed);
                self.pulled_bytes.fetch_add(bytes, Ordering::Relaxed);
                Ok(Some(taken))
            }
            Err(Refused::Registry(why)) => {
                self.failed(entry, "pulling it", why, true)?;
                Ok(None)
            }
            Err(Refused::Content(why)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.failed(
                    entry,
                    "refused",
                    format!("{why}; built here instead"),
                    false,
                )?;
                Ok(None)
            }
            Err(Refused::Local(e)) => {
                self.failed(entry, "pulling it", e.to_string(), false)?;
                Ok(None)
            }
        }
    }
}

/// Why an entry the registry holds was not taken.
enum Refused {
    /// The registry failed (not reached, or it refused).
    Registry(String),
    /// What it holds is not the entry (a digest, a listing that differs).
    Content(String),
    /// This machine could not write the blob.
    Local(std::io::Error),
}

impl Refused {
    fn registry(e: assemble_registry::Error) -> Refused {
        match e {
            assemble_registry::Error::Registry { why, .. } => Refused::Registry(why),
            assemble_registry::Error::Digest { what, got, .. } => {
                Refused::Content(format!("{what} has digest {got}"))
            }
            assemble_registry::Error::Io { path, source } => Refused::Local(std::io::Error::new(
                source.kind(),
                format!("{}: {source}", path.display()),
            )),
        }
    }
}

/// Unpacks the tree `from` into `into` and seals it there: its seal
/// must be `listed`, path for path.
fn unpack_checked(from: &Path, into: &Path, listed: &[artifact::Listed]) -> Result<(), String> {
    let seal = pack::unpack(from, into)
        .and_then(|()| Seal::make(into))
        .map_err(|e| format!("its tree: {e}"))?;
    let got: Vec<artifact::Listed> = seal
        .entries()
        .iter()
        .map(|s| artifact::Listed {
            path: s.path.clone(),
            what: artifact::What::of(&s.kind),
        })
        .collect();
    match first_difference(listed, &got) {
        None => Ok(()),
        Some(why) => Err(format!("its tree is not what its listing says: {why}")),
    }
}

/// The first path where the listing and the unpacked tree differ, said.
fn first_difference(listed: &[artifact::Listed], got: &[artifact::Listed]) -> Option<String> {
    for i in 0..listed.len().max(got.len()) {
        match (listed.get(i), got.get(i)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) if a.path == b.path => {
                return Some(format!("{}: {:?}, listed as {:?}", a.path, b.what, a.what));
            }
            (Some(a), _) => return Some(format!("{}: listed, not in the tree", a.path)),
            (None, Some(b)) => return Some(format!("{}: in the tree, not listed", b.path)),
            (None, None) => break,
        }
    }
    None
}

impl assemble_cache::Shared for Remote {
    fn pull(&self, entry: &SharedEntry<'_>, into: &Path) -> Result<bool, SharedError> {
        let taken = self.pulling(entry, |manifest| {
            let (listed, tree, bytes) = self.pull_blobs(entry, manifest)?;
            match unpack_checked(&tree, into, &listed.paths) {
                Ok(()) => Ok(((), bytes)),
                Err(why) => {
                    let _ = assemble_cache::remove(into);
                    Err(Refused::Content(why))
                }
            }
        })?;
        Ok(taken.is_some())
    }

    fn pull_files(
        &self,
        entry: &SharedEntry<'_>,
        place: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Result<Option<Vec<PathBuf>>, SharedError> {
        self.pulling(entry, |manifest| {
            let (listed, tree, bytes) = self.pull_blobs(entry, manifest)?;
            let placed =
                pack::unpack_files(&tree, &listed.paths, place).map_err(Refused::Content)?;
            Ok((placed, bytes))
        })
    }

    fn push(&self, entry: &SharedEntry<'_>, members: &[Member]) -> Result<(), SharedError> {
        if self.settings.read_only || self.down.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.manifest(entry) {
            Ok(Some(_)) => {
                self.present.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => return self.failed(entry, "asking for it", e.to_string(), true),
        }
        match self.push_new(entry, members) {
            Ok(bytes) => {
                self.pushed.fetch_add(1, Ordering::Relaxed);
                self.pushed_bytes.fetch_add(bytes, Ordering::Relaxed);
                Ok(())
            }
            Err(Refused::Registry(why)) => self.failed(entry, "pushing it", why, true),
            Err(Refused::Content(why)) => self.failed(entry, "pushing it", why, false),
            Err(Refused::Local(e)) => self.failed(entry, "pushing it", e.to_string(), false),
        }
    }

    fn refused(&self, entry: &SharedEntry<'_>, why: String) -> Result<(), SharedError> {
        self.pulled.fetch_sub(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.failed(entry, "refused", format!("{why}; made here instead"), false)
    }

    fn offers_all(&self) -> bool {
        self.settings.offer_all && !self.settings.read_only
    }
}

impl Remote {
    /// Uploads `entry`'s blobs the registry lacks, then its manifest under
    /// its tag: the compressed size.
    fn push_new(&self, entry: &SharedEntry<'_>, members: &[Member]) -> Result<u64, Refused> {
        let listing = artifact::Listing {
            kind: entry.kind.word().to_string(),
            key: entry.key.to_string(),
            paths: members
                .iter()
                .map(|m| artifact::Listed {
                    path: m.path.clone(),
                    what: artifact::What::of(&m.kind),
                })
                .collect(),
        };
        let listing_file = self.scratch_file().map_err(Refused::Local)?;
        let bytes = serde_json::to_vec(&listing).map_err(|e| Refused::Local(e.into()))?;
        fs_err::write(&listing_file, &bytes).map_err(Refused::Local)?;
        let tree_file = self.scratch_file().map_err(Refused::Local)?;
        pack::write(members, &tree_file).map_err(|e| Refused::Content(e.to_string()))?;
        let empty_file = self.scratch_file().map_err(Refused::Local)?;
        fs_err::write(&empty_file, artifact::EMPTY).map_err(Refused::Local)?;
        let mut descriptors = Vec::new();
        for (path, media_type) in [
            (&listing_file, artifact::LISTING_TYPE),
            (&tree_file, artifact::TREE_TYPE),
            (&empty_file, artifact::EMPTY_TYPE),
        ] {
            let (digest, size) =
                assemble_registry::digest_of_file(path).map_err(Refused::registry)?;
            if !self.registry.has_blob(&digest).map_err(Refused::registry)? {
                self.registry
                    .push_blob(path, &digest, size)
                    .map_err(Refused::registry)?;
            }
            descriptors.push(artifact::Descriptor {
                media_type: media_type.to_string(),
                digest,
                size,
            });
        }
        let tree = descriptors.swap_remove(1);
        let listing = descriptors.swap_remove(0);
        let size = listing.size + tree.size;
        let manifest = artifact::manifest(entry, &self.origin, listing, tree);
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Refused::Local(e.into()))?;
        self.registry
            .push_manifest_tagged(&artifact::tag(entry), &bytes, artifact::MANIFEST_TYPE)
            .map_err(Refused::registry)?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree packed from a sealed folder, then its listing with one
    /// file's hash changed: unpacked, sealed, refused naming that file.
    #[test]
    fn a_tree_that_is_not_its_listing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("entry");
        fs_err::create_dir_all(entry.join("bin")).unwrap();
        fs_err::write(entry.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs_err::write(entry.join("data.txt"), b"data").unwrap();
        std::os::unix::fs::symlink("data.txt", entry.join("link")).unwrap();
        let seal = Seal::make(&entry).unwrap();
        let members = assemble_cache::members_of(&seal);
        let tree = dir.path().join("tree.tar.zst");
        pack::write(&members, &tree).unwrap();
        let mut listed: Vec<artifact::Listed> = members
            .iter()
            .map(|m| artifact::Listed {
                path: m.path.clone(),
                what: artifact::What::of(&m.kind),
            })
            .collect();
        unpack_checked(&tree, &dir.path().join("good"), &listed).unwrap();
        let data = listed.iter_mut().find(|l| l.path == "data.txt").unwrap();
        data.what = artifact::What::File {
            sha256: "00".repeat(32),
            executable: false,
        };
        let why = unpack_checked(&tree, &dir.path().join("bad"), &listed).unwrap_err();
        assert!(why.contains("data.txt"), "{why}");
    }
}
