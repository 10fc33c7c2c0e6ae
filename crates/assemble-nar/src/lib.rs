//! Hashing the way Nix does, byte for byte.
//!
//! * [`nar_hash`]: the sha256 of a path's NAR serialisation, what
//!   `nix hash path` prints and what a fixed-output derivation with
//!   `outputHashMode = "recursive"` (fetchzip, fetchFromGitHub) pins.
//! * [`file_hash`]: the sha256 of a file's bytes (`nix hash file`, flat mode).
//! * [`Hash`](struct@Hash): a sha256 digest read from and written to the three forms Nix
//!   accepts: SRI (`sha256-<base64>`), 64 hex digits, and 52 nix32 characters.
//!
//! The NAR format: every string is its length as a little-endian u64, its
//! bytes, and zero padding to a multiple of 8. A node is `(`, `type`, then
//! `regular` (with `executable` and an empty string if the owner may execute
//! it, then `contents` and the bytes), `symlink` (`target` and the link's
//! target verbatim) or `directory` (an `entry` `(` `name` N `node` … `)` per
//! child, sorted by the bytes of the name), and `)`. Nothing else of a file
//! is recorded: no times, owners, or permission bits but the executable one.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

/// Why a path could not be hashed or a hash not read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{}: {what} cannot be put in a NAR (only files, folders and symlinks)", .path.display())]
    Unsupported { path: PathBuf, what: &'static str },
    #[error(
        "{text:?} is not a sha256 hash: {why} (expected sha256-<base64>, 64 hex digits, or 52 nix32 characters)"
    )]
    BadHash { text: String, why: String },
}

/// A sha256 digest in Nix's sense.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
const NIX32_LEN: usize = 52;

