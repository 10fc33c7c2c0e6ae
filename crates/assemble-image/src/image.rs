//! The layers, the config and the manifest of an image.

use std::collections::BTreeMap;

use assemble_reconcile::{Layout, Recorded, TarShape};
use serde_json::json;

use crate::blob::{self, Blob, Store};
use crate::{Error, base, host};

/// Which recorded paths of a tree a layer holds (by path and record).
pub type Keep<'a> = Box<dyn Fn(&str, &Recorded) -> bool + Sync + 'a>;

/// Where a layer's files come from.
pub enum Source<'a> {
    /// The recorded paths of an assembled tree that `keep` accepts (by
    /// path and record), under the image's prefix.
    Tree { layout: &'a Layout, keep: Keep<'a> },
    /// Files of the host, at their own paths.
    Host(&'a host::HostFiles),
}

/// One layer: a name for its history and where its files come from.
pub struct Layer<'a> {
    pub name: String,
    pub source: Source<'a>,
}

/// What the image's config says of how it runs.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`; a `PATH` here is put before the base's.
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
}

/// What to build.
pub struct Spec<'a> {
    /// Where the tree is in the image (absolute: `/opt/authentik`).
    pub prefix: String,
    /// Every entry's time, and the config's `created` (SOURCE_DATE_EPOCH).
    pub mtime: u64,
    pub layers: Vec<Layer<'a>>,
    pub config: Config,
    /// A base image whose layers come first (copied into the store).
    pub base: Option<&'a base::Base>,
}

/// A built image: its blobs are in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// Every layer, the base's first, with its name.
    pub layers: Vec<(String, Blob)>,
    pub config: Blob,
    pub manifest: Blob,
    /// The manifest's bytes (its digest is `manifest.digest`).
    pub manifest_json: Vec<u8>,
}

/// Builds the layers of `spec` into `store`, then its config and manifest.
pub fn build(spec: &Spec<'_>, store: &Store) -> Result<Image, Error> {
    let mut layers = Vec::new();
    if let Some(b) = spec.base {
        layers.extend(b.copy_layers(store)?);
    }
    let shape = TarShape {
        mtime: spec.mtime,
        under: spec.prefix.trim_start_matches('/').to_string(),
    };
    // Each layer gzipped on a thread of its own: they are independent.
    let built: Vec<Result<Blob, Error>> = std::thread::scope(|s| {
        let jobs: Vec<_> = spec
            .layers
            .iter()
            .map(|l| s.spawn(|| layer(store, &shape, l)))
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join().unwrap_or_else(|_| {
                    Err(std::io::Error::other("a layer's thread panicked").into())
                })
            })
            .collect()
    });
    for (l, blob) in spec.layers.iter().zip(built) {
        layers.push((l.name.clone(), blob?));
    }
    let config = store.add_bytes(&config_json(spec, &layers)?, blob::CONFIG)?;
    let manifest_json = manifest_json(&config, &layers)?;
    let manifest = store.add_bytes(&manifest_json, blob::MANIFEST)?;
    Ok(Image {
        layers,
        config,
        manifest,
        manifest_json,
    })
}

fn layer(store: &Store, shape: &TarShape, l: &Layer<'_>) -> Result<Blob, Error> {
    match &l.source {
        Source::Tree { layout, keep } => store.add_layer(|w| {
            let mut w = w;
            assemble_reconcile::write_tar_where(layout, shape, keep.as_ref(), &mut w)?;
            Ok(())
        }),
        Source::Host(files) => store.add_layer(|w| files.write_tar(shape.mtime, w)),
    }
}

/// The config: how it runs, and the `diff_ids` of its layers.
fn config_json(spec: &Spec<'_>, layers: &[(String, Blob)]) -> Result<Vec<u8>, Error> {
    let created = rfc3339(spec.mtime);
    let c = &spec.config;
    let base_env = spec.base.map(|b| b.env()).unwrap_or_default();
    let mut history: Vec<serde_json::Value> = spec.base.map(|b| b.history()).unwrap_or_default();
    for (name, _) in &layers[layers.len() - spec.layers.len()..] {
        history.push(
            json!({ "created": created, "created_by": format!("cargo xtask image: {name}") }),
        );
    }
    let value = json!({
        "created": created,
        "architecture": arch(),
        "os": "linux",
        "config": {
            "User": c.user,
            "Env": merge_env(&c.env, &base_env),
            "Entrypoint": c.entrypoint,
            "Cmd": c.cmd,
            "WorkingDir": c.working_dir,
            "Labels": c.labels,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|(_, b)| b.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "history": history,
    });
    Ok(serde_json::to_vec(&value)?)
}

/// `ours` then the base's variables we do not set; our `PATH` first, the
/// base's after it.
fn merge_env(ours: &[String], base: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut env: Vec<String> = ours.to_vec();
    for kv in base {
        let k = key(kv);
        match env.iter_mut().find(|e| key(e) == k) {
            Some(e) if k == "PATH" => {
                let tail = &kv["PATH=".len()..];
                if !tail.is_empty() && !e.ends_with(tail) {
                    e.push(':');
                    e.push_str(tail);
                }
            }
            Some(_) => {}
            None => env.push(kv.clone()),
        }
    }
    env
}

fn manifest_json(config: &Blob, layers: &[(String, Blob)]) -> Result<Vec<u8>, Error> {
    let descriptor =
        |b: &Blob| json!({ "mediaType": b.media_type, "digest": b.digest, "size": b.size });
    let value = json!({
        "schemaVersion": 2,
        "mediaType": blob::MANIFEST,
        "config": descriptor(config),
        "layers": layers.iter().map(|(_, b)| descriptor(b)).collect::<Vec<_>>(),
    });
    Ok(serde_json::to_vec(&value)?)
}

/// The image's architecture, in Go's names.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// `secs` since the epoch as RFC 3339 in UTC (`2026-12-06T10:41:24Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_553_684), "2026-12-06T10:41:24Z");
    }

    #[test]
    fn our_path_comes_first_and_the_base_keeps_its_other_variables() {
        let env = merge_env(
            &["PATH=/opt/a/bin".into(), "LANG=C.UTF-8".into()],
            &[
                "PATH=/usr/bin:/bin".into(),
                "LANG=en".into(),
                "TZ=UTC".into(),
            ],
        );
        assert_eq!(
            env,
            ["PATH=/opt/a/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TZ=UTC"]
        );
    }
}
