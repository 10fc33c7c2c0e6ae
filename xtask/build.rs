//! Validates the recipes shipped with the workspace at compile time, so that
//! a malformed default recipe fails the build instead of a user's first run.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for recipe in ["assemble.toml", "demo/assemble.toml"] {
        let path = root.join(recipe);
        println!("cargo::rerun-if-changed={}", path.display());
        if let Err(e) = assemble_recipe::Recipe::load(&path) {
            println!("cargo::error={e}");
        }
    }
}
