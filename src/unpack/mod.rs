//! Unpacking a source tarball beneath a directory, for real.
//!
//! Every entry is created relative to a directory handle, one path
//! component at a time, with `O_NOFOLLOW`: no symlink is ever followed
//! while extracting, neither an intermediate component nor the last one,
//! so a link the archive made earlier cannot carry a later entry out of the
//! tree (nor elsewhere inside it). The calls are `openat`/`mkdirat`/
//! `symlinkat`/`linkat` through rustix (already in the tree through
//! tempfile; safe wrappers, typed errno): they work on every Linux kernel,
//! unlike `openat2(RESOLVE_BENEATH)` (5.6+, and it covers opening only, not
//! mkdir, symlink or link), and unlike cap-std they never follow a link
//! even one that stays inside the sandbox.
//!
//! Symlinks are created but judged too, so that the build cannot be led out
//! of the tree by following them later: see [`check_symlink`].

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Why an entry is refused; the caller adds the entry's name.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unsafe(String);

fn refuse<T>(why: impl Into<String>) -> Result<T> {
    Err(Unsafe(why.into()).into())
}

/// Unpacks a (gzip-compressed or plain) tarball into `dest`, dropping the
/// single top-level directory if every entry is under one. Rejects
/// absolute paths, `..`, entries through or over links, links that could
/// lead outside the tree, and device, FIFO or other special entries.
pub fn unpack(tarball: &Path, dest: &Path) -> Result<()> {
    let strip = single_top_dir(tarball)?;
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    // `dest` is the caller's own path (it may pass through links); only
    // what lies beneath it is the archive's.
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = rustix::fs::open(dest, flags, Mode::empty())
        .with_context(|| format!("opening {}", dest.display()))?;
    let mut ar = tar::Archive::new(open_maybe_gz(tarball)?);
    let mut count = 0usize;
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    for entry in ar.entries().context("reading the tarball")? {
        let mut entry = entry.context("reading the tarball")?;
        let raw = entry.path().context("reading the tarball")?.into_owned();
        let made = extract(&root, &mut entry, &raw, strip.as_deref()).map_err(|e| {
            let shown = raw.display();
            match e.downcast_ref::<Unsafe>() {
                Some(why) => anyhow::anyhow!("unsafe tarball entry {shown:?}: {why}"),
                None => e.context(format!("extracting tarball entry {shown:?}")),
            }
        })?;
        match made {
            Made::Nothing => {}
            Made::Dir(rel, mtime) => dirs.push((rel, mtime)),
            Made::File => count += 1,
        }
    }
    if count == 0 {
        anyhow::bail!("the tarball holds no files");
    }
    // Directory mtimes last (creating files in them moved them).
    for (rel, mtime) in dirs.iter().rev() {
        let dir = walk(&root, rel, Walk::Existing)?;
        fs::File::from(dir)
            .set_modified(UNIX_EPOCH + Duration::from_secs(*mtime))
            .with_context(|| format!("setting the mtime of {}", dest.join(rel).display()))?;
    }
    Ok(())
}

/// What one entry made.
enum Made {
    Nothing,
    Dir(PathBuf, u64),
    File,
}

/// Creates one entry beneath `root`.
fn extract(
    root: &OwnedFd,
    entry: &mut tar::Entry<'_, Box<dyn Read>>,
    raw: &Path,
    strip: Option<&str>,
) -> Result<Made> {
    use tar::EntryType as T;
    let kind = entry.header().entry_type();
    if matches!(
        kind,
        T::XHeader | T::XGlobalHeader | T::GNULongName | T::GNULongLink
    ) {
        return Ok(Made::Nothing);
    }
    let Some(rel) = safe_rel(raw, strip)? else {
        return Ok(Made::Nothing); // the stripped top directory itself
    };
    let (parent, name) = split(&rel);
    let mtime = entry.header().mtime().unwrap_or(0);
    match kind {
        T::Directory => {
            let dir = walk(root, &rel, Walk::Create)?;
            fs::File::from(dir).set_permissions(fs::Permissions::from_mode(0o755))?;
            return Ok(Made::Dir(rel, mtime));
        }
        T::Regular | T::Continuous | T::GNUSparse => {
            let mode = entry.header().mode().unwrap_or(0o644);
            let dir = walk(root, parent, Walk::Create)?;
            write_file(&dir, name, entry, mode, mtime)?;
        }
        T::Symlink => {
            let target = entry.link_name()?.context("symlink without a target")?;
            check_symlink(&rel, &target)?;
            let dir = walk(root, parent, Walk::Create)?;
            rustix::fs::symlinkat(&*target, &dir, name).map_err(|e| exists(e, "symlink"))?;
        }
        T::Link => {
            let target = entry.link_name()?.context("hard link without a target")?;
            hard_link(root, &target, strip, parent, name)?;
        }
        T::Char => refuse("a character device does not belong in a source tree")?,
        T::Block => refuse("a block device does not belong in a source tree")?,
        T::Fifo => refuse("a FIFO does not belong in a source tree")?,
        other => refuse(format!("{other:?} entries do not belong in a source tree"))?,
    }
    Ok(Made::File)
}

