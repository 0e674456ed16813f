//! The image spec: one TOML file (in `layers/`) that says everything that goes
//! into an image: its name and tag, its runtime config, and its ordered
//! layers, each made of sources (directory trees, single files, directories,
//! symlinks).
//!
//! Parsing is strict (`deny_unknown_fields`); every error names the file, the
//! line and the field. Paths in sources are relative to the spec file's
//! directory.

mod accounts;
mod permissions;

pub use accounts::Accounts;
pub use permissions::{Allowed, Permissions};

use crate::model::compression::Compression;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A problem in a spec, located in the spec file.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {field}{}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), if field.is_empty() { "" } else { ": " })]
pub struct SpecError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// Where in the spec a source was declared, for error messages.
#[derive(Clone, Debug)]
pub struct Loc {
    pub file: PathBuf,
    pub line: usize,
    /// e.g. `layer "config" tree #2`
    pub what: String,
}

impl Loc {
    pub fn error(&self, field: &str, message: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            line: Some(self.line),
            field: format!("{} {field}", self.what).trim().to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.file.display(), self.line, self.what)
    }
}

/// uid/gid and the user/group names written into tar headers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    pub user: String,
    pub group: String,
}

impl Owner {
    pub fn root() -> Owner {
        Owner {
            uid: 0,
            gid: 0,
            user: "root".into(),
            group: "root".into(),
        }
    }
}

#[derive(Debug)]
pub struct Spec {
    pub file: PathBuf,
    /// The lockfile (`lock = "..."`, relative to the spec), needed when a
    /// layer takes files from a build output.
    pub lock: Option<PathBuf>,
    pub image: ImageMeta,
    pub config: ImageConfig,
    pub layers: Vec<LayerSpec>,
}

#[derive(Debug, Clone)]
pub struct ImageMeta {
    pub name: String,
    pub tag: String,
    pub source_date_epoch: i64,
    pub compression: Compression,
    pub compression_level: i32,
    pub os: String,
    pub architecture: String,
    pub version: Option<String>,
    pub source: Option<String>,
    pub revision: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// Run the ELF closure check at assemble time (`check_elf`, default true).
    pub check_elf: bool,
    /// What setuid/setgid and world-writable entries the image may keep.
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
}

/// Docker's healthcheck (not part of the OCI config, but honoured by Docker
/// and Podman when present in the config JSON). Durations in nanoseconds.
#[derive(Debug, Clone)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u32>,
}

#[derive(Debug)]
pub struct LayerSpec {
    pub name: String,
    pub comment: Option<String>,
    pub sources: Vec<Source>,
}

#[derive(Debug)]
pub enum Source {
    Tree {
        /// A host directory, or with `from_build` a path inside that build's
        /// installed tree (empty for its root).
        from: PathBuf,
        /// Name of a `[build.NAME]` of the lock whose output the tree comes from.
        from_build: Option<String>,
        /// Image path, relative to `/` (empty for the root).
        to: String,
        include: Option<GlobSet>,
        exclude: GlobSet,
        follow_symlinks: bool,
        owner: Owner,
        file_mode: Option<u32>,
        dir_mode: Option<u32>,
        at: Loc,
    },
    File {
        data: FileData,
        to: String,
        mode: Option<u32>,
        owner: Owner,
        at: Loc,
    },
    Dir {
        path: String,
        mode: u32,
        owner: Owner,
        at: Loc,
    },
    Symlink {
        path: String,
        target: String,
        owner: Owner,
        at: Loc,
    },
    /// `[layer.accounts]`: /etc/passwd, group, shadow, gshadow and
    /// nsswitch.conf written from the declared users and groups.
    Accounts { accounts: Accounts, at: Loc },
    /// Debian packages pinned in the lock (`from_lock = "runtime"`: every
    /// `[[runtime.package]]`), unpacked in memory with merged /usr and the
    /// dpkg database.
    Packages {
        from_lock: String,
        /// Image paths (merged /usr) left out, as dpkg's `path-exclude`
        /// does; the dpkg database then does not list them either.
        exclude: GlobSet,
        /// Paths kept although `exclude` matches them (`path-include`).
        keep: GlobSet,
        at: Loc,
    },
}

#[derive(Debug, Clone)]
pub enum FileData {
    Path(PathBuf),
    Inline(Vec<u8>),
}

