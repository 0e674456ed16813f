//! A layer's file tree, gathered from its spec sources without touching the
//! host's ownership: every entry carries the owner and mode that will go into
//! its tar header. Parent directories are made explicit, entries are sorted
//! by path components, and hard links are found by one fixed rule (the first
//! path in sorted order holds the content; later ones link to it).

use crate::spec::{FileData, LayerSpec, Loc, Owner, Source, SpecError};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub mod accounts;
mod packages;
pub mod permissions;

/// Identity of a file on disk at the time it was listed. Used to detect
/// hard links and, as in git's index, to tell that a file is unchanged
/// without reading it (a content change always moves ctime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Content {
    Dir,
    File {
        path: PathBuf,
        stamp: Stamp,
    },
    Inline(Vec<u8>),
    Symlink(String),
    /// A hard link to an earlier entry of the same layer (its image path).
    Hardlink(String),
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// Image path without the leading `/` (`etc/mysql/my.cnf`).
    pub path: String,
    pub content: Content,
    pub mode: u32,
    pub owner: Owner,
    origin: Origin,
}

#[derive(Clone, Debug)]
enum Origin {
    /// Declared by a `[[layer.dir]]`, `file` or `symlink`: wins over trees.
    Declared(Loc),
    Tree(Loc),
    /// A Debian package, the merged-/usr links or the dpkg database of a
    /// `[[layer.packages]]` source (`what` names which).
    Packages {
        what: String,
        at: Loc,
    },
    /// The files of a `[layer.accounts]`.
    Accounts(Loc),
    /// A parent directory nobody declared.
    Implied,
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Declared(l) | Origin::Tree(l) | Origin::Accounts(l) => l.to_string(),
            Origin::Packages { what, at } => format!("{what} ({at})"),
            Origin::Implied => "an implied parent directory".into(),
        }
    }
    fn loc(&self) -> Option<&Loc> {
        match self {
            Origin::Declared(l)
            | Origin::Tree(l)
            | Origin::Accounts(l)
            | Origin::Packages { at: l, .. } => Some(l),
            Origin::Implied => None,
        }
    }
}

impl Entry {
    /// Bytes of file content this entry puts into the layer.
    pub fn content_len(&self) -> u64 {
        match &self.content {
            Content::File { stamp, .. } => stamp.size,
            Content::Inline(d) => d.len() as u64,
            _ => 0,
        }
    }
}

/// Lists a layer's entries, sorted, with parents and hard links resolved.
/// `builds` maps each build name a `from_build` tree may name to its
/// installed tree in the store; `packages` are the `.deb` files of the
/// lock's runtime packages in the store, for a `[[layer.packages]]` source;
/// `epoch` is the image's SOURCE_DATE_EPOCH (dating /etc/shadow).
pub fn collect(
    layer: &LayerSpec,
    builds: &std::collections::BTreeMap<String, PathBuf>,
    packages: &[PathBuf],
    epoch: u64,
) -> Result<Vec<Entry>> {
    let mut tree = Tree::default();
    for source in &layer.sources {
        match source {
            Source::Packages {
                from_lock,
                exclude,
                keep,
                at,
            } => {
                let wanted = |p: &str| !exclude.is_match(p) || keep.is_match(p);
                packages::insert(&mut tree, packages, &wanted, at)
                    .with_context(|| format!("the {from_lock:?} packages of the lock"))?
            }
            Source::Accounts { accounts: a, at } => {
                for f in accounts::files(a, epoch) {
                    tree.insert(Entry {
                        path: f.path.to_string(),
                        content: Content::Inline(f.data),
                        mode: f.mode,
                        owner: f.owner,
                        origin: Origin::Accounts(at.clone()),
                    })?;
                }
            }
            Source::Tree { .. } => add_tree(&mut tree, source, builds)?,
            Source::File { .. } => add_file(&mut tree, source)?,
            Source::Dir {
                path,
                mode,
                owner,
                at,
            } => {
                if !path.is_empty() {
                    tree.insert(Entry {
                        path: path.clone(),
                        content: Content::Dir,
                        mode: *mode,
                        owner: owner.clone(),
                        origin: Origin::Declared(at.clone()),
                    })?;
                }
            }
            Source::Symlink {
                path,
                target,
                owner,
                at,
            } => {
                tree.insert(Entry {
                    path: path.clone(),
                    content: Content::Symlink(target.clone()),
                    mode: 0o777,
                    owner: owner.clone(),
                    origin: Origin::Declared(at.clone()),
                })?;
            }
        }
    }
    tree.finish()
}

