//! `mpsi.lock`: every external input of an image, pinned by content hash.
//!
//! The lock is TOML, written by `mpsi lock` and read by `fetch`, `assemble`
//! and `store gc`. It holds:
//!   - `[[input]]`: files fetched from outside (the MariaDB source tarball),
//!     each with size, sha256 and where to get it;
//!   - `[build.NAME]`: a native build: which input is the source, the patch
//!     series with each patch's sha256 in order, the cmake flags, the tools
//!     and Debian -dev packages it needs;
//!   - `[runtime]`: Debian runtime packages (roots, exclusions with a
//!     reason, and the pinned closure of `.deb` files: `runtime.rs`);
//!   - `source_date_epoch`: the build's SOURCE_DATE_EPOCH.
//!
//! The serde model below is the on-disk format, version 1 (`version = 1`);
//! a future format gets a new version number and its own model, so an old
//! mpsi refuses a newer lock instead of misreading it.
//!
//! Pins never change silently: `mpsi lock` recomputes what it can compute
//! locally (patch hashes, from `patches/series`) and pins an input's hash
//! from a local file only when it is unpinned, or when `--repin NAME` says
//! so explicitly.

// LockError carries every field its message names (paths, both hashes,
// sizes); it is returned once per failed command, so its size does not
// matter and boxing would only hide the fields from callers that match.
#![allow(clippy::result_large_err)]

use crate::fsutil;
use crate::model::digest::HashingReader;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub mod runtime;

pub const LOCK_VERSION: u32 = 1;

/// A lock that does not match the repository, or a change the user must
/// make deliberately. Counts as bad input (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error(
        "{file}: patch {name} has sha256 {actual}, but the lock pins {expected}; \
if the change is intended, run `mpsi lock` to pin the new hash"
    )]
    PatchChanged {
        file: PathBuf,
        name: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{file}: build {build:?} is stale: the lock pins the patches [{locked}] but {series} lists [{current}]; \
run `mpsi lock` to pin the series as it is now"
    )]
    SeriesChanged {
        file: PathBuf,
        build: String,
        series: PathBuf,
        locked: String,
        current: String,
    },
    #[error(
        "{file}: input {name:?} is pinned to sha256 {pinned} ({pinned_size} bytes), but {found} has sha256 {actual} ({actual_size} bytes); \
mpsi never changes a pinned hash silently. If the new file is the one you want, run `mpsi lock --from DIR --repin {name}`"
    )]
    PinChange {
        file: PathBuf,
        name: String,
        pinned: String,
        pinned_size: u64,
        found: PathBuf,
        actual: String,
        actual_size: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// SOURCE_DATE_EPOCH for every build.
    pub source_date_epoch: u64,
    #[serde(default, rename = "input", skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build: BTreeMap<String, Build>,
    #[serde(default)]
    pub runtime: Runtime,
}

/// A file from outside the repository, pinned by size and sha256.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub name: String,
    /// Local file name (what `fetch --from DIR` looks for, and the name in a bundle).
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// 0 with an empty sha256 means "not pinned yet" (`mpsi lock --from DIR` pins it).
    pub size: u64,
    /// Hex sha256 of the file (no `sha256:` prefix).
    pub sha256: String,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// The build recipe (how mpsi drives the build); part of the output key.
    pub recipe: String,
    /// Name of the `[[input]]` holding the source tarball.
    pub source: String,
    /// Patch series files, relative to the lock (one patch per line, in
    /// order), applied one series after the other. One path or a list.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub series: Vec<String>,
    /// Commands the build runs (checked up front; their versions key the output).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Debian packages the build links against (checked up front with
    /// dpkg-query; their versions key the output).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Everything passed to cmake's configure step, in order.
    #[serde(default)]
    pub cmake_flags: Vec<String>,
    /// Strip installed ELF files; their debug info goes to a separate output.
    #[serde(default = "yes")]
    pub strip: bool,
    /// Each patch of the series with its sha256, in series order.
    #[serde(default)]
    pub patches: Vec<Patch>,
}

fn yes() -> bool {
    true
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub name: String,
    pub sha256: String,
}

