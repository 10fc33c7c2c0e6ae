//! `cargo xtask image`: the tree assembled at an image's prefix, then
//! packed as an OCI image (`assemble_image`) into an OCI layout, a
//! docker-archive, and/or a registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use assemble_image::image::{Layer, Source};
use assemble_image::{Config, Image, Spec, Store};
use assemble_pipeline::{Mode, Report};
use assemble_recipe::{Recipe, Remote, Source as UnitSource};
use assemble_reconcile::{Layout, Recorded};

use crate::context::Workspace;
use crate::shell::Shell;
use crate::{Failure, TreeArgs};

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Where the tree is assembled for the image (default:
    /// TARGET/<package name>-image).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the tree is in the image (`@out@`).
    #[arg(long, value_name = "PATH", default_value = "/opt/authentik")]
    pub prefix: String,
    /// Write an OCI image layout into DIR (new, empty, or a layout).
    #[arg(long, value_name = "DIR")]
    pub oci: Option<PathBuf>,
    /// Write a docker-archive (what `docker load` reads) to FILE.
    #[arg(long, value_name = "FILE")]
    pub docker_archive: Option<PathBuf>,
    /// The image's tag in the layout and the archive (default: the
    /// recipe's version).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// A base image (an OCI layout folder or a docker-archive) that holds
    /// the interpreter `bin/python` points to (checked; refused otherwise).
    #[arg(long, value_name = "PATH", conflicts_with = "with_interpreter")]
    pub base: Option<PathBuf>,
    /// No base: a layer with the interpreter's installation and every host
    /// library it and the tree load, with the loader.
    #[arg(long)]
    pub with_interpreter: bool,
    /// The user the image runs as (not root).
    #[arg(long, value_name = "UID[:GID]", default_value = "1000:1000")]
    pub user: String,
    /// The units in the last layer, the one that changes most (default:
    /// authentik); the venv's units are in the first, the others between.
    #[arg(long = "app", value_name = "UNIT")]
    pub app: Vec<String>,
    /// Push the image to REGISTRY/REPOSITORY:TAG (only the blobs the
    /// registry lacks are uploaded).
    #[arg(long, value_name = "REFERENCE")]
    pub push: Option<String>,
    /// Allow plain http to a registry that is not on loopback.
    #[arg(long, requires = "push")]
    pub insecure: bool,
    /// Print what was built as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(sh: &Shell, args: &ImageArgs) -> Result<(), Failure> {
    let ws = Workspace::for_recipe(&args.tree.common)?;
    check_args(&ws, args)?;
    let recipe = ws.recipe(&args.tree.common)?;
    if let Some(app) = args.app.iter().find(|a| recipe.unit(a).is_none()) {
        return Err(usage(&format!("--app: {}", recipe.no_unit_named(app))));
    }
    let (report, layout) = assemble(sh, args, &ws, &recipe)?;
    let python = interpreter_link(&layout.out)?;
    let base = base_for(&ws, args, &python)?;
    let host = if args.with_interpreter {
        Some(interpreter_files(&report, &python)?)
    } else {
        None
    };
    for w in host.iter().flat_map(|h| &h.warnings) {
        sh.warn(w);
    }
    let mtime = source_date_epoch()?;
    let spec = Spec {
        prefix: args.prefix.trim_end_matches('/').to_string(),
        mtime,
        layers: layers(&recipe, args, &layout, host.as_ref()),
        config: config(&recipe, args, &report, &layout, mtime),
        base: base.as_ref(),
    };
    let (store, _scratch) = store_for(&ws, args)?;
    let image = assemble_image::image::build(&spec, &store)?;
    let pushed = deliver(&ws, args, &recipe, (&store, &image), mtime)?;
    said(sh, args, &image, pushed.as_ref());
    Ok(())
}

/// The flags checked before anything is built.
fn check_args(ws: &Workspace, args: &ImageArgs) -> Result<(), Failure> {
    if args.oci.is_none() && args.docker_archive.is_none() && args.push.is_none() {
        return Err(usage(
            "say where the image goes: --oci DIR, --docker-archive FILE or --push REFERENCE",
        ));
    }
    if !args.prefix.starts_with('/') || args.prefix.trim_matches('/').is_empty() {
        return Err(usage("--prefix must be an absolute path below /"));
    }
    let user = args.user.split(':').next().unwrap_or_default();
    if user == "0" || user == "root" {
        return Err(usage("--user: an image runs as a user that is not root"));
    }
    if let Some(dir) = &args.oci {
        assemble_image::write::check_layout_dir(&ws.cwd.join(dir))?;
    }
    Ok(())
}

/// `--base`, read, and refused unless it holds the interpreter.
fn base_for(
    ws: &Workspace,
    args: &ImageArgs,
    python: &Path,
) -> Result<Option<assemble_image::base::Base>, Failure> {
    let Some(path) = &args.base else {
        return Ok(None);
    };
    let base = assemble_image::base::Base::open(&ws.cwd.join(path))?;
    base.check_file(&python.to_string_lossy()).map_err(|e| {
        anyhow!(
            "{e}\n  hint: use a base with that interpreter (or build with --python naming the base's), or --with-interpreter for an image with no base"
        )
    })?;
    Ok(Some(base))
}

