//! The image's permission policy, held at assemble time over every entry
//! of every layer (so the final rootfs and each layer alike): no
//! setuid/setgid file, and nothing writable by others but `/tmp` (1777),
//! unless `[image.permissions]` allows the path with a reason.
//!
//! Entries the spec itself declares (a dir, file, tree or its modes) break
//! the policy only by a mistake in the spec: that is an error naming the
//! entry. Entries from packages get the bits dropped, and each change is
//! reported so the user sees what differs from the package.

use super::{Content, Entry, Origin};
use crate::spec::{Allowed, Permissions, SpecError};
use anyhow::Result;
use serde::Serialize;

/// What the policy changed and kept, for the assemble report.
#[derive(Debug, Default, Serialize)]
pub struct PermissionReport {
    /// Bits dropped from package files.
    pub changed: Vec<Change>,
    /// Exceptions `[image.permissions]` allows, kept as they are.
    pub kept: Vec<Kept>,
}

#[derive(Debug, Serialize)]
pub struct Change {
    pub layer: String,
    /// Absolute image path.
    pub path: String,
    /// Octal modes before and after.
    pub from: String,
    pub to: String,
    /// "setuid", "setgid", "world-writable" (comma-separated when several).
    pub dropped: String,
    /// Where the entry came from (package name and version).
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct Kept {
    pub layer: String,
    pub path: String,
    pub mode: String,
    pub reason: String,
}

const SETID: u32 = 0o6000;
const OTHER_WRITE: u32 = 0o002;

/// Applies the policy to one layer's entries, recording into `report`.
pub fn apply(
    layer: &str,
    entries: &mut [Entry],
    policy: &Permissions,
    report: &mut PermissionReport,
) -> Result<()> {
    for e in entries.iter_mut() {
        if matches!(e.content, Content::Symlink(_)) {
            continue; // a link's own mode means nothing
        }
        let allowed = |list: &[Allowed]| list.iter().find(|a| a.path == e.path).cloned();
        let mut drop = 0;
        let mut dropped = Vec::new();
        if e.mode & SETID != 0 {
            match allowed(&policy.setid) {
                Some(a) => keep(report, layer, e, a),
                None => {
                    spec_mistake(e, "sets the setuid or setgid bit", "setid")?;
                    drop |= e.mode & SETID;
                    if e.mode & 0o4000 != 0 {
                        dropped.push("setuid");
                    }
                    if e.mode & 0o2000 != 0 {
                        dropped.push("setgid");
                    }
                }
            }
        }
        let tmp = e.path == "tmp" && matches!(e.content, Content::Dir) && e.mode & 0o7777 == 0o1777;
        if e.mode & OTHER_WRITE != 0 && !tmp {
            match allowed(&policy.world_writable) {
                Some(a) => keep(report, layer, e, a),
                None => {
                    spec_mistake(e, "is writable by others", "world_writable")?;
                    drop |= OTHER_WRITE;
                    dropped.push("world-writable");
                }
            }
        }
        if drop != 0 {
            let from = e.mode;
            e.mode &= !drop;
            report.changed.push(Change {
                layer: layer.to_string(),
                path: format!("/{}", e.path),
                from: format!("{from:04o}"),
                to: format!("{:04o}", e.mode),
                dropped: dropped.join(","),
                source: match &e.origin {
                    Origin::Packages { what, .. } => what.clone(),
                    o => o.describe(),
                },
            });
        }
    }
    Ok(())
}

/// Every exception of the spec must match something in the image: a stale
/// one would allow a file that appears later without anyone deciding it.
pub fn check_exceptions(
    spec_file: &std::path::Path,
    policy: &Permissions,
    report: &PermissionReport,
) -> Result<()> {
    for (list, field) in [
        (&policy.setid, "image.permissions.setid"),
        (&policy.world_writable, "image.permissions.world_writable"),
    ] {
        for a in list {
            if !report.kept.iter().any(|k| k.path == format!("/{}", a.path)) {
                return Err(SpecError {
                    file: spec_file.to_path_buf(),
                    line: Some(a.line),
                    field: format!("{field} \"/{}\"", a.path),
                    message: "no entry of the image has that permission at that path; \
                              remove the exception"
                        .into(),
                }
                .into());
            }
        }
    }
    Ok(())
}

fn keep(report: &mut PermissionReport, layer: &str, e: &Entry, a: Allowed) {
    let path = format!("/{}", e.path);
    if report
        .kept
        .iter()
        .any(|k| k.path == path && k.layer == layer)
    {
        return; // both bits allowed by both lists: one line
    }
    report.kept.push(Kept {
        layer: layer.to_string(),
        path,
        mode: format!("{:04o}", e.mode),
        reason: a.reason,
    });
}

/// An entry whose mode the spec chose breaks the policy: an error at the
/// spec's line. Package entries (and implied parents) pass, to be fixed.
fn spec_mistake(e: &Entry, what: &str, list: &str) -> Result<()> {
    let at = match &e.origin {
        Origin::Declared(l) | Origin::Tree(l) | Origin::Accounts(l) => l,
        Origin::Packages { .. } | Origin::Implied => return Ok(()),
    };
    Err(SpecError {
        file: at.file.clone(),
        line: Some(at.line),
        field: at.what.clone(),
        message: format!(
            "/{} has mode {:04o}, which {what}; change the mode, or allow the path in \
             [image.permissions] {list} with a reason",
            e.path, e.mode
        ),
    }
    .into())
}
