//! The command line: argument types (`args.rs`), one function per command,
//! text rendering, progress bars. Environment variables are read here and
//! passed to the library as values.

mod args;
mod bars;
pub mod inspect;
pub mod render;

use crate::{assemble, build, fetch, fsutil, http, lock, model, oci, progress, sink, spec, store};
use anyhow::{Context, Result};
pub use args::Cli;
use args::*;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Options every command takes.
struct Global {
    json: bool,
    store: Option<PathBuf>,
}

pub fn run(cli: Cli) -> Result<()> {
    let g = Global {
        json: cli.json,
        store: cli.store,
    };
    match cli.command {
        Command::Assemble(x) => cmd_assemble(&g, x),
        Command::Export(x) => cmd_export(&g, x),
        Command::Load(x) => cmd_load(&g, x),
        Command::Push(x) => cmd_push(&g, x),
        Command::Inspect(x) => cmd_inspect(&g, x),
        Command::Lock(x) => cmd_lock(&g, x),
        Command::Fetch(x) => cmd_fetch(&g, x),
        Command::Store(x) => cmd_store(&g, x),
    }
}

fn cmd_assemble(g: &Global, a: AssembleArgs) -> Result<()> {
    let spec = spec::Spec::load(&a.spec)?;
    let store = store::Store::open(g.store.as_deref())?;
    let opts = assemble_options(&a, &store)?;
    if let Some(r) = &a.push {
        // A bad reference fails now, not after the build.
        model::reference::Reference::parse(r)?;
    }
    if a.dry_run {
        let plan = assemble::dry_run::run(&spec, &store, &opts)?;
        return output(g.json, &plan, || render::dry_run(&plan));
    }
    let report = assemble::run(&spec, &store, &opts, reporter(g.json).as_ref())?;
    if a.push.is_none() && !a.load {
        return output(g.json, &report, || render::assembled(&report));
    }
    // The image just written, sent on to each sink asked for.
    let mut v = serde_json::to_value(&report)?;
    let mut lines = vec![format!(
        "assembled {} ({})",
        report.image, report.manifest_digest
    )];
    if let Some(r) = &a.push {
        let image = oci::Layout::open(&opts.out)?.image(Some(&report.tag))?;
        let pushed = push(&store, &image, r, &[], 4, &a.registry, g.json)?;
        lines.push(pushed.reference.clone());
        v["push"] = serde_json::to_value(&pushed)?;
    }
    if a.load {
        let loaded = load(&report.layout, Some(&report.tag), g.json)?;
        lines.extend(load_lines(&loaded));
        v["load"] = serde_json::to_value(&loaded)?;
    }
    output(g.json, &v, || {
        for l in &lines {
            println!("{l}");
        }
    })
}

/// What the assemble flags and the environment ask of the pipeline.
fn assemble_options(a: &AssembleArgs, store: &store::Store) -> Result<assemble::Options> {
    let threads = cpu_budget(a.jobs)?;
    Ok(assemble::Options {
        out: a.out.clone(),
        tag: a.tag.clone(),
        name: a.name.clone(),
        compression: a.compression,
        use_cache: !a.no_cache,
        threads,
        source_date_epoch: source_date_epoch_env()?,
        inputs: match (&a.inputs, a.offline) {
            (Some(b), _) => fetch::Origin::Bundle(b.clone()),
            (None, true) => fetch::Origin::StoreOnly,
            (None, false) => fetch::Origin::Network,
        },
        build: build::Options {
            source_date_epoch: 0, // set from the assemble's one clock
            allow_network: a.allow_network,
            ccache_dir: (!a.no_ccache).then(|| ccache_dir(store)),
            jobs: a.build_jobs.or(a.jobs),
        },
    })
}

