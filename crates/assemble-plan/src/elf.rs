//! The autoPatchelf step: ELF files of the desired tree get runpaths that
//! resolve, as desired content.
//!
//! Two caches keep this off the hot path, both keyed by content and so
//! shared by every output:
//!
//! ```text
//! <cache>/elf/scan/<sha256 of the input>.json     the ELF facts of a file (or null)
//! <cache>/elf/patched/<key>                       the patched file
//! <cache>/elf/patched/<key>.sha256                its digest link (assemble_cache::digest)
//! ```
//!
//! A patched file is used only if the output's input stat cache vouches
//! for it (its records of cache files are made after a check) or it hashes
//! to its digest link; else it is discarded, with a warning, and made
//! again.
//!
//! where `<key>` is the sha256 of (format version, input sha256, new runpath,
//! new interpreter). An ELF file whose content is unchanged is therefore
//! never scanned again, and one whose decision is unchanged never patched
//! again; a change to `libs` re-runs the decision for every file, which
//! only costs patching where the runpath really changes.

use assemble_fs::StatCache;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assemble_elf::{Decision, ElfInfo, Options, Tree};
use assemble_manifest::{
    Content, Digest, Entry, InputCache, InputRecord, Kind, OutPath, Sha256, Stat,
};
use assemble_recipe::Autopatchelf;
use sha2::Digest as _;

use crate::{Builder, Error, Make, PatchJob};

/// Bumped when the scan or patch cache format changes.
const CACHE_VERSION: &str = "elf-v2";

/// What the step decided for every ELF file, the tree's run-time library
/// list, and the input records of the patched files it took from the cache.
pub(crate) type Patched = (Vec<Decision>, Vec<assemble_elf::Library>, Vec<InputRecord>);

pub(crate) fn autopatchelf(
    b: &mut Builder,
    ap: &Autopatchelf,
    cache: &Path,
    elf_paths: &[OutPath],
    inputs: &InputCache,
) -> Result<Patched, Error> {
    let scan_dir = cache.join("elf").join("scan");
    let mut tree = Tree::default();
    for path in elf_paths {
        let e = &b.desired[path];
        let Kind::File { sha256, .. } = &e.kind else {
            continue;
        };
        let sha256 = known(path, *sha256)?;
        if let Some(info) = scan_cached(&scan_dir, &sha256, e, path, &mut b.memos)? {
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
    b.memos.extend(report.learned);
    let mut records = Vec::new();
    let mut would_patch = 0;
    for d in report.decisions.iter().filter(|d| d.changes()) {
        let e = &b.desired[d.path.as_str()];
        let Kind::File {
            sha256, executable, ..
        } = &e.kind
        else {
            continue;
        };
        let Some((patched, record)) = patched_file(
            b.make,
            cache,
            &known(&d.path, *sha256)?,
            e,
            d,
            inputs,
            &mut b.warnings,
        )?
        else {
            would_patch += 1;
            continue;
        };
        let (stat, sha) = (record.stat, record.sha256);
        records.push(record);
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
    if would_patch > 0 {
        b.would_make.push(crate::WouldMake::step(format!(
            "{would_patch} ELF files would be patched (planned here unpatched)"
        )));
    }
    Ok((report.decisions, report.libraries, records))
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

/// The facts found are kept in `memos`, for a run that writes to store.
fn scan_cached(
    dir: &Path,
    sha256: &Sha256,
    e: &Entry,
    out_path: &str,
    memos: &mut Vec<assemble_fs::Memo>,
) -> Result<Option<ElfInfo>, Error> {
    // Keyed by content: the same bytes have the same facts.
    let cache = StatCache::new(dir);
    let key = sha256.hex();
    if let Some(info) = cache.get::<Option<ElfInfo>>(&key) {
        return Ok(info);
    }
    let origin = match e.kind.content() {
        Some(Content::Copy(src)) => src.clone(),
        Some(Content::Bytes(_)) => PathBuf::from(out_path),
        None => return Ok(None),
    };
    let bytes = crate::builder::read_content(e)?;
    let info = assemble_elf::scan(&bytes).map_err(|why| assemble_elf::Error::Corrupt {
        path: origin,
        why: format!("{why}; it would be {out_path} in the output"),
    })?;
    memos.extend(cache.memo(&key, &info));
    Ok(info)
}

/// The patched copy of a file for a decision, made once (by `make`) and
/// cached, with its input record (checked: vouched for by `inputs`, or
/// hashed against its digest link). A corrupt one is said in `warnings`
/// and made again. `None`: not in the cache, and `make` made nothing.
fn patched_file(
    make: &dyn Make,
    cache: &Path,
    input: &Sha256,
    e: &Entry,
    d: &Decision,
    inputs: &InputCache,
    warnings: &mut Vec<String>,
) -> Result<Option<(PathBuf, InputRecord)>, Error> {
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
    let path = cache.join("elf").join("patched").join(&key);
    let mut corrupt = None;
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        let stat = Stat::of(&meta);
        let checked = match inputs.vouched(&stat) {
            Some(r) => Ok(r),
            None => assemble_cache::digest::check(&path, &stat)
                .map(|r| inputs.record_of(stat, r.sha256, r.elf)),
        };
        match checked {
            Ok(r) => {
                if make.offers() {
                    make.offer_patched(&path, &d.path)?;
                }
                return Ok(Some((path, r)));
            }
            Err(assemble_cache::Error::Corrupt(c)) => corrupt = Some(c),
            Err(assemble_cache::Error::Io(e)) => return Err(e.into()),
        }
    }
    let bytes = || crate::builder::read_content(e);
    let job = PatchJob {
        dest: &path,
        input,
        bytes: &bytes,
        decision: d,
    };
    if make.patch(&job)?.is_none() {
        return Ok(None);
    }
    if let Some(c) = corrupt {
        warnings.push(format!("{c}; discarded, patched again"));
    }
    let stat = Stat::of(&fs_err::symlink_metadata(&path)?);
    let r = assemble_cache::digest::check(&path, &stat)?;
    Ok(Some((
        path.clone(),
        inputs.record_of(stat, r.sha256, r.elf),
    )))
}
