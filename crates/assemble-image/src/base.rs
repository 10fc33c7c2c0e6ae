//! A base image: an OCI image layout (a folder) or a docker-archive (a
//! tar), its layers and config read, and its file system resolved from
//! its layers in order (whiteouts applied) to check that it holds a path.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Error;
use crate::blob::{self, Blob, Store};

/// A base image, read.
pub struct Base {
    /// What the user named.
    pub path: PathBuf,
    /// Its layers, oldest first, with the file each is read from.
    layers: Vec<(Blob, PathBuf)>,
    config: Value,
    /// A docker-archive's files, unpacked.
    _unpacked: Option<tempfile::TempDir>,
}

impl Base {
    /// Reads the base at `path`: an OCI layout when a folder, else a
    /// docker-archive.
    pub fn open(path: &Path) -> Result<Base, Error> {
        if path.is_dir() {
            Base::oci(path)
        } else {
            Base::docker_archive(path)
        }
    }

    fn malformed(&self, why: impl Into<String>) -> Error {
        malformed(&self.path, why)
    }

    fn oci(path: &Path) -> Result<Base, Error> {
        let blobs = path.join("blobs/sha256");
        let index = read_json(&path.join("index.json"))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let [m] = manifests.as_slice() else {
            return Err(malformed(
                path,
                format!(
                    "its index.json names {} images; a base must hold one",
                    manifests.len()
                ),
            ));
        };
        let digest = m["digest"].as_str().unwrap_or_default();
        let manifest = read_json(&blobs.join(blob::hex_of(digest)))?;
        if manifest["layers"].is_null() {
            return Err(malformed(
                path,
                format!("{digest} is not an image manifest"),
            ));
        }
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let config = read_json(&blobs.join(blob::hex_of(config_digest)))?;
        let diff_ids = diff_ids(path, &config)?;
        let descriptors = manifest["layers"].as_array().cloned().unwrap_or_default();
        if descriptors.len() != diff_ids.len() {
            return Err(malformed(
                path,
                "its manifest and config disagree on the layers",
            ));
        }
        let mut layers = Vec::new();
        for (d, diff_id) in descriptors.iter().zip(diff_ids) {
            let media = media_type(path, d["mediaType"].as_str().unwrap_or_default())?;
            let digest = d["digest"].as_str().unwrap_or_default().to_string();
            let file = blobs.join(blob::hex_of(&digest));
            layers.push((
                Blob {
                    size: d["size"].as_u64().unwrap_or_default(),
                    diff_size: 0,
                    media_type: media,
                    diff_id,
                    digest,
                },
                file,
            ));
        }
        Ok(Base {
            path: path.to_path_buf(),
            layers,
            config,
            _unpacked: None,
        })
    }

