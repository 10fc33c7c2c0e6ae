//! The venv unit: the tree at the output root, `pyvenv.cfg`, and `bin/`.

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;

use assemble_cache::Files;
use assemble_manifest::walk::{FileKind, Walked};
use assemble_manifest::{Content, Digest, Entry, Kind, Stat, UnitName};
use assemble_python::{Dist, InTree, launcher, read_dists, rewrite_pyvenv_cfg, rewrite_shebang};
use assemble_recipe::{Recipe, Scripts, Unit, Vars};

use crate::{Builder, Context, Error, recipe_error};

pub(crate) fn plan_venv(
    b: &mut Builder,
    recipe: &Recipe,
    unit: &Unit,
    files: &Files,
    ctx: &Context,
    vars: &Vars,
) -> Result<(), Error> {
    let root = files.root();
    let name: UnitName = unit.name.clone();
    let err = |message: String| Error::Unit {
        unit: unit.name.clone(),
        message,
    };
    let py = &ctx.python;
    let site_rel = py.site_packages();
    let (site, _) = crate::beneath(&unit.name, "the venv's", root, &site_rel)?;
    if !site.is_dir() {
        let have: Vec<String> = fs_err::read_dir(root.join("lib"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| format!("lib/{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        return Err(err(format!(
            "the venv at {} has no {site_rel} (it has: {}); it was made for another Python than the recipe's interpreter ({}, {}): rebuild the venv with that interpreter or change [python] interpreter",
            root.display(),
            if have.is_empty() {
                "no lib/python*".to_string()
            } else {
                have.join(", ")
            },
            py.executable.display(),
            py.full_version,
        )));
    }
    let cfg_path = root.join("pyvenv.cfg");
    let cfg = match files.read(&cfg_path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        // A link out of the venv: said as it is.
        Err(assemble_cache::Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(err(e.to_string()));
        }
        Err(assemble_cache::Error::Io(e)) => {
            return Err(err(format!("{} is not a virtualenv: {e}", root.display())));
        }
        Err(e) => return Err(e.into()),
    };

    let python_err = |source| Error::Python {
        unit: unit.name.clone(),
        source,
    };
    let mut dists = read_dists(files, &site).map_err(python_err)?;
    // A uv project's venv was synced without them already.
    let excluded = if matches!(unit.source, assemble_recipe::Source::UvProject { .. }) {
        Excluded::default()
    } else {
        Excluded::of(recipe, unit, &site_rel, &mut dists)?
    };

    // bin/ and pyvenv.cfg are rebuilt below; the installer's bookkeeping
    // at the venv's root is not part of the tree (uv writes a lock, a
    // .gitignore of `*`, and a CACHEDIR.TAG, which would make backup tools
    // and `tar --exclude-caches` skip the whole deployed tree).
    b.copy_tree(&name, "venv", files, root, "", "", &|rel| {
        matches!(
            rel,
            "bin" | "pyvenv.cfg" | ".lock" | ".gitignore" | "CACHEDIR.TAG"
        ) || excluded.skips(rel)
    })?;
    excluded.prune_emptied(b, &name);
    b.insert(
        "pyvenv.cfg".into(),
        Entry::bytes(
            &name,
            "pyvenv.cfg",
            rewrite_pyvenv_cfg(&cfg, py, &vars.out).into_bytes(),
            false,
        ),
    )?;

    plan_bin(b, recipe, unit, files, &dists, &vars.out, py)?;
    rewrite_records(b, &name, &dists, &site_rel)?;
    Ok(())
}

/// The venv's `bin/`: the interpreter links, then the scripts the unit
/// names (`*`: every console script and data script the venv has).
fn plan_bin(
    b: &mut Builder,
    recipe: &Recipe,
    unit: &Unit,
    files: &Files,
    dists: &[Dist],
    out: &str,
    py: &assemble_python::Interpreter,
) -> Result<(), Error> {
    let root = files.root();
    let name: UnitName = unit.name.clone();
    let pyname = py.name();
    b.insert("bin".into(), Entry::dir(&name, "bin"))?;
    b.insert(
        format!("bin/{pyname}"),
        Entry::link(&name, "bin", py.executable.to_string_lossy()),
    )?;
    for alias in ["python3", "python"] {
        b.insert(
            format!("bin/{alias}"),
            Entry::link(&name, "bin", pyname.clone()),
        )?;
    }

    let python = format!("{out}/bin/{pyname}");
    let wanted: Vec<String> = match &unit.scripts {
        Scripts::Named(v) => v.clone(),
        Scripts::All => {
            let mut all: Vec<String> = Vec::new();
            for d in dists {
                all.extend(
                    d.scripts
                        .iter()
                        .filter(|e| !e.attr.is_empty())
                        .map(|e| e.name.clone()),
                );
                all.extend(
                    d.data_scripts()?
                        .into_iter()
                        .filter(|s| root.join("bin").join(s).is_file()),
                );
            }
            all.sort();
            all.dedup();
            all
        }
    };
    for script in &wanted {
        if script.contains('/')
            || matches!(script.as_str(), "python" | "python3")
            || *script == pyname
        {
            return Err(recipe_error(
                recipe,
                &unit.name,
                script,
                format!("`scripts` entry {script:?} is not a script name"),
            ));
        }
        if let Some(entry) = script_entry(b, recipe, &name, files, dists, script, &python)? {
            b.insert(format!("bin/{script}"), entry)?;
        }
    }

    Ok(())
}

