//! The `--json` report: the documented shape of a run's [`Report`].
//!
//! Written here, in a crate built optimised, rather than by the command
//! line: a clean build reports tens of thousands of changes, and the
//! serialisation code is instantiated where it is called.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use assemble_reconcile::Change;
use serde::Serialize;

use crate::Report;

#[derive(Serialize)]
struct UnitReport {
    status: &'static str,
    entries: usize,
    written: usize,
    removed: usize,
    /// The patches the recipe applies to it.
    patches: usize,
    /// Why the unit is dirty, as plain sentences (empty when fresh).
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct ChangeReport<'a> {
    #[serde(flatten)]
    change: &'a Change,
    /// The change as a sentence, written straight into the output.
    #[serde(serialize_with = "sentence")]
    because: &'a Change,
}

fn sentence<S: serde::Serializer>(c: &&Change, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    output: &'a Path,
    prefix: &'a str,
    /// What builds the recipe's virtualenvs, with its version.
    installer: &'a str,
    /// The interpreter the tree runs on: its real path and version.
    interpreter: Interpreter<'a>,
    /// The output's NAR hash in SRI form, with `--nar-hash` (else null).
    nar_hash: Option<String>,
    /// `true` for `cargo xtask plan`: nothing was changed.
    dry_run: bool,
    files_written: usize,
    files_removed: usize,
    dirs_created: usize,
    /// `--link-mode`, and how many of the files written were reflinks
    /// (`cloned`) and hard links to the cache (`linked`).
    copies: Copies,
    units: BTreeMap<&'a str, UnitReport>,
    warnings: &'a [String],
    /// What the tree needs that the cache lacks, which a dry run did not
    /// make: `{unit, what}` each (`unit` null for the bytecode and
    /// autoPatchelf steps). Empty for a run that applied.
    would_build: &'a [assemble_plan::WouldMake],
    /// ELF files whose runpath or interpreter autoPatchelf set.
    elf_patched: usize,
    /// The tree's run-time library list: each library its ELF files need,
    /// where it resolved (`tree`, `libs`, `host`, `absolute`), its path
    /// and the files that need it.
    libraries: &'a [assemble_elf::Library],
    /// With `[python] compile-bytecode`: sources compiled by this run, taken
    /// from the cache, taken from the shared cache, and that do not
    /// compile (else null).
    bytecode: Option<BytecodeReport>,
    /// With `--cache-registry`: entries pulled (and their compressed
    /// bytes), missed, refused, pushed (and their bytes); else null.
    registry: Option<assemble_share::Tally>,
    /// Every path written or removed, with why.
    changes: Vec<ChangeReport<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elf: Option<&'a [assemble_elf::Decision]>,
    /// Reads: the input files hashed (the stat cache vouched for the rest),
    /// and from /proc/self/io `rchar` (every byte read, state files and
    /// waited-for children such as the interpreter probe included) and
    /// `read_bytes` (from storage).
    io: BTreeMap<String, u64>,
    /// Wall-clock milliseconds of each phase of the run, in order.
    phases: Vec<Phase>,
    seconds: f64,
}

#[derive(Serialize)]
struct Copies {
    mode: assemble_reconcile::LinkMode,
    cloned: usize,
    linked: usize,
}

#[derive(Serialize)]
struct Interpreter<'a> {
    path: &'a Path,
    version: &'a str,
}

#[derive(Serialize)]
struct BytecodeReport {
    compiled: usize,
    cached: usize,
    pulled: usize,
    failed: usize,
}

#[derive(Serialize)]
struct Phase {
    phase: &'static str,
    ms: f64,
}

impl Report {
    /// Writes the report as pretty JSON (and a newline) to `out`; with
    /// `elf`, autoPatchelf's decision for every ELF file too.
    pub fn write_json(&self, elf: bool, out: &mut dyn Write) -> std::io::Result<()> {
        let plan = &self.plan;
        let o = &self.outcome;
        let j = JsonReport {
            output: &self.output,
            prefix: &self.prefix,
            installer: &self.installer,
            interpreter: Interpreter {
                path: &self.interpreter,
                version: &self.python_version,
            },
            nar_hash: self.nar_hash.map(|h| h.to_sri()),
            dry_run: self.dry_run,
            files_written: o.files_written,
            files_removed: o.files_removed,
            dirs_created: o.dirs_created,
            copies: Copies {
                mode: self.link_mode,
                cloned: o.cloned,
                linked: o.linked,
            },
            units: self
                .units
                .iter()
                .map(|u| {
                    (
                        u.name.as_str(),
                        UnitReport {
                            status: u.status.as_str(),
                            entries: u.entries,
                            written: u.written,
                            removed: u.removed,
                            patches: u.patches,
                            reasons: u.reasons.iter().map(ToString::to_string).collect(),
                        },
                    )
                })
                .collect(),
            warnings: &plan.warnings,
            would_build: &plan.would_make,
            elf_patched: plan.elf.iter().filter(|d| d.changes()).count(),
            libraries: &plan.libraries,
            bytecode: plan.bytecode.map(|b| BytecodeReport {
                compiled: b.compiled,
                cached: b.cached,
                pulled: b.pulled,
                failed: b.failed,
            }),
            registry: self.registry,
            changes: o
                .changes
                .iter()
                .map(|c| ChangeReport {
                    change: c,
                    because: c,
                })
                .collect(),
            elf: elf.then_some(plan.elf.as_slice()),
            io: {
                let mut io = proc_io();
                io.insert("inputs_hashed".into(), plan.hashed_files);
                io.insert("inputs_hashed_bytes".into(), plan.hashed_bytes);
                io.insert("inputs_hashed_while_copied".into(), o.hashed_on_copy as u64);
                io
            },
            phases: self
                .phases
                .iter()
                .map(|(phase, d)| Phase {
                    phase,
                    ms: d.as_secs_f64() * 1e3,
                })
                .collect(),
            seconds: self.elapsed.as_secs_f64(),
        };
        // Buffered here: serde writes token by token, and `out` is behind
        // a dynamic call.
        let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
        serde_json::to_writer_pretty(&mut w, &j).map_err(std::io::Error::from)?;
        writeln!(w)?;
        w.flush()
    }
}

/// `rchar` and `read_bytes` of this process, where the kernel reports them.
fn proc_io() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| matches!(*k, "rchar" | "read_bytes"))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}
