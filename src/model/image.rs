//! The image value: what assembly produces and every sink consumes.
//!
//! An `Image` holds its manifest and config as bytes (they are small and
//! their digests are their identity) and its layers as descriptors with a
//! file to read each from (the store after an assemble, the layout's
//! `blobs/` after a read). Every layer read goes through `VerifiedReader`,
//! so a truncated or edited blob is an error naming its digest, never bytes
//! passed on as if they were the image.

use super::digest::sha256_digest;
use anyhow::{Context, Result, bail};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

/// What a written layer is, as the image config and manifest need it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerBlob {
    pub media_type: String,
    /// Digest of the compressed blob.
    pub digest: String,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub uncompressed_size: u64,
    pub entries: usize,
}

/// One layer: its descriptor in the manifest, its uncompressed digest, and
/// where its compressed bytes are.
#[derive(Clone, Debug)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: String,
    pub path: PathBuf,
}

impl Layer {
    pub fn digest(&self) -> String {
        self.descriptor.digest().to_string()
    }
    pub fn size(&self) -> u64 {
        self.descriptor.size()
    }
    pub fn media_type(&self) -> String {
        self.descriptor.media_type().to_string()
    }
    /// The compressed blob, verified against its digest and size as it is read.
    pub fn open(&self) -> io::Result<VerifiedReader<File>> {
        let f = File::open(&self.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "opening blob {} at {}: {e}",
                    self.digest(),
                    self.path.display()
                ),
            )
        })?;
        Ok(VerifiedReader::new(f, self.digest(), self.size()))
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    /// Full name with tag, as containerd spells it
    /// (`docker.io/library/mariadb-pageserver:latest`), when the image has one.
    pub name: Option<String>,
    /// The tag the image carries in its layout (`org.opencontainers.image.ref.name`).
    pub tag: Option<String>,
    pub manifest: ImageManifest,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Layer>,
    /// OCI 1.1 artifacts whose `subject` is this image's manifest (its
    /// SBOM), sent along by the sinks that can hold them.
    pub referrers: Vec<Artifact>,
}

impl Image {
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest_bytes)
    }
    pub fn config_digest(&self) -> String {
        self.manifest.config().digest().to_string()
    }
    /// The manifest's own descriptor (what an index or a registry tag points at).
    pub fn manifest_descriptor(&self) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(
                self.manifest
                    .media_type()
                    .clone()
                    .unwrap_or(MediaType::ImageManifest),
            )
            .digest(
                self.manifest_digest()
                    .parse::<oci_spec::image::Digest>()
                    .expect("sha256 digests parse"),
            )
            .size(self.manifest_bytes.len() as u64)
            .build()
            .expect("all descriptor fields are set")
    }
    /// Total compressed size of the layers.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(Layer::size).sum()
    }
}

/// The OCI 1.1 empty config of an artifact: `{}`.
pub const EMPTY_JSON: &[u8] = b"{}";

/// An OCI 1.1 artifact: an image manifest with an `artifactType`, the empty
/// config, its content as layers and the image it is about as `subject`.
/// Artifacts are small documents (an SBOM, a signature), so their blobs are
/// held in memory.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub artifact_type: String,
    pub manifest: ImageManifest,
    pub manifest_bytes: Vec<u8>,
    /// The empty config and the layers, each as (digest, bytes).
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// One layer of an artifact to build.
pub struct ArtifactLayer {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

impl Artifact {
    /// Builds the artifact manifest (canonical JSON, so the same content
    /// gives the same digest) about `subject`.
    pub fn new(
        subject: Descriptor,
        artifact_type: &str,
        layers: Vec<ArtifactLayer>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Artifact> {
        let mut blobs = vec![(sha256_digest(EMPTY_JSON), EMPTY_JSON.to_vec())];
        let config = descriptor_of(MediaType::EmptyJSON, &blobs[0].0, 2, BTreeMap::new())?;
        let mut descriptors = Vec::new();
        for l in layers {
            let digest = sha256_digest(&l.bytes);
            descriptors.push(descriptor_of(
                MediaType::from(l.media_type.as_str()),
                &digest,
                l.bytes.len() as u64,
                l.annotations,
            )?);
            blobs.push((digest, l.bytes));
        }
        let mut b = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::from(artifact_type))
            .config(config)
            .layers(descriptors)
            .subject(subject);
        if !annotations.is_empty() {
            b = b.annotations(annotations.into_iter().collect::<HashMap<_, _>>());
        }
        let manifest = b.build()?;
        let manifest_bytes = crate::oci::canonical_json(&manifest)?;
        Ok(Artifact {
            artifact_type: artifact_type.to_string(),
            manifest,
            manifest_bytes,
            blobs,
        })
    }

