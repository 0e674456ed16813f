//! `mpsi inspect`: what an image in a layout is made of, verified on the way:
//! every blob is re-hashed and every layer's diff_id is checked against the
//! config while its entries are counted.

use crate::model::digest::HashingReader;
use crate::model::{Image, Layer};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;
use std::io::{self, Read};

#[derive(Serialize)]
pub struct Inspection {
    pub image: Option<String>,
    pub tag: Option<String>,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub created: Option<String>,
    pub platform: String,
    pub config: Value,
    pub annotations: Value,
    pub layers: Vec<LayerSummary>,
    /// Sum of the compressed layer sizes.
    pub total_size: u64,
    /// Artifacts about the image in the layout (its SBOM), blobs verified.
    pub referrers: Vec<ReferrerSummary>,
}

#[derive(Serialize)]
pub struct ReferrerSummary {
    pub digest: String,
    pub artifact_type: String,
    pub size: u64,
}

#[derive(Serialize)]
pub struct LayerSummary {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    pub uncompressed_size: u64,
    pub entries: u64,
    pub created_by: Option<String>,
}

pub fn inspect(img: &Image) -> Result<Inspection> {
    let config: Value =
        serde_json::from_slice(&img.config_bytes).context("parsing the image config")?;
    let history: Vec<Option<String>> = config["history"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|h| h["empty_layer"] != Value::Bool(true))
                .map(|h| h["created_by"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut layers = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let digest = l.digest();
        let (entries, diff_id, uncompressed_size) =
            count_entries(l).with_context(|| format!("reading layer {digest}"))?;
        if diff_id != l.diff_id {
            bail!(
                "layer {} ({digest}) unpacks to {diff_id}, but the config says {}",
                i + 1,
                l.diff_id
            );
        }
        layers.push(LayerSummary {
            media_type: l.media_type(),
            digest,
            size: l.size(),
            diff_id,
            uncompressed_size,
            entries,
            created_by: history.get(i).cloned().flatten(),
        });
    }
    Ok(Inspection {
        image: img.name.clone(),
        tag: img.tag.clone(),
        manifest_digest: img.manifest_digest(),
        manifest_size: img.manifest_bytes.len() as u64,
        config_digest: img.config_digest(),
        created: config["created"].as_str().map(String::from),
        platform: format!(
            "{}/{}",
            config["os"].as_str().unwrap_or("?"),
            config["architecture"].as_str().unwrap_or("?")
        ),
        config: config["config"].clone(),
        annotations: serde_json::to_value(img.manifest.annotations())?,
        total_size: layers.iter().map(|l| l.size).sum(),
        layers,
        referrers: img
            .referrers
            .iter()
            .map(|a| ReferrerSummary {
                digest: a.digest(),
                artifact_type: a.artifact_type.clone(),
                size: a.blobs.iter().map(|(_, b)| b.len() as u64).sum(),
            })
            .collect(),
    })
}

/// Decompresses a layer, counting its tar entries; returns the entry count,
/// the uncompressed digest and size.
fn count_entries(layer: &Layer) -> Result<(u64, String, u64)> {
    // Check the compressed bytes first, so damage is reported as such rather
    // than as whatever the decompressor or tar parser trips over.
    io::copy(&mut layer.open()?, &mut io::sink())?;
    let blob = layer.open()?;
    let media_type = layer.media_type();
    let decoded: Box<dyn Read> = if media_type.ends_with("+gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(blob))
    } else if media_type.ends_with("+zstd") {
        Box::new(zstd::stream::read::Decoder::new(blob)?)
    } else if media_type.ends_with(".tar") || media_type.ends_with("rootfs.diff.tar") {
        Box::new(blob)
    } else {
        bail!("unknown layer media type {media_type}");
    };
    let mut plain = HashingReader::new(decoded);
    let mut entries = 0;
    {
        let mut archive = tar::Archive::new(&mut plain);
        for e in archive.entries()? {
            io::copy(&mut e?, &mut io::sink())?;
            entries += 1;
        }
    }
    io::copy(&mut plain, &mut io::sink())?; // trailing blocks count toward diff_id
    let (diff_id, uncompressed) = plain.finish();
    Ok((entries, diff_id, uncompressed))
}
