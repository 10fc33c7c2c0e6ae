//! Pinned remote sources.
//!
//! A source is fetched once into `<cache>/sources/sha256-<hex>/`, named by
//! the hash it was verified against, and read from there by every later
//! build. Fetching goes to a temporary folder inside the cache and is renamed
//! into place only after the hash matched and the archive unpacked safely,
//! so a failed or interrupted fetch leaves nothing that counts as fetched.

mod unpack;

use std::path::{Path, PathBuf};

use assemble_python::Interpreter;
use sha2::Digest;

pub use unpack::{UNPACK_LIMIT, unpack_tar_gz};

/// An error of this crate; each names the unit, URL, archive or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("unit {unit}: fetching {spec}: {source}")]
    Python {
        unit: String,
        spec: String,
        #[source]
        source: assemble_python::Error,
    },
    #[error(
        "unit {unit}: hash mismatch for {what}\n  expected: sha256 {expected}\n       got: sha256 {got}\nIf the new file is the one you want, put the `got` value in the recipe."
    )]
    Mismatch {
        unit: String,
        what: String,
        expected: String,
        got: String,
    },
    #[error("{}: refusing to unpack entry {entry:?}: {why}", .archive.display())]
    Unsafe {
        archive: PathBuf,
        entry: String,
        why: String,
    },
}

/// Fetches the sdist `spec` (`name==version`) with pip, checks its sha256,
/// and returns its unpacked tree (the archive's single top folder stripped).
/// `announce` is called when a download actually starts (not on a cache hit).
pub fn fetch_pypi(
    unit: &str,
    spec: &str,
    sha256: &str,
    python: &Interpreter,
    cache: &Path,
    announce: &dyn Fn(),
) -> Result<PathBuf, Error> {
    let root = cache.join("sources");
    let dest = root.join(format!("sha256-{sha256}"));
    if dest.is_dir() {
        return Ok(dest);
    }
    announce();
    fs_err::create_dir_all(&root)?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&root)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
    let dl = work.path().join("download");
    fs_err::create_dir(&dl)?;
    let file = assemble_python::pip_download(spec, assemble_python::Artifact::Sdist, python, &dl)
        .map_err(|source| Error::Python {
        unit: unit.to_string(),
        spec: spec.to_string(),
        source,
    })?;
    let got = {
        let mut f = fs_err::File::open(&file)?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        hex::encode(h.finalize())
    };
    if got != sha256 {
        return Err(Error::Mismatch {
            unit: unit.to_string(),
            what: format!(
                "{spec} ({})",
                file.file_name().unwrap_or_default().to_string_lossy()
            ),
            expected: sha256.to_string(),
            got,
        });
    }
    let tree = work.path().join("tree");
    unpack_tar_gz(&file, &tree)?;
    match fs_err::rename(&tree, &dest) {
        Ok(()) => {}
        // Another run fetched the same pin meanwhile: theirs is as good.
        Err(_) if dest.is_dir() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(dest)
}
