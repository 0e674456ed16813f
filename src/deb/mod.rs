//! Debian binary packages (`.deb`), read in memory: the `ar` container,
//! `control.tar.*` (the `control` file, `md5sums`, `conffiles`) and
//! `data.tar.*` (gzip, xz or zstd). Nothing is extracted to disk, so no root
//! is needed and no entry can escape a directory; maintainer scripts are
//! never run.
//!
//! `dpkg` builds the package database scanners read from these pieces (see
//! `database`).

pub mod control;
pub mod dpkg;

use anyhow::{Context, Result, bail};
use std::io::{self, BufReader, Read};
use std::path::Path;

/// Top-level directories that Debian 12's merged /usr turns into links into
/// `/usr`; package paths under them are moved to `usr/...`.
pub const MERGED_USR: [&str; 4] = ["bin", "sbin", "lib", "lib64"];

/// One package as read from its `.deb`.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `Multi-Arch: same`: dpkg names its info files `NAME:ARCH.*`.
    pub multi_arch_same: bool,
    /// The `control` file as shipped.
    pub control: String,
    pub md5sums: Option<Vec<u8>>,
    pub conffiles: Vec<String>,
    /// `data.tar` entries in archive order, with the package's own paths.
    pub files: Vec<File>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Path inside the package, without `./` or a trailing `/` (`bin/bash`).
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Regular(Vec<u8>),
    Symlink(String),
    /// A hard link to another path of the same package (package path).
    Hardlink(String),
}

impl Package {
    /// The name dpkg gives its files in `/var/lib/dpkg/info`.
    pub fn info_name(&self) -> String {
        if self.multi_arch_same {
            format!("{}:{}", self.name, self.architecture)
        } else {
            self.name.clone()
        }
    }
}

/// Reads a `.deb` file.
pub fn read_file(path: &Path) -> Result<Package> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read(BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("reading the Debian package {}", path.display()))
}

/// Reads a `.deb` from a stream: `debian-binary`, then `control.tar*`, then
/// `data.tar*`, as dpkg-deb(1) writes them (members starting with `_` are
/// skipped, as dpkg does).
pub fn read<R: Read>(reader: R) -> Result<Package> {
    let mut ar = ar::Archive::new(reader);
    let mut seen_binary = false;
    let mut control: Option<ControlPart> = None;
    let mut files = None;
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.context("reading the ar container")?;
        let id = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let id = id.trim_end_matches('/').to_string();
        if id == "debian-binary" {
            let mut v = String::new();
            entry.read_to_string(&mut v)?;
            if !v.starts_with("2.") {
                bail!(
                    "debian-binary says format {:?}; mpsi reads format 2.x",
                    v.trim()
                );
            }
            seen_binary = true;
        } else if !seen_binary {
            bail!("the first member is {id:?}, not debian-binary: not a .deb");
        } else if let Some(ext) = id.strip_prefix("control.tar") {
            control = Some(read_control(decompressor(ext, &mut entry)?).context("in control.tar")?);
        } else if let Some(ext) = id.strip_prefix("data.tar") {
            files = Some(read_data(decompressor(ext, &mut entry)?).context("in data.tar")?);
        } else if !id.starts_with('_') {
            bail!("unexpected member {id:?} in the ar container");
        }
    }
    let (Some(control), Some(files)) = (control, files) else {
        bail!("the package lacks control.tar or data.tar");
    };
    let fields = control::parse_paragraph(&control.control).context("in the control file")?;
    let field = |name: &str| -> Result<String> {
        control::get(&fields, name)
            .map(str::to_string)
            .with_context(|| format!("the control file has no {name} field"))
    };
    Ok(Package {
        name: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
        multi_arch_same: control::get(&fields, "Multi-Arch") == Some("same"),
        control: control.control,
        md5sums: control.md5sums,
        conffiles: control.conffiles,
        files,
    })
}

/// The decompressor for a member's suffix (`""`, `.gz`, `.xz`, `.zst`).
fn decompressor<'a, R: Read + 'a>(ext: &str, r: R) -> Result<Box<dyn Read + 'a>> {
    Ok(match ext {
        "" => Box::new(r),
        ".gz" => Box::new(flate2::read::GzDecoder::new(r)),
        ".xz" => Box::new(liblzma::read::XzDecoder::new(r)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(r)?),
        other => bail!("compression {other:?} is not supported (gz, xz and zst are)"),
    })
}