    /// An artifact read back: its manifest bytes and a reader of its blobs
    /// (which verifies each against its digest).
    pub fn read(
        manifest_bytes: Vec<u8>,
        blob: &dyn Fn(&str) -> Result<Vec<u8>>,
    ) -> Result<Artifact> {
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).context("parsing an artifact manifest")?;
        let Some(artifact_type) = manifest.artifact_type().as_ref().map(|t| t.to_string()) else {
            bail!(
                "manifest {} has no artifactType: it is not an artifact",
                sha256_digest(&manifest_bytes)
            );
        };
        let mut blobs = Vec::new();
        for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest = d.digest().to_string();
            if blobs.iter().any(|(have, _)| *have == digest) {
                continue;
            }
            let bytes = blob(&digest)?;
            blobs.push((digest, bytes));
        }
        Ok(Artifact {
            artifact_type,
            manifest,
            manifest_bytes,
            blobs,
        })
    }

    pub fn digest(&self) -> String {
        sha256_digest(&self.manifest_bytes)
    }

    /// Its descriptor as an index or the referrers API lists it: with the
    /// `artifactType` and the manifest's annotations.
    pub fn descriptor(&self) -> Result<Descriptor> {
        let annotations: BTreeMap<String, String> = self
            .manifest
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut d = descriptor_of(
            MediaType::ImageManifest,
            &self.digest(),
            self.manifest_bytes.len() as u64,
            annotations,
        )?;
        d.set_artifact_type(Some(MediaType::from(self.artifact_type.as_str())));
        Ok(d)
    }
}

fn descriptor_of(
    media_type: MediaType,
    digest: &str,
    size: u64,
    annotations: BTreeMap<String, String>,
) -> Result<Descriptor> {
    let mut d = DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest.parse::<oci_spec::image::Digest>()?)
        .size(size)
        .build()?;
    if !annotations.is_empty() {
        d.set_annotations(Some(annotations.into_iter().collect()));
    }
    Ok(d)
}

/// Reads through to `inner`, hashing; at the end of the stream (or past the
/// expected size) a mismatch is an `InvalidData` error naming the blob.
pub struct VerifiedReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    digest: String,
    size: u64,
    checked: bool,
}

impl<R: Read> VerifiedReader<R> {
    pub fn new(inner: R, digest: String, size: u64) -> Self {
        VerifiedReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            digest,
            size,
            checked: false,
        }
    }

    fn corrupt(&self, what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {} is corrupt: {what}", self.digest),
        )
    }

    fn check_end(&mut self) -> io::Result<()> {
        if self.checked {
            return Ok(());
        }
        self.checked = true;
        if self.count != self.size {
            return Err(self.corrupt(format!(
                "it has {} bytes, the manifest says {}",
                self.count, self.size
            )));
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if actual != self.digest {
            return Err(self.corrupt(format!("its content hashes to {actual}")));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.size {
            return Err(self.corrupt(format!("it is longer than {} bytes", self.size)));
        }
        if n == 0 && !buf.is_empty() {
            self.check_end()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], digest: &str, size: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        VerifiedReader::new(data, digest.to_string(), size).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn verified_reader_passes_good_blobs_and_names_bad_ones() {
        let data = b"layer bytes".repeat(100);
        let d = sha256_digest(&data);
        assert_eq!(read_all(&data, &d, data.len() as u64).unwrap(), data);
        let short = read_all(&data[..10], &d, data.len() as u64).unwrap_err();
        assert!(short.to_string().contains(&d), "{short}");
        let long = read_all(&data, &d, 10).unwrap_err();
        assert!(long.to_string().contains("longer"), "{long}");
        let mut edited = data.clone();
        edited[5] ^= 1;
        let e = read_all(&edited, &d, data.len() as u64).unwrap_err();
        assert!(e.to_string().contains("hashes to"), "{e}");
    }
}
