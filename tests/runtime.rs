//! Runtime packages: `.deb` files read by mpsi itself into a layer (merged
//! /usr, the packages' modes, owners and links) with the dpkg database, read
//! back by dpkg's own tools. Tiny packages are built here with dpkg-deb, so
//! these tests need no network.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `NAME_1.0_all.deb` in `out` from `files` (path, content, mode),
/// compressed with `z` (xz, zstd or gzip), with the owners on disk (the
/// tests run as root, as CI does, to chown a file).
fn build_deb(
    out: &Path,
    name: &str,
    z: &str,
    files: &[(&str, &str, u32)],
    extra: impl Fn(&Path),
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = out.join(format!("{name}-root"));
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0-1\nArchitecture: {}\nMaintainer: Test <t@example.org>\n\
Description: test package {name}\n a tiny package built by the test\n{}",
            if name == "b" { "amd64" } else { "all" },
            // b is a Multi-Arch: same library, whose dpkg files are named b:amd64.*
            if name == "b" {
                "Multi-Arch: same\n"
            } else {
                ""
            }
        ),
    )
    .unwrap();
    let mut sums = String::new();
    for (path, content, mode) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        if !path.starts_with("etc/") {
            sums.push_str(&format!("{}  {path}\n", md5_hex(content.as_bytes())));
        }
    }
    extra(&root);
    fs::write(root.join("DEBIAN/md5sums"), sums).unwrap();
    let deb = out.join(format!("{name}_1.0-1_all.deb"));
    run_ok(
        Command::new(require_tool("dpkg-deb"))
            .args(["-Z", z, "--build"])
            .arg(&root)
            .arg(&deb),
    );
    deb
}

