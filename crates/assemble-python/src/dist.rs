//! Installed distributions: `*.dist-info/{METADATA,entry_points.txt,RECORD}`.

use std::path::{Path, PathBuf};

use assemble_cache::Files;

use crate::Error;

/// A `console_scripts` or `gui_scripts` entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: String,
    pub module: String,
    /// The attribute path after `:`, e.g. `run` or `Cli.main`; empty when the
    /// entry point names a module only.
    pub attr: String,
}

/// One installed distribution.
#[derive(Debug, Clone)]
pub struct Dist {
    /// The `.dist-info` folder.
    pub dist_info: PathBuf,
    pub name: String,
    pub version: String,
    pub scripts: Vec<EntryPoint>,
    /// The venv's files, through which its metadata is read (checked
    /// against the seal of a cached venv).
    files: Files,
}

/// What a tree holds at `bin/NAME`, for [`Dist::record_for_tree`].
#[derive(Debug, Clone, Copy)]
pub enum InTree<'a> {
    /// Bytes the tree writes (a launcher of its own).
    Written(&'a [u8]),
    /// The venv's own file, copied as it is.
    Copied,
    Absent,
}

/// A file a distribution installed into `bin/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinFile {
    pub name: String,
    /// From RECORD's `sha256=<urlsafe base64>` column, when present.
    pub sha256: Option<[u8; 32]>,
}

