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
    sync_dir(parent_dir(dest))?;
    Ok(())
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(dest);
    let mut tmp = temp_in(dir)?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    commit(tmp, dest)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
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

/// An exclusive advisory lock (flock) on `<dir>/<name>.lock`, released when
/// dropped or when the process dies (so a killed process never leaves a
/// stale lock behind).
pub struct LockGuard {
    _file: fs::File,
}

fn lock_file(dir: &Path, name: &str) -> Result<fs::File> {
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))
}

/// Takes the lock, waiting for another holder to finish.
pub fn lock(dir: &Path, name: &str) -> Result<LockGuard> {
    use std::os::fd::AsRawFd;
    let file = lock_file(dir, name)?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("locking {}/{name}.lock", dir.display()));
    }
    Ok(LockGuard { _file: file })
}

/// Takes the lock if nobody holds it.
pub fn try_lock(dir: &Path, name: &str) -> Result<Option<LockGuard>> {
    use std::os::fd::AsRawFd;
    let file = lock_file(dir, name)?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("locking {}/{name}.lock", dir.display()));
    }
    Ok(Some(LockGuard { _file: file }))
}
