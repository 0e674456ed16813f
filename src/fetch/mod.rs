//! `mpsi fetch`: puts every pinned input of the lock into the store, from
//! the network, from a directory of local files, or from a bundle; and
//! writes bundles (one tar with every pinned input) for air-gapped machines.
//!
//! Nothing enters the store unverified: bytes stream into a temporary file
//! and are renamed to their sha256 only if size and hash match the lock
//! (`store::InputWriter`); on a mismatch the error names the input, the
//! expected and the actual hash, and the store is unchanged.
//!
//! Downloads retry with exponential backoff on connection errors, 5xx, 429
//! and truncated bodies, and resume an interrupted download with an HTTP
//! Range request from the partial file kept in `inputs-v1/partial/`.

use crate::lock::{Input, LockFile};
use crate::progress::{Reporter, Task, Unit};
use crate::store::{IntegrityError, Store};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where missing inputs may come from.
#[derive(Clone, Debug)]
pub enum Origin {
    /// The URLs in the lock.
    Network,
    /// Files named as in the lock (`file`) in a directory.
    Dir(PathBuf),
    /// A bundle written by `mpsi fetch --bundle`.
    Bundle(PathBuf),
    /// Only what the store already has.
    StoreOnly,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fetched {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// `store` (already there), or where it came from.
    pub from: String,
}

/// A needed input that no allowed origin has.
#[derive(Debug, thiserror::Error)]
#[error("input {name:?} ({file}, sha256 {sha256}) is not available: {why}")]
pub struct MissingInput {
    pub name: String,
    pub file: String,
    pub sha256: String,
    pub why: String,
}

pub struct Fetcher<'a> {
    pub store: &'a Store,
    pub reporter: &'a dyn Reporter,
    /// Attempts per URL (at least 1).
    pub attempts: u32,
    /// First backoff delay; doubles each retry, capped at 8 s.
    pub backoff: Duration,
}

impl<'a> Fetcher<'a> {
    pub fn new(store: &'a Store, reporter: &'a dyn Reporter) -> Fetcher<'a> {
        Fetcher {
            store,
            reporter,
            attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }

    /// Makes sure each input is in the store; returns where each came from.
    pub fn ensure(&self, inputs: &[&Input], origin: &Origin) -> Result<Vec<Fetched>> {
        for i in inputs {
            if !crate::lock::is_hex64(&i.sha256) {
                bail!(
                    "input {:?} is not pinned (empty sha256); pin it with `mpsi lock --from DIR` from a trusted copy",
                    i.name
                );
            }
        }
        let mut out = Vec::new();
        let mut todo = Vec::new();
        for i in inputs {
            if self.store.input(i).is_some() {
                out.push(fetched(i, "store"));
            } else {
                todo.push(*i);
            }
        }
        if todo.is_empty() {
            return Ok(out);
        }
        match origin {
            Origin::StoreOnly => {
                let i = todo[0];
                return Err(MissingInput {
                    name: i.name.clone(),
                    file: i.file.clone(),
                    sha256: i.sha256.clone(),
                    why: "not in the store, and --offline forbids downloading; \
run `mpsi fetch` where the network is reachable, or pass --inputs BUNDLE"
                        .into(),
                }
                .into());
            }
            Origin::Bundle(b) => {
                import_bundle(self.store, b, &todo)?;
                out.extend(
                    todo.iter()
                        .map(|i| fetched(i, &format!("bundle {}", b.display()))),
                );
            }
            Origin::Dir(d) => {
                for i in todo {
                    let p = d.join(&i.file);
                    if !p.is_file() {
                        return Err(MissingInput {
                            name: i.name.clone(),
                            file: i.file.clone(),
                            sha256: i.sha256.clone(),
                            why: format!("{} does not exist", p.display()),
                        }
                        .into());
                    }
                    self.import_file(i, &p)?;
                    out.push(fetched(i, &p.display().to_string()));
                }
            }
            Origin::Network => {
                for i in todo {
                    let url = self.download(i)?;
                    out.push(fetched(i, &url));
                }
            }
        }
        Ok(out)
    }

