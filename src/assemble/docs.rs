//! The image's JSON documents (config and manifest) from the spec's image
//! settings and the written layers: where the spec meets the image model.
//!
//! Documents are built with oci-spec types and serialized canonically
//! (`oci::canonical_json`), since oci-spec keeps labels, annotations and
//! exposed ports in HashMaps whose order changes from run to run.

use crate::layer::LayerBlob;
use crate::model::digest::sha256_digest;
use crate::model::{Image, Layer};
use crate::oci::{canonical_json, descriptor};
use crate::spec::{ImageConfig, ImageMeta};
use anyhow::Result;
use oci_spec::image::{
    ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, RootFsBuilder,
};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

/// A written layer as the documents need it.
pub struct LayerPart<'a> {
    pub name: &'a str,
    pub comment: Option<&'a str>,
    pub blob: &'a LayerBlob,
    /// Where the compressed blob is (the store).
    pub path: PathBuf,
}

/// The image value of `layers` (in order) with the spec's settings.
pub fn image(
    meta: &ImageMeta,
    cfg: &ImageConfig,
    epoch: u64,
    full_name: String,
    layers: &[LayerPart],
) -> Result<Image> {
    let created = rfc3339(epoch);
    let config_bytes = config_doc(meta, cfg, &created, layers)?;
    let manifest = manifest_doc(meta, &created, &config_bytes, layers)?;
    let manifest_bytes = canonical_json(&manifest)?;
    let layers = manifest
        .layers()
        .iter()
        .zip(layers)
        .map(|(d, l)| Layer {
            descriptor: d.clone(),
            diff_id: l.blob.diff_id.clone(),
            path: l.path.clone(),
        })
        .collect();
    Ok(Image {
        name: Some(full_name),
        tag: Some(meta.tag.clone()),
        manifest,
        manifest_bytes,
        config_bytes,
        layers,
        referrers: Vec::new(),
    })
}

/// The image config: the spec's runtime settings, the layers' diff_ids and
/// one history entry per layer, all stamped with `created`.
fn config_doc(
    meta: &ImageMeta,
    cfg: &ImageConfig,
    created: &str,
    layers: &[LayerPart],
) -> Result<Vec<u8>> {
    let history = layers
        .iter()
        .map(|l| {
            let mut h = HistoryBuilder::default()
                .created(created.to_string())
                .created_by(format!("mpsi assemble: layer {}", l.name));
            if let Some(c) = l.comment {
                h = h.comment(c.to_string());
            }
            h.build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let diff_ids: Vec<String> = layers.iter().map(|l| l.blob.diff_id.clone()).collect();
    let config = ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(meta.architecture.as_str())
        .os(meta.os.as_str())
        .config(runtime_config(cfg)?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
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
    Ok(serde_json::to_vec(&config)?)
}

/// The runtime part of the config (what a Dockerfile's ENTRYPOINT, CMD,
/// ENV, USER, ... set), from the spec's `[config]`.
fn runtime_config(cfg: &ImageConfig) -> Result<oci_spec::image::Config> {
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
    Ok(c.build()?)
}

/// The manifest: config and layer descriptors and the standard annotations.
fn manifest_doc(
    meta: &ImageMeta,
    created: &str,
    config: &[u8],
    layers: &[LayerPart],
) -> Result<ImageManifest> {
    let config_digest = sha256_digest(config);

    let mut annotations: HashMap<String, String> = meta.annotations.clone().into_iter().collect();
    annotations.insert(
        "org.opencontainers.image.created".into(),
        created.to_string(),
    );
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
    let manifest: ImageManifest = ImageManifestBuilder::default()
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
                .map(|l| {
                    descriptor(
                        MediaType::from(l.blob.media_type.as_str()),
                        &l.blob.digest,
                        l.blob.size,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        )
        .annotations(annotations)
        .build()?;
    Ok(manifest)
}

/// RFC 3339 UTC timestamp of a Unix time.
pub fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_epochs() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
