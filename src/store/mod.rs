//! The local store: pinned inputs, build outputs, layer blobs and the layer
//! cache.
//!
//! Layout (directory names carry a format version, so a future change moves
//! to a new directory instead of misreading an old one):
//!   store.lock                  shared by every mpsi using the store, exclusive for gc
//!   blobs/sha256/<hex>          layer blobs, written once, read-only (0444)
//!   layers-v1/<key>.json        layer recipe key -> LayerBlob and the blob's
//!                               file stamp (entry mtime = last use)
//!   inputs-v1/sha256/<hex>      pinned inputs (source tarballs), by content
//!   inputs-v1/partial/<hex>     interrupted downloads, resumed with Range
//!   builds-v1/<key>/            build outputs, by the hash of their inputs:
//!       out/                    the installed tree (DESTDIR), stripped
//!       debug/.build-id/xx/...  separated debug info, by ELF build-id
//!       meta.json               what went in (see build::Meta)
//!       manifest.json           every file of out/ and debug/ with its sha256
//!       build.log
//!   work-v1/<name>/             scratch space of a running build (fixed path)
//!   logs-v1/<key>.log           the log of the last failed build of a key
//!
//! Everything enters the store through a temporary name and a rename, after
//! it was verified: a killed process leaves at most a temporary file or a
//! work directory, never a wrong entry under a real name. Temporary names
//! start with `.mpsi-tmp-`; `store gc` leaves those younger than
//! `TEMP_GRACE` alone.
//!
//! Location: `--store`, else `$MPSI_STORE`, else `$XDG_CACHE_HOME/mpsi`,
//! else `~/.cache/mpsi`.

use crate::fsutil;
use crate::lock::{self, Input};
use crate::model::LayerBlob;
use crate::model::digest::{HashingWriter, hex_of};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tempfile::NamedTempFile;

const DIRS: [&str; 7] = [
    "blobs/sha256",
    "layers-v1",
    "inputs-v1/sha256",
    "inputs-v1/partial",
    "builds-v1",
    "work-v1",
    "logs-v1",
];

/// Temporary files and partial downloads younger than this are in use (or
/// about to be resumed): `store gc` leaves them alone.
pub const TEMP_GRACE: Duration = Duration::from_secs(3600);

pub struct Store {
    root: PathBuf,
    /// Shared for every command, exclusive for `store gc`: gc never
    /// removes what a running assemble or fetch is writing or reading.
    _lock: fsutil::LockGuard,
    exclusive: bool,
}

/// `store gc` found another mpsi using the store.
#[derive(Debug, thiserror::Error)]
#[error(
    "the store {} is in use by another mpsi (an assemble, build or fetch); run `mpsi store gc` again when it has finished",
    root.display()
)]
pub struct StoreBusy {
    pub root: PathBuf,
}

/// What a store blob's file looked like right after the store wrote it. A
/// layer-cache hit requires the blob to look the same still (size, inode,
/// mtime to the nanosecond): a stat instead of a re-hash, and any write to
/// the blob or its replacement makes it a miss (the layer is written again;
/// `commit_blob` dates blobs a second back so that even a write right after
/// it changes the mtime). `mpsi store verify` re-hashes everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub ino: u64,
    pub mtime_ns: i64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            size: meta.len(),
            ino: meta.ino(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
        }
    }
}

/// A layer-cache entry (`layers-v1/<key>.json`).
#[derive(Serialize, Deserialize)]
struct CacheEntry {
    #[serde(flatten)]
    blob: LayerBlob,
    stamp: FileStamp,
}

/// Content that does not match its pin. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what}: expected sha256 {expected} ({expected_size} bytes), got sha256 {actual} ({actual_size} bytes){}; nothing was stored",
    if source_hint.is_empty() { String::new() } else { format!(" from {source_hint}") }
)]
pub struct IntegrityError {
    pub what: String,
    pub source_hint: String,
    pub expected: String,
    pub expected_size: u64,
    pub actual: String,
    pub actual_size: u64,
}