// ---- raw TOML model ----------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    lock: Option<Spanned<String>>,
    image: RawImage,
    #[serde(default)]
    config: RawConfig,
    #[serde(default, rename = "layer")]
    layers: Vec<RawLayer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: Spanned<String>,
    #[serde(default)]
    tag: Option<Spanned<String>>,
    source_date_epoch: Option<i64>,
    compression: Option<Compression>,
    compression_level: Option<Spanned<i32>>,
    #[serde(default)]
    os: Option<String>,
    architecture: Option<String>,
    version: Option<String>,
    source: Option<String>,
    revision: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    check_elf: Option<bool>,
    #[serde(default)]
    permissions: permissions::RawPermissions,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Vec<Spanned<String>>,
    #[serde(default)]
    exposed_ports: Vec<Spanned<String>>,
    #[serde(default)]
    volumes: Vec<Spanned<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    stop_signal: Option<String>,
    healthcheck: Option<Spanned<RawHealthcheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthcheck {
    test: Vec<String>,
    interval: Option<String>,
    timeout: Option<String>,
    start_period: Option<String>,
    start_interval: Option<String>,
    retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: Spanned<String>,
    comment: Option<String>,
    #[serde(default)]
    tree: Vec<RawTree>,
    #[serde(default)]
    file: Vec<RawFile>,
    #[serde(default)]
    dir: Vec<RawDir>,
    #[serde(default)]
    symlink: Vec<RawSymlink>,
    #[serde(default)]
    packages: Vec<RawPackages>,
    accounts: Option<Spanned<accounts::RawAccounts>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackages {
    from_lock: Spanned<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    keep: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTree {
    from: Option<Spanned<String>>,
    from_build: Option<Spanned<String>>,
    to: Spanned<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    follow_symlinks: bool,
    owner: Option<Spanned<String>>,
    owner_names: Option<Spanned<String>>,
    #[serde(default, deserialize_with = "de_mode")]
    file_mode: Option<u32>,
    #[serde(default, deserialize_with = "de_mode")]
    dir_mode: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    from: Option<String>,
    content: Option<String>,
    to: Spanned<String>,
    #[serde(default, deserialize_with = "de_mode")]
    mode: Option<u32>,
    owner: Option<Spanned<String>>,
    owner_names: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    path: Spanned<String>,
    #[serde(default, deserialize_with = "de_mode")]
    mode: Option<u32>,
    owner: Option<Spanned<String>>,
    owner_names: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSymlink {
    path: Spanned<String>,
    target: String,
    owner: Option<Spanned<String>>,
    owner_names: Option<Spanned<String>>,
}

/// Accepts a mode as a TOML integer (`0o755`) or an octal string (`"0755"`).
fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct ModeVisitor;
    impl Visitor<'_> for ModeVisitor {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a file mode: an octal string like \"0755\" or an integer like 0o755")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            if (0..=0o7777).contains(&v) {
                Ok(Some(v as u32))
            } else {
                Err(E::custom(format!(
                    "mode {v:#o} is out of range (0 to 0o7777)"
                )))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let digits = v.strip_prefix("0o").unwrap_or(v);
            match u32::from_str_radix(digits, 8) {
                Ok(m) if m <= 0o7777 => Ok(Some(m)),
                _ => Err(E::custom(format!(
                    "mode {v:?} is not an octal mode between 0000 and 7777"
                ))),
            }
        }
    }
    d.deserialize_any(ModeVisitor)
}

