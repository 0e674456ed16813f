//! mpsi: hermetic, reproducible OCI images without Docker.

mod assemble;
mod build;
mod cli;
mod deb;
mod elf;
mod fetch;
mod fsutil;
mod http;
mod layer;
mod lock;
mod model;
mod oci;
mod progress;
mod rootfs;
mod sink;
mod spec;
mod store;
mod unpack;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXIT_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "mpsi",
    version,
    about = "Hermetic, reproducible OCI images without Docker",
    long_about = "mpsi assembles OCI images from a declarative spec (TOML, see layers/): \
every layer is a deterministic tarball written directly by mpsi, so the same inputs \
always give the same image digest. No Docker daemon and no root are needed to build; \
ownership and modes go into tar headers only.",
    after_help = "Exit status: 0 success; 1 the work failed (I/O, corrupt data); 2 bad usage or bad input \
(an invalid spec, a missing source).\n\nEnvironment: SOURCE_DATE_EPOCH overrides the spec's timestamp; \
MPSI_STORE sets the store (default ~/.cache/mpsi)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print a machine-readable JSON result on stdout (errors too).
    #[arg(long, global = true)]
    json: bool,
    /// Store directory for layer blobs and the layer cache [env: MPSI_STORE].
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Build the image a spec describes into an OCI image layout.
    #[command(
        after_help = "Examples:\n  mpsi assemble                          # layers/mariadb-pageserver.toml -> out/oci\n  \
mpsi assemble layers/x.toml -o out/x --compression zstd\n  SOURCE_DATE_EPOCH=1700000000 mpsi assemble --json\n\n\
Layers whose inputs are unchanged since the last run come from the store without being rewritten."
    )]
    Assemble(AssembleArgs),
    /// Write an image from a layout as an oci-archive or docker-archive tarball.
    #[command(
        after_help = "Examples:\n  mpsi export --format docker-archive -o image.tar\n  \
mpsi export --format docker-archive -o - | docker load\n  mpsi export --format oci-archive -o image.oci.tar"
    )]
    Export(ExportArgs),
    /// Load an image from a layout into a Docker engine (streamed; no temp file).
    #[command(
        after_help = "Examples:\n  mpsi load                                   # out/oci -> the engine at DOCKER_HOST or /var/run/docker.sock\n  \
DOCKER_HOST=tcp://127.0.0.1:2375 mpsi load -l out/x --tag v2\n\n\
Engines before Docker 23 cannot read zstd layers: mpsi sends those decompressed. \
No engine at hand: mpsi export --format docker-archive -o FILE."
    )]
    Load(LoadArgs),
    /// Show an image's manifest, config and layers (re-verifying every digest).
    Inspect(InspectArgs),
    /// Refresh mpsi.lock: re-pin the patch series; pin inputs from local files.
    #[command(
        after_help = "Examples:\n  mpsi lock                                   # re-hash patches/series into mpsi.lock\n  \
mpsi lock --from ~/Downloads                # pin inputs that have no hash yet from local files\n  \
mpsi lock --from DIR --repin mariadb-source # deliberately change a pinned source hash\n\n\
A pinned input hash never changes unless --repin names it."
    )]
    Lock(LockArgs),
    /// Put every input pinned in the lock into the store, or into a bundle.
    #[command(
        after_help = "Examples:\n  mpsi fetch                                 # download what the store lacks (URLs in mpsi.lock)\n  \
mpsi fetch --from /srv/tarballs            # import local copies instead, verified the same way\n  \
mpsi fetch --bundle inputs.tar             # also write every input into one tar, for an air-gapped machine\n  \
mpsi assemble --inputs inputs.tar --offline   # there: use only that bundle\n\n\
Size and sha256 are checked before anything enters the store; an interrupted download resumes."
    )]
    Fetch(FetchArgs),
    /// List, verify or garbage-collect the store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Push an image from a layout to a registry.
    #[command(
        after_help = "Examples:\n  mpsi push registry.example.com/team/mariadb-pageserver:1.0\n  \
mpsi push 127.0.0.1:5000/db:v1 --tag latest --digest-file digest.txt\n  \
mpsi push ghcr.io/acme/db:v1 --creds \"$USER:$TOKEN\" --json\n\n\
Prints REGISTRY/REPO@sha256:... on stdout. Blobs the registry has are skipped; blobs another \
repository on the same registry got from an earlier push are mounted. Credentials: --creds, else \
MPSI_REGISTRY_USER and MPSI_REGISTRY_PASSWORD, else REGISTRY_AUTH_FILE, \
$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, then \
$DOCKER_CONFIG/config.json (or ~/.docker/config.json) with its credential helpers. \
Plain http only for registries on this machine or named by --insecure-registry."
    )]
    Push(PushArgs),
}

