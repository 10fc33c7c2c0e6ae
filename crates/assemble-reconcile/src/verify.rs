//! `verify`: re-hash the whole output against the recorded manifest.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::state::{STATE_DIR, State};
use crate::{Error, Kind, Sha256};

/// One way the output differs from what the tool recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

/// Every difference between `out` and its recorded manifest: paths missing,
/// of another kind, content or mode, links retargeted, and paths the tool
/// did not make. Reads every file (unlike `diff`, which trusts stats).
pub fn verify(out: &Path) -> Result<Vec<Difference>, Error> {
    let state = State::load(out).ok_or_else(|| Error::NoState(out.to_path_buf()))?;
    let mut found: Vec<Difference> = state
        .entries
        .as_slice()
        .par_iter()
        .filter_map(|(path, r)| {
            let p = out.join(path);
            let what = match std::fs::symlink_metadata(&p) {
                Err(_) => Some("missing".to_string()),
                Ok(m) => match &r.kind {
                    Kind::Dir if m.is_dir() => None,
                    Kind::Dir => Some("should be a folder".into()),
                    Kind::Link { target } => match std::fs::read_link(&p) {
                        Ok(t) if t.as_os_str() == target.as_str() => None,
                        Ok(t) => Some(format!("link points at {}, recorded {target}", t.display())),
                        Err(_) => Some("should be a symlink".into()),
                    },
                    Kind::File { sha256, executable } => {
                        if !m.is_file() {
                            Some("should be a file".into())
                        } else {
                            let mode = m.permissions().mode() & 0o7777;
                            let want = if *executable { 0o755 } else { 0o644 };
                            match Sha256::of_file(&p) {
                                Err(e) => Some(format!("unreadable: {e}")),
                                Ok(h) if h != *sha256 => {
                                    Some(format!("content differs: sha256 {h}, recorded {sha256}"))
                                }
                                Ok(_) if mode != want => {
                                    Some(format!("mode {mode:o}, recorded {want:o}"))
                                }
                                Ok(_) => None,
                            }
                        }
                    }
                },
            };
            what.map(|what| Difference {
                path: path.clone(),
                what,
            })
        })
        .collect();
    for e in walkdir::WalkDir::new(out)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == STATE_DIR))
    {
        let e = e.map_err(|e| std::io::Error::other(e.to_string()))?;
        let rel = e
            .path()
            .strip_prefix(out)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        if !state.entries.contains_key(&rel) {
            found.push(Difference {
                path: rel,
                what: "not made by the tool".into(),
            });
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