    fn docker_archive(path: &Path) -> Result<Base, Error> {
        let dir = tempfile::Builder::new()
            .prefix("assemble-base-")
            .tempdir()?;
        let mut archive = tar::Archive::new(fs_err::File::open(path)?);
        for e in archive.entries()? {
            let mut e = e?;
            // Only plain names and folders of the archive: nothing is
            // written outside the temporary folder.
            if !e.unpack_in(dir.path())? {
                return Err(malformed(path, "an entry's name leads out of the archive"));
            }
        }
        let manifest = read_json(&dir.path().join("manifest.json"))?;
        let [m] = manifest.as_array().map(Vec::as_slice).unwrap_or_default() else {
            return Err(malformed(
                path,
                "its manifest.json must name exactly one image",
            ));
        };
        let inside = |name: &Value| -> Result<PathBuf, Error> {
            let name = name.as_str().unwrap_or_default();
            assemble_fs::resolve_beneath(dir.path(), name)
                .map(|rel| dir.path().join(rel))
                .map_err(|e| malformed(path, format!("{name}: {e}")))
        };
        let config = read_json(&inside(&m["Config"])?)?;
        let diff_ids = diff_ids(path, &config)?;
        let names = m["Layers"].as_array().cloned().unwrap_or_default();
        if names.len() != diff_ids.len() {
            return Err(malformed(
                path,
                "its manifest and config disagree on the layers",
            ));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in names.iter().zip(diff_ids) {
            let file = inside(name)?;
            let (digest, size) = digest_file(&file)?;
            let media = if is_gzip(&file)? {
                blob::LAYER_GZIP
            } else {
                blob::LAYER_TAR
            };
            layers.push((
                Blob {
                    digest,
                    size,
                    media_type: media,
                    diff_id,
                    diff_size: 0,
                },
                file,
            ));
        }
        Ok(Base {
            path: path.to_path_buf(),
            layers,
            config,
            _unpacked: Some(dir),
        })
    }

    /// Its layers copied into `store` (each checked against its digest).
    pub fn copy_layers(&self, store: &Store) -> Result<Vec<(String, Blob)>, Error> {
        let mut out = Vec::new();
        for (i, (blob, file)) in self.layers.iter().enumerate() {
            store.add_file(file, blob)?;
            let mut blob = blob.clone();
            blob.diff_size = uncompressed_len(file, blob.gzipped())?;
            out.push((format!("base layer {}", i + 1), blob));
        }
        Ok(out)
    }

    /// Its config's `Env`.
    pub fn env(&self) -> Vec<String> {
        strings(&self.config["config"]["Env"])
    }

    /// Its config's `history`.
    pub fn history(&self) -> Vec<Value> {
        self.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Checks that the image's file system holds a file at `path`
    /// (absolute), links followed inside the image.
    pub fn check_file(&self, path: &str) -> Result<(), Error> {
        let fs = self.file_system()?;
        let lacks = |why: String| Error::BaseLacks {
            base: self.path.clone(),
            path: path.to_string(),
            why,
        };
        let mut want = clean(path);
        for _ in 0..40 {
            match resolve(&fs, &want) {
                Resolved::File => return Ok(()),
                Resolved::Missing(at) => return Err(lacks(format!("{} is not there", show(&at)))),
                Resolved::NotFile(at) => return Err(lacks(format!("{} is a folder", show(&at)))),
                Resolved::Link(at, target) => want = follow(&at, &target, &want),
            }
        }
        Err(lacks("too many links".into()))
    }

    /// Every path of the image after its layers, oldest first.
    fn file_system(&self) -> Result<BTreeMap<String, Node>, Error> {
        let mut fs = BTreeMap::new();
        for (blob, file) in &self.layers {
            let reader: Box<dyn Read> = if blob.gzipped() {
                Box::new(flate2::read::MultiGzDecoder::new(fs_err::File::open(file)?))
            } else {
                Box::new(fs_err::File::open(file)?)
            };
            apply_layer(&mut fs, reader).map_err(|e| self.malformed(format!("a layer: {e}")))?;
        }
        Ok(fs)
    }
}

/// What a path is in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Link(String),
}

/// Applies one layer's entries (whiteouts remove what is below them).
fn apply_layer(fs: &mut BTreeMap<String, Node>, reader: impl Read) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for e in archive.entries()? {
        let e = e?;
        let raw = e.path()?.to_string_lossy().into_owned();
        let path = clean(&raw);
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == ".wh..wh..opq" {
            remove_under(fs, dir, false);
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let gone = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            remove_under(fs, &gone, true);
            continue;
        }
        let node = match e.header().entry_type() {
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Symlink => Node::Link(
                e.link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => Node::File,
        };
        if node != Node::Dir {
            remove_under(fs, &path, false);
        }
        fs.insert(path, node);
    }
    Ok(())
}

/// Removes what is under `path` (and `path` itself with `itself`); ""
/// is the root.
fn remove_under(fs: &mut BTreeMap<String, Node>, path: &str, itself: bool) {
    if path.is_empty() {
        fs.clear();
        return;
    }
    let below = format!("{path}/");
    fs.retain(|p, _| !p.starts_with(&below));
    if itself {
        fs.remove(path);
    }
}

enum Resolved {
    File,
    Missing(String),
    NotFile(String),
    /// A link at this prefix, to this target.
    Link(String, String),
}

/// Walks `path` through `fs` until a link, the end, or a missing part.
fn resolve(fs: &BTreeMap<String, Node>, path: &str) -> Resolved {
    let mut at = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        at = if at.is_empty() {
            part.to_string()
        } else {
            format!("{at}/{part}")
        };
        match fs.get(&at) {
            None => return Resolved::Missing(at),
            Some(Node::Link(t)) => return Resolved::Link(at, t.clone()),
            Some(Node::File) if i + 1 == parts.len() => return Resolved::File,
            Some(Node::File) => return Resolved::Missing(at),
            Some(Node::Dir) if i + 1 == parts.len() => return Resolved::NotFile(at),
            Some(Node::Dir) => {}
        }
    }
    Resolved::Missing(at)
}

