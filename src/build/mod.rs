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
use crate::progress::{Reporter, Task, Unit};
use crate::lock::{Input, LockFile, Patch};
mod patch;
pub mod sandbox;
mod strip;

use patch::apply_patch;
use sandbox::{Net, Sandbox};
use strip::{prune_objects, strip_tree};
use crate::unpack::unpack;
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// Everything decided before any work: the output key and its inputs.
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

/// Debian package that provides a command.
fn package_of(tool: &str) -> &str {
    match tool {
        "ninja" => "ninja-build",
        "objcopy" | "strip" | "readelf" => "binutils",
        "unshare" => "util-linux",
        "cc" => "gcc",
        "c++" => "g++",
        other => other,
    }
}

/// Plans a build: checks the lock and the machine, computes the key.
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
    let source = lf.input(&b.source)?.clone();
    let patches = lf.verified_patches(name)?;
    let mut tools: Vec<String> = b.tools.clone();
    for t in ["cmake", "ninja"] {
        if !tools.iter().any(|x| x == t) {
            tools.push(t.into());
        }
    }
    if !patches.is_empty() && !tools.iter().any(|x| x == "patch") {
        tools.push("patch".into());
    }
    if b.strip {
        for t in ["objcopy", "strip", "readelf"] {
            if !tools.iter().any(|x| x == t) {
                tools.push(t.into());
            }
        }
    }
    let missing_tools: Vec<&String> = tools
        .iter()
        .filter(|t| sandbox::which(t).is_none())
        .collect();
    let missing_pkgs = missing_packages(&b.packages)?;
    if !missing_tools.is_empty() || !missing_pkgs.is_empty() {
        let mut what = Vec::new();
        if !missing_tools.is_empty() {
            what.push(format!(
                "missing tools (looked in {}): {}",
                sandbox::PATH,
                missing_tools
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !missing_pkgs.is_empty() {
            what.push(format!("missing packages: {}", missing_pkgs.join(", ")));
        }
        let mut packages: Vec<String> = missing_tools
            .iter()
            .map(|t| package_of(t).to_string())
            .chain(missing_pkgs)
            .collect();
        packages.sort();
        packages.dedup();
        return Err(MissingDeps {
            build: name.into(),
            what: what.join("; "),
            packages,
        }
        .into());
    }
    let net = sandbox::Sandbox::probe(opts.allow_network)?;
    sandbox::require_unshare(net)?;
    let toolchain = identify(&tools, &b.packages)?;
    let epoch = opts.source_date_epoch;

    let mut h = Sha256::new();
    let mut line = |k: &str, v: &str| {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(v.as_bytes());
        h.update(b"\n");
    };
    line("recipe", RECIPE);
    line("name", name);
    line("source", &source.sha256);
    for (p, _) in &patches {
        line("patch", &format!("{} {}", p.name, p.sha256));
    }
    for f in &b.cmake_flags {
        line("cmake-flag", f);
    }
    line("strip", &b.strip.to_string());
    line("source-date-epoch", &epoch.to_string());
    for (k, v) in &toolchain {
        line(&format!("tool {k}"), v);
    }
    line("hermetic", &net.hermetic().to_string());
    let key = hex::encode(h.finalize());
    Ok(Plan {
        name: name.into(),
        key,
        source,
        patches,
        cmake_flags: b.cmake_flags.clone(),
        strip: b.strip,
        epoch,
        toolchain,
        net,
    })
}

fn missing_packages(packages: &[String]) -> Result<Vec<String>> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    if sandbox::which("dpkg-query").is_none() {
        bail!(
            "the lock lists Debian packages ({}) but dpkg-query is not installed; mpsi builds on Debian",
            packages.join(", ")
        );
    }
    let mut missing = Vec::new();
    for p in packages {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${db:Status-Abbrev}", p])
            .env_clear()
            .env("PATH", sandbox::PATH)
            .env("LC_ALL", "C")
            .output()
            .context("running dpkg-query")?;
        if !String::from_utf8_lossy(&out.stdout).starts_with("ii") {
            missing.push(p.clone());
        }
    }
    Ok(missing)
}

/// The toolchain identity: each tool's version line and each package's
/// Debian version.
fn identify(tools: &[String], packages: &[String]) -> Result<BTreeMap<String, String>> {
    let mut id = BTreeMap::new();
    for t in tools {
        let out = Command::new(sandbox::which(t).expect("checked"))
            .arg("--version")
            .env_clear()
            .env("PATH", sandbox::PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {t} --version"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("").trim().to_string();
        if !out.status.success() || first.is_empty() {
            bail!("{t} --version printed no version; is {t} working?");
        }
        id.insert(t.clone(), first);
    }
    if !packages.is_empty() {
        let out = Command::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package} ${Version} ${Architecture}\\n")
            .args(packages)
            .env_clear()
            .env("PATH", sandbox::PATH)
            .env("LC_ALL", "C")
            .output()
            .context("running dpkg-query")?;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((p, v)) = l.split_once(' ') {
                id.insert(format!("pkg {p}"), v.to_string());
            }
        }
    }
    Ok(id)
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
    let result = run(store, &plan, opts, &work, reporter);
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
fn run(
    store: &Store,
    plan: &Plan,
    opts: &Options,
    work: &Path,
    reporter: &dyn Reporter,
) -> Result<Meta> {
    // A work tree left by a killed run: moved aside first (one rename), so
    // nothing of it can be mistaken for this run's files, then deleted.
    if work.exists() {
        let trash = work.with_extension(format!("stale-{}", std::process::id()));
        fs::rename(work, &trash).with_context(|| format!("moving aside {}", work.display()))?;
        store::remove_any(&trash)?;
    }
    let src = work.join("src");
    let bld = work.join("build");
    let result = work.join("result");
    let out = result.join("out");
    for d in [&src, &bld, &out, &work.join("home"), &work.join("tmp")] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut log = fs::File::create(work.join("build.log"))?;
    writeln!(log, "mpsi build {} key {}", plan.name, plan.key)?;

    let mut phases = Phases::default();
    let tarball = store
        .input(&plan.source)
        .context("the source input vanished from the store")?;
    reporter.note(&format!("unpacking {}", plan.source.file));
    unpack(&tarball, &src)
        .with_context(|| format!("unpacking {} ({})", plan.source.file, tarball.display()))?;
    phases.done("unpack");

    for (p, path) in &plan.patches {
        reporter.note(&format!("applying {}", p.name));
        apply_patch(&src, &p.name, path, &mut log)?;
    }
    phases.done("patch");

    let ccache = if opts.ccache_dir.is_some() {
        sandbox::which("ccache")
    } else {
        None
    };
    let pkg = match &plan.source.version {
        Some(v) => format!("{}-{v}", plan.name),
        None => plan.name.clone(),
    };
    // Build paths must not reach the output: __FILE__ strings and DWARF
    // names see fixed paths instead of this store's work directory.
    let maps = format!(
        "-ffile-prefix-map={}=/usr/src/{pkg} -ffile-prefix-map={}=/usr/src/{pkg}/_build",
        src.display(),
        bld.display()
    );
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), sandbox::PATH.into()),
        ("LC_ALL".into(), "C".into()),
        ("LANG".into(), "C".into()),
        ("TZ".into(), "UTC".into()),
        ("SOURCE_DATE_EPOCH".into(), plan.epoch.to_string()),
        ("HOME".into(), work.join("home").display().to_string()),
        ("TMPDIR".into(), work.join("tmp").display().to_string()),
        ("CC".into(), "gcc".into()),
        ("CXX".into(), "g++".into()),
        ("CFLAGS".into(), maps.clone()),
        ("CXXFLAGS".into(), maps),
        ("NINJA_STATUS".into(), "[%f/%t] ".into()),
    ];
    if ccache.is_some() {
        let dir = opts.ccache_dir.clone().expect("checked above");
        env.push(("CCACHE_DIR".into(), dir.display().to_string()));
        env.push(("CCACHE_BASEDIR".into(), work.display().to_string()));
        reporter.note(&format!(
            "ccache found: compiler results are cached in {}",
            dir.display()
        ));
        writeln!(log, "ccache: {}", dir.display())?;
    }
    let sb = Sandbox::new(plan.net, env.clone());
    writeln!(
        log,
        "network: {:?}{}",
        plan.net,
        if plan.net.hermetic() {
            ""
        } else {
            " (NOT hermetic: --allow-network)"
        }
    )?;

    let mut args: Vec<String> = vec![
        "-G".into(),
        "Ninja".into(),
        "-S".into(),
        src.display().to_string(),
        "-B".into(),
        bld.display().to_string(),
    ];
    args.extend(plan.cmake_flags.iter().cloned());
    if let Some(cc) = &ccache {
        args.push(format!("-DCMAKE_C_COMPILER_LAUNCHER={}", cc.display()));
        args.push(format!("-DCMAKE_CXX_COMPILER_LAUNCHER={}", cc.display()));
    }
    reporter.note("configuring (cmake)");
    run_logged(&sb, "cmake", &args, work, &mut log, None, "cmake configure")?;
    phases.done("configure");

    let mut nargs = vec!["-C".to_string(), bld.display().to_string()];
    if let Some(j) = opts.jobs {
        nargs.push(format!("-j{j}"));
    }
    let bar = reporter.task(&format!("build {}", plan.name), Some(1), Unit::Steps);
    run_logged(&sb, "ninja", &nargs, work, &mut log, Some(bar.as_ref()), "ninja")?;
    bar.finish();
    phases.done("build");
    prune_objects(&bld)?;
    phases.done("prune");

    reporter.note("installing");
    let mut install_env = env;
    install_env.push(("DESTDIR".into(), out.display().to_string()));
    let sb_install = Sandbox::new(plan.net, install_env);
    run_logged(
        &sb_install,
        "cmake",
        &["--install".into(), bld.display().to_string()],
        work,
        &mut log,
        None,
        "cmake --install",
    )?;
    // Installed: the source and build trees are done with. Removing them
    // now, before stripping writes the debug files, keeps the peak disk
    // use near the size of the build tree alone.
    store::remove_any(&src)?;
    store::remove_any(&bld)?;
    phases.done("install");

    let build_ids = if plan.strip {
        reporter.note("stripping");
        let ids = strip_tree(&out, &result.join("debug"))?;
        phases.done("strip");
        ids
    } else {
        Vec::new()
    };
    fs::copy(work.join("build.log"), result.join("build.log"))?;
    let manifest = store::Manifest::of(&result)?;
    fsutil::write_atomic(
        &result.join("manifest.json"),
        &serde_json::to_vec(&manifest)?,
    )?;
    phases.done("manifest");
    Ok(Meta {
        name: plan.name.clone(),
        version: plan.source.version.clone(),
        key: plan.key.clone(),
        recipe: RECIPE.into(),
        source: plan.source.file.clone(),
        source_sha256: plan.source.sha256.clone(),
        patches: plan.patches.iter().map(|(p, _)| p.clone()).collect(),
        cmake_flags: plan.cmake_flags.clone(),
        source_date_epoch: plan.epoch,
        toolchain: plan.toolchain.clone(),
        hermetic: plan.net.hermetic(),
        network: plan.net,
        ccache: ccache.is_some(),
        seconds: 0.0,
        phases: phases.done,
        build_ids,
        mpsi_version: env!("CARGO_PKG_VERSION").into(),
    })
}

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
