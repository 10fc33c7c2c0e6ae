//! The lock file's part of a run: the hashes the recipe leaves out are
//! taken from `assemble.lock`, and a missing or stale entry is resolved
//! (fetched, hashed, recorded) unless the run is `--locked`.

use std::path::Path;

use assemble_fetch::{Fetcher, Locked, Lockfile, Target};
use assemble_recipe::{Recipe, Remote, Source};

use crate::{Error, Event};

/// What locking did to one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedUnit {
    pub unit: String,
    /// The source line it is locked under.
    pub source: String,
    /// SRI.
    pub hash: String,
    pub status: LockStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockStatus {
    /// As the lock had it.
    Unchanged,
    /// Resolved now: the lock had no entry, or one for another source.
    Added,
    /// Fetched again on request (`--update`), whatever the lock had.
    Updated,
}

/// Fills in the recipe's missing hashes from its lock file. Entries that
/// are missing or stale are resolved by fetching, unless `locked` (then
/// the run fails naming the unit) or `offline`; units in `update` are
/// fetched again. The lock file is written when it changed. Every source
/// is fetched into the cache by its hash, so the plan finds it there.
pub(crate) fn resolve(
    recipe: &mut Recipe,
    cache: &Path,
    locked: bool,
    offline: bool,
    update: &[String],
    progress_bar: bool,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Vec<LockedUnit>, Error> {
    for u in update {
        if !recipe.units.iter().any(|x| {
            x.name == *u && matches!(&x.source, Source::Remote(r) if Lockfile::key(r).is_some())
        }) {
            return Err(Error::Option {
                flag: "--update",
                message: format!(
                    "{u} names no unit of {} whose source the lock pins (a github source without `hash`)",
                    recipe.file.display()
                ),
            });
        }
    }
    let lock_err = |source| Error::Lock {
        recipe: recipe.file.clone(),
        source,
    };
    let mut lock = Lockfile::load(&recipe.file).map_err(lock_err)?;
    let mut fetcher = Fetcher::new(cache.to_path_buf());
    fetcher.progress_bar = progress_bar;
    let mut done = Vec::new();
    let mut keep = Vec::new();
    for unit in &mut recipe.units {
        let Source::Remote(remote) = &mut unit.source else {
            continue;
        };
        let Some(key) = Lockfile::key(remote) else {
            continue;
        };
        keep.push(unit.name.clone());
        let forced = update.contains(&unit.name);
        let (hash, status) = match lock.get(&unit.name, &key) {
            Locked::Hash(h) if !forced => (h, LockStatus::Unchanged),
            found => {
                if locked {
                    return Err(Error::Locked {
                        unit: unit.name.clone(),
                        lock: lock.path.clone(),
                        why: match found {
                            Locked::Stale => {
                                "is stale: it pins another source than the recipe's; run `cargo xtask lock` (--locked forbids updating it)"
                            }
                            _ => {
                                "has no entry for it; run `cargo xtask lock` (--locked forbids adding one)"
                            }
                        },
                    });
                }
                if offline {
                    return Err(Error::Locked {
                        unit: unit.name.clone(),
                        lock: lock.path.clone(),
                        why: "has no entry for it, and --offline forbids fetching it to find its hash; run `cargo xtask lock` once online",
                    });
                }
                let Remote::Github {
                    owner, repo, rev, ..
                } = &*remote
                else {
                    continue;
                };
                events(Event::Preparing(&format!("{}: locking {key}", unit.name)));
                let target = Target::Github {
                    owner: owner.clone(),
                    repo: repo.clone(),
                    rev: rev.clone(),
                };
                let (h, _) = fetcher.prefetch(&target).map_err(|source| Error::Fetch {
                    unit: unit.name.clone(),
                    source,
                })?;
                let status = if forced {
                    LockStatus::Updated
                } else {
                    LockStatus::Added
                };
                (h, status)
            }
        };
        lock.set(&unit.name, key.clone(), hash);
        if let Remote::Github { hash: slot, .. } = remote {
            *slot = Some(hash);
        }
        done.push(LockedUnit {
            unit: unit.name.clone(),
            source: key,
            hash: hash.to_sri(),
            status,
        });
    }
    // A --locked run never changes the lock, not even to drop the entries
    // of units the recipe no longer has.
    if !locked {
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        lock.retain(&keep);
        lock.store().map_err(lock_err)?;
    }
    Ok(done)
}
