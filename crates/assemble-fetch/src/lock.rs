//! `assemble.lock`: what the recipe's unpinned sources resolved to, as
//! flake.lock, Cargo.lock and uv.lock record it. The recipe says what is
//! wanted (a github repository at a tag); the lock records the NAR hash the
//! source had when it was locked, and every later fetch is checked against
//! it. An inline `hash =` in the recipe needs no entry and wins.
//!
//! ```toml
//! version = 1
//!
//! [[source]]
//! unit = "authentik"
//! source = "github goauthentik/authentik at version/2026.2.0"
//! hash = "sha256-..."
//! ```
//!
//! An entry applies only while its `source` line is the unit's (the
//! recipe's source with no hash, see `Lockfile::key`): change the tag, and
//! the entry is stale.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assemble_nar::Hash;
use assemble_recipe::Remote;
use serde::{Deserialize, Serialize};

use crate::Error;

const VERSION: u32 = 1;

/// The lock file of a recipe: `assemble.lock` beside it.
#[derive(Debug, Clone)]
pub struct Lockfile {
    pub path: PathBuf,
    /// Unit -> (its source line, the hash it resolved to).
    entries: BTreeMap<String, (String, Hash)>,
    changed: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disk {
    version: u32,
    #[serde(default)]
    source: Vec<DiskEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskEntry {
    unit: String,
    source: String,
    hash: String,
}

/// What the lock says of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Hash(Hash),
    /// No entry for the unit.
    Missing,
    /// An entry for another source (the recipe changed since).
    Stale,
}

impl Lockfile {
    /// The lock file beside `recipe`; empty if there is none. A file that
    /// cannot be read as a lock is an error naming it (never silently
    /// replaced: it may pin what a packager checked).
    pub fn load(recipe: &Path) -> Result<Lockfile, Error> {
        let path = recipe.with_file_name("assemble.lock");
        let mut lock = Lockfile {
            path,
            entries: BTreeMap::new(),
            changed: false,
        };
        let text = match assemble_fs::files::read_named_text(
            &lock.path,
            assemble_fs::files::NAMED_FILE_LIMIT,
        ) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(lock),
            Err(e) => return Err(e.into()),
        };
        let bad = |why: String| Error::Lockfile {
            path: lock.path.clone(),
            why,
        };
        let disk: Disk = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if disk.version != VERSION {
            return Err(bad(format!(
                "version {} is not {VERSION}, the one this tool writes; remove the file and run `cargo xtask lock`",
                disk.version
            )));
        }
        for e in disk.source {
            let hash =
                Hash::parse(&e.hash).map_err(|err| bad(format!("unit {}: {err}", e.unit)))?;
            lock.entries.insert(e.unit, (e.source, hash));
        }
        Ok(lock)
    }

    /// The line a source is locked under: what the recipe says, without a
    /// hash. `None` for a source that needs no entry (its hash is inline).
    pub fn key(remote: &Remote) -> Option<String> {
        match remote {
            Remote::Github {
                owner,
                repo,
                rev,
                hash: None,
            } => Some(format!("github {owner}/{repo} at {rev}")),
            _ => None,
        }
    }

    pub fn get(&self, unit: &str, key: &str) -> Locked {
        match self.entries.get(unit) {
            Some((k, h)) if k == key => Locked::Hash(*h),
            Some(_) => Locked::Stale,
            None => Locked::Missing,
        }
    }

    pub fn set(&mut self, unit: &str, key: String, hash: Hash) {
        if self.entries.get(unit) != Some(&(key.clone(), hash)) {
            self.entries.insert(unit.to_string(), (key, hash));
            self.changed = true;
        }
    }

    /// Drops the entries of units that are gone or need none.
    pub fn retain(&mut self, units: &[&str]) {
        let before = self.entries.len();
        self.entries.retain(|u, _| units.contains(&u.as_str()));
        self.changed |= self.entries.len() != before;
    }

    /// Whether [`Lockfile::store`] has anything to write.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Writes the lock (atomically) if it changed.
    pub fn store(&mut self) -> Result<(), Error> {
        if !self.changed {
            return Ok(());
        }
        let disk = Disk {
            version: VERSION,
            source: self
                .entries
                .iter()
                .map(|(unit, (source, hash))| DiskEntry {
                    unit: unit.clone(),
                    source: source.clone(),
                    hash: hash.to_sri(),
                })
                .collect(),
        };
        let body = toml::to_string(&disk).map_err(|e| Error::Lockfile {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let text = format!(
            "# Written by `cargo xtask lock` (and `assemble` for a missing entry): what each\n# unpinned source of the recipe resolved to. Commit it; do not edit it.\n\n{body}"
        );
        assemble_fs::write_atomic(
            &self.path,
            text.as_bytes(),
            assemble_fs::Durability::Unsynced,
        )?;
        self.changed = false;
        Ok(())
    }
}
