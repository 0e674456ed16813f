//! A Docker engine as a sink: the docker-archive streams straight into the
//! Engine API's `POST /images/load`, with no temp file and no `docker` CLI.
//!
//! The archive is the one `mpsi export --format docker-archive` writes
//! (`archive::write_archive`), written straight into the chunked request
//! body on the socket (`http1`: why a small client of our own, there).
//!
//! Plain layers: an engine with the classic image store (every engine but
//! one on the containerd store) gets every layer decompressed to plain
//! tar, in Docker's manifest.json form only (the diff_ids are unchanged,
//! being digests of the plain tar). It untars the whole archive before it
//! unpacks any layer, so a layer it must decompress itself costs its own
//! time, while ours overlaps the upload (`benches/load.sh` measures it).
//! This also covers zstd on engines before Docker 23 (API 1.42), which
//! cannot read it. The containerd store keeps the blobs it is given, so it
//! gets them as they are.

use super::Sink;
use super::archive::{ArchiveFormat, PlainLayers, TrailerSizeWrong, write_archive};
use super::http1::{self, ChunkedWriter, Response, Stream};
use crate::model::Image;
use crate::progress::Reporter;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where Docker listens when DOCKER_HOST is unset.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The first Engine API version of Docker 23, the first that reads zstd.
const ZSTD_API: (u32, u32) = (1, 42);

/// The first Engine API version that can keep images in the containerd
/// store (Docker 23, behind a feature flag): an older engine has only the
/// classic store, and is not asked (`GET /info` takes it 15-20 ms).
const CONTAINERD_STORE_API: (u32, u32) = (1, 42);

/// How long the engine may take to answer the version handshake and the
/// image lookup; the load itself has no limit.
const SHORT_REQUEST: Duration = Duration::from_secs(30);

/// A Docker engine's address, as DOCKER_HOST spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///PATH` or `tcp://HOST[:PORT]`; None or "" is the
    /// default socket.
    pub fn parse(host: Option<&str>) -> Result<Endpoint> {
        let host = host.unwrap_or("").trim();
        if host.is_empty() {
            return Ok(Endpoint::Unix(DEFAULT_SOCKET.into()));
        }
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Ok(Endpoint::Unix(DEFAULT_SOCKET.into()));
            }
            return Ok(Endpoint::Unix(path.into()));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if addr.is_empty() || addr.contains('/') {
                bail!("DOCKER_HOST={host:?}: expected tcp://HOST:PORT");
            }
            // Docker's own default port for plain HTTP.
            let has_port = addr.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
            });
            return Ok(Endpoint::Tcp(if has_port {
                addr.to_string()
            } else {
                format!("{addr}:2375")
            }));
        }
        bail!(
            "DOCKER_HOST={host:?} is not supported by mpsi load: use unix:///PATH or \
             tcp://HOST:PORT, or write an archive with `mpsi export --format docker-archive -o - | docker load`"
        )
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// No engine answered the handshake.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Docker engine answers at {endpoint} ({cause}).\n  Start one (`sudo dockerd`, or \
     `sudo systemctl start docker`), or set DOCKER_HOST to a running engine \
     (unix:///PATH or tcp://HOST:PORT);\n  or write an archive instead: \
     `mpsi export --format docker-archive -o FILE`, then `docker load -i FILE` where an engine runs"
)]
pub struct NoEngine {
    pub endpoint: String,
    pub cause: String,
}

pub struct DockerSink {
    pub endpoint: Endpoint,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub engine: String,
    pub api_version: String,
    /// Names the engine reported loading (`mpsi-test/fixture:v1`).
    pub loaded: Vec<String>,
    /// The engine's image ID (the config digest).
    pub image_id: String,
    pub manifest_digest: String,
    /// Layers sent as plain tar (see the module comment).
    pub layers_decompressed: usize,
    /// Archive bytes sent to the engine.
    pub bytes: u64,
    pub seconds: f64,
}

impl Sink for DockerSink {
    type Report = LoadReport;

