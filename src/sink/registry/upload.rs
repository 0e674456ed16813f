//! One blob to a registry: HEAD and skip what it has; mount from another
//! repository when the push record knows one; else an upload session
//! (POST) and the bytes streamed from disk, verified while read: one PUT,
//! or PATCH chunks when asked for. Any transient failure restarts the blob
//! from a fresh session (a half-sent body may have been appended to the
//! old one), replaying from disk.

use super::client::{Registry, Replay, check_digest, transient};
use crate::progress::Task;
use anyhow::{Context, Result, anyhow};
use reqwest::blocking::Body;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A blob to push: a file verified while read, or bytes in memory.
#[derive(Clone)]
pub enum Source {
    Layer(Box<crate::model::Layer>),
    Bytes(Arc<Vec<u8>>),
}

#[derive(Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub source: Source,
    /// A repository on the same registry that may hold it (for a mount).
    pub mount_from: Option<String>,
}

impl Blob {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match &self.source {
            Source::Layer(l) => Box::new(l.open()?),
            Source::Bytes(b) => Box::new(io::Cursor::new(b.as_ref().clone())),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Skipped,
    Mounted,
    Uploaded,
}

/// How blob bodies are sent.
#[derive(Clone, Debug)]
pub struct Chunking {
    /// Send blobs larger than this in PATCH chunks of this size (None:
    /// one PUT, unless the registry asks for chunks).
    pub chunk_size: Option<u64>,
}

/// Shared byte counts for progress: the run's total and this blob's bar.
pub struct Progress {
    pub total: Arc<dyn Task>,
    pub sent: Arc<AtomicU64>,
}

/// Counts bytes into the progress bars and keeps a corruption error
/// (which must not be retried) where the caller can see it after reqwest
/// has wrapped it.
struct Counting {
    inner: Box<dyn Read + Send>,
    total: Arc<dyn Task>,
    blob: Arc<dyn Task>,
    sent: Arc<AtomicU64>,
    this_try: Arc<AtomicU64>,
    corrupt: Arc<Mutex<Option<String>>>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                let n64 = n as u64;
                self.this_try.fetch_add(n64, Ordering::Relaxed);
                self.blob.advance(n64);
                let s = self.sent.fetch_add(n64, Ordering::Relaxed) + n64;
                self.total.set_position(s);
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    *self.corrupt.lock().unwrap() = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

struct Attempt<'a> {
    reg: &'a Registry,
    blob: &'a Blob,
    chunking: &'a Chunking,
    progress: &'a Progress,
    bar: Arc<dyn Task>,
    this_try: Arc<AtomicU64>,
    corrupt: Arc<Mutex<Option<String>>>,
}

/// Pushes one blob, retrying transient failures from a fresh session.
pub fn push_blob(
    reg: &Registry,
    blob: &Blob,
    chunking: &Chunking,
    progress: &Progress,
    bar: Arc<dyn Task>,
) -> Result<Outcome> {
    if reg.has_blob(&blob.digest)? {
        return Ok(Outcome::Skipped);
    }
    let mut tries = 0u32;
    loop {
        let at = Attempt {
            reg,
            blob,
            chunking,
            progress,
            bar: bar.clone(),
            this_try: Arc::new(AtomicU64::new(0)),
            corrupt: Arc::new(Mutex::new(None)),
        };
        let result = at.run(tries == 0);
        // Bytes of a failed try are sent again: take them off the bars.
        let counted = at.this_try.load(Ordering::Relaxed);
        if let Some(why) = at.corrupt.lock().unwrap().take() {
            return Err(anyhow!(why)).context(format!("uploading blob {}", blob.digest));
        }
        let err = match result {
            Ok(o) => return Ok(o),
            Err(e) => e,
        };
        let (again, retry_after) = transient(&err);
        tries += 1;
        if !again || tries >= reg.retry.attempts {
            return Err(err).context(format!("uploading blob {}", blob.digest));
        }
        // The upload may have gone through with only its answer lost.
        if reg.has_blob(&blob.digest).unwrap_or(false) {
            return Ok(Outcome::Uploaded);
        }
        let s = progress.sent.fetch_sub(counted, Ordering::Relaxed) - counted;
        progress.total.set_position(s);
        bar.set_position(0);
        reg.retries.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(reg.retry.delay(tries - 1, retry_after));
    }
}

impl Attempt<'_> {
    fn run(&self, try_mount: bool) -> Result<Outcome> {
        let d = &self.blob.digest;
        if try_mount && let Some(from) = &self.blob.mount_from {
            match self.mount(from) {
                Ok(Some(o)) => return Ok(o),
                Ok(None) => {}
                // A refused mount (401 without the source's scope, 404 of an
                // unknown source, quirks) is never fatal: upload instead.
                Err(_) => {}
            }
        }
        let url = self.reg.url("blobs/uploads/")?;
        let what = format!("starting an upload of blob {d}");
        let r = self.reg.execute(&what, 0, Replay::Yes, &|| {
            Ok(self
                .reg
                .request(Method::POST, url.clone())
                .header(CONTENT_LENGTH, 0))
        })?;
        let r = Registry::expect(&what, r, &[StatusCode::ACCEPTED])?;
        let loc = self.reg.location(&r)?;
        self.send_body(loc, min_chunk(&r))
    }

