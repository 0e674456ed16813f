//! Where the dynamic loader looks for a `DT_NEEDED` name, modelled on glibc:
//! `DT_RPATH` (only when there is no `DT_RUNPATH`), `DT_RUNPATH`, the
//! directories of `/etc/ld.so.conf` (through the loader cache built from
//! them), then the default directories. `LD_LIBRARY_PATH` is not modelled:
//! the image sets none. Written by hand because no crate resolves inside a
//! root without touching the host (lddtree canonicalizes on the host).

use super::read::Kind;
use super::view::{MergedView, Node};
use anyhow::Context;

/// One group of directories the loader searches, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `RPATH`, `RUNPATH`, `ld.so.conf` or `default`.
    pub label: &'static str,
    /// As written (a `$ORIGIN` entry keeps its spelling for messages).
    pub dirs: Vec<SearchDir>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDir {
    pub written: String,
    /// The directory in the image (no leading `/`), or None when it cannot
    /// be known (a relative entry names the process's working directory).
    pub image: Option<String>,
}

/// The multiarch triplet Debian uses for this kind of file.
fn triplet(kind: &Kind) -> Option<&'static str> {
    match (kind.machine, kind.class64) {
        (62, true) => Some("x86_64-linux-gnu"),
        (3, false) => Some("i386-linux-gnu"),
        (183, true) => Some("aarch64-linux-gnu"),
        (40, false) => Some("arm-linux-gnueabihf"),
        _ => None,
    }
}

/// The loader's built-in directories for this class and machine.
pub fn default_dirs(kind: &Kind) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(t) = triplet(kind) {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    if kind.class64 {
        dirs.extend(["/lib64".into(), "/usr/lib64".into()]);
    }
    dirs.extend(["/lib".into(), "/usr/lib".into()]);
    dirs
}

/// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also in `${...}` form) in an
/// `RPATH`/`RUNPATH` entry. `origin` is the object's directory in the image.
pub fn expand(entry: &str, origin: &str, kind: &Kind) -> String {
    let lib = match triplet(kind) {
        Some(t) => format!("lib/{t}"),
        None if kind.class64 => "lib64".into(),
        None => "lib".into(),
    };
    let platform = match (kind.machine, kind.class64) {
        (62, true) => "x86_64",
        (3, false) => "i686",
        (183, true) => "aarch64",
        _ => "",
    };
    let origin = format!("/{}", origin.trim_matches('/'));
    let mut out = entry.to_string();
    for (name, value) in [
        ("ORIGIN", origin.as_str()),
        ("LIB", &lib),
        ("PLATFORM", platform),
    ] {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

fn dirs_of(list: &str, origin: &str, kind: &Kind) -> Vec<SearchDir> {
    list.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| {
            let e = expand(d, origin, kind);
            SearchDir {
                written: d.to_string(),
                image: e
                    .starts_with('/')
                    .then(|| e.trim_start_matches('/').to_string()),
            }
        })
        .collect()
}

fn plain(dirs: &[String]) -> Vec<SearchDir> {
    dirs.iter()
        .map(|d| SearchDir {
            written: d.clone(),
            image: Some(d.trim_start_matches('/').to_string()),
        })
        .collect()
}

/// The search order for an object at `origin` with these dynamic entries.
pub fn order(
    rpath: Option<&str>,
    runpath: Option<&str>,
    origin: &str,
    kind: &Kind,
    conf: &[String],
) -> Vec<Group> {
    let mut groups = Vec::new();
    match (rpath, runpath) {
        (_, Some(r)) => groups.push(Group {
            label: "RUNPATH",
            dirs: dirs_of(r, origin, kind),
        }),
        (Some(r), None) => groups.push(Group {
            label: "RPATH",
            dirs: dirs_of(r, origin, kind),
        }),
        (None, None) => {}
    }
    if !conf.is_empty() {
        groups.push(Group {
            label: "ld.so.conf",
            dirs: plain(conf),
        });
    }
    groups.push(Group {
        label: "default",
        dirs: plain(&default_dirs(kind)),
    });
    groups
}

/// The directories `/etc/ld.so.conf` lists, following `include` lines (glob
/// patterns, relative ones against the including file's directory) as
/// ldconfig does. A missing `/etc/ld.so.conf` lists none.
pub fn ld_so_conf(view: &MergedView) -> anyhow::Result<Vec<String>> {
    let mut dirs = Vec::new();
    read_conf(view, "/etc/ld.so.conf", 0, &mut dirs)?;
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    Ok(dirs)
}

fn read_conf(
    view: &MergedView,
    file: &str,
    depth: usize,
    out: &mut Vec<String>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        depth < 16,
        "{file}: includes nest more than 16 deep (an include loop?)"
    );
    let data = match view.resolve(file) {
        Ok(f) => match f.node {
            Node::File(d) => d
                .read()
                .with_context(|| format!("reading {file} of the image"))?,
            _ => return Ok(()),
        },
        Err(m) if m.is_broken() => anyhow::bail!("{file} of the image: {m}"),
        Err(_) => return Ok(()),
    };
    let here = file.rsplit_once('/').map_or("", |(d, _)| d);
    for line in String::from_utf8_lossy(&data).lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap") {
            continue;
        }
        if let Some(pattern) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with([' ', '\t']))
        {
            for pattern in pattern.split_whitespace() {
                let abs = if pattern.starts_with('/') {
                    pattern.to_string()
                } else {
                    format!("{here}/{pattern}")
                };
                for inc in glob(view, &abs)? {
                    read_conf(view, &inc, depth + 1, out)?;
                }
            }
            continue;
        }
        // An old-style "dir=type" suffix names a library type; drop it.
        let dir = line.split('=').next().unwrap_or(line).trim_end_matches('/');
        if dir.starts_with('/') {
            out.push(dir.to_string());
        }
    }
    Ok(())
}