impl Store {
    /// Opens (creating) the store, sharing it with other mpsi processes;
    /// waits while a `store gc` runs.
    pub fn open(explicit: Option<&Path>) -> Result<Store> {
        let root = Self::create(explicit)?;
        let lock = fsutil::lock_shared(&root, "store")?;
        Ok(Store {
            root,
            _lock: lock,
            exclusive: false,
        })
    }

    /// Opens the store for `gc`: alone, or not at all (`StoreBusy`) rather
    /// than waiting for a build that may take an hour.
    pub fn open_exclusive(explicit: Option<&Path>) -> Result<Store> {
        let root = Self::create(explicit)?;
        match fsutil::try_lock(&root, "store")? {
            Some(lock) => Ok(Store {
                root,
                _lock: lock,
                exclusive: true,
            }),
            None => Err(StoreBusy { root }.into()),
        }
    }

    fn create(explicit: Option<&Path>) -> Result<PathBuf> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => default_root()?,
        };
        for d in DIRS {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating the store at {}", root.display()))?;
        }
        Ok(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(hex_of(digest)?))
    }

    /// The cached layer for `key`, if its blob is still the file the store
    /// wrote (see `FileStamp`).
    pub fn cached_layer(&self, key: &str) -> Option<LayerBlob> {
        let path = self.root.join("layers-v1").join(format!("{key}.json"));
        let bytes = fs::read(&path).ok()?;
        // Entries without a stamp (from an older mpsi) are misses.
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        let meta = fs::metadata(self.blob_path(&entry.blob.digest).ok()?).ok()?;
        if FileStamp::of(&meta) != entry.stamp || meta.len() != entry.blob.size {
            return None;
        }
        // The entry's mtime records its last use, for `store gc --max-age`.
        let _ = fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Some(entry.blob)
    }

    /// Puts a finished layer blob (written to `tmp`, hashed on the way) in
    /// place, read-only. It replaces a blob of that name: the new bytes are
    /// known good, the old file may have been changed.
    pub fn commit_blob(&self, tmp: NamedTempFile, digest: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let f = tmp.as_file();
        f.set_modified(settled_mtime())
            .and_then(|()| f.set_permissions(fs::Permissions::from_mode(0o444)))
            .with_context(|| format!("making {} read-only", tmp.path().display()))?;
        fsutil::commit(tmp, &self.blob_path(digest)?)
    }

    /// Records `key` -> `blob`, with the stamp of the blob's file as it is
    /// now (just after `commit_blob`).
    pub fn remember_layer(&self, key: &str, blob: &LayerBlob) -> Result<()> {
        let blob_path = self.blob_path(&blob.digest)?;
        let meta =
            fs::metadata(&blob_path).with_context(|| format!("reading {}", blob_path.display()))?;
        let entry = CacheEntry {
            blob: blob.clone(),
            stamp: FileStamp::of(&meta),
        };
        let path = self.root.join("layers-v1").join(format!("{key}.json"));
        fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&entry)?)
    }

    // ---- inputs ---------------------------------------------------------

    pub fn input_path(&self, sha256_hex: &str) -> Result<PathBuf> {
        anyhow::ensure!(lock::is_hex64(sha256_hex), "not a sha256: {sha256_hex:?}");
        Ok(self.root.join("inputs-v1/sha256").join(sha256_hex))
    }

    /// The stored file of a pinned input, if present with the pinned size.
    /// (Its content was verified when it entered the store; `store verify`
    /// re-checks it.)
    pub fn input(&self, input: &Input) -> Option<PathBuf> {
        let p = self.input_path(&input.sha256).ok()?;
        fs::metadata(&p)
            .is_ok_and(|m| m.is_file() && m.len() == input.size)
            .then_some(p)
    }

    /// Where an interrupted download of `input` is kept for resuming.
    pub fn partial_path(&self, input: &Input) -> Result<PathBuf> {
        anyhow::ensure!(
            lock::is_hex64(&input.sha256),
            "input {:?} is not pinned (sha256 is empty); pin it with `mpsi lock --from DIR`",
            input.name
        );
        Ok(self.root.join("inputs-v1/partial").join(&input.sha256))
    }

    /// A writer that stores `input` only if the bytes match its pin.
    pub fn input_writer(&self, input: &Input) -> Result<InputWriter> {
        let dest = self.input_path(&input.sha256).with_context(|| {
            format!(
                "input {:?} is not pinned; pin it with `mpsi lock --from DIR`",
                input.name
            )
        })?;
        let tmp = fsutil::temp_in(&self.root.join("inputs-v1/sha256"))?;
        let file = tmp.reopen()?;
        Ok(InputWriter {
            tmp,
            w: HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file)),
            dest,
            input: input.clone(),
        })
    }

    // ---- builds ---------------------------------------------------------

    pub fn build_path(&self, key: &str) -> PathBuf {
        self.root.join("builds-v1").join(key)
    }

    /// A finished build output (it only ever appears whole, by rename, so
    /// the directory's presence is the test; its `meta.json` is read by the
    /// caller, which fails if it cannot be).
    pub fn build(&self, key: &str) -> Option<PathBuf> {
        let p = self.build_path(key);
        p.is_dir().then_some(p)
    }

    pub fn builds_dir(&self) -> PathBuf {
        self.root.join("builds-v1")
    }

    pub fn work_dir(&self, name: &str) -> PathBuf {
        self.root.join("work-v1").join(name)
    }

    pub fn failed_log_path(&self, key: &str) -> PathBuf {
        self.root.join("logs-v1").join(format!("{key}.log"))
    }

    // ---- ls / verify / gc ----------------------------------------------

    pub fn list(&self) -> Result<Listing> {
        let mut l = Listing {
            root: self.root.clone(),
            ..Default::default()
        };
        for (name, meta) in read_dir_sorted(&self.root.join("inputs-v1/sha256"))? {
            if meta.is_file() && lock::is_hex64(&name) {
                l.inputs.push(Item {
                    id: name,
                    size: meta.len(),
                    detail: String::new(),
                });
            }
        }
        for (name, meta) in read_dir_sorted(&self.builds_dir())? {
            if !meta.is_dir() || name.starts_with('.') {
                continue;
            }
            let dir = self.builds_dir().join(&name);
            let detail = fs::read(dir.join("meta.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .map_or_else(
                    || "(meta.json unreadable: see `mpsi store verify`)".into(),
                    |m| {
                        format!(
                            "{} {}{}",
                            m["name"].as_str().unwrap_or("?"),
                            m["version"].as_str().unwrap_or(""),
                            if m["hermetic"] != true {
                                " (non-hermetic: built with network)"
                            } else {
                                ""
                            }
                        )
                    },
                );
            l.builds.push(Item {
                id: name,
                size: du(&dir),
                detail,
            });
        }
        for (name, meta) in read_dir_sorted(&self.blobs_dir())? {
            if meta.is_file() && lock::is_hex64(&name) {
                l.blobs.push(Item {
                    id: name,
                    size: meta.len(),
                    detail: String::new(),
                });
            }
        }
        l.layer_entries = read_dir_sorted(&self.root.join("layers-v1"))?
            .iter()
            .filter(|(n, _)| n.ends_with(".json"))
            .count();
        Ok(l)
    }

    /// Re-hashes every input, layer blob and build output file; each bad
    /// one is named with what is wrong and what to do.
    pub fn verify(&self) -> Result<Verification> {
        let mut v = Verification::default();
        verify_hashed(
            &self.root.join("inputs-v1/sha256"),
            "input",
            "delete it and run `mpsi fetch` again",
            &mut v,
        )?;
        verify_hashed(
            &self.blobs_dir(),
            "layer blob",
            "delete it (the next assemble writes it again)",
            &mut v,
        )?;
        for (name, meta) in read_dir_sorted(&self.builds_dir())? {
            if meta.is_dir() && !name.starts_with('.') {
                verify_build(&self.builds_dir().join(&name), &name, &mut v)?;
            }
        }
        Ok(v)
    }

    /// Removes what nothing needs: inputs not in `keep_inputs`, builds not in
    /// `keep_builds`, layer-cache entries unused for `max_age` and blobs no
    /// cache entry names, interrupted downloads, idle work directories.
    /// Temporary files and partial downloads younger than `TEMP_GRACE`
    /// stay. Needs the store opened with `open_exclusive`.
    pub fn gc(
        &self,
        keep_inputs: &BTreeSet<String>,
        keep_builds: &BTreeSet<String>,
        max_age: Duration,
        dry_run: bool,
    ) -> Result<Collection> {
        anyhow::ensure!(
            self.exclusive,
            "store gc needs the store opened exclusively"
        );
        let mut c = Collection {
            dry_run,
            ..Default::default()
        };
        let inputs = self.root.join("inputs-v1/sha256");
        c.sweep(&inputs, dry_run, |name| keep_inputs.contains(name))?;
        // Every partial download is a temporary: kept while fresh (for
        // resuming), removed when old.
        c.sweep(&self.root.join("inputs-v1/partial"), dry_run, |_| false)?;
        c.sweep(&self.builds_dir(), dry_run, |name| {
            keep_builds.contains(name)
        })?;
        let work = self.root.join("work-v1");
        for (name, meta) in read_dir_sorted(&work)? {
            // A running build holds its lock; its work directory stays.
            if meta.is_dir()
                && let Some(_guard) = fsutil::try_lock(&work, &name)?
            {
                c.remove(work.join(&name), dry_run)?;
            }
        }
        c.sweep(&self.root.join("logs-v1"), dry_run, |name| {
            keep_builds.contains(name.trim_end_matches(".log"))
        })?;
        let live_blobs = self.live_blobs(max_age, &mut c, dry_run)?;
        c.sweep(&self.blobs_dir(), dry_run, |name| live_blobs.contains(name))?;
        Ok(c)
    }

    /// The blobs of layer-cache entries used within `max_age`; older or
    /// unreadable entries are removed.
    fn live_blobs(
        &self,
        max_age: Duration,
        c: &mut Collection,
        dry_run: bool,
    ) -> Result<BTreeSet<String>> {
        let dir = self.root.join("layers-v1");
        let mut live = BTreeSet::new();
        for (name, meta) in read_dir_sorted(&dir)? {
            let path = dir.join(&name);
            if is_temp(&name) && age(&meta) < TEMP_GRACE {
                c.fresh.push(path.display().to_string());
                continue;
            }
            let blob: Option<LayerBlob> = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match blob {
                Some(b) if age(&meta) <= max_age => {
                    live.insert(hex_of(&b.digest).unwrap_or("").to_string());
                }
                _ => c.remove(path, dry_run)?,
            }
        }
        Ok(live)
    }
}

