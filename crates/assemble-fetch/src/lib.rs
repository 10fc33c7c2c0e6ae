//! Pinned remote sources: fetched once, verified to the bit, then offline.
//!
//! Kinds (see `assemble_recipe::Remote`): `github` and `url` archives,
//! checked by the NAR hash of the unpacked tree (fetchFromGitHub, fetchzip);
//! `url` single files, checked by their flat sha256 (fetchurl); `git`
//! checkouts without `.git` (fetchgit); `pypi` sdists, checked by the
//! archive's sha256.
//!
//! Where a source is looked for, in order:
//!
//! 1. `vendor/<unit>/` beside the recipe, used when its hash matches (a
//!    warning says so when it does not);
//! 2. the cache, content-addressed by the verified hash:
//!
//!    ```text
//!    <cache>/sources/nar-sha256-<hex>/     a tree whose NAR hash is <hex>
//!    <cache>/sources/git-<url key>-<rev>/  a git checkout pinned by commit only
//!    <cache>/sources/sdist-sha256-<hex>/   an sdist's unpacked tree (<hex>: the archive)
//!    <cache>/files/sha256-<hex>/<name>     a file whose sha256 is <hex>
//!    ```
//! 3. the network, unless offline.
//!
//! A fetch works in a temporary folder inside the cache and renames the
//! result into place only once it is verified, so an interrupted or failed
//! fetch (a partial download, a hash mismatch, an unsafe archive) never
//! counts as fetched; it is then sealed (see `assemble_cache`), and read
//! only through its seal. A second run that needs the same source waits
//! for the first under the entry's lock, and uses what it fetched.

mod git;
mod http;
mod lock;
mod unpack;

use std::path::{Path, PathBuf};

use assemble_cache::{Files, Policy, Reporter, Seal};
use assemble_nar::{Hash, file_hash, nar_hash};
use assemble_python::Interpreter;
use assemble_recipe::Remote;

pub use http::Failure;
pub use lock::{Locked, Lockfile};
pub use unpack::{Limits, unpack, unpack_named};

/// An error of this crate; each names the unit, URL, archive or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The shared cache failed, and it is required.
    #[error(transparent)]
    Shared(Box<assemble_cache::SharedError>),
    #[error("{}: {why}", .path.display())]
    Lockfile { path: PathBuf, why: String },
    #[error(transparent)]
    Nar(#[from] assemble_nar::Error),
    #[error("{what}: {source}")]
    Python {
        what: String,
        #[source]
        source: assemble_install::Error,
    },
    #[error(
        "hash mismatch for {what}\n  expected: {expected}\n       got: {got}\nIf the new content is what you want, put the `got` value in the recipe's `hash`, or, for a source that assemble.lock pins, run `cargo xtask lock --update UNIT`."
    )]
    Mismatch {
        what: String,
        expected: String,
        got: String,
    },
    #[error("{archive}: refusing to unpack{}: {why}", entry_name(.entry))]
    Unsafe {
        /// The archive, as its URL or its path.
        archive: String,
        entry: String,
        why: String,
    },
    #[error("GET {url}: {why}")]
    Http {
        url: String,
        why: String,
        failure: Failure,
    },
    #[error("git {url} at {rev}: {why}")]
    Git {
        url: String,
        rev: String,
        why: String,
    },
    #[error(
        "{what} is not in the cache ({}) nor in {}, and --offline forbids fetching it; run once without --offline, or `cargo xtask vendor`",
        .cache.display(), .vendor.display()
    )]
    Offline {
        what: String,
        cache: PathBuf,
        vendor: PathBuf,
    },
    #[error("unit {unit}: {why}")]
    Unit { unit: String, why: String },
    /// A cached source is not what it was fetched as.
    #[error(transparent)]
    Corrupt(Box<assemble_cache::Corrupt>),
}

impl From<assemble_cache::Error> for Error {
    fn from(e: assemble_cache::Error) -> Error {
        match e {
            assemble_cache::Error::Io(e) => Error::Io(e),
            assemble_cache::Error::Corrupt(c) => Error::Corrupt(c),
        }
    }
}