/// Opening a directory: of an earlier entry only, or made when missing.
#[derive(Clone, Copy, PartialEq)]
enum Walk {
    Existing,
    Create,
}

/// Flags that open a directory and fail on a symlink (ELOOP) or a
/// non-directory (ENOTDIR) instead of following or using it.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The directory at `rel` beneath `root`, each component opened with
/// `O_NOFOLLOW` from the one before (and made 0755 if missing and asked).
fn walk(root: &OwnedFd, rel: &Path, how: Walk) -> Result<OwnedFd> {
    let mut dir = rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty())?;
    let mut so_far = PathBuf::new();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return refuse("not a plain relative path"); // safe_rel keeps only names
        };
        so_far.push(name);
        dir = match rustix::fs::openat(&dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if how == Walk::Create => make_dir(&dir, name)?,
            Err(Errno::NOENT) => refuse(format!("{} is not in the tree", so_far.display()))?,
            Err(Errno::LOOP | Errno::NOTDIR) => refuse(format!(
                "{} is a symlink or a file, not a directory; nothing is made through it",
                so_far.display()
            ))?,
            Err(e) => Err(e).with_context(|| format!("opening {}", so_far.display()))?,
        };
    }
    Ok(dir)
}

/// A new directory (0755 whatever the umask), opened without following.
fn make_dir(parent: &OwnedFd, name: &OsStr) -> Result<OwnedFd> {
    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755))?;
    let fd = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
    Ok(fd)
}

/// A regular file, new (`O_EXCL`: never through or over an existing link),
/// 0644 or 0755, with the entry's mtime.
fn write_file(
    dir: &OwnedFd,
    name: &OsStr,
    data: &mut dyn Read,
    mode: u32,
    mtime: u64,
) -> Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| exists(e, "file"))?;
    let mut f = fs::File::from(fd);
    io::copy(data, &mut f)?;
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))?;
    Ok(())
}

/// A hard link to a regular file an earlier entry made beneath the root
/// (found without following links; `linkat` without `AT_SYMLINK_FOLLOW`
/// links the name itself, never what a link points to).
fn hard_link(
    root: &OwnedFd,
    target: &Path,
    strip: Option<&str>,
    parent: &Path,
    name: &OsStr,
) -> Result<()> {
    let shown = target.display();
    let trel = match safe_rel(target, strip) {
        Ok(Some(t)) => t,
        Ok(None) => return refuse("hard link to the top directory"),
        Err(e) => return refuse(format!("hard link to {shown}: {e}")),
    };
    let (tparent, tname) = split(&trel);
    let tdir =
        walk(root, tparent, Walk::Existing).map_err(|e| match e.downcast_ref::<Unsafe>() {
            Some(why) => Unsafe(format!("hard link to {shown}: {why}")).into(),
            None => e,
        })?;
    let st = match rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => {
            return refuse(format!("hard link to {shown}, which no earlier entry made"));
        }
        Err(e) => Err(e).with_context(|| format!("reading {shown}"))?,
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return refuse(format!(
            "hard link to {shown}, a {kind:?}, not a regular file"
        ));
    }
    let dir = walk(root, parent, Walk::Create)?;
    rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
        .map_err(|e| exists(e, "hard link"))
}