/// The mtime a blob gets when it is committed: a whole second before now.
/// File times come from a coarse clock (a few milliseconds), so a write
/// just after the commit could leave a "now" mtime as it was (git's
/// "racily clean" problem) and pass the stamp check; any later write sets
/// a time after this one.
fn settled_mtime() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs().saturating_sub(1))
}

/// Whether `name` is a temporary file (`fsutil::temp_in`).
fn is_temp(name: &str) -> bool {
    name.starts_with(".mpsi-tmp-")
}

/// Time since the last write (zero if unknown or in the future).
fn age(meta: &fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

/// Re-hashes every file named by its sha256 in `dir`.
fn verify_hashed(dir: &Path, what: &str, fix: &str, v: &mut Verification) -> Result<()> {
    for (name, meta) in read_dir_sorted(dir)? {
        if !meta.is_file() || !lock::is_hex64(&name) {
            continue;
        }
        let path = dir.join(&name);
        v.checked += 1;
        match lock::hash_file(&path) {
            Ok((sha, _)) if sha == name => {}
            Ok((sha, _)) => v.bad.push(format!(
                "{what} {}: content has sha256 {sha}; {fix}",
                path.display()
            )),
            Err(e) => v.bad.push(format!(
                "{what} {}: cannot be read ({e}); {fix}",
                path.display()
            )),
        }
    }
    Ok(())
}

/// Checks a build output against its manifest.json, and that its
/// meta.json is readable and names it.
fn verify_build(dir: &Path, key: &str, v: &mut Verification) -> Result<()> {
    let meta: Option<serde_json::Value> = fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if meta.as_ref().is_none_or(|m| m["key"] != key) {
        v.bad.push(format!(
            "build {}: meta.json is missing, unreadable or names another build; delete the directory and assemble again",
            dir.display()
        ));
    }
    let manifest: Manifest = match fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(m) => m,
        None => {
            v.bad.push(format!(
                "build {}: manifest.json is missing or unreadable; delete the directory and assemble again",
                dir.display()
            ));
            return Ok(());
        }
    };
    let now = Manifest::of(dir)?;
    v.checked += now.files.len();
    if now != manifest {
        let old: BTreeSet<_> = manifest.files.iter().collect();
        let new: BTreeSet<_> = now.files.iter().collect();
        let diff: Vec<String> = old
            .symmetric_difference(&new)
            .take(5)
            .map(|f| f.path.clone())
            .collect();
        v.bad.push(format!(
            "build {}: differs from its manifest (e.g. {}); delete the directory and assemble again",
            dir.display(),
            diff.join(", ")
        ));
    }
    Ok(())
}

