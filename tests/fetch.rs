//! `mpsi lock`, `mpsi fetch` and `mpsi store` against a local HTTP server
//! (127.0.0.1 only) and local directories.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

const TARBALL: &[u8] = b"pretend this is a source tarball\n";

/// A lock with one input pinned to `pinned` (bytes), served at `urls`.
fn write_lock(dir: &Path, pinned: &[u8], urls: &[String]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let lock = dir.join("mpsi.lock");
    fs::write(
        &lock,
        format!(
            "version = 1\nsource_date_epoch = 1700000000\n\n[[input]]\nname = \"demo-source\"\nfile = \"demo-1.0.tar.gz\"\nsize = {}\nsha256 = \"{}\"\nurls = {:?}\n",
            pinned.len(),
            sha256_hex(pinned),
            urls
        ),
    )
    .unwrap();
    lock
}

fn stored_inputs(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.join("inputs-v1/sha256"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fetch_from_http_then_from_the_store() {
    let server = TestServer::start(vec![("/demo-1.0.tar.gz".into(), TARBALL.to_vec())], None);
    let tmp = tempfile::tempdir().unwrap();
    let lock = write_lock(
        tmp.path(),
        TARBALL,
        &[
            server.url("/missing.tar.gz"),
            server.url("/demo-1.0.tar.gz"),
        ],
    );
    let store = tmp.path().join("store");
    let out = json(&run_ok(
        mpsi(&store).args(["fetch", "--json", "--lock"]).arg(&lock),
    ));
    assert_eq!(
        out["inputs"][0]["from"],
        server.url("/demo-1.0.tar.gz"),
        "the second URL serves it after a 404 on the first"
    );
    assert_eq!(stored_inputs(&store), [sha256_hex(TARBALL)]);
    let out = json(&run_ok(
        mpsi(&store).args(["fetch", "--json", "--lock"]).arg(&lock),
    ));
    assert_eq!(out["inputs"][0]["from"], "store");
    assert_eq!(server.log().len(), 2, "{:?}", server.log());
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let server = TestServer::start(vec![("/big.tar.gz".into(), body.clone())], Some(70_000));
    let tmp = tempfile::tempdir().unwrap();
    let lock = write_lock(tmp.path(), &body, &[server.url("/big.tar.gz")]);
    let store = tmp.path().join("store");
    run_ok(
        mpsi(&store)
            .env("MPSI_FETCH_BACKOFF_MS", "10")
            .args(["fetch", "--lock"])
            .arg(&lock),
    );
    assert_eq!(
        server.log(),
        ["GET /big.tar.gz", "GET /big.tar.gz range=70000"]
    );
    assert_eq!(
        fs::read(store.join("inputs-v1/sha256").join(sha256_hex(&body))).unwrap(),
        body
    );
    assert!(
        fs::read_dir(store.join("inputs-v1/partial"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn a_hash_mismatch_names_the_input_and_stores_nothing() {
    let server = TestServer::start(
        vec![(
            "/demo-1.0.tar.gz".into(),
            b"something else entirely!!\n".to_vec(),
        )],
        None,
    );
    let tmp = tempfile::tempdir().unwrap();
    let lock = write_lock(tmp.path(), TARBALL, &[server.url("/demo-1.0.tar.gz")]);
    let store = tmp.path().join("store");
    let (code, err) = run_fail(mpsi(&store).args(["fetch", "--lock"]).arg(&lock));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("demo-source"), "{err}");
    assert!(err.contains(&sha256_hex(TARBALL)), "expected hash: {err}");
    assert!(
        err.contains(&sha256_hex(b"something else entirely!!\n")),
        "actual hash: {err}"
    );
    assert!(stored_inputs(&store).is_empty());
    assert!(
        fs::read_dir(store.join("inputs-v1/partial"))
            .unwrap()
            .next()
            .is_none()
    );

    // The same from a directory.
    let dir = tmp.path().join("files");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("demo-1.0.tar.gz"), b"tampered").unwrap();
    let (code, err) = run_fail(
        mpsi(&store)
            .args(["fetch", "--from"])
            .arg(&dir)
            .arg("--lock")
            .arg(&lock),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("demo-source") && err.contains(&sha256_hex(b"tampered")),
        "{err}"
    );
    assert!(stored_inputs(&store).is_empty());
}

#[test]
fn fetch_from_a_directory_and_bundle_and_store_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = write_lock(tmp.path(), TARBALL, &[]);
    let store = tmp.path().join("store");
    let dir = tmp.path().join("files");
    fs::create_dir_all(&dir).unwrap();

    // Missing file: exit 2 (bad input), naming the input.
    let (code, err) = run_fail(
        mpsi(&store)
            .args(["fetch", "--from"])
            .arg(&dir)
            .arg("--lock")
            .arg(&lock),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("demo-source"), "{err}");

    fs::write(dir.join("demo-1.0.tar.gz"), TARBALL).unwrap();
    let bundle = tmp.path().join("inputs.tar");
    run_ok(
        mpsi(&store)
            .args(["fetch", "--from"])
            .arg(&dir)
            .arg("--bundle")
            .arg(&bundle)
            .arg("--lock")
            .arg(&lock),
    );
    assert_eq!(stored_inputs(&store), [sha256_hex(TARBALL)]);
    // The bundle is a plain tar: an index and the input, byte for byte.
    let mut ar = tar::Archive::new(fs::File::open(&bundle).unwrap());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["mpsi-bundle.json", "inputs/demo-1.0.tar.gz"]);
    // Bundles are reproducible.
    let again = tmp.path().join("again.tar");
    run_ok(
        mpsi(&store)
            .args(["fetch", "--bundle"])
            .arg(&again)
            .arg("--lock")
            .arg(&lock),
    );
    assert_eq!(fs::read(&bundle).unwrap(), fs::read(&again).unwrap());

    let ls = json(&run_ok(mpsi(&store).args(["store", "ls", "--json"])));
    assert_eq!(ls["inputs"][0]["id"], sha256_hex(TARBALL));
    run_ok(mpsi(&store).args(["store", "verify"]));
    fs::write(
        store.join("inputs-v1/sha256").join(sha256_hex(TARBALL)),
        b"bit rot",
    )
    .unwrap();
    let (code, err) = run_fail(mpsi(&store).args(["store", "verify"]));
    assert_eq!(code, 1, "{err}");

    // gc keeps what the lock pins and removes the rest.
    let other = write_lock(&tmp.path().join("other"), b"other input", &[]);
    let gc = json(&run_ok(
        mpsi(&store)
            .args(["store", "gc", "--json", "--lock"])
            .arg(&other),
    ));
    assert_eq!(gc["removed"].as_array().unwrap().len(), 1, "{gc}");
    assert!(stored_inputs(&store).is_empty());
}

#[test]
fn lock_refresh_never_changes_a_pin_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = tmp.path().join("mpsi.lock");
    fs::write(
        &lock,
        "version = 1\nsource_date_epoch = 0\n[[input]]\nname = \"src\"\nfile = \"s.tar.gz\"\nsize = 0\nsha256 = \"\"\n",
    )
    .unwrap();
    let dir = tmp.path().join("files");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("s.tar.gz"), b"v1").unwrap();
    let store = tmp.path().join("store");
    run_ok(
        mpsi(&store)
            .args(["lock", "--from"])
            .arg(&dir)
            .arg("--lock")
            .arg(&lock),
    );
    let text = fs::read_to_string(&lock).unwrap();
    assert!(text.contains(&sha256_hex(b"v1")), "{text}");

    fs::write(dir.join("s.tar.gz"), b"v2").unwrap();
    let (code, err) = run_fail(
        mpsi(&store)
            .args(["lock", "--from"])
            .arg(&dir)
            .arg("--lock")
            .arg(&lock),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--repin src"), "{err}");
    assert_eq!(fs::read_to_string(&lock).unwrap(), text);
    run_ok(
        mpsi(&store)
            .args(["lock", "--repin", "src", "--from"])
            .arg(&dir)
            .arg("--lock")
            .arg(&lock),
    );
    assert!(
        fs::read_to_string(&lock)
            .unwrap()
            .contains(&sha256_hex(b"v2"))
    );
}
