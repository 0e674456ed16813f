//! Shared helpers for the integration tests: a fixture source tree, a spec
//! over it, and the mpsi binary run with its own store.
#![allow(dead_code)]

pub mod registry;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const LONG_DIR: &str = "a-directory-name-that-is-quite-long-on-purpose/and-another-level-of-it-to-pass-the-ustar-limits/and-one-more-to-be-sure-0123456789";

/// How to vary host state between two copies of the fixture.
#[derive(Clone, Copy)]
pub struct HostVariant {
    pub file_mode: u32,
    pub exec_mode: u32,
    pub dir_mode: u32,
    pub mtime: i64,
}

pub const VARIANT_A: HostVariant = HostVariant {
    file_mode: 0o644,
    exec_mode: 0o755,
    dir_mode: 0o755,
    mtime: 1_000_000_000,
};
pub const VARIANT_B: HostVariant = HostVariant {
    file_mode: 0o664,
    exec_mode: 0o775,
    dir_mode: 0o775,
    mtime: 1_600_000_000,
};

/// Writes the fixture into `root`: `app/` (the tree source) and `extra.conf`.
pub fn make_fixture(root: &Path, v: HostVariant) {
    let app = root.join("app");
    fs::create_dir_all(app.join("bin")).unwrap();
    fs::create_dir_all(app.join("share/doc")).unwrap();
    fs::create_dir_all(app.join(LONG_DIR)).unwrap();
    fs::create_dir_all(app.join("cache")).unwrap();
    fs::write(app.join("bin/server"), b"#!/bin/sh\necho server\n").unwrap();
    fs::write(app.join("share/doc/README"), b"read me\n").unwrap();
    fs::write(
        app.join("share/big.bin"),
        (0..3_000_000u32)
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    fs::write(
        app.join(LONG_DIR).join("deep-file-with-a-long-name.txt"),
        b"deep\n",
    )
    .unwrap();
    fs::write(app.join("cache/skip.tmp"), b"excluded\n").unwrap();
    fs::hard_link(
        app.join("share/doc/README"),
        app.join("share/doc/README.hardlink"),
    )
    .unwrap();
    symlink("server", app.join("bin/server-alias")).unwrap();
    symlink("/etc/hostname", app.join("bin/absolute-link")).unwrap();
    fs::write(root.join("extra.conf"), b"[section]\nkey = value\n").unwrap();
    set_host_state(root, v);
}

/// Applies modes and mtimes of a variant to everything under `root`.
pub fn set_host_state(root: &Path, v: HostVariant) {
    for entry in walk(root) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = if meta.is_dir() {
            v.dir_mode
        } else if entry.ends_with("server") {
            v.exec_mode
        } else {
            v.file_mode
        };
        fs::set_permissions(&entry, fs::Permissions::from_mode(mode)).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(v.mtime as u64);
        if meta.is_file() {
            fs::File::options()
                .write(true)
                .open(&entry)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }
}

pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A spec over the fixture, exercising every source kind.
pub fn fixture_spec(root: &Path) -> PathBuf {
    let spec = root.join("image.toml");
    fs::write(
        &spec,
        r#"
[image]
name = "mpsi-test/fixture"
tag = "v1"
source_date_epoch = 1700000000
revision = "0123abcd"

[config]
entrypoint = ["/opt/app/bin/server"]
cmd = ["--serve"]
env = ["PATH=/usr/bin:/bin", "MODE=test"]
exposed_ports = ["3306/tcp", "9000/udp"]
volumes = ["/data"]
working_dir = "/opt/app"
user = "1000:1000"
stop_signal = "SIGTERM"

[config.labels]
"org.example.b" = "2"
"org.example.a" = "1"

[config.healthcheck]
test = ["CMD", "/opt/app/bin/server", "--check"]
interval = "10s"
timeout = "1m30s"
retries = 4

[[layer]]
name = "base"
[[layer.dir]]
path = "/data"
owner = "1000:1000"
owner_names = "app:app"
mode = "0750"
[[layer.symlink]]
path = "/usr/local/bin/server"
target = "/opt/app/bin/server"

[[layer]]
name = "app"
[[layer.tree]]
from = "app"
to = "/opt/app"
exclude = ["cache/**", "cache"]
owner = "1000:1000"
owner_names = "app:app"

[[layer]]
name = "config"
[[layer.file]]
from = "extra.conf"
to = "/etc/app/extra.conf"
mode = "0600"
owner = "1000:1000"
[[layer.file]]
content = "inline text\n"
to = "/etc/app/inline.txt"
"#,
    )
    .unwrap();
    spec
}

pub fn mpsi_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mpsi")
}

