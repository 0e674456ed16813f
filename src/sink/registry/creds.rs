//! Where registry credentials come from: given explicitly (`--creds`, or
//! the environment, read by the CLI), else the containers `auth.json`
//! chain, else Docker's `config.json` (`auths` with `auth` or
//! `identitytoken`, `credHelpers`, `credsStore` through the
//! docker-credential helper protocol). In every file the most specific key
//! wins (`registry/namespace/repo` before `registry`), with Docker Hub's
//! keys (`https://index.docker.io/v1/`) normalised.
//!
//! Written here rather than with `docker_credential`: that crate ignores
//! namespace keys and the containers chain. Secrets live in `Secret`,
//! whose Debug and Display never show them.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::Value;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A string never printed: Debug and Display show `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug)]
pub enum Credential {
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken`), for the token service.
    Identity {
        token: Secret,
    },
    /// A bearer token for the registry itself (`registrytoken`).
    Registry {
        token: Secret,
    },
}

impl Credential {
    /// From `USER:PASS`.
    pub fn from_user_pass(s: &str) -> Result<Credential> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credential::Basic {
                username: u.to_string(),
                password: Secret(p.to_string()),
            }),
            _ => bail!("credentials must be USER:PASSWORD"),
        }
    }
}

/// The places to look, in order (the CLI fills them from the environment).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub explicit: Option<Credential>,
    /// containers auth.json files: REGISTRY_AUTH_FILE, then
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json.
    pub auth_files: Vec<PathBuf>,
    /// Docker's config.json ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
    pub docker_config: Option<PathBuf>,
}

/// Credentials for `repository` on `registry` (as named in the reference,
/// `docker.io` for Docker Hub).
pub fn lookup(src: &Sources, registry: &str, repository: &str) -> Result<Option<Credential>> {
    if let Some(c) = &src.explicit {
        return Ok(Some(c.clone()));
    }
    let files = src.auth_files.iter().chain(src.docker_config.iter());
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        if let Some(c) = from_file(&doc, registry, repository)
            .with_context(|| format!("credentials for {registry} from {}", path.display()))?
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Keys to try, most specific first: `reg/a/b/c`, `reg/a/b`, `reg/a`, `reg`.
fn candidate_keys(registry: &str, repository: &str) -> Vec<String> {
    let parts: Vec<&str> = repository.split('/').collect();
    let mut keys: Vec<String> = (1..=parts.len())
        .rev()
        .map(|n| format!("{registry}/{}", parts[..n].join("/")))
        .collect();
    keys.push(registry.to_string());
    keys
}

/// A config key as a registry path: no scheme, no `/v1/` or `/v2/` suffix,
/// Docker Hub's aliases as `docker.io`.
fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, rest) = k.split_once('/').map_or((k, ""), |(h, r)| (h, r));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    if rest.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{rest}")
    }
}

fn from_file(doc: &Value, registry: &str, repository: &str) -> Result<Option<Credential>> {
    let find = |section: &str| -> Option<(String, Value)> {
        let map = doc[section].as_object()?;
        candidate_keys(registry, repository)
            .into_iter()
            .find_map(|want| {
                map.iter()
                    .find(|(k, _)| normalise_key(k) == want)
                    .map(|(_, v)| (want, v.clone()))
            })
    };
    if let Some((_, helper)) = find("credHelpers")
        && let Some(name) = helper.as_str()
    {
        return helper_get(name, registry);
    }
    if let Some((_, entry)) = find("auths")
        && let Some(c) = from_auth_entry(&entry)?
    {
        return Ok(Some(c));
    }
    if let Some(store) = doc["credsStore"].as_str().filter(|s| !s.is_empty()) {
        return helper_get(store, registry);
    }
    Ok(None)
}

fn from_auth_entry(entry: &Value) -> Result<Option<Credential>> {
    let user = entry["username"].as_str().unwrap_or("").to_string();
    if let Some(t) = entry["identitytoken"].as_str().filter(|s| !s.is_empty()) {
        return Ok(Some(Credential::Identity {
            token: Secret(t.to_string()),
        }));
    }
    if let Some(t) = entry["registrytoken"].as_str().filter(|s| !s.is_empty()) {
        return Ok(Some(Credential::Registry {
            token: Secret(t.to_string()),
        }));
    }
    if let Some(a) = entry["auth"].as_str().filter(|s| !s.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .context("its `auth` field is not base64 of USER:PASSWORD")?;
        return Credential::from_user_pass(&raw)
            .map(Some)
            .context("its `auth` field is not base64 of USER:PASSWORD");
    }
    if let Some(p) = entry["password"].as_str().filter(|_| !user.is_empty()) {
        return Ok(Some(Credential::Basic {
            username: user,
            password: Secret(p.to_string()),
        }));
    }
    Ok(None)
}

/// The server URL a helper is asked about (Docker Hub's is historical).
fn helper_server(registry: &str) -> String {
    if registry == crate::model::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// `docker-credential-NAME get`, the server URL on stdin, JSON on stdout.
fn helper_get(name: &str, registry: &str) -> Result<Option<Credential>> {
    if name.is_empty() || name.contains('/') {
        bail!("invalid credential helper name {name:?}");
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running the credential helper {program} (is it on PATH?)"))?;
    child
        .stdin
        .take()
        .context("helper stdin")?
        .write_all(helper_server(registry).as_bytes())
        .with_context(|| format!("writing to {program}"))?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if said.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // Its words are an error message, not credentials: quote a little.
        let first = said
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>();
        bail!(
            "the credential helper {program} failed ({}): {first}",
            out.status
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{program} did not print JSON credentials"))?;
    let user = v["Username"].as_str().unwrap_or("").to_string();
    let secret = v["Secret"].as_str().unwrap_or("").to_string();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if user == "<token>" {
        Credential::Identity {
            token: Secret(secret),
        }
    } else {
        Credential::Basic {
            username: user,
            password: Secret(secret),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_normalised_and_most_specific_first() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalise_key("http://reg.io:5000/"), "reg.io:5000");
        assert_eq!(normalise_key("reg.io/team"), "reg.io/team");
        assert_eq!(
            candidate_keys("reg.io", "team/app"),
            ["reg.io/team/app", "reg.io/team", "reg.io"]
        );
        let doc: Value = serde_json::json!({"auths": {
            "reg.io": {"auth": base64::engine::general_purpose::STANDARD.encode("a:1")},
            "https://reg.io/team": {"auth": base64::engine::general_purpose::STANDARD.encode("b:2")},
            "https://index.docker.io/v1/": {"identitytoken": "tok"},
            "bearer.io": {"registrytoken": "rt"},
        }});
        let user = |c: Option<Credential>| match c.unwrap() {
            Credential::Basic { username, .. } => username,
            Credential::Identity { .. } => "id:".to_string(),
            Credential::Registry { .. } => "registry-token".to_string(),
        };
        assert_eq!(user(from_file(&doc, "reg.io", "team/app").unwrap()), "b");
        assert_eq!(user(from_file(&doc, "reg.io", "other").unwrap()), "a");
        assert_eq!(
            user(from_file(&doc, "docker.io", "library/x").unwrap()),
            "id:"
        );
        assert_eq!(
            user(from_file(&doc, "bearer.io", "x").unwrap()),
            "registry-token"
        );
        assert!(from_file(&doc, "else.io", "x").unwrap().is_none());
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Credential::from_user_pass("u:hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(Credential::from_user_pass("nopass").is_err());
    }
}
