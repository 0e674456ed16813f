//! `mpsi lock --runtime`: pins the runtime packages from apt's metadata on a
//! Debian host, never by hand. From the lock's `roots`, the closure follows
//! `Pre-Depends` and `Depends` (the first alternative of `a | b`), skipping
//! the `exclude`d packages; each package is pinned at apt's candidate
//! version with the size, sha256 and URL apt itself would download.

use super::{LockError, LockFile, RuntimePackage};
use crate::deb::control::{self, Paragraph};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, Serialize)]
pub struct RuntimeReport {
    pub lock: std::path::PathBuf,
    pub changed: bool,
    pub packages: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// Recomputes `[[runtime.package]]` from the roots and, for each build of
/// `libraries_of`, the packages shipping the libraries its programs need
/// (`outputs`: each such build's installed tree); writes the lock if
/// anything changed.
pub fn refresh(lf: &mut LockFile, outputs: &[(String, PathBuf)]) -> Result<RuntimeReport> {
    if lf.lock.runtime.roots.is_empty() {
        return Err(LockError::Invalid {
            file: lf.path.clone(),
            message: "`mpsi lock --runtime` needs `roots = [...]` under [runtime]".into(),
        }
        .into());
    }
    let libraries = library_packages(outputs)?;
    let libraries_changed = lf.lock.runtime.libraries != libraries;
    lf.lock.runtime.libraries = libraries;
    let rt = &lf.lock.runtime;
    let excluded: BTreeSet<&str> = rt.excludes.iter().map(|x| x.name.as_str()).collect();
    let mut roots = rt.roots.clone();
    roots.extend(rt.libraries.values().cloned());
    let records = closure(&roots, &excluded)?;
    let uris = download_uris(&records)?;
    let mut packages = Vec::new();
    for (name, rec) in &records {
        let field = |f: &str| {
            control::get(rec, f)
                .map(str::to_string)
                .with_context(|| format!("apt's record of {name} has no {f} field"))
        };
        let (url, size, sha256) = uris
            .get(name)
            .with_context(|| format!("apt-get --print-uris gave no URL for {name}"))?;
        if field("SHA256")? != *sha256 || field("Size")?.parse::<u64>().ok() != Some(*size) {
            bail!("apt-cache and apt-get disagree on {name}'s size or sha256; run apt-get update");
        }
        packages.push(RuntimePackage {
            name: name.clone(),
            version: field("Version")?,
            architecture: field("Architecture")?,
            file: field("Filename")?
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            size: *size,
            sha256: sha256.clone(),
            url: url.clone(),
        });
    }
    let label = |p: &RuntimePackage| format!("{} {} {}", p.name, p.version, p.architecture);
    let old: BTreeSet<String> = lf.lock.runtime.packages.iter().map(label).collect();
    let new: BTreeSet<String> = packages.iter().map(label).collect();
    let changed = lf.lock.runtime.packages != packages || libraries_changed;
    let report = RuntimeReport {
        lock: lf.path.clone(),
        changed,
        packages: new.iter().cloned().collect(),
        added: new.difference(&old).cloned().collect(),
        removed: old.difference(&new).cloned().collect(),
    };
    if changed {
        lf.lock.runtime.packages = packages;
        lf.save()?;
    }
    Ok(report)
}

/// Each shared library the programs of `outputs` need from outside their
/// own tree, with the installed package that ships it. The build linked
/// against these very files, so the build host's dpkg database knows them.
fn library_packages(outputs: &[(String, PathBuf)]) -> Result<BTreeMap<String, String>> {
    let arch = host_dpkg_architecture()?;
    let mut packages = BTreeMap::new();
    for (build, out) in outputs {
        for (soname, users) in crate::elf::needed::external_needs(out)
            .with_context(|| format!("reading the programs of build {build:?}"))?
        {
            let pkg = package_shipping(&soname, &arch).with_context(|| {
                format!(
                    "{soname}, needed by {} of build {build:?}",
                    users.join(", ")
                )
            })?;
            packages.insert(soname, pkg);
        }
    }
    Ok(packages)
}

fn host_dpkg_architecture() -> Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg --print-architecture (mpsi lock --runtime needs a Debian host)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The one installed package of `arch` (or `all`) that ships `soname` in a
/// directory the loader searches by default.
fn package_shipping(soname: &str, arch: &str) -> Result<String> {
    let out = Command::new("dpkg-query")
        .arg("-S")
        .arg(format!("*/{soname}"))
        .output()
        .context("running dpkg-query -S")?;
    let mut found = BTreeSet::new();
    // Lines: `pkg[:arch][, pkg2...]: /path`; diversions read otherwise.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((pkgs, path)) = line.rsplit_once(": ") else {
            continue;
        };
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        let default_dir = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"].contains(&dir)
            || (dir.starts_with("/lib/") || dir.starts_with("/usr/lib/"))
                && dir.ends_with("-linux-gnu")
                && dir.matches('/').count() == dir.starts_with("/usr/") as usize + 2;
        if !default_dir || !path.ends_with(&format!("/{soname}")) {
            continue;
        }
        for p in pkgs.split(", ") {
            match p.split_once(':') {
                Some((name, a)) if a == arch || a == "all" => found.insert(name.to_string()),
                None => found.insert(p.to_string()),
                _ => false,
            };
        }
    }
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        0 => bail!(
            "no installed {arch} package ships it in the loader's directories; install the package \
that provides it (the build linked against it), then run `mpsi lock --runtime` again"
        ),
        _ => bail!(
            "several installed packages ship it ({}); remove all but one",
            found.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// apt's candidate record of every package in the closure, by name. A
/// virtual name (`awk`) is satisfied by a package of the closure that
/// provides it; mpsi never picks a provider itself: the roots name it.
fn closure(roots: &[String], excluded: &BTreeSet<&str>) -> Result<BTreeMap<String, Paragraph>> {
    let mut records = BTreeMap::new();
    let mut unknown = BTreeSet::new();
    let mut todo: Vec<String> = roots.to_vec();
    // Bounded: each round queries only names not seen before.
    while !todo.is_empty() {
        let batch: BTreeSet<String> = todo
            .drain(..)
            .filter(|n| {
                !records.contains_key(n) && !unknown.contains(n) && !excluded.contains(n.as_str())
            })
            .collect();
        if batch.is_empty() {
            break;
        }
        for rec in apt_show(&batch)? {
            let name = control::get(&rec, "Package")
                .unwrap_or_default()
                .to_string();
            for f in ["Pre-Depends", "Depends"] {
                todo.extend(
                    control::get(&rec, f)
                        .map(control::first_alternatives)
                        .unwrap_or_default(),
                );
            }
            records.insert(name, rec);
        }
        unknown.extend(batch.into_iter().filter(|n| !records.contains_key(n)));
    }
    let provided: BTreeSet<String> = records
        .values()
        .flat_map(|r| {
            control::get(r, "Provides")
                .map(control::first_alternatives)
                .unwrap_or_default()
        })
        .collect();
    if let Some(missing) = unknown.iter().find(|n| !provided.contains(*n)) {
        bail!(
            "apt knows no installable package {missing:?} and no package of the closure provides it \
(a virtual package, or apt-get update has not been run): add a real provider to `roots`, or exclude it with a reason"
        );
    }
    Ok(records)
}

/// `apt-cache show --no-all-versions` for a batch of names (candidates).
fn apt_show(names: &BTreeSet<String>) -> Result<Vec<Paragraph>> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(names)
        .output()
        .context("running apt-cache (mpsi lock --runtime needs a Debian host with apt)")?;
    // apt-cache fails on an unknown or virtual name but still prints the
    // others; the caller names what is missing.
    control::paragraphs(&String::from_utf8_lossy(&out.stdout)).context("reading apt-cache's output")
}

