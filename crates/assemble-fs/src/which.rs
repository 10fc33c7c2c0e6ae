//! Programs looked up on `PATH`.

use std::path::{Path, PathBuf};

/// Looks a program up the way a shell does: a name with a `/` is a path,
/// anything else is searched in the folders of `PATH`, in order; only an
/// executable file counts.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    path_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The folders of `PATH`, in order (what [`find_program`] searches).
pub fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

/// Whether `p` is a file (after links) with an executable bit set.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_a_slash_is_a_path_and_must_be_executable() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("tool");
        fs_err::write(&f, "#!/bin/sh\n").unwrap();
        let name = f.to_string_lossy().into_owned();
        assert_eq!(find_program(&name), None);
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program(&name), Some(f));
        assert_eq!(find_program("surely-no-such-program-here"), None);
    }
}