/// `mpsi` with a private store and no SOURCE_DATE_EPOCH from the caller.
pub fn mpsi(store: &Path) -> Command {
    let mut c = Command::new(mpsi_bin());
    c.env("MPSI_STORE", store).env_remove("SOURCE_DATE_EPOCH");
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}\nstdout: {}\nstderr: {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Assembles `spec` into `out`; returns the --json report.
pub fn assemble(store: &Path, spec: &Path, out: &Path) -> serde_json::Value {
    json(&run_ok(
        mpsi(store)
            .arg("assemble")
            .arg(spec)
            .arg("-o")
            .arg(out)
            .arg("--json"),
    ))
}

/// A tool the suite needs from Debian (installed by .ci/run).
pub fn require_tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is not installed; the test suite needs it (apt-get install {name}, as .ci/run does)"
    );
}

/// The fixture, assembled once into a fresh store and layout.
pub struct Assembled {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub store: PathBuf,
    pub layout: PathBuf,
    pub report: serde_json::Value,
}

pub fn assembled_fixture() -> Assembled {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_fixture(&src, VARIANT_A);
    let store = tmp.path().join("store");
    let layout = tmp.path().join("oci");
    let report = assemble(&store, &fixture_spec(&src), &layout);
    Assembled {
        tmp,
        src,
        store,
        layout,
        report,
    }
}

/// Which layers of an assemble report came from the store's cache.
pub fn cached_flags(report: &serde_json::Value) -> Vec<bool> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cached"].as_bool().unwrap())
        .collect()
}

/// A tiny HTTP/1.1 file server on 127.0.0.1 for fetch tests. Serves `files`
/// (path -> bytes), honours `Range: bytes=N-`, and records every request.
/// With `cut_first`, the first response for a path promises the whole body
/// but the connection closes after that many bytes.
pub struct TestServer {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestServer {
    pub fn start(files: Vec<(String, Vec<u8>)>, cut_first: Option<usize>) -> TestServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            let mut cut = cut_first;
            // Bounded: a test never needs more than a few dozen requests.
            for stream in listener.incoming().take(64) {
                let Ok(mut s) = stream else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut range: Option<usize> = None;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = v.trim().trim_end_matches('-').parse().ok();
                    }
                }
                log.lock().unwrap().push(match range {
                    Some(n) => format!("GET {path} range={n}"),
                    None => format!("GET {path}"),
                });
                let Some((_, body)) = files.iter().find(|(p, _)| *p == path) else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                };
                let start = range.unwrap_or(0).min(body.len());
                let part = &body[start..];
                let head = if range.is_some() {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nConnection: close\r\n\r\n",
                        part.len(),
                        start,
                        body.len().saturating_sub(1),
                        body.len()
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        part.len()
                    )
                };
                let _ = s.write_all(head.as_bytes());
                match cut.take() {
                    Some(n) => {
                        let _ = s.write_all(&part[..n.min(part.len())]);
                    }
                    None => {
                        let _ = s.write_all(part);
                    }
                }
                let _ = s.flush();
            }
        });
        TestServer { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Runs a command that must fail; returns (exit code, stderr).
/// `mpsi assemble SPEC -o DIR/oci`, which must fail: its exit code and what it said.
pub fn assemble_fails(store: &Path, spec: &Path, dir: &Path) -> (i32, String) {
    run_fail(
        mpsi(store)
            .arg("assemble")
            .arg(spec)
            .arg("-o")
            .arg(dir.join("oci")),
    )
}

pub fn run_fail(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("spawn");
    assert!(
        !out.status.success(),
        "{:?} should have failed\nstdout: {}\nstderr: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Compares `actual` with the golden value `tests/golden/<name>.json`:
/// bytes that must not change (image, layer and archive digests) are pinned
/// there. With MPSI_UPDATE_GOLDEN=1 (see tests/regen-golden.sh) the file is
/// rewritten instead.
pub fn check_golden(name: &str, actual: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var("MPSI_UPDATE_GOLDEN").as_deref() == Ok("1") {
        fs::write(&path, text).unwrap();
        eprintln!("golden values written to {}", path.display());
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with `bash tests/regen-golden.sh`",
            path.display()
        )
    });
    let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
    assert!(
        &expected == actual,
        "the bytes of {name} changed.\nexpected (from {}):\n{}\nactual:\n{}\n\
         Image and archive bytes must not change by accident: a dependency bump \
         (flate2, zstd, tar, oci-spec, serde_json) or a code change altered them. \
         If the change is intended, regenerate the golden values with \
         `bash tests/regen-golden.sh` and call the change out in the commit message.",
        path.display(),
        serde_json::to_string_pretty(&expected).unwrap(),
        text
    );
}

/// The digests an assemble report names: manifest, config and each layer.
pub fn image_digests(report: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "manifest": report["manifest_digest"],
        "config": report["config_digest"],
        "layers": report["layers"].as_array().unwrap().iter().map(|l| serde_json::json!({
            "name": l["name"],
            "digest": l["digest"],
            "diff_id": l["diff_id"],
            "size": l["size"],
        })).collect::<Vec<_>>(),
    })
}