// ---- loading and validation --------------------------------------------

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    /// The spec's declared accounts, which owners resolve through.
    accounts: Option<&'a Accounts>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> Result<T, SpecError> {
        Err(SpecError {
            file: self.file.to_path_buf(),
            line: Some(self.line_of(span.start)),
            field: field.to_string(),
            message: message.into(),
        })
    }
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(file: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(file).map_err(|e| SpecError {
            file: file.to_path_buf(),
            line: None,
            field: String::new(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Spec::parse(file, &text)
    }

    /// Parses spec text; `file` locates errors and relative source paths.
    pub fn parse(file: &Path, text: &str) -> Result<Spec, SpecError> {
        let ctx = Ctx {
            file,
            text,
            accounts: None,
        };
        let mut raw: RawSpec = toml::from_str(text).map_err(|e| SpecError {
            file: file.to_path_buf(),
            line: e.span().map(|s| ctx.line_of(s.start)),
            field: String::new(),
            message: e.message().trim().to_string(),
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let image = image_meta(&ctx, raw.image)?;
        let lock = raw.lock.as_ref().map(|l| base.join(l.get_ref()));
        let config = image_config(&ctx, raw.config)?;
        let found = image_accounts(&ctx, &mut raw.layers)?;
        let ctx = Ctx {
            accounts: found.as_ref().map(|(a, _, _)| a),
            ..ctx
        };
        let mut layers = Vec::new();
        for (i, l) in raw.layers.into_iter().enumerate() {
            if layers
                .iter()
                .any(|x: &LayerSpec| x.name == *l.name.get_ref())
            {
                return ctx.err(
                    l.name.span(),
                    "layer.name",
                    format!("layer name {:?} is used twice", l.name.get_ref()),
                );
            }
            layers.push(layer_spec(&ctx, &base, i, l, raw.lock.is_some())?);
        }
        if let Some((accounts, index, at)) = found {
            layers[index]
                .sources
                .push(Source::Accounts { accounts, at });
        }
        if layers.is_empty() {
            return Err(SpecError {
                file: file.to_path_buf(),
                line: None,
                field: "layer".into(),
                message: "the spec declares no [[layer]]; an image needs at least one".into(),
            });
        }
        Ok(Spec {
            file: file.to_path_buf(),
            lock,
            image,
            config,
            layers,
        })
    }
}

impl Spec {
    /// The declared accounts and where, if the spec has `[layer.accounts]`.
    pub fn accounts(&self) -> Option<(&Accounts, &Loc)> {
        self.layers
            .iter()
            .flat_map(|l| &l.sources)
            .find_map(|s| match s {
                Source::Accounts { accounts, at } => Some((accounts, at)),
                _ => None,
            })
    }
}

/// The one `[layer.accounts]` of the spec, taken out of its layer, with
/// the index of that layer and where it is declared.
fn image_accounts(
    ctx: &Ctx,
    layers: &mut [RawLayer],
) -> Result<Option<(Accounts, usize, Loc)>, SpecError> {
    let mut found: Option<(Accounts, usize, Loc)> = None;
    for (i, l) in layers.iter_mut().enumerate() {
        let Some(raw) = l.accounts.take() else {
            continue;
        };
        let span = raw.span();
        if let Some((_, _, first)) = &found {
            return ctx.err(
                span,
                "layer.accounts",
                format!("an image has one [layer.accounts]; the first is at {first}"),
            );
        }
        let at = Loc {
            file: ctx.file.to_path_buf(),
            line: ctx.line_of(span.start),
            what: format!("layer {:?} (#{}) accounts", l.name.get_ref(), i + 1),
        };
        let a = accounts::accounts(ctx, raw.into_inner(), &at)?;
        if a.user_by_uid(0).is_none() || a.group_by_gid(0).is_none() {
            return ctx.err(
                span,
                "layer.accounts",
                "declares no user with uid 0 or no group with gid 0; every file of the image \
                 is owned by 0:0 unless the spec says otherwise, so declare root (uid 0, gid 0)",
            );
        }
        found = Some((a, i, at));
    }
    Ok(found)
}

fn image_meta(ctx: &Ctx, raw: RawImage) -> Result<ImageMeta, SpecError> {
    let name = raw.name.get_ref().clone();
    if name.is_empty()
        || !name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:".contains(&b))
        })
    {
        return ctx.err(
            raw.name.span(),
            "image.name",
            format!("{name:?} is not a valid image name (lowercase letters, digits, '.', '_', '-', '/' separated)"),
        );
    }
    let tag = match raw.tag {
        None => "latest".to_string(),
        Some(t) => {
            let v = t.get_ref();
            let ok = !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !v.starts_with(['.', '-']);
            if !ok {
                return ctx.err(
                    t.span(),
                    "image.tag",
                    format!("{v:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})"),
                );
            }
            v.clone()
        }
    };
    let compression = raw.compression.unwrap_or(Compression::Gzip);
    let compression_level = match raw.compression_level {
        None => compression.default_level(),
        Some(l) => {
            let v = *l.get_ref();
            let range = match compression {
                Compression::Gzip => 0..=9,
                Compression::Zstd => 1..=19,
                Compression::None => 0..=0,
            };
            if !range.contains(&v) {
                return ctx.err(
                    l.span(),
                    "image.compression_level",
                    format!(
                        "{v} is out of range for {} ({}..={})",
                        compression.name(),
                        range.start(),
                        range.end()
                    ),
                );
            }
            v
        }
    };
    Ok(ImageMeta {
        name,
        tag,
        source_date_epoch: raw.source_date_epoch.unwrap_or(0),
        compression,
        compression_level,
        os: raw.os.unwrap_or_else(|| "linux".into()),
        architecture: raw
            .architecture
            .unwrap_or_else(|| host_architecture().into()),
        version: raw.version,
        source: raw.source,
        revision: raw.revision,
        annotations: raw.annotations,
        check_elf: raw.check_elf.unwrap_or(true),
        permissions: permissions::permissions(ctx, raw.permissions)?,
    })
}

/// The OCI name of the machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn image_config(ctx: &Ctx, raw: RawConfig) -> Result<ImageConfig, SpecError> {
    let mut env = Vec::new();
    for e in raw.env {
        match e.get_ref().split_once('=') {
            Some((k, _)) if !k.is_empty() => env.push(e.get_ref().clone()),
            _ => {
                return ctx.err(
                    e.span(),
                    "config.env",
                    format!("{:?} is not of the form NAME=VALUE", e.get_ref()),
                );
            }
        }
    }
    let mut exposed_ports = Vec::new();
    for p in raw.exposed_ports {
        let (port, proto) = p.get_ref().split_once('/').unwrap_or((p.get_ref(), "tcp"));
        if port.parse::<u16>().map_or(true, |n| n == 0) || !["tcp", "udp", "sctp"].contains(&proto)
        {
            return ctx.err(
                p.span(),
                "config.exposed_ports",
                format!("{:?} is not PORT[/tcp|udp|sctp]", p.get_ref()),
            );
        }
        exposed_ports.push(format!("{port}/{proto}"));
    }
    let mut volumes = Vec::new();
    for v in raw.volumes {
        if !v.get_ref().starts_with('/') {
            return ctx.err(
                v.span(),
                "config.volumes",
                format!("{:?} is not an absolute path", v.get_ref()),
            );
        }
        volumes.push(v.get_ref().clone());
    }
    let healthcheck = raw.healthcheck.map(|h| healthcheck(ctx, h)).transpose()?;
    Ok(ImageConfig {
        entrypoint: raw.entrypoint,
        cmd: raw.cmd,
        env,
        exposed_ports,
        volumes,
        working_dir: raw.working_dir,
        user: raw.user,
        labels: raw.labels,
        stop_signal: raw.stop_signal,
        healthcheck,
    })
}

/// `[config.healthcheck]`: a Docker test form and Go-style durations.
fn healthcheck(ctx: &Ctx, h: Spanned<RawHealthcheck>) -> Result<Healthcheck, SpecError> {
    let span = h.span();
    let h = h.into_inner();
    let ok_test = match h.test.first().map(String::as_str) {
        Some("NONE") => h.test.len() == 1,
        Some("CMD") | Some("CMD-SHELL") => h.test.len() >= 2,
        _ => false,
    };
    if !ok_test {
        return ctx.err(
            span,
            "config.healthcheck.test",
            "must be [\"CMD\", args...], [\"CMD-SHELL\", \"command\"] or [\"NONE\"]",
        );
    }
    let dur = |field: &str, v: Option<String>| -> Result<Option<u64>, SpecError> {
        match v {
            None => Ok(None),
            Some(s) => match parse_duration(&s) {
                Some(ns) => Ok(Some(ns)),
                None => ctx.err(
                    span.clone(),
                    &format!("config.healthcheck.{field}"),
                    format!("{s:?} is not a duration like \"30s\", \"1m30s\" or \"500ms\""),
                ),
            },
        }
    };
    Ok(Healthcheck {
        interval: dur("interval", h.interval)?,
        timeout: dur("timeout", h.timeout)?,
        start_period: dur("start_period", h.start_period)?,
        start_interval: dur("start_interval", h.start_interval)?,
        retries: h.retries,
        test: h.test,
    })
}

/// Go-style durations as Docker writes them: `1h2m3s`, `500ms`, `10us`, `0`.
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let mult: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

/// Normalizes an absolute image path to the relative form used in tar
/// entries (`/usr/bin/` -> `usr/bin`); rejects `..` so nothing can escape
/// the image root.
pub fn image_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} must be an absolute image path (starting with '/')"
        ));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{p:?} contains '..'")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// An owner from `owner` ("UID:GID", or with declared accounts also
