//! Hostile or broken input: a clear error, exit status 2, and nothing half
//! written (no layout, no temporary files left in the store).

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// Runs assemble expecting failure; returns stderr. Checks nothing was left.
fn assemble_fails(root: &Path, spec: &Path, code: i32) -> String {
    let store = root.join("store");
    let out_dir = root.join("out");
    let out = mpsi(&store)
        .arg("assemble")
        .arg(spec)
        .arg("-o")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        !out_dir.exists(),
        "a failed assemble must not leave an image layout behind"
    );
    if store.exists() {
        // store.lock is the store's own lock file (shared by every command),
        // not something half written.
        let leftovers: Vec<_> = walk(&store)
            .into_iter()
            .filter(|p| p.is_file() && *p != store.join("store.lock"))
            .collect();
        assert!(leftovers.is_empty(), "store has leftovers: {leftovers:?}");
    }
    stderr
}

fn spec_with(root: &Path, layer_body: &str) -> std::path::PathBuf {
    let spec = root.join("bad.toml");
    fs::write(
        &spec,
        format!("[image]\nname = \"bad\"\n\n[[layer]]\nname = \"l\"\n{layer_body}"),
    )
    .unwrap();
    spec
}

#[test]
fn missing_source_path_names_the_spec_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec_with(
        tmp.path(),
        "[[layer.tree]]\nfrom = \"does-not-exist\"\nto = \"/x\"\n",
    );
    let err = assemble_fails(tmp.path(), &spec, 2);
    assert!(err.contains("bad.toml:7"), "{err}");
    assert!(err.contains("does-not-exist"), "{err}");
    assert!(err.contains("from"), "{err}");
}

#[test]
fn symlink_out_of_the_tree_is_refused_when_following() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tmp.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink("../secret", tree.join("escape")).unwrap();
    let spec = spec_with(
        tmp.path(),
        "[[layer.tree]]\nfrom = \"tree\"\nto = \"/x\"\nfollow_symlinks = true\n",
    );
    let err = assemble_fails(tmp.path(), &spec, 2);
    assert!(err.contains("outside the source tree"), "{err}");
    assert!(err.contains("escape"), "{err}");

    // Without following, the link itself is kept (and the secret is not read).
    let spec = spec_with(tmp.path(), "[[layer.tree]]\nfrom = \"tree\"\nto = \"/x\"\n");
    let out = run_ok(
        mpsi(&tmp.path().join("store"))
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("ok"))
            .arg("--json"),
    );
    assert_eq!(json(&out)["layers"][0]["entries"], 2);
}

#[test]
fn unknown_spec_field_is_named_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec_with(
        tmp.path(),
        "[[layer.dir]]\npath = \"/x\"\nowner_name = \"a:b\"\n",
    );
    let err = assemble_fails(tmp.path(), &spec, 2);
    assert!(err.contains("bad.toml:8"), "{err}");
    assert!(err.contains("owner_name"), "{err}");
}

#[test]
fn duplicate_image_path_names_both_sources() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.conf"), b"a").unwrap();
    fs::create_dir_all(tmp.path().join("tree/etc")).unwrap();
    fs::write(tmp.path().join("tree/etc/app.conf"), b"b").unwrap();
    let spec = spec_with(
        tmp.path(),
        "[[layer.tree]]\nfrom = \"tree\"\nto = \"/\"\n\n[[layer.file]]\nfrom = \"a.conf\"\nto = \"/etc/app.conf\"\n",
    );
    let err = assemble_fails(tmp.path(), &spec, 2);
    assert!(err.contains("/etc/app.conf"), "{err}");
    assert!(err.contains("tree #1") && err.contains("file #1"), "{err}");
}

#[test]
fn special_files_and_bad_values_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    let fifo = std::ffi::CString::new(tree.join("pipe").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let spec = spec_with(tmp.path(), "[[layer.tree]]\nfrom = \"tree\"\nto = \"/x\"\n");
    let err = assemble_fails(tmp.path(), &spec, 1);
    assert!(
        err.contains("pipe") && err.contains("not a regular file"),
        "{err}"
    );

    let spec = spec_with(
        tmp.path(),
        "[[layer.file]]\ncontent = \"x\"\nto = \"/etc/../../x\"\n",
    );
    let err = assemble_fails(tmp.path(), &spec, 2);
    assert!(err.contains("'..'"), "{err}");

    let out = mpsi(&tmp.path().join("store"))
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .arg("assemble")
        .arg(spec_with(tmp.path(), "[[layer.dir]]\npath = \"/x\"\n"))
        .arg("-o")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOURCE_DATE_EPOCH"));
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn json_errors_are_machine_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mpsi(&tmp.path().join("store"))
        .args(["inspect", "--json", "-l"])
        .arg(tmp.path().join("nothing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not an OCI image layout"),
        "{v}"
    );
}

#[test]
fn killed_assemble_leaves_no_partial_blob_or_index() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    // Poorly compressible data, so writing the layer takes a while.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let data: Vec<u8> = (0..64 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(tree.join("big.bin"), &data).unwrap();
    let spec = spec_with(tmp.path(), "[[layer.tree]]\nfrom = \"tree\"\nto = \"/x\"\n");
    let store = tmp.path().join("store");
    let out_dir = tmp.path().join("out");
    let mut child = mpsi(&store)
        .arg("assemble")
        .arg(&spec)
        .arg("-o")
        .arg(&out_dir)
        .args(["-j", "1"])
        .spawn()
        .unwrap();
    let blobs = store.join("blobs/sha256");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let writing = fs::read_dir(&blobs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with(".mpsi-tmp")
                    && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
            });
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "assemble finished before it could be interrupted"
        );
        assert!(std::time::Instant::now() < deadline, "no layer write seen");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out_dir.join("index.json").exists(),
        "no index may name blobs that were never finished"
    );
    for e in fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".mpsi-tmp") {
            continue;
        }
        let digest = hex::encode(sha2::Sha256::digest(fs::read(e.path()).unwrap()));
        assert_eq!(
            digest, name,
            "a blob under its digest name must be complete"
        );
    }
    // A rerun completes and matches an uninterrupted run.
    let again = assemble(&store, &spec, &out_dir);
    let fresh = assemble(
        &tmp.path().join("fresh-store"),
        &spec,
        &tmp.path().join("fresh-out"),
    );
    assert_eq!(again["manifest_digest"], fresh["manifest_digest"]);
}