/// Where the blobs go: the layout's own folder, else a temporary one
/// (kept alive by the second value).
fn store_for(
    ws: &Workspace,
    args: &ImageArgs,
) -> Result<(Store, Option<tempfile::TempDir>), Failure> {
    if let Some(dir) = &args.oci {
        let blobs = assemble_image::write::layout_blobs(&ws.cwd.join(dir));
        return Ok((Store::new(&blobs)?, None));
    }
    let scratch = tempfile::Builder::new()
        .prefix("assemble-image-")
        .tempdir()
        .context("a temporary folder")?;
    Ok((Store::new(scratch.path())?, Some(scratch)))
}

/// The image into the layout, the archive and the registry asked for.
fn deliver(
    ws: &Workspace,
    args: &ImageArgs,
    recipe: &Recipe,
    (store, image): (&Store, &Image),
    mtime: u64,
) -> Result<Option<assemble_image::push::Pushed>, Failure> {
    let tag = args.tag.clone().unwrap_or_else(|| recipe.version.clone());
    if let Some(dir) = &args.oci {
        assemble_image::write::write_layout(&ws.cwd.join(dir), image, &tag)?;
    }
    if let Some(file) = &args.docker_archive {
        let repo_tag = format!("{}:{tag}", recipe.name);
        let file = ws.cwd.join(file);
        assemble_image::write::write_docker_archive(store, image, &repo_tag, mtime, &file)?;
    }
    match &args.push {
        Some(reference) => Ok(Some(assemble_image::push::push(
            store,
            image,
            reference,
            args.insecure,
        )?)),
        None => Ok(None),
    }
}

fn usage(why: &str) -> Failure {
    Failure {
        code: 2,
        error: anyhow!("{why}"),
    }
}

/// Assembles the tree with the image's prefix (and its NAR hash).
fn assemble(
    sh: &Shell,
    args: &ImageArgs,
    ws: &Workspace,
    recipe: &Recipe,
) -> Result<(Report, Layout), Failure> {
    let out = match &args.out {
        Some(o) => ws.cwd.join(o),
        None => ws.target_dir.join(format!("{}-image", recipe.name)),
    };
    let assemble = args
        .tree
        .assemble_args(out, PathBuf::from(&args.prefix), args.json);
    let opts = crate::assemble::options(&assemble)?;
    let report = crate::assemble::build(sh, &opts, args.json, Mode::Apply)?;
    let layout = Layout::new(&report.output, &opts.state_base);
    Ok((report, layout))
}

/// The absolute path the tree's `bin/python` leads to, through the
/// tree's own links (`python -> python3.11 -> /usr/bin/python3.11`).
fn interpreter_link(tree: &Path) -> Result<PathBuf, Failure> {
    let mut rel = PathBuf::from("bin/python");
    for _ in 0..16 {
        let target = fs_err::read_link(tree.join(&rel))
            .context("the tree's bin/python: an image needs the venv's link to its interpreter")?;
        if target.is_absolute() {
            return Ok(target);
        }
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        rel = assemble_fs::normalize(&parent, &target);
    }
    Err(anyhow!("the tree's bin/python: too many links").into())
}

/// `SOURCE_DATE_EPOCH`, else 1 (as `export`).
fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            usage(&format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
        Err(_) => Ok(1),
    }
}

/// The interpreter's installation (`bin/python`'s target, its standard
/// library beside it) and the host libraries it and the tree load.
fn interpreter_files(
    report: &Report,
    python: &Path,
) -> Result<assemble_image::host::HostFiles, Failure> {
    let real = fs_err::canonicalize(python).context("the interpreter bin/python points to")?;
    let minor = report
        .python_version
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    let stdlib = real
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join(format!("lib/python{minor}")))
        .filter(|l| l.join("os.py").is_file())
        .ok_or_else(|| {
            anyhow!(
                "no standard library (lib/python{minor}/os.py) beside {}",
                real.display()
            )
        })?;
    let libs: Vec<PathBuf> = report
        .plan
        .libraries
        .iter()
        .filter(|l| l.found != assemble_elf::Found::Tree)
        .map(|l| PathBuf::from(&l.path))
        .collect();
    Ok(assemble_image::host::HostFiles::interpreter(
        python, &stdlib, &libs,
    )?)
}

