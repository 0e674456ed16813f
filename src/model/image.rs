//! The image value: what assembly produces and every sink consumes.
//!
//! An `Image` holds its manifest and config as bytes (they are small and
//! their digests are their identity) and its layers as descriptors with a
//! file to read each from (the store after an assemble, the layout's
//! `blobs/` after a read). Every layer read goes through `VerifiedReader`,
//! so a truncated or edited blob is an error naming its digest, never bytes
//! passed on as if they were the image.

use super::digest::sha256_digest;
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
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