impl Error {
    /// What to do about it, when the fetcher knows: the ways round a
    /// network that fails (mirrors, `vendor/`, `--offline`, proxies, trust).
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Http { url, failure, .. } => http::hint(url, *failure),
            _ => None,
        }
    }
}

fn entry_name(e: &str) -> String {
    if e.is_empty() {
        String::new()
    } else {
        format!(" entry {e:?}")
    }
}

/// Where a source was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Vendor,
    Cache,
    Network,
    /// The shared cache (`--cache-registry`).
    Registry,
}

/// A source ready to read.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The unit's source folder: the vendored copy (checked whole), or the
    /// sealed cache entry, whose files are checked as they are read.
    pub files: Files,
    pub origin: Origin,
    /// E.g. a vendored copy that did not match and was ignored.
    pub warnings: Vec<String>,
}

/// What to fetch with `prefetch`, which has no hash to check yet.
#[derive(Debug, Clone)]
pub enum Target {
    Github {
        owner: String,
        repo: String,
        rev: String,
    },
    Url {
        url: String,
        unpack: bool,
    },
}

/// How sources are fetched: set once, then given to [`Fetcher::new`].
#[derive(Debug, Clone)]
pub struct Config {
    pub cache: PathBuf,
    /// Replaces `https://github.com` (`ASSEMBLE_GITHUB_URL`).
    pub github_base: String,
    /// Whether what the cache lacks is fetched (`--offline`: not; a dry
    /// run: nothing written at all).
    pub policy: Policy,
    pub limits: Limits,
    /// For `pypi` sources.
    pub python: Option<Interpreter>,
    /// The cache shared between machines, asked for a tree pinned by its
    /// NAR hash before it is downloaded, and offered it after.
    pub shared: Option<assemble_cache::SharedCache>,
}

impl Config {
    /// Fetching into `cache`, from GitHub or where `ASSEMBLE_GITHUB_URL`
    /// says, online, with the default limits and no interpreter.
    pub fn new(cache: PathBuf) -> Config {
        Config {
            cache,
            github_base: std::env::var("ASSEMBLE_GITHUB_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "https://github.com".to_string()),
            policy: Policy::Make,
            limits: Limits::default(),
            python: None,
            shared: None,
        }
    }
}

/// Fetches sources as its [`Config`] says, telling `reporter` what it does
/// (downloads, waits for another run's fetch).
pub struct Fetcher<'r> {
    cache: PathBuf,
    github_base: String,
    policy: Policy,
    limits: Limits,
    python: Option<Interpreter>,
    shared: Option<assemble_cache::SharedCache>,
    reporter: &'r dyn Reporter,
}