/// What changes least first: the interpreter, the venv's units, the
/// other units, the app's.
fn layers<'a>(
    recipe: &Recipe,
    args: &ImageArgs,
    layout: &'a Layout,
    host: Option<&'a assemble_image::host::HostFiles>,
) -> Vec<Layer<'a>> {
    let apps: Vec<String> = if args.app.is_empty() {
        vec!["authentik".into()]
    } else {
        args.app.clone()
    };
    let mut venv = Vec::new();
    let mut packages = Vec::new();
    for u in &recipe.units {
        let name = u.name.to_string();
        match u.source {
            UnitSource::Venv { .. }
            | UnitSource::Requirements { .. }
            | UnitSource::UvProject { .. } => venv.push(name),
            _ if apps.contains(&name) => {}
            _ => packages.push(name),
        }
    }
    let mut out = Vec::new();
    if let Some(h) = host {
        out.push(Layer {
            name: "interpreter".into(),
            source: Source::Host(h),
        });
    }
    let known: Vec<String> = venv.iter().chain(&packages).cloned().collect();
    let by_unit = |name: &str, units: Vec<String>| -> Option<Layer<'a>> {
        (!units.is_empty()).then(|| Layer {
            name: name.into(),
            source: Source::Tree {
                layout,
                keep: Box::new(move |_: &str, r: &Recorded| {
                    units.iter().any(|u| *u == r.unit.as_str())
                }),
            },
        })
    };
    out.extend(by_unit("venv", venv));
    out.extend(by_unit("packages", packages));
    // The app's units, and whatever no unit above made.
    out.push(Layer {
        name: "app".into(),
        source: Source::Tree {
            layout,
            keep: Box::new(move |_: &str, r: &Recorded| {
                !known.iter().any(|u| *u == r.unit.as_str())
            }),
        },
    });
    out
}

/// How the image runs, as authentik's own image: dumb-init, then `ak`.
fn config(
    recipe: &Recipe,
    args: &ImageArgs,
    report: &Report,
    layout: &Layout,
    mtime: u64,
) -> Config {
    let prefix = args.prefix.trim_end_matches('/');
    let has = |p: &str| fs_err::symlink_metadata(layout.out.join(p)).is_ok();
    let mut entrypoint = Vec::new();
    if has("bin/dumb-init") {
        entrypoint.extend([format!("{prefix}/bin/dumb-init"), "--".into()]);
    }
    if let Some(ak) = ["bin/ak", "lifecycle/ak"].into_iter().find(|p| has(p)) {
        entrypoint.push(format!("{prefix}/{ak}"));
    }
    let mut labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            recipe.name.clone(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            recipe.version.clone(),
        ),
        (
            "org.opencontainers.image.created".to_string(),
            assemble_image::rfc3339(mtime),
        ),
    ]);
    if let Some(nar) = report.nar_hash {
        labels.insert("dev.authentik-assemble.nar-hash".into(), nar.to_sri());
    }
    labels.extend(app_pin(recipe, args));
    Config {
        entrypoint,
        cmd: vec!["server".into()],
        env: vec![
            format!(
                "PATH={prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
            format!("VIRTUAL_ENV={prefix}"),
        ],
        user: args.user.clone(),
        working_dir: prefix.to_string(),
        labels,
    }
}

/// The app unit's pin as labels: its tag or rev (version), its hash
/// (revision), its repository (source).
fn app_pin(recipe: &Recipe, args: &ImageArgs) -> Vec<(String, String)> {
    let app = args.app.first().map_or("authentik", String::as_str);
    let Some(unit) = recipe.units.iter().find(|u| u.name.as_str() == app) else {
        return Vec::new();
    };
    let UnitSource::Remote(
        remote @ Remote::Github {
            owner,
            repo,
            rev,
            hash,
        },
    ) = &unit.source
    else {
        return Vec::new();
    };
    let hash = hash.or_else(|| {
        let lock = assemble_fetch::Lockfile::load(&recipe.file).ok()?;
        let key = assemble_fetch::Lockfile::key(remote)?;
        match lock.get(app, &key) {
            assemble_fetch::Locked::Hash(h) => Some(h),
            _ => None,
        }
    });
    let version = rev.strip_prefix("version/").unwrap_or(rev);
    let mut out = vec![
        (
            "org.opencontainers.image.version".into(),
            version.to_string(),
        ),
        (
            "org.opencontainers.image.source".into(),
            format!("https://github.com/{owner}/{repo}"),
        ),
    ];
    if let Some(h) = hash {
        out.push(("org.opencontainers.image.revision".into(), h.to_sri()));
    }
    out
}

/// What was built, for people or as JSON.
fn said(
    sh: &Shell,
    args: &ImageArgs,
    image: &Image,
    pushed: Option<&assemble_image::push::Pushed>,
) {
    if args.json {
        let layers: Vec<serde_json::Value> = image
            .layers
            .iter()
            .map(|(name, b)| serde_json::json!({ "name": name, "digest": b.digest, "diff_id": b.diff_id, "size": b.size }))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "digest": image.manifest.digest,
                "config": image.config.digest,
                "layers": layers,
                "oci": args.oci,
                "docker_archive": args.docker_archive,
                "pushed": pushed.map(|p| serde_json::json!({
                    "reference": p.reference,
                    "uploaded": p.uploaded,
                    "present": p.present,
                })),
            })
        );
        return;
    }
    for (name, b) in &image.layers {
        sh.note(
            "Layer",
            format!("{name}: {} ({:.1} MB)", b.digest, b.size as f64 / 1e6),
        );
    }
    sh.status("Built", format!("image {}", image.manifest.digest));
    if let Some(p) = pushed {
        sh.status(
            "Pushed",
            format!(
                "{} ({} blobs uploaded, {} already there)",
                p.reference,
                p.uploaded.len(),
                p.present.len()
            ),
        );
    }
}
