//! End-to-end tests of `mpsi assemble`, `export` and `inspect` against
//! independent readers (skopeo, umoci) and the tar headers themselves.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// What a layer's tar says about each path: (type, mode, uid, gid, uname, gname, link).
type Headers = BTreeMap<String, (char, u32, u64, u64, String, String, String)>;

fn layer_headers(layout: &Path, digest: &str) -> Headers {
    let blob = fs::File::open(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = Headers::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let link = e
            .link_name_bytes()
            .map(|b| String::from_utf8(b.into_owned()).unwrap())
            .unwrap_or_default();
        assert_eq!(
            h.mtime().unwrap(),
            1_700_000_000,
            "{path}: mtime comes from SOURCE_DATE_EPOCH"
        );
        out.insert(
            path.trim_end_matches('/').to_string(),
            (
                h.entry_type().as_byte() as char,
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.username().unwrap().unwrap_or("").to_string(),
                h.groupname().unwrap().unwrap_or("").to_string(),
                link,
            ),
        );
    }
    out
}

#[test]
fn independent_readers_accept_the_image_and_it_matches_the_spec() {
    let skopeo = require_tool("skopeo");
    let umoci = require_tool("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_fixture(&src, VARIANT_A);
    let spec = fixture_spec(&src);
    let layout = tmp.path().join("oci");
    let report = assemble(&tmp.path().join("store"), &spec, &layout);
    let manifest_digest = report["manifest_digest"].as_str().unwrap();

    // skopeo reads the layout and agrees on the digest and config.
    let out = run_ok(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("oci:{}:v1", layout.display())),
    );
    let info = json(&out);
    assert_eq!(info["Digest"], manifest_digest);
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(info["Labels"]["org.example.a"], "1");
    let out = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--config", "--raw"])
            .arg(format!("oci:{}:v1", layout.display())),
    );
    let config = json(&out);
    assert_eq!(config["config"]["Entrypoint"][0], "/opt/app/bin/server");
    assert_eq!(
        config["config"]["Healthcheck"]["Timeout"],
        90_000_000_000u64
    );
    assert_eq!(config["config"]["Healthcheck"]["Retries"], 4);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");

    // skopeo copy re-verifies every blob digest.
    let copy = tmp.path().join("copy");
    run_ok(
        Command::new(&skopeo)
            .arg("copy")
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("dir:{}", copy.display())),
    );

    // umoci unpacks it without root; the tree matches the spec.
    let bundle = tmp.path().join("bundle");
    run_ok(
        Command::new(&umoci)
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:v1", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let mode = |p: &str| fs::symlink_metadata(rootfs.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(
        fs::read(rootfs.join("opt/app/bin/server")).unwrap(),
        fs::read(src.join("app/bin/server")).unwrap()
    );
    assert_eq!(
        fs::read(rootfs.join("opt/app/share/big.bin")).unwrap(),
        fs::read(src.join("app/share/big.bin")).unwrap()
    );
    assert_eq!(
        fs::read(
            rootfs
                .join("opt/app")
                .join(LONG_DIR)
                .join("deep-file-with-a-long-name.txt")
        )
        .unwrap(),
        b"deep\n"
    );
    assert_eq!(
        fs::read(rootfs.join("etc/app/inline.txt")).unwrap(),
        b"inline text\n"
    );
    assert_eq!(
        fs::read(rootfs.join("etc/app/extra.conf")).unwrap(),
        fs::read(src.join("extra.conf")).unwrap()
    );
    assert_eq!(mode("opt/app/bin/server"), 0o755);
    assert_eq!(mode("opt/app/share/doc/README"), 0o644);
    assert_eq!(mode("etc/app/extra.conf"), 0o600);
    assert_eq!(mode("data"), 0o750);
    assert_eq!(
        fs::read_link(rootfs.join("opt/app/bin/server-alias")).unwrap(),
        Path::new("server")
    );
    assert_eq!(
        fs::read_link(rootfs.join("opt/app/bin/absolute-link")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        fs::read_link(rootfs.join("usr/local/bin/server")).unwrap(),
        Path::new("/opt/app/bin/server")
    );
    assert!(
        !rootfs.join("opt/app/cache").exists(),
        "excluded directory must not be in the image"
    );
    let readme = fs::metadata(rootfs.join("opt/app/share/doc/README")).unwrap();
    let hard = fs::metadata(rootfs.join("opt/app/share/doc/README.hardlink")).unwrap();
    assert_eq!(readme.ino(), hard.ino(), "hard links stay hard links");

    // The tar headers carry the declared owners, never the host's.
    let layers: Vec<String> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let base = layer_headers(&layout, &layers[0]);
    assert_eq!(
        base["data"],
        (
            '5',
            0o750,
            1000,
            1000,
            "app".into(),
            "app".into(),
            String::new()
        )
    );
    assert_eq!(base["usr"].0, '5', "parents are explicit");
    assert_eq!(base["usr/local/bin/server"].0, '2');
    let app = layer_headers(&layout, &layers[1]);
    assert_eq!(
        app["opt/app/bin/server"],
        (
            '0',
            0o755,
            1000,
            1000,
            "app".into(),
            "app".into(),
            String::new()
        )
    );
    assert_eq!(app["opt/app"].1, 0o755);
    assert_eq!(app["opt"].2, 0, "implied parents belong to root");
    assert_eq!(app["opt/app/share/doc/README.hardlink"].0, '1');
    assert_eq!(
        app["opt/app/share/doc/README.hardlink"].6,
        "opt/app/share/doc/README"
    );
    assert!(
        app.contains_key(&format!(
            "opt/app/{LONG_DIR}/deep-file-with-a-long-name.txt"
        )),
        "long path via PAX"
    );
    let config_layer = layer_headers(&layout, &layers[2]);
    assert_eq!(
        config_layer["etc/app/extra.conf"],
        (
            '0',
            0o600,
            1000,
            1000,
            String::new(),
            String::new(),
            String::new()
        )
    );
    assert_eq!(config_layer["etc/app/inline.txt"].2, 0);

    // Entries are in sorted path order, parents first.
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        fs::File::open(
            layout
                .join("blobs/sha256")
                .join(layers[1].trim_start_matches("sha256:")),
        )
        .unwrap(),
    ));
    let paths: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| {
            String::from_utf8(e.unwrap().path_bytes().into_owned())
                .unwrap()
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    assert_eq!(paths, sorted);
}

