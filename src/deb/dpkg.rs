//! The dpkg database of installed packages, as scanners (Trivy, Grype,
//! syft) and `dpkg-query`/`dpkg --verify` read it: `var/lib/dpkg/status`
//! with each package's control fields and `Status: install ok installed`
//! (plus `Conffiles` with their md5sums), and per package
//! `var/lib/dpkg/info/NAME.list` (every path it ships), `.md5sums` and
//! `.conffiles` as shipped.

use super::{Kind, Package};
use md5::{Digest, Md5};
use std::collections::HashMap;

pub const ADMINDIR: &str = "var/lib/dpkg";

/// The database files for `pkgs` (image path without `/`, content), sorted
/// by package name as dpkg keeps its status file.
pub fn database(pkgs: &[Package]) -> Vec<(String, Vec<u8>)> {
    let mut sorted: Vec<&Package> = pkgs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut status = String::new();
    let mut files = Vec::new();
    for p in sorted {
        status.push_str(&status_entry(p));
        let info = format!("{ADMINDIR}/info/{}", p.info_name());
        files.push((format!("{info}.list"), list(p).into_bytes()));
        if let Some(m) = &p.md5sums {
            files.push((format!("{info}.md5sums"), m.clone()));
        }
        if !p.conffiles.is_empty() {
            let text: String = p.conffiles.iter().map(|c| format!("{c}\n")).collect();
            files.push((format!("{info}.conffiles"), text.into_bytes()));
        }
    }
    files.push((format!("{ADMINDIR}/status"), status.into_bytes()));
    // Info database format 1: files of `Multi-Arch: same` packages are
    // named `NAME:ARCH.*` (without it dpkg looks for `NAME.*`).
    files.push((format!("{ADMINDIR}/info/format"), b"1\n".to_vec()));
    files
}

/// The control paragraph with `Status` after `Package` (where dpkg puts
/// it) and `Conffiles` at the end.
fn status_entry(p: &Package) -> String {
    let mut out = String::new();
    for line in p.control.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
        }
    }
    if !p.conffiles.is_empty() {
        let content: HashMap<&str, &[u8]> = p
            .files
            .iter()
            .filter_map(|f| match &f.kind {
                Kind::Regular(d) => Some((f.path.as_str(), d.as_slice())),
                _ => None,
            })
            .collect();
        out.push_str("Conffiles:\n");
        for c in &p.conffiles {
            let md5 = content
                .get(c.trim_start_matches('/'))
                .map(|d| hex::encode(Md5::digest(d)))
                // dpkg's marker for a conffile the package does not ship.
                .unwrap_or_else(|| "newconffile".into());
            out.push_str(&format!(" {c} {md5}\n"));
        }
    }
    out.push('\n');
    out
}

/// `/.` then every path of the package, as dpkg lists them (package paths,
/// not merged-/usr ones: dpkg resolves them through the /usr links).
fn list(p: &Package) -> String {
    let mut out = String::from("/.\n");
    for f in &p.files {
        out.push('/');
        out.push_str(&f.path);
        out.push('\n');
    }
    out
}