impl<'r> Fetcher<'r> {
    pub fn new(config: Config, reporter: &'r dyn Reporter) -> Fetcher<'r> {
        let Config {
            cache,
            github_base,
            policy,
            limits,
            python,
            shared,
        } = config;
        Fetcher {
            cache,
            github_base,
            policy,
            limits,
            python,
            shared,
            reporter,
        }
    }

    /// The archive URL of a GitHub revision.
    pub fn github_url(&self, owner: &str, repo: &str, rev: &str) -> String {
        format!(
            "{}/{owner}/{repo}/archive/{rev}.tar.gz",
            self.github_base.trim_end_matches('/')
        )
    }

    /// What a remote is, for messages: its URL or spec.
    pub fn describe(&self, remote: &Remote) -> String {
        match remote {
            Remote::Pypi { spec, .. } => format!("the sdist of {spec}"),
            Remote::Github {
                owner, repo, rev, ..
            } => self.github_url(owner, repo, rev),
            Remote::Url { url, .. } => url.clone(),
            Remote::Git { url, rev, .. } => format!("{url} at {rev}"),
        }
    }

    /// Where a tree with NAR hash `h` is kept.
    fn tree_path(&self, h: &Hash) -> PathBuf {
        self.cache
            .join("sources")
            .join(format!("nar-sha256-{}", h.to_hex()))
    }

    /// Where the folder holding a file with sha256 `h` is kept.
    fn file_path(&self, h: &Hash) -> PathBuf {
        self.cache
            .join("files")
            .join(format!("sha256-{}", h.to_hex()))
    }

    fn cache_path(&self, remote: &Remote) -> PathBuf {
        let src = self.cache.join("sources");
        match remote {
            Remote::Pypi { sha256, .. } => src.join(format!("sdist-sha256-{}", sha256.to_hex())),
            Remote::Url {
                hash,
                unpack: false,
                ..
            } => self.file_path(hash),
            Remote::Git {
                url,
                rev,
                hash: None,
            } => src.join(format!(
                "git-{}-{rev}",
                &Hash(sha2_of(url.as_bytes())).to_hex()[..16]
            )),
            Remote::Github {
                hash: Some(hash), ..
            }
            | Remote::Url { hash, .. }
            | Remote::Git {
                hash: Some(hash), ..
            } => self.tree_path(hash),
            // `fetch` refuses these before looking in the cache.
            Remote::Github { hash: None, .. } => src.join("unpinned"),
        }
    }

    /// A github source whose hash is neither in the recipe nor filled in
    /// from the lock file.
    fn unpinned(&self, unit: &str, remote: &Remote) -> Error {
        Error::Unit {
            unit: unit.to_string(),
            why: format!(
                "{} has no hash in the recipe and none was taken from assemble.lock; run `cargo xtask lock`",
                self.describe(remote)
            ),
        }
    }

    /// The unit's verified source folder: vendored, cached or fetched.
    /// The reporter hears when a fetch starts, and when another run is
    /// fetching the same source (this one then waits and uses it).
    pub fn fetch(&self, unit: &str, remote: &Remote, vendor: &Path) -> Result<Fetched, Error> {
        let mut warnings = Vec::new();
        if let Remote::Github { hash: None, .. } = remote {
            return Err(self.unpinned(unit, remote));
        }
        if vendor.exists() {
            match self.check_vendor(remote, vendor)? {
                Ok(files) => {
                    return Ok(Fetched {
                        files,
                        origin: Origin::Vendor,
                        warnings,
                    });
                }
                Err(why) => {
                    warnings.push(format!("unit {unit}: ignoring {}: {why}", vendor.display()))
                }
            }
        }
        let dest = self.cache_path(remote);
        let shared = self
            .shared
            .as_ref()
            .map(assemble_cache::SharedCache::get)
            .filter(|_| remote.is_tree_hash());
        let key = remote.hash().map(|h| h.to_hex()).unwrap_or_default();
        let entry = assemble_cache::SharedEntry {
            kind: assemble_cache::SharedKind::Source,
            key: &key,
            unit: Some(unit),
            what: format!("the source of {unit}"),
        };
        // What the cache holds, offered too when every entry used is
        // (`cache push`).
        let cached = |seal: Seal, warnings| -> Result<Fetched, Error> {
            if let Some(shared) = shared.filter(|s| s.offers_all()) {
                shared.push(&entry, &assemble_cache::members_of(&seal))?;
            }
            Ok(Fetched {
                files: Files::sealed(seal),
                origin: Origin::Cache,
                warnings,
            })
        };
        if let Some(seal) = Seal::load(&dest) {
            return cached(seal, warnings);
        }
        if self.policy != Policy::Make {
            return Err(Error::Offline {
                what: self.describe(remote),
                cache: dest,
                vendor: vendor.to_path_buf(),
            });
        }
        // One run fetches it; another that needs it waits, then uses it.
        let _lock = self.lock(&dest, &|| {
            self.reporter.waiting(&format!("the source of {unit}"))
        })?;
        if let Some(seal) = Seal::load(&dest) {
            return cached(seal, warnings);
        }
        if let Some(shared) = shared
            && let Some(seal) = self.pulled(shared, &entry, remote, &dest)?
        {
            return Ok(Fetched {
                files: Files::sealed(seal),
                origin: Origin::Registry,
                warnings,
            });
        }
        self.reporter
            .starting(&format!("{unit}: fetching {}", self.describe(remote)));
        let work = self.workdir()?;
        let built = self.verified(unit, remote, work.path())?;
        let seal = self.place_sealed(&built, &dest)?;
        if let Some(shared) = shared {
            shared.push(&entry, &assemble_cache::members_of(&seal))?;
        }
        Ok(Fetched {
            files: Files::sealed(seal),
            origin: Origin::Network,
            warnings,
        })
    }

    /// The tree `remote` pins by its NAR hash, from the shared cache, its
    /// NAR hash checked (the key is that hash) before it is renamed into
    /// the cache as `dest`; `None` when the shared cache lacks it or it is
    /// refused. Under the entry's lock.
    fn pulled(
        &self,
        shared: &dyn assemble_cache::Shared,
        entry: &assemble_cache::SharedEntry<'_>,
        remote: &Remote,
        dest: &Path,
    ) -> Result<Option<Seal>, Error> {
        let work = self.workdir()?;
        let tree = work.path().join("tree");
        if !shared.pull(entry, &tree)? {
            return Ok(None);
        }
        let (want, got) = (remote.hash(), Some(nar_hash(&tree)?));
        if got != want {
            let said = |h: Option<Hash>| h.map_or("none".into(), |h| h.to_sri());
            shared.refused(
                entry,
                format!(
                    "its NAR hash is {}, not the pinned {}",
                    said(got),
                    said(want)
                ),
            )?;
            return Ok(None);
        }
        assemble_cache::remove(dest)?;
        Ok(Some(assemble_cache::place_sealed(&tree, dest)?))
    }

    /// The source `remote` downloaded (or checked out) into `work` and
    /// verified against its pin: the folder to seal into the cache.
    fn verified(&self, unit: &str, remote: &Remote, work: &Path) -> Result<PathBuf, Error> {
        let mismatch = |expected: Hash, got: Hash| Error::Mismatch {
            what: self.describe(remote),
            expected: expected.to_sri(),
            got: got.to_sri(),
        };
        Ok(match remote {
            Remote::Pypi { spec, sha256 } => {
                let file = self.pip_sdist(spec, work)?;
                let got = file_hash(&file)?;
                if got != *sha256 {
                    return Err(mismatch(*sha256, got));
                }
                // Keep the archive too: `vendor` copies it.
                let name = file.file_name().unwrap_or_default().to_os_string();
                let files = self.file_path(&got);
                if Seal::load(&files).is_none() {
                    let keep = work.join("keep");
                    fs_err::create_dir(&keep)?;
                    fs_err::copy(&file, keep.join(&name))?;
                    self.place_sealed(&keep, &files)?;
                }
                let tree = work.join("tree");
                let name = format!(
                    "the sdist of {spec} ({})",
                    file.file_name().unwrap_or_default().to_string_lossy()
                );
                unpack_named(&file, &name, &tree, self.limits)?;
                tree
            }
            Remote::Github { hash: None, .. } => return Err(self.unpinned(unit, remote)),
            Remote::Github {
                owner,
                repo,
                rev,
                hash: Some(hash),
            } => self.verified_tree(&self.github_url(owner, repo, rev), hash, work, &mismatch)?,
            Remote::Url {
                url,
                hash,
                unpack: true,
            } => self.verified_tree(url, hash, work, &mismatch)?,
            Remote::Url {
                url,
                hash,
                unpack: false,
            } => {
                let dir = self.download_file(url, work)?;
                let got = single_file_hash(&dir)?;
                if got != *hash {
                    return Err(mismatch(*hash, got));
                }
                dir
            }
            Remote::Git { url, rev, hash } => {
                let tree = work.join("tree");
                git::checkout(url, rev, &tree)?;
                if let Some(hash) = hash {
                    let got = nar_hash(&tree)?;
                    if got != *hash {
                        return Err(mismatch(*hash, got));
                    }
                }
                tree
            }
        })
    }

    /// The lock of the cache entry `dest`, its folder made first.
    fn lock(&self, dest: &Path, waiting: &dyn Fn()) -> Result<fs_err::File, Error> {
        if let Some(parent) = dest.parent() {
            fs_err::create_dir_all(parent)?;
        }
        Ok(assemble_cache::lock(dest, waiting)?)
    }

    /// Moves a verified result into the cache as the entry `dest` and
    /// seals it: whatever was at that name unsealed (an interrupted run's,
    /// or one made before entries were sealed) goes first. For a caller
    /// that holds the entry's lock, or whose entry is named by its content.
    fn place_sealed(&self, built: &Path, dest: &Path) -> Result<Seal, Error> {
        assemble_cache::remove(dest)?;
        place(built, dest)?;
        Ok(Seal::make(dest)?)
    }

    /// `Ok(Ok(files))` when the vendored copy matches the pin, `Ok(Err(why))`
    /// when it does not.
    fn check_vendor(&self, remote: &Remote, vendor: &Path) -> Result<Result<Files, String>, Error> {
        let Some(want) = remote.hash() else {
            return Ok(Err(
                "a git source without `hash` cannot be checked, so it is not vendored".into(),
            ));
        };
        match remote {
            Remote::Pypi { .. } => {
                // The sdist archive itself is vendored; unpack it into the cache.
                let got = single_file_hash(vendor)?;
                if got != want {
                    return Ok(Err(format!(
                        "its sdist hashes to {got}, the recipe pins {want}"
                    )));
                }
                let dest = self.cache_path(remote);
                if let Some(seal) = Seal::load(&dest) {
                    return Ok(Ok(Files::sealed(seal)));
                }
                if !self.policy.writes() {
                    // Unpacking it is for a run that writes.
                    return Err(Error::Offline {
                        what: self.describe(remote),
                        cache: dest,
                        vendor: vendor.to_path_buf(),
                    });
                }
                let _lock = self.lock(&dest, &|| {})?;
                if let Some(seal) = Seal::load(&dest) {
                    return Ok(Ok(Files::sealed(seal)));
                }
                let work = self.workdir()?;
                let tree = work.path().join("tree");
                unpack(&single_file(vendor)?, &tree, self.limits)?;
                Ok(Ok(Files::sealed(self.place_sealed(&tree, &dest)?)))
            }
            Remote::Url { unpack: false, .. } => {
                let got = single_file_hash(vendor)?;
                Ok(if got == want {
                    Ok(Files::plain(vendor.to_path_buf()))
                } else {
                    Err(format!("its file hashes to {got}, the recipe pins {want}"))
                })
            }
            _ => {
                let got = nar_hash(vendor)?;
                Ok(if got == want {
                    Ok(Files::plain(vendor.to_path_buf()))
                } else {
                    Err(format!("it hashes to {got}, the recipe pins {want}"))
                })
            }
        }
    }

    /// Fetches a target whose hash is not known yet, stores it in the cache
    /// under the hash it has, and returns that hash (NAR for trees, flat for
    /// single files) with the stored path.
    pub fn prefetch(&self, target: &Target) -> Result<(Hash, PathBuf), Error> {
        let work = self.workdir()?;
        let (built, hash, dest) = match target {
            Target::Url { url, unpack: false } => {
                let dir = self.download_file(url, work.path())?;
                let h = single_file_hash(&dir)?;
                (dir, h, self.file_path(&h))
            }
            Target::Github { owner, repo, rev } => {
                let tree = self.download_tree(&self.github_url(owner, repo, rev), work.path())?;
                let h = nar_hash(&tree)?;
                (tree, h, self.tree_path(&h))
            }
            Target::Url { url, unpack: true } => {
                let tree = self.download_tree(url, work.path())?;
                let h = nar_hash(&tree)?;
                (tree, h, self.tree_path(&h))
            }
        };
        if Seal::load(&dest).is_none() {
            let _lock = self.lock(&dest, &|| {})?;
            if Seal::load(&dest).is_none() {
                self.place_sealed(&built, &dest)?;
            }
        }
        Ok((hash, dest))
    }

    /// The file at `url` whose sha256 is `sha256`, from the cache or else
    /// downloaded and checked (as a `url` source with `unpack = false`):
    /// its path in the cache, named after the URL's last segment.
    pub fn fetch_file(&self, unit: &str, url: &str, sha256: Hash) -> Result<PathBuf, Error> {
        let remote = Remote::Url {
            url: url.to_string(),
            hash: sha256,
            unpack: false,
        };
        let fetched = self.fetch(unit, &remote, &self.cache.join(".no-vendor"))?;
        fetched.files.check_whole()?;
        single_file(fetched.files.root())
    }

    /// Writes a `github` unit's verified source into the mirror folder
    /// `mirror` as GitHub archives it, at the path `ASSEMBLE_GITHUB_URL`
    /// reads (`OWNER/REPO/archive/REV.tar.gz`): a reproducible tar.gz
    /// (sorted, no owners or times) whose unpacked tree has the pinned NAR
    /// hash. Returns its path; `None` for the other kinds.
    pub fn mirror(
        &self,
        unit: &str,
        remote: &Remote,
        mirror: &Path,
    ) -> Result<Option<PathBuf>, Error> {
        let Remote::Github {
            owner, repo, rev, ..
        } = remote
        else {
            return Ok(None);
        };
        // Names inside the mirror only (the recipe checks them too).
        let inside = [owner.as_str(), repo.as_str(), rev.as_str()]
            .iter()
            .all(|p| {
                Path::new(p)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
            });
        if !inside {
            return Err(Error::Unit {
                unit: unit.to_string(),
                why: format!("{owner}/{repo} at {rev} names no path inside a mirror"),
            });
        }
        let fetched = self.fetch(unit, remote, &self.cache.join(".no-vendor"))?;
        fetched.files.check_whole()?;
        let archive = mirror
            .join(owner)
            .join(repo)
            .join("archive")
            .join(format!("{rev}.tar.gz"));
        fs_err::create_dir_all(archive.parent().unwrap_or(mirror))?;
        let top = format!("{repo}-{}", rev.replace('/', "-"));
        assemble_fs::files::replace_with(&archive, |tmp| {
            write_tar_gz(
                fetched.files.root(),
                &top,
                &fs_err::File::create(tmp)?.into_parts().0,
            )
        })?;
        Ok(Some(archive))
    }

    /// Copies a unit's verified source into `vendor` (replacing it).
    pub fn vendor(&self, unit: &str, remote: &Remote, vendor: &Path) -> Result<(), Error> {
        if remote.hash().is_none() {
            return Err(Error::Unit {
                unit: unit.to_string(),
                why: "a git source without `hash` cannot be vendored: add its NAR hash (`cargo xtask hash` of a checkout prints it)".into(),
            });
        }
        let nowhere = self.cache.join(".no-vendor");
        let fetched = self.fetch(unit, remote, &nowhere)?;
        let source = match remote {
            Remote::Pypi { sha256, .. } => self.file_path(sha256),
            _ => fetched.files.root().to_path_buf(),
        };
        // Copied out whole: checked whole first.
        let seal = Seal::load(&source).ok_or_else(|| Error::Unit {
            unit: unit.to_string(),
            why: format!(
                "{} is incomplete in the cache; run `cargo xtask vendor` again",
                source.display()
            ),
        })?;
        seal.check_all()?;
        let parent = vendor.parent().unwrap_or(Path::new("."));
        fs_err::create_dir_all(parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".vendor-")
            .tempdir_in(parent)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
        let copy = tmp.path().join("tree");
        copy_tree(&source, &copy)?;
        if vendor.exists() {
            fs_err::remove_dir_all(vendor)?;
        }
        fs_err::rename(&copy, vendor)?;
        Ok(())
    }

    fn workdir(&self) -> Result<tempfile::TempDir, Error> {
        fs_err::create_dir_all(&self.cache)?;
        tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&self.cache)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", self.cache.display())).into()
            })
    }

    /// Downloads and unpacks `url`, and checks its NAR hash against `want`.
    fn verified_tree(
        &self,
        url: &str,
        want: &Hash,
        work: &Path,
        mismatch: &dyn Fn(Hash, Hash) -> Error,
    ) -> Result<PathBuf, Error> {
        let tree = self.download_tree(url, work)?;
        let got = nar_hash(&tree)?;
        if got != *want {
            return Err(mismatch(*want, got));
        }
        Ok(tree)
    }

    fn download_tree(&self, url: &str, work: &Path) -> Result<PathBuf, Error> {
        let archive = work.join("archive");
        http::download(url, &archive, self.limits.max_bytes, self.reporter)?;
        let tree = work.join("tree");
        unpack_named(&archive, url, &tree, self.limits)?;
        Ok(tree)
    }

    /// Downloads a single file into a fresh folder, named after the URL's
    /// last path segment.
    fn download_file(&self, url: &str, work: &Path) -> Result<PathBuf, Error> {
        let name = url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .unwrap_or("download");
        let dir = work.join("file");
        fs_err::create_dir(&dir)?;
        http::download(url, &dir.join(name), self.limits.max_bytes, self.reporter)?;
        Ok(dir)
    }

    fn pip_sdist(&self, spec: &str, work: &Path) -> Result<PathBuf, Error> {
        let python = self.python.as_ref().ok_or_else(|| {
            std::io::Error::other(format!("pip download {spec}: no interpreter was given"))
        })?;
        let dl = work.join("download");
        fs_err::create_dir(&dl)?;
        assemble_install::pip_download(spec, assemble_install::Artifact::Sdist, python, &dl)
            .map_err(|source| Error::Python {
                what: format!("pip download {spec}"),
                source,
            })
    }
}