/// A `[[layer.tree]]` source: a host directory or a build output's subtree.
fn add_tree(
    tree: &mut Tree,
    source: &Source,
    builds: &std::collections::BTreeMap<String, PathBuf>,
) -> Result<()> {
    let Source::Tree {
        from,
        from_build,
        to,
        include,
        exclude,
        follow_symlinks,
        owner,
        file_mode,
        dir_mode,
        at,
    } = source
    else {
        unreachable!("add_tree is called for tree sources only")
    };
    let resolved;
    let from = match from_build {
        None => from,
        Some(b) => {
            let root = builds.get(b).ok_or_else(|| {
                at.error(
                    "from_build",
                    format!("no output of build {b:?} was prepared"),
                )
            })?;
            resolved = root.join(from);
            &resolved
        }
    };
    let walker = TreeWalk {
        root: from,
        canon_root: fs::canonicalize(from)
            .map_err(|e| at.error("from", format!("{}: {e}", from.display())))?,
        to,
        include: include.as_ref(),
        exclude,
        follow: *follow_symlinks,
        owner,
        file_mode: *file_mode,
        dir_mode: *dir_mode,
        at,
    };
    let meta =
        fs::metadata(from).map_err(|e| at.error("from", format!("{}: {e}", from.display())))?;
    if !meta.is_dir() {
        return Err(at
            .error(
                "from",
                format!(
                    "{} is not a directory (use [[layer.file]] for single files)",
                    from.display()
                ),
            )
            .into());
    }
    let mut active = HashSet::new();
    active.insert(walker.canon_root.clone());
    walker.walk(tree, from, "", &mut active)?;
    Ok(())
}

/// A `[[layer.file]]` source: one file from disk or inline content.
fn add_file(tree: &mut Tree, source: &Source) -> Result<()> {
    let Source::File {
        data,
        to,
        mode,
        owner,
        at,
    } = source
    else {
        unreachable!("add_file is called for file sources only")
    };
    let content = match data {
        FileData::Inline(bytes) => Content::Inline(bytes.clone()),
        FileData::Path(p) => {
            let m =
                fs::metadata(p).map_err(|e| at.error("from", format!("{}: {e}", p.display())))?;
            if !m.is_file() {
                return Err(at
                    .error("from", format!("{} is not a regular file", p.display()))
                    .into());
            }
            Content::File {
                path: p.clone(),
                stamp: Stamp::of(&m),
            }
        }
    };
    let default_mode = match &content {
        Content::File { path, .. } => normalized_file_mode(&fs::metadata(path)?),
        _ => 0o644,
    };
    tree.insert(Entry {
        path: to.clone(),
        content,
        mode: mode.unwrap_or(default_mode),
        owner: owner.clone(),
        origin: Origin::Declared(at.clone()),
    })?;
    Ok(())
}

/// Host permission bits do not go into the image: they depend on the umask
/// and checkout tool. A file is 0755 if the host marks it executable at
/// all, else 0644 (as Nix's store does); the spec can set modes explicitly.
fn normalized_file_mode(m: &fs::Metadata) -> u32 {
    if m.mode() & 0o111 != 0 { 0o755 } else { 0o644 }
}

