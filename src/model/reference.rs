//! Image references as users type them (`registry/repo:tag`,
//! `repo@sha256:...`) and where they point: the registry host to talk to,
//! the repository path and the tag or digest. Docker Hub's short forms are
//! normalised the way Docker does it (`x` -> `docker.io/library/x`).

use std::fmt;

/// Docker Hub as users name it, and the host its API answers on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry as named (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/mariadb`, `acme/db`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {why}")]
pub struct BadReference {
    pub input: String,
    pub why: String,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, BadReference> {
        let bad = |why: &str| BadReference {
            input: input.to_string(),
            why: why.to_string(),
        };
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                crate::model::digest::hex_of(d)
                    .map_err(|_| bad("the digest after @ must be sha256:<64 hex digits>"))?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':'
        // before it belongs to a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(bad(
                    "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = split_registry(name);
        if repository.is_empty() {
            return Err(bad("no repository name"));
        }
        for part in repository.split('/') {
            let ok = !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && part.starts_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return Err(bad(
                    "repository path components are lowercase letters, digits and . _ -",
                ));
            }
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The host (with port) the registry API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Host name without port or brackets (`[::1]:5000` -> `::1`).
    pub fn hostname(&self) -> &str {
        hostname_of(&self.registry)
    }

    /// Whether the registry is this machine (plain http is allowed there).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.hostname())
    }

    /// `registry/repo`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repo@digest`, what a push prints.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits `name` into registry and repository, Docker's way: the first
/// component is a registry if it has a '.' or ':' or is `localhost`.
fn split_registry(name: &str) -> (String, String) {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let is_registry = first.contains('.') || first.contains(':') || first == "localhost";
    let (registry, repo) = if is_registry {
        (first.to_string(), rest.to_string())
    } else {
        (DOCKER_HUB.to_string(), name.to_string())
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => registry,
    };
    if registry == DOCKER_HUB && !repo.contains('/') {
        return (registry, format!("library/{repo}"));
    }
    (registry, repo)
}

/// Host name of `host[:port]` or `[v6]:port`.
pub fn hostname_of(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

pub fn is_loopback_host(hostname: &str) -> bool {
    matches!(hostname, "localhost" | "::1") || hostname.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn docker_hub_short_forms_are_normalised() {
        let r = p("mariadb");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/mariadb")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("acme/db:1").repository, "acme/db");
        assert_eq!(p("index.docker.io/acme/db").registry, "docker.io");
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        let r = p("127.0.0.1:5000/a/b:v1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback());
        let r = p("localhost:5000/x");
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", None)
        );
        assert!(r.is_loopback());
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("ghcr.io/acme/db:t@{d}"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert!(!r.is_loopback());
        assert_eq!(r.with_digest(&d), format!("ghcr.io/acme/db@{d}"));
        let r = p("[::1]:5000/x:y");
        assert_eq!((r.hostname(), r.repository.as_str()), ("::1", "x"));
        assert!(r.is_loopback());
    }

    #[test]
    fn bad_references_say_why() {
        for bad in [
            "",
            "Upper/Case",
            "reg.io/",
            "x:",
            "x:-bad",
            "x@sha256:abc",
            "a//b",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid image reference"),
                "{bad}: {e}"
            );
        }
    }
}