fn cmd_export(g: &Global, e: ExportArgs) -> Result<()> {
    let image = oci::Layout::open(&e.layout.layout)?.image(e.layout.tag.as_deref())?;
    let reporter = reporter(g.json);
    // A device or FIFO (`-o /dev/null`, a named pipe) is written in place:
    // the temp-file-and-rename below would replace it with a regular file.
    let special = std::fs::metadata(&e.output).is_ok_and(|m| !m.is_file() && !m.is_dir());
    let report = if e.output == Path::new("-") {
        write_archive(
            e.format,
            std::io::stdout().lock(),
            &image,
            reporter.as_ref(),
        )?
    } else if special {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&e.output)
            .with_context(|| format!("opening {}", e.output.display()))?;
        write_archive(e.format, file, &image, reporter.as_ref())?
    } else {
        let dir = e
            .output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = fsutil::temp_in(dir)?;
        let r = write_archive(e.format, tmp.reopen()?, &image, reporter.as_ref())?;
        fsutil::commit(tmp, &e.output)
            .with_context(|| format!("writing {}", e.output.display()))?;
        r
    };
    if e.output == Path::new("-") {
        // stdout carries the archive; the summary goes to stderr.
        if g.json {
            eprintln!("{}", serde_json::to_string(&report)?);
        }
        return Ok(());
    }
    output(g.json, &report, || {
        println!(
            "wrote {} ({:?}, {} bytes, {})",
            e.output.display(),
            report.format,
            report.bytes,
            report.digest
        );
    })
}

/// Writes the image as an archive into `out`, buffered, and flushes it.
fn write_archive<W: Write>(
    format: sink::archive::ArchiveFormat,
    out: W,
    image: &model::Image,
    reporter: &dyn progress::Reporter,
) -> Result<sink::archive::ExportReport> {
    use sink::Sink;
    let mut sink = sink::archive::ArchiveSink::new(format, std::io::BufWriter::new(out));
    let report = sink.send(image, reporter)?;
    sink.into_inner().into_inner().map_err(|e| e.into_error())?;
    Ok(report)
}

fn cmd_load(g: &Global, l: LoadArgs) -> Result<()> {
    let report = load(&l.layout.layout, l.layout.tag.as_deref(), g.json)?;
    output(g.json, &report, || {
        for l in load_lines(&report) {
            println!("{l}");
        }
    })
}

fn cmd_push(g: &Global, p: PushArgs) -> Result<()> {
    let image = oci::Layout::open(&p.layout)?.image(p.image.as_deref())?;
    let store = store::Store::open(g.store.as_deref())?;
    let report = push(
        &store,
        &image,
        &p.reference,
        &p.tags,
        p.jobs,
        &p.registry,
        g.json,
    )?;
    output(g.json, &report, || println!("{}", report.reference))
}

fn cmd_inspect(g: &Global, i: InspectArgs) -> Result<()> {
    let image = oci::Layout::open(&i.layout.layout)?.image(i.layout.tag.as_deref())?;
    let info = inspect::inspect(&image)?;
    output(g.json, &info, || print_inspection(&info))
}

fn cmd_lock(g: &Global, l: LockArgs) -> Result<()> {
    let mut lf = lock::LockFile::load(&l.lock.lock)?;
    let r = lock::refresh(&mut lf, l.from.as_deref(), &l.repin)?;
    let rt = if l.runtime {
        let outputs = library_outputs(g, &lf)?;
        Some(lock::runtime::refresh(&mut lf, &outputs)?)
    } else {
        None
    };
    let mut report = serde_json::to_value(&r)?;
    if let Some(rt) = &rt {
        report["runtime"] = serde_json::to_value(rt)?;
    }
    output(g.json, &report, || {
        if let Some(rt) = &rt {
            for p in &rt.added {
                println!("runtime + {p}");
            }
            for p in &rt.removed {
                println!("runtime - {p}");
            }
            println!("runtime packages: {}", rt.packages.len());
        }
        for p in &r.patches {
            println!("patch   {p}");
        }
        for p in &r.pinned {
            println!("pinned  {p}");
        }
        println!(
            "{} {}",
            r.lock.display(),
            if r.changed || rt.as_ref().is_some_and(|rt| rt.changed) {
                "updated"
            } else {
                "is up to date"
            }
        );
    })
}

