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

    /// Stores the tar that `fill` writes, gzipped ([`Members`]: the same
    /// tar gives the same bytes).
    pub fn add_layer(
        &self,
        fill: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
    ) -> Result<Blob, Error> {
        let (tmp, file) = self.temp()?;
        let stored = Hashing::new(io::BufWriter::with_capacity(1 << 20, file));
        let mut tar = Hashing::new(Members::new(stored));
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

/// A gzip stream written as one member per [`MEMBER`] bytes of input
/// (the last shorter), the members of a batch compressed in parallel and
/// written in order: what every gzip reader reads as one stream (RFC 1952
/// allows members one after another; Go's readers, which containerd,
/// podman and skopeo use, read them all), several times faster than one
/// member on as many cores. Each member has no name and time 0, so the
/// same input gives the same bytes, whatever the cores.
pub struct Members<W: Write> {
    inner: W,
    buf: Vec<u8>,
    batch: Vec<Vec<u8>>,
}

/// The input bytes of one member.
pub const MEMBER: usize = 4 << 20;

impl<W: Write> Members<W> {
    pub fn new(inner: W) -> Members<W> {
        Members {
            inner,
            buf: Vec::with_capacity(MEMBER),
            batch: Vec::new(),
        }
    }

    /// Compresses what is left and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || self.batch.is_empty() {
            self.batch.push(std::mem::take(&mut self.buf));
        }
        self.compress_batch()?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn compress_batch(&mut self) -> io::Result<()> {
        use rayon::prelude::*;
        let members: Vec<io::Result<Vec<u8>>> = self
            .batch
            .par_iter()
            .map(|chunk| {
                let mut gz = GzBuilder::new()
                    .mtime(0)
                    .write(Vec::with_capacity(chunk.len() / 2), Compression::new(6));
                gz.write_all(chunk)?;
                gz.finish()
            })
            .collect();
        self.batch.clear();
        for m in members {
            self.inner.write_all(&m?)?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Members<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(MEMBER - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == MEMBER {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(MEMBER));
            self.batch.push(full);
            if self.batch.len() >= 2 * rayon::current_num_threads() {
                self.compress_batch()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn squeeze(input: &[u8], piece: usize) -> Vec<u8> {
        let mut m = Members::new(Vec::new());
        for chunk in input.chunks(piece) {
            m.write_all(chunk).unwrap_or_else(|e| panic!("{e}"));
        }
        m.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn members_read_back_as_one_stream_and_do_not_depend_on_the_writes() {
        // Over two members' worth, of text and of noise.
        let mut input = Vec::new();
        let mut x: u64 = 1;
        while input.len() < 2 * MEMBER + 12_345 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            input.extend_from_slice(b"def f(x):\n    return x\n");
            input.extend_from_slice(&x.to_le_bytes());
        }
        let one = squeeze(&input, 1 << 16);
        assert_eq!(one, squeeze(&input, 1_000_003), "the same bytes");
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(one.as_slice())
            .read_to_end(&mut back)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, input);
        let headers = one.windows(4).filter(|w| *w == [0x1f, 0x8b, 8, 0]).count();
        assert!(headers >= 3, "{headers} members");
        // Nothing in, one empty member out.
        let empty = squeeze(&[], 1);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(empty.as_slice())
            .read_to_end(&mut back)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(back.is_empty());
    }
}
