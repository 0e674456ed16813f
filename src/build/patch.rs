//! Applying a patch series: each patch dry-run first, then for real.

use super::PatchFailed;
use super::sandbox;
use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Applies one patch with `patch -p1`, after a dry run that must succeed;
/// a failing patch is reported with the file and hunk patch names.
pub(super) fn apply_patch(src: &Path, name: &str, path: &Path, log: &mut fs::File) -> Result<()> {
    let abs = fs::canonicalize(path).with_context(|| format!("reading {}", path.display()))?;
    let run = |dry: bool| -> Result<(bool, String)> {
        let mut c = Command::new("patch");
        c.args([
            "-p1",
            "--batch",
            "--forward",
            "--fuzz=0",
            "--no-backup-if-mismatch",
        ]);
        if dry {
            c.arg("--dry-run");
        }
        c.arg("-i")
            .arg(&abs)
            .current_dir(src)
            .env_clear()
            .env("PATH", sandbox::PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        let out = c.output().context("running patch")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    };
    let (ok, text) = run(true)?;
    writeln!(log, "$ patch -p1 --dry-run -i {name}\n{text}")?;
    if !ok {
        let mut file = String::new();
        let mut hunks = Vec::new();
        for l in text.lines() {
            if let Some(f) = l
                .strip_prefix("checking file ")
                .or_else(|| l.strip_prefix("patching file "))
            {
                if hunks.is_empty() {
                    file = f.trim().to_string();
                }
            } else if (l.starts_with("Hunk #") && l.contains("FAILED"))
                || l.contains("can't find file to patch")
                || l.contains("No file to patch")
            {
                hunks.push(l.trim().to_string());
            } else if l.contains("Reversed (or previously applied) patch detected") {
                hunks.push("already applied (reversed patch detected)".into());
            }
        }
        if hunks.is_empty() {
            hunks.push(text.lines().last().unwrap_or("patch failed").to_string());
        }
        return Err(PatchFailed {
            patch: format!("{name} ({})", path.display()),
            file,
            detail: hunks.join("; "),
        }
        .into());
    }
    let (ok, text) = run(false)?;
    writeln!(log, "$ patch -p1 -i {name}\n{text}")?;
    if !ok {
        bail!("patch {name} passed its dry run but failed to apply: {text}");
    }
    Ok(())
}
