//! The `cmake-ninja-v1` recipe: unpack, patch, configure, build, install,
//! strip, in a work tree of the store, each step timed. Every command runs
//! in the sandbox with a cleared environment (`build_env`).

use super::patch::apply_patch;
use super::sandbox::{self, Sandbox};
use super::strip::{prune_objects, strip_tree};
use super::{Meta, Options, Phases, Plan, RECIPE, run_logged};
use crate::fsutil;
use crate::progress::{Reporter, Unit};
use crate::store::{self, Store};
use crate::unpack::unpack;
use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directories of one build under the store's work directory.
struct WorkTree {
    root: PathBuf,
    src: PathBuf,
    bld: PathBuf,
    result: PathBuf,
    out: PathBuf,
}

impl WorkTree {
    /// A fresh tree; one left by a killed run is moved aside first (one
    /// rename, so nothing of it can be mistaken for this run's files), then
    /// deleted.
    fn fresh(work: &Path) -> Result<WorkTree> {
        if work.exists() {
            let trash = work.with_extension(format!("stale-{}", std::process::id()));
            fs::rename(work, &trash).with_context(|| format!("moving aside {}", work.display()))?;
            store::remove_any(&trash)?;
        }
        let result = work.join("result");
        let t = WorkTree {
            root: work.to_path_buf(),
            src: work.join("src"),
            bld: work.join("build"),
            out: result.join("out"),
            result,
        };
        for d in [
            &t.src,
            &t.bld,
            &t.out,
            &work.join("home"),
            &work.join("tmp"),
        ] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(t)
    }
}

pub(super) fn run(
    store: &Store,
    plan: &Plan,
    opts: &Options,
    work: &Path,
    reporter: &dyn Reporter,
) -> Result<Meta> {
    let tree = WorkTree::fresh(work)?;
    let mut log = fs::File::create(work.join("build.log"))?;
    writeln!(log, "mpsi build {} key {}", plan.name, plan.key)?;
    let mut phases = Phases::default();

    let tarball = store
        .input(&plan.source)
        .context("the source input vanished from the store")?;
    reporter.note(&format!("unpacking {}", plan.source.file));
    unpack(&tarball, &tree.src)
        .with_context(|| format!("unpacking {} ({})", plan.source.file, tarball.display()))?;
    phases.done("unpack");
    for (p, path) in &plan.patches {
        reporter.note(&format!("applying {}", p.name));
        apply_patch(&tree.src, &p.name, path, &mut log)?;
    }
    phases.done("patch");

    let ccache = opts
        .ccache_dir
        .as_ref()
        .and_then(|dir| sandbox::which("ccache").map(|exe| (exe, dir.clone())));
    let env = build_env(plan, &tree, ccache.as_ref().map(|(_, d)| d.as_path()));
    if let Some((_, dir)) = &ccache {
        reporter.note(&format!(
            "ccache found: compiler results are cached in {}",
            dir.display()
        ));
        writeln!(log, "ccache: {}", dir.display())?;
    }
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
    let sb = Sandbox::new(plan.net, env.clone());
    configure(
        &sb,
        plan,
        &tree,
        ccache.as_ref().map(|(e, _)| e.as_path()),
        &mut log,
        reporter,
    )?;
    phases.done("configure");
    compile(&sb, plan, opts, &tree, &mut log, reporter)?;
    phases.done("build");
    prune_objects(&tree.bld)?;
    phases.done("prune");
    install(plan, env, &tree, &mut log, reporter)?;
    phases.done("install");

    let build_ids = if plan.strip {
        reporter.note("stripping");
        let ids = strip_tree(&tree.out, &tree.result.join("debug"))?;
        phases.done("strip");
        ids
    } else {
        Vec::new()
    };
    fs::copy(work.join("build.log"), tree.result.join("build.log"))?;
    let manifest = store::Manifest::of(&tree.result)?;
    fsutil::write_atomic(
        &tree.result.join("manifest.json"),
        &serde_json::to_vec(&manifest)?,
    )?;
    phases.done("manifest");
    Ok(meta(plan, ccache.is_some(), phases, build_ids))
}