#[test]
fn same_inputs_give_the_same_digest_whatever_the_host_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        tmp.path().join("checkout-a"),
        tmp.path().join("elsewhere/checkout-b"),
    );
    make_fixture(&a, VARIANT_A);
    make_fixture(&b, VARIANT_B);
    if unsafe { libc::geteuid() } == 0 {
        // Different host owners too.
        for p in walk(&b) {
            std::os::unix::fs::lchown(&p, Some(4321), Some(4321)).unwrap();
        }
    }
    let ra = assemble(
        &tmp.path().join("store-a"),
        &fixture_spec(&a),
        &tmp.path().join("oci-a"),
    );
    // Another umask for the second run.
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 077; exec {} assemble \"$0\" -o \"$1\" --json -j 1",
                mpsi_bin()
            ))
            .arg(fixture_spec(&b))
            .arg(tmp.path().join("oci-b"))
            .env("MPSI_STORE", tmp.path().join("store-b"))
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    let rb = json(&out);
    assert_eq!(
        ra["manifest_digest"], rb["manifest_digest"],
        "{ra:#}\n{rb:#}"
    );
    assert_eq!(
        fs::read(tmp.path().join("oci-a/index.json")).unwrap(),
        fs::read(tmp.path().join("oci-b/index.json")).unwrap()
    );

    // A changed file changes exactly the layer that holds it.
    fs::write(b.join("extra.conf"), b"[section]\nkey = other\n").unwrap();
    let rc = assemble(
        &tmp.path().join("store-b"),
        &fixture_spec(&b),
        &tmp.path().join("oci-b"),
    );
    let digests = |r: &serde_json::Value| -> Vec<String> {
        r["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let (before, after) = (digests(&rb), digests(&rc));
    assert_eq!(before[0], after[0]);
    assert_eq!(before[1], after[1]);
    assert_ne!(before[2], after[2]);
    assert_ne!(rb["manifest_digest"], rc["manifest_digest"]);
    assert_eq!(
        cached_flags(&rc),
        vec![true, true, false],
        "unchanged layers come from the store"
    );

    // SOURCE_DATE_EPOCH in the environment overrides the spec's pin.
    let out = run_ok(
        mpsi(&tmp.path().join("store-b"))
            .env("SOURCE_DATE_EPOCH", "1800000000")
            .arg("assemble")
            .arg(fixture_spec(&b))
            .arg("-o")
            .arg(tmp.path().join("oci-c"))
            .arg("--json"),
    );
    let rd = json(&out);
    assert_eq!(rd["source_date_epoch"], 1_800_000_000u64);
    assert_ne!(rd["manifest_digest"], rc["manifest_digest"]);
}

#[test]
fn a_second_assemble_rewrites_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_fixture(&src, VARIANT_A);
    let store = tmp.path().join("store");
    let first = assemble(&store, &fixture_spec(&src), &tmp.path().join("oci"));
    let blob = |r: &serde_json::Value, i: usize| {
        tmp.path().join("oci/blobs/sha256").join(
            r["layers"][i]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        )
    };
    let before = fs::metadata(blob(&first, 1)).unwrap().modified().unwrap();
    let second = assemble(&store, &fixture_spec(&src), &tmp.path().join("oci"));
    assert_eq!(first["manifest_digest"], second["manifest_digest"]);
    assert_eq!(cached_flags(&second), vec![true; 3]);
    assert_eq!(
        fs::metadata(blob(&second, 1)).unwrap().modified().unwrap(),
        before,
        "blob not rewritten"
    );
    // --no-cache rewrites, to the same bytes.
    let out = run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(fixture_spec(&src))
            .arg("-o")
            .arg(tmp.path().join("oci"))
            .args(["--json", "--no-cache"]),
    );
    let third = json(&out);
    assert_eq!(third["manifest_digest"], first["manifest_digest"]);
    assert_eq!(cached_flags(&third), vec![false; 3]);
}

