//! Accounts declared in the spec (`[layer.accounts]`) and the permission
//! policy (`[image.permissions]`) on small specs without packages: the
//! bytes, modes and owners of the files mpsi writes, read back from the
//! layer and by shadow-utils' own checkers (pwck, grpck), and the errors a
//! spec gets for what the policy forbids. Package-shipped bits are tested
//! with tiny .deb files in tests/runtime.rs.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 2023-11-14T22:13:20Z: day 19675 since the epoch.
const EPOCH: u64 = 1_700_000_000;

/// Accounts as Debian has them for a MariaDB image, a shell for them, and
/// `extra` TOML after the accounts layer.
fn spec_with(dir: &Path, image_extra: &str, extra: &str) -> PathBuf {
    let spec = dir.join("image.toml");
    fs::write(
        &spec,
        format!(
            r##"[image]
name = "accounts-test"
source_date_epoch = {EPOCH}
{image_extra}

[[layer]]
name = "base"
[[layer.file]]
to = "/usr/bin/bash"
content = "#!/usr/bin/bash\n"
mode = "0755"
[[layer.symlink]]
path = "/bin"
target = "usr/bin"
[[layer.dir]]
path = "/tmp"
mode = "1777"

[[layer]]
name = "accounts"
[layer.accounts]
[[layer.accounts.group]]
name = "root"
gid = 0
[[layer.accounts.group]]
name = "shadow"
gid = 42
[[layer.accounts.group]]
name = "mysql"
gid = 999
members = ["nobody"]
[[layer.accounts.group]]
name = "nogroup"
gid = 65534
[[layer.accounts.user]]
name = "root"
uid = 0
group = "root"
gecos = "root"
home = "/root"
shell = "/bin/bash"
[[layer.accounts.user]]
name = "mysql"
uid = 999
group = "mysql"
gecos = "MariaDB Server"
home = "/var/lib/mysql"
shell = "/usr/bin/bash"
[[layer.accounts.user]]
name = "nobody"
uid = 65534
group = "nogroup"
gecos = "nobody"
home = "/nonexistent"
shell = "/usr/bin/bash"
[[layer.dir]]
path = "/root"
mode = "0700"
[[layer.dir]]
path = "/var/lib/mysql"
owner = "mysql:mysql"
[[layer.dir]]
path = "/run/mysqld"
owner = "999:999"
owner_names = "mysql:mysql"
{extra}"##
        ),
    )
    .unwrap();
    spec
}

/// Each path of a layer: (mode, uid, gid, uname, gname, bytes).
type Files = BTreeMap<String, (u32, u64, u64, String, String, Vec<u8>)>;

fn layer_files(layout: &Path, report: &serde_json::Value, name: &str) -> Files {
    let layer = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name} in {report}"));
    let digest = layer["digest"].as_str().unwrap();
    let blob = fs::File::open(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = Files::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.insert(
            path.trim_end_matches('/').to_string(),
            (
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.username().unwrap().unwrap_or("").to_string(),
                h.groupname().unwrap().unwrap_or("").to_string(),
                data,
            ),
        );
    }
    out
}

fn text(f: &Files, path: &str) -> String {
    String::from_utf8(f[path].5.clone()).unwrap()
}

fn owner_mode(f: &Files, path: &str) -> (u32, String, String) {
    let (mode, _, _, u, g, _) = &f[path];
    (*mode, u.clone(), g.clone())
}

