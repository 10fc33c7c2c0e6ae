//! The output as one artifact: its NAR (what `nix-store --restore` turns
//! back into the tree; its sha256 is what `nix hash path` prints) and a tar
//! that is the same bytes for the same tree. Both are streamed from the
//! recorded manifest, in its order, with no walk of the tree and no temporary
//! copy; each file is read through the output's root handle (nothing is
//! followed) and must still have the stat the run recorded, so that what is
//! exported is what was assembled.
//!
//! The NAR hash is remembered in the state folder (`nar-hash`) for the
//! manifest it was computed from (the sha256 of every recorded path, kind,
//! content hash, mode bit and link target): asking again for an unchanged
//! tree reads nothing, and every assemble that leaves that tree reports it
//! (the apply digests its manifest when a hash is remembered).

use std::io::{self, Read, Write};

use assemble_manifest::Kind;
use assemble_nar::{Hash, Listed};
use sha2::Digest as _;

use crate::Error;
use crate::root::Root;
use crate::state::{Layout, State};

/// The file in the state folder that remembers the NAR hash.
const NAR_HASH_FILE: &str = "nar-hash";
/// Its format's version: bumped when the manifest digest changes meaning.
const NAR_HASH_VERSION: &str = "assemble-nar-hash-v1";

/// The tree as recorded: its state, checked complete, and its root handle.
struct Tree {
    root: Root,
    state: State,
}

impl Tree {
    fn open(layout: &Layout) -> Result<Tree, Error> {
        let (root, state) = layout.open_recorded()?;
        if let Some(path) = state.pending.iter().next() {
            return Err(Error::Changed {
                path: root.display(path),
                why: "the last assemble did not finish",
            });
        }
        Ok(Tree { root, state })
    }

    /// A recorded file, opened, with its length: refused when it is not
    /// what the run recorded. Its stat is the proof; when the stat moved,
    /// its content decides (hashed against the record, then read again):
    /// a deploy's later generation hard-links unchanged files, and a link
    /// made to a file changes its change time, not its bytes.
    /// A file that became a link, went, or lost its folder to a file is
    /// as changed as one edited.
    fn open_file(&self, path: &str) -> io::Result<(u64, std::fs::File)> {
        let changed = || {
            io::Error::other(format!(
                "{}: changed since the last assemble (run it again first)",
                self.root.display(path).display()
            ))
        };
        let mut f = self
            .root
            .open_file(path)
            .map_err(|e| if crate::root::gone(&e) { changed() } else { e })?;
        let now = assemble_manifest::Stat::of(&f.metadata()?);
        let recorded = self.state.entries.get(path);
        if recorded.and_then(|r| r.stat) == Some(now) {
            return Ok((now.size, f));
        }
        let Some(Kind::File { sha256, .. }) = recorded.map(|r| &r.kind) else {
            return Err(changed());
        };
        let (got, _) = assemble_manifest::hash_stream(&mut f, &[], |_| Ok(()))?;
        if got != *sha256 {
            return Err(changed());
        }
        io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
        Ok((now.size, f))
    }

    fn listed(&self) -> impl Iterator<Item = (&str, Listed<'_>)> {
        self.state.entries.iter().map(|(path, r)| {
            let kind = match &r.kind {
                Kind::Dir => Listed::Dir,
                Kind::File { executable, .. } => Listed::File {
                    executable: *executable,
                },
                Kind::Link { target } => Listed::Symlink {
                    target: target.as_bytes(),
                },
            };
            (path.as_str(), kind)
        })
    }

    fn remembered(&self, layout: &Layout) -> Option<Hash> {
        let (digest, hash) = remembered(&layout.state)?;
        (digest
            == manifest_digest(
                self.state
                    .entries
                    .iter()
                    .map(|(p, r)| (p.as_str(), r.kind.clone())),
            ))
        .then_some(hash)
    }
}

