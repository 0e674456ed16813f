//! `mpsi export`: an image from a layout as one tar stream.
//!
//! oci-archive is the OCI layout in a tar. docker-archive is the combined
//! form Docker itself writes since 25.0: the same OCI layout plus a
//! `manifest.json` (Config, RepoTags, Layers) pointing into the same blobs,
//! so engines that read only `manifest.json` (Docker 20.10) and those that
//! read `index.json` (containerd, newer Docker) both load it. Entries are
//! sorted and carry fixed metadata, so the archive is reproducible too.

use super::Sink;
use crate::model::digest::HashingWriter;
use crate::model::{Image, Layer, name};
use crate::oci::{self, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::progress::{Reporter, Unit};
use anyhow::{Context, Result, bail};
use oci_spec::image::{ImageIndexBuilder, MediaType};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use tar::{EntryType, Header};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// OCI image layout in a tar (skopeo `oci-archive:`, podman, containerd).
    OciArchive,
    /// OCI layout plus Docker's manifest.json (`docker load`, any version).
    DockerArchive,
}

#[derive(Serialize)]
pub struct ExportReport {
    pub format: ArchiveFormat,
    pub image: Option<String>,
    pub manifest_digest: String,
    pub bytes: u64,
    pub digest: String,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oci-archive" => Ok(ArchiveFormat::OciArchive),
            "docker-archive" => Ok(ArchiveFormat::DockerArchive),
            _ => Err(format!(
                "unknown archive format {s:?} (oci-archive or docker-archive)"
            )),
        }
    }
}

/// Writes the image as one tar stream into `out`.
pub struct ArchiveSink<W: Write> {
    pub format: ArchiveFormat,
    out: Option<W>,
}

impl<W: Write> ArchiveSink<W> {
    pub fn new(format: ArchiveFormat, out: W) -> Self {
        ArchiveSink {
            format,
            out: Some(out),
        }
    }
    /// The writer back, after `send` (to flush it or commit a file).
    pub fn into_inner(self) -> W {
        self.out.expect("send consumed the writer only on error")
    }
}

impl<W: Write> Sink for ArchiveSink<W> {
    type Report = ExportReport;

    fn send(&mut self, img: &Image, reporter: &dyn Reporter) -> Result<ExportReport> {
        let out = self.out.take().context("the archive was already written")?;
        let mut counted = HashingWriter::new(out);
        write_archive(&mut counted, img, self.format, ZstdLayers::Keep, reporter)?;
        let (out, digest, bytes) = counted.finish();
        self.out = Some(out);
        Ok(ExportReport {
            format: self.format,
            image: img.name.clone(),
            manifest_digest: img.manifest_digest(),
            bytes,
            digest,
        })
    }
}

fn blob_name(digest: &str) -> Result<String> {
    Ok(format!(
        "blobs/sha256/{}",
        crate::model::digest::hex_of(digest)?
    ))
}

/// How zstd layers go into a docker-archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZstdLayers {
    /// As they are (engines from Docker 23 on read zstd).
    Keep,
    /// As plain tar, for engines that cannot read zstd (Docker 20.10).
    Decompress,
}

fn is_zstd(l: &Layer) -> bool {
    l.media_type().ends_with("+zstd")
}

