//! A `[[layer.packages]]` source: the lock's runtime packages, read from
//! their `.deb` files straight into the layer tree (merged /usr, the
//! packages' own modes and owners), with the merged-/usr links and the dpkg
//! database that scanners read.

use super::{Content, Entry, Origin, Tree};
use crate::deb::{self, Kind, dpkg};
use crate::spec::{Loc, Owner};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::path::PathBuf;

/// Inserts the packages' files for which `wanted(image path)` holds.
pub(super) fn insert(
    tree: &mut Tree,
    debs: &[PathBuf],
    wanted: &(dyn Fn(&str) -> bool + Sync),
    at: &Loc,
) -> Result<()> {
    // Decompressing xz dominates: read the packages in parallel.
    let pkgs: Vec<deb::Package> = debs
        .par_iter()
        .map(|p| {
            let mut pkg = deb::read_file(p)?;
            deb::retain(&mut pkg, wanted)?;
            Ok(pkg)
        })
        .collect::<Result<_>>()
        .with_context(|| format!("reading the runtime packages for {at}"))?;
    let generated = |what: &str, path: String, content: Content, mode: u32| Entry {
        path,
        content,
        mode,
        owner: Owner::root(),
        origin: Origin::Packages {
            what: what.into(),
            at: at.clone(),
        },
    };
    for dir in deb::MERGED_USR {
        let link = Content::Symlink(format!("usr/{dir}"));
        tree.insert(generated("the merged-/usr links", dir.into(), link, 0o777))?;
    }
    for (path, data) in dpkg::database(&pkgs) {
        tree.insert(generated(
            "the dpkg database",
            path,
            Content::Inline(data),
            0o644,
        ))?;
    }
    for pkg in pkgs {
        let what = format!("package {} {}", pkg.name, pkg.version);
        for f in deb::image_files(pkg) {
            let content = match f.kind {
                Kind::Dir => Content::Dir,
                Kind::Regular(d) => Content::Inline(d),
                Kind::Symlink(t) => Content::Symlink(t),
                Kind::Hardlink(t) => Content::Hardlink(t),
            };
            let owner = Owner {
                uid: f.uid,
                gid: f.gid,
                user: f.user,
                group: f.group,
            };
            let mut e = generated(&what, f.path, content, f.mode);
            e.owner = owner;
            tree.insert(e)?;
        }
    }
    Ok(())
}

/// Both entries come from packages and are the same file, link or hard
/// link with the same mode and owner: shipping it twice is harmless.
pub(super) fn same_shipped(old: &Entry, new: &Entry) -> bool {
    let from_packages = |e: &Entry| matches!(e.origin, Origin::Packages { .. });
    let same_content = match (&old.content, &new.content) {
        (Content::Inline(a), Content::Inline(b)) => a == b,
        (Content::Symlink(a), Content::Symlink(b))
        | (Content::Hardlink(a), Content::Hardlink(b)) => a == b,
        _ => false,
    };
    from_packages(old)
        && from_packages(new)
        && same_content
        && old.mode == new.mode
        && old.owner == new.owner
}

/// Why two package entries of one path cannot both go in.
pub(super) fn conflict_reason(old: &Entry, new: &Entry) -> Option<&'static str> {
    let from_packages = |e: &Entry| matches!(e.origin, Origin::Packages { .. });
    (from_packages(old) && from_packages(new)).then_some(
        "with different content or metadata; dpkg would refuse to install both: \
exclude one of them in the lock's [runtime]",
    )
}
