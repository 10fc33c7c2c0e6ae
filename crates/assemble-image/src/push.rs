//! Pushing an image over the OCI distribution API
//! ([`assemble_registry`]): each blob the registry lacks (asked with
//! `HEAD` first) is uploaded from its file, then the manifest, byte for
//! byte as written, under the reference's tag, so the registry's digest is
//! the image's.

use assemble_registry::Registry;

use crate::blob::{self, Store};
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
    let registry = Registry::connect(reference, insecure)?;
    let mut pushed = Pushed {
        reference: reference.to_string(),
        ..Pushed::default()
    };
    for b in image.layers.iter().map(|(_, b)| b).chain([&image.config]) {
        if registry.has_blob(&b.digest)? {
            pushed.present.push(b.digest.clone());
            continue;
        }
        registry.push_blob(&store.path(&b.digest), &b.digest, b.size)?;
        pushed.uploaded.push(b.digest.clone());
    }
    registry.push_manifest(&image.manifest_json, blob::MANIFEST)?;
    Ok(pushed)
}