/// "USER:GROUP" names) and `owner_names`. With `[layer.accounts]`, every id
/// must be declared, and the tar header takes the declared names (which
/// `owner_names`, if given, must repeat).
fn parse_owner(
    ctx: &Ctx,
    owner: Option<Spanned<String>>,
    names: Option<Spanned<String>>,
    field: &str,
) -> Result<Owner, SpecError> {
    let acc = ctx.accounts;
    let (uid, gid) = match &owner {
        None => (0, 0),
        Some(o) => {
            let f = format!("{field}.owner");
            let Some((u, g)) = o.get_ref().split_once(':') else {
                let hint = if acc.is_some() {
                    "\"UID:GID\" or \"USER:GROUP\""
                } else {
                    "numeric \"UID:GID\" (names go in owner_names, or declare [layer.accounts])"
                };
                return ctx.err(o.span(), &f, format!("{:?} is not {hint}", o.get_ref()));
            };
            let id = |v: &str, kind: &str| -> Result<u64, SpecError> {
                if let Ok(n) = v.parse::<u64>() {
                    return if n < u64::from(u32::MAX) {
                        Ok(n)
                    } else {
                        ctx.err(o.span(), &f, format!("{kind} id {n} is out of range"))
                    };
                }
                let found = match (acc, kind) {
                    (None, _) => {
                        return ctx.err(
                            o.span(),
                            &f,
                            format!(
                                "{:?} is not numeric \"UID:GID\"; names resolve only through \
                                 declared accounts ([layer.accounts]), else use owner_names",
                                o.get_ref()
                            ),
                        );
                    }
                    (Some(a), "user") => a.user(v).map(|u| u64::from(u.uid)),
                    (Some(a), _) => a.group(v).map(|g| u64::from(g.gid)),
                };
                found.map_or_else(
                    || {
                        ctx.err(
                            o.span(),
                            &f,
                            format!("{kind} {v:?} is not declared in [layer.accounts]"),
                        )
                    },
                    Ok,
                )
            };
            (id(u, "user")?, id(g, "group")?)
        }
    };
    let given = match &names {
        Some(n) => match n.get_ref().split_once(':') {
            Some((u, g))
                if !u.is_empty() && !g.is_empty() && !n.get_ref().contains(['\0', '\n']) =>
            {
                Some((u.to_string(), g.to_string()))
            }
            _ => {
                return ctx.err(
                    n.span(),
                    &format!("{field}.owner_names"),
                    format!("{:?} is not \"USER:GROUP\"", n.get_ref()),
                );
            }
        },
        None => None,
    };
    let (user, group) = match acc {
        Some(a) => {
            let span = owner.as_ref().or(names.as_ref()).map_or(0..0, |s| s.span());
            let (Some(u), Some(g)) = (a.user_by_uid(uid), a.group_by_gid(gid)) else {
                return ctx.err(
                    span,
                    &format!("{field}.owner"),
                    format!(
                        "{uid}:{gid} is not a declared user and group; declare both in \
                         [layer.accounts] (the image's /etc/passwd and /etc/group)"
                    ),
                );
            };
            if let Some((nu, ng)) = &given
                && (nu != &u.name || ng != &g.name)
            {
                return ctx.err(
                    names.as_ref().expect("given").span(),
                    &format!("{field}.owner_names"),
                    format!(
                        "\"{nu}:{ng}\" disagrees with [layer.accounts], where {uid}:{gid} is \
                         \"{}:{}\"",
                        u.name, g.name
                    ),
                );
            }
            (u.name.clone(), g.name.clone())
        }
        None => match given {
            Some(names) => names,
            // Root is named; other ids stay anonymous unless named in the
            // spec, so no host account name can leak in.
            None if uid == 0 && gid == 0 => ("root".into(), "root".into()),
            None => (String::new(), String::new()),
        },
    };
    Ok(Owner {
        uid,
        gid,
        user,
        group,
    })
}

