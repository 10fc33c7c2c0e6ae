//! `cargo xtask verify`: re-hash the whole output against the manifest the
//! last assemble recorded; list every difference; exit 1 on any. With
//! `--cache`, the cache instead: every entry against the record made when
//! it was made.

use std::path::PathBuf;

use assemble_reconcile::Layout;

use crate::context::Workspace;

use crate::{Failure, RecipeArgs};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: RecipeArgs,
    /// The output to check (default: TARGET/<package name>, as for assemble).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the differences as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Re-hash every entry of the cache (`--cache-dir`) against the record
    /// made when it was made (its seal or digest), instead of the output;
    /// list what is corrupt or incomplete.
    #[arg(long, conflicts_with = "out")]
    pub cache: bool,
    /// Check a tree against this NAR hash (what `nix hash path` prints),
    /// with no state at all: a tree moved or copied anywhere. When it
    /// differs and a state remembers the hash, each difference is named.
    #[arg(long, value_name = "HASH", conflicts_with = "cache")]
    pub nar_hash: Option<String>,
    /// The tree `--nar-hash` checks (default: --out, else the default output).
    #[arg(value_name = "DIR", requires = "nar_hash", conflicts_with = "out")]
    pub dir: Option<PathBuf>,
}

pub fn run(sh: &crate::shell::Shell, args: &VerifyArgs) -> Result<(), Failure> {
    let ws = Workspace::for_recipe(&args.common)?;
    if args.cache {
        return cache(sh, args, &ws.cache(args.common.cache_dir.as_deref()));
    }
    // A link (a deployed prefix) is read through: verify only reads.
    let out = assemble_fs::canonical(&match &args.dir {
        Some(dir) => ws.cwd.join(dir),
        None => ws.out(&args.common, args.out.as_deref())?,
    });
    if let Some(hash) = &args.nar_hash {
        let base = ws.state_base(args.common.state_dir.as_deref(), &out);
        return nar_hash(sh, args.json, &out, hash, &base);
    }
    let layout = Layout::new(&out, &ws.state_base(args.common.state_dir.as_deref(), &out));
    let found = assemble_reconcile::verify(&layout)
        .map_err(|e| args.common.or_assemble(args.out.as_deref(), e))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "output": out, "differences": found })
        );
    } else {
        for d in &found {
            sh.note("Differs", format!("{}: {}", d.path, d.what));
        }
        sh.status(
            verdict(found.is_empty()),
            format!(
                "{}: {} difference{}",
                out.display(),
                found.len(),
                if found.len() == 1 { "" } else { "s" }
            ),
        );
    }
    failed_if(found.len(), || {
        format!(
            "{} does not match its recorded manifest ({} difference{}); run `{}` to repair it",
            out.display(),
            found.len(),
            if found.len() == 1 { "" } else { "s" },
            args.common.assemble_command(args.out.as_deref()),
        )
    })
}

/// The status word of a check.
fn verdict(passed: bool) -> &'static str {
    if passed { "Verified" } else { "Failed" }
}

/// Exit 1 with `message` when anything was `found`.
fn failed_if(found: usize, message: impl FnOnce() -> String) -> Result<(), Failure> {
    if found == 0 {
        return Ok(());
    }
    Err(Failure {
        code: 1,
        error: crate::Reported(message()).into(),
    })
}

/// `verify --nar-hash HASH [DIR]`.
fn nar_hash(
    sh: &crate::shell::Shell,
    json: bool,
    dir: &std::path::Path,
    want: &str,
    base: &std::path::Path,
) -> Result<(), Failure> {
    use assemble_reconcile::NarCheck;
    let want = assemble_nar::Hash::parse(want).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("--nar-hash: {e}"),
    })?;
    let check = assemble_reconcile::verify_nar_hash(dir, &want, base)?;
    let (got, found) = match &check {
        NarCheck::Matches => (want, None),
        NarCheck::Differs { got, recorded } => (*got, recorded.as_ref()),
    };
    let differences = found.map(|(_, d)| d.as_slice()).unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "output": dir,
                "nar_hash": got.to_sri(),
                "expected": want.to_sri(),
                "differences": differences,
            })
        );
    } else {
        for d in differences {
            sh.note("Differs", format!("{}: {}", d.path, d.what));
        }
        sh.status(
            verdict(check == NarCheck::Matches),
            format!("{}: NAR hash {}", dir.display(), got.to_sri()),
        );
    }
    if check == NarCheck::Matches {
        return Ok(());
    }
    let named = match found {
        Some((state, d)) => format!(
            "{} difference{} from the manifest recorded with it ({})",
            d.len(),
            if d.len() == 1 { "" } else { "s" },
            state.display()
        ),
        None => "no state remembers that hash, so the files that differ cannot be named (keep the state folder of the output it came from, or compare it with `cargo xtask export --format nar`)".to_string(),
    };
    failed_if(1, || {
        format!(
            "{} has NAR hash {}, not {}: {named}",
            dir.display(),
            got.to_sri(),
            want.to_sri()
        )
    })
}

/// `verify --cache`.
fn cache(
    sh: &crate::shell::Shell,
    args: &VerifyArgs,
    dir: &std::path::Path,
) -> Result<(), Failure> {
    use anyhow::Context as _;
    let report = assemble_cache::verify::verify(dir)
        .with_context(|| format!("verifying the cache {}", dir.display()))?;
    let found = &report.findings;
    if args.json {
        let corrupt: Vec<serde_json::Value> = found
            .iter()
            .map(|f| serde_json::json!({ "entry": f.entry, "problem": f.problem }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "cache": dir, "checked": report.checked, "corrupt": corrupt })
        );
    } else {
        for f in found {
            sh.note("Corrupt", format!("{}: {}", f.entry.display(), f.problem));
        }
        sh.status(
            verdict(found.is_empty()),
            format!(
                "the cache {}: {} entr{} checked, {} corrupt or incomplete",
                dir.display(),
                report.checked,
                if report.checked == 1 { "y" } else { "ies" },
                found.len()
            ),
        );
    }
    failed_if(found.len(), || {
        format!(
            "{} of the cache {}'s entries {} not what {} made; an assemble that needs one discards it and makes it again (or remove {} by hand)",
            found.len(),
            dir.display(),
            if found.len() == 1 { "is" } else { "are" },
            if found.len() == 1 {
                "it was"
            } else {
                "they were"
            },
            if found.len() == 1 { "it" } else { "them" },
        )
    })
}