/// The whole environment of every build command: nothing of the caller's.
fn build_env(plan: &Plan, tree: &WorkTree, ccache_dir: Option<&Path>) -> Vec<(String, String)> {
    let pkg = match &plan.source.version {
        Some(v) => format!("{}-{v}", plan.name),
        None => plan.name.clone(),
    };
    // Build paths must not reach the output: __FILE__ strings and DWARF
    // names see fixed paths instead of this store's work directory.
    let maps = format!(
        "-ffile-prefix-map={}=/usr/src/{pkg} -ffile-prefix-map={}=/usr/src/{pkg}/_build",
        tree.src.display(),
        tree.bld.display()
    );
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), sandbox::PATH.into()),
        ("LC_ALL".into(), "C".into()),
        ("LANG".into(), "C".into()),
        ("TZ".into(), "UTC".into()),
        ("SOURCE_DATE_EPOCH".into(), plan.epoch.to_string()),
        ("HOME".into(), tree.root.join("home").display().to_string()),
        ("TMPDIR".into(), tree.root.join("tmp").display().to_string()),
        ("CC".into(), "gcc".into()),
        ("CXX".into(), "g++".into()),
        ("CFLAGS".into(), maps.clone()),
        ("CXXFLAGS".into(), maps),
        ("NINJA_STATUS".into(), "[%f/%t] ".into()),
    ];
    if let Some(dir) = ccache_dir {
        env.push(("CCACHE_DIR".into(), dir.display().to_string()));
        env.push(("CCACHE_BASEDIR".into(), tree.root.display().to_string()));
    }
    env
}

/// cmake's configure step: exactly the lock's flags, plus the generator,
/// the directories and the ccache launcher.
fn configure(
    sb: &Sandbox,
    plan: &Plan,
    tree: &WorkTree,
    ccache: Option<&Path>,
    log: &mut fs::File,
    reporter: &dyn Reporter,
) -> Result<()> {
    let mut args: Vec<String> = vec![
        "-G".into(),
        "Ninja".into(),
        "-S".into(),
        tree.src.display().to_string(),
        "-B".into(),
        tree.bld.display().to_string(),
    ];
    args.extend(plan.cmake_flags.iter().cloned());
    if let Some(cc) = ccache {
        args.push(format!("-DCMAKE_C_COMPILER_LAUNCHER={}", cc.display()));
        args.push(format!("-DCMAKE_CXX_COMPILER_LAUNCHER={}", cc.display()));
    }
    reporter.note("configuring (cmake)");
    run_logged(sb, "cmake", &args, &tree.root, log, None, "cmake configure")
}

/// ninja, its `[N/M]` lines moving a progress task.
fn compile(
    sb: &Sandbox,
    plan: &Plan,
    opts: &Options,
    tree: &WorkTree,
    log: &mut fs::File,
    reporter: &dyn Reporter,
) -> Result<()> {
    let mut args = vec!["-C".to_string(), tree.bld.display().to_string()];
    if let Some(j) = opts.jobs {
        args.push(format!("-j{j}"));
    }
    let task = reporter.task(&format!("build {}", plan.name), Some(1), Unit::Steps);
    run_logged(
        sb,
        "ninja",
        &args,
        &tree.root,
        log,
        Some(task.as_ref()),
        "ninja",
    )?;
    task.finish();
    Ok(())
}

/// `cmake --install` into the result's `out/` (DESTDIR); then the source
/// and build trees are done with. Removing them now, before stripping
/// writes the debug files, keeps the peak disk use near the size of the
/// build tree alone.
fn install(
    plan: &Plan,
    mut env: Vec<(String, String)>,
    tree: &WorkTree,
    log: &mut fs::File,
    reporter: &dyn Reporter,
) -> Result<()> {
    reporter.note("installing");
    env.push(("DESTDIR".into(), tree.out.display().to_string()));
    let sb = Sandbox::new(plan.net, env);
    let args = ["--install".into(), tree.bld.display().to_string()];
    run_logged(
        &sb,
        "cmake",
        &args,
        &tree.root,
        log,
        None,
        "cmake --install",
    )?;
    store::remove_any(&tree.src)?;
    store::remove_any(&tree.bld)
}

fn meta(plan: &Plan, ccache: bool, phases: Phases, build_ids: Vec<String>) -> Meta {
    Meta {
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
        ccache,
        seconds: 0.0,
        phases: phases.done,
        build_ids,
        mpsi_version: env!("CARGO_PKG_VERSION").into(),
    }
}