fn md5_hex(data: &[u8]) -> String {
    let out = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// A lock pinning `debs` as runtime packages, and a spec with one
/// `[[layer.packages]]` layer.
fn lock_and_spec(dir: &Path, debs: &[PathBuf]) -> PathBuf {
    lock_and_spec_with(dir, debs, "")
}

/// As `lock_and_spec`, with `extra` lines in the `[[layer.packages]]` table.
fn lock_and_spec_with(dir: &Path, debs: &[PathBuf], extra: &str) -> PathBuf {
    let mut lock =
        String::from("version = 1\nsource_date_epoch = 1700000000\n\n[runtime]\nroots = [\"a\"]\n");
    for d in debs {
        let data = fs::read(d).unwrap();
        let file = d.file_name().unwrap().to_str().unwrap();
        let name = file.split('_').next().unwrap();
        lock.push_str(&format!(
            "\n[[runtime.package]]\nname = \"{name}\"\nversion = \"1.0-1\"\narchitecture = \"all\"\nfile = \"{file}\"\n\
size = {}\nsha256 = \"{}\"\nurl = \"http://127.0.0.1:9/{file}\"\n",
            data.len(),
            sha256_hex(&data)
        ));
    }
    fs::write(dir.join("mpsi.lock"), lock).unwrap();
    let spec = dir.join("image.toml");
    fs::write(
        &spec,
        format!(
            "lock = \"mpsi.lock\"\n[image]\nname = \"rt-test\"\n\n[[layer]]\nname = \"runtime\"\n\
[[layer.packages]]\nfrom_lock = \"runtime\"\n{extra}"
        ),
    )
    .unwrap();
    spec
}

/// Unpacks the layers of an assembled layout into `dest` with tar(1).
fn unpack_layers(layout: &Path, report: &serde_json::Value, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for l in report["layers"].as_array().unwrap() {
        let digest = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let blob = layout.join("blobs/sha256").join(digest);
        run_ok(
            Command::new(require_tool("tar"))
                .arg("-xzf")
                .arg(&blob)
                .arg("-C")
                .arg(dest),
        );
    }
}

fn layer_listing(layout: &Path, report: &serde_json::Value) -> String {
    let digest = report["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let out = run_ok(
        Command::new(require_tool("tar"))
            .args(["-tvzf"])
            .arg(layout.join("blobs/sha256").join(digest))
            .args(["--numeric-owner"]),
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tiny_packages(dir: &Path) -> Vec<PathBuf> {
    let a = build_deb(
        dir,
        "a",
        "xz",
        &[
            ("bin/hello", "#!/bin/sh\necho hello\n", 0o755),
            ("etc/a.conf", "x=1\n", 0o644),
            ("usr/share/doc/a/README", "read me\n", 0o644),
            ("usr/share/doc/a/copyright", "GPL\n", 0o644),
        ],
        |root| {
            fs::write(root.join("DEBIAN/conffiles"), "/etc/a.conf\n").unwrap();
            std::os::unix::fs::symlink("hello", root.join("bin/hi")).unwrap();
            fs::hard_link(root.join("bin/hello"), root.join("bin/another")).unwrap();
            std::os::unix::fs::chown(root.join("etc/a.conf"), Some(1000), Some(1001)).unwrap();
        },
    );
    let b = build_deb(
        dir,
        "b",
        "zstd",
        &[("usr/lib/b/lib.txt", "b\n", 0o644)],
        |_| {},
    );
    let c = build_deb(dir, "c", "gzip", &[("lib/c/data", "c\n", 0o600)], |_| {});
    vec![a, b, c]
}

/// `mpsi fetch --from DEBS` for the lock in `dir`.
fn fetch_debs(store: &Path, dir: &Path, debs: &Path) {
    run_ok(
        mpsi(store)
            .args(["fetch", "--lock"])
            .arg(dir.join("mpsi.lock"))
            .arg("--from")
            .arg(debs),
    );
}

#[test]
fn packages_become_a_merged_usr_layer_with_a_dpkg_database() {
    let tmp = tempfile::tempdir().unwrap();
    let debs_dir = tmp.path().join("debs");
    fs::create_dir_all(&debs_dir).unwrap();
    let debs = tiny_packages(&debs_dir);
    let spec = lock_and_spec(tmp.path(), &debs);
    let store = tmp.path().join("store");
    fetch_debs(&store, tmp.path(), &debs_dir);
    let layout = tmp.path().join("oci");
    let report = assemble(&store, &spec, &layout);

    let listing = layer_listing(&layout, &report);
    for want in [
        "bin -> usr/bin",
        "lib -> usr/lib",
        "lib64 -> usr/lib64",
        "sbin -> usr/sbin",
        "usr/bin/hi -> hello",
        "usr/bin/hello link to usr/bin/another",
        "-rw------- 0/0               2 2023-11-14 22:13 usr/lib/c/data",
        "-rw-r--r-- 1000/1001         4 2023-11-14 22:13 etc/a.conf",
        "var/lib/dpkg/status",
        "var/lib/dpkg/info/a.list",
        "var/lib/dpkg/info/a.md5sums",
        "var/lib/dpkg/info/b:amd64.list",
        "var/lib/dpkg/info/format",
    ] {
        assert!(
            listing.contains(want),
            "{want:?} not in the layer:\n{listing}"
        );
    }
    assert!(
        !listing.contains(" bin/hello"),
        "package paths are moved into usr/:\n{listing}"
    );

    // dpkg's own readers accept the database.
    let root = tmp.path().join("root");
    unpack_layers(&layout, &report, &root);
    let admin = root.join("var/lib/dpkg");
    let out = run_ok(
        Command::new(require_tool("dpkg-query"))
            .arg(format!("--admindir={}", admin.display()))
            .arg("-W"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\t1.0-1\nb:amd64\t1.0-1\nc\t1.0-1\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_dpkg_verify_clean(&root);

    // An edited file is what dpkg --verify reports: the check is real.
    fs::write(root.join("usr/lib/b/lib.txt"), "changed\n").unwrap();
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--verify")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("/usr/lib/b/lib.txt"));
}

#[test]
fn excluded_paths_leave_the_layer_and_the_dpkg_database() {
    let tmp = tempfile::tempdir().unwrap();
    let debs_dir = tmp.path().join("debs");
    fs::create_dir_all(&debs_dir).unwrap();
    let debs = tiny_packages(&debs_dir);
    let spec = lock_and_spec_with(
        tmp.path(),
        &debs,
        "exclude = [\"usr/share/doc/**\"]\nkeep = [\"usr/share/doc/*/copyright\"]\n",
    );
    let store = tmp.path().join("store");
    fetch_debs(&store, tmp.path(), &debs_dir);
    let layout = tmp.path().join("oci");
    let report = assemble(&store, &spec, &layout);
    let root = tmp.path().join("root");
    unpack_layers(&layout, &report, &root);
    assert!(!root.join("usr/share/doc/a/README").exists());
    assert_eq!(
        fs::read_to_string(root.join("usr/share/doc/a/copyright")).unwrap(),
        "GPL\n"
    );
    let list = fs::read_to_string(root.join("var/lib/dpkg/info/a.list")).unwrap();
    assert!(
        !list.contains("README") && list.contains("/usr/share/doc/a/copyright"),
        "{list}"
    );
    assert_dpkg_verify_clean(&root);
}

#[test]
fn two_packages_shipping_one_path_differently_is_an_error_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let debs_dir = tmp.path().join("debs");
    fs::create_dir_all(&debs_dir).unwrap();
    let a = build_deb(
        &debs_dir,
        "one",
        "xz",
        &[("usr/bin/tool", "one\n", 0o755)],
        |_| {},
    );
    // Shipped as /bin/tool: the same image path once /usr is merged.
    let b = build_deb(
        &debs_dir,
        "two",
        "gzip",
        &[("bin/tool", "two\n", 0o755)],
        |_| {},
    );
    let same = build_deb(
        &debs_dir,
        "three",
        "gzip",
        &[("usr/bin/tool", "one\n", 0o755)],
        |_| {},
    );
    let store = tmp.path().join("store");

    let spec = lock_and_spec(tmp.path(), &[a.clone(), same]);
    fetch_debs(&store, tmp.path(), &debs_dir);
    assemble(&store, &spec, &tmp.path().join("ok"));

    let spec = lock_and_spec(tmp.path(), &[a, b]);
    fetch_debs(&store, tmp.path(), &debs_dir);
    let (_, err) = assemble_fails(&store, &spec, tmp.path());
    assert!(
        err.contains("/usr/bin/tool")
            && err.contains("package one 1.0-1")
            && err.contains("package two 1.0-1"),
        "{err}"
    );
}

// ---- the real runtime packages of mpsi.lock ---------------------------------

/// The repository's lock with only its runtime section (no source tarball
/// or build), and a spec with only the runtime layer of the real spec, in
/// `dir`.
fn real_runtime(dir: &Path) -> (PathBuf, PathBuf) {
    real_layers(dir, &["runtime"])
}

/// As `real_runtime`, with these layers of the real spec (none may take
/// files from the build or from rootfs/).
fn real_layers(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut lock: toml::Table =
        toml::from_str(&fs::read_to_string(repo.join("mpsi.lock")).unwrap()).unwrap();
    lock.remove("input");
    lock.remove("build");
    // Its library roots come from the MariaDB build, which is not here.
    let rt = lock["runtime"].as_table_mut().unwrap();
    rt.remove("libraries_of");
    let lock_path = dir.join("mpsi.lock");
    fs::write(&lock_path, toml::to_string(&lock).unwrap()).unwrap();
    let real: toml::Table =
        toml::from_str(&fs::read_to_string(repo.join("layers/mariadb-pageserver.toml")).unwrap())
            .unwrap();
    let layers: Vec<toml::Value> = names
        .iter()
        .map(|name| {
            real["layer"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("the real spec has no {name} layer"))
                .clone()
        })
        .collect();
    let mut spec: toml::Table = toml::from_str(
        "lock = \"mpsi.lock\"\n[image]\nname = \"mpsi-test/runtime\"\ntag = \"v1\"\n\
[config]\nenv = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]\n",
    )
    .unwrap();
    spec.insert("layer".into(), toml::Value::Array(layers));
    let spec_path = dir.join("runtime.toml");
    fs::write(&spec_path, toml::to_string(&spec).unwrap()).unwrap();
    (lock_path, spec_path)
}

/// `name version` of each runtime package pinned in a lock, sorted.
fn pinned(lock: &Path) -> Vec<String> {
    let lock: toml::Table = toml::from_str(&fs::read_to_string(lock).unwrap()).unwrap();
    let mut out: Vec<String> = lock["runtime"]["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn lock_runtime_pins_the_closure_from_apt() {
    require_apt_lists();
    let tmp = tempfile::tempdir().unwrap();
    let lock = tmp.path().join("mpsi.lock");
    fs::write(
        &lock,
        "version = 1\nsource_date_epoch = 0\n\n[runtime]\nroots = [\"bash\", \"mawk\"]\n\n\
[[runtime.exclude]]\nname = \"libtinfo6\"\nreason = \"left out by the test\"\n",
    )
    .unwrap();
    let store = tmp.path().join("store");
    let out = json(&run_ok(
        mpsi(&store)
            .args(["lock", "--runtime", "--json", "--lock"])
            .arg(&lock),
    ));
    assert_eq!(out["runtime"]["changed"], true);
    let names: Vec<String> = pinned(&lock)
        .iter()
        .map(|p| p.split(' ').next().unwrap().to_string())
        .collect();
    // bash -> base-files (Pre-Depends: awk, provided by the mawk root),
    // debianutils, libc6 -> libgcc-s1 -> gcc-12-base; libtinfo6 is excluded.
    for want in [
        "bash",
        "base-files",
        "debianutils",
        "libc6",
        "libgcc-s1",
        "mawk",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n == "libtinfo6"), "{names:?}");

    // The pins are apt's own: compare libc6 with apt-cache.
    let show = run_ok(Command::new("apt-cache").args(["show", "--no-all-versions", "libc6"]));
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    let text = fs::read_to_string(&lock).unwrap();
    let sha = show
        .lines()
        .find_map(|l| l.strip_prefix("SHA256: "))
        .unwrap();
    assert!(text.contains(&format!("sha256 = \"{sha}\"")), "{text}");
    assert!(text.contains("url = \"https://"), "{text}");

    // Unchanged metadata: nothing to write.
    let out = json(&run_ok(
        mpsi(&store)
            .args(["lock", "--runtime", "--json", "--lock"])
            .arg(&lock),
    ));
    assert_eq!(out["runtime"]["changed"], false);

    // A virtual name nothing provides is explained.
    fs::write(
        &lock,
        "version = 1\nsource_date_epoch = 0\n\n[runtime]\nroots = [\"awk\"]\n",
    )
    .unwrap();
    let (_, err) = run_fail(
        mpsi(&store)
            .args(["lock", "--runtime", "--lock"])
            .arg(&lock),
    );
    assert!(err.contains("\"awk\"") && err.contains("provider"), "{err}");
}

#[test]
fn pinned_debian_packages_verify_with_dpkg_and_travel_in_a_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let (lock, spec) = real_runtime(tmp.path());
    let store = tmp.path().join("store");
    // From Debian's archive, checked against the pins like any input.
    run_ok(mpsi(&store).args(["fetch", "--lock"]).arg(&lock));
    let layout = tmp.path().join("oci");
    let report = assemble(&store, &spec, &layout);

    let root = tmp.path().join("root");
    unpack_layers(&layout, &report, &root);
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(root.join("usr/bin/bash").is_file());
    assert!(root.join("usr/lib64/ld-linux-x86-64.so.2").exists());
    // The real spec's exclusions apply; copyright files stay.
    assert!(
        !root
            .join("usr/share/locale")
            .join("de/LC_MESSAGES/coreutils.mo")
            .exists()
    );
    assert!(!root.join("usr/share/doc/bash/NEWS.gz").exists());
    assert!(!root.join("usr/share/man/man1/bash.1.gz").exists());
    assert!(root.join("usr/share/doc/bash/copyright").is_file());
    let out = run_ok(
        Command::new(require_tool("dpkg-query"))
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package} ${Version}\\n"]),
    );
    let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(listed, pinned(&lock));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_dpkg_verify_clean(&root);

    // The packages go into a bundle, and an offline assemble from it in a
    // fresh store gives the same image.
    let bundle = tmp.path().join("inputs.tar");
    run_ok(
        mpsi(&store)
            .args(["fetch", "--lock"])
            .arg(&lock)
            .arg("--bundle")
            .arg(&bundle),
    );
    // store gc keeps the pinned packages: an offline assemble still works.
    run_ok(mpsi(&store).args(["store", "gc", "--lock"]).arg(&lock));
    run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci-gc"))
            .arg("--offline"),
    );
    let store2 = tmp.path().join("store2");
    let again = json(&run_ok(
        mpsi(&store2)
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci2"))
            .args(["--offline", "--json", "--inputs"])
            .arg(&bundle),
    ));
    assert_eq!(again["manifest_digest"], report["manifest_digest"]);
    let (_, err) = run_fail(
        mpsi(&tmp.path().join("store3"))
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci3"))
            .arg("--offline"),
    );
    assert!(err.contains("deb:") && err.contains("--offline"), "{err}");
}

#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs it with --ignored"]
fn the_runtime_layer_starts_a_shell_in_docker() {
    let host = docker_host();
    let tmp = tempfile::tempdir().unwrap();
    let (lock, spec) = real_runtime(tmp.path());
    let store = tmp.path().join("store");
    run_ok(mpsi(&store).args(["fetch", "--lock"]).arg(&lock));
    let layout = tmp.path().join("oci");
    assemble(&store, &spec, &layout);

    let docker = || docker(&host);
    export_into_docker(&store, &layout, &host);

    let out = run_ok(docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        "mpsi-test/runtime:v1",
        "bash",
        "-c",
        "echo ok; ls /usr/bin | wc -l; date -u -d @0 +%Y; TZ=Europe/Paris date -d @0 +%H; echo a b | awk '{ print $2 }'",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok");
    assert!(lines[1].parse::<u32>().unwrap() > 100, "{text}");
    assert_eq!(lines[2], "1970", "{text}");
    // tzdata's zone files are there: Paris was UTC+1 at the epoch.
    assert_eq!(lines[3], "01", "{text}");
    // The spec's /usr/bin/awk link, which mawk's maintainer script would make.
    assert_eq!(lines[4], "b", "{text}");
    let _ = docker().args(["rmi", "mpsi-test/runtime:v1"]).output();
}

/// `dpkg --root=ROOT --verify` reports nothing, on stdout or stderr.
fn assert_dpkg_verify_clean(root: &Path) {
    let out = run_ok(
        Command::new(require_tool("dpkg"))
            .arg(format!("--root={}", root.display()))
            .arg("--verify"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "dpkg --verify found problems"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "dpkg --verify warned"
    );
}

// ---- permissions and accounts over packages --------------------------------

/// Setuid, setgid and world-writable files and directories of a package.
fn risky_package(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    build_deb(
        dir,
        "s",
        "xz",
        &[
            ("bin/su", "su\n", 0o4755),
            ("usr/bin/wall", "wall\n", 0o2755),
            ("usr/share/s/open", "anyone\n", 0o666),
            ("usr/share/s/plain", "plain\n", 0o644),
        ],
        |root| {
            for (d, mode) in [("tmp", 0o1777), ("var/tmp", 0o1777), ("var/local", 0o2775)] {
                fs::create_dir_all(root.join(d)).unwrap();
                fs::set_permissions(root.join(d), fs::Permissions::from_mode(mode)).unwrap();
            }
        },
    )
}

#[test]
fn package_setid_and_world_writable_bits_are_dropped_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let debs_dir = tmp.path().join("debs");
    fs::create_dir_all(&debs_dir).unwrap();
    let debs = vec![risky_package(&debs_dir)];
    let spec = lock_and_spec(tmp.path(), &debs);
    let store = tmp.path().join("store");
    fetch_debs(&store, tmp.path(), &debs_dir);
    let layout = tmp.path().join("oci");
    let report = assemble(&store, &spec, &layout);
    let changed: Vec<String> = report["permissions"]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {} {} {}",
                c["layer"].as_str().unwrap(),
                c["path"].as_str().unwrap(),
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap(),
                c["dropped"].as_str().unwrap(),
                c["source"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            "runtime /usr/bin/su 4755 0755 setuid package s 1.0-1",
            "runtime /usr/bin/wall 2755 0755 setgid package s 1.0-1",
            "runtime /usr/share/s/open 0666 0664 world-writable package s 1.0-1",
            "runtime /var/local 2775 0775 setgid package s 1.0-1",
            "runtime /var/tmp 1777 1775 world-writable package s 1.0-1",
        ]
    );
    // The layer holds the fixed modes; /tmp (1777) is the one exception.
    let listing = layer_listing(&layout, &report);
    for want in [
        "-rwxr-xr-x 0/0               3 2023-11-14 22:13 usr/bin/su",
        "-rwxr-xr-x 0/0               5 2023-11-14 22:13 usr/bin/wall",
        "-rw-rw-r-- 0/0               7 2023-11-14 22:13 usr/share/s/open",
        "drwxrwxr-x 0/0               0 2023-11-14 22:13 var/local/",
        "drwxrwxr-t 0/0               0 2023-11-14 22:13 var/tmp/",
        "drwxrwxrwt 0/0               0 2023-11-14 22:13 tmp/",
    ] {
        assert!(listing.contains(want), "{want:?} not in:\n{listing}");
    }
    // The text report lists each change.
    let out = run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci-text")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .contains("/usr/bin/su 4755 -> 0755: dropped setuid (package s 1.0-1, layer runtime)"),
        "{stdout}"
    );
    // The dry run agrees that the layer, written with the fixed modes, is
    // cached.
    let dry = json(&run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci-dry"))
            .args(["--dry-run", "--json"]),
    ));
    assert_eq!(dry["layers"][0]["cached"], true, "{dry}");

    // Allowed by path with a reason: su keeps its bit.
    let body = fs::read_to_string(&spec).unwrap().replace(
        "name = \"rt-test\"\n",
        "name = \"rt-test\"\n[[image.permissions.setid]]\npath = \"/usr/bin/su\"\nreason = \"users switch with su\"\n",
    );
    fs::write(&spec, body).unwrap();
    let report = assemble(&store, &spec, &tmp.path().join("oci2"));
    assert_eq!(
        report["permissions"]["kept"],
        serde_json::json!([{"layer": "runtime", "path": "/usr/bin/su", "mode": "4755", "reason": "users switch with su"}])
    );
    assert!(
        layer_listing(&tmp.path().join("oci2"), &report)
            .contains("-rwsr-xr-x 0/0               3 2023-11-14 22:13 usr/bin/su")
    );
}

