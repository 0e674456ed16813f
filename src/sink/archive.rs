//! `mpsi export`: an image from a layout as one tar stream.
//!
//! oci-archive is the OCI layout in a tar. docker-archive is the combined
//! form Docker itself writes since 25.0: the same OCI layout plus a
//! `manifest.json` (Config, RepoTags, Layers) pointing into the same blobs,
//! so engines that read only `manifest.json` (Docker 20.10) and those that
//! read `index.json` (containerd, newer Docker) both load it. Entries are
//! sorted and carry fixed metadata, so the archive is reproducible too.

use crate::model::digest::HashingWriter;
use crate::oci::{self, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Layout};
use anyhow::{Context, Result};
use oci_spec::image::{ImageIndexBuilder, MediaType};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use tar::{EntryType, Header};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
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

pub fn export<W: Write>(
    layout: &Layout,
    tag: Option<&str>,
    format: ArchiveFormat,
    out: W,
) -> Result<(W, ExportReport)> {
    let img = layout.resolve(tag)?;
    let mut counted = HashingWriter::new(out);
    {
        let mut tar = tar::Builder::new(&mut counted);
        add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;

        // An index with just this image, named as in the source layout.
        let mut d = img.descriptor.clone();
        let mut ann = HashMap::new();
        if let Some(t) = &img.tag {
            ann.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
        }
        if let Some(n) = &img.full_name {
            ann.insert(ANNOTATION_CONTAINERD_NAME.to_string(), n.clone());
        }
        d.set_annotations((!ann.is_empty()).then_some(ann));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![d])
            .build()?;
        add(&mut tar, "index.json", &oci::canonical_json(&index)?)?;

        let blob_name = |digest: &str| -> Result<String> {
            Ok(format!("blobs/sha256/{}", crate::model::digest::hex_of(digest)?))
        };
        if format == ArchiveFormat::DockerArchive {
            let docker = serde_json::json!([{
                "Config": blob_name(img.manifest.config().digest().as_ref())?,
                "RepoTags": img.full_name.iter().map(|n| oci::familiar_name(n)).collect::<Vec<_>>(),
                "Layers": img.manifest.layers().iter().map(|l| blob_name(l.digest().as_ref())).collect::<Result<Vec<_>>>()?,
            }]);
            add(&mut tar, "manifest.json", &serde_json::to_vec(&docker)?)?;
        }

        dir(&mut tar, "blobs/")?;
        dir(&mut tar, "blobs/sha256/")?;
        let mut blobs: Vec<(String, u64)> = vec![
            (img.descriptor.digest().to_string(), img.descriptor.size()),
            (
                img.manifest.config().digest().to_string(),
                img.manifest.config().size(),
            ),
        ];
        blobs.extend(
            img.manifest
                .layers()
                .iter()
                .map(|l| (l.digest().to_string(), l.size())),
        );
        blobs.sort();
        blobs.dedup();
        for (digest, size) in blobs {
            let path = layout.blob_path(&digest)?;
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening blob {}", path.display()))?;
            let mut h = header(EntryType::Regular, size, 0o644);
            tar.append_data(&mut h, blob_name(&digest)?, std::io::Read::take(file, size))
                .with_context(|| format!("adding blob {digest}"))?;
        }
        tar.finish()?;
    }
    let (out, digest, bytes) = counted.finish();
    Ok((
        out,
        ExportReport {
            format,
            image: img.full_name.clone(),
            manifest_digest: img.descriptor.digest().to_string(),
            bytes,
            digest,
        },
    ))
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
