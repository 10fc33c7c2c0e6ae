//! How an entry is kept in the registry: one OCI artifact per entry,
//! tagged `<kind>-<key>`, its manifest of our own `artifactType` with
//! annotations naming the entry, an empty config, and two layers: the
//! entry's listing (every path with its kind, a file's sha256 and
//! executable bit, a link's target: its seal without the stats) and its
//! tree (a reproducible tar, zstd-compressed).

use std::collections::BTreeMap;

use assemble_cache::{SealedKind, SharedEntry};
use serde::{Deserialize, Serialize};

pub const ARTIFACT_TYPE: &str = "application/vnd.authentik-assemble.cache.v1";
pub const LISTING_TYPE: &str = "application/vnd.authentik-assemble.listing.v1+json";
pub const TREE_TYPE: &str = "application/vnd.authentik-assemble.tree.v1.tar+zstd";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's bytes, `{}`.
pub const EMPTY: &[u8] = b"{}";

/// The annotations' keys.
pub const KIND: &str = "authentik-assemble.kind";
pub const KEY: &str = "authentik-assemble.key";
pub const UNIT: &str = "authentik-assemble.unit";
pub const PACKAGE: &str = "authentik-assemble.package";
pub const PACKAGE_VERSION: &str = "authentik-assemble.package-version";
pub const TOOL_VERSION: &str = "authentik-assemble.tool-version";
pub const TITLE: &str = "org.opencontainers.image.title";

/// The tag of `entry`: `venv-<key>`, `pyc-<key>`, `elf-<key>`.
pub fn tag(entry: &SharedEntry<'_>) -> String {
    format!("{}-{}", entry.kind.word(), entry.key)
}

/// One path of an entry's listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub path: String,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum What {
    Dir,
    File { sha256: String, executable: bool },
    Link { target: String },
}

impl What {
    pub fn of(kind: &SealedKind) -> What {
        match kind {
            SealedKind::Dir => What::Dir,
            SealedKind::File {
                sha256, executable, ..
            } => What::File {
                sha256: sha256.hex(),
                executable: *executable,
            },
            SealedKind::Link { target } => What::Link {
                target: target.clone(),
            },
        }
    }
}

/// An entry's listing, as its layer holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub kind: String,
    pub key: String,
    pub paths: Vec<Listed>,
}

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The manifest of an entry's artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// The listing's and the tree's descriptors, if this is an entry's
    /// artifact of this tool for `entry` (its type, kind and key).
    pub fn layers_for(
        &self,
        entry: &SharedEntry<'_>,
    ) -> Result<(&Descriptor, &Descriptor), String> {
        if self.artifact_type != ARTIFACT_TYPE {
            return Err(format!(
                "its artifactType is {:?}, not this tool's {ARTIFACT_TYPE}",
                self.artifact_type
            ));
        }
        let said = |k: &str| self.annotations.get(k).map_or("", String::as_str);
        if said(KIND) != entry.kind.word() || said(KEY) != entry.key {
            return Err(format!(
                "it is the entry {} {}, not the one its tag names",
                said(KIND),
                said(KEY)
            ));
        }
        match self.layers.as_slice() {
            [listing, tree]
                if listing.media_type == LISTING_TYPE && tree.media_type == TREE_TYPE =>
            {
                Ok((listing, tree))
            }
            _ => Err(format!(
                "its layers are not a listing ({LISTING_TYPE}) and a tree ({TREE_TYPE})"
            )),
        }
    }
}

/// Who made the entries pushed: the annotations every artifact carries.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The recipe's `[package]` name and version.
    pub package: String,
    pub package_version: String,
    /// This tool's version.
    pub tool_version: String,
}

/// The manifest of `entry`, its listing and tree being those blobs.
pub fn manifest(
    entry: &SharedEntry<'_>,
    origin: &Origin,
    listing: Descriptor,
    tree: Descriptor,
) -> Manifest {
    let mut annotations = BTreeMap::from([
        (KIND.to_string(), entry.kind.word().to_string()),
        (KEY.to_string(), entry.key.to_string()),
        (TITLE.to_string(), entry.what.clone()),
        (PACKAGE.to_string(), origin.package.clone()),
        (PACKAGE_VERSION.to_string(), origin.package_version.clone()),
        (TOOL_VERSION.to_string(), origin.tool_version.clone()),
    ]);
    if let Some(unit) = entry.unit {
        annotations.insert(UNIT.to_string(), unit.to_string());
    }
    Manifest {
        schema_version: 2,
        media_type: MANIFEST_TYPE.to_string(),
        artifact_type: ARTIFACT_TYPE.to_string(),
        config: Descriptor {
            media_type: EMPTY_TYPE.to_string(),
            digest: assemble_registry::digest_of(EMPTY),
            size: EMPTY.len() as u64,
        },
        layers: vec![listing, tree],
        annotations,
    }
}
