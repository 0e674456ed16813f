//! A real Docker engine loads mpsi's images: `docker load` of the exported
//! docker-archive, and `mpsi load` / `mpsi assemble --load` streaming it into
//! the Engine API. The engine comes from .ci/test (a private dockerd on its
//! own socket, MPSI_TEST_DOCKER_HOST); tests that need it are ignored in a
//! plain `cargo test` and panic if run without it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs them with --ignored"]
fn docker_loads_the_docker_archive_from_a_pipe() {
    let host = docker_host();
    let Assembled {
        tmp: _tmp,
        store,
        layout,
        report,
        ..
    } = assembled_fixture();

    // mpsi export ... -o - | docker load
    let load = export_into_docker(&store, &layout, &host);
    assert!(String::from_utf8_lossy(&load.stdout).contains("mpsi-test/fixture:v1"));

    // The engine's image ID is our config digest; its config is ours.
    let out = run_ok(docker(&host).args(["image", "inspect", "mpsi-test/fixture:v1"]));
    let info = json(&out);
    assert_eq!(info[0]["Id"], report["config_digest"]);
    assert_eq!(
        info[0]["RootFS"]["Layers"][1],
        report["layers"][1]["diff_id"]
    );
    assert_eq!(info[0]["Config"]["Healthcheck"]["Retries"], 4);
    assert_eq!(info[0]["Config"]["User"], "1000:1000");

    // Files come out of a container with their content and declared owner.
    let name = format!("mpsi-test-{}", std::process::id());
    run_ok(docker(&host).args([
        "create",
        "--network",
        "host",
        "--name",
        &name,
        "mpsi-test/fixture:v1",
    ]));
    let cp = docker(&host)
        .args(["cp", &format!("{name}:/etc/app/extra.conf"), "-"])
        .output()
        .unwrap();
    run_ok(docker(&host).args(["rm", &name]));
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let mut ar = tar::Archive::new(&cp.stdout[..]);
    let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.header().uid().unwrap(), 1000);
    assert_eq!(entry.header().mode().unwrap() & 0o777, 0o600);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
    assert_eq!(text, "[section]\nkey = value\n");
    run_ok(docker(&host).args(["rmi", "mpsi-test/fixture:v1"]));
}

/// `mpsi` for loads: a private store and the test engine as DOCKER_HOST.
fn mpsi_at(store: &Path, host: &str) -> Command {
    let mut c = mpsi(store);
    c.env("DOCKER_HOST", host);
    c
}

/// A name unique to this test run, so parallel tests and earlier runs never
/// share an image (the engine skips layers it already has).
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

fn inspect(host: &str, image: &str) -> serde_json::Value {
    json(&run_ok(docker(host).args(["image", "inspect", image])))[0].clone()
}

/// Does the engine keep images in its classic store (then mpsi sends every
/// compressed layer as plain tar), not the containerd store?
fn classic_store(host: &str) -> bool {
    let out = run_ok(docker(host).args(["info", "--format", "{{json .DriverStatus}}"]));
    !String::from_utf8_lossy(&out.stdout).contains("containerd.snapshotter")
}

fn diff_ids(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].clone())
        .collect()
}

#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs them with --ignored"]
fn mpsi_load_puts_the_image_in_the_engine_with_our_diff_ids() {
    let host = docker_host();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_fixture(&src, VARIANT_A);
    let (store, layout) = (tmp.path().join("store"), tmp.path().join("oci"));
    let tag = unique("load");
    let report = json(&run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(fixture_spec(&src))
            .arg("-o")
            .arg(&layout)
            .args(["--tag", &tag, "--json"]),
    ));
    let name = format!("mpsi-test/fixture:{tag}");

    let out = run_ok(mpsi_at(&store, &host).arg("load").arg("-l").arg(&layout));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("loaded {name} (sha256:")), "{text}");
    let info = inspect(&host, &name);
    // Other tests load the same config (the tag is not in it) under other
    // tags, so this is one of the image's names.
    let tags = info["RepoTags"].as_array().unwrap();
    assert!(tags.contains(&name.as_str().into()), "{tags:?}");
    assert_eq!(info["Id"], report["config_digest"]);
    // The engine's layers are the diff_ids of our config, as in the layout.
    let config = layout_config(&layout);
    assert_eq!(info["RootFS"]["Layers"], config["rootfs"]["diff_ids"]);
    assert_eq!(
        info["RootFS"]["Layers"].as_array().unwrap(),
        &diff_ids(&report)
    );
    run_ok(docker(&host).args(["rmi", &name]));

    // --json: the report of the same load, loaded again.
    let r = json(&run_ok(
        mpsi_at(&store, &host)
            .args(["load", "--json", "--tag", &tag, "-l"])
            .arg(&layout),
    ));
    assert_eq!(r["loaded"], serde_json::json!([name]));
    assert_eq!(r["image_id"], report["config_digest"]);
    assert_eq!(r["manifest_digest"], report["manifest_digest"]);
    assert_eq!(r["engine"], host.as_str());
    // A classic store gets every (gzip) layer as plain tar.
    let plain = if classic_store(&host) {
        diff_ids(&report).len()
    } else {
        0
    };
    assert_eq!(r["layers_decompressed"], plain, "{r}");
    assert!(r["bytes"].as_u64().unwrap() > 3_000, "{r}");
    assert!(r["seconds"].as_f64().unwrap() > 0.0, "{r}");
    run_ok(docker(&host).args(["rmi", &name]));
}