fn cmd_fetch(g: &Global, f: FetchArgs) -> Result<()> {
    let lf = lock::LockFile::load(&f.lock.lock)?;
    let store = store::Store::open(g.store.as_deref())?;
    let reporter = reporter(g.json);
    let mut fetcher = fetch::Fetcher::new(&store, reporter.as_ref());
    if let Some(ms) = std::env::var("MPSI_FETCH_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        fetcher.backoff = std::time::Duration::from_millis(ms);
    }
    let origin = match &f.from {
        Some(d) => fetch::Origin::Dir(d.clone()),
        None => fetch::Origin::Network,
    };
    let all = lf.lock.all_inputs();
    let inputs: Vec<&lock::Input> = all.iter().collect();
    let fetched = fetcher.ensure(&inputs, &origin)?;
    let bundle = match &f.bundle {
        Some(b) => Some(fetch::write_bundle(&store, &lf, b)?),
        None => None,
    };
    let report = serde_json::json!({ "inputs": &fetched, "bundle": &bundle });
    output(g.json, &report, || {
        for i in &fetched {
            println!(
                "{:<20} {} {:>11} bytes  {}",
                i.name, i.sha256, i.size, i.from
            );
        }
        if let Some(b) = &bundle {
            println!(
                "bundle  {} ({} inputs, {} bytes)",
                b.bundle.display(),
                b.inputs.len(),
                b.bytes
            );
        }
    })
}

fn cmd_store(g: &Global, sc: StoreCommand) -> Result<()> {
    let store = match sc {
        StoreCommand::Gc(_) => store::Store::open_exclusive(g.store.as_deref())?,
        _ => store::Store::open(g.store.as_deref())?,
    };
    let json = g.json;
    match sc {
        StoreCommand::Ls => {
            let l = store.list()?;
            output(g.json, &l, || {
                println!("store  {}", l.root.display());
                for i in &l.inputs {
                    println!("input  {} {:>12} bytes", i.id, i.size);
                }
                for b in &l.builds {
                    println!("build  {} {:>12} bytes  {}", b.id, b.size, b.detail);
                }
                let blob_bytes: u64 = l.blobs.iter().map(|b| b.size).sum();
                println!(
                    "layers {} cache entries, {} blobs, {} bytes",
                    l.layer_entries,
                    l.blobs.len(),
                    blob_bytes
                );
            })
        }
        StoreCommand::Verify => {
            let v = store.verify()?;
            output(g.json, &v, || {
                for b in &v.bad {
                    println!("BAD  {b}");
                }
                println!("checked {} items, {} bad", v.checked, v.bad.len());
            })?;
            if !v.bad.is_empty() {
                anyhow::bail!("the store holds {} corrupt item(s)", v.bad.len());
            }
            Ok(())
        }
        StoreCommand::Gc(gc) => {
            let lf = lock::LockFile::load(&gc.lock.lock)?;
            let keep_inputs = lf.lock.all_inputs().into_iter().map(|i| i.sha256).collect();
            let keep_builds = gc_build_roots(&store, &lf)?;
            let c = store.gc(&keep_inputs, &keep_builds, gc.max_age, gc.dry_run)?;
            output(json, &c, || {
                for r in &c.removed {
                    println!("{} {r}", if c.dry_run { "would remove" } else { "removed" });
                }
                println!(
                    "{} {} items, {} bytes",
                    if c.dry_run { "would free" } else { "freed" },
                    c.removed.len(),
                    c.bytes
                );
            })
        }
    }
}

