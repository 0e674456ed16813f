//! The image's SBOM: an SPDX 2.3 JSON document of what went into the image,
//! from what the assemble already knows (the lock's pins), never from a
//! scan: every pinned runtime package (the `.deb`'s sha256 and a Debian
//! PURL), each build's source tarball and patches by sha256, mpsi itself,
//! and the image, identified by its manifest digest.
//!
//! The SPDX types are written here by hand: `spdx-rs` writes SPDX 2.2, and
//! `serde-spdx` generates its types at build time from the JSON schema (and
//! pulls a second thiserror); the dozen fields below are all mpsi fills,
//! and they go through `oci::canonical_json` like every other document, so
//! the same inputs give the same bytes.
//!
//! Licenses are NOASSERTION: Debian's copyright files are not reliably
//! machine-readable and mpsi does not guess. Patches are SPDX packages of
//! purpose SOURCE, not SPDX files: an SPDX file must carry a SHA1, and the
//! lock pins sha256 only.

use crate::lock::{Input, Patch, RuntimePackage};
use crate::oci::canonical_json;
use anyhow::{Result, bail};
use serde::Serialize;
use std::collections::BTreeSet;

/// The media type of the document and of the artifact that carries it.
pub const MEDIA_TYPE: &str = "application/spdx+json";
/// The file name the artifact's layer carries (`oras pull` writes it so).
pub const FILE_NAME: &str = "sbom.spdx.json";

const NOASSERTION: &str = "NOASSERTION";

/// The image the document describes.
pub struct Subject<'a> {
    /// Repository, as containerd spells it (`docker.io/library/name`).
    pub repository: &'a str,
    pub tag: &'a str,
    pub manifest_digest: &'a str,
    /// SOURCE_DATE_EPOCH of the assemble: the document's `created`.
    pub epoch: u64,
}

/// What went into the image.
pub struct Contents<'a> {
    /// The lock's runtime packages, when a layer takes them.
    pub packages: &'a [RuntimePackage],
    pub builds: Vec<BuildInputs<'a>>,
}

/// A build the image's layers take files from, and what it was made of.
pub struct BuildInputs<'a> {
    pub name: &'a str,
    pub source: &'a Input,
    /// In series order (the order they were applied).
    pub patches: &'a [Patch],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_file_name: Option<String>,
    download_location: String,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

impl Package {
    fn new(spdx_id: String, name: &str) -> Package {
        Package {
            spdx_id,
            name: name.to_string(),
            version_info: None,
            package_file_name: None,
            download_location: NOASSERTION.into(),
            files_analyzed: false,
            checksums: Vec::new(),
            external_refs: Vec::new(),
            primary_package_purpose: None,
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION,
            copyright_text: NOASSERTION,
            comment: None,
        }
    }
    fn sha256(mut self, hex: &str) -> Package {
        self.checksums.push(Checksum {
            algorithm: "SHA256",
            checksum_value: hex.to_string(),
        });
        self
    }
    fn purl(mut self, locator: String) -> Package {
        self.external_refs.push(ExternalRef {
            reference_category: "PACKAGE-MANAGER",
            reference_type: "purl",
            reference_locator: locator,
        });
        self
    }
}

const IMAGE_ID: &str = "SPDXRef-Image";
const MPSI_ID: &str = "SPDXRef-Tool-mpsi";