/// Streams an input into a temporary file beside its final place; `finish`
/// renames it to its hash only if size and sha256 match the pin.
pub struct InputWriter {
    tmp: NamedTempFile,
    w: HashingWriter<io::BufWriter<fs::File>>,
    dest: PathBuf,
    input: Input,
}

impl Write for InputWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl InputWriter {
    /// Verifies and commits; `from` names where the bytes came from, for the error.
    pub fn finish(self, from: &str) -> Result<PathBuf> {
        let (w, digest, size) = self.w.finish();
        w.into_inner().map_err(|e| e.into_error())?;
        let actual = digest.trim_start_matches("sha256:").to_string();
        if actual != self.input.sha256 || size != self.input.size {
            return Err(IntegrityError {
                what: format!("input {:?} ({})", self.input.name, self.input.file),
                source_hint: from.to_string(),
                expected: self.input.sha256.clone(),
                expected_size: self.input.size,
                actual,
                actual_size: size,
            }
            .into());
        }
        fsutil::commit(self.tmp, &self.dest)?;
        Ok(self.dest)
    }
}

/// Every file of a build output with its type and content hash, so
/// `store verify` can tell that nothing changed after the build.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    /// `d`, `f`, `x` (executable file) or `l`.
    pub kind: char,
    /// sha256 for files, the target for links, empty for directories.
    pub value: String,
}

