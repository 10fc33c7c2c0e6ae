//! Validates the recipes shipped with the workspace at compile time, so that
//! a malformed default recipe fails the build instead of a user's first run.

use std::path::Path;

fn main() {
    // The target dir this binary is built in: the ancestor of OUT_DIR that
    // holds cargo's CACHEDIR.TAG. It saves a `cargo metadata` on every run.
    if let Some(out) = std::env::var_os("OUT_DIR")
        && let Some(target) = Path::new(&out)
            .ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file())
    {
        println!("cargo::rustc-env=ASSEMBLE_TARGET_DIR={}", target.display());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for recipe in ["assemble.toml", "demo/assemble.toml"] {
        let path = root.join(recipe);
        println!("cargo::rerun-if-changed={}", path.display());
        if let Err(e) = assemble_recipe::Recipe::load(&path) {
            println!("cargo::error={e}");
        }
    }
}
