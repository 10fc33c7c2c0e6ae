//! Differential test against Nix's own hasher (Debian's `nix-bin`):
//! random trees, hashed by us and by `nix-hash --type sha256`, must agree.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use assemble_nar::{Hash, nar_hash};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Node {
    File { contents: Vec<u8>, mode: u32 },
    Link(String),
    Dir(BTreeMap<String, Node>),
}

/// Names chosen to trip sorting and encoding: unicode, dotfiles, names
/// whose UTF-16 order differs from their byte order, prefixes of each other.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("A".to_string()),
        Just("a.b".to_string()),
        Just("a-b".to_string()),
        Just("ab".to_string()),
        Just(".hidden".to_string()),
        Just("é".to_string()),
        Just("\u{ff71}".to_string()),
        Just("\u{1f600}".to_string()),
        Just("z".to_string()),
        Just("_".to_string()),
        Just("entry".to_string()),
        "[a-zA-Z0-9._-]{1,12}".prop_filter("not . or ..", |n| n != "." && n != ".."),
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        3 => (
            prop_oneof![Just(Vec::new()), proptest::collection::vec(any::<u8>(), 0..300)],
            prop_oneof![Just(0o644u32), Just(0o755), Just(0o700), Just(0o611), Just(0o400)],
        )
            .prop_map(|(contents, mode)| Node::File { contents, mode }),
        1 => prop_oneof![
            Just("../dangling".to_string()),
            Just("a".to_string()),
            Just("/abs/olute".to_string()),
            Just("sub/dir/x".to_string()),
            Just("\u{e9}t\u{e9}".to_string()),
        ]
        .prop_map(Node::Link),
        1 => Just(Node::Dir(BTreeMap::new())),
    ]
}

fn tree() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 40, 6, |inner| {
        proptest::collection::btree_map(name(), inner, 0..6).prop_map(Node::Dir)
    })
}

fn write(path: &Path, node: &Node) {
    match node {
        Node::File { contents, mode } => {
            std::fs::write(path, contents).expect("write");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        Node::Link(t) => std::os::unix::fs::symlink(t, path).expect("symlink"),
        Node::Dir(entries) => {
            std::fs::create_dir(path).expect("mkdir");
            for (n, child) in entries {
                write(&path.join(n), child);
            }
        }
    }
}

fn nix_hash(path: &Path) -> Hash {
    let out = Command::new("nix-hash")
        .args(["--type", "sha256"])
        .arg(path)
        .output()
        .expect("nix-hash from Debian's nix-bin is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Hash::parse(String::from_utf8_lossy(&out.stdout).trim()).expect("hex from nix-hash")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn nar_hash_equals_nix_hash(root in tree()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        write(&path, &root);
        let ours = nar_hash(&path).expect("hash");
        let theirs = nix_hash(&path);
        prop_assert_eq!(ours, theirs, "tree: {:?}", root);
    }
}

#[test]
fn nix_hash_path_agrees_in_sri() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path().join("t");
    write(
        &t,
        &Node::Dir(BTreeMap::from([
            (
                "x".to_string(),
                Node::File {
                    contents: b"hi\n".to_vec(),
                    mode: 0o755,
                },
            ),
            ("l".to_string(), Node::Link("x".into())),
        ])),
    );
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "hash",
            "path",
        ])
        .arg(&t)
        .output()
        .expect("nix from nix-bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        nar_hash(&t).expect("hash").to_sri()
    );
}