fn sha2_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The one file in `dir`.
fn single_file(dir: &Path) -> Result<PathBuf, Error> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if files.len() != 1 || !files[0].is_file() {
        return Err(
            std::io::Error::other(format!("{}: expected exactly one file", dir.display())).into(),
        );
    }
    Ok(files.remove(0))
}

fn single_file_hash(dir: &Path) -> Result<Hash, Error> {
    Ok(file_hash(&single_file(dir)?)?)
}

/// Renames a verified result into the cache; if another run placed the
/// same content meanwhile, theirs is as good.
fn place(from: &Path, to: &Path) -> Result<(), Error> {
    Ok(assemble_fs::files::place(from, to)?)
}

/// `tree` as a gzipped tar under one top folder `top`, as GitHub archives
/// a revision: entries in sorted order, links as links, no owners or
/// times, so the same tree gives the same bytes.
fn write_tar_gz(tree: &Path, top: &str, out: &std::fs::File) -> Result<(), Error> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for e in walkdir::WalkDir::new(tree).sort_by_file_name() {
        let e = e.map_err(|e| std::io::Error::other(e.to_string()))?;
        let rel = e.path().strip_prefix(tree).unwrap_or(e.path());
        let name = Path::new(top).join(rel);
        tar.append_path_with_name(e.path(), &name)?;
    }
    tar.into_inner()?.finish()?.sync_all()?;
    Ok(())
}

/// Copies a tree, keeping symlinks and the executable bit.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(from).follow_links(false) {
        let e = e.map_err(|e| std::io::Error::other(e.to_string()))?;
        let dest = to.join(e.path().strip_prefix(from).unwrap_or(e.path()));
        let ft = e.file_type();
        if ft.is_dir() {
            fs_err::create_dir_all(&dest)?;
        } else if ft.is_symlink() {
            fs_err::os::unix::fs::symlink(fs_err::read_link(e.path())?, &dest)?;
        } else {
            fs_err::copy(e.path(), &dest)?;
            let exec = fs_err::metadata(e.path())?.permissions().mode() & 0o100 != 0;
            fs_err::set_permissions(
                &dest,
                std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
            )?;
        }
    }
    Ok(())
}

impl From<assemble_cache::SharedError> for Error {
    fn from(e: assemble_cache::SharedError) -> Error {
        Error::Shared(Box::new(e))
    }
}
