//! SHA-256 digests and a writer that hashes what passes through it.
//!
//! Every blob identity in mpsi (layer diff_id, compressed digest, config,
//! manifest) comes out of a `HashingWriter` on the one streaming pass that
//! writes the bytes, so nothing is ever read back just to hash it.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// `sha256:<hex>` of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Hex part of a `sha256:<hex>` digest, checked, so it is safe to use as a
/// file name.
pub fn hex_of(digest: &str) -> io::Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(h)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a sha256 digest: {digest:?}"),
        )),
    }
}

/// Passes writes through to `inner`, hashing and counting exactly the bytes
/// that `inner` accepted.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads through to `inner`, hashing what was read.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_of_empty_input() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn writer_and_slice_agree() {
        let data = b"mpsi layer bytes".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (inner, digest, n) = w.finish();
        assert_eq!(inner, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(digest, sha256_digest(&data));
    }

    #[test]
    fn hex_of_rejects_path_tricks() {
        assert!(hex_of("sha256:../../etc/passwd").is_err());
        assert!(hex_of("md5:abc").is_err());
        assert!(hex_of(&sha256_digest(b"x")).is_ok());
    }
}
