//! An entry's tree as a tar compressed with zstd: written from its
//! members (each file checked against its record as it is read), and
//! unpacked into a folder that does not exist yet, confined to it by
//! construction.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use assemble_cache::{Member, SealedKind};
use sha2::Digest as _;

/// zstd's level and workers: fixed, so that the same tree gives the same
/// bytes on every machine.
const LEVEL: i32 = 3;
const WORKERS: u32 = 4;

/// Writes the members (in order; `""`, the entry's folder, left out) as a
/// reproducible tar compressed into `to`: no owners, no times, modes 0755
/// or 0644. A file whose bytes no longer hash to its record is an error:
/// nothing corrupt is pushed.
pub fn write(members: &[Member], to: &Path) -> io::Result<()> {
    let file = fs_err::File::create(to)?;
    let mut zstd = zstd::stream::Encoder::new(io::BufWriter::new(file), LEVEL)?;
    zstd.multithread(WORKERS)?;
    let mut tar = tar::Builder::new(zstd);
    for m in members.iter().filter(|m| !m.path.is_empty()) {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match &m.kind {
            SealedKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &m.path, io::empty())?;
            }
            SealedKind::Link { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, &m.path, target)?;
            }
            SealedKind::File {
                sha256, executable, ..
            } => {
                let f = fs_err::File::open(&m.from)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(f.metadata()?.len());
                let mut read = Hashing {
                    inner: f,
                    hash: sha2::Sha256::new(),
                };
                tar.append_data(&mut header, &m.path, &mut read)?;
                if read.hash.finalize().as_slice() != sha256.0 {
                    return Err(io::Error::other(format!(
                        "{}: changed since it was made (its sha256 is not the recorded one); not pushed",
                        m.from.display()
                    )));
                }
            }
        }
    }
    let mut out = tar.into_inner()?.finish()?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks the compressed tar `from` into `into`, which must not exist:
/// folders, regular files and symbolic links only; every path relative
/// and plain (no `..`, no root); every parent a folder this unpack made;
/// every file and folder created anew (never through a link, never over
/// anything). A link is made as a link and never followed here.
pub fn unpack(from: &Path, into: &Path) -> io::Result<()> {
    fs_err::create_dir(into)?;
    let zstd = zstd::stream::Decoder::new(fs_err::File::open(from)?)?;
    let mut archive = tar::Archive::new(zstd);
    let mut made: HashSet<String> = HashSet::from([String::new()]);
    let refuse = |path: &str, why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {path}: {why}", from.display()),
        )
    };
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let rel = plain(&raw)
            .ok_or_else(|| refuse(&raw.to_string_lossy(), "not a plain relative path"))?;
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        if !made.contains(parent) {
            return Err(refuse(
                &rel,
                "its folder is not one the archive made before it",
            ));
        }
        let path = into.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs_err::create_dir(&path)?;
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                made.insert(rel);
            }
            tar::EntryType::Regular => {
                let mode = if entry.header().mode()? & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                let mut file = fs_err::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)?;
                io::copy(&mut entry, &mut file)?;
                // Whatever the umask made of it.
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse(&rel, "a link without a target"))?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            }
            other => {
                return Err(refuse(
                    &rel,
                    &format!("{other:?} is not a folder, file or link"),
                ));
            }
        }
    }
    Ok(())
}

