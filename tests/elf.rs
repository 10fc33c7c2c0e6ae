//! autoPatchelf end to end: gcc-built fixtures (a library outside the
//! loader's path, an executable and a CPython extension module linked to it
//! without a runpath), run and imported for real before and after.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Scratch, python_xy, run, which};

const LIBFOO: &str = "int foo(void) { return 42; }\n";
const MAIN: &str =
    "#include <stdio.h>\nint foo(void);\nint main(void) { printf(\"%d\\n\", foo()); return 0; }\n";
const EXT: &str = r#"#define PY_SSIZE_T_CLEAN
#include <Python.h>
int foo(void);
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(foo()); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "fooext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_fooext(void) { return PyModule_Create(&mod); }
"#;

fn gcc(args: &[&str], cwd: &Path) {
    support::stdout_ok(Command::new("gcc").args(args).current_dir(cwd));
}

fn py(code: &str) -> String {
    let (ok, out) = run(&which("python3"), &["-c", code]);
    assert!(ok, "{out}");
    out.trim().to_string()
}

/// Builds `<dir>/libs/libfoo.so.1`, `<dir>/native/foo-demo` and
/// `<dir>/native/fooext<EXT_SUFFIX>`; returns the extension's file name.
pub(crate) fn build_fixtures(dir: &Path) -> String {
    let src = dir.join("src");
    fs_err::create_dir_all(&src).unwrap();
    fs_err::create_dir_all(dir.join("libs")).unwrap();
    fs_err::create_dir_all(dir.join("native")).unwrap();
    fs_err::write(src.join("foo.c"), LIBFOO).unwrap();
    fs_err::write(src.join("main.c"), MAIN).unwrap();
    fs_err::write(src.join("fooext.c"), EXT).unwrap();
    gcc(
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libfoo.so.1",
            "-o",
            "../libs/libfoo.so.1",
            "foo.c",
        ],
        &src,
    );
    fs_err::os::unix::fs::symlink("libfoo.so.1", dir.join("libs/libfoo.so")).unwrap();
    gcc(
        &["-o", "../native/foo-demo", "main.c", "-L../libs", "-lfoo"],
        &src,
    );
    let include = py("import sysconfig; print(sysconfig.get_paths()['include'])");
    let ext = format!(
        "fooext{}",
        py("import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    );
    gcc(
        &[
            "-shared",
            "-fPIC",
            &format!("-I{include}"),
            "-o",
            &format!("../native/{ext}"),
            "fooext.c",
            "-L../libs",
            "-lfoo",
        ],
        &src,
    );
    ext
}

pub(crate) fn add_native_unit(s: &Scratch, ext: &str, extra_install: &str, autopatchelf: &str) {
    s.edit_recipe(|t| {
        format!(
            "{t}\n[units.native]\npath = \"../fixtures\"\ninstall = {{ \"native/foo-demo\" = \"bin/foo-demo\", \"native/{ext}\" = \"@site@/{ext}\"{extra_install} }}\n\n[autopatchelf]\n{autopatchelf}\n"
        )
    });
}

fn runpath(file: &Path) -> String {
    support::stdout_ok(Command::new("patchelf").arg("--print-rpath").arg(file))
}

fn site(out: &Path) -> PathBuf {
    out.join(format!("lib/python{}/site-packages", python_xy()))
}

fn answer(out: &Path) -> (bool, String) {
    run(
        &out.join("bin/python"),
        &["-c", "import fooext; print(fooext.answer())"],
    )
}

#[test]
fn libs_folder_makes_executable_and_extension_work() {
    let s = Scratch::new();
    let fixtures = s.path("fixtures");
    let ext = build_fixtures(&fixtures);
    // Before: neither finds libfoo.
    let (ok, msg) = run(&fixtures.join("native/foo-demo"), &[]);
    assert!(!ok && msg.contains("libfoo.so.1"), "{msg}");

    let libs = fixtures.join("libs");
    add_native_unit(&s, &ext, "", &format!("libs = [\"{}\"]", libs.display()));
    let out = s.path("out");
    let r = s
        .assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(r["elf_patched"], 2, "{r}");

    let (ok, msg) = run(&out.join("bin/foo-demo"), &[]);
    assert!(ok && msg.trim() == "42", "{msg}");
    let (ok, msg) = answer(&out);
    assert!(ok && msg.trim() == "42", "{msg}");
    assert_eq!(
        runpath(&out.join("bin/foo-demo")),
        libs.display().to_string()
    );

    // psycopg-binary's own $ORIGIN runpaths already resolve: kept, not rewritten.
    let psy = site(&out).join(format!(
        "psycopg_binary/_psycopg.cpython-{}-x86_64-linux-gnu.so",
        python_xy().replace('.', "")
    ));
    assert_eq!(runpath(&psy), "$ORIGIN/../psycopg_binary.libs");
    let (ok, v) = run(
        &out.join("bin/python"),
        &["-c", "import psycopg; print(psycopg.pq.__impl__)"],
    );
    assert!(ok && v.trim() == "binary", "{v}");

    // Running again rewrites no ELF file (nor anything else).
    let again = s
        .assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(again["files_written"], 0, "{again}");
}

#[test]
fn library_inside_the_output_gives_a_relocatable_runpath() {
    let s = Scratch::new();
    let fixtures = s.path("fixtures");
    let ext = build_fixtures(&fixtures);
    add_native_unit(&s, &ext, ", \"libs\" = \"lib/native\"", "libs = []");
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(runpath(&out.join("bin/foo-demo")), "$ORIGIN/../lib/native");
    assert_eq!(runpath(&site(&out).join(&ext)), "$ORIGIN/../../native");

    let moved = s.path("elsewhere/tree");
    fs_err::create_dir_all(moved.parent().unwrap()).unwrap();
    fs_err::rename(&out, &moved).unwrap();
    let (ok, msg) = run(&moved.join("bin/foo-demo"), &[]);
    assert!(ok && msg.trim() == "42", "{msg}");
    let (ok, msg) = answer(&moved);
    assert!(ok && msg.trim() == "42", "{msg}");
}

#[test]
fn missing_libraries_are_listed_together_and_globs_make_them_warnings() {
    let s = Scratch::new();
    let fixtures = s.path("fixtures");
    let ext = build_fixtures(&fixtures);
    add_native_unit(&s, &ext, "", "libs = []");
    let out = s.path("out");
    let err = s.assemble(&["--out", out.to_str().unwrap()]).fails(1);
    let xy = python_xy();
    for consumer in [
        "bin/foo-demo".to_string(),
        format!("lib/python{xy}/site-packages/{ext}"),
    ] {
        assert!(
            err.contains(&format!(
                "could not satisfy dependency libfoo.so.1 wanted by {consumer}\n"
            )),
            "{err}"
        );
    }
    assert!(
        err.contains("2 dependencies could not be satisfied"),
        "{err}"
    );
    assert!(err.contains("[autopatchelf] libs"), "names the fix: {err}");
    assert!(!out.exists(), "nothing written");

    s.edit_base(|t| {
        t.replace(
            "[autopatchelf]\nlibs = []",
            "[autopatchelf]\nlibs = []\nignore-missing = [\"libfoo.so.*\"]",
        )
    });
    let r = s.assemble(&["--out", out.to_str().unwrap()]);
    let stderr = r.ok();
    assert!(
        stderr.contains(
            "warning: could not satisfy dependency libfoo.so.1 wanted by bin/foo-demo (ignored"
        ),
        "{stderr}"
    );
}

#[test]
fn a_decoy_of_the_wrong_machine_is_not_chosen() {
    let s = Scratch::new();
    let fixtures = s.path("fixtures");
    let ext = build_fixtures(&fixtures);
    let decoy = s.path("decoy");
    fs_err::create_dir_all(&decoy).unwrap();
    let mut bytes = fs_err::read(fixtures.join("libs/libfoo.so.1")).unwrap();
    bytes[18] = 0xb7; // e_machine = EM_AARCH64
    bytes[19] = 0x00;
    fs_err::write(decoy.join("libfoo.so.1"), bytes).unwrap();
    let libs = fixtures.join("libs");
    add_native_unit(
        &s,
        &ext,
        "",
        &format!("libs = [\"{}\", \"{}\"]", decoy.display(), libs.display()),
    );
    let out = s.path("out");
    s.assemble(&["--out", out.to_str().unwrap(), "--json"])
        .json();
    assert_eq!(
        runpath(&out.join("bin/foo-demo")),
        libs.display().to_string()
    );
    let (ok, msg) = run(&out.join("bin/foo-demo"), &[]);
    assert!(ok && msg.trim() == "42", "{msg}");
}

#[test]
fn autopatchelf_command_patches_any_tree_once() {
    let s = Scratch::new();
    let fixtures = s.path("fixtures");
    build_fixtures(&fixtures);
    let tree = fixtures.join("native");
    let libs = fixtures.join("libs");
    let args = [
        "autopatchelf",
        "--libs",
        libs.to_str().unwrap(),
        tree.to_str().unwrap(),
        "--json",
    ];
    let r = support::xtask(s.dir.path(), &args);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(report["patched"], 2, "{report}");
    let (ok, msg) = run(&tree.join("foo-demo"), &[]);
    assert!(ok && msg.trim() == "42", "{msg}");

    let r = support::xtask(s.dir.path(), &args);
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    assert_eq!(
        report["patched"], 0,
        "a second run changes nothing: {report}"
    );
}

#[test]
fn corrupt_elf_is_named_and_missing_patchelf_says_how_to_install() {
    let s = Scratch::new();
    let fixtures = s.path("fixtures");
    let ext = build_fixtures(&fixtures);
    let libs = fixtures.join("libs");

    // patchelf is looked for only when a file must change.
    add_native_unit(&s, &ext, "", &format!("libs = [\"{}\"]", libs.display()));
    let recipe = s.recipe();
    let out = s.path("out");
    let env = [("PATCHELF", "/nonexistent/patchelf")];
    let base = ["assemble", "--recipe", recipe.to_str().unwrap(), "--out"];
    let mut args = base.to_vec();
    args.push(out.to_str().unwrap());
    let err = support::xtask_env(s.dir.path(), &args, &env).fails(1);
    assert!(err.contains("patchelf is needed to rewrite"), "{err}");
    assert!(err.contains("apt-get install patchelf"), "{err}");

    // A truncated ELF file in a unit is named.
    let head = fs_err::read(fixtures.join("native/foo-demo")).unwrap();
    fs_err::write(fixtures.join("native/foo-demo"), &head[..200]).unwrap();
    let err = s.assemble(&["--out", out.to_str().unwrap()]).fails(1);
    assert!(
        err.contains("native/foo-demo: not a valid ELF file"),
        "{err}"
    );
    assert!(err.contains("bin/foo-demo in the output"), "{err}");
}

/// Guards `autopatchelf FILE`: it reads FILE alone. It once walked FILE's
/// whole folder, so a corrupt ELF beside it failed the command.
#[test]
fn autopatchelf_of_one_file_reads_only_that_file() {
    let s = Scratch::new();
    let fixtures = s.path("fixtures");
    let ext = build_fixtures(&fixtures);
    let native = fixtures.join("native");
    // A truncated ELF file beside the one to patch.
    let head = fs_err::read(native.join(&ext)).unwrap();
    fs_err::write(native.join("broken.so"), &head[..200]).unwrap();
    let libs = fixtures.join("libs");
    let file = native.join("foo-demo");
    let r = support::xtask(
        s.dir.path(),
        &[
            "autopatchelf",
            "--libs",
            libs.to_str().unwrap(),
            file.to_str().unwrap(),
            "--json",
        ],
    );
    r.ok();
    let report: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap();
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, [file.to_str().unwrap()], "{report}");
    assert_eq!(report["patched"], 1, "{report}");
    let (ok, msg) = run(&file, &[]);
    assert!(ok && msg.trim() == "42", "{msg}");
    // The extension beside it was not touched.
    assert_eq!(runpath(&native.join(&ext)), "", "only FILE is patched");
    // The whole folder still fails on the corrupt file, naming it.
    let r = support::xtask(
        s.dir.path(),
        &[
            "autopatchelf",
            "--libs",
            libs.to_str().unwrap(),
            native.to_str().unwrap(),
        ],
    );
    let err = r.fails(1);
    assert!(err.contains("broken.so"), "{err}");
}