#[test]
fn zstd_layers_are_reproducible_and_readable() {
    let skopeo = require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_fixture(&src, VARIANT_A);
    let run = |name: &str, jobs: &str| {
        json(&run_ok(
            mpsi(&tmp.path().join(name))
                .arg("assemble")
                .arg(fixture_spec(&src))
                .arg("-o")
                .arg(tmp.path().join(name).join("oci"))
                .args(["--compression", "zstd", "--json", "-j", jobs]),
        ))
    };
    let (one, two) = (run("j1", "1"), run("j2", "2"));
    assert_eq!(one["manifest_digest"], two["manifest_digest"]);
    assert_eq!(
        one["layers"][0]["media_type"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    run_ok(
        Command::new(skopeo)
            .arg("copy")
            .arg(format!("oci:{}:v1", tmp.path().join("j1/oci").display()))
            .arg(format!("dir:{}", tmp.path().join("copy").display())),
    );
    let out = run_ok(
        mpsi(&tmp.path().join("j1"))
            .args(["inspect", "--json", "-l"])
            .arg(tmp.path().join("j1/oci")),
    );
    let info = json(&out);
    assert_eq!(info["layers"][1]["diff_id"], one["layers"][1]["diff_id"]);
}

#[test]
fn assembling_works_as_an_unprivileged_user() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = tmp.path().join("src");
    make_fixture(&src, VARIANT_A);
    let spec = fixture_spec(&src);
    let root_run = assemble(
        &tmp.path().join("store-root"),
        &spec,
        &tmp.path().join("oci-root"),
    );
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        // Drop to nobody for the whole process, no supplementary groups.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            mpsi_bin(),
        ]);
        c
    } else {
        Command::new(mpsi_bin())
    };
    let out = run_ok(
        cmd.env("MPSI_STORE", tmp.path().join("store-user"))
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci-user"))
            .arg("--json"),
    );
    let user_run = json(&out);
    assert_eq!(user_run["manifest_digest"], root_run["manifest_digest"]);
    let owner = fs::metadata(tmp.path().join("oci-user/index.json"))
        .unwrap()
        .uid();
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(owner, 65534, "written by the unprivileged user");
    }
}