/// `mpsi export` of the image in `layout` as `format` into `file`.
pub fn export(store: &Path, layout: &Path, format: &str, file: &Path) {
    run_ok(
        mpsi(store)
            .args(["export", "--format", format, "-o"])
            .arg(file)
            .arg("-l")
            .arg(layout),
    );
}

/// The Docker engine .ci/test started (MPSI_TEST_DOCKER_HOST); a test that
/// needs one and runs without it fails, it never passes silently.
pub fn docker_host() -> String {
    match std::env::var("MPSI_TEST_DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => panic!(
            "MPSI_TEST_DOCKER_HOST is unset: this test needs a Docker engine \
             (bash .ci/test starts a private dockerd and sets it; see .ci/dockerd.sh)"
        ),
    }
}

/// The docker CLI, talking to `host`.
pub fn docker(host: &str) -> Command {
    let mut c = Command::new(require_tool("docker"));
    c.env("DOCKER_HOST", host);
    c
}

/// `mpsi export --format docker-archive -o - | docker load`; docker's output.
pub fn export_into_docker(store: &Path, layout: &Path, host: &str) -> Output {
    let mut export = mpsi(store)
        .args(["export", "--format", "docker-archive", "-o", "-", "-l"])
        .arg(layout)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let load = docker(host)
        .arg("load")
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(export.wait().unwrap().success());
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    load
}

/// apt's package lists, which `mpsi lock --runtime` reads.
pub fn require_apt_lists() {
    let out = Command::new(require_tool("apt-cache"))
        .args(["show", "--no-all-versions", "bash"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\nFilename: "),
        "apt has no package lists: run `apt-get update` (as .ci/test does) before this test"
    );
}

// ---- an unpacked image: permissions and accounts ----------------------------

/// Every path of an unpacked image that is setuid/setgid, or writable by
/// others (symlinks aside), except /tmp with mode 1777.
pub fn risky_paths(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for p in walk(root) {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let mode = m.mode() & 0o7777;
        let tmp = rel == "tmp" && m.is_dir() && mode == 0o1777;
        if mode & 0o6000 != 0 || (mode & 0o002 != 0 && !tmp) {
            out.push(format!("/{rel} {mode:04o}"));
        }
    }
    out
}

/// A program of the unpacked image run inside it (chroot, so as root, as
/// the tests run in CI); its stdout.
pub fn in_image(root: &Path, args: &[&str]) -> String {
    let out = Command::new(require_tool("chroot"))
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chroot {args:?} into the image failed (the test must run as root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The accounts of the real spec, as real readers see them in an unpacked
/// image: shadow-utils' pwck and grpck report nothing (-q: not the missing
/// /nonexistent home, Debian's convention for nobody), the image's own
/// glibc finds them through its nsswitch.conf, and its setpriv switches to
/// mysql as the entrypoint does.
pub fn assert_accounts_read_by_the_image(root: &Path) {
    for (tool, args) in [
        ("pwck", &["-r", "-q", "-R"][..]),
        ("grpck", &["-r", "-R"][..]),
    ] {
        let out = run_ok(Command::new(require_tool(tool)).args(args).arg(root));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{tool}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{tool}");
    }
    assert_eq!(
        in_image(root, &["/usr/bin/getent", "passwd", "mysql", "root"]),
        "mysql:x:999:999:MariaDB Server:/var/lib/mysql:/bin/false\n\
         root:x:0:0:root:/root:/bin/bash\n"
    );
    assert_eq!(
        in_image(root, &["/usr/bin/getent", "group", "shadow"]),
        "shadow:x:42:\n"
    );
    assert_eq!(
        in_image(
            root,
            &[
                "/usr/bin/setpriv",
                "--reuid=mysql",
                "--regid=mysql",
                "--init-groups",
                "/usr/bin/id"
            ]
        ),
        "uid=999(mysql) gid=999(mysql) groups=999(mysql)\n"
    );
}