/// EEXIST as a refusal: an earlier entry made this name (maybe a link that
/// this one would otherwise replace or write through), other errors as is.
fn exists(e: Errno, what: &str) -> anyhow::Error {
    if e == Errno::EXIST {
        Unsafe(format!(
            "an earlier entry already made this path; a {what} is not made over it"
        ))
        .into()
    } else {
        anyhow::Error::new(io::Error::from(e)).context(format!("making the {what}"))
    }
}

/// A relative path's directory and last name (`rel` is never empty).
fn split(rel: &Path) -> (&Path, &OsStr) {
    let name = rel
        .file_name()
        .expect("safe_rel returns a non-empty path of names");
    (rel.parent().unwrap_or(Path::new("")), name)
}

/// Refuses a symlink the build could later follow out of the tree. Its
/// target must be relative, with `..` only at its start and no more of them
/// than the link's depth. Then every `..` is applied to one of the link's
/// own parent directories, which are real directories beneath the root
/// (entries are never made through links), and what follows are names
/// only, so following the link, or a chain of such links, stays inside.
/// A lexical check of `a/b/../c` alone is not enough: if `a/b` is itself a
/// link (`a/s -> ..` then `a/t -> s/../x`), its `..` climbs from where
/// `a/b` points, which can be the root.
fn check_symlink(rel: &Path, target: &Path) -> Result<()> {
    let shown = target.display();
    if target.as_os_str().is_empty() {
        return refuse("symlink with an empty target");
    }
    let depth = rel.components().count() - 1; // of the link's directory
    let (mut ups, mut named) = (0usize, false);
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return refuse(format!("symlink to the absolute path {shown}"));
            }
            Component::CurDir => {}
            Component::ParentDir if named => {
                return refuse(format!(
                    "symlink to {shown}: '..' after a name could leave the tree through another link"
                ));
            }
            Component::ParentDir => {
                ups += 1;
                if ups > depth {
                    return refuse(format!("symlink to {shown} leaves the tree"));
                }
            }
            Component::Normal(_) => named = true,
        }
    }
    Ok(())
}

fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    drop(f);
    let f = io::BufReader::with_capacity(1 << 20, fs::File::open(path)?);
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    })
}

/// The one top-level directory every entry is under, if there is one.
fn single_top_dir(tarball: &Path) -> Result<Option<String>> {
    let mut ar = tar::Archive::new(open_maybe_gz(tarball)?);
    let mut top: Option<String> = None;
    for entry in ar.entries().context("reading the tarball")? {
        let entry = entry.context("reading the tarball")?;
        let p = entry.path()?.into_owned();
        let mut comps = p.components().filter(|c| !matches!(c, Component::CurDir));
        let Some(Component::Normal(first)) = comps.next() else {
            return Ok(None);
        };
        let first = first.to_string_lossy().into_owned();
        let is_dir_entry = comps.next().is_none();
        if is_dir_entry && entry.header().entry_type() != tar::EntryType::Directory {
            return Ok(None); // a file at the top level
        }
        match &top {
            None => top = Some(first),
            Some(t) if *t == first => {}
            Some(_) => return Ok(None),
        }
    }
    Ok(top)
}