#[derive(Default)]
struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    fn insert(&mut self, new: Entry) -> Result<()> {
        let Some(old) = self.entries.get(&new.path) else {
            self.entries.insert(new.path.clone(), new);
            return Ok(());
        };
        if packages::same_shipped(old, &new) {
            return Ok(()); // two packages shipping the very same file or link
        }
        let both_dirs = matches!(old.content, Content::Dir) && matches!(new.content, Content::Dir);
        if both_dirs {
            let replace = match (&old.origin, &new.origin) {
                (Origin::Declared(_), Origin::Declared(_)) => return Err(self.conflict(old, &new)),
                (Origin::Declared(_), _) => false,
                (_, Origin::Declared(_)) => true,
                _ if old.mode == new.mode && old.owner == new.owner => false,
                _ => return Err(self.conflict_msg(
                    old,
                    &new,
                    "with different owner or mode; declare it once with [[layer.dir]] to settle it",
                )),
            };
            if replace {
                self.entries.insert(new.path.clone(), new);
            }
            return Ok(());
        }
        Err(self.conflict(old, &new))
    }

    fn conflict(&self, old: &Entry, new: &Entry) -> anyhow::Error {
        self.conflict_msg(
            old,
            new,
            packages::conflict_reason(old, new)
                .unwrap_or("twice; each image path may come from one source only"),
        )
    }

    fn conflict_msg(&self, old: &Entry, new: &Entry, why: &str) -> anyhow::Error {
        let msg = format!(
            "/{} is declared by {} and by {} {why}",
            new.path,
            old.origin.describe(),
            new.origin.describe()
        );
        match new.origin.loc() {
            Some(loc) => SpecError {
                file: loc.file.clone(),
                line: Some(loc.line),
                field: loc.what.clone(),
                message: msg,
            }
            .into(),
            None => anyhow::anyhow!(msg),
        }
    }

    fn finish(mut self) -> Result<Vec<Entry>> {
        // Make every parent explicit, with default owner and mode.
        let paths: Vec<String> = self.entries.keys().cloned().collect();
        for path in &paths {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                parent = p;
                match self.entries.get(parent) {
                    Some(e) if matches!(e.content, Content::Dir) => {}
                    Some(e) => {
                        let child = &self.entries[path];
                        anyhow::bail!(
                            "/{parent} must be a directory (it holds /{path}, from {}), but {} makes it something else",
                            child.origin.describe(),
                            e.origin.describe()
                        );
                    }
                    None => {
                        self.entries.insert(
                            parent.to_string(),
                            Entry {
                                path: parent.to_string(),
                                content: Content::Dir,
                                mode: 0o755,
                                owner: Owner::root(),
                                origin: Origin::Implied,
                            },
                        );
                    }
                }
            }
        }
        let mut list: Vec<Entry> = self.entries.into_values().collect();
        // Sort by components so a directory always precedes its contents
        // ("a/b" before "a-b" would not hold with a plain string sort).
        list.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
        link_hardlinks(&mut list);
        Ok(list)
    }
}

/// Files that are one inode on disk become tar hard links to the first of
/// them in sorted order, provided they also agree on owner and mode (a tar
/// hard link cannot carry its own).
fn link_hardlinks(list: &mut [Entry]) {
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    for i in 0..list.len() {
        let Content::File { stamp, .. } = &list[i].content else {
            continue;
        };
        if stamp.nlink < 2 {
            continue;
        }
        let key = (stamp.dev, stamp.ino);
        match first.get(&key) {
            Some(&j) if list[j].mode == list[i].mode && list[j].owner == list[i].owner => {
                list[i].content = Content::Hardlink(list[j].path.clone());
            }
            Some(_) => {}
            None => {
                first.insert(key, i);
            }
        }
    }
}

struct TreeWalk<'a> {
    root: &'a Path,
    canon_root: PathBuf,
    to: &'a str,
    include: Option<&'a globset::GlobSet>,
    exclude: &'a globset::GlobSet,
    follow: bool,
    owner: &'a Owner,
    file_mode: Option<u32>,
    dir_mode: Option<u32>,
    at: &'a Loc,
}

