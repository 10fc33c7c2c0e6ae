//! Git checkouts through the git CLI, without `.git` (as Nix's fetchgit).

use std::path::Path;

use crate::Error;

/// Checks `rev` of `url` out into `dest` (which must not exist).
pub fn checkout(url: &str, rev: &str, dest: &Path) -> Result<(), Error> {
    let fail = |why: String| Error::Git {
        url: url.to_string(),
        rev: rev.to_string(),
        why,
    };
    let sh = xshell::Shell::new().map_err(|e| fail(e.to_string()))?;
    sh.set_var("GIT_TERMINAL_PROMPT", "0");
    let repo = dest.with_extension("git");
    let git = |args: &[&str]| -> Result<String, Error> {
        let out = xshell::cmd!(sh, "git --git-dir {repo} {args...}")
            .quiet()
            .ignore_status()
            .output()
            .map_err(|e| fail(format!("cannot run git ({e}); install git")))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    git(&["init", "--quiet", "--bare"])?;
    // A shallow fetch of the commit; servers that refuse fetching by id
    // get a full fetch instead.
    if git(&["fetch", "--quiet", "--depth", "1", url, rev]).is_err() {
        git(&[
            "fetch",
            "--quiet",
            url,
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ])?;
    }
    let commit = git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])?;
    if commit != rev {
        return Err(fail(format!("resolved to {commit}, not the pinned commit")));
    }
    fs_err::create_dir(dest)?;
    let work_tree = dest.to_string_lossy().into_owned();
    git(&[
        "--work-tree",
        &work_tree,
        "checkout",
        "--quiet",
        "--force",
        rev,
        "--",
        ".",
    ])?;
    fs_err::remove_dir_all(&repo)?;
    Ok(())
}