fn globset(
    ctx: &Ctx,
    span: std::ops::Range<usize>,
    field: &str,
    pats: &[String],
) -> Result<GlobSet, SpecError> {
    let mut b = GlobSetBuilder::new();
    for p in pats {
        match Glob::new(p) {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => return ctx.err(span, field, format!("bad glob {p:?}: {e}")),
        }
    }
    b.build().or_else(|e| ctx.err(span, field, e.to_string()))
}

fn layer_spec(
    ctx: &Ctx,
    base: &Path,
    index: usize,
    raw: RawLayer,
    has_lock: bool,
) -> Result<LayerSpec, SpecError> {
    let name = raw.name.get_ref().clone();
    if name.is_empty() {
        return ctx.err(raw.name.span(), "layer.name", "must not be empty");
    }
    let loc = |kind: &str, n: usize, span: std::ops::Range<usize>| Loc {
        file: ctx.file.to_path_buf(),
        line: ctx.line_of(span.start),
        what: format!("layer {name:?} (#{}) {kind} #{}", index + 1, n + 1),
    };
    let mut sources = Vec::new();
    for (n, t) in raw.tree.into_iter().enumerate() {
        let at = loc("tree", n, t.from.as_ref().map_or(t.to.span(), |f| f.span()));
        sources.push(tree_source(ctx, base, t, has_lock, at)?);
    }
    for (n, f) in raw.file.into_iter().enumerate() {
        let at = loc("file", n, f.to.span());
        sources.push(file_source(ctx, base, f, at)?);
    }
    for (n, d) in raw.dir.into_iter().enumerate() {
        let at = loc("dir", n, d.path.span());
        sources.push(Source::Dir {
            path: image_path_at(ctx, &d.path, "layer.dir.path")?,
            mode: d.mode.unwrap_or(0o755),
            owner: parse_owner(ctx, d.owner, d.owner_names, "layer.dir")?,
            at,
        });
    }
    for (n, s) in raw.symlink.into_iter().enumerate() {
        let at = loc("symlink", n, s.path.span());
        sources.push(symlink_source(ctx, s, at)?);
    }
    for (n, p) in raw.packages.into_iter().enumerate() {
        let at = loc("packages", n, p.from_lock.span());
        sources.push(packages_source(ctx, p, has_lock, at)?);
    }
    Ok(LayerSpec {
        name,
        comment: raw.comment,
        sources,
    })
}