/// Sends the image of a layout to the Docker engine DOCKER_HOST names.
fn load(layout: &Path, tag: Option<&str>, json: bool) -> Result<sink::docker::LoadReport> {
    use sink::Sink;
    let image = oci::Layout::open(layout)?.image(tag)?;
    let host = std::env::var("DOCKER_HOST").ok();
    let endpoint = sink::docker::Endpoint::parse(host.as_deref())?;
    let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    if tls && matches!(endpoint, sink::docker::Endpoint::Tcp(_)) {
        anyhow::bail!(
            "DOCKER_TLS_VERIFY is set, but mpsi load speaks plain HTTP only; \
             use `mpsi export --format docker-archive -o - | docker load` for a TLS engine"
        );
    }
    sink::docker::DockerSink { endpoint }.send(&image, reporter(json).as_ref())
}

fn load_lines(r: &sink::docker::LoadReport) -> Vec<String> {
    if r.loaded.is_empty() {
        return vec![format!("loaded {}", r.image_id)];
    }
    r.loaded
        .iter()
        .map(|name| format!("loaded {name} ({})", r.image_id))
        .collect()
}

/// Pushes `image` to `reference` through the registry sink, with
/// credentials from the flags and the environment.
fn push(
    store: &store::Store,
    image: &model::Image,
    reference: &str,
    tags: &[String],
    jobs: usize,
    a: &RegistryArgs,
    json: bool,
) -> Result<sink::registry::PushReport> {
    use sink::Sink;
    let reference = model::reference::Reference::parse(reference)?;
    for t in tags {
        model::reference::Reference::parse(&format!("{}:{t}", reference.name()))?;
    }
    let mut retry = http::RetryPolicy::default();
    if let Some(ms) = std::env::var("MPSI_PUSH_BACKOFF_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        retry.base = std::time::Duration::from_millis(ms);
    }
    let mut sink = sink::registry::RegistrySink {
        opts: sink::registry::Options {
            reference,
            tags: tags.to_vec(),
            jobs: jobs.max(1),
            insecure: a.insecure_registry.clone(),
            timeouts: http::Timeouts {
                connect: a.connect_timeout,
                stall: a.stall_timeout,
            },
            retry,
            chunk_size: a.chunk_size.filter(|&c| c > 0),
            credentials: credential_sources(a.creds.as_deref())?,
            record: Some(store.root().join("push-record.json")),
        },
    };
    let report = sink.send(image, reporter(json).as_ref())?;
    if let Some(f) = &a.digest_file {
        fsutil::write_atomic(f, report.digest.as_bytes())
            .with_context(|| format!("writing the digest to {}", f.display()))?;
    }
    Ok(report)
}

/// Where registry credentials come from: --creds, the MPSI_REGISTRY_*
/// variables, then the containers and Docker config files.
fn credential_sources(creds: Option<&str>) -> Result<sink::registry::creds::Sources> {
    use sink::registry::creds::{Credential, Sources};
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let explicit = match (
        creds,
        std::env::var("MPSI_REGISTRY_USER"),
        std::env::var("MPSI_REGISTRY_PASSWORD"),
    ) {
        (Some(c), _, _) => Some(Credential::from_user_pass(c).context("--creds")?),
        (None, Ok(u), Ok(p)) if !u.is_empty() => {
            Some(Credential::from_user_pass(&format!("{u}:{p}"))?)
        }
        _ => None,
    };
    let home = env("HOME");
    let mut auth_files: Vec<PathBuf> = env("REGISTRY_AUTH_FILE").into_iter().collect();
    auth_files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    auth_files.extend(
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
    );
    let docker_config = env("DOCKER_CONFIG")
        .or_else(|| home.map(|h| h.join(".docker")))
        .map(|d| d.join("config.json"));
    Ok(Sources {
        explicit,
        auth_files,
        docker_config,
    })
}

/// Build outputs `store gc` keeps: what the lock's builds recorded, on the
/// assemble's clock (SOURCE_DATE_EPOCH, else the lock's).
fn gc_build_roots(
    store: &store::Store,
    lf: &lock::LockFile,
) -> Result<std::collections::BTreeSet<String>> {
    let epoch = source_date_epoch_env()?.unwrap_or(lf.lock.source_date_epoch);
    build::recorded_roots(store, lf, epoch)
}

