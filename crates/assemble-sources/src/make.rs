//! The cache entries planning asks for: pycs, patched ELF files, data
//! scripts recovered from wheels (see `assemble_plan::Make`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assemble_cache::{Member, SealedKind, Shared, SharedEntry, SharedKind};
use assemble_cache::{Policy, Reporter};
use assemble_manifest::{Content, InputRecord, Sha256};
use assemble_plan::{CompileJob, Compiled, Error, Make, PatchJob, PycSet};
use assemble_python::Dist;

use crate::Config;

/// Makes what planning asks for, as the configuration's policy allows:
/// with `Policy::Look`, nothing (each answer is `None`).
pub struct Maker<'a> {
    pub config: &'a Config,
    pub reporter: &'a dyn Reporter,
}

impl Make for Maker<'_> {
    fn compile(
        &self,
        jobs: &[CompileJob<'_>],
        sets: &[PycSet<'_>],
    ) -> Result<Option<Vec<Compiled>>, Error> {
        if !self.config.policy.writes() {
            return Ok(None);
        }
        let shared = self.config.shared().map(|s| (s, sets));
        compile(
            &self.config.python,
            jobs,
            shared,
            &self.config.cache,
            self.reporter,
        )
        .map(Some)
    }

    fn patch(&self, job: &PatchJob<'_>) -> Result<Option<()>, Error> {
        if !self.config.policy.writes() {
            return Ok(None);
        }
        let Some(shared) = self.config.shared() else {
            return patch(job).map(Some);
        };
        let key = entry_key(job.dest);
        let entry = elf_entry(&key, &job.decision.path);
        // Missing, or corrupt (the planner checked it): discarded first.
        if std::fs::symlink_metadata(job.dest).is_ok() {
            assemble_cache::digest::discard(job.dest)?;
        }
        let place = |name: &str| (name == key).then(|| job.dest.to_path_buf());
        if shared.pull_files(&entry, &place)?.is_some() {
            return Ok(Some(()));
        }
        patch(job)?;
        offer_patched(shared, job.dest, &job.decision.path)?;
        Ok(Some(()))
    }

    fn offers(&self) -> bool {
        self.config.shared().is_some_and(|s| s.offers_all())
    }

    fn offer_pycs(&self, sets: &[PycSet<'_>]) -> Result<(), Error> {
        let Some(shared) = self.config.shared() else {
            return Ok(());
        };
        for set in sets {
            if let Some(members) = pyc_members(set) {
                shared.push(&pyc_entry(set), &members)?;
            }
        }
        Ok(())
    }

    fn offer_patched(&self, dest: &Path, path: &str) -> Result<(), Error> {
        match self.config.shared() {
            Some(shared) => offer_patched(shared, dest, path),
            None => Ok(()),
        }
    }

    fn recover(&self, dist: &Dist, script: &str) -> Result<Option<(PathBuf, InputRecord)>, Error> {
        let policy = self.config.policy;
        match assemble_install::recover_data_script(
            dist,
            script,
            &self.config.python,
            &self.config.cache,
            policy,
        ) {
            Ok(found) => Ok(Some(found)),
            Err(assemble_install::Error::Offline { .. }) if policy == Policy::Look => Ok(None),
            Err(assemble_install::Error::Corrupt(c)) => Err(Error::Corrupt(c)),
            Err(e) => Err(Error::Make {
                what: format!("the wheel of {} {}", dist.name, dist.version),
                source: Box::new(e),
            }),
        }
    }
}

/// Compiles `jobs` into the bytecode cache: under its lock, so that a
/// source is compiled by one run (another that needs it meanwhile waits,
/// then takes what the first made); what is there by then is taken, a
/// corrupt pyc discarded first; generated or patched sources written to a
/// folder of this run's own; one interpreter per core. A source that does
/// not compile has its complaint kept beside its key.
fn compile(
    python: &assemble_python::Interpreter,
    jobs: &[CompileJob<'_>],
    shared: Option<(&dyn Shared, &[PycSet<'_>])>,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Vec<Compiled>, Error> {
    let root = cache.join("bytecode");
    fs_err::create_dir_all(&root).map_err(|e| unwritable(&root, e))?;
    let _lock = assemble_fs::lock::exclusive(&root.join(".lock"), &|| {
        reporter.waiting("the bytecode cache")
    })
    .map_err(|e| unwritable(&root, e))?;
    // Each unit's whole set from the shared cache, if it has it; the sets
    // it lacks are offered once compiled.
    let mut pulled = Pulled::default();
    let mut missed = Vec::new();
    if let Some((shared, sets)) = shared {
        let place = |name: &str| {
            let key = name.strip_suffix(".pyc")?;
            (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| root.join(&key[..2]).join(name))
        };
        for set in sets {
            let entry = pyc_entry(set);
            match shared.pull_files(&entry, &place)? {
                Some(placed) => pulled.0.extend(placed),
                None => missed.push((set, entry)),
            }
        }
    }
    let mut results: Vec<Option<Compiled>> = vec![None; jobs.len()];
    let mut todo = Vec::new();
    let mut scratch: Option<tempfile::TempDir> = None;
    for (i, job) in jobs.iter().enumerate() {
        if pulled.0.contains(&job.pyc) {
            // Just written, hashed as it was and checked.
            results[i] = Some(Compiled::Pulled);
            continue;
        }
        if let Ok(why) = fs_err::read_to_string(&job.err) {
            results[i] = Some(Compiled::Fails(why.trim().to_string()));
            continue;
        }
        if std::fs::symlink_metadata(&job.pyc).is_ok() {
            let fine = job.pyc.metadata().is_ok_and(|m| {
                assemble_cache::digest::check(&job.pyc, &assemble_manifest::Stat::of(&m)).is_ok()
            });
            if fine {
                // Made by another run meanwhile.
                results[i] = Some(Compiled::Cached);
                continue;
            }
            assemble_cache::digest::discard(&job.pyc)?;
        }
        let bucket = job.pyc.parent().unwrap_or(&root);
        fs_err::create_dir_all(bucket).map_err(|e| unwritable(&root, e))?;
        let source = match job.content {
            Content::Copy(src) => src.clone(),
            Content::Bytes(bytes) => {
                let dir = match &scratch {
                    Some(d) => d,
                    None => scratch.insert(
                        tempfile::Builder::new()
                            .prefix(".sources-")
                            .tempdir_in(&root)
                            .map_err(|e| unwritable(&root, e))?,
                    ),
                };
                let file = dir.path().join(format!("{}.py", job.sha.hex()));
                fs_err::write(&file, bytes)?;
                file
            }
        };
        todo.push((
            i,
            assemble_install::compile::Job {
                source,
                sha256: job.sha.0,
                dfile: job.path.to_string(),
                dest: job.pyc.clone(),
            },
        ));
    }
    if !todo.is_empty() {
        let n = todo.len();
        reporter.step(&format!(
            "bytecode: compiling {n} source{}",
            if n == 1 { "" } else { "s" }
        ));
    }
    let compiled = compile_parallel(python, &todo)?;
    drop(scratch);
    for ((i, job), result) in todo.iter().zip(compiled) {
        results[*i] = Some(match result {
            assemble_install::compile::Compiled::Done => Compiled::Done,
            assemble_install::compile::Compiled::Fails(why) => {
                // Kept, so that later runs warn without compiling.
                let _ = assemble_fs::files::write_atomic(
                    &jobs[*i].err,
                    why.as_bytes(),
                    assemble_fs::files::Durability::Unsynced,
                );
                Compiled::Fails(why)
            }
            assemble_install::compile::Compiled::Changed => {
                return Err(std::io::Error::other(format!(
                    "{} changed while this run was reading its inputs; run again",
                    job.source.display()
                ))
                .into());
            }
        });
    }
    if let Some((shared, _)) = shared {
        for (set, entry) in missed {
            if let Some(members) = pyc_members(set) {
                shared.push(&entry, &members)?;
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(Compiled::Done))
        .collect())
}

/// The name of the file entry `file`: its key.
fn entry_key(file: &Path) -> String {
    file.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The shared cache's entry for the patched file of key `key`, for the
/// tree's `path`.
fn elf_entry<'k>(key: &'k str, path: &str) -> SharedEntry<'k> {
    SharedEntry {
        kind: SharedKind::Elf,
        key,
        unit: None,
        what: format!("{path} patched"),
    }
}

/// Offers the patched file `dest` (for the tree's `path`).
fn offer_patched(shared: &dyn Shared, dest: &Path, path: &str) -> Result<(), Error> {
    let key = entry_key(dest);
    if let Some(m) = file_member(&key, dest, true) {
        shared.push(&elf_entry(&key, path), &[dir_member(dest), m])?;
    }
    Ok(())
}

/// The shared cache's entry for a unit's pycs.
fn pyc_entry<'s>(set: &'s PycSet<'_>) -> SharedEntry<'s> {
    SharedEntry {
        kind: SharedKind::Bytecode,
        key: &set.key,
        unit: Some(set.unit),
        what: format!(
            "the bytecode of {} ({} sources)",
            set.unit,
            set.members.len()
        ),
    }
}

/// The members of a unit's set of pycs: each pyc the cache holds with
/// its record (a source that does not compile has none); `None` when
/// there is none.
fn pyc_members(set: &PycSet<'_>) -> Option<Vec<Member>> {
    let mut members = vec![dir_member(&set.members[0])];
    members.extend(
        set.members
            .iter()
            .filter_map(|pyc| file_member(pyc.file_name()?.to_str()?, pyc, false)),
    );
    members.sort_by(|a, b| a.path.cmp(&b.path));
    (members.len() > 1).then_some(members)
}

/// The entry's folder, as a member (its path `""`).
fn dir_member(any: &Path) -> Member {
    Member {
        path: String::new(),
        from: any.to_path_buf(),
        kind: SealedKind::Dir,
    }
}

/// The file entry `file` as the member `name`, its sha256 its digest
/// link's; `None` without one.
fn file_member(name: &str, file: &Path, executable: bool) -> Option<Member> {
    let sha256 = assemble_cache::digest::recorded(file)?;
    Some(Member {
        path: name.to_string(),
        from: file.to_path_buf(),
        kind: SealedKind::File {
            sha256,
            executable,
            elf: false,
        },
    })
}

/// The file entries taken from the shared cache in this call.
#[derive(Default)]
struct Pulled(std::collections::HashSet<PathBuf>);

/// One interpreter per core, each with its share of the jobs.
fn compile_parallel(
    python: &assemble_python::Interpreter,
    todo: &[(usize, assemble_install::compile::Job)],
) -> Result<Vec<assemble_install::compile::Compiled>, Error> {
    let jobs: Vec<assemble_install::compile::Job> = todo.iter().map(|(_, j)| j.clone()).collect();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = jobs.len().div_ceil(cores).max(64);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    assemble_install::compile::compile(python, part, assemble_plan::CHECKED_PYCS)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(jobs.len());
        for h in handles {
            let done = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            all.extend(done.map_err(|source| Error::Make {
                what: "compiling bytecode".into(),
                source: Box::new(source),
            })?);
        }
        Ok(all)
    })
}

/// A bytecode cache that cannot be written, said as such (not as the
/// compiler's failure).
fn unwritable(root: &Path, e: std::io::Error) -> Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "cannot write the bytecode cache {}: {e}; make it writable, or choose another --cache-dir",
            root.display()
        ),
    )
    .into()
}

/// The patched file `job.dest`, made from the input's bytes (checked
/// against the sha256 that keys it), its digest link recorded first; one
/// there already (corrupt: the planner checked it) is discarded first.
fn patch(job: &PatchJob<'_>) -> Result<(), Error> {
    if std::fs::symlink_metadata(job.dest).is_ok() {
        assemble_cache::digest::discard(job.dest)?;
    }
    if let Some(dir) = job.dest.parent() {
        fs_err::create_dir_all(dir)?;
    }
    assemble_fs::files::replace_with(job.dest, |tmp| -> Result<(), Error> {
        let bytes = (job.bytes)()?;
        if Sha256::of(&bytes) != *job.input {
            return Err(std::io::Error::other(format!(
                "{}: changed while this run was reading its inputs; run again",
                job.decision.path
            ))
            .into());
        }
        fs_err::write(tmp, &bytes)?;
        fs_err::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))?;
        assemble_elf::apply(tmp, job.decision)?;
        // The record first: a patched file without one is incomplete.
        assemble_cache::digest::record(job.dest, &Sha256::of_file(tmp)?)?;
        Ok(())
    })
}