    fn send(&mut self, image: &Image, reporter: &dyn Reporter) -> Result<LoadReport> {
        let start = Instant::now();
        let engine = Engine {
            endpoint: self.endpoint.clone(),
        };
        let api = engine.ping()?;
        let zstd_ok = api_at_least(&api, ZSTD_API);
        let mut plain = if engine.has_classic_store(&api)? {
            PlainLayers::All
        } else if zstd_ok {
            PlainLayers::None
        } else {
            PlainLayers::Zstd
        };
        let (loaded, bytes, decompressed) = loop {
            let decompressed = image.layers.iter().filter(|l| plain.applies_to(l)).count();
            match engine.load(&api, image, plain, reporter) {
                Ok((loaded, bytes)) => break (loaded, bytes, decompressed),
                Err(e)
                    if plain == PlainLayers::All
                        && e.downcast_ref::<TrailerSizeWrong>().is_some() =>
                {
                    reporter.warn(&format!("{e:#}: sending the layers as stored"));
                    plain = if zstd_ok {
                        PlainLayers::None
                    } else {
                        PlainLayers::Zstd
                    };
                }
                Err(e) => return Err(e),
            }
        };
        if !zstd_ok
            && image
                .layers
                .iter()
                .any(|l| l.media_type().ends_with("+zstd"))
        {
            reporter.warn(&format!(
                "the engine (API {api}) cannot read zstd: its zstd layers went as plain tar"
            ));
        }
        let Loaded { names, id } = loaded;
        let image_id = match (id, names.first()) {
            (Some(id), _) => id,
            (None, Some(name)) => engine.image_id(&api, name)?,
            (None, None) => bail!("the Docker engine's reply to the load named no image"),
        };
        Ok(LoadReport {
            engine: self.endpoint.to_string(),
            api_version: api,
            loaded: names,
            image_id,
            manifest_digest: image.manifest_digest(),
            layers_decompressed: decompressed,
            bytes,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// `"1.41"` >= (1, 42)?
fn api_at_least(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    v >= (major, minor)
}

/// One engine: where it listens; each request is its own connection.
struct Engine {
    endpoint: Endpoint,
}

impl Engine {
    fn open(&self) -> io::Result<Stream> {
        match &self.endpoint {
            Endpoint::Unix(path) => Stream::unix(path),
            Endpoint::Tcp(addr) => Stream::tcp(addr, Duration::from_secs(10)),
        }
    }

    /// The Host header: for a socket, only a name (the socket is the address).
    fn host(&self) -> &str {
        match &self.endpoint {
            Endpoint::Unix(_) => "docker",
            Endpoint::Tcp(addr) => addr,
        }
    }

    /// A GET whose reply must come within `SHORT_REQUEST`.
    fn get(&self, path: &str) -> Result<Response> {
        let mut s = self.open().map_err(|e| NoEngine {
            endpoint: self.endpoint.to_string(),
            cause: e.to_string(),
        })?;
        s.set_read_timeout(Some(SHORT_REQUEST))?;
        let what = || format!("GET {path} from the engine at {}", self.endpoint);
        http1::write_head(&mut s, "GET", self.host(), path, &[], false).with_context(what)?;
        http1::read_response(s).with_context(what)
    }

    /// `GET /_ping`: is an engine there, and which API version does it speak?
    fn ping(&self) -> Result<String> {
        let resp = check_status(self.get("/_ping")?, "GET /_ping")?;
        resp.header("Api-Version")
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "{} answered /_ping without an Api-Version header: is it a Docker engine?",
                    self.endpoint
                )
            })
    }

    /// Does the engine keep images in its classic store (layers unpacked
    /// by a graph driver), not the containerd store (which keeps blobs)?
    /// `GET /info`: the containerd store reports the driver type
    /// `io.containerd.snapshotter.v1` in DriverStatus.
    fn has_classic_store(&self, api: &str) -> Result<bool> {
        if !api_at_least(api, CONTAINERD_STORE_API) {
            return Ok(true);
        }
        let resp = check_status(self.get(&format!("/v{api}/info"))?, "GET /info")?;
        let info: serde_json::Value =
            serde_json::from_reader(resp.body).context("reading the engine's /info")?;
        let containerd = info["DriverStatus"].as_array().is_some_and(|rows| {
            rows.iter()
                .flat_map(|row| row.as_array().into_iter().flatten())
                .any(|v| {
                    v.as_str()
                        .is_some_and(|s| s.contains("containerd.snapshotter"))
                })
        });
        Ok(!containerd)
    }

    /// `POST /images/load` with the archive written straight into the
    /// request body; returns what the engine says it loaded and the bytes
    /// sent. No overall time limit: a large image on a slow disk takes long.
    fn load(
        &self,
        api: &str,
        image: &Image,
        plain: PlainLayers,
        reporter: &dyn Reporter,
    ) -> Result<(Loaded, u64)> {
        let mut s = self.open().map_err(|e| NoEngine {
            endpoint: self.endpoint.to_string(),
            cause: e.to_string(),
        })?;
        let path = format!("/v{api}/images/load?quiet=1");
        let headers = [("Content-Type", "application/x-tar")];
        http1::write_head(&mut s, "POST", self.host(), &path, &headers, true)
            .with_context(|| format!("sending the load request to {}", self.endpoint))?;
        let (archived, body) = http1::pipelined(ChunkedWriter::new(&mut s), |out| {
            write_archive(out, image, ArchiveFormat::DockerArchive, plain, reporter)
        });
        let written = match (archived, body) {
            (Ok(()), Ok(body)) => body.finish().map(|(_, sent)| sent).map_err(Into::into),
            (Ok(()), Err(e)) => Err(e.into()),
            // The socket's own error says more than the BrokenPipe the
            // archive writer saw.
            (Err(e), Err(io)) if is_closed(&e) => Err(anyhow::Error::from(io)),
            (Err(e), _) => Err(e),
        };
        let sent = match written {
            Ok(sent) => sent,
            // The engine stopped reading: its reply says why.
            Err(e) if is_closed(&e) => 0,
            // A failed archive (a corrupt blob): the body stays unfinished,
            // so the engine discards what it got.
            Err(e) => return Err(e.context("writing the archive")),
        };
        reporter.note("the engine is unpacking the layers");
        let resp = http1::read_response(s)
            .with_context(|| format!("reading the reply of the engine at {}", self.endpoint))?;
        let loaded = parse_load_reply(check_status(resp, "POST /images/load")?.body)?;
        Ok((loaded, sent))
    }

    /// The image ID of a loaded name (`GET /images/{name}/json`).
    fn image_id(&self, api: &str, name: &str) -> Result<String> {
        let resp = self.get(&format!("/v{api}/images/{name}/json"))?;
        let resp = check_status(resp, "GET /images/{name}/json")?;
        let info: serde_json::Value =
            serde_json::from_reader(resp.body).context("reading the engine's image description")?;
        info["Id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the engine describes {name} without an Id"))
    }
}