/// An image path from the spec, or an error at its line.
fn image_path_at(ctx: &Ctx, s: &Spanned<String>, field: &str) -> Result<String, SpecError> {
    image_path(s.get_ref()).or_else(|m| ctx.err(s.span(), field, m))
}

fn tree_source(
    ctx: &Ctx,
    base: &Path,
    t: RawTree,
    has_lock: bool,
    at: Loc,
) -> Result<Source, SpecError> {
    let span = t.from.as_ref().map_or(t.to.span(), |f| f.span());
    let include = if t.include.is_empty() {
        None
    } else {
        Some(globset(
            ctx,
            span.clone(),
            "layer.tree.include",
            &t.include,
        )?)
    };
    let (from, from_build) = match (&t.from, &t.from_build) {
        (Some(f), None) => (base.join(f.get_ref()), None),
        (None, None) => {
            return ctx.err(
                span,
                "layer.tree",
                "needs `from` (a directory) or `from_build` (a build of the lock)",
            );
        }
        (f, Some(b)) => {
            if !has_lock {
                return ctx.err(
                    b.span(),
                    "layer.tree.from_build",
                    "a build output needs the lockfile: add `lock = \"../mpsi.lock\"` at the top of the spec",
                );
            }
            let inner = f.as_ref().map(|f| f.get_ref().as_str()).unwrap_or("");
            if inner.starts_with('/') || inner.split('/').any(|c| c == "..") {
                return ctx.err(
                    f.as_ref().expect("non-empty").span(),
                    "layer.tree.from",
                    format!(
                        "{inner:?} must be a relative path inside the build output, without '..'"
                    ),
                );
            }
            (PathBuf::from(inner), Some(b.get_ref().clone()))
        }
    };
    Ok(Source::Tree {
        from,
        from_build,
        to: image_path_at(ctx, &t.to, "layer.tree.to")?,
        include,
        exclude: globset(ctx, span, "layer.tree.exclude", &t.exclude)?,
        follow_symlinks: t.follow_symlinks,
        owner: parse_owner(ctx, t.owner, t.owner_names, "layer.tree")?,
        file_mode: t.file_mode,
        dir_mode: t.dir_mode,
        at,
    })
}

