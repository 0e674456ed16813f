//! The build sandbox: a cleared environment and no network.
//!
//! Every build command runs with `env_clear()` plus a fixed set of
//! variables (PATH=/usr/bin:/bin, LC_ALL=C, TZ=UTC, SOURCE_DATE_EPOCH, a
//! temporary HOME and TMPDIR), umask 022, and, unless the network is
//! explicitly allowed, inside util-linux `unshare`:
//!   `unshare --net --pid --fork --kill-child [--map-root-user] -- CMD`
//! The new network namespace has only a loopback interface, down, so any
//! download attempt (cmake's `file(DOWNLOAD)`, a git submodule update, a
//! compiler plugin phoning home) fails at once instead of quietly making the
//! build depend on the internet. As root, `--net` needs nothing else;
//! unprivileged, `--map-root-user` adds a user namespace (as `unshare -rn`).
//! The PID namespace with `--kill-child` makes the whole build process tree
//! die with mpsi: the `unshare` process gets SIGKILL when mpsi dies
//! (PR_SET_PDEATHSIG), its child is the namespace's init, and the kernel
//! kills every process of a namespace whose init is gone. So `kill -9` of
//! mpsi never leaves compilers writing into a tree the next run rebuilds.

use anyhow::{Result, bail};
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How build commands reach the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Net {
    /// A network namespace of its own, entered as root.
    Isolated,
    /// A user + network namespace (unprivileged).
    IsolatedUserns,
    /// No isolation: `--allow-network`. Outputs are marked non-hermetic.
    Host,
}

impl Net {
    pub fn hermetic(self) -> bool {
        self != Net::Host
    }
}

/// The sandbox could not be set up and the network was not allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot run the build without network: creating a network namespace failed ({why}). \
Run mpsi as root, or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
user.max_user_namespaces > 0), or pass --allow-network to build with the host's network \
(the output is then recorded as non-hermetic)"
)]
pub struct NoSandbox {
    pub why: String,
}

pub const PATH: &str = "/usr/bin:/bin";

pub struct Sandbox {
    pub net: Net,
    env: Vec<(String, String)>,
}

impl Sandbox {
    /// Finds out how to isolate the network here (by running `true` in the
    /// namespaces); with `allow_network`, falls back to the host network.
    pub fn probe(allow_network: bool) -> Result<Net> {
        if allow_network {
            return Ok(Net::Host);
        }
        let root = unsafe { libc::geteuid() } == 0;
        let mut tried = Vec::new();
        let candidates: &[Net] = if root {
            &[Net::Isolated, Net::IsolatedUserns]
        } else {
            &[Net::IsolatedUserns]
        };
        for &net in candidates {
            let mut c = wrap(net, OsStr::new("true"), &[]);
            c.env_clear()
                .env("PATH", PATH)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            match c.output() {
                Ok(o) if o.status.success() => return Ok(net),
                Ok(o) => tried.push(format!(
                    "{net:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => tried.push(format!("{net:?}: running unshare: {e}")),
            }
        }
        Err(NoSandbox {
            why: tried.join("; "),
        }
        .into())
    }

    pub fn new(net: Net, env: Vec<(String, String)>) -> Sandbox {
        Sandbox { net, env }
    }

    /// A command that runs `program args` in the sandbox, in `cwd`.
    pub fn command(&self, program: &str, args: &[&OsStr], cwd: &Path) -> Command {
        let mut c = wrap(self.net, OsStr::new(program), args);
        c.env_clear();
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.current_dir(cwd).stdin(Stdio::null());
        c
    }
}

fn wrap(net: Net, program: &OsStr, args: &[&OsStr]) -> Command {
    let mut c = match net {
        Net::Host => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        Net::Isolated | Net::IsolatedUserns => {
            let mut c = Command::new("unshare");
            c.args(["--net", "--pid", "--fork", "--kill-child"]);
            if net == Net::IsolatedUserns {
                c.arg("--map-root-user");
            }
            c.arg("--").arg(program).args(args);
            c
        }
    };
    // SAFETY: only async-signal-safe calls (umask, prctl) between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o022);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c
}

/// Looks a command up in the sandbox's PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    PATH.split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// Fails unless `unshare` exists (util-linux, essential on Debian).
pub fn require_unshare(net: Net) -> Result<()> {
    if net.hermetic() && which("unshare").is_none() {
        bail!("unshare (util-linux) is not installed; apt-get install util-linux");
    }
    Ok(())
}