/// A non-2xx reply is an error with the engine's own message.
fn check_status(resp: Response, what: &str) -> Result<Response> {
    if (200..300).contains(&resp.status) {
        return Ok(resp);
    }
    let status = format!("{} {}", resp.status, resp.reason);
    let text = resp.text().unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    bail!(
        "the Docker engine refused {what}: {status}: {}",
        message.trim()
    )
}

/// What a load's reply says was loaded.
#[derive(Debug, PartialEq, Eq)]
struct Loaded {
    names: Vec<String>,
    /// Given only for an image without names (`Loaded image ID: ...`).
    id: Option<String>,
}

/// Reads the JSON-lines reply of a load: `{"stream":"Loaded image: N\n"}`
/// per name (`Loaded image ID: sha256:...` when unnamed), progress lines,
/// and on failure `{"errorDetail":{..},"error":".."}`, in-band after a 200.
fn parse_load_reply(resp: impl Read) -> Result<Loaded> {
    let mut loaded = Loaded {
        names: Vec::new(),
        id: None,
    };
    let lines = serde_json::Deserializer::from_reader(resp).into_iter::<serde_json::Value>();
    for line in lines {
        let line = line.context("reading the engine's reply to the load")?;
        let error = line["errorDetail"]["message"]
            .as_str()
            .or_else(|| line["error"].as_str());
        if let Some(e) = error {
            bail!("the Docker engine failed to load the image: {e}");
        }
        for l in line["stream"].as_str().unwrap_or("").lines() {
            if let Some(id) = l.strip_prefix("Loaded image ID: ") {
                loaded.id = Some(id.trim().to_string());
            } else if let Some(name) = l.strip_prefix("Loaded image: ") {
                loaded.names.push(name.trim().to_string());
            }
        }
    }
    if loaded.names.is_empty() && loaded.id.is_none() {
        bail!("the Docker engine's reply to the load named no image");
    }
    Ok(loaded)
}

/// The peer closed the connection while we wrote.
fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_docker_host() {
        let unix = |p: &str| Endpoint::Unix(p.into());
        assert_eq!(Endpoint::parse(None).unwrap(), unix(DEFAULT_SOCKET));
        assert_eq!(Endpoint::parse(Some("")).unwrap(), unix(DEFAULT_SOCKET));
        assert_eq!(
            Endpoint::parse(Some("unix:///tmp/d.sock")).unwrap(),
            unix("/tmp/d.sock")
        );
        assert_eq!(
            Endpoint::parse(Some("tcp://127.0.0.1:2375")).unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            Endpoint::parse(Some("tcp://localhost")).unwrap(),
            Endpoint::Tcp("localhost:2375".into())
        );
        let e = Endpoint::parse(Some("ssh://me@host")).unwrap_err();
        assert!(e.to_string().contains("mpsi export"), "{e}");
    }

    #[test]
    fn api_versions_compare_numerically() {
        assert!(!api_at_least("1.41", ZSTD_API));
        assert!(api_at_least("1.42", ZSTD_API));
        assert!(api_at_least("1.100", ZSTD_API));
        assert!(api_at_least("2.0", ZSTD_API));
    }

    #[test]
    fn load_replies_give_names_ids_and_in_band_errors() {
        let ok = br#"{"stream":"Loaded image: mpsi-test/fixture:v1\n"}
{"stream":"Loaded image: other:2\n"}"#;
        assert_eq!(
            parse_load_reply(&ok[..]).unwrap().names,
            ["mpsi-test/fixture:v1", "other:2"]
        );
        let id = br#"{"stream":"Loaded image ID: sha256:abc\n"}"#;
        let unnamed = parse_load_reply(&id[..]).unwrap();
        assert_eq!(
            (unnamed.names.len(), unnamed.id.as_deref()),
            (0, Some("sha256:abc"))
        );
        let bad = br#"{"status":"Loading layer","progressDetail":{},"id":"1"}
{"errorDetail":{"message":"invalid diffID for layer 0"},"error":"invalid diffID for layer 0"}"#;
        let e = parse_load_reply(&bad[..]).unwrap_err().to_string();
        assert!(e.contains("invalid diffID for layer 0"), "{e}");
        assert!(parse_load_reply(&b""[..]).is_err());
    }
}
