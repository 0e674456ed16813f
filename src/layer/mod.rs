//! Deterministic layer tarballs.
//!
//! One streaming pass writes the tar, hashes it (diff_id), compresses it and
//! hashes the compressed bytes (digest) on the way to disk. Headers carry only
//! what the spec says: path, mode, uid/gid and names from the spec, mtime
//! from SOURCE_DATE_EPOCH, no atime/ctime, no host xattrs. Entries are
//! USTAR; anything USTAR cannot hold (long paths or link targets, long
//! names, large ids or sizes) goes into a PAX extended header, as GNU tar
//! --format=posix does. The `tar` crate writes headers and padding but has
//! no PAX writer, so the extended records are formatted here.

pub mod compress;

pub use crate::model::LayerBlob;
use crate::model::compression::Compression;
use crate::model::digest::{HashingWriter, sha256_digest};
use crate::rootfs::{Content, Entry};
use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::mpsc::{SyncSender, sync_channel};
use tar::{EntryType, Header};

/// Bumped whenever the bytes this module writes for the same entries change,
/// so cached layers from an older mpsi are not reused.
pub const LAYER_FORMAT: &str = "mpsi-layer-v1";

/// How to encode a layer.
#[derive(Clone, Copy, Debug)]
pub struct Encoding {
    pub compression: Compression,
    pub level: i32,
    /// mtime of every entry (SOURCE_DATE_EPOCH).
    pub mtime: u64,
}

/// Writes `entries` as a layer into `out`; `progress` gets content bytes as
/// they are written.
///
/// Two stages overlap: a producer thread reads the files, frames the tar and
/// hashes it (diff_id) in 1 MiB chunks; this thread compresses the chunks
/// (itself parallel), hashes the result (digest) and writes it out.
pub fn write<W: Write + Send + 'static>(
    entries: &[Entry],
    enc: Encoding,
    threads: usize,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(W, LayerBlob)> {
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> Result<(String, u64)> {
            let plain = BufWriter::with_capacity(CHUNK, HashingWriter::new(ChunkSender { tx }));
            let mut tar = tar::Builder::new(plain);
            for e in entries {
                append(&mut tar, e, enc.mtime)
                    .with_context(|| format!("writing /{} into the layer", e.path))?;
                progress(e.content_len());
            }
            let plain = tar.into_inner().context("finishing the tar stream")?;
            let (_, diff_id, size) = plain.into_inner().map_err(|e| e.into_error())?.finish();
            Ok((diff_id, size))
        });
        let compressed = HashingWriter::new(out);
        let mut encoder = enc.compression.encoder(compressed, enc.level, threads)?;
        let mut consumed: Result<()> = Ok(());
        for chunk in rx {
            if let Err(e) = encoder.write_all(&chunk) {
                consumed = Err(e).context("compressing the layer");
                break; // dropping the receiver stops the producer
            }
        }
        let produced = producer
            .join()
            .map_err(|_| anyhow::anyhow!("the tar writer thread panicked"))?;
        consumed?;
        let (diff_id, uncompressed_size) = produced?;
        let compressed = encoder.finish().context("finishing compression")?;
        let (out, digest, size) = compressed.finish();
        Ok((
            out,
            LayerBlob {
                media_type: enc.compression.media_type().to_string(),
                digest,
                size,
                diff_id,
                uncompressed_size,
                entries: entries.len(),
            },
        ))
    })
}

/// Chunk size between the tar stage and the compression stage.
const CHUNK: usize = 1 << 20;

