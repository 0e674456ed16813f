//! The whole build pipeline on a tiny cmake project that the tests make:
//! lock -> fetch (local HTTP server on 127.0.0.1, a directory, a bundle) ->
//! unpack -> patch -> cmake + ninja in the sandbox -> store -> layer.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CMAKELISTS: &str = r#"cmake_minimum_required(VERSION 3.10)
project(hello C)
if(FETCH_URL)
  file(DOWNLOAD "${FETCH_URL}" "${CMAKE_BINARY_DIR}/downloaded.txt" STATUS st TIMEOUT 5)
  list(GET st 0 code)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "download of ${FETCH_URL} failed: ${st}")
  endif()
endif()
if(WAIT_FOR)
  add_custom_target(wait ALL COMMAND sh ${CMAKE_SOURCE_DIR}/wait.sh ${WAIT_FOR})
endif()
add_executable(hello hello.c)
if(BREAK)
  target_compile_definitions(hello PRIVATE BREAK_IT)
endif()
install(TARGETS hello DESTINATION bin)
install(FILES data.txt DESTINATION share/hello)
"#;

const HELLO_C: &str = r#"#include <stdio.h>
#ifdef BREAK_IT
#error "this build is meant to fail"
#endif
int main(void) {
    puts("hello");
    return 0;
}
"#;

const GOOD_PATCH: &str = r#"--- a/hello.c
+++ b/hello.c
@@ -4,5 +4,5 @@
 #endif
 int main(void) {
-    puts("hello");
+    puts("hello, patched");
     return 0;
 }
"#;

const BAD_PATCH: &str = r#"--- a/hello.c
+++ b/hello.c
@@ -4,5 +4,5 @@
 #endif
 int main(void) {
-    puts("goodbye");
+    puts("hello, patched");
     return 0;
 }
"#;

struct Project {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    lock: PathBuf,
    spec: PathBuf,
    store: PathBuf,
    files: PathBuf,
    tarball: Vec<u8>,
}

/// A source tarball (hello-1.0/...), a patch series, a lock and a spec.
fn project(extra_flags: &[&str], urls: &[String]) -> Project {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let files = root.join("files");
    fs::create_dir_all(&files).unwrap();
    let tarball = {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut add = |path: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_ustar();
            h.set_path(path).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add("hello-1.0/CMakeLists.txt", CMAKELISTS.as_bytes(), 0o644);
        add("hello-1.0/hello.c", HELLO_C.as_bytes(), 0o644);
        add("hello-1.0/data.txt", b"some data\n", 0o644);
        add(
            "hello-1.0/wait.sh",
            b"while [ ! -e \"$1\" ]; do sleep 0.1; done\n",
            0o644,
        );
        b.into_inner().unwrap().finish().unwrap()
    };
    fs::write(files.join("hello-1.0.tar.gz"), &tarball).unwrap();
    fs::create_dir_all(root.join("patches")).unwrap();
    fs::write(root.join("patches/series"), "0001-greeting.patch\n").unwrap();
    fs::write(root.join("patches/0001-greeting.patch"), GOOD_PATCH).unwrap();
    let mut flags = vec![
        "-DCMAKE_BUILD_TYPE=Release".to_string(),
        "-DCMAKE_INSTALL_PREFIX=/usr".to_string(),
    ];
    flags.extend(extra_flags.iter().map(|s| s.to_string()));
    let lock = root.join("mpsi.lock");
    fs::write(
        &lock,
        format!(
            r#"version = 1
source_date_epoch = 1700000000

[[input]]
name = "hello-source"
file = "hello-1.0.tar.gz"
version = "1.0"
size = {}
sha256 = "{}"
urls = {urls:?}

[build.hello]
recipe = "cmake-ninja-v1"
source = "hello-source"
series = "patches/series"
tools = ["cmake", "ninja", "gcc", "patch"]
cmake_flags = {flags:?}
"#,
            tarball.len(),
            sha256_hex(&tarball)
        ),
    )
    .unwrap();
    let store = root.join("store");
    run_ok(mpsi(&store).arg("lock").arg("--lock").arg(&lock));
    let spec = root.join("image.toml");
    fs::write(
        &spec,
        r#"lock = "mpsi.lock"

[image]
name = "mpsi-test/hello"
source_date_epoch = 1700000000
# The image holds the built program only, no C library: it is not run.
check_elf = false

[config]
cmd = ["/usr/bin/hello"]

[[layer]]
name = "hello"
[[layer.tree]]
from_build = "hello"
from = "usr"
to = "/usr"
exclude = ["share", "share/**"]
"#,
    )
    .unwrap();
    Project {
        _tmp: tmp,
        root,
        lock,
        spec,
        store,
        files,
        tarball,
    }
}

