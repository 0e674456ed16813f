//! `mpsi assemble`: spec (+ lock) -> builds -> rootfs trees -> layers (cached
//! in the store) -> the image value (with its SBOM as a referrer) -> the
//! layout sink, and the SBOM next to the layout.

pub mod docs;
pub mod dry_run;

use crate::build::{self, Built};
use crate::elf;
use crate::fetch::Origin;
use crate::fsutil;
use crate::layer::compress::Compression;
use crate::layer::{self, Encoding, LayerBlob};
use crate::lock::LockFile;
use crate::model::{Artifact, ArtifactLayer, Image, name};
use crate::progress::{Reporter, Task, Unit};
use crate::rootfs;
use crate::rootfs::permissions::{self, PermissionReport};
use crate::sbom;
use crate::sink::Sink;
use crate::sink::layout::LayoutSink;
use crate::spec::{Source, Spec};
use crate::store::Store;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

pub struct Options {
    pub out: PathBuf,
    pub tag: Option<String>,
    /// Image name instead of the spec's.
    pub name: Option<String>,
    pub compression: Option<Compression>,
    /// Reuse layers whose inputs are unchanged.
    pub use_cache: bool,
    pub threads: usize,
    /// SOURCE_DATE_EPOCH from the environment, which wins over the lock and
    /// the spec (see `clock`).
    pub source_date_epoch: Option<u64>,
    /// Where build inputs missing from the store may come from.
    pub inputs: Origin,
    pub build: build::Options,
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
    /// The SPDX SBOM, written next to the layout (`<out>.spdx.json`).
    pub sbom: PathBuf,
    /// The digest of the OCI artifact carrying the SBOM, whose subject is
    /// the image manifest.
    pub sbom_artifact: String,
    /// Build outputs the layers take files from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<Built>,
    /// The ELF closure check over the merged layers, or why it was skipped.
    pub elf_check: elf::ElfCheck,
    /// Setuid/setgid and world-writable bits dropped from package files,
    /// and the exceptions the spec allows.
    pub permissions: rootfs::permissions::PermissionReport,
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

/// The one clock of an assemble, stamping builds, layer entries and the
/// image alike: SOURCE_DATE_EPOCH from the environment, else the lock's
/// `source_date_epoch` when the spec names a lock, else the spec's
/// `image.source_date_epoch`.
pub fn clock(spec: &Spec, lock: Option<&LockFile>, env: Option<u64>) -> Result<u64> {
    if let Some(e) = env {
        return Ok(e);
    }
    if let Some(lf) = lock {
        return Ok(lf.lock.source_date_epoch);
    }
    u64::try_from(spec.image.source_date_epoch).with_context(|| {
        format!(
            "{}: image.source_date_epoch must not be negative",
            spec.file.display()
        )
    })
}

pub fn run(spec: &Spec, store: &Store, opts: &Options, reporter: &dyn Reporter) -> Result<Report> {
    let lock = spec.lock.as_deref().map(LockFile::load).transpose()?;
    let epoch = clock(spec, lock.as_ref(), opts.source_date_epoch)?;
    let enc = encoding(spec, opts.compression, epoch);
    let tag = opts.tag.clone().unwrap_or_else(|| spec.image.tag.clone());

    let build_opts = build::Options {
        source_date_epoch: epoch,
        ..opts.build.clone()
    };
    let builds = match &lock {
        Some(lf) => ensure_builds(spec, lf, store, &build_opts, &opts.inputs, reporter)?,
        None => Vec::new(),
    };
    let roots: BTreeMap<String, PathBuf> = builds
        .iter()
        .map(|b| (b.name.clone(), b.path.join("out")))
        .collect();
    let debs = match &lock {
        Some(lf) if wants_packages(spec) => ensure_packages(lf, store, &opts.inputs, reporter)?,
        _ => Vec::new(),
    };
    let (gathered, permissions) = gather(spec, &roots, &debs, epoch)?;
    let elf_check = elf::check_layers(&gathered, elf_skip(spec), reporter)?;
    let layers = write_layers(spec, store, opts, enc, &gathered, reporter)?;

    let name = opts.name.as_deref().unwrap_or(&spec.image.name);
    let mut image = image_of(spec, store, name, &tag, epoch, &layers)?;
    let sbom_bytes = sbom_of(spec, lock.as_ref(), &image, epoch)?;
    let artifact = sbom_artifact(&image, sbom_bytes.clone(), epoch)?;
    let sbom_artifact = artifact.digest();
    image.referrers.push(artifact);
    LayoutSink {
        root: opts.out.clone(),
    }
    .send(&image, reporter)?;
    let sbom_path = sbom_path(&opts.out)?;
    write_sbom(&sbom_path, &sbom_bytes)
        .with_context(|| format!("writing the SBOM {}", sbom_path.display()))?;
    Ok(Report {
        image: image.name.clone().unwrap_or_default(),
        tag,
        layout: opts.out.clone(),
        manifest_digest: image.manifest_digest(),
        manifest_size: image.manifest_bytes.len() as u64,
        config_digest: image.config_digest(),
        source_date_epoch: epoch,
        sbom: sbom_path,
        sbom_artifact,
        builds,
        elf_check,
        permissions,
        layers,
    })
}

/// Where the SBOM goes: next to the layout directory, named after it
/// (`out/oci` -> `out/oci.spdx.json`), outside the layout, which holds
/// only what the OCI image-layout spec names.
pub fn sbom_path(out: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(out)
        .with_context(|| format!("resolving the layout path {}", out.display()))?;
    let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
        anyhow::bail!(
            "the layout {} has no parent directory to write its SBOM into; choose another -o",
            out.display()
        );
    };
    let mut file = name.to_os_string();
    file.push(".spdx.json");
    Ok(dir.join(file))
}