#[test]
fn with_accounts_every_package_owner_and_account_file_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let debs_dir = tmp.path().join("debs");
    fs::create_dir_all(&debs_dir).unwrap();
    // a ships /etc/a.conf owned by 1000:1001; p ships /etc/passwd.
    let mut debs = tiny_packages(&debs_dir);
    debs.push(build_deb(
        &debs_dir,
        "p",
        "xz",
        &[("etc/passwd", "root:x:0:0::/:/bin/sh\n", 0o644)],
        |_| {},
    ));
    let accounts = "[[layer]]\nname = \"accounts\"\n[layer.accounts]\n\
[[layer.accounts.group]]\nname = \"root\"\ngid = 0\n\
[[layer.accounts.user]]\nname = \"root\"\nuid = 0\ngroup = \"root\"\nhome = \"/root\"\nshell = \"/bin/hello\"\n";
    let spec = lock_and_spec_with(tmp.path(), &debs, accounts);
    let store = tmp.path().join("store");
    fetch_debs(&store, tmp.path(), &debs_dir);
    let (_, err) = assemble_fails(&store, &spec, tmp.path());
    for want in [
        "image.toml:",
        "/etc/passwd (layer \"runtime\", package p 1.0-1",
        "would replace or hide the file [layer.accounts] writes",
        "/etc/a.conf (layer \"runtime\", package a 1.0-1",
        "is owned by uid 1000",
        "is owned by gid 1001",
        "which [layer.accounts] does not declare",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
}

