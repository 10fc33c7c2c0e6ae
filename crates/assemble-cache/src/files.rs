//! A unit's source as planning reads it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use assemble_manifest::walk::Walked;
use assemble_manifest::{InputRecord, Stat};

use crate::{Error, Seal};

/// Where a unit's files come from: a folder the recipe names, read as it
/// is, or a folder of a sealed cache entry, whose files are checked
/// against its seal as they are read or walked (see the crate doc).
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
    /// The seal, and `root` relative to its entry (`""`: the entry).
    sealed: Option<(Arc<Seal>, String)>,
    /// `root`, opened once for the reads beneath it (`None`: it could not
    /// be; each read then resolves its path itself).
    dir: Arc<OnceLock<Option<OwnedFd>>>,
    /// Whether the stats a check vouched for may be written into the seal
    /// (not in a run that writes nothing).
    refresh: bool,
    /// The stats checks vouched for, shared by the folders of one entry:
    /// written into the seal by [`Files::keep_refreshes`], not while
    /// planning (which writes nothing).
    pending: Arc<std::sync::Mutex<Vec<(String, Stat, bool)>>>,
}

impl Files {
    /// A folder the recipe names (a `path` or `venv` unit, a vendored copy).
    pub fn plain(root: PathBuf) -> Files {
        Files {
            root,
            sealed: None,
            dir: Arc::default(),
            refresh: true,
            pending: Arc::default(),
        }
    }

    /// A sealed cache entry.
    pub fn sealed(seal: Seal) -> Files {
        Files {
            root: seal.entry().to_path_buf(),
            sealed: Some((Arc::new(seal), String::new())),
            dir: Arc::default(),
            refresh: true,
            pending: Arc::default(),
        }
    }

    /// The same folder, read without writing anything: what its checks
    /// vouched for is never written into the seal (a dry run's).
    pub fn read_only(mut self) -> Files {
        self.refresh = false;
        self
    }

    /// Writes into the seal the stats that checks since the last call
    /// vouched for, so that the next use trusts those files by stat: a
    /// seal that cannot be rewritten now is only slower next time. Does
    /// nothing for a plain or read-only folder.
    pub fn keep_refreshes(&self) {
        let Some((seal, _)) = self.sealed.as_ref().filter(|_| self.refresh) else {
            return;
        };
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !pending.is_empty() {
            let _ = seal.refresh(&pending);
        }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The seal this folder is checked against, if it is a cache entry's.
    pub fn seal(&self) -> Option<&Seal> {
        self.sealed.as_ref().map(|(s, _)| &**s)
    }

    /// The folder `rel` inside this one (a path already resolved inside it,
    /// `/`-separated), read the same way.
    pub fn sub(&self, rel: &str) -> Files {
        let rel = rel.trim_matches('/');
        Files {
            root: if rel.is_empty() {
                self.root.clone()
            } else {
                self.root.join(rel)
            },
            sealed: self
                .sealed
                .as_ref()
                .map(|(seal, prefix)| (seal.clone(), join(prefix, rel))),
            dir: Arc::default(),
            refresh: self.refresh,
            pending: self.pending.clone(),
        }
    }

    /// `path` (inside the folder) relative to it.
    fn relative<'p>(&self, path: &'p Path) -> std::io::Result<&'p str> {
        let rel = path.strip_prefix(&self.root).map_err(|_| {
            std::io::Error::other(format!(
                "{} is not inside {}",
                path.display(),
                self.root.display()
            ))
        })?;
        rel.to_str().ok_or_else(|| {
            std::io::Error::other(format!("{}: a name that is not UTF-8", path.display()))
        })
    }

    /// `path` (inside the folder) relative to its seal's entry.
    fn in_entry(&self, path: &Path, prefix: &str) -> std::io::Result<String> {
        Ok(join(prefix, self.relative(path)?))
    }

    /// The bytes of the file `path` (inside the folder, its links already
    /// resolved there: the seal knows a file by its own path), reached
    /// without a link out of the folder (`assemble_fs::open_beneath`); for
    /// a cache entry, checked against its seal (by the stat it was read
    /// with, or by the bytes' hash).
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, Error> {
        let rel = self.relative(path)?;
        let dir = self.dir.get_or_init(|| {
            rustix::fs::open(
                &self.root,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok()
        });
        let mut f = assemble_fs::open_beneath(&self.root, dir.as_ref().map(|d| d.as_fd()), rel)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes)?;
        if let Some((seal, prefix)) = &self.sealed {
            let stat = Stat::of(&f.metadata()?);
            seal.check_read(&self.in_entry(path, prefix)?, &stat, &bytes)?;
        }
        Ok(bytes)
    }

    /// Checks what a walk found at `top` (inside the folder; the first of
    /// `found`, whose paths are relative to it, `skip` being the walk's
    /// own) against the seal: the record of every file found, their hashes
    /// vouched for by the seal or just checked. `None` for a plain folder,
    /// whose files are hashed as inputs. The stats of files just checked
    /// by hash wait for [`Files::keep_refreshes`].
    pub fn check(
        &self,
        top: &Path,
        found: &[Walked],
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<Option<Vec<InputRecord>>, Error> {
        let Some((seal, prefix)) = &self.sealed else {
            return Ok(None);
        };
        let top = self.in_entry(top, prefix)?;
        let checked = seal.check_walk(&top, found, skip)?;
        if !checked.refreshed.is_empty() {
            self.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(checked.refreshed);
        }
        Ok(Some(checked.records))
    }
}

