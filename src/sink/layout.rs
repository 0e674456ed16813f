//! An OCI image layout directory as a sink: blobs first, the index last, so
//! an interrupted write never leaves an index naming a missing blob. Other
//! images in the layout are kept; the tag is moved to this one. The
//! image's artifacts (its SBOM) are listed in the index untagged, next to it.

use super::Sink;
use crate::model::Image;
use crate::oci::Layout;
use crate::progress::Reporter;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::PathBuf;

pub struct LayoutSink {
    pub root: PathBuf,
}

#[derive(Serialize)]
pub struct LayoutReport {
    pub layout: PathBuf,
    pub manifest_digest: String,
    pub tag: Option<String>,
    /// Digests of the artifacts (the SBOM) listed with the image.
    pub referrers: Vec<String>,
}

impl Sink for LayoutSink {
    type Report = LayoutReport;

    fn send(&mut self, image: &Image, _reporter: &dyn Reporter) -> Result<LayoutReport> {
        let layout = Layout::create(&self.root)?;
        for l in &image.layers {
            layout
                .put_file(&l.path, &l.digest(), l.size())
                .with_context(|| format!("writing layer {} into the layout", l.digest()))?;
        }
        layout.put_bytes(&image.config_bytes)?;
        layout.put_bytes(&image.manifest_bytes)?;
        let mut referrers = Vec::new();
        for a in &image.referrers {
            for (_, bytes) in &a.blobs {
                layout.put_bytes(bytes)?;
            }
            layout.put_bytes(&a.manifest_bytes)?;
            referrers.push(a.descriptor()?);
        }
        let manifest_digest = image.manifest_digest();
        if let Some(tag) = &image.tag {
            layout.set_tag(
                &manifest_digest,
                image.manifest_bytes.len() as u64,
                tag,
                image.name.as_deref().unwrap_or(tag),
                &referrers,
            )?;
        }
        Ok(LayoutReport {
            layout: self.root.clone(),
            manifest_digest,
            tag: image.tag.clone(),
            referrers: referrers.iter().map(|d| d.digest().to_string()).collect(),
        })
    }
}
