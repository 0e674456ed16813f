//! The OCI image layout on disk: blobs, the index and its tags, read back
//! as an `Image`.
//!
//! Documents are built with oci-spec types and serialized canonically
//! (sorted keys, no whitespace): oci-spec keeps labels, annotations and
//! exposed ports in HashMaps, whose order changes from run to run, so its
//! own serializer cannot give reproducible digests. Going through
//! `serde_json::Value` (a BTreeMap) sorts every object.
//!
//! Write order makes interruption safe: blobs first (each atomically), the
//! index last (atomically), so an index never names a missing blob.

use crate::fsutil;
use crate::model::digest::{hex_of, sha256_digest};
use crate::model::{Artifact, Image, Layer};
use anyhow::{Context, Result, bail};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
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

    /// Stores bytes as a blob; returns its digest. A blob already there is
    /// kept only if its bytes are these (documents are small: comparing
    /// them costs nothing, and an edited one is repaired).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        let path = self.blob_path(&digest)?;
        if fs::read(&path).ok().as_deref() != Some(bytes) {
            fsutil::write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Stores a copy of the blob at `src` (already verified as `digest`).
    ///
    /// The copy is never a hard link (an edit of the layout would reach the
    /// store) and carries `src`'s mtime. A blob already in the layout is
    /// kept when it is a separate file with `src`'s size and mtime (to the
    /// nanosecond): rsync's quick check, one stat per layer instead of
    /// re-hashing every layer on every assemble. Writing into a blob sets
    /// its mtime to now, so an edited blob fails the check and is replaced.
    /// (Readers of a layout verify every blob as they read it anyway.)
    pub fn put_file(&self, src: &Path, digest: &str, size: u64) -> Result<()> {
        let dest = self.blob_path(digest)?;
        let from = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
        if from.len() != size {
            bail!(
                "blob {digest} at {} has {} bytes, not {size}",
                src.display(),
                from.len()
            );
        }
        if fs::metadata(&dest).is_ok_and(|have| is_copy_of(&have, &from)) {
            return Ok(());
        }
        fsutil::copy_file(src, &dest, 0o644)
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
    /// the layout's other images, and lists `referrers` (artifacts about
    /// the manifest, untagged, so tools that pick an image by its tag
    /// still see one). Artifacts about an image no longer in the index go.
    pub fn set_tag(
        &self,
        manifest_digest: &str,
        manifest_size: u64,
        tag: &str,
        full_name: &str,
        referrers: &[Descriptor],
    ) -> Result<()> {
        let mut index = self.index()?;
        // The image and its referrers go last, in this order, also when
        // the index listed them before (a re-assemble into the same layout).
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_REF_NAME))
                    .map(String::as_str)
                    != Some(tag)
                    && !referrers.iter().any(|r| r.digest() == d.digest())
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
        for r in referrers {
            if !manifests.iter().any(|m| m.digest() == r.digest()) {
                manifests.push(r.clone());
            }
        }
        let images: Vec<String> = manifests
            .iter()
            .filter(|m| m.artifact_type().is_none())
            .map(|m| m.digest().to_string())
            .collect();
        manifests.retain(|m| {
            m.artifact_type().is_none() || self.subject_of(m).is_some_and(|s| images.contains(&s))
        });
        index.set_manifests(manifests);
        index.set_media_type(Some(MediaType::ImageIndex));
        fsutil::write_atomic(&self.root.join("index.json"), &canonical_json(&index)?)
    }

    /// The manifest an artifact listed in the index is about (None: it is
    /// unreadable or about nothing, and goes).
    fn subject_of(&self, d: &Descriptor) -> Option<String> {
        let bytes = self.read_blob(d.digest().as_ref()).ok()?;
        let m: ImageManifest = serde_json::from_slice(&bytes).ok()?;
        m.subject().as_ref().map(|s| s.digest().to_string())
    }

    /// The artifacts the index lists about the manifest `digest`, in index order.
    fn referrers_of(&self, index: &ImageIndex, digest: &str) -> Result<Vec<Artifact>> {
        let mut out = Vec::new();
        for d in index.manifests() {
            if d.artifact_type().is_none() {
                continue;
            }
            // Another image's artifacts are not read past their manifest.
            let bytes = self.read_blob(d.digest().as_ref())?;
            let m: ImageManifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing the artifact manifest {}", d.digest()))?;
            if m.subject()
                .as_ref()
                .map(|s| s.digest().to_string())
                .as_deref()
                != Some(digest)
            {
                continue;
            }
            out.push(
                Artifact::read(bytes, &|blob| self.read_blob(blob))
                    .with_context(|| format!("reading the artifact {}", d.digest()))?,
            );
        }
        Ok(out)
    }

    /// Finds an image by tag; with no tag, the layout must hold exactly one.
    /// The manifest and config are verified; layers are verified as they
    /// are read (`Layer::open`).
    pub fn image(&self, tag: Option<&str>) -> Result<Image> {
        let d = self.find(tag)?;
        let manifest_bytes = self.read_blob(d.digest().as_ref())?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).context("parsing the image manifest")?;
        let config_bytes = self.read_blob(manifest.config().digest().as_ref())?;
        let config: Value =
            serde_json::from_slice(&config_bytes).context("parsing the image config")?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != manifest.layers().len() {
            bail!(
                "the config lists {} diff_ids but the manifest {} layers",
                diff_ids.len(),
                manifest.layers().len()
            );
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(l, diff_id)| {
                Ok(Layer {
                    path: self.blob_path(l.digest().as_ref())?,
                    descriptor: l.clone(),
                    diff_id,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let annotations = d.annotations().clone().unwrap_or_default();
        let referrers = self.referrers_of(&self.index()?, d.digest().as_ref())?;
        Ok(Image {
            tag: annotations.get(ANNOTATION_REF_NAME).cloned(),
            name: annotations.get(ANNOTATION_CONTAINERD_NAME).cloned(),
            manifest,
            manifest_bytes,
            config_bytes,
            layers,
            referrers,
        })
    }

    /// The index entry of the image tagged `tag` (or the only one).
    fn find(&self, tag: Option<&str>) -> Result<Descriptor> {
        let index = self.index()?;
        let tag_of = |d: &Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                .cloned()
        };
        let tags = || -> String {
            let t: Vec<String> = index.manifests().iter().filter_map(tag_of).collect();
            if t.is_empty() {
                "none".into()
            } else {
                t.join(", ")
            }
        };
        // Artifacts (an SBOM) are about an image; they are not images.
        let found: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| d.artifact_type().is_none())
            .filter(|d| tag.is_none_or(|t| tag_of(d).as_deref() == Some(t)))
            .collect();
        match found.as_slice() {
            [d] => Ok((*d).clone()),
            [] => bail!(
                "no image {} in {} (it has: {})",
                tag.map(|t| format!("tagged {t:?}")).unwrap_or_default(),
                self.root.display(),
                tags()
            ),
            _ => bail!(
                "{} holds several images ({}); name one with --tag",
                self.root.display(),
                tags()
            ),
        }
    }
}

/// `have` is a separate file with `src`'s size and mtime.
fn is_copy_of(have: &fs::Metadata, src: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    have.is_file()
        && (have.dev(), have.ino()) != (src.dev(), src.ino())
        && have.len() == src.len()
        && (have.mtime(), have.mtime_nsec()) == (src.mtime(), src.mtime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_hashmap_keys() {
        let m: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
        let text = String::from_utf8(canonical_json(&m).unwrap()).unwrap();
        let keys: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