#[test]
fn the_real_runtime_with_its_accounts_has_no_setid_or_world_writable_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (lock, spec) = real_layers(tmp.path(), &["runtime", "filesystem"]);
    let store = tmp.path().join("store");
    run_ok(mpsi(&store).args(["fetch", "--lock"]).arg(&lock));
    let layout = tmp.path().join("oci");
    let report = assemble(&store, &spec, &layout);
    let root = tmp.path().join("root");
    unpack_layers(&layout, &report, &root);

    assert_eq!(risky_paths(&root), Vec::<String>::new());
    // The walk sees such a path: the check is real.
    {
        use std::os::unix::fs::PermissionsExt;
        let su = root.join("usr/bin/su");
        fs::set_permissions(&su, fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(risky_paths(&root), ["/usr/bin/su 4755"]);
        fs::set_permissions(&su, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // What the packages shipped otherwise is listed: util-linux's su.
    let changed = report["permissions"]["changed"].as_array().unwrap();
    assert!(
        changed.iter().any(|c| c["path"] == "/usr/bin/su"
            && c["dropped"] == "setuid"
            && c["source"]
                .as_str()
                .unwrap()
                .starts_with("package util-linux ")),
        "{changed:?}"
    );

    assert_accounts_read_by_the_image(&root);
    // Locked, last changed on the lock's SOURCE_DATE_EPOCH day.
    let lock_toml: toml::Table = toml::from_str(&fs::read_to_string(&lock).unwrap()).unwrap();
    let day = lock_toml["source_date_epoch"].as_integer().unwrap() / 86_400;
    assert!(
        in_image(&root, &["/usr/bin/getent", "shadow", "mysql"])
            .starts_with(&format!("mysql:*:{day}:"))
    );
    use std::os::unix::fs::MetadataExt;
    let run = fs::metadata(root.join("run/mysqld")).unwrap();
    assert_eq!(
        (run.uid(), run.gid(), run.mode() & 0o7777),
        (999, 999, 0o755)
    );
    // The modes mpsi fixed do not bother dpkg's own check.
    assert_dpkg_verify_clean(&root);
}
