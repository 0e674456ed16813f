//! `mpsi push` against Debian's real registry (distribution 2.8.2), started
//! here on 127.0.0.1 with a temporary config and storage, and checked with
//! skopeo as an independent reader: every pushed image is pulled back and
//! compared blob by blob.

mod common;

use common::registry::*;
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `mpsi` with no registry credentials from the caller's environment:
/// HOME and DOCKER_CONFIG point into `home`.
fn mpsi_clean(store: &Path, home: &Path) -> Command {
    let mut c = mpsi(store);
    for k in [
        "MPSI_REGISTRY_USER",
        "MPSI_REGISTRY_PASSWORD",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
    ] {
        c.env_remove(k);
    }
    c.env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"));
    c.env("MPSI_PUSH_BACKOFF_MS", "20");
    c
}

fn push_cmd(store: &Path, home: &Path, layout: &Path, reference: &str) -> Command {
    let mut c = mpsi_clean(store, home);
    c.arg("push")
        .arg("--layout")
        .arg(layout)
        .arg(reference)
        .arg("--json");
    c
}

/// The image's layers and config, and its SBOM artifact's empty config
/// and document.
fn blob_count(a: &Assembled) -> u64 {
    a.report["layers"].as_array().unwrap().len() as u64 + 1 + 2
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
    assert_eq!(
        r["reference"],
        format!("{}/mpsi/fixture@{digest}", reg.host())
    );
    assert_eq!(r["tags"], serde_json::json!(["v1", "extra"]));
    assert_eq!(r["blobs_uploaded"], blob_count(&a));
    assert!(r["bytes_uploaded"].as_u64().unwrap() > 1000);
    assert_eq!(fs::read_to_string(&digest_file).unwrap(), digest);
    pull_back_and_compare(&reference, &a.layout, None, &digest);
    pull_back_and_compare(
        &format!("{}/mpsi/fixture:extra", reg.host()),
        &a.layout,
        None,
        &digest,
    );

    // Again: the registry has every blob.
    let again = json(&run_ok(&mut push_cmd(
        &a.store, &home, &a.layout, &reference,
    )));
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

/// A plain HTTP/1.0 GET (so no chunked body) with an Accept header:
/// status and body.
fn http_get(port: u16, path: &str, accept: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer with headers");
    let status = String::from_utf8_lossy(&buf[..split])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, buf[split + 4..].to_vec())
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The SBOM goes up with the image as a referrer. distribution 2.8 has no
/// referrers API (`/referrers/` answers 404, and a manifest PUT with a
/// subject gets no `OCI-Subject` header), so mpsi keeps the OCI 1.1
/// tag-schema fallback: an image index tagged `sha256-<hex>` listing the
/// artifact. Everything is fetched back and compared byte for byte.
#[test]
fn the_sbom_is_pushed_as_a_referrer_through_the_tag_schema_fallback() {
    let reg = Registry::start(None);
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let art = a.report["sbom_artifact"].as_str().unwrap().to_string();
    let reference = format!("{}/mpsi/fixture:v1", reg.host());
    let r = json(&run_ok(&mut push_cmd(
        &a.store, &home, &a.layout, &reference,
    )));
    assert_eq!(
        r["referrers"],
        serde_json::json!([{
            "digest": art,
            "artifact_type": "application/spdx+json",
            "listed_by": "tag-schema",
            "tag": format!("sha256-{hex}"),
            "index_updated": true,
        }]),
        "{r:#}"
    );

    // No referrers API on distribution 2.8: hence the fallback.
    let (status, _) = http_get(
        reg.port,
        &format!("/v2/mpsi/fixture/referrers/{digest}"),
        OCI_INDEX,
    );
    assert_eq!(status, 404, "distribution 2.8 grew a referrers API");

    // The fallback index lists the artifact with its type.
    let (status, index_bytes) = http_get(
        reg.port,
        &format!("/v2/mpsi/fixture/manifests/sha256-{hex}"),
        OCI_INDEX,
    );
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{index:#}");
    assert_eq!(listed[0]["digest"], art.as_str());
    assert_eq!(listed[0]["mediaType"], OCI_MANIFEST);
    assert_eq!(listed[0]["artifactType"], "application/spdx+json");
    // skopeo reads the same index by its tag (as the README shows).
    let raw = run_ok(
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/mpsi/fixture:sha256-{hex}", reg.host())),
    );
    assert_eq!(raw.stdout, index_bytes);

    // The artifact manifest and the SBOM blob come back as written.
    let (status, art_bytes) = http_get(
        reg.port,
        &format!("/v2/mpsi/fixture/manifests/{art}"),
        OCI_MANIFEST,
    );
    assert_eq!(status, 200);
    assert_eq!(art_bytes, fs::read(blob_path(&a.layout, &art)).unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&art_bytes).unwrap();
    assert_eq!(manifest["subject"]["digest"], digest.as_str());
    let sbom_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let (status, sbom) = http_get(
        reg.port,
        &format!("/v2/mpsi/fixture/blobs/{sbom_digest}"),
        "*/*",
    );
    assert_eq!(status, 200);
    assert_eq!(
        sbom,
        fs::read(a.report["sbom"].as_str().unwrap()).unwrap(),
        "the SBOM in the registry is the one next to the layout"
    );

    // Again: the index already lists it and is left alone.
    let again = json(&run_ok(&mut push_cmd(
        &a.store, &home, &a.layout, &reference,
    )));
    assert_eq!(again["referrers"][0]["index_updated"], false, "{again:#}");
    let (_, index_again) = http_get(
        reg.port,
        &format!("/v2/mpsi/fixture/manifests/sha256-{hex}"),
        OCI_INDEX,
    );
    assert_eq!(index_again, index_bytes);

    // The same image under another name has the same manifest but its own
    // SBOM: the index is extended, the first entry kept.
    let renamed = a.tmp.path().join("oci-renamed");
    let r2 = json(&run_ok(
        mpsi(&a.store)
            .arg("assemble")
            .arg(fixture_spec(&a.src))
            .arg("-o")
            .arg(&renamed)
            .args(["--name", "mpsi-test/renamed", "--json"]),
    ));
    assert_eq!(r2["manifest_digest"], digest.as_str());
    let art2 = r2["sbom_artifact"].as_str().unwrap().to_string();
    assert_ne!(art2, art);
    let pushed = json(&run_ok(&mut push_cmd(
        &a.store, &home, &renamed, &reference,
    )));
    assert_eq!(pushed["referrers"][0]["index_updated"], true, "{pushed:#}");
    let (_, index_bytes) = http_get(
        reg.port,
        &format!("/v2/mpsi/fixture/manifests/sha256-{hex}"),
        OCI_INDEX,
    );
    let index: serde_json::Value = serde_json::from_slice(&index_bytes).unwrap();
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [art.as_str(), art2.as_str()], "{index:#}");
}

#[test]
fn a_push_to_a_second_repository_mounts_instead_of_uploading() {
    let reg = Registry::start(None);
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    run_ok(&mut push_cmd(
        &a.store,
        &home,
        &a.layout,
        &format!("{}/team/one:v1", reg.host()),
    ));
    let second = format!("{}/team/two:v1", reg.host());
    let r = json(&run_ok(&mut push_cmd(&a.store, &home, &a.layout, &second)));
    assert_eq!(r["blobs_mounted"], blob_count(&a), "{r}");
    assert_eq!(r["bytes_uploaded"], 0, "{r}");
    pull_back_and_compare(&second, &a.layout, None, &digest);
    // The record names repositories and digests only.
    let record = fs::read_to_string(a.store.join("push-record.json")).unwrap();
    assert!(
        record.contains("team/one") && record.contains("team/two"),
        "{record}"
    );
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
    pull_back_and_compare(
        &reference,
        &layout,
        None,
        r["manifest_digest"].as_str().unwrap(),
    );
}

#[test]
fn bad_references_are_bad_input() {
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let (code, err) = run_fail(&mut push_cmd(
        &a.store,
        &home,
        &a.layout,
        "127.0.0.1:1/UPPER:x",
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid image reference"), "{err}");
    // assemble --push refuses it before building anything.
    let out = a.tmp.path().join("never");
    let (code, err) = run_fail(
        mpsi_clean(&a.store, &home)
            .arg("assemble")
            .arg(fixture_spec(&a.src))
            .arg("-o")
            .arg(&out)
            .args(["--push", "127.0.0.1:1/UPPER:x"]),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        !out.exists(),
        "assemble ran before the bad reference was noticed"
    );
}

const USER: &str = "pusher";
const PASSWORD: &str = "pw-Zq8-unique-secret-4471";

/// A docker-credential helper that knows `host` (and answers "not found"
/// for anything else), as a shell script.
fn write_credential_helper(path: &Path, host: &str) {
    fs::write(
        path,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn htpasswd_line() -> String {
    let out = run_ok(Command::new(require_tool("htpasswd")).args(["-Bbn", USER, PASSWORD]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A registry with htpasswd Basic auth, the fixture, and everything mpsi
/// printed, to look for the password in.
struct AuthRig {
    reg: Registry,
    a: Assembled,
    home: PathBuf,
    digest: String,
    printed: Vec<u8>,
}

impl AuthRig {
    fn new() -> AuthRig {
        let reg = Registry::start(Some(&htpasswd_line()));
        let a = assembled_fixture();
        let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
        let home = a.tmp.path().join("home");
        fs::create_dir_all(home.join(".docker")).unwrap();
        AuthRig {
            reg,
            a,
            home,
            digest,
            printed: Vec::new(),
        }
    }

    fn reference(&self, repo: &str) -> String {
        format!("{}/auth/{repo}:v1", self.reg.host())
    }

    /// `mpsi push` to `auth/<repo>` with `env` set and `args` added.
    fn push(
        &mut self,
        repo: &str,
        env: &[(&str, &std::ffi::OsStr)],
        args: &[&str],
    ) -> std::process::Output {
        let mut c = push_cmd(
            &self.a.store,
            &self.home,
            &self.a.layout,
            &self.reference(repo),
        );
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        self.printed.extend_from_slice(&out.stdout);
        self.printed.extend_from_slice(&out.stderr);
        out
    }

    fn push_ok(&mut self, repo: &str, env: &[(&str, &std::ffi::OsStr)], args: &[&str]) {
        let out = self.push(repo, env, args);
        assert!(
            out.status.success(),
            "push to {repo} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn docker_config(&self, doc: serde_json::Value) {
        fs::write(self.home.join(".docker/config.json"), doc.to_string()).unwrap();
    }

    /// Nothing mpsi printed or wrote (layout, store, push record) holds
    /// the password.
    fn assert_no_leak(&self) {
        let needle = PASSWORD.as_bytes();
        let leaks = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(
            !leaks(&self.printed),
            "the password appears in mpsi's output"
        );
        assert!(self.a.store.join("push-record.json").is_file());
        for dir in [&self.a.layout, &self.a.store] {
            for f in walk(dir).into_iter().filter(|f| f.is_file()) {
                assert!(
                    !leaks(&fs::read(&f).unwrap()),
                    "the password is in {}",
                    f.display()
                );
            }
        }
    }
}

fn creds_b64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
}

#[test]
fn basic_auth_from_flag_env_and_config_files_and_no_secret_leaks() {
    let mut rig = AuthRig::new();
    let creds = format!("{USER}:{PASSWORD}");
    let host = rig.reg.host();

    // No credentials: a clear error, exit 1.
    let out = rig.push("none", &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no credentials were found"), "{err}");

    rig.push_ok("flag", &[], &["--creds", &creds]);
    pull_back_and_compare(
        &rig.reference("flag"),
        &rig.a.layout,
        Some(&creds),
        &rig.digest,
    );
    rig.push_ok(
        "env",
        &[
            ("MPSI_REGISTRY_USER", USER.as_ref()),
            ("MPSI_REGISTRY_PASSWORD", PASSWORD.as_ref()),
        ],
        &[],
    );

    // Docker's config.json, an `auths` entry with a scheme in its key.
    rig.docker_config(
        serde_json::json!({"auths": {format!("http://{host}"): {"auth": creds_b64()}}}),
    );
    rig.push_ok("docker-config", &[], &[]);
    rig.docker_config(serde_json::json!({}));

    // A containers auth.json named by REGISTRY_AUTH_FILE, namespace key.
    let auth_file = rig.a.tmp.path().join("auth.json");
    let doc = serde_json::json!({"auths": {format!("{host}/auth"): {"auth": creds_b64()}}});
    fs::write(&auth_file, doc.to_string()).unwrap();
    rig.push_ok(
        "auth-json",
        &[("REGISTRY_AUTH_FILE", auth_file.as_os_str())],
        &[],
    );

    // $XDG_RUNTIME_DIR/containers/auth.json, a registry key.
    let xdg = rig.a.tmp.path().join("xdg");
    fs::create_dir_all(xdg.join("containers")).unwrap();
    let doc = serde_json::json!({"auths": {host.clone(): {"auth": creds_b64()}}});
    fs::write(xdg.join("containers/auth.json"), doc.to_string()).unwrap();
    rig.push_ok("xdg", &[("XDG_RUNTIME_DIR", xdg.as_os_str())], &[]);
    rig.assert_no_leak();
}

#[test]
fn basic_auth_through_credential_helpers_and_a_wrong_password() {
    let mut rig = AuthRig::new();
    let host = rig.reg.host();
    let bin = rig.a.tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    write_credential_helper(&bin.join("docker-credential-test"), &host);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path.as_ref())];

    rig.docker_config(serde_json::json!({"credHelpers": {host.clone(): "test"}}));
    rig.push_ok("helper", &env, &[]);
    let creds = format!("{USER}:{PASSWORD}");
    pull_back_and_compare(
        &rig.reference("helper"),
        &rig.a.layout,
        Some(&creds),
        &rig.digest,
    );
    rig.docker_config(serde_json::json!({"credsStore": "test"}));
    rig.push_ok("creds-store", &env, &[]);

    // A wrong password: exit 1, the registry's words quoted.
    let wrong = format!("{USER}:not-{PASSWORD}");
    let out = rig.push("wrong", &[], &["--creds", &wrong]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("401") && err.contains("UNAUTHORIZED: authentication required"),
        "{err}"
    );
    rig.assert_no_leak();
}

#[test]
fn chunked_uploads_round_trip() {
    let reg = Registry::start(None);
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    let reference = format!("{}/mpsi/chunked:v1", reg.host());
    // Small chunks, so the app layer (about 23 KB) goes up in several PATCHes.
    let r = json(&run_ok(
        push_cmd(&a.store, &home, &a.layout, &reference).args(["--chunk-size", "4096"]),
    ));
    assert_eq!(r["blobs_uploaded"], blob_count(&a));
    pull_back_and_compare(&reference, &a.layout, None, &digest);
}

#[test]
fn a_corrupt_blob_is_named_and_never_pushed_as_the_image() {
    let reg = Registry::start(None);
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let layer = a.report["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = blob_path(&a.layout, &layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let reference = format!("{}/mpsi/corrupt:v1", reg.host());
    let (code, err) = run_fail(&mut push_cmd(&a.store, &home, &a.layout, &reference));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&layer), "{err}");
    // No manifest went up.
    assert_eq!(
        http_status(reg.port, "/v2/mpsi/corrupt/manifests/v1"),
        Some(404)
    );
}

/// A proxy in front of the registry that injects faults on a fixed
/// schedule: 500, 503, 429 with Retry-After, connections reset in the
/// middle of an upload, stalls, relative Locations and 201 on PATCH. One
/// request per connection (it answers with `Connection: close`).
struct FaultProxy {
    port: u16,
    faults: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, u32>>>,
}

impl FaultProxy {
    fn start(upstream: u16) -> FaultProxy {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let log = faults.clone();
        let counter = Arc::new(AtomicU32::new(0));
        let uploads = Arc::new(AtomicU32::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let k = counter.fetch_add(1, Ordering::Relaxed);
                let log = log.clone();
                let uploads = uploads.clone();
                std::thread::spawn(move || {
                    if let Some(f) = proxy_one(conn, upstream, k, &uploads) {
                        *log.lock().unwrap().entry(f).or_insert(0) += 1;
                    }
                });
            }
        });
        FaultProxy { port, faults }
    }
}

/// Reads one request head (up to the blank line) and its body.
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    Some((head, vec![0u8; len]))
}

fn respond(s: &mut TcpStream, status: &str, extra: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// Forwards one request (or injects fault number k); returns the fault.
/// Faults in the middle of an upload follow their own count of uploads
/// (`uploads`), so they happen whatever order concurrent connections
/// arrive in.
fn proxy_one(
    mut c: TcpStream,
    upstream: u16,
    k: u32,
    uploads: &std::sync::atomic::AtomicU32,
) -> Option<&'static str> {
    let (head, mut body) = read_request(&mut c)?;
    let method = head.split_whitespace().next().unwrap_or("").to_string();
    let upload =
        (body.len() > 4096).then(|| uploads.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    // A reset in the middle of an upload: read half of it, then drop.
    if upload.is_some_and(|u| u % 5 == 2) {
        let half = body.len() / 2;
        c.read_exact(&mut body[..half]).ok()?;
        let _ = c.shutdown(std::net::Shutdown::Both);
        return Some("reset mid-upload");
    }
    // An upload that stops moving halfway (longer than --stall-timeout).
    if upload.is_some_and(|u| u % 29 == 5) {
        let half = body.len() / 2;
        c.read_exact(&mut body[..half]).ok()?;
        std::thread::sleep(Duration::from_millis(4000));
        return Some("stall mid-upload");
    }
    c.read_exact(&mut body).ok()?;
    let fault = match k % 23 {
        3 | 14 => Some(("503 Service Unavailable", "", "503")),
        6 => Some(("500 Internal Server Error", "", "500")),
        9 => Some((
            "429 Too Many Requests",
            "Retry-After: 1\r\n",
            "429 with Retry-After",
        )),
        _ => None,
    };
    if let Some((status, extra, name)) = fault {
        respond(&mut c, status, extra);
        return Some(name);
    }
    if body.is_empty() && k % 23 == 19 {
        // A stall longer than mpsi's --stall-timeout, then a close.
        std::thread::sleep(Duration::from_millis(2500));
        return Some("stall");
    }
    let mut u = TcpStream::connect(("127.0.0.1", upstream)).ok()?;
    let head = head.replace("Connection: keep-alive", "Connection: close");
    let head = if head.to_ascii_lowercase().contains("connection:") {
        head
    } else {
        head.trim_end().to_string() + "\r\nConnection: close\r\n\r\n"
    };
    u.write_all(head.as_bytes()).ok()?;
    u.write_all(&body).ok()?;
    let mut resp = Vec::new();
    u.read_to_end(&mut resp).ok()?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut rhead = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut fault = None;
    // Relative Locations on every other answer.
    if k.is_multiple_of(2)
        && let Some(i) = rhead.find("Location: http://")
    {
        let rest = &rhead[i + "Location: http://".len()..];
        let path_start = rest.find('/').unwrap();
        rhead = format!("{}Location: {}", &rhead[..i], &rest[path_start..]);
        fault = Some("relative Location");
    }
    if method == "PATCH" && rhead.starts_with("HTTP/1.1 202") && k.is_multiple_of(3) {
        rhead = rhead.replacen("HTTP/1.1 202 Accepted", "HTTP/1.1 201 Created", 1);
        fault = Some("201 on PATCH");
    }
    // A registry asking for chunks (OCI-Chunk-Min-Length) on some sessions.
    if method == "POST" && rhead.starts_with("HTTP/1.1 202") && k % 4 == 1 {
        rhead = rhead.replacen("\r\n", "\r\nOCI-Chunk-Min-Length: 8000\r\n", 1);
        fault = Some("OCI-Chunk-Min-Length");
    }
    c.write_all(rhead.as_bytes()).ok()?;
    c.write_all(&resp[split..]).ok()?;
    fault
}

#[test]
fn pushes_through_a_faulty_proxy_all_succeed_and_round_trip() {
    let reg = Registry::start(None);
    let proxy = FaultProxy::start(reg.port);
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    let rounds: usize = std::env::var("MPSI_PUSH_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut retries = 0;
    for i in 0..rounds {
        // A fresh store each time: no record, so every blob is uploaded.
        let store = a.tmp.path().join(format!("store-{i}"));
        let reference = format!("127.0.0.1:{}/faults/r{i}:v1", proxy.port);
        let mut c = push_cmd(&store, &home, &a.layout, &reference);
        c.args(["--stall-timeout", "1s"]);
        if i % 2 == 1 {
            // The app layer (about 23 KB) goes up in several PATCHes.
            c.args(["--chunk-size", "5000"]);
        }
        let r = json(&run_ok(&mut c));
        assert_eq!(r["digest"], digest.as_str());
        retries += r["retries"].as_u64().unwrap();
        // Pulled back from the registry itself, not through the proxy.
        pull_back_and_compare(
            &format!("{}/faults/r{i}:v1", reg.host()),
            &a.layout,
            None,
            &digest,
        );
    }
    let faults = proxy.faults.lock().unwrap().clone();
    eprintln!(
        "{rounds} pushes through the fault proxy all succeeded ({retries} retries); faults injected: {faults:?}"
    );
    for f in [
        "503",
        "500",
        "429 with Retry-After",
        "reset mid-upload",
        "relative Location",
        "stall",
        "201 on PATCH",
        "OCI-Chunk-Min-Length",
        "stall mid-upload",
    ] {
        assert!(
            faults.get(f).copied().unwrap_or(0) > 0,
            "fault {f} was never injected: {faults:?}"
        );
    }
}

/// A token service for distribution's `auth.token`: a self-signed P-256
/// certificate (the registry's root bundle) and one ES256 JWT with that
/// certificate in `x5c`, granting pull and push on `tok/*` repositories,
/// handed out for Basic USER:PASSWORD only. Signed with the openssl CLI.
struct TokenServer {
    port: u16,
    /// The one token it hands out.
    token: String,
    cert: PathBuf,
    scopes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

const TOKEN_SERVICE: &str = "mpsi-test-registry";
const IDENTITY_TOKEN: &str = "idtok-Hq2-unique-refresh-9083";
const TOKEN_ISSUER: &str = "mpsi-test-issuer";

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// r||s (32 bytes each) from a DER ECDSA signature.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2; // SEQUENCE tag and (short) length
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "INTEGER expected in the signature");
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

fn signed_token(dir: &Path, repos: &[&str]) -> String {
    let openssl = require_tool("openssl");
    let der = run_ok(
        Command::new(&openssl)
            .args(["x509", "-outform", "DER", "-in"])
            .arg(dir.join("cert.pem")),
    )
    .stdout;
    use base64::Engine as _;
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)]});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<_> = repos
        .iter()
        .map(|r| serde_json::json!({"type": "repository", "name": r, "actions": ["pull", "push"]}))
        .collect();
    let claims = serde_json::json!({"iss": TOKEN_ISSUER, "sub": USER, "aud": TOKEN_SERVICE,
        "exp": now + 3600, "nbf": now - 10, "iat": now, "jti": "mpsi-test", "access": access});
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let msg = dir.join("jwt-input");
    fs::write(&msg, &input).unwrap();
    let sig = run_ok(
        Command::new(&openssl)
            .args(["dgst", "-sha256", "-sign"])
            .arg(dir.join("key.pem"))
            .arg(&msg),
    )
    .stdout;
    format!("{input}.{}", b64url(&der_to_raw(&sig)))
}

/// One token request: scopes logged, the token for valid credentials
/// (GET with Basic, or the OAuth2 POST with the identity token), else 401.
fn answer_token_request(
    c: &mut TcpStream,
    token: &str,
    basic: &str,
    log: &std::sync::Mutex<Vec<String>>,
) {
    let Some((head, mut body)) = read_request(c) else {
        return;
    };
    if c.read_exact(&mut body).is_err() {
        return;
    }
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let url = url::Url::parse(&format!("http://x{path}")).unwrap();
    // GET: scopes in the query, Basic credentials. OAuth2 POST:
    // a form with the refresh (identity) token and the scopes.
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut asked: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .collect();
    asked.extend(
        form.iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(String::from)),
    );
    log.lock().unwrap().extend(asked);
    let authorized = if head.starts_with("POST") {
        form.contains(&("grant_type".into(), "refresh_token".into()))
            && form.contains(&("refresh_token".into(), IDENTITY_TOKEN.into()))
    } else {
        head.lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: {basic}")))
    };
    let (status, body) = if authorized {
        (
            "200 OK",
            serde_json::json!({"token": token, "expires_in": 3600}).to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"details":"bad credentials"}"#.to_string(),
        )
    };
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl TokenServer {
    fn start(dir: &Path, repos: &[&str]) -> TokenServer {
        run_ok(
            Command::new(require_tool("openssl"))
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=mpsi-token",
                    "-keyout",
                ])
                .arg(dir.join("key.pem"))
                .arg("-out")
                .arg(dir.join("cert.pem")),
        );
        let token = signed_token(dir, repos);
        let handed = token.clone();
        use base64::Engine as _;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let scopes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = scopes.clone();
        std::thread::spawn(move || {
            // Bounded: the test needs far fewer tokens than this.
            for conn in listener.incoming().take(500) {
                let Ok(mut c) = conn else { continue };
                answer_token_request(&mut c, &token, &basic, &log);
            }
        });
        TokenServer {
            port,
            token: handed,
            cert: dir.join("cert.pem"),
            scopes,
        }
    }

    fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.port,
            self.cert.display()
        )
    }
}

