//! Native builds of a pinned source tarball with its patch series, keyed by
//! the hash of everything that can change the output.
//!
//! Recipe `cmake-ninja-v1`:
//!  1. check up front that every tool and Debian package the lock names is
//!     installed (the error gives the exact `apt-get install` line);
//!  2. unpack the source tarball into a fixed work directory of the store,
//!     rejecting unsafe entries (absolute paths, `..`, links leaving the
//!     tree, devices and FIFOs);
//!  3. apply the patch series in order, each one dry-run first; a patch that
//!     does not apply is named with its file and hunk;
//!  4. configure with cmake and the lock's flags, build with ninja, drop
//!     the object files, install with DESTDIR, all in the sandbox (no
//!     network, cleared environment), then remove the source and build
//!     trees;
//!  5. strip installed ELF files and keep their debug info apart, by
//!     build-id;
//!  6. move the result into `builds-v1/<key>/` with one rename.
//!
//! The cmake *program* is driven directly, not through the `cmake` crate:
//! that crate is made for cargo build scripts. It reads the build-script
//! environment (TARGET, HOST, OUT_DIR, PROFILE), prints `cargo:` lines, and
//! adds compiler flags of its own through the `cc` crate (-fPIC, -m64,
//! -ffunction-sections, opt-level-derived -O and -g), so the flags that
//! reach the compiler would not be the ones pinned in the lock. Here the
//! configure line is exactly the lock's flag list plus the generator, the
//! source and build directories, the path maps and the ccache launcher,
//! and it is written to the build's metadata.

use crate::fetch::{Fetcher, Origin};
use crate::fsutil;
use crate::lock::{LockFile, Patch};
use crate::progress::{Reporter, Task};
mod host;
mod patch;
pub mod plan;
mod recipe;
pub mod sandbox;
mod strip;

use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
pub use plan::Plan;
use sandbox::{Net, Sandbox};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The build recipe this mpsi implements. Changing how a build is driven in
/// a way that can change its output bumps this (and so every build key).
pub const RECIPE: &str = "cmake-ninja-v1";

#[derive(Clone)]
pub struct Options {
    /// The one clock of the assemble (see `assemble::clock`).
    pub source_date_epoch: u64,
    /// Build with the host network if no sandbox can be had (recorded).
    pub allow_network: bool,
    /// Use ccache, when it is installed, with its cache here (the CLI picks
    /// CCACHE_DIR, else ~/.cache/ccache); None: no ccache.
    pub ccache_dir: Option<PathBuf>,
    /// ninja -j (default: ninja's own).
    pub jobs: Option<usize>,
}

/// What went into a build output, written as its `meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub version: Option<String>,
    pub key: String,
    pub recipe: String,
    pub source: String,
    pub source_sha256: String,
    pub patches: Vec<Patch>,
    pub cmake_flags: Vec<String>,
    pub source_date_epoch: u64,
    pub toolchain: BTreeMap<String, String>,
    /// false: built with the host's network (`--allow-network`).
    pub hermetic: bool,
    pub network: Net,
    pub ccache: bool,
    pub seconds: f64,
    /// Wall-clock seconds of each step, in order (unpack, patch, configure,
    /// build, prune, install, strip, manifest): where a build's time goes, next to
    /// a plain `cmake + ninja` of the same tree.
    #[serde(default)]
    pub phases: Vec<(String, f64)>,
    /// ELF build-ids of the stripped files, whose debug info is in debug/.
    pub build_ids: Vec<String>,
    pub mpsi_version: String,
}

#[derive(Debug, Serialize)]
pub struct Built {
    pub name: String,
    pub key: String,
    /// builds-v1/<key>
    pub path: PathBuf,
    pub cached: bool,
    pub hermetic: bool,
    pub seconds: f64,
    /// Seconds per step of the build that made this output.
    pub phases: Vec<(String, f64)>,
}

/// Tools or packages the build needs that are not installed.
#[derive(Debug, thiserror::Error)]
#[error("build {build:?} cannot start: {what}; install them with:\n  apt-get install {}", packages.join(" "))]
pub struct MissingDeps {
    pub build: String,
    pub what: String,
    pub packages: Vec<String>,
}

/// A patch of the series that does not apply to the source.
#[derive(Debug, thiserror::Error)]
#[error("patch {patch} does not apply{}: {detail}; the source tree was discarded, nothing was built", if file.is_empty() { String::new() } else { format!(" to {file}") })]
pub struct PatchFailed {
    pub patch: String,
    pub file: String,
    pub detail: String,
}

/// Plans a build: checks the lock, probes the machine (tools, packages,
/// sandbox), and computes the key from both.
pub fn plan(lf: &LockFile, name: &str, opts: &Options) -> Result<Plan> {
    let b = lf.build(name)?;
    if b.recipe != RECIPE {
        return Err(crate::lock::LockError::Invalid {
            file: lf.path.clone(),
            message: format!(
                "build {name:?}: recipe {:?} is not known to this mpsi (it implements {RECIPE:?})",
                b.recipe
            ),
        }
        .into());
    }
    let patches = lf.verified_patches(name)?;
    let host = host::probe(name, b, !patches.is_empty(), opts.allow_network)?;
    Ok(plan::Plan::new(
        name,
        lf.input(&b.source)?.clone(),
        patches,
        b,
        opts.source_date_epoch,
        host,
    ))
}

