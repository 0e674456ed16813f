//! `mpsi push` against Debian's real registry (distribution 2.8.2), started
//! here on 127.0.0.1 with a temporary config and storage, and checked with
//! skopeo as an independent reader: every pushed image is pulled back and
//! compared blob by blob.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// A docker-registry process of our own, killed by PID when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    /// Starts a registry; `htpasswd`: a `user:bcrypt` line for Basic auth.
    fn start(htpasswd: Option<&str>) -> Registry {
        let bin = require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: mpsi-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some(line) = htpasswd {
            let f = dir.path().join("htpasswd");
            fs::write(&f, format!("{line}\n")).unwrap();
            cfg += &format!("auth:\n  htpasswd:\n    realm: mpsi-test\n    path: {}\n", f.display());
        }
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
        let reg = Registry { child, port, _dir: dir };
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

    fn host(&self) -> String {
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
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1)?.parse().ok()
}

/// `mpsi` with no registry credentials from the caller's environment:
/// HOME and DOCKER_CONFIG point into `home`.
fn mpsi_clean(store: &Path, home: &Path) -> Command {
    let mut c = mpsi(store);
    for k in ["MPSI_REGISTRY_USER", "MPSI_REGISTRY_PASSWORD", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"] {
        c.env_remove(k);
    }
    c.env("HOME", home).env("DOCKER_CONFIG", home.join(".docker"));
    c.env("MPSI_PUSH_BACKOFF_MS", "20");
    c
}

fn push_cmd(store: &Path, home: &Path, layout: &Path, reference: &str) -> Command {
    let mut c = mpsi_clean(store, home);
    c.arg("push").arg("--layout").arg(layout).arg(reference).arg("--json");
    c
}

/// Pulls `reference` back with skopeo into a fresh layout and checks it
/// has our manifest digest and, byte for byte, each of our blobs.
fn pull_back_and_compare(reference: &str, ours: &Path, creds: Option<&str>, digest: &str) {
    let skopeo = require_tool("skopeo");
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("pulled");
    let mut c = Command::new(skopeo);
    c.args(["copy", "--src-tls-verify=false"]);
    if let Some(u) = creds {
        c.arg("--src-creds").arg(u);
    }
    c.arg(format!("docker://{reference}")).arg(format!("oci:{}:t", dest.display()));
    run_ok(&mut c);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest, "skopeo pulled another manifest");
    let manifest_path = blob_path(&dest, digest);
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    let mut digests = vec![digest.to_string(), manifest["config"]["digest"].as_str().unwrap().to_string()];
    for l in manifest["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in &digests {
        let theirs = fs::read(blob_path(&dest, d)).unwrap();
        let mine = fs::read(blob_path(ours, d)).unwrap();
        assert!(theirs == mine, "blob {d} differs after the round trip");
    }
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

fn blob_count(a: &Assembled) -> u64 {
    a.report["layers"].as_array().unwrap().len() as u64 + 1
}

#[test]
fn anonymous_push_round_trips_and_a_second_push_uploads_nothing() {
    let reg = Registry::start(None);
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    let reference = format!("{}/mpsi/fixture:v1", reg.host());
    let digest_file = a.tmp.path().join("digest.txt");

    let out = run_ok(
        push_cmd(&a.store, &home, &a.layout, &reference)
            .args(["--tag", "extra", "--digest-file"])
            .arg(&digest_file),
    );
    let r = json(&out);
    assert_eq!(r["digest"], digest.as_str());
    assert_eq!(r["reference"], format!("{}/mpsi/fixture@{digest}", reg.host()));
    assert_eq!(r["tags"], serde_json::json!(["v1", "extra"]));
    assert_eq!(r["blobs_uploaded"], blob_count(&a));
    assert!(r["bytes_uploaded"].as_u64().unwrap() > 1000);
    assert_eq!(fs::read_to_string(&digest_file).unwrap(), digest);
    pull_back_and_compare(&reference, &a.layout, None, &digest);
    pull_back_and_compare(&format!("{}/mpsi/fixture:extra", reg.host()), &a.layout, None, &digest);

    // Again: the registry has every blob.
    let again = json(&run_ok(&mut push_cmd(&a.store, &home, &a.layout, &reference)));
    assert_eq!(again["bytes_uploaded"], 0);
    assert_eq!(again["blobs_skipped"], blob_count(&a));
    assert_eq!(again["digest"], digest.as_str());

    // Human output: the reference with its digest, alone on stdout.
    let mut c = mpsi_clean(&a.store, &home);
    let out = run_ok(c.arg("push").arg("--layout").arg(&a.layout).arg(&reference));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}/mpsi/fixture@{digest}", reg.host())
    );
}

#[test]
fn a_push_to_a_second_repository_mounts_instead_of_uploading() {
    let reg = Registry::start(None);
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    run_ok(&mut push_cmd(&a.store, &home, &a.layout, &format!("{}/team/one:v1", reg.host())));
    let second = format!("{}/team/two:v1", reg.host());
    let r = json(&run_ok(&mut push_cmd(&a.store, &home, &a.layout, &second)));
    assert_eq!(r["blobs_mounted"], blob_count(&a), "{r}");
    assert_eq!(r["bytes_uploaded"], 0, "{r}");
    pull_back_and_compare(&second, &a.layout, None, &digest);
    // The record names repositories and digests only.
    let record = fs::read_to_string(a.store.join("push-record.json")).unwrap();
    assert!(record.contains("team/one") && record.contains("team/two"), "{record}");
}

