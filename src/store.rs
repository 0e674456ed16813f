//! The local store: content-addressed blobs and the layer cache.
//!
//! Layout (directory names carry a format version, so a future change moves
//! to a new directory instead of misreading an old one):
//!   blobs/sha256/<hex>        layer blobs, written once, read-only
//!   layers-v1/<key>.json      layer recipe key -> LayerBlob
//!
//! Location: `--store`, else `$MPSI_STORE`, else `$XDG_CACHE_HOME/mpsi`,
//! else `~/.cache/mpsi`.

use crate::digest::hex_of;
use crate::fsutil;
use crate::layer::LayerBlob;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(explicit: Option<&Path>) -> Result<Store> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => default_root()?,
        };
        for d in ["blobs/sha256", "layers-v1"] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating the store at {}", root.display()))?;
        }
        Ok(Store { root })
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(hex_of(digest)?))
    }

    /// The cached layer for `key`, if its blob is still there, whole.
    pub fn cached_layer(&self, key: &str) -> Option<LayerBlob> {
        let bytes = fs::read(self.root.join("layers-v1").join(format!("{key}.json"))).ok()?;
        let blob: LayerBlob = serde_json::from_slice(&bytes).ok()?;
        let meta = fs::metadata(self.blob_path(&blob.digest).ok()?).ok()?;
        (meta.len() == blob.size).then_some(blob)
    }

    pub fn remember_layer(&self, key: &str, blob: &LayerBlob) -> Result<()> {
        let path = self.root.join("layers-v1").join(format!("{key}.json"));
        fsutil::write_atomic(&path, &serde_json::to_vec_pretty(blob)?)
    }
}

fn default_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MPSI_STORE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p).join("mpsi"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache/mpsi")),
        None => anyhow::bail!(
            "no store location: set MPSI_STORE (or HOME / XDG_CACHE_HOME), or pass --store DIR"
        ),
    }
}
