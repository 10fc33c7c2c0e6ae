//! `cargo xtask autopatchelf PATH...`: the assemble step's engine on any
//! tree, in place, like nixpkgs' `autoPatchelf` function.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use assemble_elf::{Decision, Options, Tree};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct AutopatchelfArgs {
    /// Trees (or single files) to patch in place.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// A folder of libraries to resolve against (repeatable).
    #[arg(long = "libs", value_name = "DIR")]
    pub libs: Vec<PathBuf>,
    /// A soname glob that may stay unresolved, with a warning (repeatable).
    #[arg(long = "ignore-missing", value_name = "GLOB")]
    pub ignore_missing: Vec<String>,
    /// A folder added to every executable's runpath (repeatable).
    #[arg(long = "runtime-dependency", value_name = "DIR")]
    pub runtime_dependencies: Vec<PathBuf>,
    /// Set this interpreter on every dynamic executable.
    #[arg(long, value_name = "PATH")]
    pub dynamic_linker: Option<String>,
    /// Print the decisions as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(sh: &crate::shell::Shell, args: &AutopatchelfArgs) -> Result<(), Failure> {
    let opts = Options {
        libs: args.libs.clone(),
        ignore_missing: args.ignore_missing.clone(),
        runtime_dependencies: args.runtime_dependencies.clone(),
        dynamic_linker: args.dynamic_linker.clone(),
        lib_cache: None,
    };
    let mut all = Vec::new();
    let mut libraries = Vec::new();
    for root in &args.paths {
        let (tree, base) = scan_tree(root)?;
        let report = assemble_elf::resolve(&tree, &opts)?;
        for w in &report.warnings {
            sh.warn(w);
        }
        for d in &report.decisions {
            if d.changes() {
                rewrite(&base.join(&d.path), d)?;
            }
            if sh.verbose() && !args.json {
                sh.note(
                    if d.changes() { "Patched" } else { "Kept" },
                    format!(
                        "{}: {} -> {}{}",
                        base.join(&d.path).display(),
                        d.old_runpath.as_deref().unwrap_or("(none)"),
                        d.new_runpath.as_deref().unwrap_or("(none)"),
                        if d.old_interp != d.new_interp {
                            format!(
                                " (interpreter {})",
                                d.new_interp.as_deref().unwrap_or("(none)")
                            )
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
        all.extend(report.decisions.into_iter().map(|mut d| {
            d.path = base.join(&d.path).to_string_lossy().into_owned();
            d
        }));
        // Paths as given on the command line (the tree's are relative).
        let at = |p: &str| base.join(p).to_string_lossy().into_owned();
        libraries.extend(report.libraries.into_iter().map(|mut l| {
            if l.found == assemble_elf::Found::Tree {
                l.path = at(&l.path);
            }
            l.needed_by = l.needed_by.iter().map(|p| at(p)).collect();
            l
        }));
    }
    let patched = all.iter().filter(|d| d.changes()).count();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "files": all, "patched": patched, "libraries": libraries })
        );
    } else {
        for l in &libraries {
            sh.status("Needs", crate::shell::library_line(l));
            if sh.verbose() {
                for by in &l.needed_by {
                    sh.note("by", by);
                }
            }
        }
        sh.status(
            "Finished",
            format!("{} ELF files, {patched} patched", all.len()),
        );
    }
    Ok(())
}

/// The ELF files and links under `root`, relative to the folder returned:
/// `root` itself when it is a folder; for a single file, that file alone,
/// relative to its folder (nothing else there is read: a corrupt
/// neighbour is not this command's business; `--libs` names folders to
/// resolve against).
fn scan_tree(root: &Path) -> anyhow::Result<(Tree, PathBuf)> {
    let meta = fs_err::metadata(root)?;
    let mut tree = Tree::default();
    if !meta.is_dir() {
        let base = root.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{} names no file", root.display()))?;
        if let Some(info) = scan_file(root)? {
            tree.files.push((name, info));
        }
        return Ok((tree, base));
    }
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        if rel.is_empty() {
            continue;
        }
        let ft = e.file_type();
        if ft.is_symlink() {
            let target = fs_err::read_link(e.path())?;
            if let Some(r) = assemble_elf::resolve_link(&rel, &target.to_string_lossy()) {
                tree.links.push((rel, r));
            }
        } else if ft.is_file()
            && let Some(info) = scan_file(e.path())?
        {
            tree.files.push((rel, info));
        }
    }
    Ok((tree, root.to_path_buf()))
}

/// The ELF facts of a file; `None` when it is not a dynamic ELF file, an
/// error naming it when it looks like ELF but cannot be parsed.
fn scan_file(path: &Path) -> anyhow::Result<Option<assemble_elf::ElfInfo>> {
    let mut magic = [0u8; 4];
    let mut f = fs_err::File::open(path)?;
    if f.read(&mut magic).unwrap_or(0) < 4 || !assemble_elf::is_elf(&magic) {
        return Ok(None);
    }
    let bytes = fs_err::read(path)?;
    Ok(
        assemble_elf::scan(&bytes).map_err(|why| assemble_elf::Error::Corrupt {
            path: path.to_path_buf(),
            why,
        })?,
    )
}

/// Patches a copy beside the file, then renames it over, keeping the mode.
fn rewrite(file: &Path, d: &Decision) -> anyhow::Result<()> {
    let mode = fs_err::metadata(file)?.permissions().mode();
    assemble_fs::files::replace_with(file, |tmp| -> anyhow::Result<()> {
        fs_err::copy(file, tmp)?;
        fs_err::set_permissions(tmp, std::fs::Permissions::from_mode(mode | 0o200))?;
        assemble_elf::apply(tmp, d)?;
        fs_err::set_permissions(tmp, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    })
    .with_context(|| format!("replacing {}", file.display()))
}
