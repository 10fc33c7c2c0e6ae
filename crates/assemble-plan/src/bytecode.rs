//! Bytecode: with `[python] compile-bytecode = true`, every `.py` file of
//! the tree, venv and app units alike, gets the `.pyc` its interpreter
//! would write (`DIR/__pycache__/NAME.<cache tag>.pyc`), as an ordinary
//! entry of the manifest: verified, repaired when it drifts, never removed
//! as a stray. The venv's own `__pycache__` files (pip writes them, with
//! timestamps of the folder it installed into) are left out for these.
//!
//! Deterministic: hash-based pycs (PEP 552), compiled with the file's path
//! in the tree as its name (see `assemble_install::compile`): no mtime, no
//! prefix enters them. *Checked* hashes: at import the interpreter hashes
//! the source (SipHash) and recompiles if it differs, so a source edited in
//! the tree by hand is never shadowed by its old bytecode until the next
//! assemble repairs both; unchecked ones skip that read, which saves a
//! few per cent of a start (docs/speed.md). That buys never running code
//! the file no longer says: checked.
//!
//! Incremental, and shared across outputs: a pyc is kept in the cache
//! (`<cache>/bytecode/<xx>/<key>.pyc`) under the sha256 of
//!
//! | part | why |
//! |---|---|
//! | `assemble-pyc-v1` | the layout's version |
//! | the interpreter's magic number and cache tag | the bytecode format |
//! | checked or unchecked | the header's flags |
//! | the file's path in the tree | compiled into the code objects |
//! | the source's sha256 | the content |
//!
//! so a run compiles only the sources whose key is new (a one-file edit:
//! that file), all of them in one interpreter process per core, under the
//! bytecode cache's lock (a run that needs a source another is compiling
//! waits for it, then takes its pyc). A source that does not compile is a
//! warning naming it, as `compileall` reports it, and has no pyc; its key's
//! `.err` file remembers why, so that later runs warn without compiling it
//! again. A source whose pyc's name would pass 255 bytes has none, as in
//! CPython, and a warning.
//!
//! A cached pyc is a file entry (`assemble_cache::digest`): the compiler
//! writes its digest link `<key>.pyc.sha256` before it links the pyc into
//! place (never over one already there), and compiles only bytes whose
//! sha256 is the one in the key. A use takes it when the output's input
//! stat cache vouches for its stat (such records of cache files are made
//! only after a check), else hashes it against its digest link; one that
//! does not match is discarded, compiled again, and said.

use std::sync::atomic::Ordering;

use assemble_manifest::{
    Content, Digest, Entry, InputRecord, Kind, Sha256, Stat, UnitName, path::OutPath,
};
use rayon::prelude::*;
use sha2::Digest as _;

use crate::{Builder, CompileJob, Compiled, Context, Error, Hashing};

/// Hash-based pycs that the interpreter checks against the source: how
/// the sources stage compiles them.
pub const CHECKED: bool = true;

/// Whether `path` is a source that gets a pyc.
pub(crate) fn is_source(path: &str) -> bool {
    path.ends_with(".py") && !path.contains("/__pycache__/")
}

/// Whether `path` is bytecode an installer left beside a source.
fn is_cached_bytecode(path: &str) -> bool {
    path.ends_with(".pyc") && (path.starts_with("__pycache__/") || path.contains("/__pycache__/"))
}

/// What the bytecode step did, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytecode {
    /// Sources compiled by this run.
    pub compiled: usize,
    /// Sources whose pyc came from the cache.
    pub cached: usize,
    /// Sources whose pyc came from the shared cache (`--cache-registry`).
    pub pulled: usize,
    /// Sources that do not compile (each a warning).
    pub failed: usize,
}

/// A source to have a pyc: borrowed from the manifest, which is not
/// changed until the pycs go in.
struct Source<'a> {
    path: &'a str,
    unit: &'a UnitName,
    key: String,
    /// The source's sha256 (its key's part).
    sha: Sha256,
    /// The input file, or the bytes (patched content) to compile.
    content: &'a Content,
}

/// A pyc entry ready for the manifest: the `__pycache__` folder it goes
/// in, its path, the entry.
type Ready = (String, OutPath, Entry);