/// `want` with its prefix `at` (a link) replaced by the link's target.
fn follow(at: &str, target: &str, want: &str) -> String {
    let rest = &want[at.len()..];
    let joined = if target.starts_with('/') {
        format!("{target}{rest}")
    } else {
        let parent = at.rsplit_once('/').map_or("", |(p, _)| p);
        format!("{parent}/{target}{rest}")
    };
    clean(&joined)
}

/// A path without its leading `/` or `./`, `.` and `..` resolved.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn show(path: &str) -> String {
    format!("/{path}")
}

fn malformed(path: &Path, why: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let bytes = assemble_fs::files::read_named(path, 64 << 20)?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(path, format!("not JSON: {e}")))
}

fn diff_ids(path: &Path, config: &Value) -> Result<Vec<String>, Error> {
    let ids = strings(&config["rootfs"]["diff_ids"]);
    if ids.is_empty() && !config["rootfs"]["diff_ids"].is_array() {
        return Err(malformed(path, "its config has no rootfs.diff_ids"));
    }
    Ok(ids)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn media_type(path: &Path, m: &str) -> Result<&'static str, Error> {
    match m {
        blob::LAYER_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Ok(blob::LAYER_GZIP)
        }
        blob::LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Ok(blob::LAYER_TAR),
        other => Err(malformed(
            path,
            format!("a layer of type {other} (only tar and tar+gzip are read)"),
        )),
    }
}

fn digest_file(path: &Path) -> Result<(String, u64), Error> {
    let mut h = blob::Hashing::new(io::sink());
    io::copy(&mut fs_err::File::open(path)?, &mut h)?;
    let (digest, len, _) = h.finish();
    Ok((digest, len))
}

fn is_gzip(path: &Path) -> Result<bool, Error> {
    let mut magic = [0u8; 2];
    let n = fs_err::File::open(path)?.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

fn uncompressed_len(path: &Path, gzipped: bool) -> Result<u64, Error> {
    let file = fs_err::File::open(path)?;
    if !gzipped {
        return Ok(file.metadata()?.len());
    }
    Ok(io::copy(
        &mut flate2::read::MultiGzDecoder::new(file),
        &mut io::sink(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_inside_the_image() {
        assert_eq!(
            follow("usr/bin/python3", "python3.11", "usr/bin/python3"),
            "usr/bin/python3.11"
        );
        assert_eq!(
            follow("lib64", "usr/lib64", "lib64/ld.so"),
            "usr/lib64/ld.so"
        );
        assert_eq!(follow("bin", "/usr/bin", "bin/sh"), "usr/bin/sh");
        assert_eq!(clean("./a/../b//c/"), "b/c");
    }

    #[test]
    fn whiteouts_remove_what_is_below() {
        let mut fs = BTreeMap::new();
        for p in ["a", "a/b", "a/b/c", "ab"] {
            fs.insert(p.to_string(), Node::Dir);
        }
        remove_under(&mut fs, "a/b", true);
        assert_eq!(fs.keys().collect::<Vec<_>>(), ["a", "ab"]);
        remove_under(&mut fs, "a", false);
        assert_eq!(fs.keys().collect::<Vec<_>>(), ["a", "ab"]);
    }
}