/// Hands each write (a full buffer from the BufWriter above it) to the
/// compression stage.
struct ChunkSender {
    tx: SyncSender<Vec<u8>>,
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.send(buf.to_vec()).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the compression stage stopped")
        })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, e: &Entry, mtime: u64) -> Result<()> {
    let mut h = Header::new_ustar();
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    let (kind, size, link) = match &e.content {
        Content::Dir => (EntryType::Directory, 0, None),
        Content::File { stamp, .. } => (EntryType::Regular, stamp.size, None),
        Content::Inline(d) => (EntryType::Regular, d.len() as u64, None),
        Content::Symlink(t) => (EntryType::Symlink, 0, Some(t.as_str())),
        Content::Hardlink(t) => (EntryType::Link, 0, Some(t.as_str())),
    };
    h.set_entry_type(kind);
    let name = if matches!(kind, EntryType::Directory) {
        format!("{}/", e.path)
    } else {
        e.path.clone()
    };
    if h.set_path(&name).is_err() {
        // Too long for USTAR's name/prefix split: keep a truncated name for
        // old readers and the real one in the PAX record.
        set_truncated_name(&mut h, &name);
        pax.push(("path", name.clone().into_bytes()));
    }
    if let Some(target) = link
        && (target.len() > 100 || h.set_link_name_literal(target).is_err())
    {
        pax.push(("linkpath", target.as_bytes().to_vec()));
    }
    h.set_mode(e.mode);
    set_id(&mut h, &mut pax, "uid", e.owner.uid);
    set_id(&mut h, &mut pax, "gid", e.owner.gid);
    if e.owner.user.len() > 31 || h.set_username(&e.owner.user).is_err() {
        pax.push(("uname", e.owner.user.clone().into_bytes()));
    }
    if e.owner.group.len() > 31 || h.set_groupname(&e.owner.group).is_err() {
        pax.push(("gname", e.owner.group.clone().into_bytes()));
    }
    h.set_mtime(mtime);
    // USTAR's size field holds up to 8 GiB - 1.
    if size >= 1 << 33 {
        pax.push(("size", size.to_string().into_bytes()));
        h.set_size(0);
    } else {
        h.set_size(size);
    }
    if !pax.is_empty() {
        append_pax(tar, &name, &pax, mtime)?;
    }
    h.set_size(size);
    h.set_cksum();
    match &e.content {
        Content::File { path, stamp } => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut counted = Counted {
                inner: file.take(stamp.size),
                n: 0,
            };
            tar.append(&h, &mut counted)?;
            // A file that shrank would leave the tar short; one that grew
            // would be cut off. Either way the layer is not what was listed.
            let grew = counted.inner.into_inner().read(&mut [0u8; 1])? > 0;
            if counted.n != stamp.size || grew {
                bail!(
                    "{} changed size while it was being written (listed as {} bytes); rerun when it is stable",
                    path.display(),
                    stamp.size
                );
            }
        }
        Content::Inline(d) => tar.append(&h, &d[..])?,
        _ => tar.append(&h, io::empty())?,
    }
    Ok(())
}

struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn set_id(h: &mut Header, pax: &mut Vec<(&str, Vec<u8>)>, key: &'static str, id: u64) {
    // USTAR's 8-byte octal field holds up to 0o7777777.
    let fits = id <= 0o7777777;
    let v = if fits { id } else { 0 };
    if key == "uid" {
        h.set_uid(v)
    } else {
        h.set_gid(v)
    }
    if !fits {
        pax.push((key, id.to_string().into_bytes()));
    }
}

fn set_truncated_name(h: &mut Header, name: &str) {
    let ustar = h.as_ustar_mut().expect("ustar header");
    let bytes = name.as_bytes();
    let n = bytes.len().min(ustar.name.len());
    ustar.name = [0; 100];
    ustar.name[..n].copy_from_slice(&bytes[..n]);
}

/// One PAX record: "<len> <key>=<value>\n", where <len> counts the whole
/// record including its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn append_pax<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    records: &[(&str, Vec<u8>)],
    mtime: u64,
) -> Result<()> {
    let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    // As GNU tar names them; readers ignore the name of an 'x' entry.
    let base = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let base: String = base.chars().take(80).collect();
    if h.set_path(format!("PaxHeaders/{base}")).is_err() {
        set_truncated_name(&mut h, "PaxHeaders/entry");
    }
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(body.len() as u64);
    h.set_cksum();
    tar.append(&h, &body[..])?;
    Ok(())
}

/// A key for the layer cache: everything that determines the layer's bytes.
/// Files on disk are identified by their stamp (device, inode, size, mtime,
/// ctime) and path rather than by content, so an unchanged layer is found
/// without reading it; any write to a file moves its ctime.
pub fn cache_key(entries: &[Entry], enc: Encoding) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{LAYER_FORMAT}\n{} {} {}\n",
        enc.compression.name(),
        enc.level,
        enc.mtime
    ));
    for e in entries {
        let o = &e.owner;
        h.update(format!(
            "{}\0{:o}\0{}:{}:{}:{}\0",
            e.path, e.mode, o.uid, o.gid, o.user, o.group
        ));
        match &e.content {
            Content::Dir => h.update(b"dir"),
            Content::File { path, stamp } => h.update(format!(
                "file {} {} {} {} {} {}",
                path.display(),
                stamp.dev,
                stamp.ino,
                stamp.size,
                stamp.mtime_ns,
                stamp.ctime_ns
            )),
            Content::Inline(d) => h.update(format!("inline {}", sha256_digest(d))),
            Content::Symlink(t) => h.update(format!("symlink {t}")),
            Content::Hardlink(t) => h.update(format!("hardlink {t}")),
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        // The classic example: "30 mtime=1350244992.023960108\n" is 30 bytes.
        let r = pax_record("mtime", b"1350244992.023960108");
        assert_eq!(r, b"30 mtime=1350244992.023960108\n");
        for n in [1usize, 5, 90, 95, 96, 97, 990, 995, 1000] {
            let r = pax_record("path", &vec![b'a'; n]);
            let len: usize = std::str::from_utf8(&r[..r.iter().position(|&b| b == b' ').unwrap()])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, r.len(), "value length {n}");
        }
    }
}
