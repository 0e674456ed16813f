//! `mpsi assemble`: spec -> layers (cached in the store) -> OCI layout.

use crate::layer::compress::Compression;
use crate::fsutil;
use crate::layer::{self, Encoding, LayerBlob};
use crate::oci::{self, Layout};
use crate::rootfs;
use crate::spec::Spec;
use crate::store::Store;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::io::BufWriter;
use std::path::PathBuf;

pub struct Options {
    pub out: PathBuf,
    pub tag: Option<String>,
    pub compression: Option<Compression>,
    /// Reuse layers whose inputs are unchanged.
    pub use_cache: bool,
    pub threads: usize,
    pub progress: bool,
    /// Where build inputs missing from the store may come from.
    pub inputs: crate::fetch::Origin,
    pub build: crate::build::Options,
}

#[derive(Serialize)]
pub struct Report {
    pub image: String,
    pub tag: String,
    pub layout: PathBuf,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub source_date_epoch: u64,
    /// Build outputs the layers take files from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<crate::build::Built>,
    pub layers: Vec<LayerReport>,
}

#[derive(Serialize)]
pub struct LayerReport {
    pub name: String,
    #[serde(flatten)]
    pub blob: LayerBlob,
    /// Taken from the store's layer cache instead of written anew.
    pub cached: bool,
}

/// SOURCE_DATE_EPOCH from the environment wins over the spec's pin.
pub fn source_date_epoch(spec: &Spec) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse::<u64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds since 1970")
        }),
        _ => u64::try_from(spec.image.source_date_epoch).with_context(|| {
            format!(
                "{}: image.source_date_epoch must not be negative",
                spec.file.display()
            )
        }),
    }
}

pub fn run(spec: &Spec, store: &Store, opts: &Options) -> Result<Report> {
    let epoch = source_date_epoch(spec)?;
    let compression = opts.compression.unwrap_or(spec.image.compression);
    let level = if compression == spec.image.compression {
        spec.image.compression_level
    } else {
        compression.default_level()
    };
    let enc = Encoding {
        compression,
        level,
        mtime: epoch,
    };
    let tag = opts.tag.clone().unwrap_or_else(|| spec.image.tag.clone());

    // Build outputs first: each named build is taken from the store, or
    // built (fetching its inputs) if its key is new.
    let mut wanted = std::collections::BTreeSet::new();
    for l in &spec.layers {
        for s in &l.sources {
            if let crate::spec::Source::Tree {
                from_build: Some(b),
                ..
            } = s
            {
                wanted.insert(b.clone());
            }
        }
    }
    let mut builds = Vec::new();
    let mut build_roots = std::collections::BTreeMap::new();
    if !wanted.is_empty() {
        let lock_path = spec.lock.as_ref().expect("checked by the spec parser");
        let lf = crate::lock::LockFile::load(lock_path)?;
        for name in wanted {
            let b = crate::build::ensure(store, &lf, &name, &opts.build, &opts.inputs)?;
            build_roots.insert(name, b.path.join("out"));
            builds.push(b);
        }
    }

    let mut layers = Vec::new();
    for (i, l) in spec.layers.iter().enumerate() {
        let entries = rootfs::collect(l, &build_roots)
            .with_context(|| format!("gathering layer {:?}", l.name))?;
        let key = layer::cache_key(&entries, enc);
        let cached = if opts.use_cache {
            store.cached_layer(&key)
        } else {
            None
        };
        let (blob, was_cached) = match cached {
            Some(b) => (b, true),
            None => {
                let total: u64 = entries.iter().map(|e| e.content_len()).sum();
                let bar = progress_bar(
                    opts.progress,
                    total,
                    format!("layer {}/{} {}", i + 1, spec.layers.len(), l.name),
                );
                let blob = write_into_store(store, &entries, enc, opts.threads, &bar)
                    .with_context(|| format!("writing layer {:?}", l.name))?;
                bar.finish_and_clear();
                store.remember_layer(&key, &blob)?;
                (blob, false)
            }
        };
        layers.push(LayerReport {
            name: l.name.clone(),
            blob,
            cached: was_cached,
        });
    }

    let layout = Layout::create(&opts.out)?;
    for l in &layers {
        layout.put_file(
            &store.blob_path(&l.blob.digest)?,
            &l.blob.digest,
            l.blob.size,
        )?;
    }
    let parts: Vec<(&str, Option<&str>, &LayerBlob)> = layers
        .iter()
        .zip(&spec.layers)
        .map(|(r, s)| (r.name.as_str(), s.comment.as_deref(), &r.blob))
        .collect();
    let mut meta = spec.image.clone();
    meta.tag = tag.clone();
    let docs = oci::image_docs(&meta, &spec.config, epoch, &parts)?;
    layout.put_bytes(&docs.config)?;
    layout.put_bytes(&docs.manifest)?;
    let image = oci::full_name(&spec.image.name, &tag);
    layout.set_tag(
        &docs.manifest_digest,
        docs.manifest.len() as u64,
        &tag,
        &image,
    )?;
    Ok(Report {
        image,
        tag,
        layout: opts.out.clone(),
        manifest_digest: docs.manifest_digest,
        manifest_size: docs.manifest.len() as u64,
        config_digest: docs.config_digest,
        source_date_epoch: epoch,
        builds,
        layers,
    })
}

/// Streams a layer into a temporary file in the store and renames it to its
/// digest: the store never holds a partial blob under a real name.
fn write_into_store(
    store: &Store,
    entries: &[rootfs::Entry],
    enc: Encoding,
    threads: usize,
    bar: &ProgressBar,
) -> Result<LayerBlob> {
    let tmp = fsutil::temp_in(&store.blobs_dir())?;
    let file = tmp.reopen().context("reopening the temporary layer file")?;
    let (w, blob) = layer::write(
        entries,
        enc,
        threads,
        BufWriter::with_capacity(1 << 20, file),
        &|n| bar.inc(n),
    )?;
    w.into_inner().map_err(|e| e.into_error())?;
    let dest = store.blob_path(&blob.digest)?;
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() == blob.size) {
        return Ok(blob); // same bytes already stored; the temp file goes away
    }
    fsutil::commit(tmp, &dest)?;
    Ok(blob)
}

pub fn progress_bar(enabled: bool, total: u64, msg: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar
}