    /// Mounts from `from`: Some(Mounted) on 201; on 202 the registry
    /// started an ordinary upload session instead, which is used.
    fn mount(&self, from: &str) -> Result<Option<Outcome>> {
        let d = &self.blob.digest;
        let mut url = self.reg.url("blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", d)
            .append_pair("from", from);
        let what = format!("mounting blob {d} from {from}");
        let r = self.reg.execute(&what, 0, Replay::Yes, &|| {
            Ok(self
                .reg
                .request(Method::POST, url.clone())
                .header(CONTENT_LENGTH, 0))
        })?;
        let r = Registry::expect(&what, r, &[StatusCode::CREATED, StatusCode::ACCEPTED])?;
        if r.status() == StatusCode::CREATED {
            check_digest(&what, r.headers(), d)?;
            self.bar.set_position(self.blob.size);
            return Ok(Some(Outcome::Mounted));
        }
        let loc = self.reg.location(&r)?;
        self.send_body(loc, min_chunk(&r)).map(Some)
    }

    fn send_body(&self, loc: Url, min_chunk: Option<u64>) -> Result<Outcome> {
        let size = self.blob.size;
        let chunk = match (self.chunking.chunk_size, min_chunk) {
            (Some(c), m) if size > c => Some(c.max(m.unwrap_or(0))),
            (c, Some(m)) if size > m => Some(c.unwrap_or(m).max(m)),
            _ => None,
        };
        match chunk {
            Some(c) => self.chunked(loc, c),
            None => self.monolithic(loc),
        }
    }

    fn counting(&self, inner: Box<dyn Read + Send>) -> Counting {
        Counting {
            inner,
            total: self.progress.total.clone(),
            blob: self.bar.clone(),
            sent: self.progress.sent.clone(),
            this_try: self.this_try.clone(),
            corrupt: self.corrupt.clone(),
        }
    }

    /// One PUT with the whole blob streamed from disk.
    fn monolithic(&self, loc: Url) -> Result<Outcome> {
        let d = &self.blob.digest;
        let mut url = loc;
        url.query_pairs_mut().append_pair("digest", d);
        let what = format!("uploading blob {d}");
        let r = self.reg.execute(&what, self.blob.size, Replay::No, &|| {
            let body = Body::sized(self.counting(self.blob.open()?), self.blob.size);
            Ok(self
                .reg
                .request(Method::PUT, url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, self.blob.size)
                .body(body))
        })?;
        let r = Registry::expect(&what, r, &[StatusCode::CREATED])?;
        check_digest(&what, r.headers(), d)?;
        Ok(Outcome::Uploaded)
    }

