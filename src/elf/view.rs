//! The image's merged file tree: every layer's entries applied in order, as
//! a runtime unpacks them (a later layer's entry replaces an earlier one at
//! the same path; a non-directory replacing a directory drops what was under
//! it; mpsi writes no whiteouts). Paths resolve inside the image root only:
//! a relative symlink against the link's directory, an absolute one against
//! the image root, never the host.

use crate::rootfs::{Content, Entry};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// The kernel's limit on symlinks followed in one lookup (MAXSYMLINKS).
const MAX_LINKS: usize = 40;

#[derive(Clone, Debug)]
pub enum Node {
    Dir,
    File(Data),
    Symlink(String),
}

/// Where a regular file's bytes are: hard links are already followed.
#[derive(Clone, Debug)]
pub enum Data {
    Disk(PathBuf),
    Inline(Vec<u8>),
}

impl Data {
    pub fn read(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Data::Disk(p) => std::fs::read(p).map(Into::into),
            Data::Inline(b) => Ok(b.as_slice().into()),
        }
    }
}

#[derive(Default)]
pub struct MergedView {
    /// Image path without the leading `/`; the root itself is not stored.
    nodes: BTreeMap<String, Node>,
}

/// A path that resolved to an existing node.
#[derive(Debug)]
pub struct Found<'a> {
    /// The path with every symlink followed (no leading `/`).
    pub path: String,
    pub node: &'a Node,
}

/// Why a path did not resolve.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// Nothing there; `dangling` names the last symlink followed, if any
    /// (`link -> target`), since that is usually the mistake.
    Absent { dangling: Option<String> },
    /// More than MAX_LINKS symlinks: a loop.
    Loop { link: String },
    /// `..` would climb above the image root.
    Escapes { via: String },
}

impl Miss {
    /// A loop or an escape is a defect of the image even where the loader
    /// would go on searching; a plain absence is not.
    pub fn is_broken(&self) -> bool {
        !matches!(self, Miss::Absent { .. })
    }
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Absent { dangling: None } => write!(f, "absent"),
            Miss::Absent { dangling: Some(l) } => write!(f, "symlink {l} dangles in the image"),
            Miss::Loop { link } => write!(f, "symlink loop at /{link}"),
            Miss::Escapes { via } => write!(f, "{via} leaves the image root"),
        }
    }
}

impl MergedView {
    /// Applies the layers in order.
    pub fn from_layers(layers: &[Vec<Entry>]) -> MergedView {
        let mut view = MergedView::default();
        for entries in layers {
            // Hard links name an earlier entry of the same layer.
            let by_path: HashMap<&str, &Entry> =
                entries.iter().map(|e| (e.path.as_str(), e)).collect();
            for e in entries {
                let content = match &e.content {
                    Content::Hardlink(t) => match by_path.get(t.as_str()) {
                        Some(target) => &target.content,
                        None => continue, // rootfs only links to entries it holds
                    },
                    c => c,
                };
                let node = match content {
                    Content::Dir => Node::Dir,
                    Content::File { path, .. } => Node::File(Data::Disk(path.clone())),
                    Content::Inline(b) => Node::File(Data::Inline(b.clone())),
                    Content::Symlink(t) => Node::Symlink(t.clone()),
                    Content::Hardlink(_) => continue, // a link to a link: not made by rootfs
                };
                view.insert(&e.path, node);
            }
        }
        view
    }

