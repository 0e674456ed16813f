//! The SBOM: an SPDX 2.3 document of an image made of pinned runtime
//! packages (tiny `.deb` files built here with dpkg-deb) and a native build
//! (a tiny cmake project with a two-patch series), validated by the SPDX
//! project's own tool (pyspdxtools), byte-reproducible, and attached to the
//! image in the layout as an OCI 1.1 artifact that skopeo and umoci pass
//! over while they still read the image by its tag.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// pyspdxtools (`pip install spdx-tools`, as .ci/test does), or
/// MPSI_TEST_PYSPDXTOOLS; without it the test fails and says so.
fn pyspdxtools() -> PathBuf {
    if let Some(p) = std::env::var_os("MPSI_TEST_PYSPDXTOOLS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("pyspdxtools");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "pyspdxtools is not installed: the SBOM tests validate with the SPDX project's own tool; \
install it with `pip install spdx-tools` (.ci/test does, into a venv) or set MPSI_TEST_PYSPDXTOOLS"
    );
}

/// pyspdxtools' verdict on `file`: its exit status and what it printed.
fn validate(file: &Path) -> (bool, String) {
    let out = Command::new(pyspdxtools())
        .arg("-i")
        .arg(file)
        .output()
        .expect("running pyspdxtools");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `NAME_1.0-1_all.deb` holding one file, built with dpkg-deb.
fn build_deb(out: &Path, name: &str, version: &str) -> PathBuf {
    let root = out.join(format!("{name}-root"));
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("usr/share")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@example.org>\n\
Description: test package {name}\n a tiny package built by the test\n"
        ),
    )
    .unwrap();
    fs::write(root.join(format!("usr/share/{name}.txt")), name).unwrap();
    let deb = out.join(format!("{name}_{}_all.deb", version.replace(':', "%3a")));
    run_ok(
        Command::new(require_tool("dpkg-deb"))
            .args(["-Z", "gzip", "--build"])
            .arg(&root)
            .arg(&deb),
    );
    deb
}

const CMAKELISTS: &str = "cmake_minimum_required(VERSION 3.13)\nproject(hello C)\n\
add_executable(hello hello.c)\ninstall(TARGETS hello DESTINATION bin)\n";
const HELLO_C: &str =
    "#include <stdio.h>\nint main(void) {\n    puts(\"hello\");\n    return 0;\n}\n";
const PATCH_1: &str = "--- a/hello.c\n+++ b/hello.c\n@@ -1,5 +1,5 @@\n #include <stdio.h>\n int main(void) {\n-    puts(\"hello\");\n+    puts(\"hello, one\");\n     return 0;\n }\n";
const PATCH_2: &str = "--- a/hello.c\n+++ b/hello.c\n@@ -1,5 +1,5 @@\n #include <stdio.h>\n int main(void) {\n-    puts(\"hello, one\");\n+    puts(\"hello, two\");\n     return 0;\n }\n";

struct Project {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    spec: PathBuf,
    store: PathBuf,
    lock: toml::Table,
}