#[test]
fn assemble_push_sends_the_assembled_image() {
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_fixture(&src, VARIANT_A);
    let store = tmp.path().join("store");
    let layout = tmp.path().join("oci");
    let reference = format!("{}/mpsi/assembled:v1", reg.host());
    let out = run_ok(
        mpsi_clean(&store, &tmp.path().join("home"))
            .arg("assemble")
            .arg(fixture_spec(&src))
            .arg("-o")
            .arg(&layout)
            .args(["--push", &reference, "--json"]),
    );
    let r = json(&out);
    assert_eq!(r["push"]["digest"], r["manifest_digest"]);
    pull_back_and_compare(&reference, &layout, None, r["manifest_digest"].as_str().unwrap());
}

#[test]
fn bad_references_are_bad_input() {
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let (code, err) = run_fail(&mut push_cmd(&a.store, &home, &a.layout, "127.0.0.1:1/UPPER:x"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid image reference"), "{err}");
}

const USER: &str = "pusher";
const PASSWORD: &str = "pw-Zq8-unique-secret-4471";

fn htpasswd_line() -> String {
    let out = run_ok(Command::new(require_tool("htpasswd")).args(["-Bbn", USER, PASSWORD]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn basic_auth_from_every_credential_source_and_no_secret_leaks() {
    let reg = Registry::start(Some(&htpasswd_line()));
    let a = assembled_fixture();
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    let home = a.tmp.path().join("home");
    let creds = format!("{USER}:{PASSWORD}");
    let mut printed: Vec<u8> = Vec::new();
    let mut keep = |out: &std::process::Output| {
        printed.extend_from_slice(&out.stdout);
        printed.extend_from_slice(&out.stderr);
    };

    // No credentials: a clear error, exit 1.
    let reference = format!("{}/auth/none:v1", reg.host());
    let (code, err) = run_fail(&mut push_cmd(&a.store, &home, &a.layout, &reference));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no credentials were found"), "{err}");

    // --creds
    let reference = format!("{}/auth/flag:v1", reg.host());
    let out = run_ok(push_cmd(&a.store, &home, &a.layout, &reference).args(["--creds", &creds]));
    keep(&out);
    pull_back_and_compare(&reference, &a.layout, Some(&creds), &digest);

    // The environment.
    let reference = format!("{}/auth/env:v1", reg.host());
    let out = run_ok(
        push_cmd(&a.store, &home, &a.layout, &reference)
            .env("MPSI_REGISTRY_USER", USER)
            .env("MPSI_REGISTRY_PASSWORD", PASSWORD),
    );
    keep(&out);

    // Docker's config.json, an `auths` entry.
    use base64::Engine as _;
    let docker = home.join(".docker");
    fs::create_dir_all(&docker).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&creds);
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {format!("http://{}", reg.host()): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    let reference = format!("{}/auth/docker-config:v1", reg.host());
    keep(&run_ok(&mut push_cmd(&a.store, &home, &a.layout, &reference)));

    // A containers auth.json named by REGISTRY_AUTH_FILE, namespace key.
    let auth_file = a.tmp.path().join("auth.json");
    fs::write(
        &auth_file,
        serde_json::json!({"auths": {format!("{}/auth", reg.host()): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    fs::remove_file(docker.join("config.json")).unwrap();
    let reference = format!("{}/auth/auth-json:v1", reg.host());
    keep(&run_ok(push_cmd(&a.store, &home, &a.layout, &reference).env("REGISTRY_AUTH_FILE", &auth_file)));

    // A credential helper, through credHelpers.
    let bin = a.tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            reg.host()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"credHelpers": {reg.host(): "test"}}).to_string(),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let reference = format!("{}/auth/helper:v1", reg.host());
    keep(&run_ok(push_cmd(&a.store, &home, &a.layout, &reference).env("PATH", &path)));
    pull_back_and_compare(&reference, &a.layout, Some(&creds), &digest);

    // A wrong password: exit 1, the registry's words quoted.
    let reference = format!("{}/auth/wrong:v1", reg.host());
    let wrong = push_cmd(&a.store, &home, &a.layout, &reference)
        .args(["--creds", &format!("{USER}:not-{PASSWORD}")])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("401") && err.contains("UNAUTHORIZED: authentication required"), "{err}");
    keep(&wrong);

    // Nothing mpsi printed or wrote holds the password.
    let needle = PASSWORD.as_bytes();
    let leaks = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!leaks(&printed), "the password appears in mpsi's output");
    for dir in [&a.layout, &a.store] {
        for f in walk(dir) {
            if f.is_file() {
                assert!(!leaks(&fs::read(&f).unwrap()), "the password is in {}", f.display());
            }
        }
    }
    assert!(a.store.join("push-record.json").is_file());
}
