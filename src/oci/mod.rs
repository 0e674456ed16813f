//! OCI image layout on disk and the image's JSON documents.
//!
//! Documents are built with oci-spec types and serialized canonically
//! (sorted keys, no whitespace): oci-spec keeps labels, annotations and
//! exposed ports in HashMaps, whose order changes from run to run, so its
//! own serializer cannot give reproducible digests. Going through
//! `serde_json::Value` (a BTreeMap) sorts every object.
//!
//! Write order makes interruption safe: blobs first (each atomically), the
//! index last (atomically), so an index never names a missing blob.

use crate::model::digest::{HashingReader, hex_of, sha256_digest};
use crate::fsutil;
use crate::layer::LayerBlob;
use crate::spec::{ImageConfig, ImageMeta};
use anyhow::{Context, Result, bail};
use oci_spec::image::{
    ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, RootFsBuilder,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Sorted-key, compact JSON: the same document always has the same bytes.
pub fn canonical_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(v)?;
    Ok(serde_json::to_vec(&value)?)
}

/// `name:tag` as containerd and registries spell it in full
/// (`mariadb-pageserver` -> `docker.io/library/mariadb-pageserver:latest`).
pub fn full_name(name: &str, tag: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, name.contains('/')) {
        (true, _) => format!("{name}:{tag}"),
        (false, true) => format!("docker.io/{name}:{tag}"),
        (false, false) => format!("docker.io/library/{name}:{tag}"),
    }
}

/// The short form Docker shows (`docker.io/library/x:t` -> `x:t`).
pub fn familiar_name(full: &str) -> String {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full)
        .to_string()
}

/// RFC 3339 UTC timestamp of a Unix time.
pub fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .to_string()
}

/// The serialized config and manifest of an image.
pub struct ImageDocs {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

/// Builds the image config and manifest for `layers` (in order).
pub fn image_docs(
    meta: &ImageMeta,
    cfg: &ImageConfig,
    epoch: u64,
    layers: &[(&str, Option<&str>, &LayerBlob)],
) -> Result<ImageDocs> {
    let created = rfc3339(epoch);
    let mut c = ConfigBuilder::default();
    if let Some(v) = &cfg.user {
        c = c.user(v.clone());
    }
    if !cfg.exposed_ports.is_empty() {
        c = c.exposed_ports(cfg.exposed_ports.clone());
    }
    if !cfg.env.is_empty() {
        c = c.env(cfg.env.clone());
    }
    if let Some(v) = &cfg.entrypoint {
        c = c.entrypoint(v.clone());
    }
    if let Some(v) = &cfg.cmd {
        c = c.cmd(v.clone());
    }
    if !cfg.volumes.is_empty() {
        c = c.volumes(cfg.volumes.clone());
    }
    if let Some(v) = &cfg.working_dir {
        c = c.working_dir(v.clone());
    }
    if !cfg.labels.is_empty() {
        c = c.labels(cfg.labels.clone().into_iter().collect::<HashMap<_, _>>());
    }
    if let Some(v) = &cfg.stop_signal {
        c = c.stop_signal(v.clone());
    }
    let history = layers
        .iter()
        .map(|(name, comment, _)| {
            let mut h = HistoryBuilder::default()
                .created(created.clone())
                .created_by(format!("mpsi assemble: layer {name}"));
            if let Some(c) = comment {
                h = h.comment(c.to_string());
            }
            h.build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(meta.architecture.as_str())
        .os(meta.os.as_str())
        .config(c.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(
                    layers
                        .iter()
                        .map(|(_, _, l)| l.diff_id.clone())
                        .collect::<Vec<_>>(),
                )
                .build()?,
        )
        .history(history)
        .build()?;
    let mut config = serde_json::to_value(&config)?;
    if let Some(hc) = &cfg.healthcheck {
        // Docker's field, outside the OCI config schema; Docker and Podman
        // read it from here.
        let mut o = serde_json::Map::new();
        o.insert("Test".into(), hc.test.clone().into());
        for (k, v) in [
            ("Interval", hc.interval),
            ("Timeout", hc.timeout),
            ("StartPeriod", hc.start_period),
            ("StartInterval", hc.start_interval),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), v.into());
            }
        }
        if let Some(r) = hc.retries {
            o.insert("Retries".into(), r.into());
        }
        config["config"]["Healthcheck"] = Value::Object(o);
    }
    let config = serde_json::to_vec(&config)?;
    let config_digest = sha256_digest(&config);

