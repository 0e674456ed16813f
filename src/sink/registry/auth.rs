//! Registry authentication: anonymous, Basic, and Bearer tokens through
//! the `WWW-Authenticate` challenge (Docker's token spec: a GET with Basic
//! credentials, or the OAuth2 POST with an identity token). Reactive, as
//! ggcr does it: requests go out with what we have; a 401 brings a
//! challenge, whose scopes are merged, and a fresh token is fetched once.
//! Tokens are cached per scope set.
//!
//! Credentials go only to the registry host and the token realm its
//! challenge names, and never over plain http to a non-loopback host.

use super::creds::{Credential, Secret};
use crate::http::{Client, Timeouts};
use crate::model::reference::is_loopback_host;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A parsed challenge: its scheme (lowercase) and parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value (RFC 7235: several challenges,
/// quoted strings with escapes). Written by hand: no maintained small crate
/// parses challenges, and the grammar is a few lines.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',' || b[i] == b'\t') {
            i += 1;
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b',' | b'=' | b'\t') {
            i += 1;
        }
        let token = &value[start..i];
        if token.is_empty() {
            break;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            let v = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut s = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = value[i..].chars().next().unwrap_or(' ');
                    s.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                s
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                value[s..i].trim().to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), v);
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct Token {
    value: Secret,
    expires: Instant,
}

struct State {
    scheme: Scheme,
    scopes: BTreeSet<String>,
    tokens: HashMap<String, Token>,
}

type Lookup = Box<dyn Fn() -> Result<Option<Credential>> + Send + Sync>;

pub struct Auth {
    /// Registry host name (no port), where plain http is judged.
    host: String,
    /// Whether the registry is spoken to over plain http.
    plain_http: bool,
    lookup: Lookup,
    creds: OnceLock<Result<Option<Credential>, String>>,
    state: Mutex<State>,
}

impl Auth {
    /// `scopes`: what this run needs up front (push on the target, pull on
    /// mount sources); challenges may add more.
    pub fn new(host: &str, plain_http: bool, scopes: Vec<String>, lookup: Lookup) -> Auth {
        Auth {
            host: host.to_string(),
            plain_http,
            lookup,
            creds: OnceLock::new(),
            state: Mutex::new(State {
                scheme: Scheme::Anonymous,
                scopes: scopes.into_iter().collect(),
                tokens: HashMap::new(),
            }),
        }
    }

    /// The credentials, looked up once, on the first challenge.
    fn credential(&self) -> Result<Option<&Credential>> {
        let c = self
            .creds
            .get_or_init(|| (self.lookup)().map_err(|e| format!("{e:#}")));
        match c {
            Ok(c) => Ok(c.as_ref()),
            Err(e) => Err(anyhow!("looking up registry credentials: {e}")),
        }
    }

    fn may_send_secrets(&self, host: &str, plain_http: bool) -> Result<()> {
        if plain_http && !is_loopback_host(host) {
            bail!(
                "refusing to send credentials over plain http to {host}; \
                 use https (drop --insecure-registry) or a loopback registry"
            );
        }
        Ok(())
    }

    /// The Authorization header for the next request, if any.
    pub fn header(&self) -> Result<Option<HeaderValue>> {
        let st = self.state.lock().unwrap();
        let v = match &st.scheme {
            Scheme::Anonymous => return Ok(None),
            Scheme::Basic => match self.credential()? {
                Some(Credential::Basic { username, password }) => {
                    basic_value(username, password.expose())
                }
                _ => return Ok(None),
            },
            Scheme::Bearer { .. } => match st.tokens.get(&scope_key(&st.scopes)) {
                Some(t) if t.expires > Instant::now() => format!("Bearer {}", t.value.expose()),
                _ => return Ok(None),
            },
        };
        let mut h = HeaderValue::from_str(&v).context("credentials are not valid in a header")?;
        h.set_sensitive(true);
        Ok(Some(h))
    }