#[test]
fn accounts_become_passwd_group_shadow_gshadow_and_nsswitch() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec_with(tmp.path(), "", "");
    let layout = tmp.path().join("oci");
    let store = tmp.path().join("store");
    let report = assemble(&store, &spec, &layout);
    let f = layer_files(&layout, &report, "accounts");

    assert_eq!(
        text(&f, "etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n\
         mysql:x:999:999:MariaDB Server:/var/lib/mysql:/usr/bin/bash\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/bin/bash\n"
    );
    assert_eq!(
        text(&f, "etc/group"),
        "root:x:0:\nshadow:x:42:\nmysql:x:999:nobody\nnogroup:x:65534:\n"
    );
    // Locked passwords; the last change is the image's day, not today's.
    assert_eq!(
        text(&f, "etc/shadow"),
        "root:*:19675:0:99999:7:::\nmysql:*:19675:0:99999:7:::\nnobody:*:19675:0:99999:7:::\n"
    );
    assert_eq!(
        text(&f, "etc/gshadow"),
        "root:*::\nshadow:*::\nmysql:*::nobody\nnogroup:*::\n"
    );
    let ns = text(&f, "etc/nsswitch.conf");
    for line in [
        "passwd:         files",
        "group:          files",
        "shadow:         files",
        "gshadow:        files",
        "hosts:          files dns",
    ] {
        assert!(ns.lines().any(|l| l == line), "{line:?} missing:\n{ns}");
    }
    // Debian 12's modes and owners.
    let rr = |m: u32| (m, "root".to_string(), "root".to_string());
    let rs = |m: u32| (m, "root".to_string(), "shadow".to_string());
    assert_eq!(owner_mode(&f, "etc/passwd"), rr(0o644));
    assert_eq!(owner_mode(&f, "etc/group"), rr(0o644));
    assert_eq!(owner_mode(&f, "etc/nsswitch.conf"), rr(0o644));
    assert_eq!(owner_mode(&f, "etc/shadow"), rs(0o640));
    assert_eq!(owner_mode(&f, "etc/gshadow"), rs(0o640));
    assert_eq!((f["etc/shadow"].1, f["etc/shadow"].2), (0, 42));
    // Owners name declared accounts, or get their names from them.
    for dir in ["var/lib/mysql", "run/mysqld"] {
        let (_, uid, gid, u, g, _) = &f[dir];
        assert_eq!(
            (*uid, *gid, u.as_str(), g.as_str()),
            (999, 999, "mysql", "mysql"),
            "{dir}"
        );
    }

    // shadow-utils' checkers read the files of the unpacked image and
    // report nothing (-q: not the missing /nonexistent home, which is
    // Debian's convention for nobody).
    let root = tmp.path().join("root");
    unpack(&layout, &report, &root);
    let pwck = run_ok(
        Command::new(require_tool("pwck"))
            .args(["-r", "-q", "-R"])
            .arg(&root),
    );
    assert_eq!(String::from_utf8_lossy(&pwck.stdout), "");
    assert_eq!(String::from_utf8_lossy(&pwck.stderr), "");
    let grpck = run_ok(
        Command::new(require_tool("grpck"))
            .args(["-r", "-R"])
            .arg(&root),
    );
    assert_eq!(String::from_utf8_lossy(&grpck.stdout), "");
    assert_eq!(String::from_utf8_lossy(&grpck.stderr), "");

    // The same image again, byte for byte; a later SOURCE_DATE_EPOCH dates
    // the shadow files one day later.
    let again = assemble(&store, &spec, &tmp.path().join("oci2"));
    assert_eq!(again["manifest_digest"], report["manifest_digest"]);
    let later = json(&run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci3"))
            .arg("--json")
            .env("SOURCE_DATE_EPOCH", (EPOCH + 86_400).to_string()),
    ));
    let f = layer_files(&tmp.path().join("oci3"), &later, "accounts");
    assert!(text(&f, "etc/shadow").starts_with("root:*:19676:"));
}

#[test]
fn without_a_shadow_group_the_shadow_files_are_root_only() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec_with(tmp.path(), "", "");
    let body = fs::read_to_string(&spec).unwrap().replace(
        "[[layer.accounts.group]]\nname = \"shadow\"\ngid = 42\n",
        "",
    );
    fs::write(&spec, body).unwrap();
    let layout = tmp.path().join("oci");
    let report = assemble(&tmp.path().join("store"), &spec, &layout);
    let f = layer_files(&layout, &report, "accounts");
    let root = (0o600, "root".to_string(), "root".to_string());
    assert_eq!(owner_mode(&f, "etc/shadow"), root);
    assert_eq!(owner_mode(&f, "etc/gshadow"), root);
}