impl Hash {
    /// Reads SRI (`sha256-…`), hex (64 digits, optionally `sha256:`-prefixed)
    /// or nix32 (52 characters, likewise).
    pub fn parse(text: &str) -> Result<Hash, Error> {
        let bad = |why: &str| Error::BadHash {
            text: text.to_string(),
            why: why.to_string(),
        };
        let t = text.trim();
        if let Some(b64) = t.strip_prefix("sha256-") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(&format!("bad base64: {e}")))?;
            return <[u8; 32]>::try_from(bytes.as_slice())
                .map(Hash)
                .map_err(|_| bad(&format!("{} bytes, not 32", bytes.len())));
        }
        if let Some((algo, _)) = t.split_once(['-', ':'])
            && algo != "sha256"
        {
            return Err(bad(&format!("only sha256 is supported, not {algo}")));
        }
        let t = t.strip_prefix("sha256:").unwrap_or(t);
        match t.len() {
            64 => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(t, &mut out).map_err(|e| bad(&format!("bad hex: {e}")))?;
                Ok(Hash(out))
            }
            NIX32_LEN => Hash::from_nix32(t).ok_or_else(|| bad("bad nix32")),
            n => Err(bad(&format!("{n} characters"))),
        }
    }

    fn from_nix32(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        for (n, c) in s.bytes().rev().enumerate() {
            let digit = NIX32.iter().position(|&a| a == c)? as u16;
            let b = n * 5;
            let (i, j) = (b / 8, b % 8);
            out[i] |= (digit << j) as u8;
            let carry = digit >> (8 - j);
            if i + 1 < out.len() {
                out[i + 1] |= carry as u8;
            } else if carry != 0 {
                return None;
            }
        }
        Some(Hash(out))
    }

    pub fn to_sri(&self) -> String {
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_nix32(&self) -> String {
        let mut s = String::with_capacity(NIX32_LEN);
        for n in (0..NIX32_LEN).rev() {
            let b = n * 5;
            let (i, j) = (b / 8, b % 8);
            let lo = self.0[i] >> j;
            let hi = if i + 1 < 32 {
                (self.0[i + 1] as u16) << (8 - j)
            } else {
                0
            };
            s.push(NIX32[((lo as u16 | hi) & 0x1f) as usize] as char);
        }
        s
    }

    pub fn format(&self, f: Format) -> String {
        match f {
            Format::Sri => self.to_sri(),
            Format::Hex => self.to_hex(),
            Format::Nix32 => self.to_nix32(),
        }
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

/// How to print a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sri,
    Hex,
    Nix32,
}

/// The sha256 of a file's bytes.
pub fn file_hash(path: &Path) -> Result<Hash, Error> {
    let mut f = fs_err::File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(Hash(h.finalize().into()))
}

/// The sha256 of `path`'s NAR serialisation.
pub fn nar_hash(path: &Path) -> Result<Hash, Error> {
    let mut h = Sha256::new();
    write_nar(path, &mut h)?;
    Ok(Hash(h.finalize().into()))
}

/// Writes `path`'s NAR serialisation to `out`.
pub fn write_nar(path: &Path, out: &mut impl Write) -> Result<(), Error> {
    let mut w = NarWriter { out };
    w.str(b"nix-archive-1")?;
    w.node(path)
}

/// One entry of a tree given as a list of paths (see [`write_nar_listed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed<'a> {
    Dir,
    File { executable: bool },
    Symlink { target: &'a [u8] },
}

/// Writes the NAR of a tree given as a list instead of read from a folder:
/// `entries` are `/`-separated paths relative to the root (the root
/// itself is not listed and is a folder; every other folder is listed;
/// any order), and `open(path)` gives a file's length and bytes. The
/// exporter and the output's hash stream a recorded manifest this way,
/// with no walk of the tree.
pub fn write_nar_listed<'a, R: Read>(
    entries: impl IntoIterator<Item = (&'a str, Listed<'a>)>,
    mut open: impl FnMut(&str) -> io::Result<(u64, R)>,
    out: &mut impl Write,
) -> io::Result<()> {
    // Children of each folder, by index; the root is "".
    let entries: Vec<(&str, Listed)> = entries.into_iter().collect();
    let mut children: std::collections::HashMap<&str, Vec<usize>> =
        std::collections::HashMap::with_capacity(entries.len() / 4 + 1);
    for (i, (path, _)) in entries.iter().enumerate() {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        children.entry(parent).or_default().push(i);
    }
    for list in children.values_mut() {
        list.sort_by(|&a, &b| {
            name(entries[a].0)
                .as_bytes()
                .cmp(name(entries[b].0).as_bytes())
        });
    }
    let mut w = NarWriter { out };
    w.str(b"nix-archive-1")?;
    // An explicit stack: (folder, next child) pairs, so depth costs no recursion.
    w.str(b"(")?;
    w.str(b"type")?;
    w.str(b"directory")?;
    let mut stack: Vec<(&str, usize)> = vec![("", 0)];
    while let Some((dir, next)) = stack.pop() {
        let kids = children.get(dir).map_or(&[][..], Vec::as_slice);
        let Some(&i) = kids.get(next) else {
            w.str(b")")?;
            if !stack.is_empty() {
                w.str(b")")?; // the entry
            }
            continue;
        };
        stack.push((dir, next + 1));
        let (path, kind) = entries[i];
        w.str(b"entry")?;
        w.str(b"(")?;
        w.str(b"name")?;
        w.str(name(path).as_bytes())?;
        w.str(b"node")?;
        w.str(b"(")?;
        w.str(b"type")?;
        match kind {
            Listed::Dir => {
                w.str(b"directory")?;
                stack.push((path, 0));
                continue;
            }
            Listed::Symlink { target } => {
                w.str(b"symlink")?;
                w.str(b"target")?;
                w.str(target)?;
            }
            Listed::File { executable } => {
                w.str(b"regular")?;
                if executable {
                    w.str(b"executable")?;
                    w.str(b"")?;
                }
                w.str(b"contents")?;
                let (len, mut r) = open(path)?;
                w.out.write_all(&len.to_le_bytes())?;
                let copied = io::copy(&mut (&mut r).take(len), w.out)?;
                if copied != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{path}: changed size while being read"),
                    ));
                }
                w.pad(len)?;
            }
        }
        w.str(b")")?; // the node
        w.str(b")")?; // the entry
    }
    Ok(())
}

/// The last component of a listed path.
fn name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

struct NarWriter<'a, W: Write> {
    out: &'a mut W,
}