    let mut annotations: HashMap<String, String> = meta.annotations.clone().into_iter().collect();
    annotations.insert("org.opencontainers.image.created".into(), created);
    annotations.insert(
        "org.opencontainers.image.version".into(),
        meta.version.clone().unwrap_or_else(|| meta.tag.clone()),
    );
    if let Some(s) = &meta.source {
        annotations.insert("org.opencontainers.image.source".into(), s.clone());
    }
    if let Some(r) = &meta.revision {
        annotations.insert("org.opencontainers.image.revision".into(), r.clone());
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config.len() as u64,
        )?)
        .layers(
            layers
                .iter()
                .map(|(_, _, l)| {
                    descriptor(MediaType::from(l.media_type.as_str()), &l.digest, l.size)
                })
                .collect::<Result<Vec<_>>>()?,
        )
        .annotations(annotations)
        .build()?;
    let manifest = canonical_json(&manifest)?;
    let manifest_digest = sha256_digest(&manifest);
    Ok(ImageDocs {
        config,
        config_digest,
        manifest,
        manifest_digest,
    })
}

pub fn descriptor(media_type: MediaType, digest: &str, size: u64) -> Result<Descriptor> {
    Ok(DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest.parse::<oci_spec::image::Digest>()?)
        .size(size)
        .build()?)
}

/// An OCI image layout directory.
pub struct Layout {
    root: PathBuf,
}

/// An image found in a layout by its tag.
pub struct Resolved {
    pub descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub tag: Option<String>,
    pub full_name: Option<String>,
}

