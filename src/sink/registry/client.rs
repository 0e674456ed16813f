//! One repository on one registry, spoken to with the distribution API:
//! requests with auth and retries, and the blob and manifest operations a
//! push needs.

use super::auth::Auth;
use crate::http::{self, Client, RequestBuilder, Response, RetryPolicy, Timeouts};
use anyhow::{Context, Result, anyhow};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, Url};
use std::sync::atomic::{AtomicU64, Ordering};

/// A registry's final answer to one request (status and what it said).
#[derive(Debug, thiserror::Error)]
#[error("{what}: the registry answered {status}{said}")]
pub struct RegistryError {
    pub what: String,
    pub status: StatusCode,
    pub said: String,
    pub retry_after: Option<std::time::Duration>,
}

impl RegistryError {
    /// Worth another try from the start of the blob (timeouts, rate limits,
    /// server errors).
    pub fn retryable(&self) -> bool {
        http::retryable(self.status)
    }
}

/// The distribution error body, as `: CODE: message (detail)`, or a short
/// excerpt of a body that is not one.
pub fn error_summary(resp: Response) -> String {
    let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
    summarise_body(&body)
}

fn summarise_body(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(errs) = v["errors"].as_array()
    {
        let parts: Vec<String> = errs
            .iter()
            .map(|e| {
                let mut s = format!(
                    "{}: {}",
                    e["code"].as_str().unwrap_or("UNKNOWN"),
                    e["message"].as_str().unwrap_or("")
                );
                if !e["detail"].is_null() {
                    s += &format!(" (detail: {})", e["detail"]);
                }
                s
            })
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.chars().take(300).collect::<String>())
    }
}

pub struct Registry {
    http: Client,
    /// `scheme://host/v2/`
    base: Url,
    pub repo: String,
    pub auth: Auth,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    /// Requests sent again after a transient failure.
    pub retries: AtomicU64,
}

/// What a request should do on a transient failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Send it again (it is idempotent, or its body replays from disk).
    Yes,
    /// Return the failure: the caller restarts a larger step.
    No,
}

impl Registry {
    pub fn new(
        http: Client,
        base: Url,
        repo: &str,
        auth: Auth,
        retry: RetryPolicy,
        timeouts: Timeouts,
    ) -> Self {
        Registry {
            http,
            base,
            repo: repo.to_string(),
            auth,
            retry,
            timeouts,
            retries: AtomicU64::new(0),
        }
    }

    /// `/v2/<repo>/<path>` (path may carry a query).
    pub fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(&format!("{}/{path}", self.repo))
            .with_context(|| format!("building the URL for {path}"))
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends the request `mk` builds (again for each try: bodies reopen
    /// their file), with auth; on a 401 it answers the challenge once and
    /// resends; on a transient failure it backs off and resends when
    /// `replay` allows. Returns the first final response.
    pub fn execute(
        &self,
        what: &str,
        body_len: u64,
        replay: Replay,
        mk: &dyn Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut reauthed = false;
        let mut attempt = 0u32;
        loop {
            self.auth.refresh_if_needed(&self.http, &self.timeouts)?;
            let mut req = mk()?
                .build()
                .with_context(|| format!("{what}: building the request"))?;
            *req.timeout_mut() = Some(self.timeouts.deadline(body_len));
            // Credentials only to the registry itself, not to a storage
            // host an upload Location may point at.
            if req.url().host_str() == self.base.host_str()
                && req.url().port_or_known_default() == self.base.port_or_known_default()
                && let Some(h) = self.auth.header()?
            {
                req.headers_mut().insert(AUTHORIZATION, h);
            }
            let last = replay == Replay::No || attempt + 1 >= self.retry.attempts;
            let wait = match self.http.execute(req) {
                Err(e) if last => return Err(e).with_context(|| format!("{what}: request failed")),
                Err(_) => self.retry.delay(attempt, None),
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !reauthed => {
                    reauthed = true;
                    let headers = r.headers().clone();
                    drop(r);
                    self.auth
                        .on_unauthorized(&self.http, &self.timeouts, &headers)
                        .with_context(|| format!("{what}: authenticating"))?;
                    continue;
                }
                Ok(r) if http::retryable(r.status()) && !last => {
                    self.retry.delay(attempt, http::retry_after(r.headers()))
                }
                Ok(r) => return Ok(r),
            };
            self.retries.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            std::thread::sleep(wait);
        }
    }

    /// The response if its status is one of `ok`, else a `RegistryError`
    /// quoting what the registry said.
    pub fn expect(what: &str, resp: Response, ok: &[StatusCode]) -> Result<Response> {
        if ok.contains(&resp.status()) {
            return Ok(resp);
        }
        let status = resp.status();
        let retry_after = http::retry_after(resp.headers());
        let mut said = error_summary(resp);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            said += "; check the credentials (--creds, MPSI_REGISTRY_USER/MPSI_REGISTRY_PASSWORD, auth.json or docker config.json) and their rights on this repository";
        }
        Err(RegistryError {
            what: what.to_string(),
            status,
            said,
            retry_after,
        }
        .into())
    }