/// What `ensure` would do, without doing it.
#[derive(Debug, Serialize)]
pub struct Decision {
    pub name: String,
    pub key: String,
    /// The store has this output: it is reused.
    pub cached: bool,
    /// For a rebuild: the newest earlier build of the same name, and which
    /// of its key inputs changed.
    pub compared_with: Option<String>,
    pub because: Vec<String>,
    /// The source input is not in the store and would be fetched.
    pub fetch: Option<String>,
}

/// Plans build `name` and says whether it would be reused or built, and why.
pub fn decide(store: &Store, lf: &LockFile, name: &str, opts: &Options) -> Result<Decision> {
    let plan = plan(lf, name, opts)?;
    let cached = store.build(&plan.key).is_some();
    let newest = if cached {
        None
    } else {
        newest_build(store, name)?
    };
    let because = match &newest {
        Some(m) => plan.explain(m),
        None if cached => Vec::new(),
        None => vec!["no earlier build of this name in the store".into()],
    };
    Ok(Decision {
        name: name.into(),
        cached,
        compared_with: newest.map(|m| m.key),
        because,
        fetch: (!cached && store.input(&plan.source).is_none()).then(|| plan.source.file.clone()),
        key: plan.key,
    })
}

/// The most recently finished build of `name` in the store, by its record.
fn newest_build(store: &Store, name: &str) -> Result<Option<Meta>> {
    let Ok(dir) = fs::read_dir(store.builds_dir()) else {
        return Ok(None);
    };
    let mut best: Option<(std::time::SystemTime, Meta)> = None;
    for e in dir {
        let path = e?.path().join("meta.json");
        let Ok(text) = fs::read(&path) else { continue };
        let meta: Meta = serde_json::from_slice(&text)
            .with_context(|| format!("reading the build record {}", path.display()))?;
        let when = fs::metadata(&path)?.modified()?;
        if meta.name == name && best.as_ref().is_none_or(|(t, _)| when > *t) {
            best = Some((when, meta));
        }
    }
    Ok(best.map(|(_, m)| m))
}

/// Makes sure the output of build `name` is in the store; builds it if not.
pub fn ensure(
    store: &Store,
    lf: &LockFile,
    name: &str,
    opts: &Options,
    origin: &Origin,
    reporter: &dyn Reporter,
) -> Result<Built> {
    let plan = plan(lf, name, opts)?;
    if let Some(path) = store.build(&plan.key) {
        return built(&plan, path, true);
    }
    // One build per name at a time: the work directory is a fixed path.
    let work_root = store.root().join("work-v1");
    let _guard = fsutil::lock(&work_root, name)?;
    if let Some(path) = store.build(&plan.key) {
        return built(&plan, path, true); // built meanwhile by another mpsi
    }
    let fetcher = Fetcher::new(store, reporter);
    fetcher.ensure(&[&plan.source], origin)?;
    let work = store.work_dir(name);
    let started = Instant::now();
    let result = recipe::run(store, &plan, opts, &work, reporter);
    match result {
        Ok(mut meta) => {
            meta.seconds = started.elapsed().as_secs_f64();
            let result_dir = work.join("result");
            fsutil::write_atomic(
                &result_dir.join("meta.json"),
                &serde_json::to_vec_pretty(&meta)?,
            )?;
            let dest = store.build_path(&plan.key);
            fs::rename(&result_dir, &dest)
                .with_context(|| format!("moving the build output to {}", dest.display()))?;
            fsutil::sync_dir(&store.builds_dir())?;
            store::remove_any(&work)?;
            built(&plan, dest, false)
        }
        Err(e) => {
            let log = work.join("build.log");
            let kept = store.failed_log_path(&plan.key);
            if log.exists() {
                let _ = fs::copy(&log, &kept);
            }
            Err(e.context(format!(
                "building {name:?} failed (full log: {}; the work tree stays in {} until the next build)",
                kept.display(),
                work.display()
            )))
        }
    }
}

/// A stored build output, described by its `meta.json`. A record that
/// cannot be read fails the assemble (fail closed) rather than being taken
/// as hermetic or rebuilt over: the file only appears whole, by rename, so
/// a broken one means the output was changed after the build and may be
/// broken too. The error names the file and the way out.
fn built(plan: &Plan, path: PathBuf, cached: bool) -> Result<Built> {
    let meta = read_meta(&path).with_context(|| {
        format!(
            "the stored build of {:?} cannot be trusted; check the store with `mpsi store verify`, then delete {} to build it again",
            plan.name,
            path.display()
        )
    })?;
    Ok(Built {
        name: plan.name.clone(),
        key: plan.key.clone(),
        cached,
        hermetic: meta.hermetic,
        seconds: meta.seconds,
        phases: meta.phases,
        path,
    })
}

