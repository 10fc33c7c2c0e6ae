//! Getting back a data script that a Nix-FOD venv lost.
//!
//! A Nix fixed-output venv has its `bin/` removed (to drop references to the
//! interpreter's store path), and with it the data scripts wheels install
//! there: dumb-init's ELF binary is one. The seed then silently ships
//! without it. The distribution's RECORD still pins the file's sha256, so we
//! fetch that exact release's wheel once, take the script from its
//! `.data/scripts/`, check it against RECORD, and keep it in the cache.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assemble_manifest::{InputRecord, Stat};
use sha2::Digest;

use crate::run::{Artifact, pip_download};
use assemble_python::{Dist, Interpreter};

use crate::Error;

/// Returns a cached copy of `script`, verified against `dist`'s RECORD,
/// with its input record (its stat and hash, just checked); `policy` says
/// whether the wheel may be downloaded.
pub fn recover_data_script(
    dist: &Dist,
    script: &str,
    python: &Interpreter,
    cache: &Path,
    policy: assemble_cache::Policy,
) -> Result<(PathBuf, InputRecord), Error> {
    let record = dist.dist_info.join("RECORD");
    let want = dist
        .bin_files()?
        .iter()
        .find(|f| f.name == script)
        .and_then(|f| f.sha256)
        .ok_or_else(|| Error::Malformed {
            path: record.clone(),
            message: format!("no sha256 for bin/{script}, so it cannot be recovered safely"),
        })?;
    let root = cache.join("scripts");
    let dest = root.join(format!("sha256-{}", hex::encode(want)));
    if std::fs::symlink_metadata(&dest).is_ok() {
        // A file that no longer has its hash is discarded and fetched again.
        return Ok((dest.clone(), checked(&dest)?));
    }
    if policy != assemble_cache::Policy::Make {
        return Err(Error::Offline {
            what: format!("bin/{script} of {} {}", dist.name, dist.version),
            cached_at: dest,
        });
    }
    fs_err::create_dir_all(&root)?;
    let work = tempfile::Builder::new()
        .prefix(".wheel-")
        .tempdir_in(&root)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
    let spec = format!("{}=={}", dist.name, dist.version);
    let wheel = pip_download(&spec, Artifact::Wheel, python, work.path())?;
    let bad = |message: String| Error::Malformed {
        path: wheel.clone(),
        message,
    };
    let file = fs_err::File::open(&wheel)?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a wheel: {e}")))?;
    let suffix = format!(".data/scripts/{script}");
    let name = (0..zip.len())
        .filter_map(|i| {
            zip.name_for_index(i)
                .and_then(|n| n.ok())
                .map(|n| n.into_owned())
        })
        .find(|n| n.ends_with(&suffix) && n.matches('/').count() == 2)
        .ok_or_else(|| bad(format!("the wheel has no *{suffix}")))?;
    let mut bytes = Vec::new();
    zip.by_name(&name)
        .map_err(|e| bad(format!("{name}: {e}")))?
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("{name}: {e}")))?;
    let got: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    if got != want {
        return Err(bad(format!(
            "{name} has sha256 {}, but {} says {}",
            hex::encode(got),
            record.display(),
            hex::encode(want)
        )));
    }
    let tmp = work.path().join("script");
    fs_err::write(&tmp, &bytes)?;
    fs_err::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    // The record first: a file without one is incomplete.
    assemble_cache::digest::record(&dest, &assemble_manifest::Sha256(want))?;
    assemble_fs::files::place(&tmp, &dest)?;
    Ok((dest.clone(), checked(&dest)?))
}

/// The cached script `dest` checked against its digest link.
fn checked(dest: &Path) -> Result<InputRecord, Error> {
    let stat = Stat::of(&fs_err::symlink_metadata(dest)?);
    Ok(assemble_cache::digest::check(dest, &stat)?)
}
