//! The host's files a self-contained image needs: the interpreter's
//! installation (its executable and standard library, without
//! `site-packages`, the test suite and the static library) and every
//! shared library that it and the tree's ELF files load, found the way the
//! loader finds them (autoPatchelf's resolution, [`assemble_elf::resolve`]),
//! with the loader itself. Each path comes with the folders and links on
//! the way to it, links kept as links, so that the image resolves it as
//! the host does. Folders are written 0755 and files 0755 or 0644 (as the
//! tree's), owned by root, so that a non-root user can run them.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// What one host path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { executable: bool },
    Link { target: PathBuf },
}

/// Host files by absolute path.
#[derive(Debug, Clone, Default)]
pub struct HostFiles {
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Libraries that were not found (named by who needs them).
    pub warnings: Vec<String>,
}

/// Names in the standard library's folder left out of an image.
const STDLIB_SKIP: &[&str] = &["site-packages", "dist-packages", "test", "__phello__"];

impl HostFiles {
    /// The interpreter whose executable is `executable` (as `bin/python`
    /// names it: links on the way are kept), its standard library in
    /// `stdlib` (`<prefix>/lib/pythonX.Y`), and the host libraries in
    /// `tree_libs` (the tree's run-time library list), with everything
    /// they load.
    pub fn interpreter(
        executable: &Path,
        stdlib: &Path,
        tree_libs: &[PathBuf],
    ) -> Result<HostFiles, Error> {
        let mut files = HostFiles::default();
        files.add_path(executable)?;
        files.add_tree(stdlib, &|name| {
            STDLIB_SKIP.iter().any(|s| name == *s)
                || name.to_str().is_some_and(|n| n.starts_with("config-"))
        })?;
        for lib in tree_libs {
            files.add_path(lib)?;
        }
        files.add_libraries()?;
        Ok(files)
    }

    /// Adds `path`, every folder on the way to it, and each link met (as
    /// a link, its target resolved in turn).
    pub fn add_path(&mut self, path: &Path) -> Result<(), Error> {
        let host = |why: String| Error::Host {
            path: path.to_path_buf(),
            why,
        };
        let mut at = PathBuf::from("/");
        let mut rest: VecDeque<OsString> = normal(path);
        let mut hops = 0;
        while let Some(name) = rest.pop_front() {
            if name == ".." {
                at.pop();
                continue;
            }
            let next = at.join(&name);
            let meta = fs_err::symlink_metadata(&next).map_err(|e| host(e.to_string()))?;
            if meta.is_symlink() {
                hops += 1;
                if hops > 40 {
                    return Err(host("too many links".into()));
                }
                let target = fs_err::read_link(&next).map_err(|e| host(e.to_string()))?;
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                let mut again = normal(&target);
                again.extend(rest);
                rest = again;
                self.entries.insert(next, Entry::Link { target });
            } else if meta.is_dir() {
                self.entries.insert(next.clone(), Entry::Dir);
                at = next;
            } else if meta.is_file() && rest.is_empty() {
                use std::os::unix::fs::PermissionsExt;
                let executable = meta.permissions().mode() & 0o111 != 0;
                self.entries
                    .insert(next.clone(), Entry::File { executable });
                at = next;
            } else {
                return Err(host(format!(
                    "{} is not a folder or a file",
                    next.display()
                )));
            }
        }
        Ok(())
    }