impl Files {
    /// Checks the whole folder (walked now) against the seal: for small
    /// entries used whole, such as uv's folder. A plain folder passes.
    pub fn check_whole(&self) -> Result<(), Error> {
        if self.sealed.is_none() {
            return Ok(());
        }
        let meta = fs_err::metadata(&self.root)?;
        let mut found = vec![Walked {
            rel: String::new(),
            kind: assemble_manifest::walk::FileKind::of(meta.file_type()),
            stat: Stat::of(&meta),
        }];
        if meta.is_dir() {
            found.extend(
                assemble_manifest::walk::walk(&self.root, &|_, _| {
                    assemble_manifest::walk::Visit::Descend
                })
                .map_err(std::io::Error::from)?,
            );
        }
        self.check(&self.root, &found, &|_| false)?;
        self.keep_refreshes();
        Ok(())
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}/{b}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use assemble_manifest::walk::{self, FileKind, Visit};

    /// An entry `e` (a package, a file, a link) sealed in a fresh folder.
    fn sealed() -> (tempfile::TempDir, Files) {
        let tmp = tempfile::tempdir().unwrap();
        let e = tmp.path().join("e");
        fs_err::create_dir_all(e.join("pkg/sub")).unwrap();
        fs_err::write(e.join("pkg/m.py"), "M = 1\n").unwrap();
        fs_err::write(e.join("pkg/sub/n.py"), "N = 1\n").unwrap();
        fs_err::write(e.join("pkg.txt"), "t").unwrap();
        std::os::unix::fs::symlink("pkg/m.py", e.join("l")).unwrap();
        Seal::make(&e).unwrap();
        let files = Files::sealed(Seal::load(&e).unwrap());
        (tmp, files)
    }

    /// What a plan does: walk `rel` of the entry and check it.
    fn walk_and_check(f: &Files, rel: &str) -> Result<Vec<InputRecord>, Error> {
        let top = f.root().join(rel);
        let meta = fs_err::symlink_metadata(&top).unwrap();
        let mut found = vec![Walked {
            rel: String::new(),
            kind: FileKind::of(meta.file_type()),
            stat: Stat::of(&meta),
        }];
        if meta.is_dir() {
            found.extend(walk::walk(&top, &|_, _| Visit::Descend).unwrap());
        }
        Ok(f.check(&top, &found, &|_| false)?.unwrap())
    }

