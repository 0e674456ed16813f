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

/// Copies `src` to `dest` through a temporary file (so `dest` is absent or
/// whole), with `mode` and `src`'s mtime. Never a hard link: the copy is a
/// separate inode, so writing to one never changes the other. `fs::copy`
/// uses copy_file_range on Linux, which shares extents (a reflink) where the
/// filesystem can (Btrfs, XFS) and copies in the kernel elsewhere.
pub fn copy_file(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_dir(dest);
    let src_meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let tmp = temp_in(dir)?;
    fs::copy(src, tmp.path())
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    let f = tmp.as_file();
    f.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.set_modified(src_meta.modified()?))
        .with_context(|| format!("setting mode and mtime of {}", tmp.path().display()))?;
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
    flock_wait(dir, name, libc::LOCK_EX)
}

/// Takes the lock shared with other shared holders, waiting for an
/// exclusive holder to finish.
pub fn lock_shared(dir: &Path, name: &str) -> Result<LockGuard> {
    flock_wait(dir, name, libc::LOCK_SH)
}

fn flock_wait(dir: &Path, name: &str, how: libc::c_int) -> Result<LockGuard> {
    use std::os::fd::AsRawFd;
    let file = lock_file(dir, name)?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), how) } != 0 {
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