/// Writes the SBOM atomically, readable by all (it is for auditors and
/// scanners, and holds nothing secret).
fn write_sbom(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = fsutil::temp_in(fsutil::parent_dir(path))?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    fsutil::commit(tmp, path)
}

/// The SPDX document of the image: the lock's runtime packages (when a
/// layer takes them) and the source and patches of each build it uses.
fn sbom_of(spec: &Spec, lock: Option<&LockFile>, image: &Image, epoch: u64) -> Result<Vec<u8>> {
    let full = image.name.clone().unwrap_or_default();
    let tag = image.tag.clone().unwrap_or_default();
    let repository = full
        .strip_suffix(&format!(":{tag}"))
        .unwrap_or(&full)
        .to_string();
    let mut contents = sbom::Contents {
        packages: &[],
        builds: Vec::new(),
    };
    if let Some(lf) = lock {
        if wants_packages(spec) {
            contents.packages = &lf.lock.runtime.packages;
        }
        for name in wanted_builds(spec) {
            let (name, b) = lf
                .lock
                .build
                .get_key_value(&name)
                .with_context(|| format!("{}: no [build.{name}]", lf.path.display()))?;
            contents.builds.push(sbom::BuildInputs {
                name,
                source: lf.input(&b.source)?,
                patches: &b.patches,
            });
        }
    }
    let subject = sbom::Subject {
        repository: &repository,
        tag: &tag,
        manifest_digest: &image.manifest_digest(),
        epoch,
    };
    sbom::document(&subject, &contents)
}

/// The SBOM as an OCI 1.1 artifact about the image manifest.
fn sbom_artifact(image: &Image, sbom: Vec<u8>, epoch: u64) -> Result<Artifact> {
    let created = docs::rfc3339(epoch);
    Artifact::new(
        image.manifest_descriptor(),
        sbom::MEDIA_TYPE,
        vec![ArtifactLayer {
            media_type: sbom::MEDIA_TYPE.into(),
            bytes: sbom,
            annotations: BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                sbom::FILE_NAME.to_string(),
            )]),
        }],
        BTreeMap::from([("org.opencontainers.image.created".to_string(), created)]),
    )
}

