//! The autoPatchelf step: ELF files of the desired tree get runpaths that
//! resolve, as desired content.
//!
//! Two caches keep this off the hot path, both keyed by content and so
//! shared by every output:
//!
//! ```text
//! <cache>/elf/scan/<sha256 of the input>.json     the ELF facts of a file (or null)
//! <cache>/elf/patched/<key>                       the patched file
//! <cache>/elf/patched/<key>.sha256                its sha256
//! ```
//!
//! where `<key>` is the sha256 of (format version, input sha256, new runpath,
//! new interpreter). An ELF file whose content is unchanged is therefore
//! never scanned again, and one whose decision is unchanged never patched
//! again; a change to `libs` re-runs the decision for every file, which
//! only costs patching where the runpath really changes.

use assemble_fs::{Durability, StatCache, files};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assemble_elf::{Decision, ElfInfo, Options, Tree};
use assemble_manifest::{Content, Digest, Entry, Kind, OutPath, Sha256, Stat};
use assemble_recipe::Autopatchelf;
use sha2::Digest as _;

use crate::{Builder, Error};

/// Bumped when the scan or patch cache format changes.
const CACHE_VERSION: &str = "elf-v1";

pub(crate) fn autopatchelf(
    b: &mut Builder,
    ap: &Autopatchelf,
    cache: &Path,
    elf_paths: &[OutPath],
) -> Result<(Vec<Decision>, Vec<assemble_elf::Library>), Error> {
    let scan_dir = cache.join("elf").join("scan");
    let mut tree = Tree::default();
    for path in elf_paths {
        let e = &b.desired[path];
        let Kind::File { sha256, .. } = &e.kind else {
            continue;
        };
        let sha256 = known(path, *sha256)?;
        if let Some(info) = scan_cached(&scan_dir, &sha256, e, path)? {
            tree.files.push((path.to_string(), info));
        }
    }
    let elf_set: BTreeSet<&str> = tree.files.iter().map(|(p, _)| p.as_str()).collect();
    for (path, e) in &b.desired {
        if let Kind::Link { target } = &e.kind
            && let Some(resolved) = assemble_elf::resolve_link(path, target)
            && elf_set.contains(resolved.as_str())
        {
            tree.links.push((path.to_string(), resolved));
        }
    }
    let opts = Options {
        libs: ap.libs.clone(),
        ignore_missing: ap.ignore_missing.clone(),
        runtime_dependencies: ap.runtime_dependencies.clone(),
        dynamic_linker: ap.dynamic_linker.clone(),
        lib_cache: Some(cache.join("elf").join("libs")),
    };
    let report = assemble_elf::resolve(&tree, &opts)?;
    b.warnings.extend(report.warnings);
    for d in report.decisions.iter().filter(|d| d.changes()) {
        let e = &b.desired[d.path.as_str()];
        let Kind::File { sha256, executable } = &e.kind else {
            continue;
        };
        let (patched, sha) = patched_file(cache, &known(&d.path, *sha256)?, e, d)?;
        let stat = Stat::of(&fs_err::symlink_metadata(&patched)?);
        let mut entry = Entry::copy(
            &e.unit,
            "autopatchelf",
            patched,
            Digest::Known(sha),
            *executable,
        );
        entry.source = e.source.clone();
        entry.source_sha = e.source_sha;
        entry.input_stat = Some(stat);
        if let Some(slot) = b.desired.get_mut(d.path.as_str()) {
            *slot = entry;
        }
    }
    Ok((report.decisions, report.libraries))
}

/// The ELF facts of a file, from the scan cache or by reading it.
/// An ELF file's hash: the plan hashes every ELF input before this step
/// (only other files' hashes are left to the copy).
fn known(path: &str, digest: Digest) -> Result<Sha256, Error> {
    digest.known().ok_or_else(|| {
        std::io::Error::other(format!(
            "{path}: the hash of an ELF file was left to the copy; autoPatchelf needs it now"
        ))
        .into()
    })
}

fn scan_cached(
    dir: &Path,
    sha256: &Sha256,
    e: &Entry,
    out_path: &str,
) -> Result<Option<ElfInfo>, Error> {
    // Keyed by content: the same bytes have the same facts.
    let cache = StatCache::new(dir);
    let key = sha256.hex();
    if let Some(info) = cache.get::<Option<ElfInfo>>(&key) {
        return Ok(info);
    }
    let origin = match &e.content {
        Some(Content::Copy(src)) => src.clone(),
        Some(Content::Bytes(_)) => PathBuf::from(out_path),
        None => return Ok(None),
    };
    let bytes = crate::read_content(e)?;
    let info = assemble_elf::scan(&bytes).map_err(|why| assemble_elf::Error::Corrupt {
        path: origin,
        why: format!("{why}; it would be {out_path} in the output"),
    })?;
    cache.put(&key, &info);
    Ok(info)
}

/// The patched copy of a file for a decision, made once and cached.
fn patched_file(
    cache: &Path,
    input: &Sha256,
    e: &Entry,
    d: &Decision,
) -> Result<(PathBuf, Sha256), Error> {
    let mut h = sha2::Sha256::new();
    for part in [
        CACHE_VERSION,
        &input.hex(),
        d.new_runpath.as_deref().unwrap_or(""),
        d.new_interp.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    let key = hex::encode(h.finalize());
    let dir = cache.join("elf").join("patched");
    let path = dir.join(&key);
    let sum = dir.join(format!("{key}.sha256"));
    if path.is_file()
        && let Ok(text) = std::fs::read_to_string(&sum)
        && let Ok(bytes) = hex::decode(text.trim())
        && let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok((path, Sha256(arr)));
    }
    fs_err::create_dir_all(&dir)?;
    let sha = files::replace_with(&path, |tmp| -> Result<Sha256, Error> {
        // Patched from the bytes whose hash keys the result.
        let bytes = crate::read_content(e)?;
        if Sha256::of(&bytes) != *input {
            return Err(std::io::Error::other(format!(
                "{}: changed while this run was reading its inputs; run again",
                d.path
            ))
            .into());
        }
        fs_err::write(tmp, &bytes)?;
        fs_err::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))?;
        assemble_elf::apply(tmp, d)?;
        Ok(Sha256::of_file(tmp)?)
    })?;
    files::write_atomic(&sum, sha.hex().as_bytes(), Durability::Unsynced)?;
    Ok((path, sha))
}