/// A statically linked program that prints `message`, compiled here (no
/// static busybox on these machines).
fn static_hello(dir: &Path, message: &str) -> PathBuf {
    let c = dir.join("hello.c");
    std::fs::write(
        &c,
        format!("#include <stdio.h>\nint main(void) {{ puts(\"{message}\"); return 0; }}\n"),
    )
    .unwrap();
    let bin = dir.join("hello");
    run_ok(
        Command::new(require_tool("gcc"))
            .args(["-static", "-Os", "-o"])
            .arg(&bin)
            .arg(&c),
    );
    bin
}

/// A one-layer image whose command is the static program.
fn runnable_spec(dir: &Path, bin: &Path, tag: &str) -> PathBuf {
    let spec = dir.join("run.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
[image]
name = "mpsi-test/hello"
tag = "{tag}"
source_date_epoch = 1700000000

[config]
cmd = ["/hello"]

[[layer]]
name = "hello"
[[layer.file]]
from = "{}"
to = "/hello"
mode = "0755"
"#,
            bin.display()
        ),
    )
    .unwrap();
    spec
}

fn run_container(host: &str, image: &str) -> String {
    let out = run_ok(docker(host).args(["run", "--rm", "--network", "host", image]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs them with --ignored"]
fn assemble_load_gives_an_image_that_runs() {
    let host = docker_host();
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique("run");
    let message = format!("hello from mpsi {tag}");
    let bin = static_hello(tmp.path(), &message);
    let out = json(&run_ok(
        mpsi_at(&tmp.path().join("store"), &host)
            .arg("assemble")
            .arg(runnable_spec(tmp.path(), &bin, &tag))
            .arg("-o")
            .arg(tmp.path().join("oci"))
            .args(["--load", "--json"]),
    ));
    let name = format!("mpsi-test/hello:{tag}");
    assert_eq!(out["load"]["loaded"], serde_json::json!([name]));
    assert_eq!(out["load"]["image_id"], out["config_digest"]);
    assert_eq!(run_container(&host, &name), format!("{message}\n"));
    run_ok(docker(&host).args(["rmi", &name]));
}

/// zstd layers: an engine of API 1.42 (Docker 23) or later with the
/// containerd store takes them as they are; an older one (Debian's Docker
/// 20.10) cannot read zstd, and one with the classic store gets every layer
/// plain, so mpsi sends them decompressed. Either way the image runs and
/// has our diff_ids.
#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs them with --ignored"]
fn zstd_layers_load_into_any_engine() {
    let host = docker_host();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let tag = unique("zstd");
    let message = format!("hello from zstd {tag}");
    let bin = static_hello(tmp.path(), &message);
    let layout = tmp.path().join("oci");
    let report = json(&run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(runnable_spec(tmp.path(), &bin, &tag))
            .arg("-o")
            .arg(&layout)
            .args(["--compression", "zstd", "--json"]),
    ));
    let r = json(&run_ok(
        mpsi_at(&store, &host)
            .args(["load", "--json", "-l"])
            .arg(&layout),
    ));
    let api = r["api_version"].as_str().unwrap().to_string();
    let (major, minor) = api.split_once('.').unwrap();
    let reads_zstd = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap()) >= (1, 42);
    let expected = if reads_zstd && !classic_store(&host) {
        0
    } else {
        1
    };
    assert_eq!(r["layers_decompressed"], expected, "engine API {api}: {r}");
    let name = format!("mpsi-test/hello:{tag}");
    assert_eq!(
        inspect(&host, &name)["RootFS"]["Layers"]
            .as_array()
            .unwrap(),
        &diff_ids(&report)
    );
    assert_eq!(run_container(&host, &name), format!("{message}\n"));
    run_ok(docker(&host).args(["rmi", &name]));
    eprintln!(
        "engine API {api}: zstd layers decompressed: {}",
        r["layers_decompressed"]
    );
}

/// No engine: exit 1 and a message that says how to get one, or what to
/// do instead. Needs no engine, so it always runs.
#[test]
fn load_without_an_engine_says_how_to_start_one() {
    let Assembled {
        tmp: _tmp,
        store,
        layout,
        ..
    } = assembled_fixture();
    let (code, err) = run_fail(
        mpsi_at(&store, "unix:///nonexistent")
            .arg("load")
            .arg("-l")
            .arg(&layout),
    );
    assert_eq!(code, 1, "{err}");
    for needle in [
        "no Docker engine answers at unix:///nonexistent",
        "dockerd",
        "DOCKER_HOST",
        "mpsi export --format docker-archive -o FILE",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // tcp:// with nobody listening, and --json: the error as JSON too.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = mpsi_at(&store, &format!("tcp://127.0.0.1:{port}"))
        .args(["load", "--json", "-l"])
        .arg(&layout)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains(&format!("tcp://127.0.0.1:{port}")), "{msg}");
}

/// Writes `bytes` as a blob of the layout; returns its digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The config of the (only) image in a layout, read from its blobs.
fn layout_config(layout: &Path) -> serde_json::Value {
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
        layout.join("blobs/sha256").join(d)
    };
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    read_json(&blob(&manifest["config"]["digest"]))
}