/// The entry's path relative to the tree, or None for the stripped top
/// directory; an error for absolute paths and `..`.
fn safe_rel(p: &Path, strip: Option<&str>) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    let mut first = true;
    for c in p.components() {
        match c {
            Component::Normal(n) => {
                if first && strip.is_some_and(|s| n == OsStr::new(s)) {
                    first = false;
                    continue;
                }
                first = false;
                out.push(n);
            }
            Component::CurDir => {}
            Component::ParentDir => return refuse("'..' in the path"),
            Component::RootDir | Component::Prefix(_) => return refuse("absolute path"),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;
    use tar::EntryType as T;

    type Case<'a> = &'a [(&'a str, T, &'a str)];

    fn tarball(entries: Case<'_>) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            // set_path refuses '..'; write the raw name like a hostile tar would.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if matches!(kind, T::Symlink | T::Link) {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.finish().unwrap();
        f
    }

    /// A temp dir holding the destination `root/` and, next to it, an empty
    /// sentinel `outside/` that hostile links aim at.
    struct Scene {
        tmp: tempfile::TempDir,
    }

    impl Scene {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir(tmp.path().join("root")).unwrap();
            fs::create_dir(tmp.path().join("outside")).unwrap();
            Scene { tmp }
        }

        fn root(&self) -> PathBuf {
            self.tmp.path().join("root")
        }

        /// Nothing was written outside `root/`.
        fn assert_contained(&self, what: &str) {
            let names: BTreeSet<_> = fs::read_dir(self.tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            let want: BTreeSet<_> = ["outside", "root"].map(String::from).into();
            assert_eq!(names, want, "{what}: a new path next to root/");
            let out = fs::read_dir(self.tmp.path().join("outside"))
                .unwrap()
                .count();
            assert_eq!(out, 0, "{what}: something was written in outside/");
        }
    }

    /// Unpacks `case` into a fresh root, expecting it refused with an error
    /// that names `entry`, and nothing written outside the root.
    fn refused(case: Case<'_>, entry: &str) -> Scene {
        let t = tarball(case);
        let s = Scene::new();
        let e = unpack(t.path(), &s.root()).expect_err(&format!("{case:?} was accepted"));
        let msg = format!("{e:#}");
        let want = format!("unsafe tarball entry {entry:?}: ");
        assert!(
            msg.starts_with(&want),
            "{case:?}: {msg:?} does not start with {want:?}"
        );
        s.assert_contained(&format!("{case:?}"));
        s
    }

    #[test]
    fn a_symlink_chain_cannot_lead_out() {
        // `a/s -> ..` is the root; `s/../x` climbs from there, out of it.
        refused(
            &[
                ("top/a/s", T::Symlink, ".."),
                ("top/a/t", T::Symlink, "s/../x"),
                ("top/a/t", T::Regular, "evil"),
            ],
            "top/a/t",
        );
        // Links that stay inside are still never followed while extracting.
        let s = refused(
            &[
                ("top/a/s", T::Symlink, ".."),
                ("top/a/s/x", T::Regular, "evil"),
            ],
            "top/a/s/x",
        );
        assert!(!s.root().join("x").exists());
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_is_refused() {
        refused(
            &[
                ("top/d/", T::Directory, ""),
                ("top/d", T::Symlink, "../outside"),
                ("top/d/f", T::Regular, "evil"),
            ],
            "top/d",
        );
        let s = refused(
            &[
                ("top/d/", T::Directory, ""),
                ("top/e/", T::Directory, ""),
                ("top/d", T::Symlink, "e"),
                ("top/d/f", T::Regular, "evil"),
            ],
            "top/d",
        );
        assert!(!s.root().join("e/f").exists());
    }

    #[test]
    fn hard_links_only_to_regular_files_beneath_the_root() {
        let cases: &[(Case<'_>, &str)] = &[
            // to a symlink
            (
                &[
                    ("top/f", T::Regular, "x"),
                    ("top/s", T::Symlink, "f"),
                    ("top/h", T::Link, "top/s"),
                ],
                "top/h",
            ),
            // outside, relative and absolute
            (
                &[("top/f", T::Regular, "x"), ("top/h", T::Link, "../x")],
                "top/h",
            ),
            (
                &[("top/f", T::Regular, "x"), ("top/h", T::Link, "top/../x")],
                "top/h",
            ),
            (
                &[
                    ("top/f", T::Regular, "x"),
                    ("top/h", T::Link, "/etc/passwd"),
                ],
                "top/h",
            ),
            // through a symlinked directory
            (
                &[
                    ("top/d/f", T::Regular, "x"),
                    ("top/l", T::Symlink, "d"),
                    ("top/h", T::Link, "top/l/f"),
                ],
                "top/h",
            ),
            // to a directory, and to nothing extracted
            (
                &[("top/d/", T::Directory, ""), ("top/h", T::Link, "top/d")],
                "top/h",
            ),
            (
                &[
                    ("top/f", T::Regular, "x"),
                    ("top/h", T::Link, "top/nothing"),
                ],
                "top/h",
            ),
        ];
        for (case, entry) in cases {
            refused(case, entry);
        }
    }

    #[test]
    fn entries_through_a_symlinked_parent_are_refused() {
        refused(
            &[
                ("top/l", T::Symlink, "../outside"),
                ("top/l/f", T::Regular, "evil"),
            ],
            "top/l",
        );
        let s = refused(
            &[
                ("top/d/", T::Directory, ""),
                ("top/l", T::Symlink, "d"),
                ("top/l/f", T::Regular, "evil"),
            ],
            "top/l/f",
        );
        assert!(!s.root().join("d/f").exists());
    }

    #[test]
    fn symlinks_that_could_lead_out_are_refused() {
        for (case, entry) in [
            (&[("top/l", T::Symlink, "/etc/passwd")][..], "top/l"),
            (&[("top/l", T::Symlink, "/")], "top/l"),
            (&[("top/a/l", T::Symlink, "../../x")], "top/a/l"),
            (&[("top/l", T::Symlink, "a/../../x")], "top/l"),
        ] {
            refused(case, entry);
        }
    }

    #[test]
    fn devices_and_fifos_are_refused() {
        for kind in [T::Char, T::Block, T::Fifo] {
            refused(
                &[("top/ok", T::Regular, "x"), ("top/dev", kind, "")],
                "top/dev",
            );
        }
    }

    #[test]
    fn names_that_climb_out_are_refused() {
        for name in [
            "top/a/./../../x",
            "top/a/b/../../../x",
            "top/../../x",
            "a/./../../x",
            "/etc/evil",
        ] {
            refused(
                &[("top/ok", T::Regular, "x"), (name, T::Regular, "evil")],
                name,
            );
        }
    }

    #[test]
    fn an_existing_symlink_is_never_written_through_or_replaced() {
        refused(
            &[
                ("top/l", T::Symlink, "../outside/f"),
                ("top/l", T::Regular, "evil"),
            ],
            "top/l",
        );
        for (kind, data) in [(T::Regular, "evil"), (T::Link, "top/f"), (T::Symlink, "f")] {
            let s = refused(
                &[
                    ("top/f", T::Regular, "x"),
                    ("top/l", T::Symlink, "g"),
                    ("top/l", kind, data),
                ],
                "top/l",
            );
            assert!(!s.root().join("g").exists());
        }
    }

    #[test]
    fn a_good_tree_unpacks() {
        let t = tarball(&[
            ("top/a/file", T::Regular, "hello"),
            ("top/a/link", T::Symlink, "file"),
            ("top/a/deep/up", T::Symlink, "../../b/up"),
            ("top/b/up", T::Symlink, "../a/./file"),
            ("top/hard", T::Link, "top/a/file"),
        ]);
        let s = Scene::new();
        unpack(t.path(), &s.root()).unwrap();
        let root = s.root();
        for p in ["a/file", "a/link", "a/deep/up", "b/up", "hard"] {
            assert_eq!(fs::read(root.join(p)).unwrap(), b"hello", "{p}");
        }
        let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
        assert_eq!(ino("hard"), ino("a/file"));
        s.assert_contained("the good tree");
    }

    #[test]
    fn modes_are_normalised_and_mtimes_kept() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (path, kind, mode, mtime) in [
            ("top/d/", T::Directory, 0o700, 1_000_000),
            ("top/d/run", T::Regular, 0o700, 2_000_000),
            ("top/d/doc", T::Regular, 0o600, 3_000_000),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_mtime(mtime);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        }
        b.finish().unwrap();
        let s = Scene::new();
        unpack(f.path(), &s.root()).unwrap();
        let meta = |p: &str| fs::symlink_metadata(s.root().join(p)).unwrap();
        for (p, mode, mtime) in [
            ("d", 0o755, 1_000_000),
            ("d/run", 0o755, 2_000_000),
            ("d/doc", 0o644, 3_000_000),
        ] {
            assert_eq!(meta(p).mode() & 0o7777, mode, "{p}");
            assert_eq!(meta(p).mtime(), mtime, "{p}");
        }
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        assert!(safe_rel(Path::new("/etc/passwd"), None).is_err());
        assert!(safe_rel(Path::new("a/../../x"), None).is_err());
        assert_eq!(
            safe_rel(Path::new("top/a/b"), Some("top")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(safe_rel(Path::new("top/"), Some("top")).unwrap(), None);
    }
}
