//! `cargo xtask test`: installs what the tests need, then runs them all
//! (`cargo test --workspace --locked`). What CI runs and the README's
//! second command.
//!
//! Each need is checked the way the tests use it (a program on PATH, a
//! file, a Python module); the missing ones are installed with apt-get when
//! the process is root and `--no-install` is not given, and otherwise named
//! with their Debian packages and the command that installs them: never a
//! test run that panics on a missing tool.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, anyhow};

use crate::Failure;
use crate::shell::Shell;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Name what is missing and stop, even as root.
    #[arg(long)]
    pub no_install: bool,
    /// Passed on to `cargo test` (after `--`: a filter, `--nocapture`, ...).
    #[arg(last = true, value_name = "ARGS")]
    pub cargo_args: Vec<String>,
}

/// How a need is found.
enum Check {
    /// A program on PATH.
    Program(&'static str),
    /// A file at this absolute path.
    File(&'static str),
    /// `python3 ARGS` succeeds.
    Python(&'static [&'static str]),
}

/// What the tests need, why, and the Debian packages that provide it.
struct Need {
    check: Check,
    why: &'static str,
    packages: &'static [&'static str],
}

const NEEDS: &[Need] = &[
    Need {
        check: Check::Program("python3"),
        why: "the demo's interpreter",
        packages: &["python3"],
    },
    Need {
        check: Check::Python(&["-c", "import venv"]),
        why: "virtualenvs",
        packages: &["python3-venv"],
    },
    Need {
        check: Check::Python(&["-m", "pip", "--version"]),
        why: "pip, which bootstraps uv",
        packages: &["python3-pip"],
    },
    Need {
        check: Check::File("/usr/bin/python3"),
        why: "Debian's python3, bound into the confinement sandbox",
        packages: &["python3"],
    },
    Need {
        check: Check::Program("bash"),
        why: "@bash@ and the sandbox",
        packages: &["bash"],
    },
    Need {
        check: Check::Program("nix-hash"),
        why: "Nix's hasher, the oracle for NAR hashes",
        packages: &["nix-bin"],
    },
    Need {
        check: Check::Program("curl-config"),
        why: "pycurl built from its sdist against libcurl (a no-binary package)",
        packages: &["libcurl4-openssl-dev", "libssl-dev"],
    },
    Need {
        check: Check::Program("tinyproxy"),
        why: "a real HTTP proxy on loopback",
        packages: &["tinyproxy"],
    },
    Need {
        check: Check::Program("skopeo"),
        why: "the oracle that reads images (layouts, archives, registries)",
        packages: &["skopeo"],
    },
    Need {
        check: Check::Program("umoci"),
        why: "unpacking an OCI layout into a root to run the tree in",
        packages: &["umoci"],
    },
    Need {
        check: Check::Program("docker-registry"),
        why: "a real OCI registry on loopback to push to",
        packages: &["docker-registry"],
    },
    Need {
        check: Check::Program("mkfs.xfs"),
        why: "an XFS image, loop-mounted in the sandbox, for reflinks (--link-mode clone)",
        packages: &["xfsprogs"],
    },
    Need {
        check: Check::File("/usr/lib/python3/dist-packages/jsonschema/__init__.py"),
        why: "a JSON Schema validator that checks the recipes against assemble.schema.json",
        packages: &["python3-jsonschema"],
    },
    Need {
        check: Check::Program("htpasswd"),
        why: "a login for the registry on loopback",
        packages: &["apache2-utils"],
    },
    Need {
        check: Check::Program("git"),
        why: "the git source kind",
        packages: &["git"],
    },
    Need {
        check: Check::Program("gcc"),
        why: "ELF files for autoPatchelf",
        packages: &["gcc", "libc6-dev"],
    },
    Need {
        check: Check::Program("patchelf"),
        why: "the oracle for runpaths",
        packages: &["patchelf"],
    },
    Need {
        check: Check::Program("unshare"),
        why: "the confinement sandbox",
        packages: &["util-linux"],
    },
    Need {
        check: Check::Program("mount"),
        why: "a read-only bind mount in a mount namespace of a test's own",
        packages: &["mount"],
    },
    Need {
        check: Check::Program("script"),
        why: "a pseudo-terminal for the command line's tests",
        packages: &["bsdutils"],
    },
    Need {
        check: Check::Program("zsh"),
        why: "loading the zsh completions",
        packages: &["zsh"],
    },
    Need {
        check: Check::Program("groff"),
        why: "reading the manual pages",
        packages: &["groff-base"],
    },
    Need {
        check: Check::File("/usr/bin/time"),
        why: "the bench's peak memory",
        packages: &["time"],
    },
];