impl Project {
    fn assemble(&self, store: &Path) -> Command {
        let mut c = mpsi(store);
        c.arg("assemble")
            .arg(&self.spec)
            .arg("-o")
            .arg(self.root.join("oci"))
            .args(["--json", "--no-ccache"]);
        c
    }

    fn fetch_from_files(&self, store: &Path) {
        run_ok(
            mpsi(store)
                .arg("fetch")
                .arg("--from")
                .arg(&self.files)
                .arg("--lock")
                .arg(&self.lock),
        );
    }

    fn builds(&self, store: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(store.join("builds-v1"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// `mpsi lock --runtime` roots the packages shipping the libraries the
/// built programs need, read from the build in the store.
#[test]
fn lock_runtime_adds_the_packages_of_the_builds_libraries() {
    require_apt_lists();
    let p = project(&[], &[]);
    let mut lock: toml::Table = toml::from_str(&fs::read_to_string(&p.lock).unwrap()).unwrap();
    lock.insert(
        "runtime".into(),
        toml::from_str("roots = [\"base-files\", \"mawk\"]\nlibraries_of = [\"hello\"]").unwrap(),
    );
    fs::write(&p.lock, toml::to_string(&lock).unwrap()).unwrap();
    let lock_runtime = |store: &Path| {
        let mut c = mpsi(store);
        c.args(["lock", "--runtime", "--json", "--lock"])
            .arg(&p.lock);
        c
    };
    // Before the build is in the store, it says what to run.
    let (_, err) = run_fail(&mut lock_runtime(&p.store));
    assert!(
        err.contains("build \"hello\"") && err.contains("mpsi assemble"),
        "{err}"
    );

    p.fetch_from_files(&p.store);
    run_ok(&mut p.assemble(&p.store));
    let out = json(&run_ok(&mut lock_runtime(&p.store)));
    assert_eq!(out["runtime"]["changed"], true);
    let lock: toml::Table = toml::from_str(&fs::read_to_string(&p.lock).unwrap()).unwrap();
    // hello is a C program: it needs the C library, shipped by libc6.
    let libraries = lock["runtime"]["libraries"].as_table().unwrap();
    assert_eq!(
        libraries.get("libc.so.6").and_then(|v| v.as_str()),
        Some("libc6")
    );
    assert_eq!(libraries.len(), 1, "{libraries:?}");
    let pinned: Vec<&str> = lock["runtime"]["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        pinned.contains(&"libc6") && pinned.contains(&"base-files"),
        "{pinned:?}"
    );
}

#[test]
fn build_from_http_then_cache_hit_then_offline_from_a_bundle() {
    let mut p = project(&[], &[]);
    let server = TestServer::start(vec![("/hello-1.0.tar.gz".into(), p.tarball.clone())], None);
    // Point the lock at the server (the pin stays the same).
    let text = fs::read_to_string(&p.lock).unwrap().replace(
        "urls = []",
        &format!("urls = [{:?}]", server.url("/hello-1.0.tar.gz")),
    );
    fs::write(&p.lock, text).unwrap();

    // First assemble: downloads the source, builds, makes the layer. --jobs
    // also bounds ninja when --build-jobs is not given.
    let first = json(&run_ok(p.assemble(&p.store).args(["-j", "2"])));
    assert_eq!(server.log(), ["GET /hello-1.0.tar.gz"]);
    let b = &first["builds"][0];
    assert_eq!(b["name"], "hello");
    assert_eq!(b["cached"], false);
    assert_eq!(b["hermetic"], true);
    let out = PathBuf::from(b["path"].as_str().unwrap());
    let hello = out.join("out/usr/bin/hello");
    let ran = Command::new(&hello).output().unwrap();
    assert_eq!(ran.stdout, b"hello, patched\n", "the patch was applied");
    let log = fs::read_to_string(out.join("build.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.starts_with("$ ninja -C") && l.ends_with(" -j2")),
        "{log}"
    );
    // Stripped, with the debug info kept apart by build-id.
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("meta.json")).unwrap()).unwrap();
    // Where the time went, step by step, in order.
    let phases: Vec<&str> = meta["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "unpack",
            "patch",
            "configure",
            "build",
            "prune",
            "install",
            "strip",
            "manifest"
        ]
    );
    assert_eq!(b["phases"], meta["phases"]);
    let id = meta["build_ids"][0].as_str().unwrap();
    assert!(
        out.join("debug/.build-id")
            .join(&id[..2])
            .join(format!("{}.debug", &id[2..]))
            .is_file()
    );
    let sections = Command::new("readelf")
        .arg("-S")
        .arg(&hello)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&sections.stdout).contains(".debug_info"));
    assert!(
        meta["toolchain"]["cmake"]
            .as_str()
            .unwrap()
            .contains("cmake")
    );
    assert_eq!(meta["hermetic"], true);
    assert_eq!(
        first["layers"][0]["entries"], 3,
        "usr, usr/bin, usr/bin/hello"
    );

