//! `cargo xtask verify --cache`: every entry of a cache re-hashed against
//! its record, whatever its stat.

use std::io;
use std::path::{Path, PathBuf};

use assemble_manifest::Stat;

use crate::{Error, Seal, digest};

/// One entry that is not what it was made as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub entry: PathBuf,
    /// What is wrong, said of the path at fault.
    pub problem: String,
}

/// What [`verify`] looked at and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Entries checked.
    pub checked: usize,
    pub findings: Vec<Finding>,
}

/// The folders whose children are sealed folder entries.
const SEALED: &[&str] = &["venvs", "sources", "files", "tools"];

/// Re-hashes every entry of the cache at `root` (see the crate doc's
/// layout): sealed folders against their seal, file entries against their
/// digest link. An entry without its record is listed as incomplete (a run
/// makes it again when it needs it).
pub fn verify(root: &Path) -> io::Result<Report> {
    let mut report = Report::default();
    for kind in SEALED {
        for entry in children(&root.join(kind))? {
            let name = entry.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.')
                || [".seal", ".lock", ".partial", ".log"]
                    .iter()
                    .any(|x| name.ends_with(x))
                || name.contains(".discarded-")
            {
                continue;
            }
            report.checked += 1;
            let problem = match Seal::load(&entry) {
                None => Some("incomplete: it has no seal (made by an older version, or interrupted); a run that needs it makes it again".to_string()),
                Some(seal) => problem(seal.check_all())?,
            };
            if let Some(problem) = problem {
                report.findings.push(Finding { entry, problem });
            }
        }
    }
    let mut files = Vec::new();
    for bucket in children(&root.join("bytecode"))? {
        if bucket.is_dir() {
            files.extend(children(&bucket)?.into_iter().filter(|f| has_ext(f, "pyc")));
        }
    }
    for dir in ["elf/patched", "scripts"] {
        files.extend(
            children(&root.join(dir))?
                .into_iter()
                .filter(|f| !has_ext(f, "sha256") && !f.to_string_lossy().contains(".tmp-")),
        );
    }
    for file in files {
        let Ok(meta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        report.checked += 1;
        if let Some(problem) = problem(digest::check(&file, &Stat::of(&meta)).map(|_| ()))? {
            report.findings.push(Finding {
                entry: file,
                problem,
            });
        }
    }
    report.findings.sort_by(|a, b| a.entry.cmp(&b.entry));
    Ok(report)
}

/// A corrupt entry's problem as a finding; other failures (an unreadable
/// folder) end the check.
fn problem(r: Result<(), Error>) -> io::Result<Option<String>> {
    match r {
        Ok(()) => Ok(None),
        Err(Error::Corrupt(c)) => Ok(Some(format!("{}: {}", c.path.display(), c.why))),
        Err(Error::Io(e)) => Err(e),
    }
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.extension().is_some_and(|e| e == ext)
}

/// The paths in `dir`, sorted; none when it does not exist.
fn children(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v = match fs_err::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    v.sort();
    Ok(v)
}
