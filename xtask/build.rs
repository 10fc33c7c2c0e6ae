//! Build-time facts for the binary:
//! - `ASSEMBLE_TARGET_DIR`, the target dir this binary is built in: the
//!   ancestor of OUT_DIR that holds cargo's CACHEDIR.TAG. It saves a
//!   `cargo metadata` on every run. (The shipped recipes are checked by a
//!   test, not here: a typo in a recipe must not break building the tool.)
//! - `XTASK_COMMIT` for `--version`: the commit the tool is built from
//!   (`git log`), or "no commit" outside a git checkout. Run again when
//!   HEAD moves (HEAD itself, the branch it names, packed refs).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    if let Some(out) = std::env::var_os("OUT_DIR")
        && let Some(target) = Path::new(&out)
            .ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        println!("cargo::rustc-env=ASSEMBLE_TARGET_DIR={}", target.display());
    }
    let commit = git(&["log", "-1", "--format=%h %cs"]).unwrap_or_else(|| "no commit".into());
    println!("cargo::rustc-env=XTASK_COMMIT={commit}");
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in &watch {
        // Only files that exist: cargo runs a script that names a missing
        // one on every build.
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", name])
            && Path::new(&path).exists()
        {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    println!("cargo::rerun-if-changed=build.rs");
}
