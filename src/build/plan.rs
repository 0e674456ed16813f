//! A build's plan: everything decided before any work, and its key, the
//! sha256 of every input that can change the output. Pure: the machine's
//! facts come in as a `Host`, so the same inputs always give the same key,
//! and a plan can be compared with what an earlier build recorded to say
//! why a rebuild is needed (`explain`).

use super::host::Host;
use super::sandbox::Net;
use super::{Meta, RECIPE};
use crate::lock::{Build, Input, Patch};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub struct Plan {
    pub name: String,
    pub key: String,
    pub source: Input,
    pub patches: Vec<(Patch, PathBuf)>,
    pub cmake_flags: Vec<String>,
    pub strip: bool,
    pub epoch: u64,
    pub toolchain: BTreeMap<String, String>,
    pub net: Net,
}

impl Plan {
    pub fn new(
        name: &str,
        source: Input,
        patches: Vec<(Patch, PathBuf)>,
        b: &Build,
        epoch: u64,
        host: Host,
    ) -> Plan {
        let mut plan = Plan {
            name: name.into(),
            key: String::new(),
            source,
            patches,
            cmake_flags: b.cmake_flags.clone(),
            strip: b.strip,
            epoch,
            toolchain: host.toolchain,
            net: host.net,
        };
        plan.key = plan.compute_key();
        plan
    }

    /// The key: one `name\0value\n` line per input, in a fixed order.
    fn compute_key(&self) -> String {
        let mut h = Sha256::new();
        let mut line = |k: &str, v: &str| {
            h.update(k.as_bytes());
            h.update(b"\0");
            h.update(v.as_bytes());
            h.update(b"\n");
        };
        line("recipe", RECIPE);
        line("name", &self.name);
        line("source", &self.source.sha256);
        for (p, _) in &self.patches {
            line("patch", &format!("{} {}", p.name, p.sha256));
        }
        for f in &self.cmake_flags {
            line("cmake-flag", f);
        }
        line("strip", &self.strip.to_string());
        line("source-date-epoch", &self.epoch.to_string());
        for (k, v) in &self.toolchain {
            line(&format!("tool {k}"), v);
        }
        line("hermetic", &self.net.hermetic().to_string());
        hex::encode(h.finalize())
    }

    /// Why this plan's key differs from the one an earlier build recorded:
    /// each key input that changed, in words.
    pub fn explain(&self, old: &Meta) -> Vec<String> {
        let mut why = Vec::new();
        if old.recipe != RECIPE {
            why.push(format!("recipe {} -> {RECIPE}", old.recipe));
        }
        if old.source_sha256 != self.source.sha256 {
            why.push(format!(
                "source {} -> {}",
                short(&old.source_sha256),
                short(&self.source.sha256)
            ));
        }
        let new_patches: Vec<Patch> = self.patches.iter().map(|(p, _)| p.clone()).collect();
        why.extend(patch_changes(&old.patches, &new_patches));
        why.extend(list_changes(
            "cmake flag",
            &old.cmake_flags,
            &self.cmake_flags,
        ));
        if old.source_date_epoch != self.epoch {
            why.push(format!(
                "SOURCE_DATE_EPOCH {} -> {}",
                old.source_date_epoch, self.epoch
            ));
        }
        why.extend(map_changes(&old.toolchain, &self.toolchain));
        if old.hermetic != self.net.hermetic() {
            why.push(format!(
                "network isolation {} -> {}",
                old.hermetic,
                self.net.hermetic()
            ));
        }
        if why.is_empty() {
            why.push("the strip setting or the build name".into());
        }
        why
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

fn patch_changes(old: &[Patch], new: &[Patch]) -> Vec<String> {
    let old_by: BTreeMap<&str, &str> = old
        .iter()
        .map(|p| (p.name.as_str(), p.sha256.as_str()))
        .collect();
    let new_by: BTreeMap<&str, &str> = new
        .iter()
        .map(|p| (p.name.as_str(), p.sha256.as_str()))
        .collect();
    let mut why = Vec::new();
    for p in new {
        match old_by.get(p.name.as_str()) {
            None => why.push(format!("patch {} added", p.name)),
            Some(h) if *h != p.sha256 => why.push(format!(
                "patch {} changed ({} -> {})",
                p.name,
                short(h),
                short(&p.sha256)
            )),
            _ => {}
        }
    }
    for p in old {
        if !new_by.contains_key(p.name.as_str()) {
            why.push(format!("patch {} removed", p.name));
        }
    }
    let order = |ps: &[Patch]| -> Vec<String> {
        ps.iter()
            .filter(|p| {
                old_by.contains_key(p.name.as_str()) && new_by.contains_key(p.name.as_str())
            })
            .map(|p| p.name.clone())
            .collect()
    };
    if why.is_empty() && order(old) != order(new) {
        why.push("patch order changed".into());
    }
    why
}

fn list_changes(what: &str, old: &[String], new: &[String]) -> Vec<String> {
    let o: BTreeSet<&String> = old.iter().collect();
    let n: BTreeSet<&String> = new.iter().collect();
    let mut why: Vec<String> = n
        .difference(&o)
        .map(|f| format!("{what} {f} added"))
        .collect();
    why.extend(o.difference(&n).map(|f| format!("{what} {f} removed")));
    if why.is_empty() && old != new {
        why.push(format!("{what} order changed"));
    }
    why
}

fn map_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut why = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => why.push(format!("{k} added ({v})")),
            Some(o) if o != v => why.push(format!("{k}: {o} -> {v}")),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        why.push(format!("{k} removed"));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(name: &str, sha: &str) -> Patch {
        Patch {
            name: name.into(),
            sha256: sha.into(),
        }
    }

    #[test]
    fn patch_changes_name_the_patch() {
        let old = [patch("0001-a", "aaaa"), patch("0002-b", "bbbb")];
        let new = [
            patch("0001-a", "aaaa"),
            patch("0002-b", "cccc"),
            patch("0003-c", "dddd"),
        ];
        assert_eq!(
            patch_changes(&old, &new),
            ["patch 0002-b changed (bbbb -> cccc)", "patch 0003-c added"]
        );
        assert_eq!(patch_changes(&new, &old)[1], "patch 0003-c removed");
        let swapped = [patch("0002-b", "bbbb"), patch("0001-a", "aaaa")];
        assert_eq!(patch_changes(&old, &swapped), ["patch order changed"]);
    }

    #[test]
    fn flag_and_tool_changes_are_listed() {
        let old = vec!["-DA=1".to_string(), "-DB=1".to_string()];
        let new = vec!["-DA=1".to_string(), "-DB=2".to_string()];
        assert_eq!(
            list_changes("cmake flag", &old, &new),
            ["cmake flag -DB=2 added", "cmake flag -DB=1 removed"]
        );
        let t = |v: &str| BTreeMap::from([("tool gcc".to_string(), v.to_string())]);
        assert_eq!(
            map_changes(&t("12.2"), &t("12.3")),
            ["tool gcc: 12.2 -> 12.3"]
        );
    }
}