/// The one CPU knob: `--jobs N` (default: every CPU) sizes rayon's global
/// pool, which the gzip compressor runs on, once for the process.
fn cpu_budget(jobs: Option<usize>) -> Result<usize> {
    let n = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("mpsi-compress-{i}"))
        .build_global()
        .context("starting the compression thread pool")?;
    Ok(n)
}

fn progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// ccache's directory: CCACHE_DIR, else ~/.cache/ccache, else in the store.
fn ccache_dir(store: &store::Store) -> PathBuf {
    std::env::var_os("CCACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ccache")))
        .unwrap_or_else(|| store.root().join("ccache"))
}

/// The installed trees, in the store, of the builds `[runtime]
/// libraries_of` names: `mpsi lock --runtime` reads which libraries their
/// programs need.
fn library_outputs(g: &Global, lf: &lock::LockFile) -> Result<Vec<(String, PathBuf)>> {
    let names = &lf.lock.runtime.libraries_of;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let store = store::Store::open(g.store.as_deref())?;
    let opts = build::Options {
        source_date_epoch: source_date_epoch_env()?.unwrap_or(lf.lock.source_date_epoch),
        allow_network: false,
        ccache_dir: None,
        jobs: None,
    };
    names
        .iter()
        .map(|name| {
            let plan = build::plan(lf, name, &opts)?;
            let dir = store.build(&plan.key).with_context(|| {
                format!(
                    "build {name:?} (key {}) is not in the store, and `mpsi lock --runtime` reads the \
libraries its programs need from its output: run `mpsi assemble` first (it builds {name:?}), then \
`mpsi lock --runtime` again",
                    &plan.key[..16]
                )
            })?;
            Ok((name.clone(), dir.join("out")))
        })
        .collect()
}

/// SOURCE_DATE_EPOCH from the environment (empty counts as unset).
fn source_date_epoch_env() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse::<u64>().map(Some).with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds since 1970")
        }),
        _ => Ok(None),
    }
}

/// Progress bars when stderr is a terminal and the output is for humans;
/// warnings on stderr either way.
fn reporter(json: bool) -> Box<dyn progress::Reporter> {
    if progress(json) {
        Box::new(bars::Bars::default())
    } else {
        Box::new(bars::WarningsOnly)
    }
}

fn output<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human();
    }
    Ok(())
}

fn print_inspection(i: &inspect::Inspection) {
    println!("image      {}", i.image.as_deref().unwrap_or("(unnamed)"));
    println!(
        "manifest   {} ({} bytes)",
        i.manifest_digest, i.manifest_size
    );
    println!("config     {}", i.config_digest);
    println!("created    {}", i.created.as_deref().unwrap_or("-"));
    println!("platform   {}", i.platform);
    for (label, key) in [
        ("entrypoint", "Entrypoint"),
        ("cmd", "Cmd"),
        ("user", "User"),
        ("workdir", "WorkingDir"),
        ("env", "Env"),
    ] {
        if !i.config[key].is_null() {
            println!("{label:<10} {}", i.config[key]);
        }
    }
    if let Some(p) = i.config["ExposedPorts"].as_object() {
        println!(
            "ports      {}",
            p.keys().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    if let Some(v) = i.config["Volumes"].as_object() {
        println!(
            "volumes    {}",
            v.keys().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    println!(
        "layers     {} ({} bytes compressed)",
        i.layers.len(),
        i.total_size
    );
    for (n, l) in i.layers.iter().enumerate() {
        println!(
            "  {:>2}  {}  {:>11} bytes  {:>11} unpacked  {:>6} entries  {}",
            n + 1,
            l.digest,
            l.size,
            l.uncompressed_size,
            l.entries,
            l.created_by.as_deref().unwrap_or("")
        );
    }
    for r in &i.referrers {
        println!(
            "referrer   {}  {}  {} bytes",
            r.digest, r.artifact_type, r.size
        );
    }
}