    /// Whether a Bearer token must be fetched before the next request
    /// (the scheme is known and the cached one expired).
    pub fn needs_token(&self) -> bool {
        let st = self.state.lock().unwrap();
        matches!(st.scheme, Scheme::Bearer { .. })
            && st
                .tokens
                .get(&scope_key(&st.scopes))
                .is_none_or(|t| t.expires <= Instant::now())
    }

    /// Reacts to a 401: learns the scheme and scopes from the challenge and
    /// fetches a token for Bearer.
    pub fn on_unauthorized(&self, http: &Client, t: &Timeouts, headers: &HeaderMap) -> Result<()> {
        let value = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let challenges = parse_challenges(&value);
        let chosen = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
            .ok_or_else(|| {
                anyhow!("the registry answered 401 without a Basic or Bearer challenge ({value:?})")
            })?;
        {
            let mut st = self.state.lock().unwrap();
            if chosen.scheme == "basic" {
                st.scheme = Scheme::Basic;
            } else {
                let realm = chosen
                    .params
                    .get("realm")
                    .cloned()
                    .context("the registry's Bearer challenge has no realm")?;
                st.scheme = Scheme::Bearer {
                    realm,
                    service: chosen.params.get("service").cloned(),
                };
                if let Some(s) = chosen.params.get("scope") {
                    st.scopes
                        .extend(s.split(' ').filter(|s| !s.is_empty()).map(String::from));
                }
            }
        }
        if chosen.scheme == "basic" {
            return match self.credential()? {
                Some(Credential::Basic { .. }) => {
                    self.may_send_secrets(&self.host, self.plain_http)
                }
                Some(Credential::Identity { .. } | Credential::Registry { .. }) => {
                    bail!("the registry asks for Basic auth but the credentials found are a token")
                }
                None => bail!(no_credentials(&self.host)),
            };
        }
        self.fetch_token(http, t)
    }

    fn fetch_token(&self, http: &Client, t: &Timeouts) -> Result<()> {
        let (realm, service, scopes) = {
            let st = self.state.lock().unwrap();
            match &st.scheme {
                Scheme::Bearer { realm, service } => {
                    (realm.clone(), service.clone(), st.scopes.clone())
                }
                _ => return Ok(()),
            }
        };
        let realm_url = reqwest::Url::parse(&realm)
            .with_context(|| format!("the registry's token realm {realm:?} is not a URL"))?;
        let realm_host = realm_url
            .host_str()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        let cred = self.credential()?;
        if let Some(Credential::Registry { token }) = cred {
            // A bearer token for the registry itself: no token service.
            self.may_send_secrets(&self.host, self.plain_http)?;
            let mut st = self.state.lock().unwrap();
            let key = scope_key(&st.scopes);
            let expires = Instant::now() + Duration::from_secs(24 * 3600);
            let value = token.clone();
            st.tokens.insert(key, Token { value, expires });
            return Ok(());
        }
        if cred.is_some() {
            self.may_send_secrets(&realm_host, realm_url.scheme() == "http")?;
        }
        // Push scope first: some registries read only the first scope.
        let mut ordered: Vec<&String> = scopes.iter().filter(|s| s.contains("push")).collect();
        ordered.extend(scopes.iter().filter(|s| !s.contains("push")));
        // A plain-http registry's client has no TLS roots; an https realm
        // gets a client of its own.
        let tls_client;
        let http = if self.plain_http && realm_url.scheme() == "https" {
            tls_client = crate::http::client(t, true)?;
            &tls_client
        } else {
            http
        };
        let req = token_request(http, realm_url, service.as_deref(), &ordered, cred)?;
        let resp = req
            .timeout(t.deadline(0))
            .send()
            .with_context(|| format!("fetching a registry token from {realm}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = super::client::error_summary(resp);
            bail!(
                "the token service {realm} refused the request ({status}){body}{}",
                if cred.is_none() {
                    format!("; {}", no_credentials(&self.host))
                } else {
                    String::new()
                }
            );
        }
        let v: serde_json::Value = resp.json_value()?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|s| !s.is_empty())
            .context("the token service's answer has no token")?;
        let secs = v["expires_in"].as_u64().unwrap_or(60).max(20);
        let mut st = self.state.lock().unwrap();
        let key = scope_key(&st.scopes);
        st.tokens.insert(
            key,
            Token {
                value: Secret::new(token.to_string()),
                // Refresh a little ahead of expiry.
                expires: Instant::now() + Duration::from_secs(secs - 10),
            },
        );
        Ok(())
    }