/// The runtime packages: Debian `.deb` files pinned like any input,
/// computed by `mpsi lock --runtime` from `roots` and apt's metadata (see
/// `runtime.rs`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Packages the closure starts from (it follows Pre-Depends and Depends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<String>,
    /// Builds of this lock whose programs decide more roots: the packages
    /// shipping every shared library they need (their `DT_NEEDED`), read
    /// from the builds' outputs in the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libraries_of: Vec<String>,
    /// Packages the closure leaves out, each with the reason.
    #[serde(default, rename = "exclude", skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<Exclusion>,
    /// Computed with `libraries_of`: each needed soname and the package that
    /// ships it, a root of the closure.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub libraries: BTreeMap<String, String>,
    /// The pinned closure, sorted by name.
    #[serde(default, rename = "package", skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<RuntimePackage>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    pub name: String,
    pub reason: String,
}

/// One Debian package, pinned by the `.deb` file's size and sha256.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimePackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The `.deb` file name (as in Debian's pool).
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub url: String,
}

impl RuntimePackage {
    /// The package as an input, fetched and bundled like the source tarball.
    pub fn input(&self) -> Input {
        Input {
            name: format!("deb:{}", self.name),
            file: self.file.clone(),
            version: Some(self.version.clone()),
            size: self.size,
            sha256: self.sha256.clone(),
            urls: vec![self.url.clone()],
        }
    }
}

/// A lock read from disk, with where it came from.
#[derive(Clone, Debug)]
pub struct LockFile {
    pub path: PathBuf,
    pub lock: Lock,
}

const HEADER: &str = "\
# mpsi.lock: every external input of the image, pinned by sha256.
# Written by `mpsi lock` (patch hashes are recomputed from the series; a
# pinned input hash changes only with `mpsi lock --from DIR --repin NAME`).
# Paths are relative to this file.
";

impl LockFile {
    pub fn load(path: &Path) -> Result<LockFile> {
        let text = fs::read_to_string(path).map_err(|e| LockError::Invalid {
            file: path.to_path_buf(),
            message: format!("cannot read the lock: {e} (create it, or pass --lock FILE)"),
        })?;
        let lock = Lock::parse(path, &text)?;
        Ok(LockFile {
            path: path.to_path_buf(),
            lock,
        })
    }

    pub fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    pub fn save(&self) -> Result<()> {
        fsutil::write_atomic(&self.path, self.lock.to_text()?.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn input(&self, name: &str) -> Result<&Input> {
        self.lock
            .inputs
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                LockError::Invalid {
                    file: self.path.clone(),
                    message: format!("no [[input]] named {name:?}"),
                }
                .into()
            })
    }