/// The SPDX 2.3 JSON document of the image (canonical bytes).
pub fn document(image: &Subject, contents: &Contents) -> Result<Vec<u8>> {
    let Some(hex) = image.manifest_digest.strip_prefix("sha256:") else {
        bail!(
            "the image manifest digest {} is not sha256",
            image.manifest_digest
        );
    };
    let mut packages = Vec::new();
    let mut rels = Vec::new();
    let mut rel = |a: &str, t: &'static str, b: &str| {
        rels.push(Relationship {
            spdx_element_id: a.to_string(),
            relationship_type: t,
            related_spdx_element: b.to_string(),
        })
    };
    rel("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_ID);

    let mut img = Package::new(IMAGE_ID.into(), image.repository)
        .sha256(hex)
        .purl(oci_purl(image.repository, image.tag, hex));
    img.version_info = Some(image.tag.to_string());
    img.primary_package_purpose = Some("CONTAINER");
    img.comment = Some(format!(
        "the image manifest {} (its sha256 is the checksum)",
        image.manifest_digest
    ));
    packages.push(img);

    let mut mpsi = Package::new(MPSI_ID.into(), "mpsi");
    mpsi.version_info = Some(env!("CARGO_PKG_VERSION").into());
    mpsi.primary_package_purpose = Some("APPLICATION");
    mpsi.comment = Some("the tool that assembled the image".into());
    packages.push(mpsi);
    rel(MPSI_ID, "BUILD_TOOL_OF", IMAGE_ID);

    for p in contents.packages {
        let id = format!("SPDXRef-Package-deb-{}", spdx_id_part(&p.name));
        let mut pkg = Package::new(id.clone(), &p.name)
            .sha256(&p.sha256)
            .purl(deb_purl(p));
        pkg.version_info = Some(p.version.clone());
        pkg.package_file_name = Some(p.file.clone());
        pkg.download_location = p.url.clone();
        packages.push(pkg);
        rel(IMAGE_ID, "CONTAINS", &id);
    }

    for b in &contents.builds {
        let build_id = format!("SPDXRef-Build-{}", spdx_id_part(b.name));
        let mut built = Package::new(build_id.clone(), b.name);
        built.version_info = b.source.version.clone();
        built.primary_package_purpose = Some("APPLICATION");
        built.comment = Some(format!(
            "built by mpsi from {} with {} patch(es) applied in order",
            b.source.file,
            b.patches.len()
        ));
        packages.push(built);
        rel(IMAGE_ID, "CONTAINS", &build_id);

        let src_id = format!("SPDXRef-Source-{}", spdx_id_part(&b.source.name));
        let mut src = Package::new(src_id.clone(), &b.source.name).sha256(&b.source.sha256);
        src.version_info = b.source.version.clone();
        src.package_file_name = Some(b.source.file.clone());
        if let Some(u) = b.source.urls.first() {
            src.download_location = u.clone();
        }
        src.primary_package_purpose = Some("SOURCE");
        if !packages.iter().any(|p| p.spdx_id == src_id) {
            packages.push(src);
        }
        rel(&build_id, "GENERATED_FROM", &src_id);

        for (i, patch) in b.patches.iter().enumerate() {
            let id = format!(
                "SPDXRef-Patch-{}-{:04}-{}",
                spdx_id_part(b.name),
                i + 1,
                spdx_id_part(patch_file_name(&patch.name))
            );
            let mut p = Package::new(id.clone(), &patch.name).sha256(&patch.sha256);
            p.package_file_name = Some(patch.name.clone());
            p.primary_package_purpose = Some("SOURCE");
            p.comment = Some(format!(
                "patch {} of {} of build {}, from the image's repository",
                i + 1,
                b.patches.len(),
                b.name
            ));
            packages.push(p);
            rel(&build_id, "GENERATED_FROM", &id);
            rel(&id, "PATCH_APPLIED", &src_id);
        }
    }

    let mut seen = BTreeSet::new();
    for p in &packages {
        if !seen.insert(p.spdx_id.as_str()) {
            bail!(
                "two SBOM packages would share the SPDX id {} (rename one of them)",
                p.spdx_id
            );
        }
    }
    packages.sort_by(|a, b| a.spdx_id.cmp(&b.spdx_id));
    rels.sort();
    rels.dedup();
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{}:{}", image.repository, image.tag),
        // Unique per image (name and manifest digest) and reproducible.
        // `.invalid` (RFC 2606) never resolves: SPDX asks for a unique URI,
        // not a reachable one, and mpsi has no web site to name.
        document_namespace: format!(
            "https://mpsi.invalid/spdx/{}/sha256-{hex}",
            image.repository
        ),
        creation_info: CreationInfo {
            created: crate::assemble::docs::rfc3339(image.epoch),
            creators: vec![format!("Tool: mpsi-{}", env!("CARGO_PKG_VERSION"))],
        },
        packages,
        relationships: rels,
    };
    canonical_json(&doc)
}

/// The part of an SPDX id made from a name: SPDX allows letters, digits,
/// `.` and `-`. Debian package names are lowercase, so their `+` maps to
/// `P` without meeting another name (`libstdc++6` -> `libstdcPP6`); other
/// characters (in build, input and patch names) map to `-`, and a clash
/// is caught where the ids are collected.
fn spdx_id_part(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            '+' => 'P',
            _ => '-',
        })
        .collect()
}

fn patch_file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Percent-encodes all but unreserved characters, as PURL components are.
fn purl_encode(s: &str) -> String {
    purl_encode_but(s, "")
}

/// As `purl_encode`, leaving `keep` as they are (the PURL spec's own
/// examples keep `/` in a `repository_url`).
fn purl_encode_but(s: &str, keep: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ if keep.as_bytes().contains(&b) => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`, as scanners
/// (syft, Trivy) spell Debian 12 packages.
fn deb_purl(p: &RuntimePackage) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}&distro=debian-12",
        purl_encode(&p.name),
        purl_encode(&p.version),
        purl_encode(&p.architecture)
    )
}

/// `pkg:oci/NAME@sha256%3AHEX?repository_url=REPO&tag=TAG` (the PURL spec's
/// OCI type: the name is the repository's last component).
fn oci_purl(repository: &str, tag: &str, hex: &str) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    format!(
        "pkg:oci/{}@sha256%3A{hex}?repository_url={}&tag={}",
        purl_encode(&name.to_lowercase()),
        purl_encode_but(repository, "/"),
        purl_encode(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_encode_epochs_and_plus_signs() {
        let p = RuntimePackage {
            name: "libstdc++6".into(),
            version: "1:12.2.0-14+deb12u1".into(),
            architecture: "amd64".into(),
            file: "f.deb".into(),
            size: 1,
            sha256: "00".into(),
            url: "https://deb.debian.org/f.deb".into(),
        };
        assert_eq!(
            deb_purl(&p),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A12.2.0-14%2Bdeb12u1?arch=amd64&distro=debian-12"
        );
        assert_eq!(spdx_id_part("libstdc++6"), "libstdcPP6");
        assert_eq!(spdx_id_part("patches/0001 x.patch"), "patches-0001-x.patch");
        assert_eq!(
            oci_purl("docker.io/library/m", "latest", "ab"),
            "pkg:oci/m@sha256%3Aab?repository_url=docker.io/library/m&tag=latest"
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let image = Subject {
            repository: "docker.io/library/x",
            tag: "v1",
            manifest_digest: &format!("sha256:{}", "a".repeat(64)),
            epoch: 1_700_000_000,
        };
        let contents = Contents {
            packages: &[],
            builds: Vec::new(),
        };
        let a = document(&image, &contents).unwrap();
        assert_eq!(a, document(&image, &contents).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
    }
}
