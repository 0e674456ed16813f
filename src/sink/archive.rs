//! `mpsi export`: an image from a layout as one tar stream.
//!
//! oci-archive is the OCI layout in a tar. docker-archive is the combined
//! form Docker itself writes since 25.0: the same OCI layout plus a
//! `manifest.json` (Config, RepoTags, Layers) pointing into the same blobs,
//! so engines that read only `manifest.json` (Docker 20.10) and those that
//! read `index.json` (containerd, newer Docker) both load it. Entries are
//! sorted and carry fixed metadata, so the archive is reproducible too.

use super::Sink;
use crate::model::compression::Compression;
use crate::model::digest::HashingWriter;
use crate::model::{Image, Layer, name};
use crate::oci::{self, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::progress::{Reporter, Unit};
use anyhow::{Context, Result, bail};
use oci_spec::image::{ImageIndexBuilder, MediaType};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use tar::{EntryType, Header};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// OCI image layout in a tar (skopeo `oci-archive:`, podman, containerd).
    OciArchive,
    /// OCI layout plus Docker's manifest.json (`docker load`, any version).
    DockerArchive,
}

#[derive(Serialize)]
pub struct ExportReport {
    pub format: ArchiveFormat,
    pub image: Option<String>,
    pub manifest_digest: String,
    pub bytes: u64,
    pub digest: String,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oci-archive" => Ok(ArchiveFormat::OciArchive),
            "docker-archive" => Ok(ArchiveFormat::DockerArchive),
            _ => Err(format!(
                "unknown archive format {s:?} (oci-archive or docker-archive)"
            )),
        }
    }
}

/// Writes the image as one tar stream into `out`.
pub struct ArchiveSink<W: Write> {
    pub format: ArchiveFormat,
    out: Option<W>,
}

impl<W: Write> ArchiveSink<W> {
    pub fn new(format: ArchiveFormat, out: W) -> Self {
        ArchiveSink {
            format,
            out: Some(out),
        }
    }
    /// The writer back, after `send` (to flush it or commit a file).
    pub fn into_inner(self) -> W {
        self.out.expect("send consumed the writer only on error")
    }
}

impl<W: Write> Sink for ArchiveSink<W> {
    type Report = ExportReport;

    fn send(&mut self, img: &Image, reporter: &dyn Reporter) -> Result<ExportReport> {
        let out = self.out.take().context("the archive was already written")?;
        let mut counted = HashingWriter::new(out);
        write_archive(&mut counted, img, self.format, PlainLayers::None, reporter)?;
        let (out, digest, bytes) = counted.finish();
        self.out = Some(out);
        Ok(ExportReport {
            format: self.format,
            image: img.name.clone(),
            manifest_digest: img.manifest_digest(),
            bytes,
            digest,
        })
    }
}

fn blob_name(digest: &str) -> Result<String> {
    Ok(format!(
        "blobs/sha256/{}",
        crate::model::digest::hex_of(digest)?
    ))
}

/// Which compressed layers go into a docker-archive as plain tar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainLayers {
    /// None: every layer as stored (a file for any reader).
    None,
    /// zstd layers only: engines before Docker 23 cannot read zstd.
    Zstd,
    /// Every compressed layer. An engine with the classic image store
    /// decompresses each layer on its own critical path after it has
    /// received the whole archive; given plain tar it skips that, and the
    /// decompression here overlaps the upload (see `benches/load.sh`).
    All,
}

/// How a layer blob is compressed, from its media type (OCI or Docker).
fn compression_of(l: &Layer) -> Option<Compression> {
    let t = l.media_type();
    if t.ends_with("+gzip") || t.ends_with(".tar.gzip") {
        Some(Compression::Gzip)
    } else if t.ends_with("+zstd") || t.ends_with(".tar.zstd") {
        Some(Compression::Zstd)
    } else {
        None
    }
}

impl PlainLayers {
    /// Does this layer go in decompressed?
    pub fn applies_to(self, l: &Layer) -> bool {
        matches!(
            (self, compression_of(l)),
            (PlainLayers::All, Some(_)) | (PlainLayers::Zstd, Some(Compression::Zstd))
        )
    }
}

/// A gzip layer's plain size, as its gzip trailer (ISIZE) gave it, turned
/// out wrong while it streamed: a multi-member gzip, or a layer of 4 GiB
/// or more (ISIZE is the size modulo 2^32). The archive is unusable; send
/// the layers as stored instead.
#[derive(Debug, thiserror::Error)]
#[error(
    "layer {digest}: its gzip trailer gives {trailer} plain bytes, but it decompresses to more or fewer"
)]
pub struct TrailerSizeWrong {
    pub digest: String,
    pub trailer: u64,
}