    /// `GET /v2/`: learns the auth scheme once, before blobs go up in
    /// parallel, and turns refused credentials into an error with the
    /// registry's words (a HEAD's answer has no body to quote).
    pub fn ping(&self) -> Result<()> {
        let url = self.base.clone();
        let what = format!("connecting to {}", self.base);
        let r = self.execute(&what, 0, Replay::Yes, &|| {
            Ok(self.request(Method::GET, url.clone()))
        })?;
        Self::expect(&what, r, &[StatusCode::OK]).map(|_| ())
    }

    /// Whether the registry has the blob (HEAD).
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"))?;
        let what = format!("checking for blob {digest}");
        let r = self.execute(&what, 0, Replay::Yes, &|| {
            Ok(self.request(Method::HEAD, url.clone()))
        })?;
        match r.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Self::expect(&what, r, &[]).map(|_| false),
        }
    }

    /// The `Location` of a response, resolved against the request URL
    /// (registries send absolute and relative ones).
    pub fn location(&self, resp: &Response) -> Result<Url> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("the registry's answer to {} has no Location", resp.url()))?;
        resp.url()
            .join(loc)
            .with_context(|| format!("the registry sent an invalid Location {loc:?}"))
    }

    /// PUTs the manifest under `reference` (a tag or its digest); checks
    /// the digest the registry computed against ours. Returns the answer's
    /// headers (`OCI-Subject` says the registry indexed a referrer).
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<HeaderMap> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let what = format!("putting the manifest as {}:{reference}", self.repo);
        let body = bytes.to_vec();
        let r = self.execute(&what, body.len() as u64, Replay::Yes, &|| {
            Ok(self
                .request(Method::PUT, url.clone())
                .header(CONTENT_TYPE, media_type)
                .header(CONTENT_LENGTH, body.len())
                .body(body.clone()))
        })?;
        let r = Self::expect(&what, r, &[StatusCode::CREATED, StatusCode::OK])?;
        check_digest(&what, r.headers(), digest)?;
        Ok(r.headers().clone())
    }

    /// GETs the manifest `reference` accepting `media_type`; None when the
    /// registry has none (404).
    pub fn get_manifest(&self, reference: &str, media_type: &str) -> Result<Option<Vec<u8>>> {
        let url = self.url(&format!("manifests/{reference}"))?;
        let what = format!("getting the manifest {}:{reference}", self.repo);
        let r = self.execute(&what, 0, Replay::Yes, &|| {
            Ok(self
                .request(Method::GET, url.clone())
                .header(ACCEPT, media_type))
        })?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let r = Self::expect(&what, r, &[StatusCode::OK])?;
        let bytes = r
            .bytes()
            .with_context(|| format!("{what}: reading the answer"))?;
        Ok(Some(bytes.to_vec()))
    }
}

/// Whether an error is worth another try (a transient status or a
/// transport failure), and how long the registry asked us to wait.
pub fn transient(err: &anyhow::Error) -> (bool, Option<std::time::Duration>) {
    match err.downcast_ref::<RegistryError>() {
        Some(r) => (r.retryable(), r.retry_after),
        None => (err.chain().any(|c| c.is::<reqwest::Error>()), None),
    }
}

/// `Docker-Content-Digest`, when the registry sends it, must be ours.
pub fn check_digest(what: &str, headers: &HeaderMap, digest: &str) -> Result<()> {
    match headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        Some(d) if d != digest => Err(anyhow!(
            "{what}: the registry stored digest {d}, but the content is {digest}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_error_bodies_are_quoted() {
        let s = summarise_body(
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"a","Action":"push"}]}]}"#,
        );
        assert!(
            s.starts_with(": UNAUTHORIZED: authentication required (detail: "),
            "{s}"
        );
        assert_eq!(summarise_body(b""), "");
        assert_eq!(summarise_body(b"plain text\n"), ": plain text");
    }

    #[test]
    fn locations_resolve_relative_and_absolute() {
        let base = Url::parse("http://127.0.0.1:5000/v2/a/blobs/uploads/").unwrap();
        assert_eq!(
            base.join("/v2/a/blobs/uploads/x?_state=1")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(
            base.join("y").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/y"
        );
        assert_eq!(
            base.join("https://other/z").unwrap().as_str(),
            "https://other/z"
        );
    }
}
