//! The lock file's part of a run: the hashes the recipe leaves out are
//! taken from `assemble.lock`, and a missing or stale entry is resolved
//! (fetched, hashed, recorded) unless the run is `--locked`.

use std::path::Path;

use assemble_cache::{Policy, Reporter};
use assemble_fetch::{Fetcher, Locked, Lockfile, Target};
use assemble_recipe::{Recipe, Remote, Source, UnitName};

use crate::Error;

/// What locking did to one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedUnit {
    pub unit: UnitName,
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
/// the run fails naming the unit) or the policy forbids it (offline: the
/// run fails; a dry run: the unit is said in the second list, what would
/// be done); units in `update` are fetched again. The lock file is written
/// when it changed, except in a dry run. Every source is fetched into the
/// cache by its hash, so the plan finds it there.
pub fn resolve_lock(
    recipe: &mut Recipe,
    cache: &Path,
    policy: Policy,
    locked: bool,
    update: &[String],
    reporter: &dyn Reporter,
) -> Result<(Vec<LockedUnit>, Vec<assemble_plan::WouldMake>), Error> {
    let (done, would, mut lock) =
        resolve_lock_unstored(recipe, cache, policy, locked, update, reporter)?;
    // A --locked run never changes the lock, not even to drop the entries
    // of units the recipe no longer has.
    if !locked && policy.writes() {
        lock.store().map_err(|source| Error::Lock {
            recipe: recipe.file.clone(),
            source,
        })?;
    }
    Ok((done, would))
}

/// As [`resolve_lock`], the lock file left unwritten: returned as it
/// would be stored (the entries of units the recipe no longer pins
/// dropped), for a caller that writes it only once more has been checked
/// (`cargo xtask update`).
pub fn resolve_lock_unstored(
    recipe: &mut Recipe,
    cache: &Path,
    policy: Policy,
    locked: bool,
    update: &[String],
    reporter: &dyn Reporter,
) -> Result<(Vec<LockedUnit>, Vec<assemble_plan::WouldMake>, Lockfile), Error> {
    let pinned: Vec<&str> = recipe
        .units
        .iter()
        .filter(|x| matches!(&x.source, Source::Remote(r) if Lockfile::key(r).is_some()))
        .map(|x| x.name.as_str())
        .collect();
    for u in update {
        if !pinned.contains(&u.as_str()) {
            // A typo of a unit the lock pins, or of any unit of the recipe.
            let all: Vec<&str> = recipe.units.iter().map(|x| x.name.as_str()).collect();
            let hint = assemble_recipe::suggest(u, &pinned)
                .or_else(|| assemble_recipe::suggest(u, &all))
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            return Err(Error::Update {
                message: format!(
                    "{u} names no unit of {} whose source the lock pins (a github source without `hash`){hint}",
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
    let fetcher = Fetcher::new(assemble_fetch::Config::new(cache.to_path_buf()), reporter);
    let mut done = Vec::new();
    let mut would = Vec::new();
    let mut keep = Vec::new();
    for unit in &mut recipe.units {
        let Source::Remote(remote) = &mut unit.source else {
            continue;
        };
        let Some(key) = Lockfile::key(remote) else {
            continue;
        };
        keep.push(unit.name.clone());
        let forced = update.iter().any(|u| unit.name == u.as_str());
        let (hash, status) = match lock.get(&unit.name, &key) {
            Locked::Hash(h) if !forced => (h, LockStatus::Unchanged),
            found => {
                // What the entry held: a hash, one for another source, none.
                let before = match found {
                    Locked::Hash(h) => Some(Some(h)),
                    Locked::Stale => Some(None),
                    Locked::Missing => None,
                };
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
                if policy == Policy::Look {
                    would.push(assemble_plan::WouldMake::unit(
                        &unit.name,
                        format!(
                            "{key} would be fetched to record its hash in {}",
                            lock.path.display()
                        ),
                    ));
                    continue;
                }
                if policy == Policy::Offline {
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
                reporter.starting(&format!("{}: locking {key}", unit.name));
                let target = Target::Github {
                    owner: owner.clone(),
                    repo: repo.clone(),
                    rev: rev.clone(),
                };
                let (h, _) = fetcher.prefetch(&target).map_err(|source| Error::Fetch {
                    unit: unit.name.clone(),
                    source,
                })?;
                // Fetched again: updated only if it resolves to another hash.
                let status = match before {
                    Some(Some(b)) if b == h => LockStatus::Unchanged,
                    Some(_) => LockStatus::Updated,
                    None => LockStatus::Added,
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
    let keep: Vec<&str> = keep.iter().map(UnitName::as_str).collect();
    lock.retain(&keep);
    Ok((done, would, lock))
}

/// The hash `assemble.lock` records for unit `unit` of `recipe` under
/// its current source line; `None` when it has no such entry.
pub fn locked_hash(recipe: &Recipe, unit: &str) -> Result<Option<assemble_recipe::Hash>, Error> {
    let lock = Lockfile::load(&recipe.file).map_err(|source| Error::Lock {
        recipe: recipe.file.clone(),
        source,
    })?;
    let key = recipe.unit(unit).and_then(|u| match &u.source {
        Source::Remote(r) => Lockfile::key(r),
        _ => None,
    });
    Ok(match key.map(|k| lock.get(unit, &k)) {
        Some(Locked::Hash(h)) => Some(h),
        _ => None,
    })
}
