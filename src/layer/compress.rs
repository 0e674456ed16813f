//! Layer compression with pinned, reproducible settings.
//!
//! gzip: one gzip member (RFC 1952) with a fixed header (no name, MTIME 0,
//! XFL 0, OS 255) around a single deflate stream that is cut into fixed
//! 1 MiB blocks. Each block is deflated on its own (raw deflate ending in a
//! sync flush) on the rayon pool, and the pieces are concatenated in order;
//! an empty final block and the combined CRC-32 close the stream. This is the
//! pigz scheme without the 32 KiB dictionary carry-over, so the output
//! depends only on the input, the level and the block size, never on the
//! number of threads. No crate does this pinned variant (gzp's pigz mode
//! carries dictionaries across blocks and sizes blocks by thread count), so
//! it is written here; flate2 (zlib-rs) does the deflating.
//!
//! zstd: libzstd in multi-threaded mode; its output is independent of the
//! worker count once at least one worker is used (job size comes from the
//! level's window, not the thread count), which a test pins down.

pub use crate::model::compression::Compression;
use flate2::{Compress, FlushCompress};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, sync_channel};

/// Size of the independently compressed gzip blocks. Part of the output
/// format: changing it changes every gzip layer digest.
pub const GZIP_BLOCK: usize = 1 << 20;

impl Compression {
    /// Wraps `out` in this compressor.
    pub fn encoder<W: Write + Send + 'static>(
        self,
        out: W,
        level: i32,
        threads: usize,
    ) -> io::Result<Box<dyn Encoder<W>>> {
        Ok(match self {
            Compression::Gzip => Box::new(ParallelGzip::new(out, level as u32, threads)?),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                enc.include_checksum(false)?;
                enc.include_contentsize(false)?;
                enc.multithread(threads.max(1) as u32)?;
                Box::new(enc)
            }
            Compression::None => Box::new(Plain(out)),
        })
    }
}

/// A compressing writer that hands back its inner writer when finished.
pub trait Encoder<W>: Write {
    fn finish(self: Box<Self>) -> io::Result<W>;
}

struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Encoder<W> for Plain<W> {
    fn finish(self: Box<Self>) -> io::Result<W> {
        Ok(self.0)
    }
}

impl<W: Write> Encoder<W> for zstd::stream::write::Encoder<'static, W> {
    fn finish(self: Box<Self>) -> io::Result<W> {
        zstd::stream::write::Encoder::finish(*self)
    }
}

/// Fixed gzip header: magic, CM=deflate, no flags, MTIME 0, XFL 0, OS 255.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
/// A final, empty, fixed-Huffman deflate block: ends the stream after the
/// byte-aligned sync-flushed blocks.
const DEFLATE_FINAL_EMPTY: [u8; 2] = [0x03, 0x00];

struct Block {
    deflated: Vec<u8>,
    crc: u32,
    len: u64,
}

/// Parallel, reproducible gzip writer (see the module comment).
pub struct ParallelGzip<W: Write> {
    out: W,
    buf: Vec<u8>,
    level: u32,
    pending: VecDeque<Receiver<io::Result<Block>>>,
    max_pending: usize,
    crc: crc32fast::Hasher,
    total: u64,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        if level > 9 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is not in 0..=9"),
            ));
        }
        out.write_all(&GZIP_HEADER)?;
        Ok(ParallelGzip {
            out,
            buf: Vec::with_capacity(GZIP_BLOCK),
            level,
            pending: VecDeque::new(),
            // Enough blocks in flight to keep every worker busy while the
            // writer drains the oldest one; bounded so memory stays small.
            max_pending: threads.max(1) * 2,
            crc: crc32fast::Hasher::new(),
            total: 0,
        })
    }

    fn dispatch(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(GZIP_BLOCK));
        let (tx, rx) = sync_channel(1);
        let level = self.level;
        rayon::spawn(move || {
            let _ = tx.send(deflate_block(&block, level));
        });
        self.pending.push_back(rx);
        while self.pending.len() > self.max_pending {
            self.drain_one()?;
        }
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let block = rx
            .recv()
            .map_err(|_| io::Error::other("gzip worker thread vanished"))??;
        self.out.write_all(&block.deflated)?;
        self.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            block.crc, block.len,
        ));
        self.total += block.len;
        Ok(())
    }
}

fn deflate_block(data: &[u8], level: u32) -> io::Result<Block> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let mut deflated = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        if deflated.len() == deflated.capacity() {
            deflated.reserve(data.len() / 4 + 64);
        }
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut deflated, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // Done once all input is in and the flush left spare output room.
        if c.total_in() as usize == data.len() && deflated.len() < deflated.capacity() {
            break;
        }
    }
    Ok(Block {
        deflated,
        crc: crc32fast::hash(data),
        len: data.len() as u64,
    })
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = GZIP_BLOCK - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == GZIP_BLOCK {
                self.dispatch()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Encoder<W> for ParallelGzip<W> {
    fn finish(mut self: Box<Self>) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.dispatch()?;
        }
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        self.out.write_all(&DEFLATE_FINAL_EMPTY)?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a counter pattern with some noise.
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 == 0 {
                    (x >> 16) as u8
                } else {
                    (i % 251) as u8
                }
            })
            .collect()
    }

    fn compress(c: Compression, data: &[u8], threads: usize) -> Vec<u8> {
        let mut enc = c.encoder(Vec::new(), c.default_level(), threads).unwrap();
        // Uneven write sizes must not change the output.
        for chunk in data.chunks(77_777) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_round_trips_through_a_standard_decoder() {
        for len in [
            0,
            1,
            GZIP_BLOCK - 1,
            GZIP_BLOCK,
            GZIP_BLOCK + 1,
            3 * GZIP_BLOCK + 4321,
        ] {
            let data = sample(len);
            let gz = compress(Compression::Gzip, &data, 2);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "length {len}");
            assert_eq!(&gz[..10], &GZIP_HEADER);
        }
    }

    #[test]
    fn gzip_output_does_not_depend_on_thread_count() {
        let data = sample(5 * GZIP_BLOCK + 17);
        assert_eq!(
            compress(Compression::Gzip, &data, 1),
            compress(Compression::Gzip, &data, 4)
        );
    }

    #[test]
    fn zstd_output_does_not_depend_on_thread_count() {
        let data = sample(9 * GZIP_BLOCK);
        let one = compress(Compression::Zstd, &data, 1);
        assert_eq!(one, compress(Compression::Zstd, &data, 2));
        assert_eq!(one, compress(Compression::Zstd, &data, 3));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }
}