impl TreeWalk<'_> {
    fn image_path(&self, rel: &str) -> String {
        match (self.to.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.to.to_string(),
            (false, false) => format!("{}/{rel}", self.to),
        }
    }

    fn entry(&self, rel: &str, content: Content, mode: u32) -> Entry {
        Entry {
            path: self.image_path(rel),
            content,
            mode,
            owner: self.owner.clone(),
            origin: Origin::Tree(self.at.clone()),
        }
    }

    /// Walks `dir` (at `rel` inside the tree); returns whether it added
    /// anything, so directories with no included content can be left out.
    fn walk(
        &self,
        tree: &mut Tree,
        dir: &Path,
        rel: &str,
        active: &mut HashSet<PathBuf>,
    ) -> Result<bool> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading directory {} ({})", dir.display(), self.at))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading directory {}", dir.display()))?;
        names.sort();
        let mut added = false;
        for name in names {
            let Some(name_str) = name.to_str() else {
                anyhow::bail!(
                    "{}: file name {:?} in {} is not UTF-8; image paths must be",
                    self.at,
                    name,
                    dir.display()
                );
            };
            let child_rel = if rel.is_empty() {
                name_str.to_string()
            } else {
                format!("{rel}/{name_str}")
            };
            if !self.exclude.is_match(&child_rel) {
                added |= self.visit(tree, &dir.join(&name), &child_rel, active)?;
            }
        }
        if rel.is_empty() && !self.to.is_empty() && added {
            // The tree's own root directory, with the tree's owner and mode.
            tree.insert(self.entry("", Content::Dir, self.dir_mode.unwrap_or(0o755)))?;
        }
        Ok(added)
    }

    /// One directory entry; whether it (or something beneath it) went into
    /// the layer.
    fn visit(
        &self,
        tree: &mut Tree,
        host: &Path,
        rel: &str,
        active: &mut HashSet<PathBuf>,
    ) -> Result<bool> {
        let lmeta =
            fs::symlink_metadata(host).with_context(|| format!("reading {}", host.display()))?;
        let meta = match (lmeta.file_type().is_symlink(), self.follow) {
            (true, false) => return self.keep_symlink(tree, host, rel),
            (true, true) => self.follow_symlink(host)?,
            (false, _) => lmeta,
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            return self.visit_dir(tree, host, rel, active);
        }
        if !ft.is_file() {
            anyhow::bail!(
                "{}: {} is not a regular file, directory or symlink; only those can go into a layer (exclude it)",
                self.at,
                host.display()
            );
        }
        if !self.included(rel) {
            return Ok(false);
        }
        let mode = self
            .file_mode
            .unwrap_or_else(|| normalized_file_mode(&meta));
        let content = Content::File {
            path: host.to_path_buf(),
            stamp: Stamp::of(&meta),
        };
        tree.insert(self.entry(rel, content, mode))?;
        Ok(true)
    }

    /// A symlink kept as a symlink (`follow_symlinks = false`).
    fn keep_symlink(&self, tree: &mut Tree, host: &Path, rel: &str) -> Result<bool> {
        let target =
            fs::read_link(host).with_context(|| format!("reading symlink {}", host.display()))?;
        let Some(target) = target.to_str() else {
            anyhow::bail!(
                "{}: symlink {} has a non-UTF-8 target",
                self.at,
                host.display()
            );
        };
        if !self.included(rel) {
            return Ok(false);
        }
        tree.insert(self.entry(rel, Content::Symlink(target.to_string()), 0o777))?;
        Ok(true)
    }

    /// What a followed symlink points to, which must stay in the tree.
    fn follow_symlink(&self, host: &Path) -> Result<fs::Metadata> {
        let resolved = fs::canonicalize(host).map_err(|e| {
            self.at.error(
                "follow_symlinks",
                format!("symlink {} cannot be followed: {e}", host.display()),
            )
        })?;
        if !resolved.starts_with(&self.canon_root) {
            return Err(self
                .at
                .error(
                    "follow_symlinks",
                    format!(
                        "symlink {} points to {}, outside the source tree {}; refusing to copy it into the image",
                        host.display(),
                        resolved.display(),
                        self.root.display()
                    ),
                )
                .into());
        }
        fs::metadata(&resolved).with_context(|| format!("reading {}", resolved.display()))
    }

    /// A directory: its contents, then itself if anything in it (or it,
    /// by the include globs) goes into the layer. `active` holds the
    /// directories being walked, so a followed link back up is a loop.
    fn visit_dir(
        &self,
        tree: &mut Tree,
        host: &Path,
        rel: &str,
        active: &mut HashSet<PathBuf>,
    ) -> Result<bool> {
        let canon = fs::canonicalize(host)?;
        if !active.insert(canon.clone()) {
            return Err(self
                .at
                .error(
                    "follow_symlinks",
                    format!("symlink loop at {}", host.display()),
                )
                .into());
        }
        let inner = self.walk(tree, host, rel, active)?;
        active.remove(&canon);
        if !(inner || self.included(rel)) {
            return Ok(false);
        }
        tree.insert(self.entry(rel, Content::Dir, self.dir_mode.unwrap_or(0o755)))?;
        Ok(true)
    }

    fn included(&self, rel: &str) -> bool {
        self.include.is_none_or(|g| g.is_match(rel))
    }
}