fn file_source(ctx: &Ctx, base: &Path, f: RawFile, at: Loc) -> Result<Source, SpecError> {
    let data = match (f.from, f.content) {
        (Some(p), None) => FileData::Path(base.join(p)),
        (None, Some(c)) => FileData::Inline(c.into_bytes()),
        _ => {
            return ctx.err(
                f.to.span(),
                "layer.file",
                "give exactly one of `from` (a path) or `content` (inline text)",
            );
        }
    };
    let to = image_path_at(ctx, &f.to, "layer.file.to")?;
    if to.is_empty() {
        return ctx.err(
            f.to.span(),
            "layer.file.to",
            "a file cannot be the image root",
        );
    }
    Ok(Source::File {
        data,
        to,
        mode: f.mode,
        owner: parse_owner(ctx, f.owner, f.owner_names, "layer.file")?,
        at,
    })
}

fn symlink_source(ctx: &Ctx, s: RawSymlink, at: Loc) -> Result<Source, SpecError> {
    let path = image_path_at(ctx, &s.path, "layer.symlink.path")?;
    if path.is_empty() || s.target.is_empty() {
        return ctx.err(
            s.path.span(),
            "layer.symlink",
            "needs a non-root `path` and a non-empty `target`",
        );
    }
    Ok(Source::Symlink {
        path,
        target: s.target,
        owner: parse_owner(ctx, s.owner, s.owner_names, "layer.symlink")?,
        at,
    })
}