/// Every layer's entries, in order, checked against the declared accounts
/// and held to the permission policy: the checks see the whole image before
/// any layer is written (a cached layer is gathered all the same).
fn gather(
    spec: &Spec,
    roots: &BTreeMap<String, PathBuf>,
    debs: &[PathBuf],
    epoch: u64,
) -> Result<(Vec<Vec<rootfs::Entry>>, PermissionReport)> {
    let mut layers = spec
        .layers
        .iter()
        .map(|l| {
            rootfs::collect(l, roots, debs, epoch)
                .with_context(|| format!("gathering layer {:?}", l.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<&str> = spec.layers.iter().map(|l| l.name.as_str()).collect();
    rootfs::accounts::check(spec.accounts(), &names, &layers)?;
    let mut report = PermissionReport::default();
    for (l, entries) in spec.layers.iter().zip(&mut layers) {
        permissions::apply(&l.name, entries, &spec.image.permissions, &mut report)?;
    }
    permissions::check_exceptions(&spec.file, &spec.image.permissions, &report)?;
    Ok((layers, report))
}

/// Why the ELF check is off for this spec, if it is.
fn elf_skip(spec: &Spec) -> Option<String> {
    (!spec.image.check_elf).then(|| {
        format!(
            "image.check_elf = false in {} (see the comment there)",
            spec.file.display()
        )
    })
}

/// The spec's compression, or the one asked for (at its default level).
pub fn encoding(spec: &Spec, asked: Option<Compression>, epoch: u64) -> Encoding {
    let compression = asked.unwrap_or(spec.image.compression);
    let level = if compression == spec.image.compression {
        spec.image.compression_level
    } else {
        compression.default_level()
    };
    Encoding {
        compression,
        level,
        mtime: epoch,
    }
}

/// The builds the spec's layers take files from, by name.
pub fn wanted_builds(spec: &Spec) -> BTreeSet<String> {
    spec.layers
        .iter()
        .flat_map(|l| &l.sources)
        .filter_map(|s| match s {
            Source::Tree {
                from_build: Some(b),
                ..
            } => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// Whether a layer takes the lock's runtime packages.
pub fn wants_packages(spec: &Spec) -> bool {
    spec.layers
        .iter()
        .flat_map(|l| &l.sources)
        .any(|s| matches!(s, Source::Packages { .. }))
}

/// The lock's runtime packages (a `[[layer.packages]]` source needs them),
/// as `.deb` files in the store, fetched from `origin` if missing.
fn ensure_packages(
    lf: &LockFile,
    store: &Store,
    origin: &Origin,
    reporter: &dyn Reporter,
) -> Result<Vec<PathBuf>> {
    let pins = &lf.lock.runtime.packages;
    if pins.is_empty() {
        return Err(crate::lock::LockError::Invalid {
            file: lf.path.clone(),
            message: "a layer takes the runtime packages, but the lock pins none: \
set `roots` under [runtime] and run `mpsi lock --runtime`"
                .into(),
        }
        .into());
    }
    let inputs: Vec<_> = pins.iter().map(|p| p.input()).collect();
    let refs: Vec<_> = inputs.iter().collect();
    crate::fetch::Fetcher::new(store, reporter).ensure(&refs, origin)?;
    inputs
        .iter()
        .map(|i| {
            store
                .input(i)
                .with_context(|| format!("{} vanished from the store", i.file))
        })
        .collect()
}

/// Each named build, taken from the store or built (fetching its inputs)
/// if its key is new.
fn ensure_builds(
    spec: &Spec,
    lf: &LockFile,
    store: &Store,
    opts: &build::Options,
    inputs: &Origin,
    reporter: &dyn Reporter,
) -> Result<Vec<Built>> {
    wanted_builds(spec)
        .iter()
        .map(|name| build::ensure(store, lf, name, opts, inputs, reporter))
        .collect()
}

fn write_layers(
    spec: &Spec,
    store: &Store,
    opts: &Options,
    enc: Encoding,
    gathered: &[Vec<rootfs::Entry>],
    reporter: &dyn Reporter,
) -> Result<Vec<LayerReport>> {
    let mut layers = Vec::new();
    for (i, (l, entries)) in spec.layers.iter().zip(gathered).enumerate() {
        let key = layer::cache_key(entries, enc);
        let cached = if opts.use_cache {
            store.cached_layer(&key)
        } else {
            None
        };
        let (blob, was_cached) = match cached {
            Some(b) => (b, true),
            None => {
                let total: u64 = entries.iter().map(|e| e.content_len()).sum();
                let label = format!("layer {}/{} {}", i + 1, spec.layers.len(), l.name);
                let task = reporter.task(&label, Some(total), Unit::Bytes);
                let blob = write_into_store(store, entries, enc, opts.threads, task.as_ref())
                    .with_context(|| format!("writing layer {:?}", l.name))?;
                task.finish();
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
    Ok(layers)
}

fn image_of(
    spec: &Spec,
    store: &Store,
    name: &str,
    tag: &str,
    epoch: u64,
    layers: &[LayerReport],
) -> Result<Image> {
    let parts = layers
        .iter()
        .zip(&spec.layers)
        .map(|(r, s)| {
            Ok(docs::LayerPart {
                name: &r.name,
                comment: s.comment.as_deref(),
                blob: &r.blob,
                path: store.blob_path(&r.blob.digest)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = spec.image.clone();
    meta.tag = tag.to_string();
    docs::image(
        &meta,
        &spec.config,
        epoch,
        name::full_name(name, tag),
        &parts,
    )
}

/// Streams a layer into a temporary file in the store and renames it to its
/// digest: the store never holds a partial blob under a real name.
/// (A miss may find a blob of that digest already there: it was changed
/// since the store wrote it, or another key made it; either way it is
/// replaced by these verified bytes.)
fn write_into_store(
    store: &Store,
    entries: &[rootfs::Entry],
    enc: Encoding,
    threads: usize,
    task: &dyn Task,
) -> Result<LayerBlob> {
    let tmp = fsutil::temp_in(&store.blobs_dir())?;
    let file = tmp.reopen().context("reopening the temporary layer file")?;
    let (w, blob) = layer::write(
        entries,
        enc,
        threads,
        BufWriter::with_capacity(1 << 20, file),
        &|n| task.advance(n),
    )?;
    w.into_inner().map_err(|e| e.into_error())?;
    store.commit_blob(tmp, &blob.digest)?;
    Ok(blob)
}