/// A lock pinning a source tarball, a two-patch build and three runtime
/// packages (one with an epoch and a `+` in its name and version), and a
/// spec taking both; the inputs are fetched into the store from files.
fn project() -> Project {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let files = root.join("files");
    fs::create_dir_all(&files).unwrap();
    let tarball = {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in [
            ("hello-1.0/CMakeLists.txt", CMAKELISTS),
            ("hello-1.0/hello.c", HELLO_C),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_path(path).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    };
    fs::write(files.join("hello-1.0.tar.gz"), &tarball).unwrap();
    fs::create_dir_all(root.join("patches")).unwrap();
    fs::write(
        root.join("patches/series"),
        "0001-one.patch\n0002-two.patch\n",
    )
    .unwrap();
    fs::write(root.join("patches/0001-one.patch"), PATCH_1).unwrap();
    fs::write(root.join("patches/0002-two.patch"), PATCH_2).unwrap();
    let mut lock = format!(
        r#"version = 1
source_date_epoch = 1700000000

[[input]]
name = "hello-source"
file = "hello-1.0.tar.gz"
version = "1.0"
size = {}
sha256 = "{}"
urls = ["https://example.org/src/hello-1.0.tar.gz"]

[build.hello]
recipe = "cmake-ninja-v1"
source = "hello-source"
series = "patches/series"
tools = ["cmake", "ninja", "gcc", "patch"]
cmake_flags = ["-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_INSTALL_PREFIX=/usr"]

[runtime]
roots = ["pa"]
"#,
        tarball.len(),
        sha256_hex(&tarball)
    );
    for (name, version) in [
        ("pa", "1.0-1"),
        ("pb", "2.0-3"),
        ("libp++1", "1:3.2+deb12u1"),
    ] {
        let deb = build_deb(&files, name, version);
        let data = fs::read(&deb).unwrap();
        let file = deb.file_name().unwrap().to_str().unwrap();
        lock.push_str(&format!(
            "\n[[runtime.package]]\nname = \"{name}\"\nversion = \"{version}\"\narchitecture = \"all\"\n\
file = \"{file}\"\nsize = {}\nsha256 = \"{}\"\nurl = \"https://deb.debian.org/debian/pool/main/p/{name}/{file}\"\n",
            data.len(),
            sha256_hex(&data)
        ));
    }
    let lock_path = root.join("mpsi.lock");
    fs::write(&lock_path, lock).unwrap();
    let store = root.join("store");
    // Pins the patch series' hashes into the lock.
    run_ok(mpsi(&store).arg("lock").arg("--lock").arg(&lock_path));
    run_ok(
        mpsi(&store)
            .args(["fetch", "--lock"])
            .arg(&lock_path)
            .arg("--from")
            .arg(&files),
    );
    let spec = root.join("image.toml");
    fs::write(
        &spec,
        r#"lock = "mpsi.lock"

[image]
name = "mpsi-test/sbom"
tag = "v1"
# The packages hold text files and the program no C library: nothing runs.
check_elf = false

[config]
cmd = ["/usr/bin/hello"]

[[layer]]
name = "runtime"
[[layer.packages]]
from_lock = "runtime"

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
    let lock = fs::read_to_string(&lock_path).unwrap().parse().unwrap();
    Project {
        _tmp: tmp,
        root,
        spec,
        store,
        lock,
    }
}

impl Project {
    fn assemble(&self, out: &str, extra: &[&str]) -> Value {
        json(&run_ok(
            mpsi(&self.store)
                .arg("assemble")
                .arg(&self.spec)
                .arg("-o")
                .arg(self.root.join(out))
                .args(["--json", "--no-ccache"])
                .args(extra),
        ))
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

/// The package of the SBOM named `name`.
fn package<'a>(sbom: &'a Value, name: &str) -> &'a Value {
    sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("the SBOM lists no package {name:?}: {sbom:#}"))
}

fn sha256_of(p: &Value) -> &str {
    p["checksums"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["algorithm"] == "SHA256")
        .and_then(|c| c["checksumValue"].as_str())
        .unwrap_or_else(|| panic!("no SHA256 checksum in {p:#}"))
}

fn purl_of(p: &Value) -> &str {
    p["externalRefs"][0]["referenceLocator"].as_str().unwrap()
}

fn has_relationship(sbom: &Value, a: &str, kind: &str, b: &str) -> bool {
    sbom["relationships"].as_array().unwrap().iter().any(|r| {
        r["spdxElementId"] == a && r["relationshipType"] == kind && r["relatedSpdxElement"] == b
    })
}

#[test]
fn the_sbom_lists_every_pin_validates_reproduces_and_rides_with_the_image() {
    let tool = pyspdxtools();
    let p = project();
    let report = p.assemble("oci", &[]);
    let layout = p.root.join("oci");
    let sbom_path = PathBuf::from(report["sbom"].as_str().unwrap());
    assert_eq!(
        sbom_path,
        fs::canonicalize(&p.root).unwrap().join("oci.spdx.json"),
        "the SBOM is written next to the layout"
    );
    let sbom_bytes = fs::read(&sbom_path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&sbom_path).unwrap().permissions().mode() & 0o777,
        0o644,
        "the SBOM is readable by all"
    );
    let sbom: Value = serde_json::from_slice(&sbom_bytes).unwrap();
    let manifest_digest = report["manifest_digest"].as_str().unwrap();

    // The SPDX project's own validator accepts it...
    let (ok, said) = validate(&sbom_path);
    assert!(ok, "{} rejects the SBOM:\n{said}", tool.display());
    // ...and is a real check: a document without its SPDX version fails.
    let mut broken = sbom.clone();
    broken.as_object_mut().unwrap().remove("spdxVersion");
    let broken_path = p.root.join("broken.spdx.json");
    fs::write(&broken_path, serde_json::to_vec(&broken).unwrap()).unwrap();
    assert!(
        !validate(&broken_path).0,
        "pyspdxtools accepted an SBOM without spdxVersion"
    );

    // What it lists: the image by its manifest digest, mpsi, every pinned
    // package (sha256 of the .deb and its Debian PURL), the source
    // tarball and each patch by sha256.
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(sbom["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let hex = manifest_digest.strip_prefix("sha256:").unwrap();
    assert!(
        sbom["documentNamespace"].as_str().unwrap().ends_with(hex),
        "the namespace comes from the manifest digest: {}",
        sbom["documentNamespace"]
    );
    let image = package(&sbom, "docker.io/mpsi-test/sbom");
    assert_eq!(sha256_of(image), hex);
    assert_eq!(
        purl_of(image),
        format!("pkg:oci/sbom@sha256%3A{hex}?repository_url=docker.io/mpsi-test/sbom&tag=v1")
    );
    assert!(has_relationship(
        &sbom,
        "SPDXRef-DOCUMENT",
        "DESCRIBES",
        image["SPDXID"].as_str().unwrap()
    ));
    let tool_pkg = package(&sbom, "mpsi");
    assert_eq!(tool_pkg["versionInfo"], env!("CARGO_PKG_VERSION"));
    let pins = p.lock["runtime"]["package"].as_array().unwrap();
    assert_eq!(pins.len(), 3);
    for pin in pins {
        let name = pin["name"].as_str().unwrap();
        let pkg = package(&sbom, name);
        assert_eq!(pkg["versionInfo"], pin["version"].as_str().unwrap());
        assert_eq!(sha256_of(pkg), pin["sha256"].as_str().unwrap());
        assert_eq!(pkg["downloadLocation"], pin["url"].as_str().unwrap());
        assert!(has_relationship(
            &sbom,
            "SPDXRef-Image",
            "CONTAINS",
            pkg["SPDXID"].as_str().unwrap()
        ));
    }
    assert_eq!(
        purl_of(package(&sbom, "pa")),
        "pkg:deb/debian/pa@1.0-1?arch=all&distro=debian-12"
    );
    assert_eq!(
        purl_of(package(&sbom, "libp++1")),
        "pkg:deb/debian/libp%2B%2B1@1%3A3.2%2Bdeb12u1?arch=all&distro=debian-12"
    );
    let input = &p.lock["input"][0];
    let source = package(&sbom, "hello-source");
    assert_eq!(sha256_of(source), input["sha256"].as_str().unwrap());
    assert_eq!(
        source["downloadLocation"],
        "https://example.org/src/hello-1.0.tar.gz"
    );
    let build = package(&sbom, "hello");
    let build_id = build["SPDXID"].as_str().unwrap();
    assert!(has_relationship(
        &sbom,
        build_id,
        "GENERATED_FROM",
        source["SPDXID"].as_str().unwrap()
    ));
    let patches = p.lock["build"]["hello"]["patches"].as_array().unwrap();
    assert_eq!(patches.len(), 2);
    for (pin, text) in patches.iter().zip([PATCH_1, PATCH_2]) {
        let pkg = package(&sbom, pin["name"].as_str().unwrap());
        assert_eq!(sha256_of(pkg), sha256_hex(text.as_bytes()));
        assert_eq!(sha256_of(pkg), pin["sha256"].as_str().unwrap());
        assert!(has_relationship(
            &sbom,
            build_id,
            "GENERATED_FROM",
            pkg["SPDXID"].as_str().unwrap()
        ));
    }

    // In the layout: an untagged OCI 1.1 artifact about the image.
    let index = read_json(&layout.join("index.json"));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index:#}");
    let art_entry = entries
        .iter()
        .find(|d| d["artifactType"] == "application/spdx+json")
        .unwrap_or_else(|| panic!("index.json lists no SBOM artifact: {index:#}"));
    assert!(
        art_entry["annotations"]
            .get("org.opencontainers.image.ref.name")
            .is_none(),
        "the artifact carries no tag"
    );
    let art_digest = art_entry["digest"].as_str().unwrap();
    assert_eq!(art_digest, report["sbom_artifact"].as_str().unwrap());
    let art: Value = serde_json::from_slice(&blob(&layout, art_digest)).unwrap();
    assert_eq!(art["artifactType"], "application/spdx+json");
    assert_eq!(art["subject"]["digest"], manifest_digest);
    assert_eq!(
        art["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        blob(&layout, art["config"]["digest"].as_str().unwrap()),
        b"{}"
    );
    assert_eq!(art["layers"][0]["mediaType"], "application/spdx+json");
    assert_eq!(
        blob(&layout, art["layers"][0]["digest"].as_str().unwrap()),
        sbom_bytes,
        "the artifact's layer is the SBOM written next to the layout"
    );

    // Readers of the layout still find the image by its tag.
    let skopeo = run_ok(
        Command::new(require_tool("skopeo"))
            .arg("inspect")
            .arg(format!("oci:{}:v1", layout.display())),
    );
    assert_eq!(json(&skopeo)["Digest"], manifest_digest);
    let umoci = run_ok(
        Command::new(require_tool("umoci"))
            .args(["ls", "--layout"])
            .arg(&layout),
    );
    assert_eq!(String::from_utf8_lossy(&umoci.stdout).trim(), "v1");
    run_ok(
        Command::new(require_tool("umoci"))
            .args(["stat", "--image"])
            .arg(format!("{}:v1", layout.display())),
    );
    // mpsi itself, with no tag named, still sees one image.
    let inspected = json(&run_ok(
        mpsi(&p.store)
            .args(["inspect", "--json", "-l"])
            .arg(&layout),
    ));
    assert_eq!(
        inspected["manifest_digest"], manifest_digest,
        "{inspected:#}"
    );
    assert_eq!(
        inspected["referrers"][0]["digest"], art_digest,
        "{inspected:#}"
    );
    assert_eq!(
        inspected["referrers"][0]["artifact_type"],
        "application/spdx+json"
    );

    // Reproducible: a second assemble (layers rewritten, not cached) gives
    // the same bytes and the same artifact.
    let again = p.assemble("oci2", &["--no-cache"]);
    assert_eq!(again["manifest_digest"], manifest_digest);
    assert_eq!(again["sbom_artifact"], report["sbom_artifact"]);
    assert_eq!(
        fs::read(again["sbom"].as_str().unwrap()).unwrap(),
        sbom_bytes,
        "two assembles wrote different SBOMs"
    );
    assert_eq!(
        fs::read(layout.join("index.json")).unwrap(),
        fs::read(p.root.join("oci2/index.json")).unwrap()
    );

    // A damaged SBOM blob is named, not passed on with the image.
    let sbom_blob_digest = art["layers"][0]["digest"].as_str().unwrap();
    let damaged = p
        .root
        .join("oci2/blobs/sha256")
        .join(sbom_blob_digest.strip_prefix("sha256:").unwrap());
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[10] ^= 1;
    fs::write(&damaged, bytes).unwrap();
    let (code, err) = run_fail(
        mpsi(&p.store)
            .args(["inspect", "-l"])
            .arg(p.root.join("oci2")),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("corrupt") && err.contains(art_digest),
        "the error names the artifact and the damage: {err}"
    );

    // Re-assembling into the same layout leaves the same index: the image,
    // then its one artifact.
    let before = fs::read(layout.join("index.json")).unwrap();
    p.assemble("oci", &[]);
    assert_eq!(fs::read(layout.join("index.json")).unwrap(), before);
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["manifests"][0]["digest"], manifest_digest);

    // Another image tagged into the same layout keeps the first and its
    // SBOM; re-tagging v1 to another image drops the SBOM of the old one.
    let other = p.assemble("oci", &["--tag", "v2", "--compression", "zstd"]);
    let index = read_json(&layout.join("index.json"));
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    let other_art = other["sbom_artifact"].as_str().unwrap();
    assert_eq!(
        digests,
        [
            manifest_digest,
            art_digest,
            other["manifest_digest"].as_str().unwrap(),
            other_art
        ]
    );
    let replaced = p.assemble("oci", &["--compression", "zstd"]);
    let index = read_json(&layout.join("index.json"));
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert!(
        !digests.contains(&art_digest),
        "a stale SBOM stays listed: {index:#}"
    );
    assert!(digests.contains(&replaced["sbom_artifact"].as_str().unwrap()));
}