impl Need {
    fn met(&self) -> bool {
        match self.check {
            Check::Program(name) => assemble_fs::find_program(name).is_some(),
            Check::File(path) => Path::new(path).is_file(),
            Check::Python(args) => assemble_fs::find_program("python3").is_some_and(|py| {
                Command::new(py)
                    .args(args)
                    .output()
                    .is_ok_and(|o| o.status.success())
            }),
        }
    }

    fn what(&self) -> String {
        match self.check {
            Check::Program(name) => format!("{name} on PATH"),
            Check::File(path) => path.to_string(),
            Check::Python(args) => format!("python3 {}", args.join(" ")),
        }
    }
}

/// The needs not met, and their packages (each once, in order).
fn missing() -> (Vec<&'static Need>, Vec<&'static str>) {
    let unmet: Vec<&Need> = NEEDS.iter().filter(|n| !n.met()).collect();
    let mut packages: Vec<&str> = Vec::new();
    for p in unmet.iter().flat_map(|n| n.packages) {
        if !packages.contains(p) {
            packages.push(p);
        }
    }
    (unmet, packages)
}

pub fn run(sh: &Shell, args: &TestArgs) -> Result<(), Failure> {
    let (unmet, packages) = missing();
    if !unmet.is_empty() {
        let list: Vec<String> = unmet
            .iter()
            .map(|n| format!("{} ({}: {})", n.what(), n.why, n.packages.join(" ")))
            .collect();
        let root = rustix::process::geteuid().is_root();
        if args.no_install || !root {
            return Err(anyhow!(
                "the tests need what this machine lacks: {}; install it with `apt-get install -y --no-install-recommends {}` as root{}",
                list.join(", "),
                packages.join(" "),
                if root {
                    " (or run `cargo xtask test` without --no-install)"
                } else {
                    " (or run `cargo xtask test` as root, which installs it)"
                }
            )
            .into());
        }
        sh.status("Installing", packages.join(" "));
        apt_get(&["update"])?;
        let mut install = vec!["install", "-y", "--no-install-recommends"];
        install.extend(&packages);
        apt_get(&install)?;
        let (still, _) = missing();
        if let Some(n) = still.first() {
            return Err(anyhow!(
                "{} is still missing after installing {}",
                n.what(),
                n.packages.join(" ")
            )
            .into());
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    sh.status("Testing", "cargo test --workspace --locked");
    let mut test = Command::new(&cargo);
    test.args(["test", "--workspace", "--locked"])
        .args(&args.cargo_args);
    for name in run_env(std::env::vars_os().map(|(k, _)| k)) {
        test.env_remove(name);
    }
    let status = test.status().context("running cargo test")?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            error: anyhow!("cargo test failed ({status})"),
        })
    }
}

/// Of the variables `names`, those `cargo run` set to tell this process
/// about itself (and those our build script exports): not the machine's,
/// and not for the `cargo test` it runs. Cargo counts a build script's
/// environment in its fingerprint (ring's: CARGO_MANIFEST_DIR, OUT_DIR),
/// so with them that build ran again, and again in the next `cargo xtask`
/// (CI's bench compiled ring and all that depends on it a third time).
fn run_env(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const SET_BY_RUN: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "OUT_DIR",
        "ASSEMBLE_TARGET_DIR",
        "XTASK_COMMIT",
    ];
    names
        .filter(|n| {
            n.to_str()
                .is_some_and(|n| n.starts_with("CARGO_PKG_") || SET_BY_RUN.contains(&n))
        })
        .collect()
}

fn apt_get(args: &[&str]) -> Result<(), Failure> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get (is this Debian or Ubuntu?)")?;
    if status.success() {
        Ok(())
    } else {
        Err(anyhow!("apt-get {} failed ({status})", args.join(" ")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the third build of ring in CI: what `cargo run` sets for
    /// the tool goes, the machine's cargo settings stay.
    #[test]
    fn the_inner_cargo_test_gets_the_machines_cargo_variables_only() {
        let names = [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_VERSION",
            "CARGO_PKG_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "OUT_DIR",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_COLOR",
            "CARGO",
            "PATH",
        ]
        .map(std::ffi::OsString::from);
        let gone = run_env(names.into_iter());
        assert_eq!(
            gone,
            [
                "CARGO_MANIFEST_DIR",
                "CARGO_PKG_VERSION",
                "CARGO_PKG_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .map(std::ffi::OsString::from)
        );
    }
}
