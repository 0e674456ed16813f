//! A small local record of which repositories on which registry hold which
//! blobs (after a successful push), so a push to another repository on the
//! same registry can mount blobs instead of uploading them. It holds
//! registry names, repository names and digests: nothing secret.

use crate::fsutil;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Repositories remembered per blob (the newest first).
const KEEP_PER_BLOB: usize = 4;

#[derive(Default, Serialize, Deserialize)]
pub struct Record {
    /// registry -> digest -> repositories.
    registries: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Record {
    /// The record at `path`; a missing or unreadable one is empty (it is a
    /// hint, never needed for correctness).
    pub fn load(path: &Path) -> Record {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// A repository other than `repo` on `registry` known to hold `digest`.
    pub fn source(&self, registry: &str, repo: &str, digest: &str) -> Option<String> {
        self.registries
            .get(registry)?
            .get(digest)?
            .iter()
            .find(|r| *r != repo)
            .cloned()
    }

    fn add(&mut self, registry: &str, repo: &str, digests: &[String]) {
        let reg = self.registries.entry(registry.to_string()).or_default();
        for d in digests {
            let repos = reg.entry(d.clone()).or_default();
            repos.retain(|r| r != repo);
            repos.insert(0, repo.to_string());
            repos.truncate(KEEP_PER_BLOB);
        }
    }
}

/// Adds `digests` as held by `registry/repo` to the record at `path`
/// (re-read under a lock, so concurrent pushes do not lose entries).
pub fn remember(path: &Path, registry: &str, repo: &str, digests: &[String]) -> Result<()> {
    let dir = fsutil::parent_dir(path);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _guard = fsutil::lock(dir, "push-record")?;
    let mut rec = Record::load(path);
    rec.add(registry, repo, digests);
    fsutil::write_atomic(path, &serde_json::to_vec_pretty(&rec)?)
        .with_context(|| format!("writing the push record {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_other_repositories_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("push-record.json");
        let d = "sha256:aa".to_string();
        remember(&path, "r:5000", "a", std::slice::from_ref(&d)).unwrap();
        remember(&path, "r:5000", "b", std::slice::from_ref(&d)).unwrap();
        let rec = Record::load(&path);
        assert_eq!(rec.source("r:5000", "a", &d).as_deref(), Some("b"));
        assert_eq!(rec.source("r:5000", "b", &d).as_deref(), Some("a"));
        assert_eq!(rec.source("r:5000", "c", &d).as_deref(), Some("b"));
        assert_eq!(rec.source("other", "c", &d), None);
    }
}
