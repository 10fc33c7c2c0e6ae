//! Content-addressed blobs in a folder named as an OCI layout's
//! `blobs/sha256/`: each written to a temporary file while hashed, then
//! renamed to its digest (an existing blob of that digest is the same
//! bytes, and stays).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// A layer: a tar, stored gzipped.
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A layer stored as a plain tar (a docker-archive base's).
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>` of the stored bytes.
    pub digest: String,
    pub size: u64,
    pub media_type: &'static str,
    /// For a layer: `sha256:<hex>` of the tar itself (the config's
    /// `diff_ids`) and its length; else the digest and size again.
    pub diff_id: String,
    pub diff_size: u64,
}

impl Blob {
    /// The hex part of the digest: the blob's file name.
    pub fn hex(&self) -> &str {
        hex_of(&self.digest)
    }

    /// Whether it is a gzipped layer.
    pub fn gzipped(&self) -> bool {
        self.media_type == LAYER_GZIP
    }
}

/// The hex part of `sha256:<hex>`.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A folder of blobs by digest.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The blobs in `dir` (made if missing).
    pub fn new(dir: &Path) -> Result<Store, Error> {
        fs_err::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the blob `digest` is.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(hex_of(digest))
    }

    /// Stores the tar that `fill` writes, gzipped (no name, no time: the
    /// same tar gives the same bytes).
    pub fn add_layer(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
    ) -> Result<Blob, Error> {
        let (tmp, file) = self.temp()?;
        let stored = Hashing::new(io::BufWriter::with_capacity(1 << 20, file));
        let gz = GzBuilder::new().mtime(0).write(stored, Compression::new(6));
        let mut tar = Hashing::new(gz);
        fill(&mut tar)?;
        let (diff_id, diff_size, gz) = tar.finish();
        let (digest, size, out) = gz.finish()?.finish();
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let blob = Blob {
            digest,
            size,
            media_type: LAYER_GZIP,
            diff_id,
            diff_size,
        };
        self.keep(tmp, &blob)?;
        Ok(blob)
    }

    /// Stores `bytes` as they are.
    pub fn add_bytes(&self, bytes: &[u8], media_type: &'static str) -> Result<Blob, Error> {
        let digest = digest_of(bytes);
        let blob = Blob {
            diff_id: digest.clone(),
            digest,
            size: bytes.len() as u64,
            diff_size: bytes.len() as u64,
            media_type,
        };
        let (tmp, mut file) = self.temp()?;
        file.write_all(bytes)?;
        file.sync_all()?;
        self.keep(tmp, &blob)?;
        Ok(blob)
    }

    /// Copies the file `from` in as the blob `blob` describes, checking
    /// its digest (a base's layer).
    pub fn add_file(&self, from: &Path, blob: &Blob) -> Result<(), Error> {
        let (tmp, file) = self.temp()?;
        let mut out = Hashing::new(file);
        io::copy(&mut fs_err::File::open(from)?, &mut out)?;
        let (digest, _, _) = out.finish();
        if digest != blob.digest {
            return Err(Error::Digest {
                path: from.to_path_buf(),
                want: blob.digest.clone(),
                got: digest,
            });
        }
        self.keep(tmp, blob)
    }

    fn temp(&self) -> Result<(tempfile::TempPath, fs_err::File), Error> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-blob-")
            .tempfile_in(&self.dir)?;
        let (file, path) = tmp.into_parts();
        let file = fs_err::File::from_parts(file, path.to_path_buf());
        Ok((path, file))
    }

    fn keep(&self, tmp: tempfile::TempPath, blob: &Blob) -> Result<(), Error> {
        let to = self.path(&blob.digest);
        if to.is_file() {
            return Ok(());
        }
        let tmp = tmp.keep().map_err(|e| e.error)?;
        assemble_fs::files::place(&tmp, &to)?;
        Ok(())
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A writer that hashes and counts what goes through it.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    /// `(sha256:<hex>, length, the writer)`.
    pub fn finish(self) -> (String, u64, W) {
        (
            format!("sha256:{}", hex::encode(self.hash.finalize())),
            self.len,
            self.inner,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