fn mpsi_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[test]
fn archives_load_in_independent_readers() {
    let skopeo = require_tool("skopeo");
    let Assembled {
        tmp,
        store,
        layout,
        report,
        ..
    } = assembled_fixture();
    for (format, transport) in [
        ("oci-archive", "oci-archive"),
        ("docker-archive", "docker-archive"),
    ] {
        let file = tmp.path().join(format!("{format}.tar"));
        export(&store, &layout, format, &file);
        let info = json(&run_ok(
            Command::new(&skopeo)
                .arg("inspect")
                .arg(format!("{transport}:{}", file.display())),
        ));
        assert_eq!(info["Layers"].as_array().unwrap().len(), 3, "{format}");
        if format == "oci-archive" {
            assert_eq!(info["Digest"], report["manifest_digest"]);
        }
        // The config skopeo finds is ours, byte for byte.
        let raw = run_ok(
            Command::new(&skopeo)
                .args(["inspect", "--config", "--raw"])
                .arg(format!("{transport}:{}", file.display())),
        );
        assert_eq!(
            mpsi_digest(&raw.stdout),
            report["config_digest"].as_str().unwrap(),
            "{format}"
        );
        // Streaming to stdout gives the same bytes.
        let out = run_ok(
            mpsi(&store)
                .args(["export", "--format", format, "-o", "-", "-l"])
                .arg(&layout),
        );
        assert_eq!(
            out.stdout,
            fs::read(&file).unwrap(),
            "{format}: stdout and file differ"
        );
        // docker-archive carries Docker's manifest.json next to the OCI index.
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(fs::File::open(&file).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "manifest.json" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                let m: serde_json::Value = serde_json::from_str(&s).unwrap();
                assert_eq!(m[0]["Layers"].as_array().unwrap().len(), 3);
            }
            names.push(name);
        }
        assert_eq!(
            names.contains(&"manifest.json".to_string()),
            format == "docker-archive"
        );
        assert!(names.contains(&"index.json".to_string()));
    }
}

#[test]
fn inspect_reports_layers_and_verifies_blobs() {
    let Assembled {
        tmp: _tmp,
        store,
        layout,
        report,
        ..
    } = assembled_fixture();
    let info = json(&run_ok(
        mpsi(&store)
            .args(["inspect", "--json", "--tag", "v1", "-l"])
            .arg(&layout),
    ));
    assert_eq!(info["manifest_digest"], report["manifest_digest"]);
    for i in 0..3 {
        assert_eq!(info["layers"][i]["entries"], report["layers"][i]["entries"]);
        assert_eq!(info["layers"][i]["diff_id"], report["layers"][i]["diff_id"]);
    }
    assert_eq!(info["config"]["User"], "1000:1000");
    assert_eq!(
        info["annotations"]["org.opencontainers.image.revision"],
        "0123abcd"
    );
    // A corrupted blob is caught.
    let victim = layout.join("blobs/sha256").join(
        report["layers"][1]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::remove_file(&victim).unwrap();
    fs::write(&victim, bytes).unwrap();
    let out = mpsi(&store)
        .args(["inspect", "-l"])
        .arg(&layout)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is corrupt"), "{err}");
}
