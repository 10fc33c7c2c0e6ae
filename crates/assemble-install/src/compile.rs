//! `.pyc` files made by the tree's interpreter, many in one process.
//!
//! Each source is compiled as `py_compile` does (`compile(source, dfile,
//! "exec", dont_inherit=True)`), and written as a hash-based pyc (PEP 552):
//! its header holds the source's SipHash, not its mtime, so the bytes
//! depend on the source, the interpreter and `dfile` alone. `dfile` (the
//! name compiled into the code objects) is the file's path inside the tree:
//! the import system puts the real path in its place when it loads a pyc,
//! so the bytes do not depend on where the tree runs.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use assemble_python::Interpreter;

use crate::Error;

/// One source to compile.
#[derive(Debug, Clone)]
pub struct Job {
    /// The file holding the source's bytes.
    pub source: PathBuf,
    /// Their sha256, as the plan hashed them: bytes read that differ are
    /// not compiled (the pyc would be cached under the wrong key).
    pub sha256: [u8; 32],
    /// The name compiled into it: its path in the tree.
    pub dfile: String,
    /// Where the pyc goes (written beside it, then linked to its name).
    pub dest: PathBuf,
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    /// The pyc is at `dest`, its digest link beside it.
    Done,
    /// The source does not compile: why, as `compileall` says it.
    Fails(String),
    /// The source's bytes were not the ones planned.
    Changed,
}

/// Reads NUL-separated (source, sha256, dfile, dest) quadruples on
/// stdin; prints one line per job: `ok`, `changed` (the source's bytes do
/// not have that sha256), or `err` and why the source does not compile.
///
/// Each pyc's digest link (`assemble_cache::digest`: `DEST.sha256`, a link
/// to its sha256 in base64url) is written before the pyc itself, so that a
/// pyc is never there without its record. A pyc already at `dest` is never
/// replaced (the temporary file is linked to its name, which fails if the
/// name is taken): a cache file, once made, is someone's input. A compiler
/// whose run has died (SIGKILL leaves its children running) stops rather
/// than keep writing into the cache.
const COMPILE: &str = r#"
import sys, os, importlib.util, importlib._bootstrap_external as be
from binascii import b2a_base64
# The interpreter's own sha256: hashlib's OpenSSL binding is slow to
# import, and each compiler process would pay for it.
try:
    from _sha2 import sha256
except ImportError:
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
URLSAFE = bytes.maketrans(b"+/", b"-_")
checked = sys.argv[1] == "checked"
parent = os.getppid()
parts = sys.stdin.buffer.read().split(b"\0")
out = []
for i in range(0, len(parts) - 3, 4):
    if os.getppid() != parent:
        sys.exit(3)
    src, sha, dfile, dest = (os.fsdecode(p) for p in parts[i:i + 4])
    try:
        with open(src, "rb") as f:
            source = f.read()
        if sha256(source).hexdigest() != sha:
            out.append("changed")
            continue
        code = compile(source, dfile, "exec", dont_inherit=True)
        data = be._code_to_hash_pyc(code, importlib.util.source_hash(source), checked)
        tmp = "%s.%d.tmp" % (dest, os.getpid())
        with open(tmp, "wb") as f:
            f.write(data)
        digest = b2a_base64(sha256(data).digest(), newline=False).rstrip(b"=").translate(URLSAFE)
        link = dest + ".sha256"
        link_tmp = "%s.%d.tmp" % (link, os.getpid())
        if os.path.lexists(link_tmp):
            os.unlink(link_tmp)
        os.symlink(digest, link_tmp)
        os.replace(link_tmp, link)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        out.append("ok")
    except (SyntaxError, ValueError, UnicodeDecodeError) as e:
        # The source does not compile (ValueError: a NUL byte in it);
        # anything else (a file that cannot be read) fails the batch.
        out.append("err %s: %s" % (type(e).__name__, str(e).replace("\n", " ")))
sys.stdout.write("".join(line + "\n" for line in out))
"#;

/// Compiles every job with one run of `python`; for each, how it ended
/// (a source that does not compile is not a failure of the batch).
pub fn compile(python: &Interpreter, jobs: &[Job], checked: bool) -> Result<Vec<Compiled>, Error> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut stdin = Vec::new();
    for j in jobs {
        let sha = hex::encode(j.sha256);
        for part in [
            j.source.as_os_str().as_bytes(),
            sha.as_bytes(),
            j.dfile.as_bytes(),
            j.dest.as_os_str().as_bytes(),
        ] {
            stdin.extend_from_slice(part);
            stdin.push(0);
        }
    }
    let mode = if checked { "checked" } else { "unchecked" };
    // -I: no environment or user site; -S: no site (nothing to import); -B:
    // the script writes no bytecode of its own.
    let args = ["-I", "-S", "-B", "-c", COMPILE, mode];
    let text = crate::run::output_stdin(&python.executable, &args, stdin)?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != jobs.len() {
        return Err(Error::Malformed {
            path: python.executable.clone(),
            message: format!(
                "compiling {} sources gave {} answers",
                jobs.len(),
                lines.len()
            ),
        });
    }
    Ok(lines
        .into_iter()
        .map(|l| match (l, l.strip_prefix("err ")) {
            (_, Some(why)) => Compiled::Fails(why.to_string()),
            ("changed", _) => Compiled::Changed,
            _ => Compiled::Done,
        })
        .collect())
}