/// RECORD's rows for bin/ describe the tree's bin/, not the installer's
/// (whose launchers named the cache folder): so the tree does not depend
/// on where the cache is, and RECORD lists no file the tree lacks.
fn rewrite_records(
    b: &mut Builder,
    name: &UnitName,
    dists: &[Dist],
    site_rel: &str,
) -> Result<(), Error> {
    for d in dists {
        let record = {
            let tree = |script: &str| match b.desired.get(format!("bin/{script}").as_str()) {
                Some(Entry {
                    kind:
                        Kind::File {
                            content: Content::Bytes(bytes),
                            ..
                        },
                    ..
                }) => InTree::Written(bytes),
                Some(_) => InTree::Copied,
                None => InTree::Absent,
            };
            d.record_for_tree(tree).map_err(|e| Error::Python {
                unit: name.clone(),
                source: assemble_python::Error::Io(e),
            })?
        };
        let Some(record) = record else { continue };
        let Some(info) = d.dist_info.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let path = format!("{site_rel}/{info}/RECORD");
        if b.desired.contains_key(path.as_str()) {
            b.desired.remove(path.as_str());
            b.insert(
                path,
                Entry::bytes(name, "RECORD", record.into_bytes(), false),
            )?;
        }
    }
    Ok(())
}

/// The `bin/` entry for one script name, or why there is none. A file
/// copied as it is (an ELF data script) is checked like the walked ones:
/// its record joins `b`'s. `None`: a data script to recover from its
/// wheel, which this run does not make (a dry run).
fn script_entry(
    b: &mut Builder,
    recipe: &Recipe,
    unit: &UnitName,
    files: &Files,
    dists: &[Dist],
    script: &str,
    python: &str,
) -> Result<Option<Entry>, Error> {
    let root = files.root();
    let err = |message: String| Error::Unit {
        unit: unit.clone(),
        message,
    };
    if let Some((d, ep)) = dists
        .iter()
        .find_map(|d| d.scripts.iter().find(|e| e.name == script).map(|e| (d, e)))
    {
        let text = launcher(python, ep).ok_or_else(|| {
            err(format!(
                "script `{script}` of {} {} names module {} without a callable",
                d.name, d.version, ep.module
            ))
        })?;
        return Ok(Some(Entry::bytes(unit, "script", text.into_bytes(), true)));
    }
    let (mut src, _) = crate::beneath(unit, "script", root, &format!("bin/{script}"))?;
    let mut recovered = None;
    if !src.is_file() {
        // Not in the venv's bin/: whose data file is it? RECORDs are read
        // only now, as most runs find every script above.
        let d = data_script_owner(recipe, unit, dists, script)?;
        // A Nix-FOD venv has no bin/: the script comes from the wheel
        // RECORD pins, made by the sources stage.
        let Some((path, record)) = b.make.recover(d, script).map_err(|e| match e {
            // Discarded and fetched again by the caller.
            Error::Corrupt(c) => Error::Corrupt(c),
            e => err(format!(
                "script `{script}` is a data file of {} {} that {} lacks (a Nix-FOD venv has no bin/), and getting it from the wheel failed: {e}; use a venv that still has bin/{script}, or drop it from `scripts`",
                d.name,
                d.version,
                root.join("bin").display()
            )),
        })?
        else {
            b.would_make.push(crate::WouldMake::unit(
                unit,
                format!(
                    "bin/{script} would be recovered from the wheel of {} {}",
                    d.name, d.version
                ),
            ));
            return Ok(None);
        };
        src = path;
        recovered = Some(record);
    }
    // A script (`#!`) is taken whole, for its shebang; binaries are copied.
    let stat = Stat::of(&fs_err::symlink_metadata(&src)?);
    let bytes = match &recovered {
        Some(r) => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut assemble_manifest::open_input(&src, &r.stat)?,
                &mut bytes,
            )?;
            bytes
        }
        None => files.read(&src)?,
    };
    if bytes.starts_with(b"#!")
        && let Some(text) = rewrite_shebang(&bytes, python)
    {
        return Ok(Some(
            Entry::bytes(unit, "data-script", text, true).from_source(&format!("bin/{script}")),
        ));
    }
    let record = match recovered {
        Some(r) => Some(r),
        None => {
            let one = [Walked {
                rel: String::new(),
                kind: FileKind::File,
                stat,
            }];
            // `None` for a venv the recipe names: hashed as an input.
            files
                .check(&src, &one, &|_| false)?
                .and_then(|mut records| records.pop())
        }
    };
    let stat = record.map_or(stat, |r| r.stat);
    let mut e = Entry::copy(
        unit,
        "data-script",
        src,
        Digest::AfterCopy,
        stat.mode & 0o100 != 0,
    );
    e.input_stat = Some(stat);
    b.sealed.extend(record);
    Ok(Some(e.from_source(&format!("bin/{script}"))))
}