/// The sha256 of everything a manifest says of the tree (path, kind,
/// content hash, mode bit, link target), in path order: the key the NAR
/// hash is remembered under.
pub(crate) fn manifest_digest<'a>(entries: impl Iterator<Item = (&'a str, Kind)>) -> String {
    let mut h = sha2::Sha256::new();
    for (path, kind) in entries {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        match kind {
            Kind::Dir => h.update(b"d"),
            Kind::File {
                sha256, executable, ..
            } => {
                h.update(if executable { b"x" } else { b"f" });
                h.update(sha256.0);
            }
            Kind::Link { target } => {
                h.update(b"l");
                h.update((target.len() as u64).to_le_bytes());
                h.update(target.as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

/// The remembered NAR hash and the manifest digest it is for, if any.
pub(crate) fn remembered(state_dir: &std::path::Path) -> Option<(String, Hash)> {
    let text = fs_err::read_to_string(state_dir.join(NAR_HASH_FILE)).ok()?;
    let mut words = text.split_whitespace();
    if words.next()? != NAR_HASH_VERSION {
        return None;
    }
    let digest = words.next()?.to_string();
    Some((digest, Hash::parse(words.next()?).ok()?))
}

/// Writes the output's NAR to `out`.
pub fn write_nar(layout: &Layout, out: &mut impl Write) -> Result<(), Error> {
    let t = Tree::open(layout)?;
    assemble_nar::write_nar_listed(t.listed(), |p| t.open_file(p), out)?;
    Ok(())
}

/// The output's NAR hash: remembered for this tree, or computed (reading
/// every file once) and remembered.
pub fn nar_hash(layout: &Layout) -> Result<Hash, Error> {
    let t = Tree::open(layout)?;
    if let Some(h) = t.remembered(layout) {
        return Ok(h);
    }
    let mut h = HashWriter(sha2::Sha256::new());
    assemble_nar::write_nar_listed(t.listed(), |p| t.open_file(p), &mut h)?;
    let hash = Hash(h.0.finalize().into());
    assemble_fs::files::write_atomic(
        &layout.state.join(NAR_HASH_FILE),
        format!(
            "{NAR_HASH_VERSION} {} {}\n",
            manifest_digest(
                t.state
                    .entries
                    .iter()
                    .map(|(p, r)| (p.as_str(), r.kind.clone()))
            ),
            hash.to_sri()
        )
        .as_bytes(),
        assemble_fs::files::Durability::Unsynced,
    )?;
    Ok(hash)
}

/// Writes the output as a tar that depends on the tree alone: entries in
/// path order (a folder before what it holds), owner and group 0 with no
/// names, modes 0755/0644 (links 0777), every time `mtime`, no extended
/// attributes; long names in GNU's way.
pub fn write_tar(layout: &Layout, mtime: u64, out: &mut impl Write) -> Result<(), Error> {
    write_tar_where(layout, &TarShape::whole(mtime), &|_, _| true, out)
}

/// How [`write_tar_where`] lays the tree out.
#[derive(Debug, Clone, Default)]
pub struct TarShape {
    /// Every entry's time.
    pub mtime: u64,
    /// A folder path the tree is put under (`opt/authentik`: an image's
    /// prefix), its folders written first; empty: at the archive's root.
    pub under: String,
}

impl TarShape {
    /// The whole tree at the archive's root.
    pub fn whole(mtime: u64) -> TarShape {
        TarShape {
            mtime,
            under: String::new(),
        }
    }
}

/// As [`write_tar`], with only the recorded paths `keep` accepts (by path
/// and record), each with the folders above it (those `keep` refuses
/// too, as the tree has them), under `shape.under`: one layer of an
/// image. Nothing is written twice, and the same tree and `keep` give the
/// same bytes.
pub fn write_tar_where(
    layout: &Layout,
    shape: &TarShape,
    keep: &dyn Fn(&str, &crate::Recorded) -> bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let t = Tree::open(layout)?;
    let mut b = tar::Builder::new(out);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(shape.mtime);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h
    };
    let under = shape.under.trim_matches('/');
    let name = |path| in_archive(under, path);
    let mut prefix = String::new();
    for part in under.split('/').filter(|p| !p.is_empty()) {
        prefix.push_str(part);
        prefix.push('/');
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, &prefix, io::empty())?;
    }
    // The folders written so far (paths sort `a`, `a-b`, `a/c`: a folder
    // is not always just before what it holds).
    let mut open: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (path, r) in t.state.entries.iter() {
        if !keep(path, r) {
            continue;
        }
        // A folder is written only after those above it: when the parent
        // is written, so are all of them (one lookup for most entries).
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        let mut at = if parent.is_empty() || open.contains(parent) {
            path.len()
        } else {
            0
        };
        while let Some(slash) = path[at..].find('/') {
            let dir = &path[..at + slash];
            at += slash + 1;
            if open.insert(dir) {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, format!("{}/", name(dir)), io::empty())?;
            }
        }
        match &r.kind {
            Kind::Dir => {
                if open.insert(path) {
                    let mut h = header(tar::EntryType::Directory, 0o755, 0);
                    b.append_data(&mut h, format!("{}/", name(path)), io::empty())?;
                }
            }
            Kind::File { executable, .. } => {
                let (len, f) = t.open_file(path)?;
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, mode, len);
                b.append_data(&mut h, &*name(path), f.take(len))?;
            }
            Kind::Link { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, &*name(path), target)?;
            }
        }
    }
    b.into_inner()?.flush()?;
    Ok(())
}

/// `path` in an archive whose tree is under `under` ("": at its root).
fn in_archive<'a>(under: &str, path: &'a str) -> std::borrow::Cow<'a, str> {
    match under {
        "" => path.into(),
        u => format!("{u}/{path}").into(),
    }
}

/// A `Write` that hashes.
struct HashWriter(sha2::Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