    /// Fetches a token ahead of a request when the cached one expired.
    pub fn refresh_if_needed(&self, http: &Client, t: &Timeouts) -> Result<()> {
        if self.needs_token() {
            self.fetch_token(http, t)?;
        }
        Ok(())
    }
}

/// The token request: the OAuth2 POST with an identity (refresh) token,
/// else a GET with Basic credentials or none.
fn token_request(
    http: &Client,
    realm_url: reqwest::Url,
    service: Option<&str>,
    ordered: &[&String],
    cred: Option<&Credential>,
) -> Result<reqwest::blocking::RequestBuilder> {
    Ok(match cred {
        Some(Credential::Identity { token, .. }) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", token.expose())
                .append_pair("client_id", "mpsi")
                .append_pair(
                    "scope",
                    &ordered
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            http.post(realm_url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.finish())
        }
        other => {
            let mut u = realm_url;
            {
                let mut q = u.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in ordered {
                    q.append_pair("scope", s);
                }
            }
            let r = http.get(u);
            match other {
                Some(Credential::Basic { username, password }) => {
                    let mut h = HeaderValue::from_str(&basic_value(username, password.expose()))?;
                    h.set_sensitive(true);
                    r.header(reqwest::header::AUTHORIZATION, h)
                }
                _ => r,
            }
        }
    })
}

fn no_credentials(host: &str) -> String {
    format!(
        "the registry {host} requires authentication and no credentials were found: \
         pass --creds USER:PASS, set MPSI_REGISTRY_USER and MPSI_REGISTRY_PASSWORD, \
         or log in with `skopeo login` / `docker login`"
    )
}

fn basic_value(user: &str, pass: &str) -> String {
    let raw = format!("{user}:{pass}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn scope_key(scopes: &BTreeSet<String>) -> String {
    scopes.iter().cloned().collect::<Vec<_>>().join(" ")
}

/// JSON from a blocking response without reqwest's `json` feature.
trait JsonValue {
    fn json_value(self) -> Result<serde_json::Value>;
}

impl JsonValue for reqwest::blocking::Response {
    fn json_value(self) -> Result<serde_json::Value> {
        let bytes = self.bytes().context("reading the token service's answer")?;
        serde_json::from_slice(&bytes).context("the token service's answer is not JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_like_rfc_7235() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(
            c[0].params["scope"],
            "repository:a/b:pull,push repository:c:pull"
        );
        assert_eq!(c[0].params["error"], "insufficient_scope");
        let c = parse_challenges(r#"Basic realm="a \"quoted\" realm", Bearer realm=x,service=y"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].params["realm"], "a \"quoted\" realm");
        assert_eq!(
            (c[1].scheme.as_str(), c[1].params["service"].as_str()),
            ("bearer", "y")
        );
    }

    #[test]
    fn secrets_never_go_over_plain_http_to_remote_hosts() {
        let a = Auth::new("example.com", true, vec![], Box::new(|| Ok(None)));
        assert!(a.may_send_secrets("example.com", true).is_err());
        assert!(a.may_send_secrets("127.0.0.1", true).is_ok());
        assert!(a.may_send_secrets("example.com", false).is_ok());
    }
}