/// The distribution whose data file `script` is; none is a recipe
/// mistake, said with every script the venv has and the closest one.
fn data_script_owner<'d>(
    recipe: &Recipe,
    unit: &str,
    dists: &'d [Dist],
    script: &str,
) -> Result<&'d Dist, Error> {
    for d in dists {
        if d.data_scripts()?.iter().any(|s| s == script) {
            return Ok(d);
        }
    }
    let mut known: Vec<String> = Vec::new();
    for d in dists {
        known.extend(d.scripts.iter().map(|e| e.name.clone()));
        known.extend(d.data_scripts()?);
    }
    known.sort();
    known.dedup();
    let names: Vec<&str> = known.iter().map(String::as_str).collect();
    let hint = assemble_recipe::suggest(script, &names)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Err(recipe_error(
        recipe,
        unit,
        script,
        format!(
            "`scripts` names `{script}`, which no distribution in the venv provides{hint} (it has: {})",
            known.join(", ")
        ),
    ))
}

/// The distributions a venv unit leaves out (`exclude`): their RECORDed
/// files and their `.dist-info`, as paths relative to the venv's root.
#[derive(Default)]
struct Excluded {
    files: HashSet<String>,
    dist_infos: Vec<String>,
    /// Folders that held excluded files: removed when nothing is left in
    /// them, so that the unit providing the package owns its folders.
    folders: BTreeSet<String>,
}

impl Excluded {
    /// Reads the RECORDs of the distributions `unit.exclude` names, and
    /// takes them out of `dists`. A name the venv does not have is a
    /// recipe error.
    fn of(
        recipe: &Recipe,
        unit: &Unit,
        site_rel: &str,
        dists: &mut Vec<Dist>,
    ) -> Result<Excluded, Error> {
        let mut x = Excluded::default();
        for wanted in &unit.exclude {
            let Some(i) = dists.iter().position(|d| d.is_named(wanted)) else {
                let have: Vec<&str> = dists.iter().map(|d| d.name.as_str()).collect();
                return Err(recipe_error(
                    recipe,
                    &unit.name,
                    wanted,
                    format!(
                        "`exclude` names {wanted}, which is not installed in the venv{} (it has: {})",
                        assemble_recipe::suggest(wanted, &have)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default(),
                        have.join(", ")
                    ),
                ));
            };
            let d = dists.remove(i);
            for p in d.record_paths()? {
                if let Some(rel) = within(site_rel, &p) {
                    let mut at = rel.as_str();
                    while let Some((parent, _)) = at.rsplit_once('/') {
                        if parent.len() <= site_rel.len() {
                            break;
                        }
                        x.folders.insert(parent.to_string());
                        at = parent;
                    }
                    x.files.insert(rel);
                }
            }
            if let Some(info) = d.dist_info.file_name() {
                x.dist_infos
                    .push(format!("{site_rel}/{}", info.to_string_lossy()));
            }
        }
        Ok(x)
    }

    /// Whether the venv's path `rel` is left out.
    fn skips(&self, rel: &str) -> bool {
        self.files.contains(rel) || self.dist_infos.iter().any(|d| d == rel)
    }

    /// Removes the unit's folders that held excluded files and are empty
    /// now, deepest first.
    fn prune_emptied(&self, b: &mut Builder, unit: &UnitName) {
        for folder in self.folders.iter().rev() {
            let prefix = format!("{folder}/");
            let holds = b
                .desired
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .next()
                .is_some_and(|(p, _)| p.starts_with(&prefix));
            let ours = b
                .desired
                .get(folder.as_str())
                .is_some_and(|e| e.kind.is_dir() && e.unit == *unit);
            if ours && !holds {
                b.desired.remove(folder.as_str());
            }
        }
    }
}

/// `path` (as RECORD writes it, relative to site-packages) relative to the
/// venv's root, `..` resolved; `None` if it leaves the venv.
fn within(site_rel: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = site_rel.split('/').collect();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}