    /// PATCH chunks of `chunk` bytes (the registry's latest Location each
    /// time; 202 or 201 accepted), then the closing PUT with the digest.
    fn chunked(&self, mut loc: Url, chunk: u64) -> Result<Outcome> {
        let d = &self.blob.digest;
        let mut reader = self.counting(self.blob.open()?);
        let mut start = 0u64;
        loop {
            let mut buf = Vec::with_capacity(chunk as usize);
            (&mut reader).take(chunk).read_to_end(&mut buf)?;
            if buf.is_empty() {
                break;
            }
            loc = self.send_chunk(loc, start, &buf)?;
            start += buf.len() as u64;
        }
        let mut url = loc;
        url.query_pairs_mut().append_pair("digest", d);
        let what = format!("completing the upload of blob {d}");
        // No body: safe to resend (a lost answer to a commit that went
        // through is caught by push_blob's HEAD).
        let r = self.reg.execute(&what, 0, Replay::Yes, &|| {
            Ok(self
                .reg
                .request(Method::PUT, url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, 0))
        })?;
        let r = Registry::expect(&what, r, &[StatusCode::CREATED])?;
        check_digest(&what, r.headers(), d)?;
        Ok(Outcome::Uploaded)
    }
}

impl Attempt<'_> {
    /// PATCHes `buf` at `start`; after a transient failure asks the
    /// session how much it holds (GET, `Range`) and sends the rest, so a
    /// failed chunk costs one chunk, not the blob. Returns the latest
    /// Location.
    fn send_chunk(&self, mut loc: Url, start: u64, buf: &[u8]) -> Result<Url> {
        let mut off = 0usize;
        let mut tries = 0u32;
        loop {
            match self.patch(&loc, start + off as u64, &buf[off..]) {
                Ok(next) => return Ok(next.unwrap_or(loc)),
                Err(e) => {
                    let (again, retry_after) = transient(&e);
                    tries += 1;
                    if !again || tries >= self.reg.retry.attempts {
                        return Err(e);
                    }
                    self.reg.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(self.reg.retry.delay(tries - 1, retry_after));
                    let (next, held) = self.status(&loc)?;
                    let end = start + buf.len() as u64;
                    if held < start || held > end {
                        // Not where we left it: start the blob again.
                        return Err(e);
                    }
                    loc = next.unwrap_or(loc);
                    off = (held - start) as usize;
                    if off == buf.len() {
                        return Ok(loc);
                    }
                }
            }
        }
    }

    fn patch(&self, loc: &Url, start: u64, bytes: &[u8]) -> Result<Option<Url>> {
        let end = start + bytes.len() as u64 - 1;
        let what = format!("uploading bytes {start}-{end} of blob {}", self.blob.digest);
        let r = self
            .reg
            .execute(&what, bytes.len() as u64, Replay::No, &|| {
                Ok(self
                    .reg
                    .request(Method::PATCH, loc.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{start}-{end}"))
                    .header(CONTENT_LENGTH, bytes.len())
                    .body(bytes.to_vec()))
            })?;
        // 201 too: ECR answers intermediate chunks with it.
        let ok = [
            StatusCode::ACCEPTED,
            StatusCode::CREATED,
            StatusCode::NO_CONTENT,
        ];
        let r = Registry::expect(&what, r, &ok)?;
        if r.headers().contains_key(LOCATION) {
            return self.reg.location(&r).map(Some);
        }
        Ok(None)
    }

    /// The session's Location and how many bytes it holds (`Range: 0-N`
    /// means N+1; distribution says `0-0` for an empty session too, and
    /// resumes happen only at chunk boundaries, so it counts as 0).
    fn status(&self, loc: &Url) -> Result<(Option<Url>, u64)> {
        let what = format!(
            "asking how much of blob {} the registry holds",
            self.blob.digest
        );
        let r = self.reg.execute(&what, 0, Replay::Yes, &|| {
            Ok(self.reg.request(Method::GET, loc.clone()))
        })?;
        let r = Registry::expect(&what, r, &[StatusCode::NO_CONTENT, StatusCode::OK])?;
        let held = r
            .headers()
            .get(reqwest::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.trim()
                    .strip_prefix("0-")
                    .and_then(|e| e.parse::<u64>().ok())
            })
            .map_or(0, |end| if end == 0 { 0 } else { end + 1 });
        let next = if r.headers().contains_key(LOCATION) {
            Some(self.reg.location(&r)?)
        } else {
            None
        };
        Ok((next, held))
    }
}

/// `OCI-Chunk-Min-Length` of an upload session, if the registry sets one.
fn min_chunk(r: &reqwest::blocking::Response) -> Option<u64> {
    r.headers()
        .get("oci-chunk-min-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
}