    // Second assemble: nothing changed, the build is skipped entirely.
    let t = Instant::now();
    let second = json(&run_ok(&mut p.assemble(&p.store)));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a cache hit took {:?}",
        t.elapsed()
    );
    assert_eq!(second["builds"][0]["cached"], true);
    assert_eq!(second["layers"][0]["cached"], true);
    assert_eq!(second["manifest_digest"], first["manifest_digest"]);
    assert_eq!(server.log().len(), 1);
    unreadable_meta_fails_closed(&p, &out);

    // A bundle carries the inputs to a machine without network: a new store
    // assembles from it alone, to the same image (the build is reproducible
    // across work directories).
    let bundle = p.root.join("inputs.tar");
    run_ok(
        mpsi(&p.store)
            .arg("fetch")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--lock")
            .arg(&p.lock),
    );
    let airgapped = p.root.join("airgapped-store");
    let (code, err) = run_fail(p.assemble(&airgapped).arg("--offline"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hello-source") && err.contains("--offline"),
        "{err}"
    );
    drop(server); // the network is gone
    let third = json(&run_ok(
        p.assemble(&airgapped)
            .arg("--offline")
            .arg("--inputs")
            .arg(&bundle),
    ));
    assert_eq!(third["builds"][0]["cached"], false);
    assert_eq!(third["builds"][0]["key"], first["builds"][0]["key"]);
    assert_eq!(third["manifest_digest"], first["manifest_digest"]);

    // A bundle without the input fails clearly.
    let other_lock = p.root.join("other.lock");
    fs::write(
        &other_lock,
        "version = 1\nsource_date_epoch = 0\n[[input]]\nname = \"x\"\nfile = \"x.tar\"\nsize = 1\nsha256 = \"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\"\n",
    )
    .unwrap();
    fs::write(p.root.join("x.tar"), "x").unwrap();
    run_ok(
        mpsi(&p.store)
            .arg("fetch")
            .arg("--from")
            .arg(&p.root)
            .arg("--bundle")
            .arg(p.root.join("x-bundle.tar"))
            .arg("--lock")
            .arg(&other_lock),
    );
    let (code, err) = run_fail(
        p.assemble(&p.root.join("store3"))
            .arg("--offline")
            .arg("--inputs")
            .arg(p.root.join("x-bundle.tar")),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hello-source") && err.contains("does not hold it"),
        "{err}"
    );

    // store ls / verify / gc know build outputs.
    let ls = json(&run_ok(mpsi(&p.store).args(["store", "ls", "--json"])));
    assert_eq!(ls["builds"].as_array().unwrap().len(), 1);
    run_ok(mpsi(&p.store).args(["store", "verify"]));
    gc_reads_roots_from_meta_without_the_toolchain(&p, &out);
    p.tarball.clear();
}

