//! A registry as a sink: our own distribution client on blocking reqwest
//! and oci-spec types. Layers go up several at a time (what the registry
//! has is skipped, what another repository on it holds is mounted), then
//! the config, then the manifest under each tag with its own media type;
//! the registry's digest of every blob and of the manifest is checked
//! against ours. The image's artifacts (its SBOM) follow as referrers
//! (`referrers.rs`).

mod auth;
mod client;
pub mod creds;
mod record;
mod referrers;
mod upload;

use super::Sink;
use crate::http::{self, RetryPolicy, Timeouts};
use crate::model::Image;
use crate::model::reference::Reference;
use crate::progress::{Reporter, Task, Unit};
use anyhow::{Context, Result, bail};
use client::Registry;
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use upload::{Blob, Chunking, Outcome, Progress, Source};

pub struct Options {
    pub reference: Reference,
    /// Tags besides the reference's own.
    pub tags: Vec<String>,
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// Registries (host or host:port) spoken to over plain http although
    /// not on this machine.
    pub insecure: Vec<String>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    pub chunk_size: Option<u64>,
    pub credentials: creds::Sources,
    /// The push record (where blobs were pushed, for mounts); None: none.
    pub record: Option<PathBuf>,
}

pub struct RegistrySink {
    pub opts: Options,
}

#[derive(Serialize)]
pub struct PushReport {
    /// `registry/repo@sha256:...`
    pub reference: String,
    pub digest: String,
    pub tags: Vec<String>,
    /// Blob bytes sent in uploads that completed.
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    /// Requests or blobs sent again after a transient failure.
    pub retries: u64,
    /// The image's artifacts (its SBOM), pushed after it, and how the
    /// registry lists them.
    pub referrers: Vec<referrers::ReferrerReport>,
    pub seconds: f64,
}

impl Sink for RegistrySink {
    type Report = PushReport;

