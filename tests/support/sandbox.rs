//! Tests that could, if the tool were wrong, touch files outside their
//! folder run inside `../shared/tools/sandbox`, a throwaway root on tmpfs
//! with the checkout and the build bound read-only; a snapshot of that
//! root before and after shows that nothing else changed.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::xtask_bin;

/// Set in the environment of the run inside the sandbox.
pub const INSIDE: &str = "ASSEMBLE_TEST_IN_SANDBOX";

/// Outside the sandbox: runs `test` (a test of this binary, by its full
/// name: `module::name`) inside it,
/// asserts that it passed, and returns `false`. Inside: returns `true`, and
/// the caller runs its body.
pub fn sandboxed(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let sandbox = super::root().join("../shared/tools/sandbox");
    let exe = std::env::current_exe().unwrap();
    let xtask = xtask_bin();
    let target = xtask.parent().and_then(Path::parent).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(&sandbox);
    if let Some(ws) = std::env::var_os("ASSEMBLE_TEST_XTASK_WORKSPACE") {
        // Another build's binary finds its recipe default in its checkout.
        cmd.arg("--ro").arg(ws);
    }
    let out = cmd
        .arg("--ro")
        .arg(super::root())
        .arg("--ro")
        .arg(target)
        .arg("--ro")
        .arg(exe.parent().unwrap())
        .arg("--")
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test} in the sandbox ({}):\n{text}",
        out.status
    );
    false
}

/// Inside the sandbox, whose /dev has no loop devices: their nodes, for a
/// test (or a command it runs) that loop-mounts an image. A loop device is
/// cleared when its mount goes (with the sandbox, at the latest).
pub fn make_loop_devices() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "[ -e /dev/loop-control ] || mknod /dev/loop-control c 10 237; \
             for i in $(seq 0 255); do [ -e /dev/loop$i ] || mknod /dev/loop$i b 7 $i; done",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loop device nodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path of the sandbox but those in `skip` (with what is under
/// them) and the read-only binds: kind, mode, owner, and the content's hash or
/// the link's target.
pub fn snapshot(skip: &[&Path]) -> BTreeMap<PathBuf, String> {
    let ro = [
        super::root(),
        xtask_bin()
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .to_path_buf(),
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf(),
    ];
    let skip = |p: &Path| {
        ["/usr", "/etc", "/proc", "/dev", "/sys"]
            .iter()
            .any(|s| p == Path::new(s))
            || skip.contains(&p)
            || ro.iter().any(|r| p == r)
    };
    let mut seen = BTreeMap::new();
    for e in walkdir::WalkDir::new("/")
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !skip(e.path()))
    {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let what = if m.is_symlink() {
            format!("link {:?}", fs_err::read_link(e.path()).unwrap())
        } else if m.is_file() {
            format!(
                "file {}",
                assemble_manifest::Sha256::of(&fs_err::read(e.path()).unwrap()).hex()
            )
        } else {
            "dir".to_string()
        };
        seen.insert(
            e.path().to_path_buf(),
            format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
        );
    }
    seen
}