/// The bytecode step's work: where pycs are kept, how they are checked,
/// and what it found so far.
struct Step<'a> {
    py: &'a assemble_python::Interpreter,
    /// `<cache>/bytecode`.
    root: std::path::PathBuf,
    hashing: &'a Hashing<'a>,
    ready: Vec<Ready>,
    records: Vec<InputRecord>,
    warnings: Vec<String>,
    counts: Bytecode,
}

impl Step<'_> {
    fn pyc_of(&self, key: &str) -> std::path::PathBuf {
        self.root.join(&key[..2]).join(format!("{key}.pyc"))
    }

    fn err_of(&self, key: &str) -> std::path::PathBuf {
        self.root.join(&key[..2]).join(format!("{key}.err"))
    }

    fn cached(&self, s: &Source<'_>) -> Result<Cached, Error> {
        cached_pyc(&self.pyc_of(&s.key), self.hashing)
    }

    /// The pyc of `s` goes into the tree: a copy of its cache file,
    /// checked as `r` says, in `DIR/__pycache__/NAME.TAG.pyc`.
    fn take(&mut self, s: &Source<'_>, r: InputRecord) -> Result<(), Error> {
        let (dir, file) = match s.path.rsplit_once('/') {
            Some((d, f)) => (format!("{d}/"), f),
            None => (String::new(), s.path),
        };
        let stem = file.strip_suffix(".py").unwrap_or(file);
        let cache_dir = format!("{dir}__pycache__");
        let target = OutPath::new(format!("{cache_dir}/{stem}.{}.pyc", self.py.cache_tag))
            .map_err(|source| Error::BadPath {
                unit: s.unit.clone(),
                source,
            })?;
        let mut e = Entry::copy(
            s.unit,
            "bytecode",
            self.pyc_of(&s.key),
            Digest::Known(r.sha256),
            false,
        );
        e.input_stat = Some(r.stat);
        self.ready.push((cache_dir, target, e));
        self.records.push(r);
        Ok(())
    }

    /// The whole set of pycs of each of `units`, from `all` the sources.
    fn sets<'s>(
        &self,
        all: &'s [Source<'_>],
        units: &std::collections::BTreeSet<&'s str>,
    ) -> Vec<crate::PycSet<'s>> {
        let mut keys: std::collections::BTreeMap<&str, Vec<&str>> =
            std::collections::BTreeMap::new();
        for s in all {
            let unit: &str = s.unit.as_ref();
            if units.contains(unit) {
                keys.entry(unit).or_default().push(&s.key);
            }
        }
        keys.into_iter()
            .map(|(unit, mut members)| {
                members.sort_unstable();
                let mut h = sha2::Sha256::new();
                for part in std::iter::once("assemble-pyc-set-v1").chain(members.iter().copied()) {
                    h.update((part.len() as u64).to_le_bytes());
                    h.update(part.as_bytes());
                }
                crate::PycSet {
                    unit,
                    key: hex::encode(h.finalize()),
                    members: members.iter().map(|k| self.pyc_of(k)).collect(),
                }
            })
            .collect()
    }

    /// The sources the cache lacks (or holds corrupt), compiled by the
    /// sources stage (`make`), their pycs then taken; a source that did
    /// not compile before is said again, not compiled. A dry run's `make`
    /// compiles nothing: the count is said instead.
    fn compile_missing(
        &mut self,
        make: &dyn crate::Make,
        all: &[Source<'_>],
        wanted: Vec<(&Source<'_>, Option<Box<assemble_cache::Corrupt>>)>,
        would_make: &mut Vec<crate::WouldMake>,
    ) -> Result<(), Error> {
        let mut jobs = Vec::new();
        let mut pending = Vec::new();
        for (s, corrupt) in wanted {
            if let Ok(why) = fs_err::read_to_string(self.err_of(&s.key)) {
                self.counts.failed += 1;
                self.warnings.push(not_compiled(s.unit, s.path, why.trim()));
                continue;
            }
            jobs.push(CompileJob {
                unit: s.unit.as_ref(),
                path: s.path,
                sha: s.sha,
                content: s.content,
                pyc: self.pyc_of(&s.key),
                err: self.err_of(&s.key),
                corrupt: corrupt.is_some(),
            });
            pending.push((s, corrupt));
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let units: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.unit).collect();
        let sets = self.sets(all, &units);
        let Some(results) = make.compile(&jobs, &sets)? else {
            would_make.push(crate::WouldMake::step(format!(
                "{} sources would be compiled to bytecode",
                jobs.len()
            )));
            return Ok(());
        };
        drop(jobs);
        for ((s, corrupt), result) in pending.into_iter().zip(results) {
            if let Some(c) = corrupt {
                self.warnings
                    .push(format!("{c}; discarded, compiled again"));
            }
            match result {
                Compiled::Fails(why) => {
                    self.counts.failed += 1;
                    self.warnings.push(not_compiled(s.unit, s.path, &why));
                    continue;
                }
                Compiled::Done => self.counts.compiled += 1,
                Compiled::Cached => self.counts.cached += 1,
                Compiled::Pulled => self.counts.pulled += 1,
            }
            let Cached::Ready(r) = self.cached(s)? else {
                return Err(std::io::Error::other(format!(
                    "{}: compiled, but not found complete in the cache",
                    self.pyc_of(&s.key).display()
                ))
                .into());
            };
            self.take(s, r)?;
        }
        Ok(())
    }
}

/// Adds a pyc for every source in `b` (see the module doc): one stat of
/// each cached pyc (through the input cache, which also gives its hash),
/// a compile of the missing ones. Returns the input records of the pycs.
pub(crate) fn plan_bytecode(
    b: &mut Builder,
    ctx: &Context,
    hashing: &Hashing<'_>,
    counts: &mut Bytecode,
) -> Result<Vec<InputRecord>, Error> {
    let stale: Vec<OutPath> = b
        .desired
        .keys()
        .filter(|p| is_cached_bytecode(p))
        .cloned()
        .collect();
    for p in stale {
        b.desired.remove(&p);
    }
    let mut step = Step {
        py: &ctx.python,
        root: ctx.cache.join("bytecode"),
        hashing,
        ready: Vec::new(),
        records: Vec::new(),
        warnings: Vec::new(),
        counts: Bytecode::default(),
    };
    let make = b.make;
    let mut would_make = Vec::new();
    {
        let sources = sources(&b.desired, step.py, &mut step.warnings)?;
        // The cached pycs, looked up in parallel.
        let looked: Vec<Cached> = sources
            .par_iter()
            .map(|s| step.cached(s))
            .collect::<Result<_, Error>>()?;
        let mut wanted = Vec::new();
        for (s, found) in sources.iter().zip(looked) {
            match found {
                Cached::Ready(r) => {
                    step.counts.cached += 1;
                    step.take(s, r)?;
                }
                Cached::Missing => wanted.push((s, None)),
                Cached::Corrupt(c) => wanted.push((s, Some(c))),
            }
        }
        step.compile_missing(make, &sources, wanted, &mut would_make)?;
        if make.offers() {
            let units = sources.iter().map(|s| s.unit.as_ref()).collect();
            make.offer_pycs(&step.sets(&sources, &units))?;
        }
    }
    b.would_make.extend(would_make);
    *counts = step.counts;
    finish(b, step.ready, step.warnings, step.records)
}

/// The manifest's sources that get a pyc, keyed; a source whose pyc's
/// name would be too long for a file system gets none, as CPython writes
/// none for it: said in `warnings`, not a failed build.
fn sources<'a>(
    desired: &'a assemble_manifest::Desired,
    py: &assemble_python::Interpreter,
    warnings: &mut Vec<String>,
) -> Result<Vec<Source<'a>>, Error> {
    let max_stem = 255 - format!(".{}.pyc", py.cache_tag).len();
    let too_long = |path: &str| {
        let file = path.rsplit_once('/').map_or(path, |(_, f)| f);
        file.strip_suffix(".py").unwrap_or(file).len() > max_stem
    };
    warnings.extend(
        desired
            .iter()
            .filter(|(path, _)| is_source(path) && too_long(path))
            .map(|(path, e)| {
                format!(
                    "unit {}: {path} has no .pyc: its name leaves no room for the pyc's ({} bytes at most before `.py`), and CPython writes none for it either; shorten the name if it is to have one",
                    e.unit, max_stem
                )
            }),
    );
    desired
        .iter()
        .filter(|(path, _)| is_source(path) && !too_long(path))
        .collect::<Vec<_>>()
        .into_par_iter()
        .filter_map(|(path, e)| match &e.kind {
            Kind::File {
                sha256, content, ..
            } => Some((path, e, sha256, content)),
            _ => None,
        })
        .map(|(path, e, sha256, content)| {
            let Digest::Known(sha) = sha256 else {
                // Sources are hashed before this step; a deferred one is a bug.
                return Err(Error::Unit {
                    unit: e.unit.clone(),
                    message: format!("{path}: no content hash to key its bytecode by"),
                });
            };
            Ok(Source {
                path: path.as_str(),
                unit: &e.unit,
                key: key(py, path, sha),
                sha: *sha,
                content,
            })
        })
        .collect()
}

