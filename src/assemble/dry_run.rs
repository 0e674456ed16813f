//! `mpsi assemble --dry-run`: what an assemble would fetch, build, reuse and
//! write, without doing any of it. For a rebuild it names the key inputs
//! that changed since the newest build of the same name in the store.

use super::{Options, clock, encoding, wanted_builds};
use crate::build::{self, Decision};
use crate::layer;
use crate::lock::LockFile;
use crate::rootfs;
use crate::spec::{Source, Spec};
use crate::store::Store;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Serialize)]
pub struct DryRun {
    pub spec: PathBuf,
    pub source_date_epoch: u64,
    pub builds: Vec<Decision>,
    pub layers: Vec<LayerDecision>,
}

#[derive(Serialize)]
pub struct LayerDecision {
    pub name: String,
    /// The store's layer cache has it: it is reused, not rewritten.
    pub cached: bool,
    pub because: Option<String>,
}

pub fn run(spec: &Spec, store: &Store, opts: &Options) -> Result<DryRun> {
    let lock = spec.lock.as_deref().map(LockFile::load).transpose()?;
    let epoch = clock(spec, lock.as_ref(), opts.source_date_epoch)?;
    let build_opts = build::Options {
        source_date_epoch: epoch,
        ..opts.build.clone()
    };
    let builds = match &lock {
        Some(lf) => wanted_builds(spec)
            .iter()
            .map(|name| build::decide(store, lf, name, &build_opts))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    // The runtime packages, if the store has them all (else None).
    let debs: Option<Vec<PathBuf>> = match &lock {
        Some(lf) => lf
            .lock
            .runtime
            .packages
            .iter()
            .map(|p| store.input(&p.input()))
            .collect(),
        None => Some(Vec::new()),
    };
    let layers = decide_layers(spec, store, opts, epoch, &builds, debs.as_deref())?;
    Ok(DryRun {
        spec: spec.file.clone(),
        source_date_epoch: epoch,
        builds,
        layers,
    })
}

fn decide_layers(
    spec: &Spec,
    store: &Store,
    opts: &Options,
    epoch: u64,
    builds: &[Decision],
    debs: Option<&[PathBuf]>,
) -> Result<Vec<LayerDecision>> {
    let enc = encoding(spec, opts.compression, epoch);
    let roots: BTreeMap<String, PathBuf> = builds
        .iter()
        .filter(|b| b.cached)
        .map(|b| (b.name.clone(), store.build_path(&b.key).join("out")))
        .collect();
    let mut out = Vec::new();
    for l in &spec.layers {
        let rebuilt = l.sources.iter().find_map(|s| match s {
            Source::Tree {
                from_build: Some(b),
                ..
            } if !roots.contains_key(b) => Some(b.clone()),
            _ => None,
        });
        let packages = l
            .sources
            .iter()
            .any(|s| matches!(s, Source::Packages { .. }));
        let decision = match (rebuilt, debs) {
            (Some(b), _) => LayerDecision {
                name: l.name.clone(),
                cached: false,
                because: Some(format!("it takes files from build {b:?}, which will be rebuilt")),
            },
            (None, None) if packages => LayerDecision {
                name: l.name.clone(),
                cached: false,
                because: Some("it takes the runtime packages, which are not all in the store yet (mpsi fetch)".into()),
            },
            (None, debs) => {
                let mut entries = rootfs::collect(l, &roots, debs.unwrap_or_default(), epoch)
                    .with_context(|| format!("gathering layer {:?}", l.name))?;
                // As the assemble writes it (the image-wide checks are its own).
                rootfs::permissions::apply(
                    &l.name,
                    &mut entries,
                    &spec.image.permissions,
                    &mut Default::default(),
                )?;
                let cached = opts.use_cache && store.cached_layer(&layer::cache_key(&entries, enc)).is_some();
                LayerDecision {
                    name: l.name.clone(),
                    cached,
                    because: (!cached).then(|| "its files or settings changed since it was last written".into()),
                }
            }
        };
        out.push(decision);
    }
    Ok(out)
}