    fn send(&mut self, image: &Image, reporter: &dyn Reporter) -> Result<PushReport> {
        let started = Instant::now();
        let o = &self.opts;
        let r = &o.reference;
        let digest = image.manifest_digest();
        if let Some(d) = &r.digest
            && *d != digest
        {
            bail!("{r} names digest {d}, but the image's manifest is {digest}");
        }
        let tags = tags_of(r, &o.tags);
        let record = o.record.as_ref().map(|p| record::Record::load(p));
        let mut blobs = blobs_of(image);
        let mut artifact_blobs = artifact_blobs_of(image);
        if let Some(rec) = &record {
            for b in blobs.iter_mut().chain(&mut artifact_blobs) {
                b.mount_from = rec.source(&r.registry, &r.repository, &b.digest);
            }
        }
        let reg = self.connect(&[&blobs[..], &artifact_blobs[..]].concat())?;
        reg.ping()?;
        reporter.note(&format!("pushing {} to {}", digest, r.name()));
        let (config, layers) = blobs.split_last().expect("an image has a config");
        let progress = Progress {
            total: Arc::from(reporter.task(
                &format!("push {}", r.repository),
                Some(
                    image.layers_size()
                        + config.size
                        + artifact_blobs.iter().map(|b| b.size).sum::<u64>(),
                ),
                Unit::Bytes,
            )),
            sent: Arc::new(AtomicU64::new(0)),
        };
        let chunking = Chunking {
            chunk_size: o.chunk_size,
        };
        let mut outcomes = push_all(&reg, layers, o.jobs, &chunking, &progress, reporter)?;
        outcomes.extend(push_all(
            &reg,
            std::slice::from_ref(config),
            1,
            &chunking,
            &progress,
            reporter,
        )?);
        let media_type = image.manifest.media_type().as_ref().map_or(
            "application/vnd.oci.image.manifest.v1+json".to_string(),
            |m| m.to_string(),
        );
        let refs: Vec<String> = if tags.is_empty() {
            vec![digest.clone()]
        } else {
            tags.clone()
        };
        for t in &refs {
            reg.put_manifest(t, &media_type, &image.manifest_bytes, &digest)?;
        }
        // Referrers after their subject: a registry may check it exists.
        outcomes.extend(push_all(
            &reg,
            &artifact_blobs,
            o.jobs,
            &chunking,
            &progress,
            reporter,
        )?);
        let referrers = image
            .referrers
            .iter()
            .map(|a| referrers::put(&reg, a, &digest))
            .collect::<Result<Vec<_>>>()?;
        progress.total.finish();
        if let Some(p) = &o.record {
            let ds: Vec<String> = blobs
                .iter()
                .chain(&artifact_blobs)
                .map(|b| b.digest.clone())
                .collect();
            record::remember(p, &r.registry, &r.repository, &ds)?;
        }
        let count = |want: Outcome| outcomes.iter().filter(|(_, o)| *o == want).count();
        Ok(PushReport {
            reference: r.with_digest(&digest),
            digest,
            tags,
            bytes_uploaded: outcomes
                .iter()
                .filter(|(_, o)| *o == Outcome::Uploaded)
                .map(|(s, _)| s)
                .sum(),
            blobs_uploaded: count(Outcome::Uploaded),
            blobs_skipped: count(Outcome::Skipped),
            blobs_mounted: count(Outcome::Mounted),
            retries: reg.retries.load(Ordering::Relaxed),
            referrers,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

impl RegistrySink {
    /// The client for the reference's repository: scheme, auth and scopes.
    fn connect(&self, blobs: &[Blob]) -> Result<Registry> {
        let o = &self.opts;
        let r = &o.reference;
        let plain = r.is_loopback()
            || o.insecure
                .iter()
                .any(|h| h == &r.registry || h == r.hostname());
        let scheme = if plain { "http" } else { "https" };
        let base = reqwest::Url::parse(&format!("{scheme}://{}/v2/", r.api_host()))
            .with_context(|| format!("the registry {:?} is not a valid host", r.registry))?;
        let mut scopes = vec![format!("repository:{}:pull,push", r.repository)];
        let sources: BTreeSet<&String> =
            blobs.iter().filter_map(|b| b.mount_from.as_ref()).collect();
        scopes.extend(sources.into_iter().map(|s| format!("repository:{s}:pull")));
        let (sources, registry, repo) = (
            o.credentials.clone(),
            r.registry.clone(),
            r.repository.clone(),
        );
        let auth = auth::Auth::new(
            r.hostname(),
            plain,
            scopes,
            Box::new(move || creds::lookup(&sources, &registry, &repo)),
        );
        let http = http::client(&o.timeouts, !plain)?;
        Ok(Registry::new(
            http,
            base,
            &r.repository,
            auth,
            o.retry.clone(),
            o.timeouts.clone(),
        ))
    }
}

/// The reference's tag and the extra ones (none for a digest reference
/// without tags: the manifest goes by digest only), de-duplicated.
fn tags_of(r: &Reference, extra: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let first = match (&r.tag, &r.digest) {
        (Some(t), _) => Some(t.clone()),
        (None, None) if extra.is_empty() => Some("latest".to_string()),
        _ => None,
    };
    for t in first.into_iter().chain(extra.iter().cloned()) {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags
}

/// Layers (each digest once) then the config, last.
fn blobs_of(image: &Image) -> Vec<Blob> {
    let mut seen = BTreeSet::new();
    let mut blobs: Vec<Blob> = image
        .layers
        .iter()
        .filter(|l| seen.insert(l.digest()))
        .map(|l| Blob {
            digest: l.digest(),
            size: l.size(),
            source: Source::Layer(Box::new(l.clone())),
            mount_from: None,
        })
        .collect();
    blobs.push(Blob {
        digest: image.config_digest(),
        size: image.config_bytes.len() as u64,
        source: Source::Bytes(Arc::new(image.config_bytes.clone())),
        mount_from: None,
    });
    blobs
}

/// The blobs of the image's artifacts, each digest once.
fn artifact_blobs_of(image: &Image) -> Vec<Blob> {
    let mut seen = BTreeSet::new();
    image
        .referrers
        .iter()
        .flat_map(|a| &a.blobs)
        .filter(|(d, _)| seen.insert(d.clone()))
        .map(|(d, bytes)| Blob {
            digest: d.clone(),
            size: bytes.len() as u64,
            source: Source::Bytes(Arc::new(bytes.clone())),
            mount_from: None,
        })
        .collect()
}

/// Pushes `blobs` with `jobs` threads taking from one queue; the first
/// error stops the others from starting new blobs.
fn push_all(
    reg: &Registry,
    blobs: &[Blob],
    jobs: usize,
    chunking: &Chunking,
    progress: &Progress,
    reporter: &dyn Reporter,
) -> Result<Vec<(u64, Outcome)>> {
    let queue: Mutex<VecDeque<&Blob>> = Mutex::new(blobs.iter().collect());
    let done: Mutex<Vec<(u64, Outcome)>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, blobs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let Some(b) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    let short = &b.digest[7..19];
                    let bar: Arc<dyn Task> =
                        Arc::from(reporter.task(&format!("  {short}"), Some(b.size), Unit::Bytes));
                    match upload::push_blob(reg, b, chunking, progress, bar.clone()) {
                        Ok(o) => {
                            if o != Outcome::Uploaded {
                                // Counted as done in the total.
                                let s = progress.sent.fetch_add(b.size, Ordering::Relaxed) + b.size;
                                progress.total.set_position(s);
                            }
                            bar.finish();
                            done.lock().unwrap().push((b.size, o));
                        }
                        Err(e) => {
                            queue.lock().unwrap().clear();
                            failed.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    Ok(done.into_inner().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_from_reference_and_flags() {
        let r = Reference::parse("reg.io/a:v1").unwrap();
        assert_eq!(tags_of(&r, &["v1".into(), "x".into()]), ["v1", "x"]);
        let r = Reference::parse("reg.io/a").unwrap();
        assert_eq!(tags_of(&r, &[]), ["latest"]);
        assert_eq!(tags_of(&r, &["x".into()]), ["x"]);
        let d = format!("sha256:{}", "0".repeat(64));
        let r = Reference::parse(&format!("reg.io/a@{d}")).unwrap();
        assert!(tags_of(&r, &[]).is_empty());
    }
}
