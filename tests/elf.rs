//! The ELF closure check through `mpsi assemble`: an image whose program
//! needs a library no layer holds fails with exit status 1, one line per
//! problem, and nothing written; adding the library in a later layer makes
//! it pass; `check_elf = false` skips it with the reason in the report.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn gcc(dir: &Path, args: &[&str]) {
    require_tool("gcc");
    let out = Command::new("gcc")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn host_file(name: &str) -> PathBuf {
    let out = Command::new("gcc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .unwrap();
    fs::canonicalize(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

/// Sources: a program needing libstub.so.1, the stub library, and a spec
/// whose first layer holds the program with the host's libc and loader.
fn setup(root: &Path, check_elf: Option<bool>, with_stub_layer: bool) -> PathBuf {
    fs::write(root.join("stub.c"), "int stub(void){return 0;}\n").unwrap();
    fs::write(
        root.join("main.c"),
        "int stub(void);\nint main(void){return stub();}\n",
    )
    .unwrap();
    gcc(
        root,
        &[
            "-shared",
            "-fPIC",
            "-o",
            "libstub.so.1",
            "stub.c",
            "-Wl,-soname,libstub.so.1",
        ],
    );
    gcc(root, &["-o", "prog", "main.c", "-L.", "-l:libstub.so.1"]);
    let libc = host_file("libc.so.6");
    let interp = "/lib64/ld-linux-x86-64.so.2";
    let loader = fs::canonicalize(interp).expect("the host's x86-64 loader");
    let switch = match check_elf {
        Some(b) => format!("check_elf = {b}\n"),
        None => String::new(),
    };
    let mut spec = format!(
        r#"[image]
name = "elf-test"
source_date_epoch = 1700000000
{switch}
[[layer]]
name = "base"
[[layer.symlink]]
path = "/lib"
target = "usr/lib"
[[layer.symlink]]
path = "{interp}"
target = "{loader}"
[[layer.file]]
from = "{libc}"
to = "{libc}"
[[layer.file]]
from = "{loader}"
to = "{loader}"
[[layer.file]]
from = "prog"
to = "/usr/bin/prog"
"#,
        loader = loader.display(),
        libc = libc.display(),
    );
    if with_stub_layer {
        spec.push_str("\n[[layer]]\nname = \"stub\"\n[[layer.file]]\nfrom = \"libstub.so.1\"\nto = \"/usr/lib/libstub.so.1\"\n");
    }
    let path = root.join("image.toml");
    fs::write(&path, spec).unwrap();
    path
}

fn assemble_raw(root: &Path, spec: &Path) -> std::process::Output {
    mpsi(&root.join("store"))
        .arg("assemble")
        .arg(spec)
        .arg("-o")
        .arg(root.join("oci"))
        .output()
        .unwrap()
}

#[test]
fn a_missing_library_stops_the_assemble_with_exit_1_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = setup(tmp.path(), None, false);
    let out = assemble_raw(tmp.path(), &spec);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("error: ELF closure check failed: 1 problem(s)"),
        "{stderr}"
    );
    let line = "\n  usr/bin/prog: needs libstub.so.1 (not found in default /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib64, /usr/lib64, /lib, /usr/lib)\n";
    assert!(stderr.contains(line), "expected {line:?} in:\n{stderr}");
    assert!(!tmp.path().join("oci").exists(), "nothing is written");
}

#[test]
fn the_library_in_a_later_layer_passes_and_the_switch_skips_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = setup(tmp.path(), None, true);
    let report = json(&run_ok(
        mpsi(&tmp.path().join("store"))
            .arg("assemble")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci"))
            .arg("--json"),
    ));
    assert_eq!(report["elf_check"]["status"], "passed", "{report}");
    // prog, libc.so.6, the loader and libstub.so.1.
    assert_eq!(report["elf_check"]["files"], 4, "{report}");

    let spec = setup(tmp.path(), Some(false), false);
    let out = run_ok(
        mpsi(&tmp.path().join("store"))
            .args(["assemble"])
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("oci2")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("elf     closure check skipped: image.check_elf = false in "),
        "{stdout}"
    );
}
