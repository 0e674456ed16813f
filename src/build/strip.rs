//! After the install: dropping object files, stripping ELF files and
//! keeping their debug info apart by build-id.

use super::sandbox;
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every regular file under `dir` (symlinks not followed), sorted.
fn regular_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Deletes the object files of a finished build. Nothing installs them,
/// and for MariaDB with debug info they are about 0.75 GB that the
/// install would otherwise be added to.
pub(super) fn prune_objects(build_dir: &Path) -> Result<()> {
    for f in regular_files(build_dir)? {
        if f.extension() == Some(OsStr::new("o")) {
            fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    Ok(())
}

/// Strips every ELF executable and shared library under `out`, moving its
/// debug info to `debug/.build-id/xx/rest.debug`. Returns the build-ids.
pub(super) fn strip_tree(out: &Path, debug: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for f in regular_files(out)? {
        let Some(kind) = elf_kind(&f)? else { continue };
        let id = build_id(&f)?;
        if let Some(id) = &id {
            let dbg = debug
                .join(".build-id")
                .join(&id[..2])
                .join(format!("{}.debug", &id[2..]));
            fs::create_dir_all(dbg.parent().expect("has parent"))?;
            tool(
                "objcopy",
                &[
                    OsStr::new("--only-keep-debug"),
                    OsStr::new("--compress-debug-sections"),
                    f.as_os_str(),
                    dbg.as_os_str(),
                ],
            )?;
            ids.push(id.clone());
        }
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--remove-section=.comment"),
            OsStr::new("--remove-section=.note"),
        ];
        if kind == ElfKind::Shared {
            args.push(OsStr::new("--strip-unneeded"));
        }
        args.push(f.as_os_str());
        tool("strip", &args)?;
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[derive(PartialEq, Eq)]
enum ElfKind {
    Exec,
    Shared,
}

fn elf_kind(path: &Path) -> Result<Option<ElfKind>> {
    let mut f = fs::File::open(path)?;
    let mut h = [0u8; 18];
    if f.read(&mut h)? < 18 || &h[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let e_type = if h[5] == 1 {
        u16::from_le_bytes([h[16], h[17]])
    } else {
        u16::from_be_bytes([h[16], h[17]])
    };
    Ok(match e_type {
        2 => Some(ElfKind::Exec),
        // PIE executables are ET_DYN too; --strip-unneeded is right for both.
        3 => Some(ElfKind::Shared),
        _ => None,
    })
}

fn build_id(path: &Path) -> Result<Option<String>> {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .env_clear()
        .env("PATH", sandbox::PATH)
        .env("LC_ALL", "C")
        .output()
        .context("running readelf")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() > 2 && s.bytes().all(|b| b.is_ascii_hexdigit())))
}

fn tool(program: &str, args: &[&OsStr]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", sandbox::PATH)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_drops_object_files_only() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir_all(d.join("sql/CMakeFiles/sql.dir")).unwrap();
        for f in ["sql/CMakeFiles/sql.dir/handler.cc.o", "top.o"] {
            fs::write(d.join(f), b"obj").unwrap();
        }
        for f in ["sql/mariadbd", "sql/libsql.a", "sql/notes.o.txt"] {
            fs::write(d.join(f), b"keep").unwrap();
        }
        prune_objects(d).unwrap();
        let left: Vec<String> = regular_files(d)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().display().to_string())
            .collect();
        assert_eq!(left, ["sql/libsql.a", "sql/mariadbd", "sql/notes.o.txt"]);
    }
}