impl Manifest {
    /// Lists `out/` and `debug/` under a build directory.
    pub fn of(dir: &Path) -> Result<Manifest> {
        use std::os::unix::fs::PermissionsExt;
        let mut files = Vec::new();
        for top in ["out", "debug"] {
            let root = dir.join(top);
            if !root.exists() {
                continue;
            }
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for (name, meta) in read_dir_sorted(&d)? {
                    let p = d.join(&name);
                    let rel = p
                        .strip_prefix(dir)
                        .expect("under dir")
                        .to_string_lossy()
                        .into_owned();
                    let (kind, value) = if meta.file_type().is_symlink() {
                        ('l', fs::read_link(&p)?.to_string_lossy().into_owned())
                    } else if meta.is_dir() {
                        stack.push(p.clone());
                        ('d', String::new())
                    } else {
                        let exec = meta.permissions().mode() & 0o111 != 0;
                        (
                            if exec { 'x' } else { 'f' },
                            lock::hash_file(&p)
                                .with_context(|| format!("hashing {}", p.display()))?
                                .0,
                        )
                    };
                    files.push(ManifestEntry {
                        path: rel,
                        kind,
                        value,
                    });
                }
            }
        }
        files.sort();
        Ok(Manifest { files })
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Listing {
    pub root: PathBuf,
    pub inputs: Vec<Item>,
    pub builds: Vec<Item>,
    pub blobs: Vec<Item>,
    pub layer_entries: usize,
}

#[derive(Debug, Serialize)]
pub struct Item {
    pub id: String,
    pub size: u64,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Verification {
    pub checked: usize,
    pub bad: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Collection {
    pub dry_run: bool,
    pub removed: Vec<String>,
    pub bytes: u64,
    /// Temporaries left alone because they are younger than `TEMP_GRACE`.
    pub fresh: Vec<String>,
}

impl Collection {
    fn remove(&mut self, path: PathBuf, dry_run: bool) -> Result<()> {
        self.bytes += du(&path);
        self.removed.push(path.display().to_string());
        if !dry_run {
            remove_any(&path)?;
        }
        Ok(())
    }

    /// Removes every entry of `dir` that `keep` does not accept, except
    /// fresh temporaries (in `inputs-v1/partial`, every entry is one).
    fn sweep(&mut self, dir: &Path, dry_run: bool, keep: impl Fn(&str) -> bool) -> Result<()> {
        let partial = dir.ends_with("inputs-v1/partial");
        for (name, meta) in read_dir_sorted(dir)? {
            let path = dir.join(&name);
            let temp = partial || is_temp(&name);
            if temp && age(&meta) < TEMP_GRACE {
                self.fresh.push(path.display().to_string());
            } else if temp || !keep(&name) {
                self.remove(path, dry_run)?;
            }
        }
        Ok(())
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, fs::Metadata)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let meta = fs::symlink_metadata(e.path())?;
        out.push((e.file_name().to_string_lossy().into_owned(), meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Bytes on disk under `path` (files only, not following links).
pub fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    let mut total = meta.blocks() * 512;
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            total += du(&e.path());
        }
    }
    total
}

/// Removes a file or a whole tree, making read-only directories writable
/// first (build outputs are read-only).
pub fn remove_any(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    };
    if meta.is_dir() {
        make_writable(path);
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
    } else {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

fn default_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MPSI_STORE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p).join("mpsi"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache/mpsi")),
        None => anyhow::bail!(
            "no store location: set MPSI_STORE (or HOME / XDG_CACHE_HOME), or pass --store DIR"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(data: &[u8]) -> Input {
        let (sha, size) = {
            let d = crate::model::digest::sha256_digest(data);
            (
                d.trim_start_matches("sha256:").to_string(),
                data.len() as u64,
            )
        };
        Input {
            name: "x".into(),
            file: "x.tar.gz".into(),
            version: None,
            size,
            sha256: sha,
            urls: vec![],
        }
    }

    #[test]
    fn inputs_enter_only_when_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(Some(tmp.path())).unwrap();
        let good = input(b"hello");
        let mut w = store.input_writer(&good).unwrap();
        w.write_all(b"hello").unwrap();
        let p = w.finish("test").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(store.input(&good), Some(p));

        let other = input(b"world");
        let mut w = store.input_writer(&other).unwrap();
        w.write_all(b"w0rld").unwrap();
        let e = w.finish("test").unwrap_err();
        let ie = e.downcast_ref::<IntegrityError>().unwrap();
        assert_eq!(ie.expected, other.sha256);
        assert!(store.input(&other).is_none());
        // Only the good input is in the store, no temp files left.
        assert_eq!(
            fs::read_dir(tmp.path().join("inputs-v1/sha256"))
                .unwrap()
                .count(),
            1
        );
        assert!(store.verify().unwrap().bad.is_empty());
        fs::write(store.input_path(&good.sha256).unwrap(), b"HELLO").unwrap();
        assert_eq!(store.verify().unwrap().bad.len(), 1);
    }

    #[test]
    fn gc_keeps_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open_exclusive(Some(tmp.path())).unwrap();
        for data in [&b"keep"[..], b"drop"] {
            let i = input(data);
            let mut w = store.input_writer(&i).unwrap();
            w.write_all(data).unwrap();
            w.finish("t").unwrap();
        }
        fs::create_dir_all(store.build_path("k1").join("out")).unwrap();
        fs::create_dir_all(store.build_path("k2").join("out")).unwrap();
        let keep_in: BTreeSet<String> = [input(b"keep").sha256].into();
        let keep_b: BTreeSet<String> = ["k1".to_string()].into();
        let c = store
            .gc(&keep_in, &keep_b, Duration::from_secs(3600), true)
            .unwrap();
        assert_eq!(c.removed.len(), 2);
        assert!(store.build_path("k2").exists(), "dry run removes nothing");
        store
            .gc(&keep_in, &keep_b, Duration::from_secs(3600), false)
            .unwrap();
        assert!(!store.build_path("k2").exists());
        assert!(store.build_path("k1").exists());
        assert!(store.input(&input(b"keep")).is_some());
        assert!(store.input(&input(b"drop")).is_none());
    }

    fn blob_of(data: &[u8]) -> LayerBlob {
        LayerBlob {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: crate::model::digest::sha256_digest(data),
            size: data.len() as u64,
            diff_id: crate::model::digest::sha256_digest(data),
            uncompressed_size: data.len() as u64,
            entries: 0,
        }
    }

    #[test]
    fn a_cache_hit_needs_the_blob_as_the_store_wrote_it() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(Some(tmp.path())).unwrap();
        let blob = blob_of(b"layer bytes");
        let mut t = fsutil::temp_in(&store.blobs_dir()).unwrap();
        t.write_all(b"layer bytes").unwrap();
        store.commit_blob(t, &blob.digest).unwrap();
        store.remember_layer("k", &blob).unwrap();
        let path = store.blob_path(&blob.digest).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "store blobs are read-only");
        assert_eq!(store.cached_layer("k"), Some(blob.clone()));