/// Whether a recorded build is of the lock's entry of that name, as the
/// lock says it now.
fn is_the_locks(meta: &Meta, lf: &LockFile, epoch: u64) -> Result<bool> {
    let Some(b) = lf.lock.build.get(&meta.name) else {
        return Ok(false);
    };
    let source = lf.input(&b.source)?;
    Ok(meta.recipe == b.recipe
        && meta.source_sha256 == source.sha256
        && meta.patches == b.patches
        && meta.cmake_flags == b.cmake_flags
        && meta.source_date_epoch == epoch)
}

/// Reads the `meta.json` of a build output directory.
pub fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join("meta.json");
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let meta: Meta =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let key = dir.file_name().unwrap_or_default().to_string_lossy();
    if meta.key != key {
        bail!("{} names build {}, not {key}", path.display(), meta.key);
    }
    Ok(meta)
}

/// The build outputs `store gc` keeps, read from what each build recorded
/// in its meta.json (not by planning again: that probes the host, fails
/// where cmake is missing and would tie the roots to today's toolchain).
/// For each build of the lock, an output is a root if its recipe, source,
/// patches, cmake flags and clock (`epoch`) are the lock's; of those, the
/// newest hermetic and the newest non-hermetic one are kept (an older one
/// was made by a toolchain since replaced). Outputs whose meta.json cannot
/// be read are no roots.
pub fn recorded_roots(
    store: &Store,
    lf: &LockFile,
    epoch: u64,
) -> Result<std::collections::BTreeSet<String>> {
    let mut newest: BTreeMap<(String, bool), (std::time::SystemTime, String)> = BTreeMap::new();
    let dirs = match fs::read_dir(store.builds_dir()) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", store.builds_dir().display()));
        }
    };
    for entry in dirs {
        let dir = entry?.path();
        let Ok(meta) = read_meta(&dir) else { continue };
        if !is_the_locks(&meta, lf, epoch)? {
            continue;
        }
        let made = fs::metadata(dir.join("meta.json")).and_then(|m| m.modified())?;
        let slot = (meta.name.clone(), meta.hermetic);
        let candidate = (made, meta.key);
        if newest.get(&slot).is_none_or(|current| candidate > *current) {
            newest.insert(slot, candidate);
        }
    }
    Ok(newest.into_values().map(|(_, key)| key).collect())
}

/// The work directory: `src/` (unpacked, patched), `build/` (cmake),
/// `result/{out,debug}` (what moves into the store), `home/`, `tmp/`,
/// `build.log`.
/// Wall-clock time of each finished step since the previous one.
struct Phases {
    done: Vec<(String, f64)>,
    since: Instant,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            done: Vec::new(),
            since: Instant::now(),
        }
    }
}

impl Phases {
    fn done(&mut self, name: &str) {
        let now = Instant::now();
        let secs = (now - self.since).as_secs_f64();
        self.done.push((name.into(), (secs * 10.0).round() / 10.0));
        self.since = now;
    }
}

/// Runs a sandboxed command; its output goes to the log. With a bar,
/// ninja's `[N/M] description` lines move it. On failure, the error holds
/// the failing step's last lines.
fn run_logged(
    sb: &Sandbox,
    program: &str,
    args: &[String],
    cwd: &Path,
    log: &mut fs::File,
    bar: Option<&dyn Task>,
    what: &str,
) -> Result<()> {
    let os_args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let mut cmd = sb.command(program, &os_args, cwd);
    writeln!(log, "$ {program} {}", args.join(" "))?;
    let (reader, writer) = io::pipe().context("creating a pipe")?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    drop(cmd); // closes our copies of the pipe's write end
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut failed_at: Option<usize> = None;
    let mut lines_seen = 0usize;
    let mut failure: Vec<String> = Vec::new();
    for line in BufReader::new(reader).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        writeln!(log, "{line}")?;
        lines_seen += 1;
        if let Some(b) = bar
            && let Some((n, m, desc)) = ninja_status(&line)
        {
            b.set_total(m);
            b.set_position(n);
            b.set_message(desc);
        }
        if line.starts_with("FAILED: ") && failed_at.is_none() {
            failed_at = Some(lines_seen);
        }
        if failed_at.is_some() && failure.len() < 60 {
            failure.push(line.clone());
        }
        tail.push_back(line);
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    let st = child.wait()?;
    log.flush()?;
    if !st.success() {
        if let Some(b) = bar {
            b.finish();
        }
        let shown: Vec<String> = if failure.is_empty() {
            tail.into_iter().collect()
        } else {
            failure
        };
        bail!(
            "{what} failed ({st}); its last lines:\n    {}",
            shown.join("\n    ")
        );
    }
    Ok(())
}

/// Parses ninja's `[N/M] text` status line.
fn ninja_status(line: &str) -> Option<(u64, u64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (nums, desc) = rest.split_once("] ")?;
    let (n, m) = nums.split_once('/')?;
    Some((n.parse().ok()?, m.parse().ok()?, desc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ninja_status_lines_parse() {
        assert_eq!(
            ninja_status("[12/345] Building C object x.o"),
            Some((12, 345, "Building C object x.o"))
        );
        assert_eq!(ninja_status("FAILED: x.o"), None);
    }
}
