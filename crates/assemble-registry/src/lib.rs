//! A client of the OCI distribution API (`oci-client`), for one
//! repository: blobs asked for (`HEAD`), pushed from a file in one `PUT`
//! and pulled into a file; manifests pushed byte for byte and pulled by
//! tag or digest. Whatever comes from a registry is checked against its
//! digest before it is handed on: a blob is written to a temporary file
//! beside its destination, hashed as it is written, and renamed there only
//! when it matches; a manifest's bytes must hash to the digest asked for
//! (or, pulled by tag, to the one the registry names).
//!
//! HTTPS with the system's roots; plain http only for a registry on
//! loopback, or any with `insecure`. Credentials: [`auth`]. Errors name the
//! reference and never a credential; a refusal (401, 403) says how to give
//! one.

mod auth;

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use sha2::Digest as _;

/// An error of this crate; each names the reference.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{reference}: {why}")]
    Registry { reference: String, why: String },
    #[error("{reference}: {what} has digest {got}, not {want}: refused")]
    Digest {
        reference: String,
        what: String,
        want: String,
        got: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One repository of a registry, and the tag or digest of a reference.
pub struct Registry {
    client: Client,
    target: Reference,
    reference: String,
    runtime: tokio::runtime::Runtime,
}

impl Registry {
    /// Connects (lazily: nothing is sent yet) to `reference`
    /// (`REGISTRY/REPOSITORY[:TAG|@DIGEST]`).
    pub fn connect(reference: &str, insecure: bool) -> Result<Registry, Error> {
        let failed = |why: String| Error::Registry {
            reference: reference.to_string(),
            why,
        };
        let target: Reference = reference
            .parse()
            .map_err(|e| failed(format!("not a reference REGISTRY/REPOSITORY:TAG: {e}")))?;
        let registry = target.resolve_registry().to_string();
        let protocol = if insecure || loopback(&registry) {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            use_monolithic_push: true,
            extra_root_certificates: system_certificates(),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            ..ClientConfig::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("starting the client: {e}")))?;
        let auth = auth::credentials(&registry);
        runtime.block_on(client.store_auth_if_needed(&registry, &auth));
        Ok(Registry {
            client,
            target,
            reference: reference.to_string(),
            runtime,
        })
    }

    /// The repository, as given (`REGISTRY/REPOSITORY[:TAG]`).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    fn failed(&self, why: String) -> Error {
        Error::Registry {
            reference: self.reference.clone(),
            why: with_hint(why),
        }
    }

    /// Whether the repository has the blob `digest`.
    pub fn has_blob(&self, digest: &str) -> Result<bool, Error> {
        self.runtime
            .block_on(self.client.blob_exists(&self.target, digest))
            .map_err(|e| self.failed(format!("asking for {digest}: {}", chain(&e))))
    }

    /// Uploads the file `path` as the blob `digest` of `size` bytes,
    /// streamed.
    pub fn push_blob(&self, path: &Path, digest: &str, size: u64) -> Result<(), Error> {
        let file = fs_err::File::open(path).map_err(|e| io(path, e))?;
        let chunks = futures_util::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(oci_client::errors::OciDistributionError::IoError(e)), f)),
            }
        });
        self.runtime
            .block_on(
                self.client
                    .push_blob_stream(&self.target, chunks, digest, Some(size)),
            )
            .map(|_| ())
            .map_err(|e| self.failed(format!("uploading {digest}: {}", chain(&e))))
    }

    /// Puts `bytes` as the manifest of the reference's tag, as they are
    /// (so the registry's digest is theirs); returns that digest.
    pub fn push_manifest(&self, bytes: &[u8], media_type: &str) -> Result<String, Error> {
        self.push_manifest_to(&self.target, bytes, media_type)
    }

    /// [`Registry::push_manifest`] to the tag `tag` of the repository.
    pub fn push_manifest_tagged(
        &self,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, Error> {
        self.push_manifest_to(&self.tagged(tag), bytes, media_type)
    }

    fn push_manifest_to(
        &self,
        target: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String, Error> {
        let content_type = http::HeaderValue::from_str(media_type)
            .map_err(|e| self.failed(format!("the media type {media_type}: {e}")))?;
        self.runtime
            .block_on(
                self.client
                    .push_manifest_raw(target, bytes.to_vec(), content_type),
            )
            .map_err(|e| self.failed(format!("the manifest: {}", chain(&e))))?;
        Ok(digest_of(bytes))
    }

    /// The reference to the tag `tag` of this repository.
    fn tagged(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.target.registry().to_string(),
            self.target.repository().to_string(),
            tag.to_string(),
        )
    }

    /// The manifest the reference names, of one of `accepted` media types,
    /// with its digest, checked: the one the reference holds
    /// (`@sha256:...`), else the one the registry gives.
    pub fn pull_manifest(&self, accepted: &[&str]) -> Result<(Vec<u8>, String), Error> {
        self.pull_manifest_from(&self.target, accepted)?
            .ok_or_else(|| self.failed("the manifest: not found".into()))
    }

    /// The manifest of the tag `tag` of this repository, checked as
    /// [`Registry::pull_manifest`] checks it; `None` when the registry
    /// has no such tag (or no such repository yet).
    pub fn pull_manifest_tagged(
        &self,
        tag: &str,
        accepted: &[&str],
    ) -> Result<Option<(Vec<u8>, String)>, Error> {
        self.pull_manifest_from(&self.tagged(tag), accepted)
    }

    fn pull_manifest_from(
        &self,
        target: &Reference,
        accepted: &[&str],
    ) -> Result<Option<(Vec<u8>, String)>, Error> {
        let auth = auth::credentials(target.resolve_registry());
        let (bytes, said) = match self
            .runtime
            .block_on(self.client.pull_manifest_raw(target, &auth, accepted))
        {
            Ok(found) => found,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(self.failed(format!("the manifest: {}", chain(&e)))),
        };
        let got = digest_of(&bytes);
        let want = target.digest().map_or(said, str::to_string);
        if got != want {
            return Err(Error::Digest {
                reference: self.reference.clone(),
                what: "the manifest".into(),
                want,
                got,
            });
        }
        Ok(Some((bytes.to_vec(), got)))
    }

    /// Every tag of this repository (none when it does not exist yet).
    pub fn tags(&self) -> Result<Vec<String>, Error> {
        let auth = auth::credentials(self.target.resolve_registry());
        match self
            .runtime
            .block_on(self.client.list_tags(&self.target, &auth, None, None))
        {
            Ok(listed) => Ok(listed.tags),
            Err(e) if not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(self.failed(format!("listing its tags: {}", chain(&e)))),
        }
    }

    /// Downloads the blob `digest` to `to` (replaced atomically), refused
    /// unless its bytes hash to `digest`: nothing is left at `to` then.
    pub fn pull_blob(&self, digest: &str, to: &Path) -> Result<(), Error> {
        let dir = to.parent().unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-pull-")
            .tempfile_in(dir)
            .map_err(|e| io(dir, e))?;
        let file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| io(tmp.path(), e))?);
        match self
            .runtime
            .block_on(self.client.pull_blob(&self.target, digest, file))
        {
            Ok(()) => {}
            // Checked as it came: not what was asked for.
            Err(oci_client::errors::OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { actual, .. },
            )) => {
                return Err(Error::Digest {
                    reference: self.reference.clone(),
                    what: format!("the blob {digest}"),
                    want: digest.to_string(),
                    got: actual,
                });
            }
            Err(e) => return Err(self.failed(format!("downloading {digest}: {}", chain(&e)))),
        }
        let (got, _) = digest_of_file(tmp.path())?;
        if got != digest {
            return Err(Error::Digest {
                reference: self.reference.clone(),
                what: format!("the blob {digest}"),
                want: digest.to_string(),
                got,
            });
        }
        let kept = tmp.into_temp_path().keep().map_err(|e| io(to, e.error))?;
        assemble_fs::files::place(&kept, to).map_err(|e| io(to, e))
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The digest (`sha256:<hex>`) and size of the file `path`: what a
/// descriptor of it says.
pub fn digest_of_file(path: &Path) -> Result<(String, u64), Error> {
    let mut h = sha2::Sha256::new();
    let size = std::io::copy(
        &mut fs_err::File::open(path).map_err(|e| io(path, e))?,
        &mut h,
    )
    .map_err(|e| io(path, e))?;
    Ok((format!("sha256:{}", hex::encode(h.finalize())), size))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `why`, with what to do when the registry refused who we are.
fn with_hint(why: String) -> String {
    if why.contains("401") || why.contains("403") {
        format!(
            "{why}\n  hint: the registry wants credentials, or refused these: set ASSEMBLE_REGISTRY_USER and ASSEMBLE_REGISTRY_PASSWORD (or ASSEMBLE_REGISTRY_TOKEN), or log in with `podman login`, `skopeo login` or `docker login`, which write the auth file read here"
        )
    } else {
        why
    }
}

/// Whether `registry` (`HOST[:PORT]`) is on loopback.
/// An error with its causes (`error sending request: ... Connection
/// refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !said.contains(&more) {
            said = format!("{said}: {more}");
        }
        cause = c.source();
    }
    said
}

/// The system's trust store (or `SSL_CERT_FILE`/`SSL_CERT_DIR` instead,
/// as OpenSSL reads them), added to the bundled roots.
fn system_certificates() -> Vec<oci_client::client::Certificate> {
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .map(|c| oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Der,
            data: c.to_vec(),
        })
        .collect()
}

/// Whether the registry said it has no such manifest or repository.
fn not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, C::ManifestUnknown | C::NameUnknown | C::NotFound)),
        E::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

fn loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_gets_plain_http_by_default() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.0.0.1",
        ] {
            assert!(loopback(r), "{r}");
        }
        for r in ["registry.example.com", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!loopback(r), "{r}");
        }
    }
}