    /// Copies a local file into the store, hashing on the way.
    pub fn import_file(&self, input: &Input, path: &Path) -> Result<PathBuf> {
        let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let bar = self.reporter.task(
            &format!("import {}", input.file),
            Some(input.size),
            Unit::Bytes,
        );
        let mut w = self.store.input_writer(input)?;
        copy_with(&mut f, &mut w, &|n| bar.advance(n))
            .with_context(|| format!("copying {} into the store", path.display()))?;
        bar.finish();
        w.finish(&path.display().to_string())
    }

    /// Downloads an input from its URLs, in order; returns the URL that
    /// served it.
    pub fn download(&self, input: &Input) -> Result<String> {
        if input.urls.is_empty() {
            return Err(MissingInput {
                name: input.name.clone(),
                file: input.file.clone(),
                sha256: input.sha256.clone(),
                why: "the lock lists no URL for it; use `mpsi fetch --from DIR`".into(),
            }
            .into());
        }
        // ring as rustls' crypto provider: small and quick to build (the
        // default, aws-lc, compiles a large C library with cmake).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            // Per read or write; a large body may take longer in total.
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("mpsi/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("creating the HTTP client")?;
        let mut errors = Vec::new();
        for url in &input.urls {
            match self.download_from(&client, input, url) {
                Ok(()) => {
                    let partial = self.store.partial_path(input)?;
                    return self
                        .commit_partial(input, &partial, url)
                        .map(|_| url.clone());
                }
                // A wrong file from one mirror: say so now rather than try another
                // mirror that may serve the same wrong file.
                Err(e) if e.downcast_ref::<IntegrityError>().is_some() => return Err(e),
                Err(e) => errors.push(format!("{url}: {e:#}")),
            }
        }
        bail!(
            "downloading input {:?} ({}) failed from every URL:\n  {}",
            input.name,
            input.file,
            errors.join("\n  ")
        )
    }

    /// Fills the partial file of `input` from `url`, resuming and retrying.
    fn download_from(
        &self,
        client: &reqwest::blocking::Client,
        input: &Input,
        url: &str,
    ) -> Result<()> {
        let partial = self.store.partial_path(input)?;
        let bar = self.reporter.task(
            &format!("fetch {}", input.file),
            Some(input.size),
            Unit::Bytes,
        );
        let mut last_err = None;
        for attempt in 0..self.attempts.max(1) {
            if attempt > 0 {
                let delay = self.backoff * 2u32.pow(attempt - 1);
                std::thread::sleep(delay.min(Duration::from_secs(8)));
            }
            match self.attempt(client, input, url, &partial, bar.as_ref()) {
                Ok(()) => {
                    bar.finish();
                    return Ok(());
                }
                Err(Attempt::Fatal(e)) => {
                    bar.finish();
                    return Err(e);
                }
                Err(Attempt::Retry(e)) => last_err = Some(e),
            }
        }
        bar.finish();
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!("giving up after {} attempts", self.attempts)))
    }

    fn attempt(
        &self,
        client: &reqwest::blocking::Client,
        input: &Input,
        url: &str,
        partial: &Path,
        bar: &dyn Task,
    ) -> Result<(), Attempt> {
        let mut have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if have > input.size {
            have = 0;
        }
        if have == input.size && have > 0 {
            return Ok(());
        }
        let mut req = client.get(url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = req.send().map_err(|e| Attempt::Retry(e.into()))?;
        let append = resume_or_restart(&resp, have, partial)?;
        let body_len = resp.content_length();
        let mut file = fs::File::options()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(partial)
            .map_err(|e| {
                Attempt::Fatal(anyhow::Error::new(e).context("opening the partial file"))
            })?;
        let mut done = if append { have } else { 0 };
        self.copy_body(&mut resp, &mut file, &mut done, input, url, partial, bar)?;
        file.sync_all()
            .map_err(|e| Attempt::Fatal(anyhow::Error::new(e)))?;
        let received = done - if append { have } else { 0 };
        // A whole body of the wrong size is a wrong file (commit_partial
        // reports it); a body cut short of its Content-Length is retried.
        let whole = body_len.is_some_and(|n| n == received);
        if done < input.size && !whole {
            return Err(Attempt::Retry(anyhow::anyhow!(
                "body ended after {done} of {} bytes",
                input.size
            )));
        }
        Ok(())
    }

    /// Copies the body into the partial file, counting `done`; more bytes
    /// than pinned is a wrong file (fatal), a lost connection is retried.
    #[allow(clippy::too_many_arguments)] // one download's state, passed through
    fn copy_body(
        &self,
        resp: &mut reqwest::blocking::Response,
        file: &mut fs::File,
        done: &mut u64,
        input: &Input,
        url: &str,
        partial: &Path,
        bar: &dyn Task,
    ) -> Result<(), Attempt> {
        bar.set_position(*done);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = file.sync_all();
                    return Err(Attempt::Retry(
                        anyhow::Error::new(e)
                            .context(format!("connection lost after {done} bytes")),
                    ));
                }
            };
            if *done + n as u64 > input.size {
                let _ = file.sync_all();
                let _ = fs::remove_file(partial);
                return Err(Attempt::Fatal(
                    IntegrityError {
                        what: format!("input {:?} ({})", input.name, input.file),
                        source_hint: url.to_string(),
                        expected: input.sha256.clone(),
                        expected_size: input.size,
                        actual: "(not computed: the body is larger than pinned)".into(),
                        actual_size: *done + n as u64,
                    }
                    .into(),
                ));
            }
            file.write_all(&buf[..n]).map_err(|e| {
                Attempt::Fatal(anyhow::Error::new(e).context("writing the partial file"))
            })?;
            *done += n as u64;
            bar.set_position(*done);
        }
        Ok(())
    }

    /// Verifies a complete partial download and moves it into the store. A
    /// mismatch deletes it (a resumed download must never keep bad bytes).
    fn commit_partial(&self, input: &Input, partial: &Path, url: &str) -> Result<PathBuf> {
        let (sha, size) = crate::lock::hash_file(partial)?;
        if sha != input.sha256 || size != input.size {
            let _ = fs::remove_file(partial);
            return Err(IntegrityError {
                what: format!("input {:?} ({})", input.name, input.file),
                source_hint: url.to_string(),
                expected: input.sha256.clone(),
                expected_size: input.size,
                actual: sha,
                actual_size: size,
            }
            .into());
        }
        let dest = self.store.input_path(&input.sha256)?;
        fs::rename(partial, &dest)
            .with_context(|| format!("moving {} into the store", partial.display()))?;
        crate::fsutil::sync_dir(dest.parent().expect("in the store"))?;
        Ok(dest)
    }
}

