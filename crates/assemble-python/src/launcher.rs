//! Generated text: console-script launchers, shebangs and `pyvenv.cfg`.

use std::path::Path;

use crate::{EntryPoint, Interpreter};

/// The first line(s) of a script run by `python`, the way pip writes them:
/// `#!PATH`, or the `/bin/sh` exec form when that line would pass the
/// kernel's 127-byte limit or `PATH` holds a space. In the exec form the
/// path is one single-quoted word for `/bin/sh` (a `'` written `'\''`), so
/// nothing in it (`$(...)`, backticks, `"`) is ever run or split; paths that
/// cannot be carried at all are refused before planning ([`carriable`]).
pub fn shebang(python: &str) -> String {
    let simple = format!("#!{python}\n");
    if simple.len() <= 128 && !python.contains([' ', '\t']) {
        simple
    } else {
        let quoted = python.replace('\'', r"'\''");
        format!("#!/bin/sh\n'''exec' '{quoted}' \"$0\" \"$@\"\n' '''\n")
    }
}

/// Why `path` cannot be written into launchers and Python source (the
/// prefix goes into `Path("@out@")`, the interpreter into shebangs): it
/// holds a quote, a backslash or a control character. `None` when it can.
pub fn carriable(path: &str) -> Option<String> {
    let bad: Vec<String> = path
        .chars()
        .filter(|c| matches!(c, '"' | '\'' | '\\') || c.is_control())
        .map(|c| format!("{c:?}"))
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{path:?} holds {}, which launchers and patched Python source cannot carry safely; choose a path without quotes, backslashes or control characters",
            bad.join(", ")
        )
    })
}

/// A console-script launcher that imports its entry point directly (pip's
/// and uv's template), instead of the seed's `importlib.metadata` lookup,
/// which scans every installed distribution on each start. `None` when the
/// entry point names no callable.
pub fn launcher(python: &str, ep: &EntryPoint) -> Option<String> {
    if ep.attr.is_empty() {
        return None;
    }
    let import_name = ep.attr.split('.').next().unwrap_or(&ep.attr);
    Some(format!(
        "{shebang}# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {module} import {import_name}\nif __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    sys.exit({func}())\n",
        shebang = shebang(python),
        module = ep.module,
        func = ep.attr,
    ))
}

/// Points a script's shebang at `python`, if it is a Python script (the
/// venv it came from had its own interpreter path there). Binaries and
/// other scripts are returned as `None`: they are copied unchanged.
pub fn rewrite_shebang(content: &[u8], python: &str) -> Option<Vec<u8>> {
    let rest = content.strip_prefix(b"#!")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&rest[..end]).ok()?;
    let program = line.split_whitespace().next()?;
    let base = program.rsplit('/').next()?;
    if !base.starts_with("python") {
        return None;
    }
    let mut out = shebang(python).into_bytes();
    out.extend_from_slice(&rest[end + 1..]);
    Some(out)
}

/// Rewrites a venv's `pyvenv.cfg` for the output: `@python@` (a Nix-FOD
/// venv's placeholder) becomes the interpreter's prefix, and the keys that
/// name the interpreter or the venv (`home`, `executable`, `command`) are
/// set to this interpreter and `out`, whatever the source venv said.
pub fn rewrite_pyvenv_cfg(text: &str, python: &Interpreter, out: &str) -> String {
    let text = text.replace("@python@", &python.prefix.to_string_lossy());
    let exe = python.executable.to_string_lossy();
    let home = python
        .executable
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy();
    let mut result = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or_default().trim();
        match key {
            "home" => result.push_str(&format!("home = {home}")),
            "executable" => result.push_str(&format!("executable = {exe}")),
            "command" => result.push_str(&format!("command = {exe} -m venv {out}")),
            _ => result.push_str(line),
        }
        result.push('\n');
    }
    result
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn long_or_spaced_paths_use_the_sh_form() {
        assert_eq!(
            shebang("/opt/ak/bin/python3.11"),
            "#!/opt/ak/bin/python3.11\n"
        );
        assert!(shebang("/opt/a k/bin/python3.11").starts_with("#!/bin/sh\n'''exec' '/opt/a k/"));
        let long = format!("/{}/bin/python3.11", "x".repeat(120));
        assert!(shebang(&long).starts_with("#!/bin/sh\n"));
    }

    #[test]
    fn launcher_imports_the_first_attr() {
        let ep = EntryPoint {
            name: "x".into(),
            module: "pkg.cli".into(),
            attr: "Main.run".into(),
        };
        let l = launcher("/o/bin/python3.11", &ep).expect("callable");
        assert!(l.contains("from pkg.cli import Main\n"), "{l}");
        assert!(l.contains("sys.exit(Main.run())"), "{l}");
    }

    #[test]
    fn shebang_rewrite_only_for_python() {
        assert_eq!(
            rewrite_shebang(b"#!/tmp/v/bin/python\nprint(1)\n", "/o/bin/python3.11").as_deref(),
            Some(&b"#!/o/bin/python3.11\nprint(1)\n"[..])
        );
        assert_eq!(
            rewrite_shebang(b"#!/bin/sh\necho\n", "/o/bin/python3.11"),
            None
        );
        assert_eq!(rewrite_shebang(b"\x7fELF....", "/o/bin/python3.11"), None);
    }

    #[test]
    fn pyvenv_cfg_names_the_interpreter_and_output() {
        let py = Interpreter {
            executable: PathBuf::from("/nix/py/bin/python3.11"),
            prefix: PathBuf::from("/nix/py"),
            major: 3,
            minor: 11,
            full_version: "3.11.7".into(),
            cache_tag: "cpython-311".into(),
            magic: "a70d0d0a".into(),
        };
        let fod = "home = @python@/bin\ninclude-system-site-packages = false\nversion = 3.11.7\nexecutable = @python@/bin/python3.11\ncommand = @python@/bin/python3.11 -m venv /build/venv\n";
        assert_eq!(
            rewrite_pyvenv_cfg(fod, &py, "/opt/ak"),
            "home = /nix/py/bin\ninclude-system-site-packages = false\nversion = 3.11.7\nexecutable = /nix/py/bin/python3.11\ncommand = /nix/py/bin/python3.11 -m venv /opt/ak\n"
        );
    }
}