/// Image paths matching a glob whose directory part has no wildcards (as
/// every `ld.so.conf` include in practice), sorted as glob(3) sorts them.
fn glob(view: &MergedView, pattern: &str) -> anyhow::Result<Vec<String>> {
    let (dir, _) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let matcher = globset::GlobBuilder::new(pattern.trim_start_matches('/'))
        .literal_separator(true)
        .build()
        .with_context(|| format!("ld.so.conf include pattern {pattern:?}"))?
        .compile_matcher();
    // Match against the directory's resolved path, then name the files by
    // the pattern's own directory so relative includes keep working.
    let real = match view.resolve(dir) {
        Ok(f) => f.path,
        Err(_) => return Ok(Vec::new()),
    };
    let mut out: Vec<String> = view
        .under(&real)
        .filter_map(|p| {
            let name = p.strip_prefix(&real)?.trim_start_matches('/');
            let as_pattern = format!("{}/{name}", dir.trim_start_matches('/'));
            (!name.contains('/') && matcher.is_match(&as_pattern)).then(|| format!("/{as_pattern}"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// For a message: the highest version of the same family (`GLIBC_2.36` for
/// a missing `GLIBC_2.38`) the library defines, or the list it defines.
pub fn defined_summary(wanted: &str, defined: &[String]) -> String {
    let family = |v: &str| {
        v.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
            .len()
    };
    let prefix = &wanted[..family(wanted)];
    let numbers = |v: &str| -> Vec<u64> {
        v[family(v)..]
            .split('.')
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let best = defined
        .iter()
        .filter(|d| family(d) == prefix.len() && d.starts_with(prefix) && d.len() > prefix.len())
        .max_by_key(|d| numbers(d));
    match best {
        Some(b) => format!("defines up to {b}"),
        None if defined.is_empty() => "defines no versions".into(),
        None => {
            let mut list: Vec<&str> = defined.iter().map(String::as_str).take(8).collect();
            if defined.len() > 8 {
                list.push("...");
            }
            format!("defines only {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::view::Data;

    const X86_64: Kind = Kind {
        class64: true,
        machine: 62,
    };

    #[test]
    fn origin_lib_and_platform_expand() {
        assert_eq!(
            expand("$ORIGIN/../lib", "usr/bin", &X86_64),
            "/usr/bin/../lib"
        );
        assert_eq!(expand("${ORIGIN}/x", "opt", &X86_64), "/opt/x");
        assert_eq!(
            expand("/opt/$LIB/$PLATFORM", "", &X86_64),
            "/opt/lib/x86_64-linux-gnu/x86_64"
        );
    }

    #[test]
    fn runpath_hides_rpath_and_defaults_come_last() {
        let g = order(
            Some("/r"),
            Some("$ORIGIN/lib::rel"),
            "opt/app",
            &X86_64,
            &["/etc-dir".into()],
        );
        let labels: Vec<_> = g.iter().map(|g| g.label).collect();
        assert_eq!(labels, ["RUNPATH", "ld.so.conf", "default"]);
        assert_eq!(g[0].dirs[0].image.as_deref(), Some("opt/app/lib"));
        assert_eq!(
            g[0].dirs[1].image, None,
            "a relative entry names the working directory"
        );
        let g = order(Some("/r"), None, "", &X86_64, &[]);
        assert_eq!(g[0].label, "RPATH");
        assert_eq!(
            g[1].dirs
                .iter()
                .map(|d| d.written.as_str())
                .collect::<Vec<_>>(),
            [
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib"
            ]
        );
    }

    #[test]
    fn ld_so_conf_follows_includes_in_glob_order() {
        let mut v = MergedView::default();
        let f = |s: &str| Node::File(Data::Inline(s.as_bytes().to_vec()));
        v.insert("etc", Node::Dir);
        v.insert(
            "etc/ld.so.conf",
            f("# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/last/\n"),
        );
        v.insert("etc/ld.so.conf.d", Node::Dir);
        v.insert("etc/ld.so.conf.d/b.conf", f("/usr/local/b\n"));
        v.insert(
            "etc/ld.so.conf.d/a.conf",
            f("/usr/local/a # trailing\ninclude more/*.conf\n"),
        );
        v.insert("etc/ld.so.conf.d/skip.txt", f("/nope\n"));
        v.insert("etc/ld.so.conf.d/more", Node::Dir);
        v.insert("etc/ld.so.conf.d/more/c.conf", f("/c=libc6\n"));
        assert_eq!(
            ld_so_conf(&v).unwrap(),
            ["/usr/local/a", "/c", "/usr/local/b", "/opt/last"]
        );
        assert!(ld_so_conf(&MergedView::default()).unwrap().is_empty());
    }

    #[test]
    fn version_summaries_name_the_family_maximum() {
        let defs: Vec<String> = ["GLIBC_2.2.5", "GLIBC_2.36", "GLIBC_2.4", "GLIBC_PRIVATE"]
            .map(String::from)
            .into();
        assert_eq!(
            defined_summary("GLIBC_2.38", &defs),
            "defines up to GLIBC_2.36"
        );
        assert_eq!(
            defined_summary("OTHER_1", &["A".into(), "B".into()]),
            "defines only A, B"
        );
    }
}