    pub fn build(&self, name: &str) -> Result<&Build, LockError> {
        self.lock.build.get(name).ok_or_else(|| LockError::Invalid {
            file: self.path.clone(),
            message: format!(
                "no [build.{name}] (the lock has: {})",
                self.lock
                    .build
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// The series files of a build, resolved against the lock's directory.
    pub fn series_paths(&self, build: &Build) -> Vec<PathBuf> {
        build.series.iter().map(|s| self.dir().join(s)).collect()
    }

    /// Reads the patch series as they are on disk now: names (paths
    /// relative to the lock) in order and the sha256 of each patch file.
    pub fn current_patches(&self, build: &Build) -> Result<Vec<(Patch, PathBuf)>> {
        let mut out = Vec::new();
        for (rel, series) in build.series.iter().zip(self.series_paths(build)) {
            self.read_series(rel, &series, &mut out)?;
        }
        Ok(out)
    }

    fn read_series(&self, rel: &str, series: &Path, out: &mut Vec<(Patch, PathBuf)>) -> Result<()> {
        let text = fs::read_to_string(series)
            .with_context(|| format!("reading the patch series {}", series.display()))?;
        let dir = series.parent().unwrap_or(Path::new("."));
        let rel_dir = Path::new(rel).parent().unwrap_or(Path::new(""));
        for line in text.lines() {
            let name = line.split('#').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            // quilt allows options after the name (-p1); mpsi applies with -p1 only.
            let name = name.split_whitespace().next().unwrap_or(name);
            if name.contains("..") || name.starts_with('/') {
                return Err(LockError::Invalid {
                    file: series.to_path_buf(),
                    message: format!("patch name {name:?} must stay inside the series directory"),
                }
                .into());
            }
            let path = dir.join(name);
            let (sha, _) = hash_file(&path)
                .with_context(|| format!("hashing patch {} ({})", name, series.display()))?;
            out.push((
                Patch {
                    name: rel_dir.join(name).to_string_lossy().into_owned(),
                    sha256: sha,
                },
                path,
            ));
        }
        Ok(())
    }

    /// Checks the patch series on disk against the lock; returns each patch
    /// file in order. A changed patch or series is a `LockError`.
    pub fn verified_patches(&self, build_name: &str) -> Result<Vec<(Patch, PathBuf)>> {
        let build = self.build(build_name)?;
        let current = self.current_patches(build)?;
        let names = |v: &mut dyn Iterator<Item = &str>| v.collect::<Vec<_>>().join(", ");
        let locked_names = names(&mut build.patches.iter().map(|p| p.name.as_str()));
        let current_names = names(&mut current.iter().map(|(p, _)| p.name.as_str()));
        if locked_names != current_names {
            return Err(LockError::SeriesChanged {
                file: self.path.clone(),
                build: build_name.to_string(),
                series: PathBuf::from(build.series.join(", ")),
                locked: locked_names,
                current: current_names,
            }
            .into());
        }
        for ((now, path), pinned) in current.iter().zip(&build.patches) {
            if now.sha256 != pinned.sha256 {
                return Err(LockError::PatchChanged {
                    file: self.path.clone(),
                    name: format!("{} ({})", now.name, path.display()),
                    expected: pinned.sha256.clone(),
                    actual: now.sha256.clone(),
                }
                .into());
            }
        }
        Ok(current)
    }
}

impl Lock {
    pub fn parse(path: &Path, text: &str) -> Result<Lock, LockError> {
        let invalid = |message: String| LockError::Invalid {
            file: path.to_path_buf(),
            message,
        };
        // Check the version before the strict parse, so a newer lock gets a
        // clear message instead of an unknown-field error.
        if let Ok(v) = toml::from_str::<toml::Value>(text) {
            match v.get("version").and_then(|v| v.as_integer()) {
                Some(n) if n == LOCK_VERSION as i64 => {}
                Some(n) => {
                    return Err(invalid(format!(
                        "lock format version {n} is not supported (this mpsi reads version {LOCK_VERSION}); use the mpsi that wrote it"
                    )));
                }
                None => return Err(invalid("missing `version = 1`".into())),
            }
        }
        let lock: Lock = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            invalid(format!(
                "{}{}",
                line.map(|l| format!("line {l}: ")).unwrap_or_default(),
                e.message().trim()
            ))
        })?;
        lock.validate().map_err(invalid)?;
        Ok(lock)
    }

    fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for i in &self.inputs {
            if !names.insert(&i.name) {
                return Err(format!("input {:?} is declared twice", i.name));
            }
            if i.file.is_empty()
                || i.file.contains('/')
                || i.file.starts_with('.')
                || i.file.contains('\0')
            {
                return Err(format!(
                    "input {:?}: file {:?} must be a plain file name",
                    i.name, i.file
                ));
            }
            if !i.sha256.is_empty() && !is_hex64(&i.sha256) {
                return Err(format!(
                    "input {:?}: sha256 {:?} is not 64 lowercase hex digits",
                    i.name, i.sha256
                ));
            }
            for u in &i.urls {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(format!(
                        "input {:?}: url {u:?} is not http:// or https://",
                        i.name
                    ));
                }
            }
        }
        for (name, b) in &self.build {
            if !names.contains(&b.source) {
                return Err(format!(
                    "build {name:?}: source {:?} is not an [[input]]",
                    b.source
                ));
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            {
                return Err(format!(
                    "build name {name:?} may hold only letters, digits, '-', '_', '.'"
                ));
            }
            for f in &b.cmake_flags {
                if f.starts_with("-DCMAKE_C_FLAGS=")
                    || f.starts_with("-DCMAKE_CXX_FLAGS=")
                    || f.starts_with("-B")
                    || f.starts_with("-S")
                    || f.starts_with("-G")
                {
                    return Err(format!(
                        "build {name:?}: cmake flag {f:?} is set by mpsi itself (the generator, \
the source and build directories, and CMAKE_C_FLAGS/CMAKE_CXX_FLAGS, which carry the path maps); remove it"
                    ));
                }
            }
            for p in &b.patches {
                if !is_hex64(&p.sha256) {
                    return Err(format!(
                        "build {name:?}: patch {:?} sha256 is not 64 lowercase hex digits",
                        p.name
                    ));
                }
            }
        }
        self.validate_runtime()
    }

    /// Every pinned file: the `[[input]]`s, then the runtime packages.
    pub fn all_inputs(&self) -> Vec<Input> {
        let mut all = self.inputs.clone();
        all.extend(self.runtime.packages.iter().map(RuntimePackage::input));
        all
    }

    fn validate_runtime(&self) -> Result<(), String> {
        let rt = &self.runtime;
        if let Some(b) = rt
            .libraries_of
            .iter()
            .find(|b| !self.build.contains_key(*b))
        {
            return Err(format!(
                "runtime libraries_of names {b:?}, which is no [build.NAME] of this lock"
            ));
        }
        for x in &rt.excludes {
            if x.reason.trim().is_empty() {
                return Err(format!(
                    "runtime exclude {:?}: give the reason it is left out",
                    x.name
                ));
            }
        }
        let mut files = std::collections::BTreeSet::new();
        for i in &self.inputs {
            files.insert(i.file.as_str());
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &rt.packages {
            let bad = if !names.insert(&p.name) {
                Some("is pinned twice".to_string())
            } else if !files.insert(&p.file) || p.file.contains('/') || !p.file.ends_with(".deb") {
                Some(format!(
                    "file {:?} must be a unique plain .deb file name",
                    p.file
                ))
            } else if !is_hex64(&p.sha256) {
                Some(format!(
                    "sha256 {:?} is not 64 lowercase hex digits",
                    p.sha256
                ))
            } else if !(p.url.starts_with("https://") || p.url.starts_with("http://")) {
                Some(format!("url {:?} is not http:// or https://", p.url))
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(format!("runtime package {:?} {why}", p.name));
            }
        }
        Ok(())
    }

    pub fn to_text(&self) -> Result<String> {
        Ok(format!(
            "{HEADER}\n{}",
            toml::to_string_pretty(self).context("serializing the lock")?
        ))
    }
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Hex sha256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let f = fs::File::open(path)?;
    let mut r = HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
    io::copy(&mut r, &mut io::sink())?;
    let (digest, n) = r.finish();
    Ok((digest.trim_start_matches("sha256:").to_string(), n))
}

/// What `mpsi lock` changed.
#[derive(Debug, Default, Serialize)]
pub struct Refresh {
    pub lock: PathBuf,
    pub changed: bool,
    pub patches: Vec<String>,
    pub pinned: Vec<String>,
}

/// `mpsi lock`: recomputes patch hashes from each build's series and, with
/// `from`, pins unpinned inputs from local files (or re-pins those named
/// in `repin`). Writes the lock only if something changed.
pub fn refresh(lf: &mut LockFile, from: Option<&Path>, repin: &[String]) -> Result<Refresh> {
    let mut report = Refresh {
        lock: lf.path.clone(),
        ..Default::default()
    };
    for name in repin {
        if !lf.lock.inputs.iter().any(|i| &i.name == name) {
            return Err(LockError::Invalid {
                file: lf.path.clone(),
                message: format!("--repin {name}: no [[input]] has that name"),
            }
            .into());
        }
        if from.is_none() {
            anyhow::bail!("--repin needs --from DIR: the directory with the new file");
        }
    }
    let names: Vec<String> = lf.lock.build.keys().cloned().collect();
    for name in names {
        let current = lf.current_patches(&lf.lock.build[&name])?;
        let patches: Vec<Patch> = current.into_iter().map(|(p, _)| p).collect();
        let b = lf.lock.build.get_mut(&name).expect("listed");
        if b.patches != patches {
            report.patches.extend(
                patches
                    .iter()
                    .map(|p| format!("{name}: {} {}", p.name, p.sha256)),
            );
            b.patches = patches;
            report.changed = true;
        }
    }
    if let Some(dir) = from {
        for i in 0..lf.lock.inputs.len() {
            let input = &lf.lock.inputs[i];
            let path = dir.join(&input.file);
            if !path.exists() {
                if repin.contains(&input.name) {
                    anyhow::bail!("--repin {}: {} does not exist", input.name, path.display());
                }
                continue;
            }
            let (sha, size) =
                hash_file(&path).with_context(|| format!("hashing {}", path.display()))?;
            let pinned = !input.sha256.is_empty();
            if pinned && input.sha256 == sha && input.size == size {
                continue;
            }
            if pinned && !repin.contains(&input.name) {
                return Err(LockError::PinChange {
                    file: lf.path.clone(),
                    name: input.name.clone(),
                    pinned: input.sha256.clone(),
                    pinned_size: input.size,
                    found: path,
                    actual: sha,
                    actual_size: size,
                }
                .into());
            }
            let input = &mut lf.lock.inputs[i];
            input.sha256 = sha.clone();
            input.size = size;
            report
                .pinned
                .push(format!("{}: {sha} ({size} bytes)", input.name));
            report.changed = true;
        }
    }
    if report.changed {
        lf.save()?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
version = 1
source_date_epoch = 1700000000

[[input]]
name = "demo-src"
file = "demo-1.0.tar.gz"
size = 3
sha256 = ""
urls = ["http://127.0.0.1:1/demo-1.0.tar.gz"]

[build.demo]
recipe = "cmake-ninja-v1"
source = "demo-src"
series = "patches/series"
cmake_flags = ["-DCMAKE_BUILD_TYPE=Release"]
"#;

    fn write_lock(dir: &Path) -> PathBuf {
        fs::create_dir_all(dir.join("patches")).unwrap();
        fs::write(
            dir.join("patches/series"),
            "a.patch\n# comment\nb.patch -p1\n",
        )
        .unwrap();
        fs::write(dir.join("patches/a.patch"), "A").unwrap();
        fs::write(dir.join("patches/b.patch"), "B").unwrap();
        let p = dir.join("mpsi.lock");
        fs::write(&p, SAMPLE).unwrap();
        p
    }

    #[test]
    fn refresh_pins_patches_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write_lock(tmp.path());
        let mut lf = LockFile::load(&p).unwrap();
        let r = refresh(&mut lf, None, &[]).unwrap();
        assert!(r.changed);
        let again = LockFile::load(&p).unwrap();
        assert_eq!(again.lock, lf.lock);
        let names: Vec<_> = again.lock.build["demo"]
            .patches
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["patches/a.patch", "patches/b.patch"]);
        assert!(again.verified_patches("demo").is_ok());
        // Unchanged: nothing written.
        assert!(!refresh(&mut lf, None, &[]).unwrap().changed);

        // A tampered patch is named with both hashes.
        fs::write(tmp.path().join("patches/b.patch"), "B2").unwrap();
        let e = again.verified_patches("demo").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("b.patch") && msg.contains("mpsi lock"),
            "{msg}"
        );
        assert!(e.downcast_ref::<LockError>().is_some());

        // A series change is "stale".
        fs::write(tmp.path().join("patches/series"), "a.patch\n").unwrap();
        let e = again.verified_patches("demo").unwrap_err().to_string();
        assert!(e.contains("stale"), "{e}");
    }

