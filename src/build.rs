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
use crate::lock::{Input, LockFile, Patch};
use crate::sandbox::{self, Net, Sandbox};
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The build recipe this mpsi implements. Changing how a build is driven in
/// a way that can change its output bumps this (and so every build key).
pub const RECIPE: &str = "cmake-ninja-v1";

pub struct Options {
    /// Build with the host network if no sandbox can be had (recorded).
    pub allow_network: bool,
    /// Use ccache when it is installed.
    pub ccache: bool,
    pub progress: bool,
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
    let epoch = lf.lock.source_date_epoch;

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
) -> Result<Built> {
    let plan = plan(lf, name, opts)?;
    if let Some(path) = store.build(&plan.key) {
        return Ok(built(&plan, path, true));
    }
    // One build per name at a time: the work directory is a fixed path.
    let work_root = store.root().join("work-v1");
    let _guard = fsutil::lock(&work_root, name)?;
    if let Some(path) = store.build(&plan.key) {
        return Ok(built(&plan, path, true)); // built meanwhile by another mpsi
    }
    let fetcher = Fetcher::new(store, opts.progress);
    fetcher.ensure(&[&plan.source], origin)?;
    let work = store.work_dir(name);
    let started = Instant::now();
    let result = run(store, &plan, opts, &work);
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
            Ok(built(&plan, dest, false))
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

fn built(plan: &Plan, path: PathBuf, cached: bool) -> Built {
    let meta: Option<Meta> = fs::read(path.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Built {
        name: plan.name.clone(),
        key: plan.key.clone(),
        cached,
        hermetic: meta.as_ref().is_none_or(|m| m.hermetic),
        seconds: meta.as_ref().map_or(0.0, |m| m.seconds),
        phases: meta.map(|m| m.phases).unwrap_or_default(),
        path,
    }
}

/// The work directory: `src/` (unpacked, patched), `build/` (cmake),
/// `result/{out,debug}` (what moves into the store), `home/`, `tmp/`,
/// `build.log`.
fn run(store: &Store, plan: &Plan, opts: &Options, work: &Path) -> Result<Meta> {
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
    status(opts, &format!("unpacking {}", plan.source.file));
    unpack(&tarball, &src)
        .with_context(|| format!("unpacking {} ({})", plan.source.file, tarball.display()))?;
    phases.done("unpack");

    for (p, path) in &plan.patches {
        status(opts, &format!("applying {}", p.name));
        apply_patch(&src, &p.name, path, &mut log)?;
    }
    phases.done("patch");

    let ccache = if opts.ccache {
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
        let dir = std::env::var_os("CCACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ccache")))
            .unwrap_or_else(|| store.root().join("ccache"));
        env.push(("CCACHE_DIR".into(), dir.display().to_string()));
        env.push(("CCACHE_BASEDIR".into(), work.display().to_string()));
        status(
            opts,
            &format!(
                "ccache found: compiler results are cached in {}",
                dir.display()
            ),
        );
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
    status(opts, "configuring (cmake)");
    run_logged(&sb, "cmake", &args, work, &mut log, None, "cmake configure")?;
    phases.done("configure");

    let mut nargs = vec!["-C".to_string(), bld.display().to_string()];
    if let Some(j) = opts.jobs {
        nargs.push(format!("-j{j}"));
    }
    let bar = ninja_bar(opts.progress, &plan.name);
    run_logged(&sb, "ninja", &nargs, work, &mut log, Some(&bar), "ninja")?;
    bar.finish_and_clear();
    phases.done("build");
    prune_objects(&bld)?;
    phases.done("prune");

    status(opts, "installing");
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
        status(opts, "stripping");
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

fn status(opts: &Options, msg: &str) {
    if opts.progress {
        eprintln!("  {msg}");
    }
}

fn ninja_bar(enabled: bool, name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(1),
        if enabled {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {wide_msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("build {name}"));
    bar
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
    bar: Option<&indicatif::ProgressBar>,
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
            b.set_length(m);
            b.set_position(n);
            b.set_message(desc.to_string());
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
            b.abandon();
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

// ---- unpacking -------------------------------------------------------------

/// Unpacks a (gzip-compressed or plain) tarball into `dest`, dropping the
/// single top-level directory if every entry is under one. Rejects
/// absolute paths, `..`, links that resolve outside the tree, and device,
/// FIFO or other special entries.
pub fn unpack(tarball: &Path, dest: &Path) -> Result<()> {
    let strip = single_top_dir(tarball)?;
    let mut ar = tar::Archive::new(open_maybe_gz(tarball)?);
    let mut count = 0usize;
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    for entry in ar.entries().context("reading the tarball")? {
        let mut entry = entry.context("reading the tarball")?;
        let raw = entry.path()?.into_owned();
        let shown = raw.display().to_string();
        let Some(rel) = safe_rel(&raw, strip.as_deref())
            .with_context(|| format!("unsafe tarball entry {shown:?}"))?
        else {
            continue; // the stripped top directory itself
        };
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
            // A parent must not be a symlink made by an earlier entry.
            let canon = fs::canonicalize(parent)?;
            if !canon.starts_with(fs::canonicalize(dest)?) {
                bail!("unsafe tarball entry {shown:?}: its directory leads outside the tree");
            }
        }
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                fs::create_dir_all(&target)?;
                dirs.push((target, entry.header().mtime().unwrap_or(0)));
                continue;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut f = fs::File::create(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
                io::copy(&mut entry, &mut f)?;
                use std::os::unix::fs::PermissionsExt;
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                if let Ok(m) = entry.header().mtime() {
                    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(m))?;
                }
            }
            T::Symlink => {
                let link = entry
                    .link_name()?
                    .context("symlink without a target")?
                    .into_owned();
                if link.is_absolute() || !stays_inside(&rel, &link) {
                    bail!(
                        "unsafe tarball entry {shown:?}: symlink to {} leaves the tree",
                        link.display()
                    );
                }
                std::os::unix::fs::symlink(&link, &target)?;
            }
            T::Link => {
                let link = entry
                    .link_name()?
                    .context("hard link without a target")?
                    .into_owned();
                let Some(lrel) = safe_rel(&link, strip.as_deref())
                    .with_context(|| format!("unsafe tarball entry {shown:?}: hard link target"))?
                else {
                    bail!("unsafe tarball entry {shown:?}: hard link to the top directory");
                };
                fs::hard_link(dest.join(lrel), &target)
                    .with_context(|| format!("hard link {shown:?}"))?;
            }
            T::XHeader | T::XGlobalHeader | T::GNULongName | T::GNULongLink => continue,
            other => bail!(
                "unsafe tarball entry {shown:?}: {other:?} entries (devices, FIFOs) are not allowed in a source tree"
            ),
        }
        count += 1;
    }
    // Directory mtimes last (creating files in them moved them).
    for (d, m) in dirs.iter().rev() {
        if let Ok(f) = fs::File::open(d) {
            let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*m));
        }
    }
    if count == 0 {
        bail!("the tarball holds no files");
    }
    Ok(())
}

fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    drop(f);
    let f = io::BufReader::with_capacity(1 << 20, fs::File::open(path)?);
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// The one top-level directory every entry is under, if there is one.
fn single_top_dir(tarball: &Path) -> Result<Option<String>> {
    let mut ar = tar::Archive::new(open_maybe_gz(tarball)?);
    let mut top: Option<String> = None;
    for entry in ar.entries().context("reading the tarball")? {
        let entry = entry.context("reading the tarball")?;
        let p = entry.path()?.into_owned();
        let mut comps = p.components().filter(|c| !matches!(c, Component::CurDir));
        let Some(Component::Normal(first)) = comps.next() else {
            return Ok(None);
        };
        let first = first.to_string_lossy().into_owned();
        let is_dir_entry = comps.next().is_none();
        if is_dir_entry && entry.header().entry_type() != tar::EntryType::Directory {
            return Ok(None); // a file at the top level
        }
        match &top {
            None => top = Some(first),
            Some(t) if *t == first => {}
            Some(_) => return Ok(None),
        }
    }
    Ok(top)
}

/// The entry's path relative to the tree, or None for the stripped top
/// directory; an error for absolute paths and `..`.
fn safe_rel(p: &Path, strip: Option<&str>) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    let mut first = true;
    for c in p.components() {
        match c {
            Component::Normal(n) => {
                if first && strip.is_some_and(|s| n == OsStr::new(s)) {
                    first = false;
                    continue;
                }
                first = false;
                out.push(n);
            }
            Component::CurDir => {}
            Component::ParentDir => bail!("'..' in the path"),
            Component::RootDir | Component::Prefix(_) => bail!("absolute path"),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Whether a relative symlink at `rel` pointing to `link` stays in the tree.
fn stays_inside(rel: &Path, link: &Path) -> bool {
    let mut depth: i64 = rel.components().count() as i64 - 1; // the link's directory
    for c in link.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
    }
    true
}

// ---- patching --------------------------------------------------------------

/// Applies one patch with `patch -p1`, after a dry run that must succeed;
/// a failing patch is reported with the file and hunk patch names.
fn apply_patch(src: &Path, name: &str, path: &Path, log: &mut fs::File) -> Result<()> {
    let abs = fs::canonicalize(path).with_context(|| format!("reading {}", path.display()))?;
    let run = |dry: bool| -> Result<(bool, String)> {
        let mut c = Command::new("patch");
        c.args([
            "-p1",
            "--batch",
            "--forward",
            "--fuzz=0",
            "--no-backup-if-mismatch",
        ]);
        if dry {
            c.arg("--dry-run");
        }
        c.arg("-i")
            .arg(&abs)
            .current_dir(src)
            .env_clear()
            .env("PATH", sandbox::PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        let out = c.output().context("running patch")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    };
    let (ok, text) = run(true)?;
    writeln!(log, "$ patch -p1 --dry-run -i {name}\n{text}")?;
    if !ok {
        let mut file = String::new();
        let mut hunks = Vec::new();
        for l in text.lines() {
            if let Some(f) = l
                .strip_prefix("checking file ")
                .or_else(|| l.strip_prefix("patching file "))
            {
                if hunks.is_empty() {
                    file = f.trim().to_string();
                }
            } else if (l.starts_with("Hunk #") && l.contains("FAILED"))
                || l.contains("can't find file to patch")
                || l.contains("No file to patch")
            {
                hunks.push(l.trim().to_string());
            } else if l.contains("Reversed (or previously applied) patch detected") {
                hunks.push("already applied (reversed patch detected)".into());
            }
        }
        if hunks.is_empty() {
            hunks.push(text.lines().last().unwrap_or("patch failed").to_string());
        }
        return Err(PatchFailed {
            patch: format!("{name} ({})", path.display()),
            file,
            detail: hunks.join("; "),
        }
        .into());
    }
    let (ok, text) = run(false)?;
    writeln!(log, "$ patch -p1 -i {name}\n{text}")?;
    if !ok {
        bail!("patch {name} passed its dry run but failed to apply: {text}");
    }
    Ok(())
}

// ---- stripping ---------------------------------------------------------------

/// Every regular file under `dir` (symlinks not followed), sorted.
fn regular_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Deletes the object files of a finished build. Nothing installs them,
/// and for MariaDB with debug info they are about 0.75 GB that the
/// install would otherwise be added to.
fn prune_objects(build_dir: &Path) -> Result<()> {
    for f in regular_files(build_dir)? {
        if f.extension() == Some(OsStr::new("o")) {
            fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    Ok(())
}

/// Strips every ELF executable and shared library under `out`, moving its
/// debug info to `debug/.build-id/xx/rest.debug`. Returns the build-ids.
fn strip_tree(out: &Path, debug: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for f in regular_files(out)? {
        let Some(kind) = elf_kind(&f)? else { continue };
        let id = build_id(&f)?;
        if let Some(id) = &id {
            let dbg = debug
                .join(".build-id")
                .join(&id[..2])
                .join(format!("{}.debug", &id[2..]));
            fs::create_dir_all(dbg.parent().expect("has parent"))?;
            tool(
                "objcopy",
                &[
                    OsStr::new("--only-keep-debug"),
                    OsStr::new("--compress-debug-sections"),
                    f.as_os_str(),
                    dbg.as_os_str(),
                ],
            )?;
            ids.push(id.clone());
        }
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--remove-section=.comment"),
            OsStr::new("--remove-section=.note"),
        ];
        if kind == ElfKind::Shared {
            args.push(OsStr::new("--strip-unneeded"));
        }
        args.push(f.as_os_str());
        tool("strip", &args)?;
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[derive(PartialEq, Eq)]
enum ElfKind {
    Exec,
    Shared,
}

fn elf_kind(path: &Path) -> Result<Option<ElfKind>> {
    let mut f = fs::File::open(path)?;
    let mut h = [0u8; 18];
    if f.read(&mut h)? < 18 || &h[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let e_type = if h[5] == 1 {
        u16::from_le_bytes([h[16], h[17]])
    } else {
        u16::from_be_bytes([h[16], h[17]])
    };
    Ok(match e_type {
        2 => Some(ElfKind::Exec),
        // PIE executables are ET_DYN too; --strip-unneeded is right for both.
        3 => Some(ElfKind::Shared),
        _ => None,
    })
}

fn build_id(path: &Path) -> Result<Option<String>> {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .env_clear()
        .env("PATH", sandbox::PATH)
        .env("LC_ALL", "C")
        .output()
        .context("running readelf")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() > 2 && s.bytes().all(|b| b.is_ascii_hexdigit())))
}

fn tool(program: &str, args: &[&OsStr]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", sandbox::PATH)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_drops_object_files_only() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir_all(d.join("sql/CMakeFiles/sql.dir")).unwrap();
        for f in ["sql/CMakeFiles/sql.dir/handler.cc.o", "top.o"] {
            fs::write(d.join(f), b"obj").unwrap();
        }
        for f in ["sql/mariadbd", "sql/libsql.a", "sql/notes.o.txt"] {
            fs::write(d.join(f), b"keep").unwrap();
        }
        prune_objects(d).unwrap();
        let left: Vec<String> = regular_files(d)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        assert_eq!(left, ["sql/libsql.a", "sql/mariadbd", "sql/notes.o.txt"]);
    }

    #[test]
    fn ninja_status_lines_parse() {
        assert_eq!(
            ninja_status("[12/345] Building C object x.o"),
            Some((12, 345, "Building C object x.o"))
        );
        assert_eq!(ninja_status("FAILED: x.o"), None);
    }

    #[test]
    fn symlinks_must_stay_inside() {
        assert!(stays_inside(Path::new("a/b/link"), Path::new("../c")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../etc")));
        assert!(!stays_inside(Path::new("link"), Path::new("../x")));
        assert!(stays_inside(Path::new("link"), Path::new("x/../y")));
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        assert!(safe_rel(Path::new("/etc/passwd"), None).is_err());
        assert!(safe_rel(Path::new("a/../../x"), None).is_err());
        assert_eq!(
            safe_rel(Path::new("top/a/b"), Some("top")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(safe_rel(Path::new("top/"), Some("top")).unwrap(), None);
    }

    fn tarball(entries: &[(&str, tar::EntryType, &str)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            // set_path refuses '..'; write the raw name like a hostile tar would.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.finish().unwrap();
        f
    }

    #[test]
    fn hostile_tarballs_are_refused() {
        use tar::EntryType as T;
        let cases: &[&[(&str, T, &str)]] = &[
            &[
                ("top/ok", T::Regular, "x"),
                ("top/../../evil", T::Regular, "x"),
            ],
            &[("/etc/evil", T::Regular, "x")],
            &[
                ("top/ok", T::Regular, "x"),
                ("top/l", T::Symlink, "../../etc"),
            ],
            &[
                ("top/ok", T::Regular, "x"),
                ("top/l", T::Symlink, "/etc/passwd"),
            ],
            &[("top/ok", T::Regular, "x"), ("top/dev", T::Char, "")],
            &[("top/ok", T::Regular, "x"), ("top/fifo", T::Fifo, "")],
        ];
        for case in cases {
            let t = tarball(case);
            let dest = tempfile::tempdir().unwrap();
            let e = unpack(t.path(), dest.path());
            assert!(e.is_err(), "{case:?} was accepted");
            assert!(
                format!("{:#}", e.unwrap_err()).contains("unsafe"),
                "{case:?}"
            );
        }
        let t = tarball(&[
            ("top/a/file", T::Regular, "hello"),
            ("top/a/link", T::Symlink, "file"),
            ("top/hard", T::Link, "top/a/file"),
        ]);
        let dest = tempfile::tempdir().unwrap();
        unpack(t.path(), dest.path()).unwrap();
        assert_eq!(fs::read(dest.path().join("a/link")).unwrap(), b"hello");
        assert_eq!(fs::read(dest.path().join("hard")).unwrap(), b"hello");
    }
}