    /// Adds the folder `dir` and all it holds but the top-level names
    /// `skip` accepts; links inside are kept, and their targets added.
    fn add_tree(
        &mut self,
        dir: &Path,
        skip: &dyn Fn(&std::ffi::OsStr) -> bool,
    ) -> Result<(), Error> {
        self.add_path(dir)?;
        let dir = fs_err::canonicalize(dir)?;
        let walk = walkdir::WalkDir::new(&dir)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.depth() != 1 || !skip(e.file_name()));
        for e in walk {
            let e = e.map_err(|e| io::Error::other(e.to_string()))?;
            let t = e.file_type();
            if t.is_symlink() {
                // A link that leads nowhere is left out, as the host has it.
                if self.add_path(e.path()).is_err() {
                    let target = fs_err::read_link(e.path())?;
                    self.entries
                        .insert(e.path().to_path_buf(), Entry::Link { target });
                }
            } else if t.is_dir() {
                self.entries.insert(e.path().to_path_buf(), Entry::Dir);
            } else if t.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let mode = e
                    .metadata()
                    .map_err(|e| io::Error::other(e.to_string()))?
                    .permissions()
                    .mode();
                let executable = mode & 0o111 != 0;
                self.entries
                    .insert(e.path().to_path_buf(), Entry::File { executable });
            }
        }
        Ok(())
    }

    /// Adds what the ELF files held so far load, and the loaders they
    /// name, until nothing new is found.
    fn add_libraries(&mut self) -> Result<(), Error> {
        loop {
            let before = self.entries.len();
            let tree = self.elf_tree()?;
            let opts = assemble_elf::Options {
                ignore_missing: vec!["*".into()],
                ..assemble_elf::Options::default()
            };
            let report = assemble_elf::resolve(&tree, &opts)?;
            self.warnings = report.warnings.clone();
            for lib in &report.libraries {
                let path = match lib.found {
                    assemble_elf::Found::Tree => Path::new("/").join(&lib.path),
                    _ => PathBuf::from(&lib.path),
                };
                self.add_path(&path)?;
            }
            for (_, info) in &tree.files {
                if let Some(interp) = &info.interp {
                    self.add_path(Path::new(interp))?;
                }
            }
            if self.entries.len() == before {
                return Ok(());
            }
        }
    }

    /// The ELF files held so far, relative to `/`, and the links among
    /// them, as autoPatchelf's tree.
    fn elf_tree(&self) -> Result<assemble_elf::Tree, Error> {
        let mut tree = assemble_elf::Tree::default();
        for (path, e) in &self.entries {
            let rel = || {
                path.strip_prefix("/")
                    .unwrap_or(path)
                    .to_string_lossy()
                    .into_owned()
            };
            match e {
                Entry::File { .. } => {
                    let mut head = [0u8; 4];
                    let mut f = fs_err::File::open(path)?;
                    if f.read(&mut head)? < 4 || !assemble_elf::is_elf(&head) {
                        continue;
                    }
                    let bytes = fs_err::read(path)?;
                    let info = assemble_elf::scan(&bytes).map_err(|why| Error::Host {
                        path: path.clone(),
                        why,
                    })?;
                    if let Some(info) = info {
                        tree.files.push((rel(), info));
                    }
                }
                Entry::Link { .. } => {
                    if let Ok(to) = fs_err::canonicalize(path) {
                        let to = to
                            .strip_prefix("/")
                            .unwrap_or(&to)
                            .to_string_lossy()
                            .into_owned();
                        tree.links.push((rel(), to));
                    }
                }
                Entry::Dir => {}
            }
        }
        Ok(tree)
    }

    /// Writes them as a tar: path order, owner 0, folders 0755, files
    /// 0755 or 0644, links 0777, every time `mtime`.
    pub fn write_tar(&self, mtime: u64, out: &mut dyn Write) -> Result<(), Error> {
        let mut b = tar::Builder::new(out);
        for (path, e) in &self.entries {
            let name = path.strip_prefix("/").unwrap_or(path);
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_size(0);
            match e {
                Entry::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    b.append_data(&mut h, name, io::empty())?;
                }
                Entry::File { executable } => {
                    let f = fs_err::File::open(path)?;
                    let len = f.metadata()?.len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(if *executable { 0o755 } else { 0o644 });
                    h.set_size(len);
                    b.append_data(&mut h, name, f.take(len))?;
                }
                Entry::Link { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    b.append_link(&mut h, name, target)?;
                }
            }
        }
        b.into_inner()?.flush()?;
        Ok(())
    }
}

/// The names of `path`'s parts, `..` kept, `.` and the root left out.
fn normal(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}
