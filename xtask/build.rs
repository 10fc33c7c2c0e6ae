//! Records, at build time, the target dir this binary is built in: the
//! ancestor of OUT_DIR that holds cargo's CACHEDIR.TAG. It saves a `cargo
//! metadata` on every run. (The shipped recipes are checked by a test, not
//! here: a typo in a recipe must not break building the tool.)

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if let Some(out) = std::env::var_os("OUT_DIR")
        && let Some(target) = Path::new(&out)
            .ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        println!("cargo::rustc-env=ASSEMBLE_TARGET_DIR={}", target.display());
    }
}