/// What one blob entry of the archive holds.
enum Blob<'a> {
    Bytes(&'a [u8]),
    /// The layer blob as stored (verified while it streams).
    Layer(&'a Layer),
    /// The layer decompressed: its content is the diff_id's.
    Plain(&'a Layer),
}

/// Writes the archive. One path for every archive mpsi makes: `export`
/// writes it to a file, the Docker sink into the engine's load request.
///
/// With plain layers (`PlainLayers`), the docker-archive is
/// Docker's own form only (manifest.json, no OCI index): the plain layers
/// are no longer the blobs the OCI manifest names, and only engines that
/// read manifest.json get that form. Each such layer is named by its
/// diff_id, which is the digest of what the entry holds.
pub fn write_archive<W: Write>(
    out: W,
    img: &Image,
    format: ArchiveFormat,
    plain: PlainLayers,
    reporter: &dyn Reporter,
) -> Result<()> {
    let docker_only =
        format == ArchiveFormat::DockerArchive && img.layers.iter().any(|l| plain.applies_to(l));
    let mut tar = tar::Builder::new(out);
    if !docker_only {
        add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add(&mut tar, "index.json", &index_of(img)?)?;
    }
    if format == ArchiveFormat::DockerArchive {
        let docker = serde_json::json!([{
            "Config": blob_name(&img.config_digest())?,
            "RepoTags": img.name.iter().map(|n| name::familiar_name(n)).collect::<Vec<_>>(),
            "Layers": img.layers.iter().map(|l| Ok(layer_blob(l, docker_only, plain)?.0)).collect::<Result<Vec<_>>>()?,
        }]);
        add(&mut tar, "manifest.json", &serde_json::to_vec(&docker)?)?;
    }
    dir(&mut tar, "blobs/")?;
    dir(&mut tar, "blobs/sha256/")?;
    let blobs = blob_entries(img, docker_only, plain)?;
    let task = reporter.task("archive", Some(img.layers_size()), Unit::Bytes);
    std::thread::scope(|scope| {
        let mut ahead = DecodeAhead::new(scope, &blobs);
        for (name, blob) in &blobs {
            match blob {
                Blob::Bytes(bytes) => add(&mut tar, name, bytes)?,
                Blob::Layer(l) => {
                    let mut h = header(EntryType::Regular, l.size(), 0o644);
                    tar.append_data(&mut h, name, l.open()?)
                        .with_context(|| format!("adding blob {}", l.digest()))?;
                    task.advance(l.size());
                }
                Blob::Plain(l) => {
                    add_decompressed(&mut tar, name, l, ahead.next())?;
                    task.advance(l.size());
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    task.finish();
    tar.into_inner()?;
    Ok(())
}

/// A layer's entry name, and whether it goes in decompressed.
fn layer_blob(l: &Layer, docker_only: bool, plain: PlainLayers) -> Result<(String, bool)> {
    if docker_only && plain.applies_to(l) {
        Ok((blob_name(&l.diff_id)?, true))
    } else {
        Ok((blob_name(&l.digest())?, false))
    }
}

/// The blob entries in name (digest) order, each once: manifest and config
/// from memory (verified when the image was read), layers from their files.
fn blob_entries(
    img: &Image,
    docker_only: bool,
    plain: PlainLayers,
) -> Result<Vec<(String, Blob<'_>)>> {
    let mut blobs: Vec<(String, Blob)> = Vec::new();
    if !docker_only {
        let manifest = Blob::Bytes(&img.manifest_bytes);
        blobs.push((blob_name(&img.manifest_digest())?, manifest));
    }
    let config = Blob::Bytes(&img.config_bytes);
    blobs.push((blob_name(&img.config_digest())?, config));
    for l in &img.layers {
        let (name, decompressed) = layer_blob(l, docker_only, plain)?;
        blobs.push((
            name,
            if decompressed {
                Blob::Plain(l)
            } else {
                Blob::Layer(l)
            },
        ));
    }
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    Ok(blobs)
}

/// A compressed layer as plain tar, from its decoder thread
/// (`DecodeAhead`): first its size, then its bytes.
fn add_decompressed<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    l: &Layer,
    pieces: Receiver<Piece>,
) -> Result<()> {
    let what = || format!("decompressing layer {}", l.digest());
    let (size, from_trailer) = match pieces.recv() {
        Ok(Piece::Size { size, from_trailer }) => (size, from_trailer),
        Ok(Piece::Failed(e)) => return Err(e.context(what())),
        Ok(Piece::Io(e)) => return Err(anyhow::Error::from(e).context(what())),
        _ => bail!("{}: its decoder stopped before it began", what()),
    };
    let mut h = header(EntryType::Regular, size, 0o644);
    let mut exact = ExactPlain {
        inner: PieceReader {
            pieces,
            chunk: Vec::new(),
            at: 0,
        },
        left: size,
        wrong_size: false,
    };
    let appended = tar.append_data(&mut h, name, &mut exact);
    if exact.wrong_size {
        if from_trailer {
            return Err(TrailerSizeWrong {
                digest: l.digest(),
                trailer: size,
            }
            .into());
        }
        bail!("layer {} changed while it was decompressed", l.digest());
    }
    appended.with_context(what)?;
    Ok(())
}

/// What a decoder thread sends the archive writer.
enum Piece {
    /// The plain size, first. gzip keeps it (mod 2^32) in its trailer:
    /// that size is trusted, and checked as the layer streams
    /// (`TrailerSizeWrong` if it was wrong); the engine checks the content
    /// against the diff_id itself, so it is not hashed here a second time.
    /// zstd frames need not say their size, so a zstd layer is decoded
    /// twice: once to learn its size (and check its diff_id), once for
    /// the archive (no temp file; zstd decodes at several hundred MB/s).
    Size {
        size: u64,
        from_trailer: bool,
    },
    Data(Vec<u8>),
    /// The last piece of a layer that decoded to its end.
    End,
    /// A read failed: a corrupt blob (InvalidData) or a bad stream.
    Io(std::io::Error),
    Failed(anyhow::Error),
}

/// Bytes a decoder sends at a time, and how far (in bytes) it may run
/// ahead of the writer.
const PIECE: usize = 256 << 10;
const AHEAD: usize = 64 << 20;

/// The plain layers of one archive, decoded ahead in their own threads,
/// in the order the archive holds them. Decompressing is the slow part of
/// writing plain layers (gzip inflates at ~0.5 GB/s on one core), and the
/// layers are independent: while one is written, the next ones decode on
/// the other cores, each at most `AHEAD` bytes ahead (memory stays
/// bounded by cores x AHEAD whatever the layers' sizes). No hand-rolled
/// pool: a scoped thread per layer, at most `cores` of them at a time.
struct DecodeAhead<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    layers: std::collections::VecDeque<&'env Layer>,
    started: std::collections::VecDeque<Receiver<Piece>>,
    cores: usize,
}

impl<'scope, 'env> DecodeAhead<'scope, 'env> {
    fn new(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        blobs: &'env [(String, Blob<'env>)],
    ) -> Self {
        let layers = blobs
            .iter()
            .filter_map(|(_, b)| match b {
                Blob::Plain(l) => Some(*l),
                _ => None,
            })
            .collect();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut me = DecodeAhead {
            scope,
            layers,
            started: Default::default(),
            cores,
        };
        me.start_more();
        me
    }

    /// Starts decoders until `cores` run or every layer has one.
    fn start_more(&mut self) {
        while self.started.len() < self.cores {
            let Some(l) = self.layers.pop_front() else {
                return;
            };
            let (tx, rx) = sync_channel(AHEAD / PIECE);
            self.scope.spawn(move || decode_layer(l, &tx));
            self.started.push_back(rx);
        }
    }

    /// The next plain layer's pieces; starts the one after the last running.
    fn next(&mut self) -> Receiver<Piece> {
        let rx = self
            .started
            .pop_front()
            .expect("one decoder per plain layer, taken in the archive's order");
        self.start_more();
        rx
    }
}

/// One layer's decoder thread. It stops as soon as the writer hangs up.
fn decode_layer(l: &Layer, tx: &SyncSender<Piece>) {
    let size = match compression_of(l) {
        Some(Compression::Gzip) => gzip_trailer_size(l).map(|s| (s, true)).map_err(Piece::Io),
        _ => plain_size(l).map(|s| (s, false)).map_err(Piece::Failed),
    };
    let (size, from_trailer) = match size {
        Ok(s) => s,
        Err(p) => {
            let _ = tx.send(p);
            return;
        }
    };
    if tx.send(Piece::Size { size, from_trailer }).is_err() {
        return;
    }
    let mut inner = match decoder(l) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Piece::Failed(e));
            return;
        }
    };
    loop {
        let mut buf = vec![0u8; PIECE];
        let mut n = 0;
        while n < PIECE {
            match inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Piece::Io(e));
                    return;
                }
            }
        }
        if n == 0 {
            let _ = tx.send(Piece::End);
            return;
        }
        buf.truncate(n);
        if tx.send(Piece::Data(buf)).is_err() {
            return;
        }
    }
}