/// The pycs `ready` into the manifest in one merge, with the warnings.
fn finish(
    b: &mut Builder,
    ready: Vec<(String, OutPath, Entry)>,
    warnings: Vec<String>,
    records: Vec<InputRecord>,
) -> Result<Vec<InputRecord>, Error> {
    // Each `__pycache__` folder, then the pycs (a folder may hold pycs
    // compiled now and pycs from the cache).
    let mut batch = Vec::with_capacity(ready.len() + ready.len() / 8);
    let mut last_dir = String::new();
    for (cache_dir, target, e) in ready {
        if cache_dir != last_dir {
            batch.push((cache_dir.clone(), Entry::dir(&e.unit, "bytecode")));
            last_dir = cache_dir;
        }
        batch.push((target.into(), e));
    }
    b.warnings.extend(warnings);
    b.insert_sorted(batch)?;
    Ok(records)
}

/// What the cache holds for a source's pyc.
enum Cached {
    /// A pyc checked: vouched for by the output's input stat cache (whose
    /// records of cache files are made only after such a check), or hashed
    /// against its digest link.
    Ready(InputRecord),
    Missing,
    /// Not what it was made as (or without its record).
    Corrupt(Box<assemble_cache::Corrupt>),
}

/// Looks up the cached pyc `pyc` (see [`Cached`]); a hash counts as a read.
fn cached_pyc(pyc: &std::path::Path, h: &Hashing<'_>) -> Result<Cached, Error> {
    let meta = match std::fs::symlink_metadata(pyc) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cached::Missing),
        Err(e) => {
            return Err(std::io::Error::new(e.kind(), format!("{}: {e}", pyc.display())).into());
        }
    };
    let stat = Stat::of(&meta);
    if let Some(r) = h.inputs.vouched(&stat) {
        return Ok(Cached::Ready(r));
    }
    match assemble_cache::digest::check(pyc, &stat) {
        Ok(r) => {
            h.hashed.fetch_add(1, Ordering::Relaxed);
            h.hashed_bytes.fetch_add(stat.size, Ordering::Relaxed);
            // Kept as any input's record: racy if written just now.
            Ok(Cached::Ready(h.inputs.record_of(stat, r.sha256, r.elf)))
        }
        Err(assemble_cache::Error::Corrupt(c)) => Ok(Cached::Corrupt(c)),
        Err(assemble_cache::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Cached::Missing)
        }
        Err(assemble_cache::Error::Io(e)) => Err(e.into()),
    }
}

/// The cache key of the pyc of the source `path` whose content is `sha`.
fn key(py: &assemble_python::Interpreter, path: &str, sha: &Sha256) -> String {
    let mut h = sha2::Sha256::new();
    for part in [
        b"assemble-pyc-v1".as_slice(),
        py.magic.as_bytes(),
        py.cache_tag.as_bytes(),
        if CHECKED { b"checked" } else { b"unchecked" },
        path.as_bytes(),
        &sha.0,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

fn not_compiled(unit: &str, path: &str, why: &str) -> String {
    format!("unit {unit}: {path} does not compile ({why}); it has no .pyc")
}
