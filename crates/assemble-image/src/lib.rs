//! OCI images of an assembled tree, without a container engine.
//!
//! An image is the tree at its prefix in a few layers, ordered by how often
//! they change (the interpreter when asked for, the venv's distributions,
//! the other units, the app), each a reproducible tar of the recorded tree
//! ([`assemble_reconcile::write_tar_where`]: path order, owner 0, fixed
//! modes, one time for every entry) stored gzipped with no name and no time
//! in its headers (in members of 4 MiB compressed in parallel,
//! [`blob::Members`]); a config and a manifest whose JSON depends on nothing
//! else. So the same tree and options give the same digests, and a change
//! to one unit changes that unit's layer (and the config and manifest)
//! only.
//!
//! - [`blob`]: the blobs by digest (an OCI layout's `blobs/sha256/`).
//! - [`image`]: the layers, the config and the manifest ([`Spec`]).
//! - [`host`]: the host's files a self-contained image needs: the
//!   interpreter's installation and every library that it and the tree's
//!   ELF files load, with the loader, links kept as links.
//! - [`base`]: a base image (an OCI layout or a docker-archive) read, its
//!   file system resolved to check that it holds a path.
//! - [`write`]: an OCI image layout, or a docker-archive tar.
//! - [`push`]: the blobs a registry lacks and the manifest, over the OCI
//!   distribution API ([`assemble_registry`]).

pub mod base;
pub mod blob;
pub mod host;
pub mod image;
pub mod push;
pub mod write;

use std::path::PathBuf;

pub use blob::{Blob, Store};
pub use image::{Config, Image, Spec, rfc3339};

/// An error of this crate; each names the file, image or registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tree(#[from] assemble_reconcile::Error),
    #[error("{path}: its digest is {got}, not {want}")]
    Digest {
        path: PathBuf,
        want: String,
        got: String,
    },
    #[error("{path}: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Host { path: PathBuf, why: String },
    #[error(
        "the base image {} has no {path} (a file, links followed inside the image): {why}",
        base.display()
    )]
    BaseLacks {
        base: PathBuf,
        path: String,
        why: String,
    },
    #[error(transparent)]
    Registry(#[from] assemble_registry::Error),
    #[error(transparent)]
    Elf(#[from] assemble_elf::Error),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Io(std::io::Error::other(e))
    }
}
