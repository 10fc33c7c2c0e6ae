//! Small answers about files, cached under a key made of the file's path
//! and stat.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest;

use crate::files::{Durability, write_atomic};

/// A folder of JSON answers, one file per key. The key is the sha256 of
/// the names given and of the file's device, inode, size, mtime and ctime
/// (to the nanosecond), in a fixed little-endian encoding: stable across
/// builds of the tool and platforms, unlike `std`'s `DefaultHasher`, and
/// changed by any edit of the file (ctime cannot be set back).
///
/// A cache only: an entry that cannot be read or parsed is a miss, and a
/// failed write costs only the work next time.
#[derive(Debug, Clone)]
pub struct StatCache {
    dir: PathBuf,
}

impl StatCache {
    pub fn new(dir: impl Into<PathBuf>) -> StatCache {
        StatCache { dir: dir.into() }
    }

    /// The key of `names` (paths or other strings the answer depends on)
    /// and of the stat `meta` of the file it is about.
    pub fn key(names: &[&Path], meta: &std::fs::Metadata) -> String {
        let mut h = sha2::Sha256::new();
        for n in names {
            let b = n.as_os_str().as_encoded_bytes();
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        }
        for v in [meta.dev(), meta.ino(), meta.size()] {
            h.update(v.to_le_bytes());
        }
        for v in [
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ] {
            h.update(v.to_le_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The answer stored under `key`, if there is a readable one.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = crate::files::read(&self.path(key)).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores `value` under `key`, best effort.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) {
        if let Some(memo) = self.memo(key, value) {
            memo.store();
        }
    }

    /// `value` under `key`, to store later (see [`Memo`]); `None` if it
    /// cannot be encoded.
    pub fn memo<T: Serialize>(&self, key: &str, value: &T) -> Option<Memo> {
        Some(Memo {
            path: self.path(key),
            json: serde_json::to_vec(value).ok()?,
        })
    }
}

/// An answer computed by code that writes nothing (the planner), kept for
/// whoever may write (a run, not a dry run) to store.
#[derive(Debug, Clone)]
pub struct Memo {
    path: PathBuf,
    json: Vec<u8>,
}

impl Memo {
    /// Stores it, best effort: a failed write costs only the work next
    /// time.
    pub fn store(&self) {
        if let Some(dir) = self.path.parent()
            && fs_err::create_dir_all(dir).is_ok()
        {
            let _ = write_atomic(&self.path, &self.json, Durability::Unsynced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the key's stability: the same path and stat give the same
    /// key in every build (a fixed value would catch a change of encoding,
    /// but stat values differ per machine; equality and sensitivity do not).
    #[test]
    fn the_key_follows_path_and_content_and_answers_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs_err::write(&f, "one").unwrap();
        let m = fs_err::metadata(&f).unwrap();
        let k = StatCache::key(&[&f], &m);
        assert_eq!(k, StatCache::key(&[&f], &m));
        assert_eq!(k.len(), 32);
        assert_ne!(k, StatCache::key(&[Path::new("/other")], &m));
        fs_err::write(&f, "two!").unwrap();
        let m2 = fs_err::metadata(&f).unwrap();
        assert_ne!(k, StatCache::key(&[&f], &m2));
        let cache = StatCache::new(tmp.path().join("cache"));
        assert_eq!(cache.get::<String>(&k), None);
        cache.put(&k, &"answer".to_string());
        assert_eq!(cache.get::<String>(&k).as_deref(), Some("answer"));
    }
}
