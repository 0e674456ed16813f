//! Debian's real registry (distribution 2.8.2) started on 127.0.0.1 with a
//! temporary config and storage, and skopeo as the independent reader that
//! pulls an image back from it.

use super::{require_tool, run_ok};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// A docker-registry process of our own, killed by PID when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry; `htpasswd`: a `user:bcrypt` line for Basic auth.
    pub fn start(htpasswd: Option<&str>) -> Registry {
        Registry::start_with(|dir| match htpasswd {
            None => String::new(),
            Some(line) => {
                let f = dir.join("htpasswd");
                fs::write(&f, format!("{line}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: mpsi-test\n    path: {}\n",
                    f.display()
                )
            }
        })
    }

    /// Starts a registry with what `extra` returns (YAML, given the
    /// registry's own directory for files) appended to its config.
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Registry {
        let bin = require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: mpsi-test-secret\n",
            dir.path().join("data").display()
        );
        cfg += &extra(dir.path());
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, cfg).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let reg = Registry {
            child,
            port,
            _dir: dir,
        };
        // Bounded wait for /v2/ to answer (200 open, 401 with auth).
        for _ in 0..100 {
            if let Some(status) = http_status(port, "/v2/")
                && (status == 200 || status == 401)
            {
                return reg;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not answer on 127.0.0.1:{port} within 10 s");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of a plain GET, or None when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pulls `reference` back with skopeo into a fresh layout and checks it
/// has our manifest digest and, byte for byte, each of our blobs.
pub fn pull_back_and_compare(reference: &str, ours: &Path, creds: Option<&str>, digest: &str) {
    let skopeo = require_tool("skopeo");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("pulled");
    let mut c = Command::new(skopeo);
    c.args(["copy", "--src-tls-verify=false"]);
    if let Some(u) = creds {
        c.arg("--src-creds").arg(u);
    }
    c.arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:t", dest.display()));
    run_ok(&mut c);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"], digest,
        "skopeo pulled another manifest"
    );
    let manifest_path = blob_path(&dest, digest);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    let mut digests = vec![
        digest.to_string(),
        manifest["config"]["digest"].as_str().unwrap().to_string(),
    ];
    for l in manifest["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in &digests {
        let theirs = fs::read(blob_path(&dest, d)).unwrap();
        let mine = fs::read(blob_path(ours, d)).unwrap();
        assert!(theirs == mine, "blob {d} differs after the round trip");
    }
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}
