//! An image written out: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`), or a docker-archive (what `docker save` writes and
//! `docker load`, `podman load` and `skopeo` read: `manifest.json`, the
//! config, each layer as a plain tar).

use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::json;

use crate::blob::{self, Store};
use crate::{Error, Image};

/// The blobs' folder of the OCI layout at `dir`.
pub fn layout_blobs(dir: &Path) -> std::path::PathBuf {
    dir.join("blobs/sha256")
}

/// Makes `dir` an OCI image layout whose index names `image` as `tag`
/// (its blobs are already in [`layout_blobs`]). A folder that holds
/// anything but an OCI layout is refused.
pub fn check_layout_dir(dir: &Path) -> Result<(), Error> {
    let empty = fs_err::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if empty || dir.join("oci-layout").is_file() {
        return Ok(());
    }
    Err(Error::Malformed {
        path: dir.to_path_buf(),
        why: "holds files and is not an OCI image layout (no oci-layout file); name an empty or new folder"
            .into(),
    })
}

/// Writes `oci-layout` and `index.json` (the image as `tag`).
pub fn write_layout(dir: &Path, image: &Image, tag: &str) -> Result<(), Error> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": blob::INDEX,
        "manifests": [{
            "mediaType": blob::MANIFEST,
            "digest": image.manifest.digest,
            "size": image.manifest.size,
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    let durable = assemble_fs::Durability::Synced;
    assemble_fs::write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        durable,
    )?;
    assemble_fs::write_atomic(
        &dir.join("index.json"),
        &serde_json::to_vec(&index)?,
        durable,
    )?;
    Ok(())
}

/// Writes `image` (its blobs in `store`) to `file` as a docker-archive
/// named `repo_tag`: the same bytes for the same image (entries in a
/// fixed order, owner 0, time `mtime`). Replaced atomically.
pub fn write_docker_archive(
    store: &Store,
    image: &Image,
    repo_tag: &str,
    mtime: u64,
    file: &Path,
) -> Result<(), Error> {
    assemble_fs::files::replace_with(file, |tmp| -> Result<(), Error> {
        let out = io::BufWriter::new(fs_err::File::create(tmp)?);
        let mut b = tar::Builder::new(out);
        let config_name = format!("{}.json", image.config.hex());
        append(
            &mut b,
            &config_name,
            mtime,
            image.config.size,
            fs_err::File::open(store.path(&image.config.digest))?,
        )?;
        let mut names = Vec::new();
        for (_, layer) in &image.layers {
            let name = format!("{}.tar", blob::hex_of(&layer.diff_id));
            let stored = fs_err::File::open(store.path(&layer.digest))?;
            let tar: Box<dyn Read> = if layer.gzipped() {
                Box::new(flate2::read::MultiGzDecoder::new(stored))
            } else {
                Box::new(stored)
            };
            append(&mut b, &name, mtime, layer.diff_size, tar)?;
            names.push(name);
        }
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": [repo_tag],
            "Layers": names,
        }]))?;
        append(
            &mut b,
            "manifest.json",
            mtime,
            manifest.len() as u64,
            manifest.as_slice(),
        )?;
        b.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        Ok(())
    })
}

fn append<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    mtime: u64,
    len: u64,
    data: impl Read,
) -> Result<(), Error> {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(len);
    b.append_data(&mut h, name, data.take(len))?;
    Ok(())
}