/// What one blob entry of the archive holds.
enum Blob<'a> {
    Bytes(&'a [u8]),
    /// The layer blob as stored (verified while it streams).
    Layer(&'a Layer),
    /// The zstd layer decompressed: its content is the diff_id's.
    Plain(&'a Layer),
}

/// Writes the archive. One path for every archive mpsi makes: `export`
/// writes it to a file, the Docker sink into the engine's load request.
///
/// With `ZstdLayers::Decompress` and zstd layers, the docker-archive is
/// Docker's own form only (manifest.json, no OCI index): the plain layers
/// are no longer the blobs the OCI manifest names, and only engines that
/// read manifest.json get that form. Each such layer is named by its
/// diff_id, which is the digest of what the entry holds.
pub fn write_archive<W: Write>(
    out: W,
    img: &Image,
    format: ArchiveFormat,
    zstd: ZstdLayers,
    reporter: &dyn Reporter,
) -> Result<()> {
    let docker_only = format == ArchiveFormat::DockerArchive
        && zstd == ZstdLayers::Decompress
        && img.layers.iter().any(is_zstd);
    let mut tar = tar::Builder::new(out);
    if !docker_only {
        add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add(&mut tar, "index.json", &index_of(img)?)?;
    }
    if format == ArchiveFormat::DockerArchive {
        let docker = serde_json::json!([{
            "Config": blob_name(&img.config_digest())?,
            "RepoTags": img.name.iter().map(|n| name::familiar_name(n)).collect::<Vec<_>>(),
            "Layers": img.layers.iter().map(|l| Ok(layer_blob(l, docker_only)?.0)).collect::<Result<Vec<_>>>()?,
        }]);
        add(&mut tar, "manifest.json", &serde_json::to_vec(&docker)?)?;
    }
    dir(&mut tar, "blobs/")?;
    dir(&mut tar, "blobs/sha256/")?;
    let blobs = blob_entries(img, docker_only)?;
    let task = reporter.task("archive", Some(img.layers_size()), Unit::Bytes);
    for (name, blob) in blobs {
        match blob {
            Blob::Bytes(bytes) => add(&mut tar, &name, bytes)?,
            Blob::Layer(l) => {
                let mut h = header(EntryType::Regular, l.size(), 0o644);
                tar.append_data(&mut h, &name, l.open()?)
                    .with_context(|| format!("adding blob {}", l.digest()))?;
                task.advance(l.size());
            }
            Blob::Plain(l) => {
                add_decompressed(&mut tar, &name, l)?;
                task.advance(l.size());
            }
        }
    }
    task.finish();
    tar.into_inner()?;
    Ok(())
}

/// A layer's entry name, and whether it goes in decompressed.
fn layer_blob(l: &Layer, docker_only: bool) -> Result<(String, bool)> {
    if docker_only && is_zstd(l) {
        Ok((blob_name(&l.diff_id)?, true))
    } else {
        Ok((blob_name(&l.digest())?, false))
    }
}

/// The blob entries in name (digest) order, each once: manifest and config
/// from memory (verified when the image was read), layers from their files.
fn blob_entries(img: &Image, docker_only: bool) -> Result<Vec<(String, Blob<'_>)>> {
    let mut blobs: Vec<(String, Blob)> = Vec::new();
    if !docker_only {
        let manifest = Blob::Bytes(&img.manifest_bytes);
        blobs.push((blob_name(&img.manifest_digest())?, manifest));
    }
    let config = Blob::Bytes(&img.config_bytes);
    blobs.push((blob_name(&img.config_digest())?, config));
    for l in &img.layers {
        let (name, plain) = layer_blob(l, docker_only)?;
        blobs.push((
            name,
            if plain {
                Blob::Plain(l)
            } else {
                Blob::Layer(l)
            },
        ));
    }
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    Ok(blobs)
}

/// A zstd layer as plain tar. A tar entry states its size before its
/// bytes, so the layer is decompressed twice: once to learn its size (and
/// check it against the diff_id), once into the archive. No temp file, and
/// zstd decompresses at several hundred MB/s, so this costs little next to
/// the engine's own work.
fn add_decompressed<W: Write>(tar: &mut tar::Builder<W>, name: &str, l: &Layer) -> Result<()> {
    let what = || format!("decompressing layer {}", l.digest());
    let mut counted = HashingWriter::new(std::io::sink());
    std::io::copy(&mut zstd::Decoder::new(l.open()?)?, &mut counted).with_context(what)?;
    let (_, diff_id, size) = counted.finish();
    if diff_id != l.diff_id {
        bail!(
            "layer {} decompresses to {diff_id}, but the image config says its diff_id is {}",
            l.digest(),
            l.diff_id
        );
    }
    let mut h = header(EntryType::Regular, size, 0o644);
    tar.append_data(&mut h, name, zstd::Decoder::new(l.open()?)?)
        .with_context(what)?;
    Ok(())
}

/// An index with just this image, named as in its layout.
fn index_of(img: &Image) -> Result<Vec<u8>> {
    let mut d = img.manifest_descriptor();
    let mut ann = HashMap::new();
    if let Some(t) = &img.tag {
        ann.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
    }
    if let Some(n) = &img.name {
        ann.insert(ANNOTATION_CONTAINERD_NAME.to_string(), n.clone());
    }
    d.set_annotations((!ann.is_empty()).then_some(ann));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![d])
        .build()?;
    oci::canonical_json(&index)
}

fn header(kind: EntryType, size: u64, mode: u32) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn add<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(EntryType::Regular, bytes.len() as u64, 0o644);
    tar.append_data(&mut h, name, bytes)?;
    Ok(())
}

fn dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = header(EntryType::Directory, 0, 0o755);
    tar.append_data(&mut h, name, std::io::empty())?;
    Ok(())
}