        // An edit in place, same size: a miss.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = fs::File::options().write(true).open(&path).unwrap();
        f.write_all(b"LAYER").unwrap();
        drop(f);
        assert_eq!(fs::metadata(&path).unwrap().len(), blob.size);
        assert_eq!(store.cached_layer("k"), None);
        assert_eq!(store.verify().unwrap().bad.len(), 1);

        // Written again: a hit again, and verify is clean.
        let mut t = fsutil::temp_in(&store.blobs_dir()).unwrap();
        t.write_all(b"layer bytes").unwrap();
        store.commit_blob(t, &blob.digest).unwrap();
        store.remember_layer("k", &blob).unwrap();
        assert_eq!(store.cached_layer("k"), Some(blob));
        assert!(store.verify().unwrap().bad.is_empty());

        // An entry without a stamp (an older mpsi's) is a miss.
        fs::write(
            tmp.path().join("layers-v1/old.json"),
            serde_json::to_vec(&blob_of(b"layer bytes")).unwrap(),
        )
        .unwrap();
        assert_eq!(store.cached_layer("old"), None);
    }

    #[test]
    fn gc_leaves_fresh_temporaries_and_needs_the_store_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let user = Store::open(Some(tmp.path())).unwrap();
        let busy = Store::open_exclusive(Some(tmp.path())).err().unwrap();
        assert!(busy.is::<StoreBusy>(), "{busy:#}");
        drop(user);
        let store = Store::open_exclusive(Some(tmp.path())).unwrap();
        assert!(Store::open_exclusive(Some(tmp.path())).is_err());
        let hex = "ab".repeat(32);
        let old = SystemTime::now() - 2 * TEMP_GRACE;
        let mut fresh = Vec::new();
        let mut stale = Vec::new();
        for dir in ["blobs/sha256", "layers-v1", "inputs-v1/sha256"] {
            for (name, list) in [(".mpsi-tmp-new", &mut fresh), (".mpsi-tmp-old", &mut stale)] {
                let p = tmp.path().join(dir).join(name);
                fs::write(&p, b"in flight").unwrap();
                list.push(p);
            }
        }
        for (name, list) in [(hex.as_str(), &mut fresh), ("0123", &mut stale)] {
            let p = tmp.path().join("inputs-v1/partial").join(name);
            fs::write(&p, b"half a download").unwrap();
            list.push(p);
        }
        for p in &stale {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let c = store
            .gc(
                &BTreeSet::new(),
                &BTreeSet::new(),
                Duration::from_secs(3600),
                false,
            )
            .unwrap();
        for p in &fresh {
            assert!(p.exists(), "{} was removed: {c:?}", p.display());
        }
        for p in &stale {
            assert!(!p.exists(), "{} was kept: {c:?}", p.display());
        }
        assert_eq!(c.fresh.len(), fresh.len());
    }
}
