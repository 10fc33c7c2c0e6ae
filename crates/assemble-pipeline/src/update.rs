//! `cargo xtask update UNIT (--tag T | --rev R) [--dry-run]`: bumping a
//! pin in one command. The recipe's line is changed in memory, the new
//! source fetched and hashed, and the recipe so changed planned as a dry
//! run (every patch must still apply); only then are the recipe and
//! `assemble.lock` written, the recipe with every other byte as it was.
//! A failure at any step changes nothing.

use std::path::PathBuf;

use assemble_nar::Hash;
use assemble_recipe::edit::{EditError, Pin, set_pin};
use assemble_recipe::{Recipe, Remote, Source, UnitName};

use crate::{Error, Event, EventReporter, Mode, Options, assemble_with};

/// What `update` changed (or, with `dry_run`, would change).
#[derive(Debug, Clone)]
pub struct Updated {
    pub unit: UnitName,
    /// The recipe file whose line changed.
    pub file: PathBuf,
    pub old: Pin,
    pub new: Pin,
    /// The old source's hash, when the recipe or the lock had one.
    pub old_hash: Option<Hash>,
    pub new_hash: Hash,
    /// Where the new hash is kept: the recipe's `hash`, else the lock.
    pub inline: bool,
    /// Whether the recipe and the lock were written.
    pub written: bool,
}

/// Moves unit `unit` of the recipe `opts.recipe` names to `pin`: fetches
/// it, hashes it, plans the result, then writes the recipe and the lock
/// (unless `dry_run`). A patch that no longer applies fails the plan,
/// and nothing is written.
pub fn update(
    opts: &Options,
    unit: &str,
    pin: Pin,
    dry_run: bool,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Updated, Error> {
    let recipe = Recipe::load(&opts.recipe)?;
    let (old_hash, inline) = current_hash(&recipe, unit)?;
    let text = assemble_recipe::read_text(&recipe.file).map_err(|e| Error::Inputs {
        recipe: recipe.file.clone(),
        source: e,
    })?;
    let unwritten = |e: EditError| Error::Option {
        flag: "update",
        message: format!(
            "{}: {e}; the pin may come from a recipe it extends: run update with --recipe naming that file",
            recipe.file.display()
        ),
    };
    let (edited, old) = set_pin(&text, unit, &pin, None).map_err(unwritten)?;
    let mut next = Recipe::parse(&recipe.file, &edited)?;
    unpin(&mut next, unit);
    let reporter = EventReporter { events };
    let policy = if opts.offline {
        assemble_cache::Policy::Offline
    } else {
        assemble_cache::Policy::Make
    };
    let (done, _, mut lock) = assemble_sources::resolve_lock_unstored(
        &mut next,
        &opts.cache,
        policy,
        false,
        &[unit.to_string()],
        &reporter,
    )?;
    let new_hash = done
        .iter()
        .find(|d| d.unit == unit)
        .and_then(|d| Hash::parse(&d.hash).ok())
        .ok_or_else(|| Error::Option {
            flag: "update",
            message: format!("unit {unit}: its new source was not resolved"),
        })?;
    let edited = if inline {
        let (with_hash, _) =
            set_pin(&text, unit, &pin, Some(&new_hash.to_sri())).map_err(unwritten)?;
        next = Recipe::parse(&recipe.file, &with_hash)?;
        with_hash
    } else {
        edited
    };
    // Every unit planned against the new source: a patch that no longer
    // applies fails here, before anything is written.
    assemble_with(opts, Mode::DryRun, next, events)?;
    if !dry_run {
        assemble_fs::write_atomic(
            &recipe.file,
            edited.as_bytes(),
            assemble_fs::Durability::Synced,
        )
        .map_err(|e| Error::Inputs {
            recipe: recipe.file.clone(),
            source: e,
        })?;
        lock.store()
            .map_err(|source| assemble_sources::Error::Lock {
                recipe: recipe.file.clone(),
                source,
            })?;
    }
    Ok(Updated {
        unit: UnitName::from(unit),
        file: recipe.file.clone(),
        old,
        new: pin,
        old_hash,
        new_hash,
        inline,
        written: !dry_run,
    })
}

/// The hash unit `unit` is pinned to now, and whether the recipe writes
/// it (`hash =`) rather than the lock. Only `github` units move by tag or
/// rev.
fn current_hash(recipe: &Recipe, unit: &str) -> Result<(Option<Hash>, bool), Error> {
    let usage = |message: String| Error::Option {
        flag: "update",
        message,
    };
    let u = recipe
        .unit(unit)
        .ok_or_else(|| usage(recipe.no_unit_named(unit)))?;
    let Source::Remote(remote @ Remote::Github { .. }) = &u.source else {
        return Err(usage(format!(
            "unit {unit} is not a `github` source; for another kind, change the recipe and print the new hash with `cargo xtask prefetch`"
        )));
    };
    if let Some(h) = remote.hash() {
        return Ok((Some(h), true));
    }
    Ok((assemble_sources::locked_hash(recipe, unit)?, false))
}

/// Forgets unit `unit`'s inline hash: the new source is hashed anew.
fn unpin(recipe: &mut Recipe, unit: &str) {
    for u in &mut recipe.units {
        if u.name == unit
            && let Source::Remote(Remote::Github { hash, .. }) = &mut u.source
        {
            *hash = None;
        }
    }
}