#[test]
fn token_auth_pushes_and_mounts() {
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let tokdir = a.tmp.path().join("token");
    fs::create_dir_all(&tokdir).unwrap();
    let tokens = TokenServer::start(&tokdir, &["tok/app", "tok/second"]);
    let reg = Registry::start_with(|_| tokens.registry_config());
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    let creds = format!("{USER}:{PASSWORD}");

    let reference = format!("{}/tok/app:v1", reg.host());
    let (code, err) = run_fail(
        push_cmd(&a.store, &home, &a.layout, &reference)
            .args(["--creds", &format!("{USER}:wrong")]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("token service") && err.contains("401"),
        "{err}"
    );

    let r = json(&run_ok(
        push_cmd(&a.store, &home, &a.layout, &reference).args(["--creds", &creds]),
    ));
    assert_eq!(r["blobs_uploaded"], blob_count(&a));
    pull_back_and_compare(&reference, &a.layout, Some(&creds), &digest);
    let second = format!("{}/tok/second:v1", reg.host());
    let r = json(&run_ok(
        push_cmd(&a.store, &home, &a.layout, &second).args(["--creds", &creds]),
    ));
    assert_eq!(r["blobs_mounted"], blob_count(&a), "{r}");
    let asked = tokens.scopes.lock().unwrap().clone();
    assert!(
        asked.contains(&"repository:tok/app:pull,push".to_string()),
        "{asked:?}"
    );
    // The mount asked for pull on its source in the same token.
    assert!(
        asked.contains(&"repository:tok/app:pull".to_string()),
        "{asked:?}"
    );
}

#[test]
fn an_identity_token_from_docker_config_gets_a_token_by_oauth2_post() {
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let tokdir = a.tmp.path().join("token");
    fs::create_dir_all(&tokdir).unwrap();
    let tokens = TokenServer::start(&tokdir, &["tok/app"]);
    let reg = Registry::start_with(|_| tokens.registry_config());
    let digest = a.report["manifest_digest"].as_str().unwrap().to_string();
    fs::create_dir_all(home.join(".docker")).unwrap();
    fs::write(
        home.join(".docker/config.json"),
        serde_json::json!({"auths": {reg.host(): {"identitytoken": IDENTITY_TOKEN}}}).to_string(),
    )
    .unwrap();
    let reference = format!("{}/tok/app:v1", reg.host());
    let out = run_ok(&mut push_cmd(&a.store, &home, &a.layout, &reference));
    assert_eq!(json(&out)["digest"], digest.as_str());
    let needle = IDENTITY_TOKEN.as_bytes();
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(
        !all.windows(needle.len()).any(|w| w == needle),
        "the identity token was printed"
    );
    pull_back_and_compare(
        &reference,
        &a.layout,
        Some(&format!("{USER}:{PASSWORD}")),
        &digest,
    );
}

#[test]
fn a_registrytoken_from_docker_config_is_sent_as_is() {
    let a = assembled_fixture();
    let home = a.tmp.path().join("home");
    let tokdir = a.tmp.path().join("token");
    fs::create_dir_all(&tokdir).unwrap();
    let tokens = TokenServer::start(&tokdir, &["tok/app"]);
    let reg = Registry::start_with(|_| tokens.registry_config());
    fs::create_dir_all(home.join(".docker")).unwrap();
    let doc = serde_json::json!({"auths": {reg.host(): {"registrytoken": tokens.token}}});
    fs::write(home.join(".docker/config.json"), doc.to_string()).unwrap();
    let reference = format!("{}/tok/app:v1", reg.host());
    let r = json(&run_ok(&mut push_cmd(
        &a.store, &home, &a.layout, &reference,
    )));
    assert_eq!(r["digest"], a.report["manifest_digest"]);
    assert!(
        tokens.scopes.lock().unwrap().is_empty(),
        "the token service was asked"
    );
}