/// The URL, size and sha256 apt would download for each record's version.
fn download_uris(
    records: &BTreeMap<String, Paragraph>,
) -> Result<BTreeMap<String, (String, u64, String)>> {
    let wanted: Vec<String> = records
        .iter()
        .map(|(n, r)| format!("{n}={}", control::get(r, "Version").unwrap_or_default()))
        .collect();
    let out = Command::new("apt-get")
        .args(["download", "--print-uris", "-qq"])
        .args(&wanted)
        .output()
        .context("running apt-get download --print-uris")?;
    if !out.status.success() {
        bail!(
            "apt-get download --print-uris failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut uris = BTreeMap::new();
    // Lines: 'URL' FILE SIZE SHA256:HEX
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [url, file, size, sum] = parts[..] else {
            bail!("unexpected line from apt-get --print-uris: {line:?}");
        };
        let name = file.split('_').next().unwrap_or_default().to_string();
        let url = url.trim_matches('\'');
        // Integrity comes from the pinned sha256; https keeps what is
        // fetched private, as for the source tarball's pin.
        let url = match url.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => url.to_string(),
        };
        let sha = sum
            .strip_prefix("SHA256:")
            .with_context(|| format!("no SHA256 in {line:?}"))?;
        uris.insert(name, (url, size.parse()?, sha.to_string()));
    }
    Ok(uris)
}
