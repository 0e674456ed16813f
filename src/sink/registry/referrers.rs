//! An image's artifacts (its SBOM) pushed as referrers, after the image
//! manifest they name as `subject`: their blobs, then their manifest by
//! digest. A registry with the referrers API answers that PUT with
//! `OCI-Subject` and lists the artifact itself. Without that header (as
//! distribution 2.8, which has no referrers API) the client keeps the list
//! in the OCI 1.1 tag-schema fallback: an image index tagged
//! `sha256-<hex of the image digest>`, read, extended and put back (the
//! distribution spec's "Pushing Manifests with Subject"). Two clients
//! updating that index at once can lose one entry: the spec accepts this
//! race, and a later push of the lost artifact adds it again.

use super::client::Registry;
use crate::model::Artifact;
use crate::model::digest::sha256_digest;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// How a registry lists a referrer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListedBy {
    /// The registry's referrers API (it answered with `OCI-Subject`).
    ReferrersApi,
    /// The `sha256-<hex>` index tag mpsi keeps.
    TagSchema,
}

#[derive(Debug, Serialize)]
pub struct ReferrerReport {
    pub digest: String,
    pub artifact_type: String,
    pub listed_by: ListedBy,
    /// The fallback tag, when the registry needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Whether the fallback index changed (false: it listed the artifact already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_updated: Option<bool>,
}

/// Puts the artifact's manifest (its blobs are up) and lists it as a
/// referrer of `subject` (the image manifest digest).
pub fn put(reg: &Registry, a: &Artifact, subject: &str) -> Result<ReferrerReport> {
    let digest = a.digest();
    let headers = reg.put_manifest(&digest, MANIFEST, &a.manifest_bytes, &digest)?;
    let api = headers
        .get("oci-subject")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == subject);
    let mut report = ReferrerReport {
        digest,
        artifact_type: a.artifact_type.clone(),
        listed_by: ListedBy::ReferrersApi,
        tag: None,
        index_updated: None,
    };
    if !api {
        let tag = fallback_tag(subject)?;
        report.index_updated = Some(add_to_index(reg, &tag, a)?);
        report.listed_by = ListedBy::TagSchema;
        report.tag = Some(tag);
    }
    Ok(report)
}

/// `sha256-<hex>`: the tag-schema name of the referrers of `digest`.
pub fn fallback_tag(digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some((alg, hex)) if !alg.is_empty() && !hex.is_empty() => Ok(format!("{alg}-{hex}")),
        _ => bail!("{digest:?} is not a digest"),
    }
}

/// Adds the artifact's descriptor to the index at `tag` (a new one when the
/// registry has none); true when the index changed and was put back.
fn add_to_index(reg: &Registry, tag: &str, a: &Artifact) -> Result<bool> {
    let mut index = match reg.get_manifest(tag, INDEX)? {
        Some(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(|v| v["manifests"].is_array())
            .with_context(|| {
                format!(
                    "the registry's {tag} is not an image index; the referrers fallback needs that tag \
(OCI 1.1 tag schema): delete or rename what is there"
                )
            })?,
        None => json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": []}),
    };
    let descriptor = serde_json::to_value(a.descriptor()?)?;
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("checked to be an array above");
    if manifests
        .iter()
        .any(|m| m["digest"] == descriptor["digest"])
    {
        return Ok(false);
    }
    manifests.push(descriptor);
    // serde_json's Value keeps objects sorted: canonical bytes.
    let bytes = serde_json::to_vec(&index)?;
    reg.put_manifest(tag, INDEX, &bytes, &sha256_digest(&bytes))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_replace_the_colon() {
        assert_eq!(fallback_tag("sha256:abc").unwrap(), "sha256-abc");
        assert!(fallback_tag("abc").is_err());
    }
}