/// A build whose meta.json is unreadable is an error naming the file, not
/// a hermetic cache hit.
fn unreadable_meta_fails_closed(p: &Project, build: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = build.join("meta.json");
    let good = fs::read(&meta).unwrap();
    let mode = fs::metadata(build).unwrap().permissions().mode();
    fs::set_permissions(build, fs::Permissions::from_mode(0o755)).unwrap();
    for broken in [&b"{\"name\": \"hello\""[..], b""] {
        fs::write(&meta, broken).unwrap();
        let (code, err) = run_fail(&mut p.assemble(&p.store));
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&meta.display().to_string()) && err.contains("store verify"),
            "{err}"
        );
    }
    fs::write(&meta, good).unwrap();
    fs::set_permissions(build, fs::Permissions::from_mode(mode)).unwrap();
}

/// gc keeps the build the lock names, found from its meta.json, on a host
/// without cmake (an empty PATH): an unrelated build, an older build of
/// the same entry and one with a broken meta.json go; a temporary file
/// that is still being written stays.
fn gc_reads_roots_from_meta_without_the_toolchain(p: &Project, build: &Path) {
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(build.join("meta.json")).unwrap()).unwrap();
    let fake = |key: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let dir = p.store.join("builds-v1").join(key);
        fs::create_dir_all(dir.join("out")).unwrap();
        let mut m = meta.clone();
        m["key"] = key.into();
        change(&mut m);
        fs::write(dir.join("meta.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(86400);
        fs::File::options()
            .write(true)
            .open(dir.join("meta.json"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        dir
    };
    let unrelated = fake(&"1".repeat(64), &|m| {
        m["source_sha256"] = "0".repeat(64).into()
    });
    let older = fake(&"2".repeat(64), &|m| {
        m["toolchain"]["cmake"] = "cmake 3.0".into()
    });
    let broken = fake(&"3".repeat(64), &|_| {});
    fs::write(broken.join("meta.json"), b"not json").unwrap();
    let in_flight = p.store.join("blobs/sha256/.mpsi-tmp-in-flight");
    fs::write(&in_flight, b"a layer being written").unwrap();

    let empty = p.root.join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let gc = json(&run_ok(
        mpsi(&p.store)
            .env("PATH", &empty)
            .args(["store", "gc", "--json", "--lock"])
            .arg(&p.lock),
    ));
    assert!(
        build.join("meta.json").is_file(),
        "the lock's build is kept: {gc}"
    );
    for gone in [&unrelated, &older, &broken] {
        assert!(!gone.exists(), "{} was kept: {gc}", gone.display());
    }
    assert!(in_flight.is_file(), "a fresh temporary was removed: {gc}");
    assert_eq!(gc["fresh"][0], in_flight.display().to_string());
    run_ok(mpsi(&p.store).args(["store", "verify"]));
}

#[test]
fn a_tampered_patch_and_a_patch_that_does_not_apply() {
    let p = project(&[], &[]);
    p.fetch_from_files(&p.store);
    fs::write(p.root.join("patches/0001-greeting.patch"), BAD_PATCH).unwrap();
    let (code, err) = run_fail(&mut p.assemble(&p.store));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("0001-greeting.patch") && err.contains("mpsi lock"),
        "{err}"
    );
    // Accepting the change pins it; then the patch fails to apply, named
    // with its file and hunk, and nothing enters the store.
    run_ok(mpsi(&p.store).arg("lock").arg("--lock").arg(&p.lock));
    let (code, err) = run_fail(&mut p.assemble(&p.store));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0001-greeting.patch"), "{err}");
    assert!(err.contains("hello.c"), "{err}");
    assert!(err.contains("Hunk #1 FAILED"), "{err}");
    assert!(p.builds(&p.store).is_empty());
}

#[test]
fn missing_tools_and_packages_are_named_up_front_with_the_apt_get_line() {
    let p = project(&[], &[]);
    p.fetch_from_files(&p.store);
    let mut lock: toml::Table = fs::read_to_string(&p.lock).unwrap().parse().unwrap();
    let mut build = lock["build"]["hello"].as_table().unwrap().clone();
    build["tools"]
        .as_array_mut()
        .unwrap()
        .push("mpsi-no-such-tool".into());
    build.insert(
        "packages".into(),
        toml::Value::Array(vec!["libc6-dev".into(), "libmpsi-no-such-dev".into()]),
    );
    lock["build"]
        .as_table_mut()
        .unwrap()
        .insert("hello".into(), build.into());
    fs::write(&p.lock, toml::to_string(&lock).unwrap()).unwrap();
    let (code, err) = run_fail(&mut p.assemble(&p.store));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing tools"), "{err}");
    assert!(err.contains("mpsi-no-such-tool"), "{err}");
    assert!(
        err.contains("missing packages: libmpsi-no-such-dev"),
        "{err}"
    );
    // The installed package is not in the line; the two missing ones are.
    assert!(
        err.contains("apt-get install libmpsi-no-such-dev mpsi-no-such-tool"),
        "{err}"
    );
    // Nothing started: no work tree, no output.
    assert!(p.builds(&p.store).is_empty());
    assert!(!p.store.join("work-v1/hello").exists());
}

#[test]
fn a_failing_build_shows_the_error_and_the_log() {
    let p = project(&["-DBREAK=ON"], &[]);
    p.fetch_from_files(&p.store);
    let (code, err) = run_fail(&mut p.assemble(&p.store));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("this build is meant to fail"), "{err}");
    assert!(err.contains("FAILED:"), "{err}");
    let log = err
        .split("full log: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .expect("the error names the log");
    assert!(fs::read_to_string(log).unwrap().contains("meant to fail"));
    assert!(p.builds(&p.store).is_empty());
}

#[test]
fn the_build_cannot_reach_the_network() {
    let server = TestServer::start(vec![("/dep.txt".into(), b"dependency\n".to_vec())], None);
    let url = server.url("/dep.txt");
    let p = project(&[&format!("-DFETCH_URL={url}")], &[]);
    p.fetch_from_files(&p.store);
    let (code, err) = run_fail(&mut p.assemble(&p.store));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("download of"), "{err}");
    assert!(server.log().is_empty(), "{:?}", server.log());
    assert!(p.builds(&p.store).is_empty());

    // --allow-network builds, and says so in the output's metadata.
    let out = json(&run_ok(p.assemble(&p.store).arg("--allow-network")));
    assert_eq!(server.log(), ["GET /dep.txt"]);
    assert_eq!(out["builds"][0]["hermetic"], false);
    let meta: serde_json::Value = serde_json::from_slice(
        &fs::read(Path::new(out["builds"][0]["path"].as_str().unwrap()).join("meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["hermetic"], false);
    assert_eq!(meta["network"], "host");
}

#[test]
fn kill_9_in_the_middle_of_a_build_then_a_clean_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go-marker-for-kill-test");
    let p = project(&[&format!("-DWAIT_FOR={}", go.display())], &[]);
    p.fetch_from_files(&p.store);
    let mut child = p.assemble(&p.store).spawn().unwrap();
    let log = p.store.join("work-v1/hello/build.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&log).is_ok_and(|l| l.contains("$ ninja")) {
        assert!(Instant::now() < deadline, "the build never reached ninja");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The whole build tree died with mpsi (no orphan still waiting).
    let marker = go.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orphans: Vec<String> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| fs::read(e.unwrap().path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&marker) && c.contains("wait.sh"))
            .collect();
        if orphans.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "orphans: {orphans:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(p.builds(&p.store).is_empty(), "no partial output");

    fs::File::create(&go).unwrap().write_all(b"go").unwrap();
    let out = json(&run_ok(&mut p.assemble(&p.store)));
    assert_eq!(out["builds"][0]["cached"], false);
    assert_eq!(p.builds(&p.store).len(), 1);
    assert!(!p.store.join("work-v1/hello").exists(), "work tree cleaned");
    run_ok(mpsi(&p.store).args(["store", "verify"]));
}

/// Golden digests of the tiny cmake build's image: the compiled, stripped
/// program and the layer made from it must not change bytes by accident
/// (the toolchain is Debian 12's; see `check_golden`).
#[test]
fn golden_digests_of_the_cmake_fixture_build() {
    let p = project(&[], &[]);
    p.fetch_from_files(&p.store);
    let report = json(&run_ok(&mut p.assemble(&p.store)));
    let mut digests = image_digests(&report);
    digests["build_key"] = report["builds"][0]["key"].clone();
    check_golden("cmake-fixture-build", &digests);
}

/// `assemble --dry-run` changes nothing, says what is reused, and after a
/// patch changes names that patch as the reason for the rebuild and the
/// layer that will be rewritten.
#[test]
fn dry_run_explains_a_rebuild_by_the_changed_patch() {
    let p = project(&[], &[]);
    p.fetch_from_files(&p.store);
    run_ok(&mut p.assemble(&p.store));
    let dry = |p: &Project| {
        let mut c = p.assemble(&p.store);
        c.arg("--dry-run");
        json(&run_ok(&mut c))
    };
    let warm = dry(&p);
    assert_eq!(warm["builds"][0]["cached"], true, "{warm}");
    assert_eq!(warm["layers"][0]["cached"], true, "{warm}");

    let patch = p.root.join("patches/0001-greeting.patch");
    fs::write(
        &patch,
        GOOD_PATCH.replace("hello, patched", "hello, patched again"),
    )
    .unwrap();
    run_ok(mpsi(&p.store).arg("lock").arg("--lock").arg(&p.lock));
    let builds_before = p.builds(&p.store);
    let changed = dry(&p);
    let b = &changed["builds"][0];
    assert_eq!(b["cached"], false, "{changed}");
    let because: Vec<&str> = b["because"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(because.len(), 1, "{because:?}");
    assert!(
        because[0].starts_with("patch patches/0001-greeting.patch changed"),
        "{because:?}"
    );
    assert_eq!(b["compared_with"], warm["builds"][0]["key"]);
    assert_eq!(changed["layers"][0]["cached"], false);
    assert!(
        changed["layers"][0]["because"]
            .as_str()
            .unwrap()
            .contains("build \"hello\"")
    );
    // Nothing was built or written.
    assert_eq!(p.builds(&p.store), builds_before);
    // The text form says the same for a human.
    let mut c = mpsi(&p.store);
    c.arg("assemble")
        .arg(&p.spec)
        .args(["--dry-run", "--no-ccache", "-o"])
        .arg(p.root.join("oci"));
    let text = String::from_utf8(run_ok(&mut c).stdout).unwrap();
    assert!(
        text.contains("BUILD") && text.contains("patch patches/0001-greeting.patch changed"),
        "{text}"
    );
    assert!(text.contains("layer  hello            WRITE"), "{text}");
}
