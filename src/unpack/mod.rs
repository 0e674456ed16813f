//! Unpacking a source tarball into a directory, refusing entries that would
//! land outside it.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Unpacks a (gzip-compressed or plain) tarball into `dest`, dropping the
/// single top-level directory if every entry is under one. Rejects
/// absolute paths, `..`, links that resolve outside the tree, and device,
/// FIFO or other special entries.
pub fn unpack(tarball: &Path, dest: &Path) -> Result<()> {
    let strip = single_top_dir(tarball)?;
    let mut ar = tar::Archive::new(open_maybe_gz(tarball)?);
    let mut count = 0usize;
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    for entry in ar.entries().context("reading the tarball")? {
        let mut entry = entry.context("reading the tarball")?;
        let raw = entry.path()?.into_owned();
        let shown = raw.display().to_string();
        let Some(rel) = safe_rel(&raw, strip.as_deref())
            .with_context(|| format!("unsafe tarball entry {shown:?}"))?
        else {
            continue; // the stripped top directory itself
        };
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
            // A parent must not be a symlink made by an earlier entry.
            let canon = fs::canonicalize(parent)?;
            if !canon.starts_with(fs::canonicalize(dest)?) {
                bail!("unsafe tarball entry {shown:?}: its directory leads outside the tree");
            }
        }
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                fs::create_dir_all(&target)?;
                dirs.push((target, entry.header().mtime().unwrap_or(0)));
                continue;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut f = fs::File::create(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
                io::copy(&mut entry, &mut f)?;
                use std::os::unix::fs::PermissionsExt;
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                if let Ok(m) = entry.header().mtime() {
                    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(m))?;
                }
            }
            T::Symlink => {
                let link = entry
                    .link_name()?
                    .context("symlink without a target")?
                    .into_owned();
                if link.is_absolute() || !stays_inside(&rel, &link) {
                    bail!(
                        "unsafe tarball entry {shown:?}: symlink to {} leaves the tree",
                        link.display()
                    );
                }
                std::os::unix::fs::symlink(&link, &target)?;
            }
            T::Link => {
                let link = entry
                    .link_name()?
                    .context("hard link without a target")?
                    .into_owned();
                let Some(lrel) = safe_rel(&link, strip.as_deref())
                    .with_context(|| format!("unsafe tarball entry {shown:?}: hard link target"))?
                else {
                    bail!("unsafe tarball entry {shown:?}: hard link to the top directory");
                };
                fs::hard_link(dest.join(lrel), &target)
                    .with_context(|| format!("hard link {shown:?}"))?;
            }
            T::XHeader | T::XGlobalHeader | T::GNULongName | T::GNULongLink => continue,
            other => bail!(
                "unsafe tarball entry {shown:?}: {other:?} entries (devices, FIFOs) are not allowed in a source tree"
            ),
        }
        count += 1;
    }
    // Directory mtimes last (creating files in them moved them).
    for (d, m) in dirs.iter().rev() {
        if let Ok(f) = fs::File::open(d) {
            let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*m));
        }
    }
    if count == 0 {
        bail!("the tarball holds no files");
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
            Component::ParentDir => bail!("'..' in the path"),
            Component::RootDir | Component::Prefix(_) => bail!("absolute path"),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Whether a relative symlink at `rel` pointing to `link` stays in the tree.
fn stays_inside(rel: &Path, link: &Path) -> bool {
    let mut depth: i64 = rel.components().count() as i64 - 1; // the link's directory
    for c in link.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_must_stay_inside() {
        assert!(stays_inside(Path::new("a/b/link"), Path::new("../c")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../etc")));
        assert!(!stays_inside(Path::new("link"), Path::new("../x")));
        assert!(stays_inside(Path::new("link"), Path::new("x/../y")));
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

    fn tarball(entries: &[(&str, tar::EntryType, &str)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            // set_path refuses '..'; write the raw name like a hostile tar would.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
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

    #[test]
    fn hostile_tarballs_are_refused() {
        use tar::EntryType as T;
        let cases: &[&[(&str, T, &str)]] = &[
            &[
                ("top/ok", T::Regular, "x"),
                ("top/../../evil", T::Regular, "x"),
            ],
            &[("/etc/evil", T::Regular, "x")],
            &[
                ("top/ok", T::Regular, "x"),
                ("top/l", T::Symlink, "../../etc"),
            ],
            &[
                ("top/ok", T::Regular, "x"),
                ("top/l", T::Symlink, "/etc/passwd"),
            ],
            &[("top/ok", T::Regular, "x"), ("top/dev", T::Char, "")],
            &[("top/ok", T::Regular, "x"), ("top/fifo", T::Fifo, "")],
        ];
        for case in cases {
            let t = tarball(case);
            let dest = tempfile::tempdir().unwrap();
            let e = unpack(t.path(), dest.path());
            assert!(e.is_err(), "{case:?} was accepted");
            assert!(
                format!("{:#}", e.unwrap_err()).contains("unsafe"),
                "{case:?}"
            );
        }
        let t = tarball(&[
            ("top/a/file", T::Regular, "hello"),
            ("top/a/link", T::Symlink, "file"),
            ("top/hard", T::Link, "top/a/file"),
        ]);
        let dest = tempfile::tempdir().unwrap();
        unpack(t.path(), dest.path()).unwrap();
        assert_eq!(fs::read(dest.path().join("a/link")).unwrap(), b"hello");
        assert_eq!(fs::read(dest.path().join("hard")).unwrap(), b"hello");
    }
}
