//! Atomic file creation: write to a temporary file beside the target, fsync,
//! rename. A reader (or an interrupted run) sees the old file or the whole
//! new one, never a prefix.

use anyhow::{Context, Result};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use tempfile::NamedTempFile;

/// A temporary file in `dir` that becomes `dest` on `commit`.
pub fn temp_in(dir: &Path) -> Result<NamedTempFile> {
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(".mpsi-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// fsyncs and renames a finished temporary file onto `dest`.
pub fn commit(tmp: NamedTempFile, dest: &Path) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", dest.display()))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = temp_in(dir)?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    commit(tmp, dest)
}

/// Makes a rename inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    match fs::File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        // Some filesystems refuse fsync on directories; the rename is still atomic.
        Err(e)
            if e.kind() == io::ErrorKind::InvalidInput
                || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("syncing directory {}", dir.display())),
    }
}

/// Puts `src` at `dest` (same content, read-only blob): a hard link when both
/// are on one filesystem, else a copy through a temporary file.
pub fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    if fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    if dest.exists() {
        return Ok(());
    }
    let mut tmp = temp_in(dir)?;
    let mut from = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    io::copy(&mut from, tmp.as_file_mut())
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    commit(tmp, dest)
}