/// Unpacks the compressed tar `from`, a set of file entries (flat: names,
/// no folders), each to where `place` says, unless a file recorded with
/// the listed sha256 is there: written anew (never through a link),
/// hashed as it is written and checked against `listed`, its digest link
/// made after it. Every listed file must come, and nothing else. On a
/// refusal, the files written are removed (their records first).
pub fn unpack_files(
    from: &Path,
    listed: &[crate::artifact::Listed],
    place: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Vec<PathBuf>, String> {
    let mut placed = Vec::new();
    let done = unpack_files_into(from, listed, place, &mut placed);
    if done.is_err() {
        for p in &placed {
            let _ = assemble_cache::digest::discard(p);
        }
    }
    done.map(|()| placed)
}

fn unpack_files_into(
    from: &Path,
    listed: &[crate::artifact::Listed],
    place: &dyn Fn(&str) -> Option<PathBuf>,
    placed: &mut Vec<PathBuf>,
) -> Result<(), String> {
    use crate::artifact::What;
    let said = |e: io::Error| format!("its tree: {e}");
    let mut wanted: HashMap<&str, (&str, bool)> = HashMap::new();
    for l in listed {
        match &l.what {
            What::File { sha256, executable } => {
                wanted.insert(&l.path, (sha256, *executable));
            }
            What::Dir if l.path.is_empty() => {}
            _ => return Err(format!("{}: its listing holds more than files", l.path)),
        }
    }
    let zstd = zstd::stream::Decoder::new(fs_err::File::open(from).map_err(said)?).map_err(said)?;
    let mut archive = tar::Archive::new(zstd);
    let mut seen = HashSet::new();
    // Read here in order, written by a few threads: creating files is
    // the cost, and the kernel creates them in parallel.
    let folders = Mutex::new(HashSet::new());
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let written = Mutex::new(Vec::new());
    let (send, receive) = std::sync::mpsc::sync_channel::<FileJob<'_>>(256);
    let receive = Mutex::new(receive);
    let read = std::thread::scope(|scope| -> Result<(), String> {
        for _ in 0..WRITERS {
            scope.spawn(|| {
                loop {
                    let job = match receive.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    match write_one(&job, &folders) {
                        Ok(Some(dest)) => lock(&written).push(dest),
                        Ok(None) => {}
                        Err(why) => {
                            lock(&failed).get_or_insert(why);
                        }
                    }
                }
            });
        }
        let read = (|| -> Result<(), String> {
            for entry in archive.entries().map_err(said)? {
                let mut entry = entry.map_err(said)?;
                let name = entry.path().map_err(said)?.to_string_lossy().into_owned();
                let Some(&(sha, executable)) = wanted.get(name.as_str()) else {
                    return Err(format!("{name}: not in its listing"));
                };
                if entry.header().entry_type() != tar::EntryType::Regular || name.contains('/') {
                    return Err(format!("{name}: not a plain file"));
                }
                let dest = place(&name)
                    .ok_or_else(|| format!("{name}: not a name of this kind of entry"))?;
                if !seen.insert(name.clone()) {
                    return Err(format!("{name}: twice in its tree"));
                }
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                io::copy(&mut entry, &mut bytes).map_err(said)?;
                let job = FileJob {
                    name,
                    dest,
                    bytes,
                    sha,
                    executable,
                };
                if lock(&failed).is_some() || send.send(job).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        drop(send);
        read
    });
    *placed = std::mem::take(&mut *lock(&written));
    read?;
    if let Some(why) = lock(&failed).take() {
        return Err(why);
    }
    if seen.len() != wanted.len() {
        return Err(format!(
            "its tree holds {} of the {} files its listing names",
            seen.len(),
            wanted.len()
        ));
    }
    Ok(())
}

/// Threads that write a set's files.
const WRITERS: usize = 4;

/// One file of a set, read, to write.
struct FileJob<'a> {
    name: String,
    dest: PathBuf,
    bytes: Vec<u8>,
    /// Its listed sha256, hex.
    sha: &'a str,
    executable: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `job`'s file where it goes, if its bytes are what the listing
/// says and no file recorded with that sha256 is there: written beside
/// it and renamed over it (a run reading it meanwhile sees the old file
/// or the whole new one), its digest link made after. The path written.
fn write_one(
    job: &FileJob<'_>,
    folders: &Mutex<HashSet<PathBuf>>,
) -> Result<Option<PathBuf>, String> {
    let said = |e: io::Error| format!("its tree: {e}");
    let got = assemble_manifest::Sha256::of(&job.bytes);
    if got.hex() != job.sha {
        return Err(format!(
            "{}: its sha256 is {}, listed as {}",
            job.name,
            got.hex(),
            job.sha
        ));
    }
    let dest = &job.dest;
    if assemble_cache::digest::recorded(dest) == Some(got) {
        // There, recorded: checked by hash where it is used.
        return Ok(None);
    }
    if let Some(dir) = dest.parent()
        && !lock(folders).contains(dir)
    {
        fs_err::create_dir_all(dir).map_err(said)?;
        lock(folders).insert(dir.to_path_buf());
    }
    let mode = if job.executable { 0o755 } else { 0o644 };
    assemble_fs::files::replace_with(dest, |tmp| -> io::Result<()> {
        let mut file = fs_err::OpenOptions::new().write(true).open(tmp)?;
        file.write_all(&job.bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    })
    .map_err(said)?;
    // The record last: a file without one is incomplete.
    assemble_cache::digest::record_new(dest, &got).map_err(said)?;
    Ok(Some(dest.clone()))
}

/// `path` as a `/`-separated string of plain names, if it is one.
fn plain(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => parts.push(name.to_str()?),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_taken() {
        assert_eq!(plain(Path::new("a/b.py")).as_deref(), Some("a/b.py"));
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "./a"] {
            assert_eq!(plain(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn an_archive_cannot_write_through_a_link_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs_err::create_dir(&outside).unwrap();
        // A link to the folder outside, then a file "through" it.
        let tar_path = dir.path().join("evil.tar.zst");
        let mut tar = tar::Builder::new(
            zstd::stream::Encoder::new(fs_err::File::create(&tar_path).unwrap(), 3)
                .unwrap()
                .auto_finish(),
        );
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        tar.append_link(&mut h, "link", &outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        tar.append_data(&mut h, "link/planted", &b"x"[..]).unwrap();
        drop(tar.into_inner().unwrap());
        let e = unpack(&tar_path, &dir.path().join("into")).unwrap_err();
        assert!(e.to_string().contains("link/planted"), "{e}");
        assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
    }

    /// A set of file entries whose second file is not what its listing
    /// says: refused, and the first, already written, removed with its
    /// record; a good set lands with every record.
    #[test]
    fn a_set_with_one_wrong_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        fs_err::create_dir_all(&from).unwrap();
        let mut members = vec![Member {
            path: String::new(),
            from: from.clone(),
            kind: SealedKind::Dir,
        }];
        for (name, body) in [("a.pyc", b"aaaa"), ("b.pyc", b"bbbb")] {
            fs_err::write(from.join(name), body).unwrap();
            members.push(Member {
                path: name.into(),
                from: from.join(name),
                kind: SealedKind::File {
                    sha256: assemble_manifest::Sha256::of(body),
                    executable: false,
                    elf: false,
                },
            });
        }
        let tree = dir.path().join("set.tar.zst");
        write(&members, &tree).unwrap();
        let mut listed: Vec<crate::artifact::Listed> = members
            .iter()
            .map(|m| crate::artifact::Listed {
                path: m.path.clone(),
                what: crate::artifact::What::of(&m.kind),
            })
            .collect();
        let store = dir.path().join("store");
        let place = |name: &str| Some(store.join(name));
        let good = unpack_files(&tree, &listed, &place).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(
            assemble_cache::digest::recorded(&store.join("a.pyc")),
            Some(assemble_manifest::Sha256::of(b"aaaa"))
        );
        listed[2].what = crate::artifact::What::File {
            sha256: "00".repeat(32),
            executable: false,
        };
        let other = dir.path().join("other");
        let place = |name: &str| Some(other.join(name));
        let why = unpack_files(&tree, &listed, &place).unwrap_err();
        assert!(why.contains("b.pyc"), "{why}");
        let left: Vec<_> = fs_err::read_dir(&other)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }
}