enum Attempt {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

fn fetched(i: &Input, from: &str) -> Fetched {
    Fetched {
        name: i.name.clone(),
        file: i.file.clone(),
        sha256: i.sha256.clone(),
        size: i.size,
        from: from.to_string(),
    }
}

fn copy_with(r: &mut dyn Read, w: &mut dyn Write, progress: &dyn Fn(u64)) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
        progress(n as u64);
    }
}

// ---- bundles -------------------------------------------------------------

pub const BUNDLE_FORMAT: &str = "mpsi-bundle-v1";
const BUNDLE_INDEX: &str = "mpsi-bundle.json";

#[derive(Serialize, Deserialize)]
struct BundleIndex {
    format: String,
    inputs: Vec<BundleEntry>,
}

#[derive(Serialize, Deserialize)]
struct BundleEntry {
    name: String,
    file: String,
    size: u64,
    sha256: String,
}

#[derive(Debug, Serialize)]
pub struct BundleReport {
    pub bundle: PathBuf,
    pub inputs: Vec<Fetched>,
    pub bytes: u64,
}

/// Writes every input of the lock (which must all be in the store) into
/// one tar: an index (`mpsi-bundle.json`) then `inputs/<file>` for each,
/// in lock order, with fixed headers so the same inputs give the same bytes.
pub fn write_bundle(store: &Store, lf: &LockFile, dest: &Path) -> Result<BundleReport> {
    let all = lf.lock.all_inputs();
    let inputs: Vec<&Input> = all.iter().collect();
    let index = BundleIndex {
        format: BUNDLE_FORMAT.into(),
        inputs: inputs
            .iter()
            .map(|i| BundleEntry {
                name: i.name.clone(),
                file: i.file.clone(),
                size: i.size,
                sha256: i.sha256.clone(),
            })
            .collect(),
    };
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = crate::fsutil::temp_in(dir)?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, tmp.reopen()?));
    let mtime = lf.lock.source_date_epoch;
    let header = |path: &str, size: u64| -> Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(h)
    };
    let json = serde_json::to_vec_pretty(&index)?;
    tar.append(&header(BUNDLE_INDEX, json.len() as u64)?, &json[..])?;
    let mut report = BundleReport {
        bundle: dest.to_path_buf(),
        inputs: Vec::new(),
        bytes: 0,
    };
    for i in inputs {
        let path = store.input(i).ok_or_else(|| MissingInput {
            name: i.name.clone(),
            file: i.file.clone(),
            sha256: i.sha256.clone(),
            why: "not in the store; run `mpsi fetch` first".into(),
        })?;
        let f = fs::File::open(&path)?;
        tar.append(&header(&format!("inputs/{}", i.file), i.size)?, f)
            .with_context(|| format!("adding {} to the bundle", i.file))?;
        report.bytes += i.size;
        report.inputs.push(fetched(i, "store"));
    }
    let w = tar.into_inner().context("finishing the bundle")?;
    w.into_inner().map_err(|e| e.into_error())?;
    crate::fsutil::commit(tmp, dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(report)
}

