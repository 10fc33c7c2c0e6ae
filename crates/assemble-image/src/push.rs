//! Pushing an image over the OCI distribution API (`oci-client`): each
//! blob the registry lacks (asked with `HEAD` first) is uploaded from its
//! file in one `PUT`, then the manifest, byte for byte as written, under
//! the reference's tag, so the registry's digest is the image's.
//!
//! Credentials, never printed: `ASSEMBLE_REGISTRY_TOKEN` (a bearer token,
//! as CI systems hand out), else `ASSEMBLE_REGISTRY_USER` with
//! `ASSEMBLE_REGISTRY_PASSWORD`, else the registry's entry in
//! `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` or the
//! docker config (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`),
//! else none. HTTPS with the system's roots; plain http only for a
//! registry on loopback, or any with `insecure`.

use std::io::Read;
use std::path::PathBuf;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::blob::{self, Blob, Store};
use crate::{Error, Image};

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// The reference, as given.
    pub reference: String,
    /// Digests of the blobs uploaded.
    pub uploaded: Vec<String>,
    /// Digests of the blobs the registry had.
    pub present: Vec<String>,
}

/// Pushes `image` (its blobs in `store`) to `reference`
/// (`REGISTRY/REPOSITORY:TAG`).
pub fn push(
    store: &Store,
    image: &Image,
    reference: &str,
    insecure: bool,
) -> Result<Pushed, Error> {
    let failed = |why: String| Error::Registry {
        reference: reference.to_string(),
        why: with_hint(why),
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
        ..ClientConfig::default()
    });
    let auth = credentials(&registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        client.store_auth_if_needed(&registry, &auth).await;
        let mut pushed = Pushed {
            reference: reference.to_string(),
            ..Pushed::default()
        };
        let blobs = image.layers.iter().map(|(_, b)| b).chain([&image.config]);
        for b in blobs {
            let there = client
                .blob_exists(&target, &b.digest)
                .await
                .map_err(|e| failed(format!("asking for {}: {e}", b.digest)))?;
            if there {
                pushed.present.push(b.digest.clone());
                continue;
            }
            upload(&client, &target, store, b)
                .await
                .map_err(|e| failed(format!("uploading {}: {e}", b.digest)))?;
            pushed.uploaded.push(b.digest.clone());
        }
        let content_type = http_header(blob::MANIFEST);
        client
            .push_manifest_raw(&target, image.manifest_json.clone(), content_type)
            .await
            .map_err(|e| failed(format!("the manifest: {e}")))?;
        Ok(pushed)
    })
}

/// One blob, streamed from its file.
async fn upload(
    client: &Client,
    target: &Reference,
    store: &Store,
    b: &Blob,
) -> Result<(), Box<dyn std::error::Error>> {
    let file = fs_err::File::open(store.path(&b.digest))?;
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
    client
        .push_blob_stream(target, chunks, &b.digest, Some(b.size))
        .await?;
    Ok(())
}

fn http_header(v: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(v)
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

/// The credentials for `registry` (see the module doc).
fn credentials(registry: &str) -> RegistryAuth {
    if let Ok(token) = std::env::var("ASSEMBLE_REGISTRY_TOKEN") {
        return RegistryAuth::Bearer(token);
    }
    if let (Ok(user), Ok(password)) = (
        std::env::var("ASSEMBLE_REGISTRY_USER"),
        std::env::var("ASSEMBLE_REGISTRY_PASSWORD"),
    ) {
        return RegistryAuth::Basic(user, password);
    }
    auth_files()
        .iter()
        .find_map(|f| from_auth_file(f, registry))
        .unwrap_or(RegistryAuth::Anonymous)
}

fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")));
    files.extend(env("HOME").map(|h| h.join(".docker/config.json")));
    files
}

/// `auths.<registry>.auth` (base64 of `user:password`) in a docker or
/// containers auth file.
fn from_auth_file(file: &std::path::Path, registry: &str) -> Option<RegistryAuth> {
    let bytes = assemble_fs::files::read_named(file, 1 << 20).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let auths = json["auths"].as_object()?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.split('/').next() == Some(registry)
    })?;
    let encoded = entry.1["auth"].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_string(), password.to_string()))
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

    #[test]
    fn an_auth_file_gives_the_registrys_entry() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("auth.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("me:s3cret");
        let text = format!(
            r#"{{"auths":{{"other:1":{{"auth":"eA=="}},"https://reg.example:5000":{{"auth":"{auth}"}}}}}}"#
        );
        fs_err::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        match from_auth_file(&file, "reg.example:5000") {
            Some(RegistryAuth::Basic(u, p)) => {
                assert_eq!((u.as_str(), p.as_str()), ("me", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        assert!(from_auth_file(&file, "nowhere").is_none());
    }
}