fn packages_source(
    ctx: &Ctx,
    p: RawPackages,
    has_lock: bool,
    at: Loc,
) -> Result<Source, SpecError> {
    if p.from_lock.get_ref() != "runtime" {
        return ctx.err(
            p.from_lock.span(),
            "layer.packages.from_lock",
            format!(
                "{:?} is not a package set of the lock (the lock has \"runtime\")",
                p.from_lock.get_ref()
            ),
        );
    }
    if !has_lock {
        return ctx.err(
            p.from_lock.span(),
            "layer.packages.from_lock",
            "packages come from the lockfile: add `lock = \"../mpsi.lock\"` at the top of the spec",
        );
    }
    let span = p.from_lock.span();
    Ok(Source::Packages {
        exclude: globset(ctx, span.clone(), "layer.packages.exclude", &p.exclude)?,
        keep: globset(ctx, span, "layer.packages.keep", &p.keep)?,
        from_lock: p.from_lock.into_inner(),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(Path::new("layers/test.toml"), text)
    }

    const MINIMAL: &str =
        "[image]\nname = \"demo\"\n\n[[layer]]\nname = \"a\"\n[[layer.dir]]\npath = \"/data\"\n";

    #[test]
    fn minimal_spec_has_defaults() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.image.tag, "latest");
        assert_eq!(s.image.compression, Compression::Gzip);
        assert_eq!(s.image.compression_level, 6);
        assert!(s.image.check_elf, "the ELF closure check is on by default");
        assert_eq!(s.layers.len(), 1);
        let off = MINIMAL.replace("[image]\n", "[image]\ncheck_elf = false\n");
        assert!(!parse(&off).unwrap().image.check_elf);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = parse("[image]\nname = \"demo\"\ncolour = \"red\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
        assert!(e.to_string().starts_with("layers/test.toml:3"), "{e}");
    }

    #[test]
    fn bad_owner_and_mode_are_located() {
        let e = parse(&format!("{MINIMAL}owner = \"mysql:mysql\"\n")).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.field.contains("owner"), "{e}");
        let e = parse(&format!("{MINIMAL}mode = \"0999\"\n")).unwrap_err();
        assert!(e.to_string().contains("octal"), "{e}");
    }

    #[test]
    fn paths_are_normalized_and_dotdot_rejected() {
        assert_eq!(image_path("/usr//bin/./x/").unwrap(), "usr/bin/x");
        assert_eq!(image_path("/").unwrap(), "");
        assert!(image_path("/usr/../etc").is_err());
        assert!(image_path("usr").is_err());
        let e = parse("[image]\nname = \"demo\"\n[[layer]]\nname = \"a\"\n[[layer.dir]]\npath = \"/a/../../b\"\n").unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn durations_follow_go_syntax() {
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("ten seconds"), None);
        assert_eq!(parse_duration("5"), None);
    }

    #[test]
    fn config_values_are_checked() {
        let e = parse("[image]\nname = \"demo\"\n[config]\nenv = [\"OK=1\", \"BROKEN\"]\n[[layer]]\nname = \"a\"\n").unwrap_err();
        assert!(e.to_string().contains("NAME=VALUE"), "{e}");
        let e = parse("[image]\nname = \"demo\"\n[config]\nexposed_ports = [\"99999\"]\n[[layer]]\nname = \"a\"\n").unwrap_err();
        assert!(e.field.contains("exposed_ports"), "{e}");
        let s = parse("[image]\nname = \"demo\"\n[config]\nexposed_ports = [\"3306\"]\n[[layer]]\nname = \"a\"\n").unwrap();
        assert_eq!(s.config.exposed_ports, vec!["3306/tcp"]);
    }

    const ACCOUNTS: &str = "[image]\nname = \"demo\"\n[[layer]]\nname = \"a\"\n[layer.accounts]\n\
[[layer.accounts.group]]\nname = \"root\"\ngid = 0\n[[layer.accounts.group]]\nname = \"mysql\"\ngid = 999\n\
[[layer.accounts.user]]\nname = \"root\"\nuid = 0\ngroup = \"root\"\nhome = \"/root\"\nshell = \"/bin/sh\"\n\
[[layer.accounts.user]]\nname = \"mysql\"\nuid = 999\ngroup = \"mysql\"\nhome = \"/var/lib/mysql\"\nshell = \"/bin/false\"\n";

    fn dir_owner(spec: &Spec) -> &Owner {
        spec.layers[0]
            .sources
            .iter()
            .find_map(|s| match s {
                Source::Dir { owner, .. } => Some(owner),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn owners_resolve_through_declared_accounts() {
        let named = parse(&format!(
            "{ACCOUNTS}[[layer.dir]]\npath = \"/d\"\nowner = \"mysql:mysql\"\n"
        ))
        .unwrap();
        let numeric = parse(&format!(
            "{ACCOUNTS}[[layer.dir]]\npath = \"/d\"\nowner = \"999:999\"\n"
        ))
        .unwrap();
        let want = Owner {
            uid: 999,
            gid: 999,
            user: "mysql".into(),
            group: "mysql".into(),
        };
        assert_eq!(dir_owner(&named), &want);
        assert_eq!(dir_owner(&numeric), &want);
        let (accounts, at) = named.accounts().unwrap();
        assert_eq!(accounts.users.len(), 2);
        assert_eq!(at.line, 5, "{at}"); // the [layer.accounts] line
    }

    #[test]
    fn accounts_need_root_and_come_once() {
        let no_root = ACCOUNTS.replace("uid = 0", "uid = 1");
        let e = parse(&no_root).unwrap_err();
        assert!(e.to_string().contains("declare root"), "{e}");
        let twice = format!("{ACCOUNTS}[[layer]]\nname = \"b\"\n[layer.accounts]\n");
        let e = parse(&twice).unwrap_err();
        assert!(e.to_string().contains("one [layer.accounts]"), "{e}");
        let member = ACCOUNTS.replace("gid = 999\n", "gid = 999\nmembers = [\"nobody\"]\n");
        let e = parse(&member).unwrap_err();
        assert!(
            e.to_string().contains("\"nobody\" is not a declared user"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_layer_names_and_empty_specs_are_rejected() {
        assert!(
            parse("[image]\nname = \"demo\"\n")
                .unwrap_err()
                .to_string()
                .contains("no [[layer]]")
        );
        let e =
            parse("[image]\nname = \"demo\"\n[[layer]]\nname = \"a\"\n[[layer]]\nname = \"a\"\n")
                .unwrap_err();
        assert_eq!(e.line, Some(6));
    }
}