impl Dist {
    /// Files RECORD places in the venv's `bin/` (console launchers included),
    /// with the sha256 RECORD gives for each. Read on demand: RECORD files
    /// are large, and most runs need none of them.
    pub fn bin_files(&self) -> std::io::Result<Vec<BinFile>> {
        match self.read("RECORD") {
            Ok(t) => Ok(record_bin_files(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Every path RECORD lists, as written (relative to site-packages;
    /// `../../../bin/x` for scripts). Empty when there is no RECORD.
    pub fn record_paths(&self) -> std::io::Result<Vec<String>> {
        match self.read("RECORD") {
            Ok(t) => Ok(t
                .lines()
                .map(|line| record_path(line).0)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// RECORD as it must read in a tree whose `bin/` is not the
    /// installer's: each row for a file in `bin/` takes the hash and size
    /// `tree` gives ([`InTree::Written`]), stays ([`InTree::Copied`]), or
    /// goes, when the tree does not have that file ([`InTree::Absent`]).
    /// `None` when RECORD has no such row (or no RECORD): nothing to change.
    ///
    /// The installer hashed the launchers it wrote, whose shebang names
    /// the folder the venv was built in; the tree's launchers are ours.
    pub fn record_for_tree<'a>(
        &self,
        tree: impl Fn(&str) -> InTree<'a>,
    ) -> std::io::Result<Option<String>> {
        use base64::Engine;
        use sha2::Digest;
        let text = match self.read("RECORD") {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        for line in text.split_inclusive('\n') {
            let (path, _) = record_path(line.trim_end_matches(['\n', '\r']));
            let name = path
                .strip_prefix("../../../bin/")
                .filter(|n| !n.contains('/'));
            match name.map(&tree) {
                None | Some(InTree::Copied) => out.push_str(line),
                Some(InTree::Written(bytes)) => {
                    let digest = sha2::Sha256::digest(bytes);
                    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
                    let quoted = if path.contains([',', '"']) {
                        format!("\"{}\"", path.replace('"', "\"\""))
                    } else {
                        path.to_string()
                    };
                    let row = format!("{quoted},sha256={b64},{}\n", bytes.len());
                    changed |= row != line;
                    out.push_str(&row);
                }
                Some(InTree::Absent) => changed = true,
            }
        }
        Ok(changed.then_some(out))
    }

    /// The dist-info's file `name` as text (see [`read_lossy`]).
    fn read(&self, name: &str) -> std::io::Result<String> {
        read_lossy(&self.files, &self.dist_info.join(name))
    }

    /// Whether this is the distribution `name` names, compared as PEP 503
    /// normalises names (case, and runs of `-`, `_` and `.`).
    pub fn is_named(&self, name: &str) -> bool {
        normalize_name(&self.name) == normalize_name(name)
    }

    /// Files in `bin/` that are data scripts shipped by the wheel (e.g. an ELF
    /// binary such as dumb-init), not launchers generated for an entry point.
    pub fn data_scripts(&self) -> std::io::Result<Vec<String>> {
        Ok(self
            .bin_files()?
            .into_iter()
            .map(|f| f.name)
            .filter(|f| !self.scripts.iter().any(|e| e.name == *f))
            .collect())
    }
}

/// Reads every distribution installed in `site`, a folder of the venv
/// `files`, sorted by name.
pub fn read_dists(files: &Files, site: &Path) -> Result<Vec<Dist>, Error> {
    let mut dists = Vec::new();
    for entry in fs_err::read_dir(site)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".dist-info") else {
            continue;
        };
        let dir = entry.path();
        let (mut dname, mut version) = match stem.split_once('-') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (stem.to_string(), String::new()),
        };
        let metadata = match read_lossy(files, &dir.join("METADATA")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        {
            // Only the headers, which end at the first blank line.
            for line in metadata.split('\n') {
                let line = line.trim_end_matches('\r');
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("Name: ") {
                    dname = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("Version: ") {
                    version = v.trim().to_string();
                }
            }
        }
        let scripts = match read_lossy(files, &dir.join("entry_points.txt")) {
            Ok(t) => parse_entry_points(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        dists.push(Dist {
            dist_info: dir,
            name: dname,
            version,
            scripts,
            files: files.clone(),
        });
    }
    dists.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(dists)
}

/// A metadata file as text; bytes that are not UTF-8 (a broken or foreign
/// file) become U+FFFD instead of failing the whole venv. A cached venv's
/// file that is not what it was made as fails, as an `io::Error` carrying
/// the [`assemble_cache::Corrupt`] (see [`assemble_cache::corrupt_in`]).
fn read_lossy(files: &Files, path: &Path) -> std::io::Result<String> {
    let bytes = files.read(path).map_err(|e| match e {
        assemble_cache::Error::Io(e) => e,
        assemble_cache::Error::Corrupt(c) => std::io::Error::other(*c),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The `console_scripts` and `gui_scripts` of an `entry_points.txt`.
fn parse_entry_points(text: &str) -> Vec<EntryPoint> {
    let mut out = Vec::new();
    let mut in_scripts = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_scripts = matches!(line, "[console_scripts]" | "[gui_scripts]");
            continue;
        }
        if !in_scripts {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        // Drop extras: `mod:attr [extra]`.
        let value = value.split('[').next().unwrap_or(value).trim();
        let (module, attr) = value.split_once(':').unwrap_or((value, ""));
        out.push(EntryPoint {
            name: name.trim().to_string(),
            module: module.trim().to_string(),
            attr: attr.trim().to_string(),
        });
    }
    out
}

/// Names of the files a RECORD installs into `bin/` (paths are relative to
/// site-packages, so `../../../bin/NAME`).
/// A RECORD line's path (unquoted) and the rest of the line.
fn record_path(line: &str) -> (&str, &str) {
    if let Some(rest) = line.strip_prefix('"') {
        rest.split_once("\",").unwrap_or((rest, ""))
    } else {
        line.split_once(',').unwrap_or((line, ""))
    }
}

/// A distribution name as PEP 503 compares it.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn record_bin_files(text: &str) -> Vec<BinFile> {
    use base64::Engine;
    let mut out = Vec::new();
    for line in text.lines() {
        let (path, rest) = record_path(line);
        if let Some(name) = path.strip_prefix("../../../bin/")
            && !name.contains('/')
        {
            let sha256 = rest
                .split(',')
                .next()
                .and_then(|h| h.strip_prefix("sha256="))
                .and_then(|b| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(b)
                        .ok()
                })
                .and_then(|v| <[u8; 32]>::try_from(v).ok());
            out.push(BinFile {
                name: name.to_string(),
                sha256,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_keep_attr_paths_and_drop_extras() {
        let eps = parse_entry_points(
            "[console_scripts]\ngunicorn = gunicorn.app.wsgiapp:run\nx = a.b:C.main [extra]\n\n[other]\ny = z:w\n[gui_scripts]\ng=m\n",
        );
        let got: Vec<_> = eps
            .iter()
            .map(|e| (e.name.as_str(), e.module.as_str(), e.attr.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("gunicorn", "gunicorn.app.wsgiapp", "run"),
                ("x", "a.b", "C.main"),
                ("g", "m", "")
            ]
        );
    }

    #[test]
    fn record_finds_bin_entries() {
        let r = "dumb_init-1.2.5.dist-info/RECORD,,\n../../../bin/dumb-init,sha256=X8zosa5G5TKM-kbJJA1GiZzzhUciq9Ljrxs_9PIkKY0,18608\n\"../../../bin/we,ird\",sha256=x,1\nfoo.py,sha256=y,2\n";
        let got = record_bin_files(r);
        let names: Vec<_> = got.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["dumb-init", "we,ird"]);
        assert_eq!(
            got[0].sha256.map(hex::encode).as_deref(),
            Some("5fcce8b1ae46e5328cfa46c9240d46899cf3854722abd2e3af1b3ff4f224298d")
        );
        assert_eq!(got[1].sha256, None);
    }
}