impl<W: Write> NarWriter<'_, W> {
    fn str(&mut self, s: &[u8]) -> io::Result<()> {
        self.out.write_all(&(s.len() as u64).to_le_bytes())?;
        self.out.write_all(s)?;
        self.pad(s.len() as u64)
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % 8) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 8][..8 - rem])?;
        }
        Ok(())
    }

    fn node(&mut self, path: &Path) -> Result<(), Error> {
        let meta = fs_err::symlink_metadata(path)?;
        let ft = meta.file_type();
        self.str(b"(")?;
        self.str(b"type")?;
        if ft.is_symlink() {
            self.str(b"symlink")?;
            self.str(b"target")?;
            let target = fs_err::read_link(path)?;
            self.str(target.as_os_str().as_bytes())?;
        } else if ft.is_file() {
            self.str(b"regular")?;
            if meta.permissions().mode() & 0o100 != 0 {
                self.str(b"executable")?;
                self.str(b"")?;
            }
            self.str(b"contents")?;
            let len = meta.len();
            self.out.write_all(&len.to_le_bytes())?;
            let mut f = fs_err::File::open(path)?;
            let copied = io::copy(&mut (&mut f).take(len), self.out)?;
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: changed size while being hashed", path.display()),
                )
                .into());
            }
            self.pad(len)?;
        } else if ft.is_dir() {
            self.str(b"directory")?;
            let mut names: Vec<OsString> = fs_err::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                self.str(b"entry")?;
                self.str(b"(")?;
                self.str(b"name")?;
                self.str(name.as_bytes())?;
                self.str(b"node")?;
                self.node(&path.join(&name))?;
                self.str(b")")?;
            }
        } else {
            use std::os::unix::fs::FileTypeExt;
            let what = if ft.is_fifo() {
                "a fifo"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                what,
            });
        }
        self.str(b")")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_match_nix() {
        // `nix hash file` of a file holding "hi\n", in Nix's three forms.
        let sri = "sha256-mOpuTyFvL7S2n/+bOkSELDhobKaF8/VdxIxdP7EQe+Q=";
        let h = Hash::parse(sri).expect("sri");
        assert_eq!(h.to_sri(), sri);
        assert_eq!(Hash::parse(&h.to_hex()).expect("hex"), h);
        assert_eq!(Hash::parse(&h.to_nix32()).expect("nix32"), h);
        assert_eq!(
            Hash::parse(&format!("sha256:{}", h.to_nix32())).expect("prefixed"),
            h
        );
    }

    #[test]
    fn known_nix32_value() {
        // `nix-hash --type sha256 --base32` and `nix hash path` of one tree.
        let h = Hash::parse("sha256-HPIRS0ladgkIw4Npccz9MGM8Kq00F+ZSGCfUg1q0UH8=").expect("sri");
        assert_eq!(
            h.to_nix32(),
            "0zshnid87m17319fc5rlmlm3qqrhzp672sc3qc40jxjs955i3whw"
        );
        assert_eq!(
            h.to_hex(),
            "1cf2114b495a760908c3836971ccfd30633c2aad3417e6521827d4835ab4507f"
        );
    }

    #[test]
    fn bad_hashes_are_named() {
        for bad in ["sha512-abc", "xyz", "sha256-!!", &"e".repeat(52)] {
            let e = Hash::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_listed_tree_serialises_as_the_folder_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Names whose byte order differs from their full paths' order.
        for (p, c) in [
            ("a/b", "1"),
            ("a-c", "22"),
            ("a/z/y", ""),
            ("b.txt", "333333333"),
        ] {
            let p = root.join(p);
            fs_err::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs_err::write(&p, c).expect("write");
        }
        fs_err::create_dir_all(root.join("empty")).expect("mkdir");
        std::os::unix::fs::symlink("a/b", root.join("link")).expect("symlink");
        fs_err::set_permissions(root.join("a-c"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let listed = [
            ("link", Listed::Symlink { target: b"a/b" }),
            ("a/z/y", Listed::File { executable: false }),
            ("b.txt", Listed::File { executable: false }),
            ("a", Listed::Dir),
            ("a-c", Listed::File { executable: true }),
            ("empty", Listed::Dir),
            ("a/b", Listed::File { executable: false }),
            ("a/z", Listed::Dir),
        ];
        let mut from_list = Vec::new();
        write_nar_listed(
            listed,
            |p| {
                let bytes = fs_err::read(root.join(p))?;
                Ok((bytes.len() as u64, io::Cursor::new(bytes)))
            },
            &mut from_list,
        )
        .expect("listed");
        let mut from_folder = Vec::new();
        write_nar(root, &mut from_folder).expect("folder");
        assert_eq!(from_list, from_folder);
    }

    #[test]
    fn fifo_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("p");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(ok.success());
        let e = nar_hash(dir.path()).expect_err("fifo").to_string();
        assert!(e.contains("a fifo cannot be put in a NAR"), "{e}");
    }
}