struct ControlPart {
    control: String,
    md5sums: Option<Vec<u8>>,
    conffiles: Vec<String>,
}

fn read_control(r: Box<dyn Read + '_>) -> Result<ControlPart> {
    let mut tar = tar::Archive::new(r);
    let mut part = ControlPart {
        control: String::new(),
        md5sums: None,
        conffiles: Vec::new(),
    };
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        match path.trim_start_matches("./") {
            "control" => {
                entry.read_to_end(&mut data)?;
                part.control = String::from_utf8(data).context("control is not UTF-8")?;
            }
            "md5sums" => {
                entry.read_to_end(&mut data)?;
                part.md5sums = Some(data);
            }
            "conffiles" => {
                entry.read_to_end(&mut data)?;
                part.conffiles = String::from_utf8_lossy(&data)
                    .lines()
                    // `remove-on-upgrade /etc/x` lines name files no longer shipped.
                    .filter(|l| l.starts_with('/'))
                    .map(str::to_string)
                    .collect();
            }
            _ => {}
        }
    }
    if part.control.is_empty() {
        bail!("no control file");
    }
    Ok(part)
}

fn read_data(r: Box<dyn Read + '_>) -> Result<Vec<File>> {
    let mut tar = tar::Archive::new(r);
    let mut files = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = package_path(&raw)?;
        if path.is_empty() {
            continue; // "./", the root itself
        }
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::with_capacity(h.size()? as usize);
                entry.read_to_end(&mut data)?;
                Kind::Regular(data)
            }
            tar::EntryType::Symlink => Kind::Symlink(link_name(&entry, &raw)?),
            tar::EntryType::Link => Kind::Hardlink(package_path(&link_name(&entry, &raw)?)?),
            other => bail!("{raw}: entry type {other:?} cannot go into an image layer"),
        };
        let h = entry.header();
        let name = |v: io::Result<Option<&str>>| v.ok().flatten().unwrap_or("").to_string();
        let (uid, gid) = (h.uid()?, h.gid()?);
        let (mut user, mut group) = (
            name(h.username().map_err(io::Error::other)),
            name(h.groupname().map_err(io::Error::other)),
        );
        if user.is_empty() && uid == 0 {
            user = "root".into();
        }
        if group.is_empty() && gid == 0 {
            group = "root".into();
        }
        files.push(File {
            path,
            kind,
            mode: h.mode()? & 0o7777,
            uid,
            gid,
            user,
            group,
        });
    }
    Ok(files)
}

fn link_name<R: Read>(entry: &tar::Entry<R>, raw: &str) -> Result<String> {
    let target = entry
        .link_name()?
        .with_context(|| format!("{raw}: a link without a target"))?;
    Ok(target.to_string_lossy().into_owned())
}