/// A zstd (or other) layer's plain size, by decoding it once; its diff_id
/// is checked on the way.
fn plain_size(l: &Layer) -> Result<u64> {
    let mut counted = HashingWriter::new(std::io::sink());
    std::io::copy(&mut decoder(l)?, &mut counted)?;
    let (_, diff_id, size) = counted.finish();
    if diff_id != l.diff_id {
        bail!(
            "layer {} decompresses to {diff_id}, but the image config says its diff_id is {}",
            l.digest(),
            l.diff_id
        );
    }
    Ok(size)
}

/// The bytes of a decoder's pieces, as a reader.
struct PieceReader {
    pieces: Receiver<Piece>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.pieces.recv() {
                Ok(Piece::Data(d)) => (self.chunk, self.at) = (d, 0),
                Ok(Piece::End) => return Ok(0),
                Ok(Piece::Io(e)) => return Err(e),
                Ok(Piece::Failed(e)) => return Err(std::io::Error::other(format!("{e:#}"))),
                Ok(Piece::Size { .. }) | Err(_) => {
                    return Err(std::io::Error::other("the layer's decoder stopped"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The layer's plain bytes, from its verified compressed blob.
fn decoder(l: &Layer) -> Result<Box<dyn Read>> {
    let blob = l.open()?;
    Ok(match compression_of(l) {
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Some(Compression::Zstd) => Box::new(zstd::Decoder::new(blob)?),
        _ => Box::new(blob),
    })
}

/// ISIZE, the last 4 bytes of a gzip member: its plain size mod 2^32.
fn gzip_trailer_size(l: &Layer) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(&l.path)?;
    f.seek(SeekFrom::End(-4))?;
    let mut isize = [0u8; 4];
    f.read_exact(&mut isize)?;
    Ok(u32::from_le_bytes(isize) as u64)
}

/// Yields exactly `left` bytes of `inner`, and fails (setting
/// `wrong_size`) if `inner` has fewer or more: a tar entry must hold the
/// size its header said.
struct ExactPlain<R> {
    inner: R,
    left: u64,
    wrong_size: bool,
}

impl<R: Read> Read for ExactPlain<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let wrong = |s: &mut Self| {
            s.wrong_size = true;
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the plain layer's size is not the one its tar header says",
            )
        };
        if self.left == 0 {
            // The header's size is reached: the layer must end here too.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(wrong(self)),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(wrong(self));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// An index with just this image, named as in its layout.
fn index_of(img: &Image) -> Result<Vec<u8>> {
    let mut d = img.manifest_descriptor();
    let mut ann = HashMap::new();
    if let Some(t) = &img.tag {
        ann.insert(ANNOTATION_REF_NAME.to_string(), t.clone());
    }
    if let Some(n) = &img.name {
        ann.insert(ANNOTATION_CONTAINERD_NAME.to_string(), n.clone());
    }
    d.set_annotations((!ann.is_empty()).then_some(ann));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![d])
        .build()?;
    oci::canonical_json(&index)
}

fn header(kind: EntryType, size: u64, mode: u32) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn add<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(EntryType::Regular, bytes.len() as u64, 0o644);
    tar.append_data(&mut h, name, bytes)?;
    Ok(())
}

fn dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = header(EntryType::Directory, 0, 0o755);
    tar.append_data(&mut h, name, std::io::empty())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(data: &[u8], size: u64) -> (std::io::Result<Vec<u8>>, bool) {
        let mut r = ExactPlain {
            inner: data,
            left: size,
            wrong_size: false,
        };
        let mut out = Vec::new();
        let res = r.read_to_end(&mut out).map(|_| out);
        (res, r.wrong_size)
    }

    #[test]
    fn a_plain_entry_must_hold_exactly_its_header_size() {
        let data = b"plain layer bytes".repeat(1000);
        let (ok, wrong) = exact(&data, data.len() as u64);
        assert_eq!(ok.unwrap(), data);
        assert!(!wrong);
        // The trailer said less than the layer holds, or more.
        for size in [data.len() as u64 - 1, data.len() as u64 + 1, 0] {
            let (res, wrong) = exact(&data, size);
            assert!(res.is_err() && wrong, "size {size} was accepted");
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        use flate2::{Compression as Level, write::GzEncoder};
        let mut e = GzEncoder::new(Vec::new(), Level::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A layer whose blob is `bytes`, in `dir`.
    fn layer(
        dir: &std::path::Path,
        name: &str,
        media: MediaType,
        bytes: &[u8],
        plain: &[u8],
    ) -> Layer {
        let digest = crate::model::digest::sha256_digest(bytes);
        Layer {
            descriptor: oci_spec::image::DescriptorBuilder::default()
                .media_type(media)
                .digest(digest.parse::<oci_spec::image::Digest>().unwrap())
                .size(bytes.len() as u64)
                .build()
                .unwrap(),
            diff_id: crate::model::digest::sha256_digest(plain),
            path: {
                let p = dir.join(name);
                std::fs::write(&p, bytes).unwrap();
                p
            },
        }
    }

    /// Writes `layers` as plain entries through `DecodeAhead`, as
    /// `write_archive` does; returns the tar, or the first error.
    fn plain_entries(layers: &[Layer]) -> Result<Vec<u8>> {
        let blobs: Vec<(String, Blob)> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("layer{i}"), Blob::Plain(l)))
            .collect();
        let mut tar = tar::Builder::new(Vec::new());
        std::thread::scope(|scope| {
            let mut ahead = DecodeAhead::new(scope, &blobs);
            for (name, blob) in &blobs {
                let Blob::Plain(l) = blob else { unreachable!() };
                add_decompressed(&mut tar, name, l, ahead.next())?;
            }
            Ok::<(), anyhow::Error>(())
        })?;
        Ok(tar.into_inner()?)
    }

    /// More layers than cores, of sizes around a piece, gzip and zstd:
    /// each entry holds exactly its layer's plain bytes, in order.
    #[test]
    fn plain_layers_decoded_ahead_come_out_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0, 1, PIECE - 1, PIECE, 3 * PIECE + 7, 5000, PIECE + 1];
        let plains: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|b| ((b * 31 + i * 7) % 251) as u8).collect())
            .collect();
        let layers: Vec<Layer> = plains
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if i % 3 == 2 {
                    let z = zstd::encode_all(&p[..], 3).unwrap();
                    layer(
                        dir.path(),
                        &format!("z{i}"),
                        MediaType::ImageLayerZstd,
                        &z,
                        p,
                    )
                } else {
                    layer(
                        dir.path(),
                        &format!("g{i}"),
                        MediaType::ImageLayerGzip,
                        &gz(p),
                        p,
                    )
                }
            })
            .collect();
        let tar = plain_entries(&layers).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = 0;
        for (i, e) in archive.entries().unwrap().enumerate() {
            let mut e = e.unwrap();
            assert_eq!(e.path().unwrap().to_str().unwrap(), format!("layer{i}"));
            let mut got = Vec::new();
            e.read_to_end(&mut got).unwrap();
            assert!(
                got == plains[i],
                "layer {i}: {} bytes, expected {}",
                got.len(),
                plains[i].len()
            );
            seen += 1;
        }
        assert_eq!(seen, plains.len());
    }

    /// A blob that does not match its digest fails the archive naming the
    /// blob, while the decoders ahead of it are running, and nothing hangs.
    #[test]
    fn a_corrupt_layer_among_decoders_ahead_fails_naming_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..4 * PIECE).map(|b| (b % 253) as u8).collect();
        // Distinct blobs, so that the corrupt one is named alone.
        let layers: Vec<Layer> = (0..5u8)
            .map(|i| {
                let p: Vec<u8> = plain.iter().map(|b| b.wrapping_add(i)).collect();
                layer(
                    dir.path(),
                    &format!("g{i}"),
                    MediaType::ImageLayerGzip,
                    &gz(&p),
                    &p,
                )
            })
            .collect();
        let mut bad = std::fs::read(&layers[1].path).unwrap();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        std::fs::write(&layers[1].path, &bad).unwrap();
        let err = format!("{:#}", plain_entries(&layers).unwrap_err());
        assert!(err.contains(&layers[1].digest()), "{err}");
    }

    /// What `add_decompressed` trusts: ISIZE is the size of the last
    /// member only, so a two-member gzip gives a wrong size (and the check
    /// above catches it).
    #[test]
    fn the_gzip_trailer_gives_the_plain_size_of_one_member() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 300_000];
        let one = layer(
            dir.path(),
            "one",
            MediaType::ImageLayerGzip,
            &gz(&data),
            &data,
        );
        assert_eq!(gzip_trailer_size(&one).unwrap(), 300_000);
        let two = [gz(&data[..100_000]), gz(&data[100_000..])].concat();
        let two = layer(dir.path(), "two", MediaType::ImageLayerGzip, &two, &data);
        assert_eq!(gzip_trailer_size(&two).unwrap(), 200_000);
    }
}
