//! The shared libraries a tree of programs needs from outside itself: the
//! `DT_NEEDED` names of every ELF file under a directory, minus the names
//! a file of the tree itself provides. `mpsi lock --runtime` turns them into
//! the packages that ship them.

use super::read;
use super::view::Data;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Each needed soname with the files (relative to `root`) that need it.
pub fn external_needs(root: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let mut files = Vec::new();
    let mut names = BTreeSet::new();
    list(root, root, &mut files, &mut names)?;
    let mut needs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rel in files {
        let path = root.join(&rel);
        let Some(info) = read::read(&Data::Disk(path.clone()))
            .with_context(|| format!("reading {}", path.display()))?
        else {
            continue;
        };
        for soname in info.needed {
            if !names.contains(&soname) {
                needs.entry(soname).or_default().push(rel.clone());
            }
        }
    }
    Ok(needs)
}

/// Regular files that start with the ELF magic, and the file name of every
/// file and link (a soname the tree provides itself).
fn list(
    root: &Path,
    dir: &Path,
    files: &mut Vec<String>,
    names: &mut BTreeSet<String>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let kind = e.file_type()?;
        names.insert(e.file_name().to_string_lossy().into_owned());
        if kind.is_dir() {
            list(root, &path, files, names)?;
        } else if kind.is_file() && read::is_elf(&Data::Disk(path.clone()))? {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            files.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}