/// Imports `needed` inputs from a bundle into the store, verifying each.
/// Fails, naming the input, if the bundle lacks one.
pub fn import_bundle(store: &Store, bundle: &Path, needed: &[&Input]) -> Result<()> {
    let f = fs::File::open(bundle)
        .with_context(|| format!("opening the input bundle {}", bundle.display()))?;
    let mut ar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, f));
    let mut found = std::collections::BTreeSet::new();
    let mut saw_index = false;
    for entry in ar
        .entries()
        .with_context(|| format!("reading {}", bundle.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", bundle.display()))?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if path == BUNDLE_INDEX {
            let mut s = String::new();
            entry.read_to_string(&mut s)?;
            let index: BundleIndex = serde_json::from_str(&s)
                .with_context(|| format!("{}: bad {BUNDLE_INDEX}", bundle.display()))?;
            if index.format != BUNDLE_FORMAT {
                bail!(
                    "{} is a {} bundle; this mpsi reads {BUNDLE_FORMAT}",
                    bundle.display(),
                    index.format
                );
            }
            saw_index = true;
            continue;
        }
        let Some(file) = path.strip_prefix("inputs/") else {
            continue;
        };
        for i in needed.iter().filter(|i| i.file == file) {
            if store.input(i).is_some() {
                found.insert(i.name.clone());
                continue;
            }
            let mut w = store.input_writer(i)?;
            io::copy(&mut entry, &mut w)
                .with_context(|| format!("copying {file} out of {}", bundle.display()))?;
            w.finish(&format!("bundle {}", bundle.display()))?;
            found.insert(i.name.clone());
            break;
        }
    }
    if !saw_index {
        bail!(
            "{} is not an mpsi input bundle (no {BUNDLE_INDEX}); write one with `mpsi fetch --bundle FILE`",
            bundle.display()
        );
    }
    if let Some(i) = needed.iter().find(|i| !found.contains(&i.name)) {
        return Err(MissingInput {
            name: i.name.clone(),
            file: i.file.clone(),
            sha256: i.sha256.clone(),
            why: format!(
                "the bundle {} does not hold it; write a bundle from the current lock with `mpsi fetch --bundle FILE`",
                bundle.display()
            ),
        }
        .into());
    }
    Ok(())
}
/// How a download continues from the answer's status: appending to the
/// partial file (206 from where it ends), from the start (200), or retried.
fn resume_or_restart(
    resp: &reqwest::blocking::Response,
    have: u64,
    partial: &Path,
) -> Result<bool, Attempt> {
    let status = resp.status();
    match status.as_u16() {
        206 => {
            let start = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(have) {
                // Not the range we asked for: start over.
                let _ = fs::remove_file(partial);
                return Err(Attempt::Retry(anyhow::anyhow!(
                    "server answered a range request with an unexpected Content-Range"
                )));
            }
            Ok(true)
        }
        200 => Ok(false),
        416 => {
            let _ = fs::remove_file(partial);
            Err(Attempt::Retry(anyhow::anyhow!(
                "server refused to resume (416); starting over"
            )))
        }
        429 | 500..=599 => Err(Attempt::Retry(anyhow::anyhow!("HTTP {status}"))),
        _ => Err(Attempt::Fatal(anyhow::anyhow!("HTTP {status}"))),
    }
}