    fn corrupt_at(r: Result<Vec<InputRecord>, Error>) -> String {
        match r {
            Err(Error::Corrupt(c)) => format!(
                "{}: {}",
                c.path.file_name().unwrap().to_string_lossy(),
                c.why
            ),
            other => panic!("not found corrupt: {other:?}"),
        }
    }

    #[test]
    fn an_unchanged_entry_checks_and_reads() {
        let (_t, f) = sealed();
        assert_eq!(walk_and_check(&f, "").unwrap().len(), 3);
        assert_eq!(walk_and_check(&f, "pkg").unwrap().len(), 2);
        assert_eq!(f.read(&f.root().join("pkg.txt")).unwrap(), b"t");
        // A sub-folder checks against the same seal.
        let sub = f.sub("pkg");
        assert_eq!(walk_and_check(&sub, "sub").unwrap().len(), 1);
        assert_eq!(sub.read(&sub.root().join("m.py")).unwrap(), b"M = 1\n");
    }

    #[test]
    fn every_change_is_corruption_but_a_touch() {
        let (_t, f) = sealed();
        let e = f.root().to_path_buf();
        // Same bytes, new stat: checked by hash, fine.
        fs_err::write(e.join("pkg/m.py"), "M = 1\n").unwrap();
        walk_and_check(&f, "").unwrap();
        fs_err::write(e.join("pkg/m.py"), "M = 2\n").unwrap();
        assert!(corrupt_at(walk_and_check(&f, "pkg")).starts_with("m.py: changed"));
        assert!(matches!(
            f.read(&e.join("pkg/m.py")),
            Err(Error::Corrupt(_))
        ));
        fs_err::write(e.join("pkg/m.py"), "M = 1\n").unwrap();
        fs_err::write(e.join("pkg/new.py"), "").unwrap();
        assert!(corrupt_at(walk_and_check(&f, "")).starts_with("new.py: not in the entry"));
        fs_err::remove_file(e.join("pkg/new.py")).unwrap();
        fs_err::remove_file(e.join("pkg/sub/n.py")).unwrap();
        assert!(corrupt_at(walk_and_check(&f, "pkg")).starts_with("n.py: missing"));
        fs_err::write(e.join("pkg/sub/n.py"), "N = 1\n").unwrap();
        walk_and_check(&f, "").unwrap();
        fs_err::remove_file(e.join("l")).unwrap();
        std::os::unix::fs::symlink("pkg.txt", e.join("l")).unwrap();
        assert!(corrupt_at(walk_and_check(&f, "")).starts_with("l: a link to pkg.txt"));
    }

    #[test]
    fn a_file_checked_by_hash_is_trusted_by_stat_after() {
        let (_t, f) = sealed();
        let e = f.root().to_path_buf();
        // Sealed a moment after it was written: racy, so checked by hash.
        let racy = f.seal().unwrap().get("pkg/m.py").unwrap().racy;
        assert!(racy, "written just before it was sealed");
        walk_and_check(&f, "").unwrap();
        // The refresh keeps it racy (still too recent); once old enough it
        // is trusted by stat: set the times back, as a later run sees it.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let file = fs_err::File::options()
            .write(true)
            .open(e.join("pkg/m.py"))
            .unwrap();
        file.file().set_modified(old).unwrap();
        drop(file);
        // A check writes nothing (planning writes nothing): the stats it
        // vouched for go into the seal when they are kept.
        let seal_bytes = || fs_err::read(crate::seal_path(&e)).unwrap();
        let before = seal_bytes();
        let again = Files::sealed(Seal::load(&e).unwrap());
        walk_and_check(&again, "").unwrap();
        assert_eq!(seal_bytes(), before, "a check wrote the seal");
        again.clone().read_only().keep_refreshes();
        assert_eq!(seal_bytes(), before, "a read-only folder keeps nothing");
        again.keep_refreshes();
        // (ctime is now: still racy until a later run refreshes it again.)
        let s = Seal::load(&e).unwrap();
        assert_eq!(
            s.get("pkg/m.py").unwrap().stat,
            Stat::of(&fs_err::metadata(e.join("pkg/m.py")).unwrap())
        );
    }
}
