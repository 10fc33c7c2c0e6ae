//! Files the tool keeps for itself (its state, its caches): read and written
//! without following a link that someone planted at their names, replaced
//! atomically, and synced where a write is a commit point. Errors name the
//! path.

use std::io::{self, Write};
use std::path::Path;

use fs_err::os::unix::fs::OpenOptionsExt;

/// `O_NOFOLLOW`: a link at the file's name is an error (`ELOOP`), never a
/// way to another file.
const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Opens `path` for reading.
pub fn open(path: &Path) -> io::Result<fs_err::File> {
    fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(NOFOLLOW)
        .open(path)
}

/// The bytes of `path`; `None` when it is missing or is not a file.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match open(path) {
        Ok(mut f) => {
            if !f.metadata()?.is_file() {
                return Ok(None);
            }
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut f, &mut bytes)?;
            Ok(Some(bytes))
        }
        Err(e) if missing_or_link(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens `path` for appending, creating it; anything but a file at that
/// name (a planted link) is removed first, never followed.
pub fn open_append(path: &Path) -> io::Result<fs_err::File> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
        remove(path)?;
    }
    fs_err::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(NOFOLLOW)
        .mode(0o644)
        .open(path)
}

/// Whether a write must reach the disk before the call returns: the
/// state's commit point must; the journal and the input cache need not (a
/// crash loses at most a cache, and drift is found by stat either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Synced,
    Unsynced,
}

/// The start of the temporary files' names beside the files they replace.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Replaces `path` with `bytes`: written to a new, exclusively created file
/// beside it and renamed over it; when `Synced`, the file before the rename
/// and the folder after it.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let synced = durability == Durability::Synced;
    let written = tmp.write_all(bytes).and_then(|()| {
        if synced {
            tmp.as_file().sync_data()
        } else {
            Ok(())
        }
    });
    written.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tmp.path().display())))?;
    tmp.persist(path)
        .map_err(|e| io::Error::new(e.error.kind(), format!("{}: {}", path.display(), e.error)))?;
    if synced { sync_dir(dir) } else { Ok(()) }
}

/// Syncs a folder, so that a rename or removal in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Removes the file (or link) `path`, if it is there.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs_err::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether an open failed because the name is missing or is a link.
fn missing_or_link(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Replaces `path` with a file that `fill` makes: `fill` gets the path of
/// a new, exclusively created temporary file beside `path` (so the rename
/// stays on one file system), and when it succeeds that file is renamed
/// over `path`; when it fails the temporary file is removed.
pub fn replace_with<T, E: From<io::Error>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let made = fill(tmp.path())?;
    tmp.persist(path)
        .map_err(|e| io::Error::new(e.error.kind(), format!("{}: {}", path.display(), e.error)))?;
    Ok(made)
}

/// Moves a finished result (a file or a folder made in a temporary place
/// on the same file system) to `to`, the cache entry it completes. If
/// another run placed that entry meanwhile, theirs is kept: cache entries
/// are named by what they hold, so theirs is as good.
pub fn place(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        fs_err::create_dir_all(parent)?;
    }
    match fs_err::rename(from, to) {
        Ok(()) => Ok(()),
        Err(_) if std::fs::symlink_metadata(to).is_ok() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The most a file the user names may hold (a recipe, a base it extends,
/// `assemble.lock`, a requirements file, a uv project's `pyproject.toml`
/// and `uv.lock`): these are text of kilobytes; a larger one is a mistake.
pub const NAMED_FILE_LIMIT: u64 = 8 << 20;

/// What is at `path`, following links, in words: `a folder`, `a FIFO
/// (named pipe)`, `a character device`, ...; `None` when nothing is there.
pub fn describe(path: &Path) -> Option<&'static str> {
    std::fs::metadata(path)
        .ok()
        .map(|m| kind_words(m.file_type()))
}

fn kind_words(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a folder"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a symbolic link"
    }
}

/// Reads a file the user names: it must be a regular file (a link to one
/// is followed) of at most `limit` bytes. Anything else is refused before a
/// byte is read: a FIFO (opened without blocking, so one with no writer
/// does not hang the run), a device such as `/dev/zero`, a socket, a
/// folder, or a larger file. The error names the path and what is there.
pub fn read_named(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let f = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file",
                path.display(),
                kind_words(meta.file_type())
            ),
        ));
    }
    let too_large = |size: u64| {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "{} holds {size} bytes, more than the {} MiB such a file may hold",
                path.display(),
                limit >> 20
            ),
        )
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // At most one byte past the limit: a file that grew meanwhile.
    io::Read::read_to_end(&mut io::Read::take(f, limit + 1), &mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// As [`read_named`], as UTF-8 text.
pub fn read_named_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_named(path, limit)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}
