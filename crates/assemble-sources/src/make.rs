//! The cache entries planning asks for: pycs, patched ELF files, data
//! scripts recovered from wheels (see `assemble_plan::Make`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assemble_cache::{Policy, Reporter};
use assemble_manifest::{Content, InputRecord, Sha256};
use assemble_plan::{CompileJob, Compiled, Error, Make, PatchJob};
use assemble_python::Dist;

use crate::Config;

/// Makes what planning asks for, as the configuration's policy allows:
/// with `Policy::Look`, nothing (each answer is `None`).
pub struct Maker<'a> {
    pub config: &'a Config,
    pub reporter: &'a dyn Reporter,
}

impl Make for Maker<'_> {
    fn compile(&self, jobs: &[CompileJob<'_>]) -> Result<Option<Vec<Compiled>>, Error> {
        if !self.config.policy.writes() {
            return Ok(None);
        }
        compile(&self.config.python, jobs, &self.config.cache, self.reporter).map(Some)
    }

    fn patch(&self, job: &PatchJob<'_>) -> Result<Option<()>, Error> {
        if !self.config.policy.writes() {
            return Ok(None);
        }
        patch(job).map(Some)
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
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Vec<Compiled>, Error> {
    let root = cache.join("bytecode");
    fs_err::create_dir_all(&root).map_err(|e| unwritable(&root, e))?;
    let _lock = assemble_fs::lock::exclusive(&root.join(".lock"), &|| {
        reporter.waiting("the bytecode cache")
    })
    .map_err(|e| unwritable(&root, e))?;
    let mut results: Vec<Option<Compiled>> = vec![None; jobs.len()];
    let mut todo = Vec::new();
    let mut scratch: Option<tempfile::TempDir> = None;
    for (i, job) in jobs.iter().enumerate() {
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
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or(Compiled::Done))
        .collect())
}

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
