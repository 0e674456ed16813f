//! The HTTP client and retry policy shared by network sinks.
//!
//! Timeouts: a connect timeout, and a stall timeout that never caps a
//! whole transfer. reqwest's blocking client only has whole-request
//! timeouts (its read timeout also runs from the start of the request,
//! body upload included), so the stall timeout is made of two parts:
//! `TCP_USER_TIMEOUT` closes a connection whose sent bytes stay
//! unacknowledged that long (an upload that stops moving), and each request
//! gets a deadline of the stall timeout plus its body at a floor rate, so a
//! slow but moving upload of any size is never cut, while a peer that stops
//! answering is.

use anyhow::{Context, Result};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::Duration;

pub use reqwest::blocking::{Client, RequestBuilder, Response};

#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// How long a connection may make no progress.
    pub stall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            stall: Duration::from_secs(60),
        }
    }
}

/// Below this rate an upload counts as stalled (see the module comment).
const FLOOR_BYTES_PER_SEC: u64 = 16 * 1024;

impl Timeouts {
    /// The deadline of one request sending `body_bytes`.
    pub fn deadline(&self, body_bytes: u64) -> Duration {
        self.stall + Duration::from_secs(body_bytes / FLOOR_BYTES_PER_SEC)
    }
}

/// One client for all requests of a run (connections are pooled).
/// `tls: false` gives a client for plain http only: loading the system's
/// certificate roots costs about 50 ms a run, a third of a warm push to a
/// local registry.
pub fn client(t: &Timeouts, tls: bool) -> Result<Client> {
    // ring as rustls' crypto provider (as in fetch): no C build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = Client::builder()
        .connect_timeout(t.connect)
        // No whole-request timeout; each request sets its deadline.
        .timeout(None)
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(concat!("mpsi/", env!("CARGO_PKG_VERSION")))
        // Redirects are followed by hand where a protocol allows them.
        .redirect(reqwest::redirect::Policy::none());
    #[cfg(target_os = "linux")]
    let b = b.tcp_user_timeout(t.stall);
    let b = if tls { b } else { b.tls_certs_only([]) };
    b.build().context("creating the HTTP client")
}

/// Backoff with full jitter: attempt n waits a random time up to
/// base * 2^n (capped), or what the server asked for in `Retry-After`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries in all (the first one included).
    pub attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            // The server's word, bounded so a bad header cannot hang us.
            return d.min(Duration::from_secs(120));
        }
        let cap = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        // Half fixed, half random: spreads clients apart without ever
        // retrying at once.
        let half = cap / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Statuses worth another try: timeouts, rate limits, server errors.
pub fn retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `Retry-After` in seconds (the HTTP-date form is rare for registries
/// and is treated as absent).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 0..10 {
            let d = p.delay(attempt, None);
            let cap = Duration::from_millis(100 * (1 << attempt.min(16))).min(p.max_delay);
            assert!(d >= cap / 2 && d <= cap, "{attempt}: {d:?}");
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(9999))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn retry_after_and_retryable_statuses() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable(StatusCode::UNAUTHORIZED));
        assert!(!retryable(StatusCode::NOT_FOUND));
        let t = Timeouts::default();
        assert_eq!(t.deadline(0), t.stall);
        assert!(t.deadline(1 << 30) > Duration::from_secs(3600));
    }
}