/// Rewrites a layout so its config claims a wrong diff_id for layer 0
/// (config, manifest and index made to match); returns the wrong diff_id.
fn break_first_diff_id(layout: &Path) -> String {
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
        layout.join("blobs/sha256").join(d)
    };
    let mut index = read_json(&layout.join("index.json"));
    let mut manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    let mut config = read_json(&blob(&manifest["config"]["digest"]));
    let wrong = format!("sha256:{}", "0".repeat(64));
    config["rootfs"]["diff_ids"][0] = wrong.clone().into();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put_blob(layout, &config_bytes).into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = put_blob(layout, &manifest_bytes).into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    wrong
}

/// An image whose config claims a wrong diff_id: the engine refuses it
/// in-band (HTTP 200, then an error line), and mpsi fails with the
/// engine's own message; nothing is loaded. Both for layers sent as they
/// are (uncompressed) and for gzip layers (sent decompressed to an engine
/// with the classic store).
#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs them with --ignored"]
fn an_error_in_the_engines_reply_fails_the_load_with_its_message() {
    let host = docker_host();
    for compression in ["none", "gzip"] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        make_fixture(&src, VARIANT_A);
        let (store, layout) = (tmp.path().join("store"), tmp.path().join("oci"));
        let tag = unique("bad");
        run_ok(
            mpsi(&store)
                .arg("assemble")
                .arg(fixture_spec(&src))
                .arg("-o")
                .arg(&layout)
                .args(["--tag", &tag, "--compression", compression]),
        );
        let wrong = break_first_diff_id(&layout);
        let (code, err) = run_fail(mpsi_at(&store, &host).arg("load").arg("-l").arg(&layout));
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("the Docker engine failed to load the image: invalid diffID for layer 0")
                && err.contains(&wrong),
            "{compression}: {err}"
        );
        let name = format!("mpsi-test/fixture:{tag}");
        let gone = docker(&host)
            .args(["image", "inspect", &name])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "{name} was loaded anyway");
    }
}

/// A gzip layer of two members (as concatenating gzip files makes): its
/// trailer gives the size of the last member only, so the plain entry's
/// size is wrong. mpsi notices while the layer streams, says so, and sends
/// the layers as stored; the image loads with our diff_ids and runs.
#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs them with --ignored"]
fn a_multi_member_gzip_layer_loads_as_stored() {
    use std::io::Write;
    let host = docker_host();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let tag = unique("members");
    let message = format!("hello from two members {tag}");
    let bin = static_hello(tmp.path(), &message);
    let layout = tmp.path().join("oci");
    let report = json(&run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(runnable_spec(tmp.path(), &bin, &tag))
            .arg("-o")
            .arg(&layout)
            .arg("--json"),
    ));
    // Recompress the layer as two gzip members; same diff_id.
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
        layout.join("blobs/sha256").join(d)
    };
    let mut index = read_json(&layout.join("index.json"));
    let mut manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    let gz = std::fs::read(blob(&manifest["layers"][0]["digest"])).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
    let member = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let half = plain.len() / 2;
    let two = [member(&plain[..half]), member(&plain[half..])].concat();
    manifest["layers"][0]["digest"] = put_blob(&layout, &two).into();
    manifest["layers"][0]["size"] = two.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = put_blob(&layout, &manifest_bytes).into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let out = run_ok(
        mpsi_at(&store, &host)
            .args(["load", "--json", "-l"])
            .arg(&layout),
    );
    let r = json(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    if classic_store(&host) {
        assert!(
            err.contains("its gzip trailer gives") && err.contains("sending the layers as stored"),
            "{err}"
        );
    }
    assert_eq!(r["layers_decompressed"], 0, "{r}");
    let name = format!("mpsi-test/hello:{tag}");
    assert_eq!(
        inspect(&host, &name)["RootFS"]["Layers"]
            .as_array()
            .unwrap(),
        &diff_ids(&report)
    );
    assert_eq!(run_container(&host, &name), format!("{message}\n"));
    run_ok(docker(&host).args(["rmi", &name]));
}