    #[test]
    fn pinned_hash_changes_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write_lock(tmp.path());
        let files = tmp.path().join("files");
        fs::create_dir_all(&files).unwrap();
        fs::write(files.join("demo-1.0.tar.gz"), "one").unwrap();
        let mut lf = LockFile::load(&p).unwrap();
        let r = refresh(&mut lf, Some(&files), &[]).unwrap();
        assert_eq!(r.pinned.len(), 1);
        let first = lf.lock.inputs[0].sha256.clone();

        fs::write(files.join("demo-1.0.tar.gz"), "two").unwrap();
        let e = refresh(&mut lf, Some(&files), &[]).unwrap_err();
        assert!(matches!(
            e.downcast_ref::<LockError>(),
            Some(LockError::PinChange { .. })
        ));
        assert!(e.to_string().contains("--repin demo-src"), "{e}");
        assert_eq!(LockFile::load(&p).unwrap().lock.inputs[0].sha256, first);

        refresh(&mut lf, Some(&files), &["demo-src".into()]).unwrap();
        assert_ne!(LockFile::load(&p).unwrap().lock.inputs[0].sha256, first);
    }

    #[test]
    fn bad_locks_are_explained() {
        let p = Path::new("mpsi.lock");
        let e = Lock::parse(p, "version = 2\nsource_date_epoch = 0\n").unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        let e = Lock::parse(
            p,
            &SAMPLE.replace("recipe =", "cmake_flags2 = []\nrecipe ="),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cmake_flags2"), "{e}");
        let e = Lock::parse(
            p,
            &SAMPLE.replace(
                "\"-DCMAKE_BUILD",
                "\"-DCMAKE_C_FLAGS=-O0\", \"-DCMAKE_BUILD",
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("set by mpsi"), "{e}");
        let e = Lock::parse(
            p,
            &SAMPLE.replace("source = \"demo-src\"", "source = \"x\""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an [[input]]"), "{e}");
    }
}