#[derive(Args)]
struct PushArgs {
    /// OCI image layout directory to push from.
    #[arg(long, short = 'l', default_value = "out/oci", value_name = "DIR")]
    layout: PathBuf,
    /// Which image in the layout (its org.opencontainers.image.ref.name); needed when it holds several.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Where to push: REGISTRY/REPO[:TAG][@sha256:...] (tag latest when none is given).
    #[arg(value_name = "REF")]
    reference: String,
    /// Also tag the pushed manifest with this tag (repeatable).
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    tags: Vec<String>,
    /// Blobs uploaded at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to reach a registry (push and assemble --push).
#[derive(Args)]
struct RegistryArgs {
    /// USER:PASSWORD for the registry (else MPSI_REGISTRY_USER/MPSI_REGISTRY_PASSWORD, auth.json, docker config).
    #[arg(long, value_name = "USER:PASS")]
    creds: Option<String>,
    /// Speak plain http to this registry host although it is not on this machine (repeatable).
    #[arg(long, value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Write the pushed manifest digest into this file.
    #[arg(long, value_name = "FILE")]
    digest_file: Option<PathBuf>,
    /// Upload blobs larger than this in PATCH chunks of this many bytes (default: one PUT per blob).
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<u64>,
    /// Give up connecting after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    connect_timeout: std::time::Duration,
    /// Give up on a connection that makes no progress for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stall_timeout: std::time::Duration,
}

#[derive(Args)]
struct LockPath {
    /// The lockfile.
    #[arg(long, default_value = "mpsi.lock", value_name = "FILE")]
    lock: PathBuf,
}

#[derive(Args)]
struct LockArgs {
    #[command(flatten)]
    lock: LockPath,
    /// Directory with local copies of inputs (named as `file` in the lock), to pin unpinned inputs.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Change this input's pinned hash to that of its file in --from DIR (repeatable).
    #[arg(long, value_name = "NAME")]
    repin: Vec<String>,
    /// Also re-pin the runtime packages: the closure of [runtime] roots from apt's metadata (Debian host).
    #[arg(long)]
    runtime: bool,
}

#[derive(Args)]
struct FetchArgs {
    #[command(flatten)]
    lock: LockPath,
    /// Take inputs from this directory (files named as in the lock) instead of the network.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Then write every pinned input into this tar, for `assemble --inputs FILE --offline`.
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// List inputs, build outputs and layer blobs.
    Ls,
    /// Re-hash every input, layer blob and build output file.
    Verify,
    /// Remove what the lock does not pin and layer-cache entries unused for --max-age.
    Gc(GcArgs),
}

#[derive(Args)]
struct GcArgs {
    #[command(flatten)]
    lock: LockPath,
    /// Keep layer-cache entries used within this long.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    max_age: std::time::Duration,
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct AssembleArgs {
    /// The image spec.
    #[arg(default_value = "layers/mariadb-pageserver.toml")]
    spec: PathBuf,
    /// OCI image layout directory to write (created if missing; other tags in it are kept).
    #[arg(short, long, default_value = "out/oci", value_name = "DIR")]
    out: PathBuf,
    /// Tag to give the image instead of the spec's.
    #[arg(long)]
    tag: Option<String>,
    /// Layer compression instead of the spec's.
    /// gzip loads everywhere; zstd is smaller and faster but Docker 20.10 cannot load it; none: plain tar.
    #[arg(long, value_parser = parse_compression)]
    compression: Option<layer::compress::Compression>,
    /// Rewrite every layer even if the store has it from an earlier run.
    #[arg(long)]
    no_cache: bool,
    /// CPU threads mpsi uses [default: number of CPUs]: compression (the
    /// rayon pool and zstd's workers) and, unless --build-jobs is given,
    /// ninja -j. The output does not depend on it.
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Take build inputs missing from the store from this bundle (`mpsi fetch --bundle`).
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// Never use the network: inputs come from the store or --inputs only.
    #[arg(long)]
    offline: bool,
    /// If the build cannot be isolated from the network, build anyway (the
    /// output is recorded as non-hermetic and keyed apart).
    #[arg(long)]
    allow_network: bool,
    /// Do not use ccache for builds even if it is installed.
    #[arg(long)]
    no_ccache: bool,
    /// Say what would be fetched, built, reused and written, and why a build
    /// would rerun; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Parallel build jobs for ninja [default: --jobs if given, else ninja's].
    #[arg(long, value_name = "N")]
    build_jobs: Option<usize>,
    /// Then load the image into the Docker engine at DOCKER_HOST (as `mpsi load`).
    #[arg(long)]
    load: bool,
    /// Then push the image to this registry reference (as `mpsi push REF`).
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct LayoutArgs {
    /// OCI image layout directory.
    #[arg(long, short = 'l', default_value = "out/oci", value_name = "DIR")]
    layout: PathBuf,
    /// Which image in the layout (its org.opencontainers.image.ref.name); needed when it holds several.
    #[arg(long)]
    tag: Option<String>,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    /// Archive format.
    #[arg(long, value_parser = parse_format)]
    format: sink::archive::ArchiveFormat,
    /// Output file, or - for stdout.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    layout: LayoutArgs,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    layout: LayoutArgs,
}

fn parse_compression(s: &str) -> Result<layer::compress::Compression, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<sink::archive::ArchiveFormat, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let bad_input = err.chain().any(|c| {
                c.is::<spec::SpecError>()
                    || c.is::<lock::LockError>()
                    || c.is::<fetch::MissingInput>()
                    || c.is::<build::PatchFailed>()
                    || c.is::<model::reference::BadReference>()
            });
            let causes: Vec<String> = err.chain().map(|c| c.to_string()).collect();
            if json {
                let v = serde_json::json!({ "error": causes.first(), "causes": &causes[1..] });
                println!("{v}");
            }
            eprintln!("error: {}", causes[0]);
            for c in &causes[1..] {
                eprintln!("  caused by: {c}");
            }
            ExitCode::from(if bad_input {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILED
            })
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Assemble(a) => {
            let spec = spec::Spec::load(&a.spec)?;
            let store = store::Store::open(cli.store.as_deref())?;
            let threads = cpu_budget(a.jobs)?;
            let opts = assemble::Options {
                out: a.out,
                tag: a.tag,
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
                    ccache_dir: (!a.no_ccache).then(|| ccache_dir(&store)),
                    jobs: a.build_jobs.or(a.jobs),
                },
            };
            if let Some(r) = &a.push {
                // A bad reference fails now, not after the build.
                model::reference::Reference::parse(r)?;
            }
            if a.dry_run {
                let plan = assemble::dry_run::run(&spec, &store, &opts)?;
                return output(cli.json, &plan, || cli::render::dry_run(&plan));
            }
            let report = assemble::run(&spec, &store, &opts, reporter(cli.json).as_ref())?;
            if a.push.is_some() || a.load {
                // The image just written, sent on to each sink asked for.
                let mut v = serde_json::to_value(&report)?;
                let mut lines = vec![format!("assembled {} ({})", report.image, report.manifest_digest)];
                if let Some(r) = &a.push {
                    let image = oci::Layout::open(&opts.out)?.image(Some(&report.tag))?;
                    let pushed = push(&store, &image, r, &[], 4, &a.registry, cli.json)?;
                    lines.push(pushed.reference.clone());
                    v["push"] = serde_json::to_value(&pushed)?;
                }
                if a.load {
                    let loaded = load(&report.layout, Some(&report.tag), cli.json)?;
                    lines.extend(load_lines(&loaded));
                    v["load"] = serde_json::to_value(&loaded)?;
                }
                return output(cli.json, &v, || {
                    for l in &lines {
                        println!("{l}");
                    }
                });
            }
            output(cli.json, &report, || {
                println!("assembled {} ({})", report.image, report.manifest_digest);
                println!("  layout  {}", report.layout.display());
                println!("  elf     {}", report.elf_check);
                for b in &report.builds {
                    println!(
                        "  build   {:<20} {}{}{}",
                        b.name,
                        &b.key[..16],
                        if b.cached {
                            "  (cached)".to_string()
                        } else {
                            format!("  built in {:.0} s", b.seconds)
                        },
                        if b.hermetic {
                            ""
                        } else {
                            "  NON-HERMETIC (network allowed)"
                        }
                    );
                }
                for l in &report.layers {
                    println!(
                        "  layer   {:<20} {} {:>10} bytes {:>6} entries{}",
                        l.name,
                        l.blob.digest,
                        l.blob.size,
                        l.blob.entries,
                        if l.cached { "  (cached)" } else { "" }
                    );
                }
            })
        }
        Command::Export(e) => {
            use sink::Sink;
            let image = oci::Layout::open(&e.layout.layout)?.image(e.layout.tag.as_deref())?;
            let reporter = reporter(cli.json);
            let report = if e.output == Path::new("-") {
                let stdout = std::io::stdout().lock();
                let mut sink =
                    sink::archive::ArchiveSink::new(e.format, std::io::BufWriter::new(stdout));
                let r = sink.send(&image, reporter.as_ref())?;
                sink.into_inner().flush()?;
                r
            } else {
                let dir = e
                    .output
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let tmp = fsutil::temp_in(dir)?;
                let file = tmp.reopen()?;
                let mut sink =
                    sink::archive::ArchiveSink::new(e.format, std::io::BufWriter::new(file));
                let r = sink.send(&image, reporter.as_ref())?;
                sink.into_inner().into_inner().map_err(|e| e.into_error())?;
                fsutil::commit(tmp, &e.output)
                    .with_context(|| format!("writing {}", e.output.display()))?;
                r
            };
            if e.output == Path::new("-") {
                // stdout carries the archive; the summary goes to stderr.
                if cli.json {
                    eprintln!("{}", serde_json::to_string(&report)?);
                }
                return Ok(());
            }
            output(cli.json, &report, || {
                println!(
                    "wrote {} ({:?}, {} bytes, {})",
                    e.output.display(),
                    report.format,
                    report.bytes,
                    report.digest
                );
            })
        }
        Command::Load(l) => {
            let report = load(&l.layout.layout, l.layout.tag.as_deref(), cli.json)?;
            output(cli.json, &report, || {
                for l in load_lines(&report) {
                    println!("{l}");
                }
            })
        }
        Command::Push(p) => {
            let image = oci::Layout::open(&p.layout)?.image(p.image.as_deref())?;
            let store = store::Store::open(cli.store.as_deref())?;
            let report = push(&store, &image, &p.reference, &p.tags, p.jobs, &p.registry, cli.json)?;
            output(cli.json, &report, || println!("{}", report.reference))
        }
        Command::Inspect(i) => {
            let image = oci::Layout::open(&i.layout.layout)?.image(i.layout.tag.as_deref())?;
            let info = cli::inspect::inspect(&image)?;
            output(cli.json, &info, || print_inspection(&info))
        }
        Command::Lock(l) => {
            let mut lf = lock::LockFile::load(&l.lock.lock)?;
            let r = lock::refresh(&mut lf, l.from.as_deref(), &l.repin)?;
            let rt = if l.runtime {
                Some(lock::runtime::refresh(&mut lf)?)
            } else {
                None
            };
            let mut report = serde_json::to_value(&r)?;
            if let Some(rt) = &rt {
                report["runtime"] = serde_json::to_value(rt)?;
            }
            output(cli.json, &report, || {
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
        Command::Fetch(f) => {
            let lf = lock::LockFile::load(&f.lock.lock)?;
            let store = store::Store::open(cli.store.as_deref())?;
            let reporter = reporter(cli.json);
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
            output(cli.json, &report, || {
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
        Command::Store(sc) => {
            let store = match sc {
                StoreCommand::Gc(_) => store::Store::open_exclusive(cli.store.as_deref())?,
                _ => store::Store::open(cli.store.as_deref())?,
            };
            match sc {
                StoreCommand::Ls => {
                    let l = store.list()?;
                    output(cli.json, &l, || {
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
                    output(cli.json, &v, || {
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
                StoreCommand::Gc(g) => {
                    let lf = lock::LockFile::load(&g.lock.lock)?;
                    let keep_inputs = lf.lock.all_inputs().into_iter().map(|i| i.sha256).collect();
                    let keep_builds = gc_build_roots(&store, &lf)?;
                    let c = store.gc(&keep_inputs, &keep_builds, g.max_age, g.dry_run)?;
                    output(cli.json, &c, || {
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
    if let Some(ms) = std::env::var("MPSI_PUSH_BACKOFF_MS").ok().and_then(|v| v.parse().ok()) {
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
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let explicit = match (creds, std::env::var("MPSI_REGISTRY_USER"), std::env::var("MPSI_REGISTRY_PASSWORD")) {
        (Some(c), _, _) => Some(Credential::from_user_pass(c).context("--creds")?),
        (None, Ok(u), Ok(p)) if !u.is_empty() => Some(Credential::from_user_pass(&format!("{u}:{p}"))?),
        _ => None,
    };
    let home = env("HOME");
    let mut auth_files: Vec<PathBuf> = env("REGISTRY_AUTH_FILE").into_iter().collect();
    auth_files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    auth_files.extend(home.as_ref().map(|h| h.join(".config/containers/auth.json")));
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

/// SOURCE_DATE_EPOCH from the environment (empty counts as unset).
fn source_date_epoch_env() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.trim().parse::<u64>().map(Some).with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds since 1970")
        }),
        _ => Ok(None),
    }
}

/// Progress bars when stderr is a terminal and the output is for humans.
fn reporter(json: bool) -> Box<dyn progress::Reporter> {
    if progress(json) {
        Box::new(cli::progress::Bars::default())
    } else {
        Box::new(progress::Quiet)
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

fn print_inspection(i: &cli::inspect::Inspection) {
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
}