impl Layout {
    /// Opens `root` as a layout, creating it if needed.
    pub fn create(root: &Path) -> Result<Layout> {
        if root.exists()
            && !root.join("oci-layout").exists()
            && fs::read_dir(root)?.next().is_some()
        {
            bail!(
                "{} exists and is not an OCI image layout; choose an empty or new directory for -o",
                root.display()
            );
        }
        fs::create_dir_all(root.join("blobs/sha256"))
            .with_context(|| format!("creating {}", root.display()))?;
        if !root.join("oci-layout").exists() {
            fsutil::write_atomic(&root.join("oci-layout"), OCI_LAYOUT)?;
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing layout.
    pub fn open(root: &Path) -> Result<Layout> {
        if !root.join("oci-layout").is_file() {
            bail!(
                "{} is not an OCI image layout (no oci-layout file); make one with `mpsi assemble -o {}`",
                root.display(),
                root.display()
            );
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    fn has_blob(&self, digest: &str, size: u64) -> bool {
        self.blob_path(digest)
            .ok()
            .and_then(|p| fs::metadata(p).ok())
            .is_some_and(|m| m.len() == size)
    }

    /// Stores bytes as a blob (skipped if already there); returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        if !self.has_blob(&digest, bytes.len() as u64) {
            fsutil::write_atomic(&self.blob_path(&digest)?, bytes)?;
        }
        Ok(digest)
    }

    /// Stores the blob at `src` (already verified as `digest`), skipping
    /// blobs the layout has.
    pub fn put_file(&self, src: &Path, digest: &str, size: u64) -> Result<()> {
        if self.has_blob(digest, size) {
            return Ok(());
        }
        let dest = self.blob_path(digest)?;
        let _ = fs::remove_file(&dest); // a partial or wrong-size file
        fsutil::link_or_copy(src, &dest)
    }

    /// Reads a blob and checks it against its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path)
            .with_context(|| format!("reading blob {digest} at {}", path.display()))?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            bail!(
                "blob {} is corrupt: its content hashes to {actual}",
                path.display()
            );
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming; the caller verifies with the returned reader.
    pub fn open_blob(&self, digest: &str) -> Result<HashingReader<fs::File>> {
        let path = self.blob_path(digest)?;
        let f = fs::File::open(&path)
            .with_context(|| format!("opening blob {digest} at {}", path.display()))?;
        Ok(HashingReader::new(f))
    }

    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ImageIndexBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageIndex)
                .manifests(Vec::<Descriptor>::new())
                .build()?),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Points `tag` at the manifest (replacing what it named before), keeping
    /// the layout's other images.
    pub fn set_tag(
        &self,
        manifest_digest: &str,
        manifest_size: u64,
        tag: &str,
        full_name: &str,
    ) -> Result<()> {
        let mut index = self.index()?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_REF_NAME))
                    .map(String::as_str)
                    != Some(tag)
            })
            .cloned()
            .collect();
        let mut d = descriptor(MediaType::ImageManifest, manifest_digest, manifest_size)?;
        d.set_annotations(Some(HashMap::from([
            (ANNOTATION_REF_NAME.to_string(), tag.to_string()),
            (
                ANNOTATION_CONTAINERD_NAME.to_string(),
                full_name.to_string(),
            ),
        ])));
        manifests.push(d);
        index.set_manifests(manifests);
        index.set_media_type(Some(MediaType::ImageIndex));
        fsutil::write_atomic(&self.root.join("index.json"), &canonical_json(&index)?)
    }

    /// Finds an image by tag; with no tag, the layout must hold exactly one.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Resolved> {
        let index = self.index()?;
        let tag_of = |d: &Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .cloned()
        };
        let found: Vec<&Descriptor> = match tag {
            Some(t) => index
                .manifests()
                .iter()
                .filter(|d| tag_of(d).as_deref() == Some(t))
                .collect(),
            None => index.manifests().iter().collect(),
        };
        let d = match found.as_slice() {
            [d] => (*d).clone(),
            [] => {
                let tags: Vec<String> = index.manifests().iter().filter_map(tag_of).collect();
                bail!(
                    "no image {} in {} (it has: {})",
                    tag.map(|t| format!("tagged {t:?}")).unwrap_or_default(),
                    self.root.display(),
                    if tags.is_empty() {
                        "none".into()
                    } else {
                        tags.join(", ")
                    }
                )
            }
            _ => {
                let tags: Vec<String> = index.manifests().iter().filter_map(tag_of).collect();
                bail!(
                    "{} holds several images ({}); name one with --tag",
                    self.root.display(),
                    tags.join(", ")
                )
            }
        };
        let manifest_bytes = self.read_blob(d.digest().as_ref())?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).context("parsing the image manifest")?;
        let config_bytes = self.read_blob(manifest.config().digest().as_ref())?;
        let annotations = d.annotations().clone().unwrap_or_default();
        Ok(Resolved {
            tag: annotations.get(ANNOTATION_REF_NAME).cloned(),
            full_name: annotations.get(ANNOTATION_CONTAINERD_NAME).cloned(),
            descriptor: d,
            manifest,
            manifest_bytes,
            config_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_like_docker() {
        assert_eq!(
            full_name("mariadb-pageserver", "latest"),
            "docker.io/library/mariadb-pageserver:latest"
        );
        assert_eq!(full_name("acme/db", "1"), "docker.io/acme/db:1");
        assert_eq!(full_name("localhost:5000/db", "1"), "localhost:5000/db:1");
        assert_eq!(full_name("ghcr.io/acme/db", "1"), "ghcr.io/acme/db:1");
        assert_eq!(familiar_name("docker.io/library/db:1"), "db:1");
        assert_eq!(familiar_name("localhost:5000/db:1"), "localhost:5000/db:1");
    }

    #[test]
    fn canonical_json_sorts_hashmap_keys() {
        let m: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
        let text = String::from_utf8(canonical_json(&m).unwrap()).unwrap();
        let keys: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn rfc3339_of_known_epochs() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