fn unpack(layout: &Path, report: &serde_json::Value, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for l in report["layers"].as_array().unwrap() {
        let digest = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        run_ok(
            Command::new(require_tool("tar"))
                .arg("-xzf")
                .arg(layout.join("blobs/sha256").join(digest))
                .arg("-C")
                .arg(dest),
        );
    }
}

/// Assembling `spec` fails; returns stderr.
fn fails(tmp: &Path, spec: &Path) -> String {
    assemble_fails(&tmp.join("store"), spec, tmp).1
}

#[test]
fn spec_mistakes_about_accounts_are_errors_naming_file_line_and_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = spec_with(tmp.path(), "", "");
    let good = fs::read_to_string(&spec).unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "name = \"mysql\"\nuid = 999",
            "name = \"mysql\"\nuid = 65534",
            &[
                "image.toml:",
                "layer.accounts.user \"nobody\"",
                "uid 65534 is already user \"mysql\"'s",
            ],
        ),
        (
            "name = \"nogroup\"\ngid = 65534",
            "name = \"mysql\"\ngid = 65534",
            &["layer.accounts.group \"mysql\"", "declared twice"],
        ),
        (
            "group = \"mysql\"",
            "group = \"mariadb\"",
            &[
                "layer.accounts.user \"mysql\"",
                "its group \"mariadb\" is not declared",
            ],
        ),
        (
            "name = \"nobody\"",
            "name = \"No Body\"",
            &["layer.accounts.user \"No Body\"", "useradd"],
        ),
        (
            "home = \"/var/lib/mysql\"",
            "home = \"var/lib/mysql\"",
            &[
                "layer.accounts.user \"mysql\"",
                "home \"var/lib/mysql\" must be an absolute path",
            ],
        ),
        (
            "owner_names = \"mysql:mysql\"",
            "owner_names = \"mariadb:mysql\"",
            &[
                "layer.dir.owner_names",
                "disagrees with [layer.accounts]",
                "\"mysql:mysql\"",
            ],
        ),
        (
            "owner = \"999:999\"",
            "owner = \"1000:999\"",
            &[
                "layer.dir.owner",
                "1000:999 is not a declared user and group",
            ],
        ),
        (
            "owner = \"mysql:mysql\"",
            "owner = \"mysql:staff\"",
            &["layer.dir.owner", "group \"staff\" is not declared"],
        ),
        (
            "shell = \"/usr/bin/bash\"\n[[layer.accounts.user]]\nname = \"nobody\"",
            "shell = \"/usr/sbin/nologin\"\n[[layer.accounts.user]]\nname = \"nobody\"",
            &["user \"mysql\": its shell /usr/sbin/nologin is not a file in the image"],
        ),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "{from:?} is not in the spec");
        fs::write(&spec, good.replacen(from, to, 1)).unwrap();
        let err = fails(tmp.path(), &spec);
        for w in *want {
            assert!(err.contains(w), "{to:?}: {w:?} missing from:\n{err}");
        }
    }

    // The account files are mpsi's alone: a tree shipping /etc/passwd in
    // another layer would silently replace them.
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    fs::write(
        &spec,
        format!(
            "{good}\n[[layer]]\nname = \"late\"\n[[layer.tree]]\nfrom = \"tree\"\nto = \"/\"\n"
        ),
    )
    .unwrap();
    let err = fails(tmp.path(), &spec);
    assert!(
        err.contains("/etc/passwd (layer \"late\"") && err.contains("would replace or hide"),
        "{err}"
    );
    // In the same layer it is a plain conflict, naming both sources.
    fs::write(
        &spec,
        format!("{good}\n[[layer.tree]]\nfrom = \"tree\"\nto = \"/\"\n"),
    )
    .unwrap();
    let err = fails(tmp.path(), &spec);
    assert!(
        err.contains("/etc/passwd is declared by") && err.contains("accounts"),
        "{err}"
    );
}

