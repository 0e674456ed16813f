//! mpsi: hermetic, reproducible OCI images without Docker.

mod archive;
mod assemble;
mod compress;
mod digest;
mod fsutil;
mod inspect;
mod layer;
mod oci;
mod rootfs;
mod spec;
mod store;

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
    /// Show an image's manifest, config and layers (re-verifying every digest).
    Inspect(InspectArgs),
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
    #[arg(long, value_enum)]
    compression: Option<compress::Compression>,
    /// Rewrite every layer even if the store has it from an earlier run.
    #[arg(long)]
    no_cache: bool,
    /// Compression threads [default: number of CPUs]. The output does not depend on it.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
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
    #[arg(long, value_enum)]
    format: archive::ArchiveFormat,
    /// Output file, or - for stdout.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    layout: LayoutArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let bad_input = err.chain().any(|c| c.is::<spec::SpecError>());
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
            let opts = assemble::Options {
                out: a.out,
                tag: a.tag,
                compression: a.compression,
                use_cache: !a.no_cache,
                threads: a
                    .jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .max(1),
                progress: !cli.json && std::io::stderr().is_terminal(),
            };
            let report = assemble::run(&spec, &store, &opts)?;
            output(cli.json, &report, || {
                println!("assembled {} ({})", report.image, report.manifest_digest);
                println!("  layout  {}", report.layout.display());
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
            let layout = oci::Layout::open(&e.layout.layout)?;
            let tag = e.layout.tag.as_deref();
            let report = if e.output == Path::new("-") {
                let stdout = std::io::stdout().lock();
                let (mut w, r) =
                    archive::export(&layout, tag, e.format, std::io::BufWriter::new(stdout))?;
                w.flush()?;
                r
            } else {
                let dir = e
                    .output
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let tmp = fsutil::temp_in(dir)?;
                let file = tmp.reopen()?;
                let (w, r) =
                    archive::export(&layout, tag, e.format, std::io::BufWriter::new(file))?;
                w.into_inner().map_err(|e| e.into_error())?;
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
        Command::Inspect(i) => {
            let layout = oci::Layout::open(&i.layout.layout)?;
            let info = inspect::inspect(&layout, i.layout.tag.as_deref())?;
            output(cli.json, &info, || print_inspection(&info))
        }
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
}