    /// Puts one node at `path` (no leading `/`), over whatever was there.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/').to_string();
        let keeps_children =
            matches!(node, Node::Dir) && matches!(self.nodes.get(&path), Some(Node::Dir) | None);
        if !keeps_children {
            let prefix = format!("{path}/");
            let under: Vec<String> = self
                .nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in under {
                self.nodes.remove(&k);
            }
        }
        self.nodes.insert(path, node);
    }

    /// Every regular file, by image path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &Data)> {
        self.nodes.iter().filter_map(|(p, n)| match n {
            Node::File(d) => Some((p.as_str(), d)),
            _ => None,
        })
    }

    /// Paths directly or indirectly under `dir` (no symlinks followed).
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("{}/", dir.trim_matches('/'));
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.as_str())
    }

    /// Resolves `path` (from the image root, with or without a leading `/`),
    /// following every symlink on the way inside the image.
    pub fn resolve(&self, path: &str) -> Result<Found<'_>, Miss> {
        static ROOT: Node = Node::Dir;
        // Components still to walk, last one first.
        let mut todo: Vec<String> = components(path).rev().map(String::from).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        let mut last_link: Option<String> = None;
        while let Some(c) = todo.pop() {
            if c == ".." {
                if cur.pop().is_none() {
                    let via = match &last_link {
                        Some(l) => format!("symlink {l}"),
                        None => format!("path /{}", path.trim_start_matches('/')),
                    };
                    return Err(Miss::Escapes { via });
                }
                continue;
            }
            cur.push(c);
            let here = cur.join("/");
            match self.nodes.get(&here) {
                None => {
                    return Err(Miss::Absent {
                        dangling: last_link,
                    });
                }
                Some(Node::Dir) => {}
                Some(Node::File(_)) if !todo.is_empty() => {
                    return Err(Miss::Absent { dangling: None }); // not a directory
                }
                Some(Node::File(_)) => {}
                Some(Node::Symlink(target)) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Miss::Loop { link: here });
                    }
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    todo.extend(components(target).rev().map(String::from));
                    last_link = Some(format!("/{here} -> {target}"));
                }
            }
        }
        let path = cur.join("/");
        let node = if path.is_empty() {
            &ROOT
        } else {
            &self.nodes[&path]
        };
        Ok(Found { path, node })
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Node {
        Node::File(Data::Inline(b"x".to_vec()))
    }

    fn link(t: &str) -> Node {
        Node::Symlink(t.into())
    }

    fn view(nodes: &[(&str, Node)]) -> MergedView {
        let mut v = MergedView::default();
        for (p, n) in nodes {
            v.insert(p, n.clone());
        }
        v
    }

    #[test]
    fn relative_links_resolve_against_the_links_directory() {
        let v = view(&[
            ("usr", Node::Dir),
            ("usr/lib", Node::Dir),
            ("usr/lib/libz.so.1.3", file()),
            ("usr/lib/libz.so.1", link("libz.so.1.3")),
            ("lib", link("usr/lib")),
        ]);
        assert_eq!(
            v.resolve("/lib/libz.so.1").unwrap().path,
            "usr/lib/libz.so.1.3"
        );
        assert_eq!(
            v.resolve("lib/../lib/libz.so.1").unwrap().path,
            "usr/lib/libz.so.1.3"
        );
    }

    #[test]
    fn absolute_links_resolve_against_the_image_root_not_the_host() {
        // /etc/hostname exists on the host; the image has no /etc at all.
        let v = view(&[
            ("opt", Node::Dir),
            ("opt/host", link("/etc/hostname")),
            ("opt/inside", link("/opt/real")),
            ("opt/real", file()),
        ]);
        assert_eq!(v.resolve("opt/inside").unwrap().path, "opt/real");
        let miss = v.resolve("opt/host").unwrap_err();
        assert_eq!(
            miss,
            Miss::Absent {
                dangling: Some("/opt/host -> /etc/hostname".into())
            }
        );
        assert!(!miss.is_broken());
    }

    #[test]
    fn loops_and_escapes_are_broken() {
        let v = view(&[
            ("a", link("b")),
            ("b", link("/a")),
            ("up", link("../../etc")),
            ("d", Node::Dir),
        ]);
        assert!(matches!(v.resolve("a/x"), Err(Miss::Loop { .. })));
        let e = v.resolve("up/passwd").unwrap_err();
        assert!(e.is_broken());
        assert_eq!(
            e.to_string(),
            "symlink /up -> ../../etc leaves the image root"
        );
        assert!(matches!(v.resolve("d/../.."), Err(Miss::Escapes { .. })));
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let v = view(&[("f", file())]);
        assert!(matches!(v.resolve("f/x"), Err(Miss::Absent { .. })));
    }

    #[test]
    fn later_layers_override_and_files_drop_earlier_directories() {
        let mut v = view(&[("lib", Node::Dir), ("lib/a", file())]);
        v.insert("lib", Node::Dir);
        assert!(
            v.resolve("lib/a").is_ok(),
            "a directory over a directory merges"
        );
        v.insert("lib", link("usr/lib"));
        assert!(
            v.resolve("lib/a").is_err(),
            "a symlink replaces the directory"
        );
        assert_eq!(v.under("lib").count(), 0);
    }
}
