//! `verify`: re-hash the whole output against the recorded manifest.

use rayon::prelude::*;
use serde::Serialize;

use std::path::{Path, PathBuf};

use crate::Error;
use crate::root::{EntryType, Root};
use crate::state::{Layout, State};
use assemble_manifest::{Kind, hash_stream};
use assemble_nar::Hash;

/// One way the output differs from what the tool recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

/// Every difference between the output and its recorded manifest: paths
/// missing, of another kind, content or mode (files and folders), links
/// retargeted, and paths the tool did not make. Reads every file (unlike
/// `diff`, which trusts stats), through a handle of the output's root:
/// nothing is followed.
pub fn verify(layout: &Layout) -> Result<Vec<Difference>, Error> {
    let (root, state) = layout.open_recorded()?;
    differences(&root, &state)
}

/// What `verify --nar-hash` found of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarCheck {
    /// Its NAR hash is the one asked for.
    Matches,
    /// It is not: its own hash, and, when a state remembers the hash
    /// asked for, the differences from the manifest recorded with it.
    Differs {
        got: Hash,
        recorded: Option<(PathBuf, Vec<Difference>)>,
    },
}

/// Checks any tree `dir` (moved, copied: it needs no state) against the
/// NAR hash `want`, reading every file once. When it differs and a state
/// folder under `base` remembers `want` for the manifest it recorded (an
/// output that was assembled, then moved or copied), `dir` is compared
/// with that manifest so that each difference is named.
pub fn verify_nar_hash(dir: &Path, want: &Hash, base: &Path) -> Result<NarCheck, Error> {
    let got = assemble_nar::nar_hash(dir).map_err(|e| match e {
        assemble_nar::Error::Io(e) => Error::Io(e),
        e => Error::Io(std::io::Error::other(e.to_string())),
    })?;
    if got == *want {
        return Ok(NarCheck::Matches);
    }
    let recorded = match recorded_with(base, want) {
        Some((state_dir, state)) => {
            let root = Root::open(dir)?;
            Some((state_dir, differences(&root, &state)?))
        }
        None => None,
    };
    Ok(NarCheck::Differs { got, recorded })
}

/// The state folder under `base`, and its state, whose remembered NAR
/// hash is `want` for the manifest it holds now.
fn recorded_with(base: &Path, want: &Hash) -> Option<(PathBuf, State)> {
    let folders = fs_err::read_dir(base).ok()?;
    folders.filter_map(Result::ok).find_map(|e| {
        let dir = e.path();
        let (digest, hash) = crate::export::remembered(&dir)?;
        if hash != *want {
            return None;
        }
        let state = State::load(&dir)?;
        let entries = state
            .entries
            .iter()
            .map(|(p, r)| (p.as_str(), r.kind.clone()));
        (crate::export::manifest_digest(entries) == digest).then_some((dir, state))
    })
}

/// Every difference between the tree at `root` and the manifest `state`
/// recorded (see [`verify`]).
fn differences(root: &Root, state: &State) -> Result<Vec<Difference>, Error> {
    let mut found: Vec<Difference> = state
        .entries
        .as_slice()
        .par_iter()
        .filter_map(|(path, r)| {
            let what = match root.stat(path) {
                None => Some("missing".to_string()),
                Some(s) => {
                    let mode = s.mode & 0o7777;
                    match &r.kind {
                        Kind::Dir if !s.is_dir() => Some("should be a folder".into()),
                        Kind::Dir if mode != 0o755 => Some(format!("mode {mode:o}, recorded 755")),
                        Kind::Dir => None,
                        Kind::Link { .. } if !s.is_symlink() => Some("should be a symlink".into()),
                        Kind::Link { target } => match root.read_link(path) {
                            Ok(t) if t == target.as_str() => None,
                            Ok(t) => Some(format!(
                                "link points at {}, recorded {target}",
                                t.to_string_lossy()
                            )),
                            Err(e) => Some(format!("unreadable: {e}")),
                        },
                        Kind::File { .. } if !s.is_file() => Some("should be a file".into()),
                        Kind::File {
                            sha256, executable, ..
                        } => {
                            let want = if *executable { 0o755 } else { 0o644 };
                            let hash = root
                                .open_file(path)
                                .and_then(|mut f| hash_stream(&mut f, &[], |_| Ok(())));
                            match hash {
                                Err(e) => Some(format!("unreadable: {e}")),
                                Ok((h, _)) if h != *sha256 => {
                                    Some(format!("content differs: sha256 {h}, recorded {sha256}"))
                                }
                                Ok(_) if mode != want => {
                                    Some(format!("mode {mode:o}, recorded {want:o}"))
                                }
                                Ok(_) => None,
                            }
                        }
                    }
                }
            };
            what.map(|what| Difference {
                path: path.clone(),
                what,
            })
        })
        .collect();
    let mut folders = vec![String::new()];
    while let Some(dir) = folders.pop() {
        let entries = match root.list(&dir) {
            Ok(e) => e,
            Err(e) if crate::root::gone(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        for (name, t) in entries {
            let name = name.to_string_lossy();
            let rel = if dir.is_empty() {
                name.into_owned()
            } else {
                format!("{dir}/{name}")
            };
            match state.entries.get(&rel) {
                None => found.push(Difference {
                    path: rel,
                    what: "not made by the tool".into(),
                }),
                Some(r) if r.kind == Kind::Dir && t == EntryType::Dir => folders.push(rel),
                Some(_) => {}
            }
        }
    }
    for p in &state.pending {
        found.push(Difference {
            path: p.clone(),
            what: "a run was interrupted while changing it".into(),
        });
    }
    found.sort();
    Ok(found)
}