/// A data.tar path without `./` and trailing `/`; `..` is refused.
fn package_path(raw: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("{raw:?} contains '..'"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Where a package path lands in a merged-/usr image (`bin/sh` ->
/// `usr/bin/sh`).
pub fn merged_usr(path: &str) -> String {
    let first = path.split('/').next().unwrap_or("");
    if MERGED_USR.contains(&first) {
        format!("usr/{path}")
    } else {
        path.to_string()
    }
}

/// Leaves out the files whose image path `wanted` refuses, as dpkg's
/// `path-exclude` does, and drops them from the package's md5sums so the
/// database lists only what the image holds.
pub fn retain(pkg: &mut Package, wanted: &dyn Fn(&str) -> bool) -> Result<()> {
    pkg.files.retain(|f| wanted(&merged_usr(&f.path)));
    let kept: std::collections::HashSet<&str> = pkg.files.iter().map(|f| f.path.as_str()).collect();
    for f in &pkg.files {
        if let Kind::Hardlink(t) = &f.kind
            && !kept.contains(t.as_str())
        {
            bail!(
                "package {}: /{} is a hard link to /{t}, which the exclusions leave out; keep both or neither",
                pkg.name,
                f.path
            );
        }
    }
    pkg.conffiles
        .retain(|c| kept.contains(c.trim_start_matches('/')));
    if let Some(sums) = &pkg.md5sums {
        let text = String::from_utf8_lossy(sums);
        let lines: String = text
            .lines()
            // "HASH  PATH", PATH relative to the root.
            .filter(|l| l.get(34..).is_none_or(|p| kept.contains(p)))
            .map(|l| format!("{l}\n"))
            .collect();
        pkg.md5sums = Some(lines.into_bytes());
    }
    Ok(())
}

/// The package's files as they go into a merged-/usr image: paths moved
/// into `usr/`, and each group of hard links rearranged so the path that
/// sorts first (by components, as layers are written) holds the content and
/// the others link to it (a tar hard link must follow its target).
pub fn image_files(pkg: Package) -> Vec<File> {
    let mut files: Vec<File> = pkg
        .files
        .into_iter()
        .map(|mut f| {
            f.path = merged_usr(&f.path);
            if let Kind::Hardlink(t) = &f.kind {
                f.kind = Kind::Hardlink(merged_usr(t));
            }
            f
        })
        .collect();
    let index: std::collections::HashMap<String, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.clone(), i))
        .collect();
    // Group hard links by the path holding the content in the package.
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, f) in files.iter().enumerate() {
        if let Kind::Hardlink(t) = &f.kind
            && let Some(&holder) = index.get(t)
        {
            groups.entry(holder).or_default().push(i);
        }
    }
    for (holder, links) in groups {
        let first = links
            .iter()
            .copied()
            .chain([holder])
            .min_by(|&a, &b| files[a].path.split('/').cmp(files[b].path.split('/')))
            .expect("non-empty");
        if first == holder {
            continue;
        }
        let content = std::mem::replace(&mut files[holder].kind, Kind::Hardlink(String::new()));
        files[first].kind = content;
        let target = files[first].path.clone();
        for i in links.into_iter().chain([holder]).filter(|&i| i != first) {
            files[i].kind = Kind::Hardlink(target.clone());
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_moves_only_the_four_roots() {
        assert_eq!(merged_usr("bin/sh"), "usr/bin/sh");
        assert_eq!(
            merged_usr("lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(merged_usr("lib"), "usr/lib");
        assert_eq!(merged_usr("libexec/x"), "libexec/x");
        assert_eq!(merged_usr("etc/bin/x"), "etc/bin/x");
    }

    #[test]
    fn package_paths_refuse_dotdot() {
        assert_eq!(package_path("./usr/bin/").unwrap(), "usr/bin");
        assert_eq!(package_path("./").unwrap(), "");
        assert!(package_path("./usr/../../etc").is_err());
    }

    fn ar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = ar::Builder::new(Vec::new());
        for (name, data) in members {
            b.append(
                &ar::Header::new(name.as_bytes().to_vec(), data.len() as u64),
                *data,
            )
            .unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn what_is_not_a_deb_is_refused_with_the_reason() {
        let e = read(&b"plain text, not an archive"[..]).unwrap_err();
        assert!(format!("{e:#}").contains("ar container"), "{e:#}");
        let e = read(&ar_of(&[("data.tar", b"")])[..]).unwrap_err();
        assert!(format!("{e:#}").contains("not debian-binary"), "{e:#}");
        let e = read(&ar_of(&[("debian-binary", b"3.0\n")])[..]).unwrap_err();
        assert!(format!("{e:#}").contains("format \"3.0\""), "{e:#}");
        let e =
            read(&ar_of(&[("debian-binary", b"2.0\n"), ("data.tar.lz4", b"")])[..]).unwrap_err();
        assert!(format!("{e:#}").contains(".lz4"), "{e:#}");
        let e = read(&ar_of(&[("debian-binary", b"2.0\n")])[..]).unwrap_err();
        assert!(format!("{e:#}").contains("lacks control.tar"), "{e:#}");
    }

    fn file(path: &str, kind: Kind) -> File {
        File {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            user: "root".into(),
            group: "root".into(),
        }
    }

    #[test]
    fn hard_link_content_moves_to_the_first_path() {
        let pkg = Package {
            name: "p".into(),
            version: "1".into(),
            architecture: "amd64".into(),
            multi_arch_same: false,
            control: String::new(),
            md5sums: None,
            conffiles: Vec::new(),
            files: vec![
                file("usr/bin/z", Kind::Regular(b"x".to_vec())),
                file("bin/a", Kind::Hardlink("usr/bin/z".into())),
            ],
        };
        let out = image_files(pkg);
        assert_eq!(out[1].path, "usr/bin/a");
        assert_eq!(out[1].kind, Kind::Regular(b"x".to_vec()));
        assert_eq!(out[0].kind, Kind::Hardlink("usr/bin/a".into()));
    }
}
