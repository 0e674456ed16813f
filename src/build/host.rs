//! What a build needs from this machine: its tools and Debian -dev packages
//! (all checked up front, a missing one named with the `apt-get install`
//! line), their versions (which key the output), and a network sandbox.
//! This is the only part of planning that does I/O.

use super::MissingDeps;
use super::sandbox::{self, Net};
use crate::lock::Build;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// The machine facts a build key depends on.
pub struct Host {
    /// Each tool's `--version` line and each package's Debian version.
    pub toolchain: BTreeMap<String, String>,
    pub net: Net,
}

pub fn probe(name: &str, b: &Build, patches: bool, allow_network: bool) -> Result<Host> {
    let tools = required_tools(b, patches);
    check_installed(name, &tools, &b.packages)?;
    let net = sandbox::Sandbox::probe(allow_network)?;
    sandbox::require_unshare(net)?;
    Ok(Host {
        toolchain: identify(&tools, &b.packages)?,
        net,
    })
}

/// The lock's tools plus what the recipe itself runs.
fn required_tools(b: &Build, patches: bool) -> Vec<String> {
    let mut tools: Vec<String> = b.tools.clone();
    let mut need = |t: &str| {
        if !tools.iter().any(|x| x == t) {
            tools.push(t.into());
        }
    };
    need("cmake");
    need("ninja");
    if patches {
        need("patch");
    }
    if b.strip {
        for t in ["objcopy", "strip", "readelf"] {
            need(t);
        }
    }
    tools
}

/// Debian package that provides a command.
fn package_of(tool: &str) -> &str {
    match tool {
        "ninja" => "ninja-build",
        "objcopy" | "strip" | "readelf" => "binutils",
        "unshare" => "util-linux",
        "cc" => "gcc",
        "c++" => "g++",
        other => other,
    }
}

fn check_installed(name: &str, tools: &[String], packages: &[String]) -> Result<()> {
    let missing_tools: Vec<&str> = tools
        .iter()
        .map(String::as_str)
        .filter(|t| sandbox::which(t).is_none())
        .collect();
    let missing_pkgs = missing_packages(packages)?;
    if missing_tools.is_empty() && missing_pkgs.is_empty() {
        return Ok(());
    }
    let mut what = Vec::new();
    if !missing_tools.is_empty() {
        what.push(format!(
            "missing tools (looked in {}): {}",
            sandbox::PATH,
            missing_tools.join(", ")
        ));
    }
    if !missing_pkgs.is_empty() {
        what.push(format!("missing packages: {}", missing_pkgs.join(", ")));
    }
    let mut install: Vec<String> = missing_tools
        .iter()
        .map(|t| package_of(t).to_string())
        .chain(missing_pkgs)
        .collect();
    install.sort();
    install.dedup();
    Err(MissingDeps {
        build: name.into(),
        what: what.join("; "),
        packages: install,
    }
    .into())
}

fn missing_packages(packages: &[String]) -> Result<Vec<String>> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    if sandbox::which("dpkg-query").is_none() {
        bail!(
            "the lock lists Debian packages ({}) but dpkg-query is not installed; mpsi builds on Debian",
            packages.join(", ")
        );
    }
    let mut missing = Vec::new();
    for p in packages {
        let out = quiet_command("dpkg-query")
            .args(["-W", "-f=${db:Status-Abbrev}", p])
            .output()
            .context("running dpkg-query")?;
        if !String::from_utf8_lossy(&out.stdout).starts_with("ii") {
            missing.push(p.clone());
        }
    }
    Ok(missing)
}

/// A host command with a cleared environment and the sandbox's PATH, so
/// its output does not depend on the caller's locale or PATH.
fn quiet_command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", sandbox::PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    c
}

/// The toolchain identity: each tool's version line and each package's
/// Debian version.
fn identify(tools: &[String], packages: &[String]) -> Result<BTreeMap<String, String>> {
    let mut id = BTreeMap::new();
    for t in tools {
        let out = quiet_command(&sandbox::which(t).expect("checked").display().to_string())
            .arg("--version")
            .output()
            .with_context(|| format!("running {t} --version"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("").trim().to_string();
        if !out.status.success() || first.is_empty() {
            bail!("{t} --version printed no version; is {t} working?");
        }
        id.insert(t.clone(), first);
    }
    if !packages.is_empty() {
        let out = quiet_command("dpkg-query")
            .arg("-W")
            .arg("-f=${Package} ${Version} ${Architecture}\\n")
            .args(packages)
            .output()
            .context("running dpkg-query")?;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((p, v)) = l.split_once(' ') {
                id.insert(format!("pkg {p}"), v.to_string());
            }
        }
    }
    Ok(id)
}
