//! The store stays whole whatever happens to a layout made from it: store
//! blobs are read-only files of their own (a layout gets copies), a cache
//! hit needs the blob as the store wrote it, and a damaged layout blob is
//! repaired by the next assemble and refused by export.

mod common;

use common::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The blob of layer `i` in the layout and in the store, and its digest.
fn blob_paths(a: &Assembled, i: usize) -> (PathBuf, PathBuf, String) {
    let digest = a.report["layers"][i]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = digest.trim_start_matches("sha256:");
    (
        a.layout.join("blobs/sha256").join(hex),
        a.store.join("blobs/sha256").join(hex),
        digest,
    )
}

fn digest_of(path: &Path) -> String {
    format!("sha256:{}", sha256_hex(&fs::read(path).unwrap()))
}

/// Flips bytes in the middle of a file, in place (same inode, same size).
fn edit_in_place(path: &Path) {
    let size = fs::metadata(path).unwrap().len();
    let mut f = fs::File::options().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(size / 2)).unwrap();
    f.write_all(b"EDITED IN PLACE").unwrap();
    drop(f);
    assert_eq!(fs::metadata(path).unwrap().len(), size);
}

fn reassemble(a: &Assembled) -> serde_json::Value {
    assemble(&a.store, &fixture_spec(&a.src), &a.layout)
}

#[test]
fn editing_a_layout_blob_leaves_the_store_whole_and_the_next_assemble_repairs_it() {
    let a = assembled_fixture();
    let (in_layout, in_store, digest) = blob_paths(&a, 1);
    let (lm, sm) = (
        fs::metadata(&in_layout).unwrap(),
        fs::metadata(&in_store).unwrap(),
    );
    assert_ne!(lm.ino(), sm.ino(), "the layout has a copy, not a link");
    assert_eq!(
        sm.permissions().mode() & 0o777,
        0o444,
        "store blobs are read-only"
    );

    edit_in_place(&in_layout);
    assert_eq!(digest_of(&in_store), digest, "the store's blob is unharmed");
    run_ok(mpsi(&a.store).args(["store", "verify"]));
    let (code, err) = run_fail(mpsi(&a.store).args(["inspect", "-l"]).arg(&a.layout));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&digest), "{err}");

    // The store's layers are still good: all three are cache hits, and the
    // layout's edited copy is replaced (the other two are left as they are).
    let untouched = blob_paths(&a, 0).0;
    let before = fs::metadata(&untouched).unwrap().ino();
    let again = reassemble(&a);
    assert_eq!(cached_flags(&again), vec![true; 3]);
    assert_eq!(again["manifest_digest"], a.report["manifest_digest"]);
    assert_eq!(digest_of(&in_layout), digest, "the layout blob is restored");
    assert_eq!(fs::metadata(&untouched).unwrap().ino(), before);
    run_ok(mpsi(&a.store).args(["inspect", "-l"]).arg(&a.layout));
}

#[test]
fn editing_a_store_blob_is_a_cache_miss_and_verify_names_it() {
    let a = assembled_fixture();
    let (in_layout, in_store, digest) = blob_paths(&a, 1);
    fs::set_permissions(&in_store, fs::Permissions::from_mode(0o644)).unwrap();
    edit_in_place(&in_store);

    let out = mpsi(&a.store)
        .args(["store", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // stdout: the verification, then the error (both JSON).
    let v: serde_json::Value = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let bad = v["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{v}");
    assert!(
        bad[0]
            .as_str()
            .unwrap()
            .contains(&in_store.display().to_string()),
        "{v}"
    );

    // Same size, but the file is not the one the store wrote: the layer is
    // written again, and the layout gets the new copy.
    let again = reassemble(&a);
    assert_eq!(cached_flags(&again), vec![true, false, true]);
    assert_eq!(again["manifest_digest"], a.report["manifest_digest"]);
    assert_eq!(digest_of(&in_store), digest);
    assert_eq!(digest_of(&in_layout), digest);
    let mode = fs::metadata(&in_store).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o444);
    run_ok(mpsi(&a.store).args(["store", "verify"]));
    run_ok(mpsi(&a.store).args(["inspect", "-l"]).arg(&a.layout));
}

#[test]
fn a_truncated_layout_blob_fails_export_naming_it_and_leaves_no_file() {
    let a = assembled_fixture();
    let (in_layout, _, digest) = blob_paths(&a, 1);
    let size = fs::metadata(&in_layout).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&in_layout)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let dir = a.tmp.path().join("exports");
    fs::create_dir_all(&dir).unwrap();
    for format in ["oci-archive", "docker-archive"] {
        let file = dir.join(format!("{format}.tar"));
        let (code, err) = run_fail(
            mpsi(&a.store)
                .args(["export", "--format", format, "-o"])
                .arg(&file)
                .arg("-l")
                .arg(&a.layout),
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&digest), "{format}: {err}");
        assert!(!file.exists(), "{format}: a partial archive was left");
    }
    let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// `-o` naming a FIFO (or a device such as /dev/null) writes into it; the
/// temp-file-and-rename used for ordinary files would replace it.
#[test]
fn export_into_a_fifo_writes_through_it_and_keeps_it() {
    use std::os::unix::fs::FileTypeExt;
    let a = assembled_fixture();
    let export = |to: &std::path::Path| {
        run_ok(
            mpsi(&a.store)
                .args(["export", "--format", "docker-archive", "-o"])
                .arg(to)
                .arg("-l")
                .arg(&a.layout),
        )
    };
    let file = a.tmp.path().join("archive.tar");
    export(&file);
    let fifo = a.tmp.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    export(&fifo);
    // Checked before joining: a replaced FIFO never gets a writer, so its
    // reader would block forever.
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced by a file"
    );
    let through = reader.join().unwrap();
    assert_eq!(
        through,
        fs::read(&file).unwrap(),
        "the FIFO carried other bytes"
    );
}

#[test]
fn jobs_change_the_threads_not_the_bytes() {
    let a = assembled_fixture();
    for jobs in ["1", "3"] {
        let out = json(&run_ok(
            mpsi(&a.store)
                .arg("assemble")
                .arg(fixture_spec(&a.src))
                .arg("-o")
                .arg(a.tmp.path().join(format!("oci-j{jobs}")))
                .args(["--json", "--no-cache", "-j", jobs]),
        ));
        assert_eq!(
            out["manifest_digest"], a.report["manifest_digest"],
            "-j {jobs}"
        );
    }
}