#[test]
fn spec_entries_breaking_the_permission_policy_are_errors_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");

    // A world-writable directory the spec declares: its line is named.
    let spec = spec_with(
        tmp.path(),
        "",
        "[[layer.dir]]\npath = \"/srv/drop\"\nmode = \"0777\"\n",
    );
    let err = fails(tmp.path(), &spec);
    assert!(
        err.contains("image.toml:")
            && err.contains("layer \"accounts\" (#2) dir #")
            && err.contains("/srv/drop has mode 0777, which is writable by others")
            && err.contains("[image.permissions] world_writable"),
        "{err}"
    );
    // A setuid file the spec declares.
    let spec = spec_with(
        tmp.path(),
        "",
        "[[layer.file]]\nto = \"/usr/bin/tool\"\ncontent = \"x\"\nmode = \"4755\"\n",
    );
    let err = fails(tmp.path(), &spec);
    assert!(
        err.contains("/usr/bin/tool has mode 4755, which sets the setuid or setgid bit")
            && err.contains("[image.permissions] setid"),
        "{err}"
    );
    // /tmp without the sticky bit is no exception.
    let spec = spec_with(tmp.path(), "", "");
    let body = fs::read_to_string(&spec)
        .unwrap()
        .replace("mode = \"1777\"", "mode = \"0777\"");
    fs::write(&spec, body).unwrap();
    assert!(fails(tmp.path(), &spec).contains("/tmp has mode 0777"));

    // Allowed by path with a reason: kept, and listed in the report.
    let allow = "[[image.permissions.setid]]\npath = \"/usr/bin/tool\"\nreason = \"the test needs it\"\n\
[[image.permissions.world_writable]]\npath = \"/srv/drop\"\nreason = \"a drop box\"\n";
    let extra = "[[layer.file]]\nto = \"/usr/bin/tool\"\ncontent = \"x\"\nmode = \"4755\"\n\
[[layer.dir]]\npath = \"/srv/drop\"\nmode = \"1777\"\n";
    let spec = spec_with(tmp.path(), allow, extra);
    let layout = tmp.path().join("oci");
    let report = assemble(&store, &spec, &layout);
    let f = layer_files(&layout, &report, "accounts");
    assert_eq!(f["usr/bin/tool"].0, 0o4755);
    assert_eq!(f["srv/drop"].0, 0o1777);
    assert_eq!(report["permissions"]["changed"], serde_json::json!([]));
    let kept = &report["permissions"]["kept"];
    assert_eq!(
        kept,
        &serde_json::json!([
            {"layer": "accounts", "path": "/srv/drop", "mode": "1777", "reason": "a drop box"},
            {"layer": "accounts", "path": "/usr/bin/tool", "mode": "4755", "reason": "the test needs it"},
        ])
    );
    let out = run_ok(
        mpsi(&store)
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci-text")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/usr/bin/tool 4755 kept: the test needs it"),
        "{stdout}"
    );

    // An exception needs a reason, and must match something.
    let spec = spec_with(
        tmp.path(),
        "[[image.permissions.setid]]\npath = \"/usr/bin/tool\"\nreason = \" \"\n",
        extra,
    );
    let err = fails(tmp.path(), &spec);
    assert!(
        err.contains("image.toml:5")
            && err.contains("image.permissions.setid \"/usr/bin/tool\"")
            && err.contains("needs a non-empty `reason`"),
        "{err}"
    );
    let spec = spec_with(
        tmp.path(),
        "[[image.permissions.setid]]\npath = \"/usr/bin/gone\"\nreason = \"stale\"\n",
        "",
    );
    let err = fails(tmp.path(), &spec);
    assert!(
        err.contains("image.permissions.setid \"/usr/bin/gone\"")
            && err.contains("remove the exception"),
        "{err}"
    );
}
