//! The command line's arguments (clap), with their help texts.

use crate::{layer, sink};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print a machine-readable JSON result on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// Store directory for layer blobs and the layer cache [env: MPSI_STORE].
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build the image a spec describes into an OCI image layout.
    #[command(
        after_help = "Examples:\n  mpsi assemble                          # layers/mariadb-pageserver.toml -> out/oci\n  \
mpsi assemble layers/x.toml -o out/x --compression zstd\n  SOURCE_DATE_EPOCH=1700000000 mpsi assemble --json\n\n\
Layers whose inputs are unchanged since the last run come from the store without being rewritten. \
The SPDX 2.3 SBOM of the image is written next to the layout (-o out/oci: out/oci.spdx.json) and \
listed in the layout as an OCI 1.1 artifact about the image, which `mpsi push` sends along."
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
Prints REGISTRY/REPO@sha256:... on stdout. The image's SBOM follows it as a referrer (through the \
registry's referrers API, or the sha256-<hex> index tag where it has none). Blobs the registry has are skipped; blobs another \
repository on the same registry got from an earlier push are mounted. Credentials: --creds, else \
MPSI_REGISTRY_USER and MPSI_REGISTRY_PASSWORD, else REGISTRY_AUTH_FILE, \
$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, then \
$DOCKER_CONFIG/config.json (or ~/.docker/config.json) with its credential helpers. \
Plain http only for registries on this machine or named by --insecure-registry."
    )]
    Push(PushArgs),
}

#[derive(Args)]
pub struct PushArgs {
    /// OCI image layout directory to push from.
    #[arg(long, short = 'l', default_value = "out/oci", value_name = "DIR")]
    pub layout: PathBuf,
    /// Which image in the layout (its org.opencontainers.image.ref.name); needed when it holds several.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// Where to push: REGISTRY/REPO[:TAG][@sha256:...] (tag latest when none is given).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Also tag the pushed manifest with this tag (repeatable).
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Blobs uploaded at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach a registry (push and assemble --push).
#[derive(Args)]
pub struct RegistryArgs {
    /// USER:PASSWORD for the registry (else MPSI_REGISTRY_USER/MPSI_REGISTRY_PASSWORD, auth.json, docker config).
    #[arg(long, value_name = "USER:PASS")]
    pub creds: Option<String>,
    /// Speak plain http to this registry host although it is not on this machine (repeatable).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Write the pushed manifest digest into this file.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Upload blobs larger than this in PATCH chunks of this many bytes (default: one PUT per blob).
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Give up connecting after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// Give up on a connection that makes no progress for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub stall_timeout: std::time::Duration,
}

#[derive(Args)]
pub struct LockPath {
    /// The lockfile.
    #[arg(long, default_value = "mpsi.lock", value_name = "FILE")]
    pub lock: PathBuf,
}

#[derive(Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub lock: LockPath,
    /// Directory with local copies of inputs (named as `file` in the lock), to pin unpinned inputs.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Change this input's pinned hash to that of its file in --from DIR (repeatable).
    #[arg(long, value_name = "NAME")]
    pub repin: Vec<String>,
    /// Also re-pin the runtime packages: the closure of [runtime] roots from apt's metadata (Debian host).
    #[arg(long)]
    pub runtime: bool,
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub lock: LockPath,
    /// Take inputs from this directory (files named as in the lock) instead of the network.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Then write every pinned input into this tar, for `assemble --inputs FILE --offline`.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// List inputs, build outputs and layer blobs.
    Ls,
    /// Re-hash every input, layer blob and build output file.
    Verify,
    /// Remove what the lock does not pin and layer-cache entries unused for --max-age.
    Gc(GcArgs),
}

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub lock: LockPath,
    /// Keep layer-cache entries used within this long.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub max_age: std::time::Duration,
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct AssembleArgs {
    /// The image spec.
    #[arg(default_value = "layers/mariadb-pageserver.toml")]
    pub spec: PathBuf,
    /// OCI image layout directory to write (created if missing; other tags in it are kept).
    #[arg(short, long, default_value = "out/oci", value_name = "DIR")]
    pub out: PathBuf,
    /// Tag to give the image instead of the spec's.
    #[arg(long)]
    pub tag: Option<String>,
    /// Name to give the image instead of the spec's (`my-mariadb`, `registry/team/db`).
    #[arg(long)]
    pub name: Option<String>,
    /// Layer compression instead of the spec's.
    /// gzip loads everywhere; zstd is smaller and faster but Docker 20.10 cannot load it; none: plain tar.
    #[arg(long, value_parser = parse_compression)]
    pub compression: Option<layer::compress::Compression>,
    /// Rewrite every layer even if the store has it from an earlier run.
    #[arg(long)]
    pub no_cache: bool,
    /// CPU threads mpsi uses [default: number of CPUs]: compression (the
    /// rayon pool and zstd's workers) and, unless --build-jobs is given,
    /// ninja -j. The output does not depend on it.
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Take build inputs missing from the store from this bundle (`mpsi fetch --bundle`).
    #[arg(long, value_name = "FILE")]
    pub inputs: Option<PathBuf>,
    /// Never use the network: inputs come from the store or --inputs only.
    #[arg(long)]
    pub offline: bool,
    /// If the build cannot be isolated from the network, build anyway (the
    /// output is recorded as non-hermetic and keyed apart).
    #[arg(long)]
    pub allow_network: bool,
    /// Do not use ccache for builds even if it is installed.
    #[arg(long)]
    pub no_ccache: bool,
    /// Say what would be fetched, built, reused and written, and why a build
    /// would rerun; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Parallel build jobs for ninja [default: --jobs if given, else ninja's].
    #[arg(long, value_name = "N")]
    pub build_jobs: Option<usize>,
    /// Then load the image into the Docker engine at DOCKER_HOST (as `mpsi load`).
    #[arg(long)]
    pub load: bool,
    /// Then push the image to this registry reference (as `mpsi push REF`).
    #[arg(long, value_name = "REF")]
    pub push: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args)]
pub struct LayoutArgs {
    /// OCI image layout directory.
    #[arg(long, short = 'l', default_value = "out/oci", value_name = "DIR")]
    pub layout: PathBuf,
    /// Which image in the layout (its org.opencontainers.image.ref.name); needed when it holds several.
    #[arg(long)]
    pub tag: Option<String>,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Archive format.
    #[arg(long, value_parser = parse_format)]
    pub format: sink::archive::ArchiveFormat,
    /// Output file, or - for stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
}

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
}

pub fn parse_compression(s: &str) -> Result<layer::compress::Compression, String> {
    s.parse()
}

pub fn parse_format(s: &str) -> Result<sink::archive::ArchiveFormat, String> {
    s.parse()
}
