//! The check on small images of real ELF files: programs and stub libraries
//! compiled here with gcc, the host's C library and loader copied in.

use super::view::{Data, MergedView, Node};
use super::*;
use crate::progress::Quiet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn gcc(dir: &Path, args: &[&str]) {
    let out = Command::new("gcc")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "gcc cannot run ({e}); these tests need gcc and libc6-dev (.ci/test installs them)"
            )
        });
    assert!(
        out.status.success(),
        "gcc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host's real path of a file gcc links against (`libc.so.6`).
fn host_file(name: &str) -> PathBuf {
    let out = Command::new("gcc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .expect("gcc is needed (.ci/test installs it)");
    let p = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("{name} from gcc ({p}): {e}"))
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write(
            "hello.c",
            "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n",
        );
        f.write(
            "stub.c",
            "int stub_v1(void){return 1;}\nint stub_v2(void){return 2;}\n",
        );
        f.write("v1.map", "STUB_1.0 { global: stub_v1; local: *; };\n");
        f.write(
            "v2.map",
            "STUB_1.0 { global: stub_v1; local: *; };\nSTUB_2.0 { global: stub_v2; } STUB_1.0;\n",
        );
        f.write(
            "usestub.c",
            "int stub_v2(void);\nint main(void){return stub_v2();}\n",
        );
        std::fs::create_dir_all(f.path("v1")).unwrap();
        std::fs::create_dir_all(f.path("v2")).unwrap();
        for v in ["v1", "v2"] {
            gcc(
                f.dir.path(),
                &[
                    "-shared",
                    "-fPIC",
                    "-o",
                    &format!("{v}/libstub.so.1"),
                    "stub.c",
                    "-Wl,-soname,libstub.so.1",
                    &format!("-Wl,--version-script={v}.map"),
                ],
            );
            std::os::unix::fs::symlink("libstub.so.1", f.path(&format!("{v}/libstub.so"))).unwrap();
        }
        f
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    /// A program linked against the stub library that defines STUB_2.0.
    fn stub_program(&self, out: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec!["-o", out, "usestub.c", "-Lv2", "-lstub"];
        args.extend_from_slice(extra);
        gcc(self.dir.path(), &args);
        self.path(out)
    }

    fn hello(&self, extra: &[&str]) -> PathBuf {
        let mut args = vec!["-o", "hello", "hello.c"];
        args.extend_from_slice(extra);
        gcc(self.dir.path(), &args);
        self.path("hello")
    }
}

fn disk(p: &Path) -> Node {
    Node::File(Data::Disk(p.to_path_buf()))
}

fn link(t: &str) -> Node {
    Node::Symlink(t.into())
}

fn interp_of(program: &Path) -> String {
    read::read(&Data::Disk(program.into()))
        .unwrap()
        .unwrap()
        .interp
        .expect("a dynamically linked program has PT_INTERP")
}

/// A Debian-like merged-/usr image: `lib -> usr/lib`, the host's C library
/// and loader at their real paths, and the program's interpreter path.
fn image_with_libc(program: &Path, at: &str) -> MergedView {
    let mut v = MergedView::default();
    for d in ["usr", "usr/lib", "usr/bin"] {
        v.insert(d, Node::Dir);
    }
    v.insert("lib", link("usr/lib"));
    let libc = host_file("libc.so.6");
    let interp = interp_of(program);
    let loader = std::fs::canonicalize(&interp).unwrap();
    for f in [&libc, &loader] {
        add_parents(&mut v, f);
        v.insert(f.to_str().unwrap(), disk(f));
    }
    if v.resolve(&interp).is_err() {
        add_parents(&mut v, Path::new(&interp));
        v.insert(&interp, link(loader.to_str().unwrap()));
    }
    v.insert(at, disk(program));
    v
}

fn add_parents(v: &mut MergedView, f: &Path) {
    for a in f.ancestors().skip(1).collect::<Vec<_>>().into_iter().rev() {
        let s = a.to_str().unwrap().trim_matches('/');
        if !s.is_empty() && v.resolve(s).is_err() {
            v.insert(s, Node::Dir);
        }
    }
}

fn problems(v: &MergedView) -> Vec<String> {
    match check(v, &Quiet) {
        Ok(r) => panic!("expected the check to fail, it passed: {r}"),
        Err(e) => {
            e.downcast::<ClosureError>()
                .expect("a ClosureError")
                .problems
        }
    }
}

fn assert_one(problems: &[String], starts: &str, contains: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(starts) && p.contains(contains)),
        "no problem starting {starts:?} containing {contains:?} in {problems:#?}"
    );
}

#[test]
fn a_real_program_with_the_hosts_libc_and_loader_passes() {
    let f = Fixture::new();
    let mut v = image_with_libc(&f.hello(&[]), "usr/bin/hello");
    v.insert(
        "usr/bin/true",
        disk(&std::fs::canonicalize("/usr/bin/true").unwrap()),
    );
    match check(&v, &Quiet).unwrap() {
        // hello, true, libc.so.6 and the loader.
        ElfCheck::Passed { files, needed } => {
            assert_eq!(files, 4);
            assert!(
                needed >= 3,
                "hello and true need libc, libc needs the loader"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_library_left_out_is_named() {
    let f = Fixture::new();
    let prog = f.stub_program("prog", &[]);
    let v = image_with_libc(&prog, "usr/bin/prog");
    let p = problems(&v);
    assert_one(
        &p,
        "usr/bin/prog: needs libstub.so.1 (not found in default /lib/x86_64-linux-gnu",
        "/usr/lib)",
    );
    assert_eq!(p.len(), 1, "{p:#?}");
}

#[test]
fn a_version_the_library_does_not_define_is_named() {
    let f = Fixture::new();
    let prog = f.stub_program("prog", &[]);
    let mut v = image_with_libc(&prog, "usr/bin/prog");
    v.insert("usr/lib/libstub.so.1", disk(&f.path("v1/libstub.so.1")));
    let p = problems(&v);
    assert_eq!(
        p,
        [
            "usr/bin/prog: needs STUB_2.0 from libstub.so.1 (/usr/lib/libstub.so.1 defines up to STUB_1.0)"
        ]
    );
    // With the library that defines it, the same image passes.
    v.insert("usr/lib/libstub.so.1", disk(&f.path("v2/libstub.so.1")));
    check(&v, &Quiet).unwrap();
}

#[test]
fn a_runpath_pointing_outside_the_image_fails() {
    let f = Fixture::new();
    let prog = f.stub_program(
        "prog",
        &["-Wl,-rpath,/nonexistent", "-Wl,--enable-new-dtags"],
    );
    let v = image_with_libc(&prog, "usr/bin/prog");
    assert_one(
        &problems(&v),
        "usr/bin/prog: needs libstub.so.1 (not found in RUNPATH /nonexistent; default ",
        "",
    );

    // $ORIGIN/../../.. climbs above the root from /usr/bin: a problem even
    // though the library is found in a default directory.
    let prog = f.stub_program(
        "prog2",
        &["-Wl,-rpath,$ORIGIN/../../..", "-Wl,--enable-new-dtags"],
    );
    let mut v = image_with_libc(&prog, "usr/bin/prog2");
    v.insert("usr/lib/libstub.so.1", disk(&f.path("v2/libstub.so.1")));
    let p = problems(&v);
    assert_eq!(
        p,
        [
            "usr/bin/prog2: RUNPATH entry $ORIGIN/../../..: path /usr/bin/../../.. leaves the image root"
        ]
    );
}

#[test]
fn a_runpath_with_origin_inside_the_image_resolves() {
    let f = Fixture::new();
    let prog = f.stub_program(
        "prog",
        &["-Wl,-rpath,$ORIGIN/../lib/stub", "-Wl,--enable-new-dtags"],
    );
    let mut v = image_with_libc(&prog, "opt/app/bin/prog");
    v.insert(
        "opt/app/lib/stub/libstub.so.1",
        disk(&f.path("v2/libstub.so.1")),
    );
    add_parents(&mut v, Path::new("/opt/app/lib/stub/libstub.so.1"));
    add_parents(&mut v, Path::new("/opt/app/bin/prog"));
    check(&v, &Quiet).unwrap();
}

#[test]
fn an_absolute_symlink_resolves_in_the_image_not_on_the_host() {
    let f = Fixture::new();
    let prog = f.hello(&[]);
    let libc = host_file("libc.so.6");
    let interp = interp_of(&prog);
    let loader = std::fs::canonicalize(&interp).unwrap();
    assert!(
        Path::new("/lib/x86_64-linux-gnu/libc.so.6").exists(),
        "the link resolves on the host"
    );
    let mut v = MergedView::default();
    add_parents(&mut v, Path::new("/usr/bin/hello"));
    add_parents(&mut v, Path::new("/usr/lib/x86_64-linux-gnu/x"));
    add_parents(&mut v, Path::new(&interp));
    v.insert("usr/bin/hello", disk(&prog));
    v.insert(&interp, disk(&loader));
    v.insert(
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        link("/lib/x86_64-linux-gnu/libc.so.6"),
    );
    assert!(libc.exists());
    let p = problems(&v);
    assert_one(
        &p,
        "usr/bin/hello: needs libc.so.6 (not found in default",
        "symlink /usr/lib/x86_64-linux-gnu/libc.so.6 -> /lib/x86_64-linux-gnu/libc.so.6 dangles in the image",
    );
    // A link loop where the loader looks is a failure of its own.
    v.insert("usr/lib/x86_64-linux-gnu/libc.so.6", link("libc.so.6"));
    assert_eq!(
        problems(&v),
        [
            "usr/bin/hello: needs libc.so.6: symlink loop at /usr/lib/x86_64-linux-gnu/libc.so.6, and the loader stops there"
        ]
    );
}

#[test]
fn a_missing_interpreter_is_named() {
    let f = Fixture::new();
    let prog = f.hello(&[]);
    let interp = interp_of(&prog);
    let mut v = MergedView::default();
    add_parents(&mut v, Path::new("/usr/bin/hello"));
    v.insert("usr/bin/hello", disk(&prog));
    let libc = host_file("libc.so.6");
    add_parents(&mut v, &libc);
    v.insert(libc.to_str().unwrap(), disk(&libc));
    v.insert("lib", link("usr/lib"));
    let p = problems(&v);
    assert_one(
        &p,
        &format!("usr/bin/hello: its interpreter {interp} is not in the image"),
        "",
    );
}

#[test]
fn a_static_program_needs_nothing() {
    let f = Fixture::new();
    let prog = f.hello(&["-static"]);
    let mut v = MergedView::default();
    v.insert("hello", disk(&prog));
    match check(&v, &Quiet).unwrap() {
        ElfCheck::Passed { files, needed } => assert_eq!((files, needed), (1, 0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn files_that_are_not_elf_are_ignored_and_broken_elf_is_named() {
    let mut v = MergedView::default();
    v.insert("etc", Node::Dir);
    v.insert("etc/motd", Node::File(Data::Inline(b"hello\n".to_vec())));
    v.insert("bad", Node::File(Data::Inline(b"\x7fELF\x02\x01".to_vec())));
    let p = problems(&v);
    assert_one(&p, "bad: not a readable ELF file", "");
    assert_eq!(p.len(), 1);
}

#[test]
fn a_private_library_may_rely_on_what_every_loader_resolves() {
    let f = Fixture::new();
    f.write("b.c", "int b(void){return 0;}\n");
    f.write("a.c", "int b(void);\nint a(void){return b();}\n");
    gcc(
        f.dir.path(),
        &[
            "-shared",
            "-fPIC",
            "-o",
            "libb.so",
            "b.c",
            "-Wl,-soname,libb.so",
        ],
    );
    gcc(
        f.dir.path(),
        &[
            "-shared",
            "-fPIC",
            "-o",
            "liba.so",
            "a.c",
            "-Wl,-soname,liba.so",
            "-L.",
            "-lb",
        ],
    );
    f.write(
        "both.c",
        "int a(void);\nint b(void);\nint main(void){return a()+b();}\n",
    );
    f.write("only_a.c", "int a(void);\nint main(void){return a();}\n");
    let runpath = [
        "-Wl,-rpath,/opt/priv",
        "-Wl,--enable-new-dtags",
        "-Wl,-rpath-link,.",
        "-L.",
    ];
    let mut both = vec!["-o", "both", "both.c", "-la", "-lb", "-Wl,--no-as-needed"];
    both.extend(runpath);
    gcc(f.dir.path(), &both);
    let mut v = image_with_libc(&f.path("both"), "usr/bin/both");
    add_parents(&mut v, Path::new("/opt/priv/x"));
    v.insert("opt/priv/liba.so", disk(&f.path("liba.so")));
    v.insert("opt/priv/libb.so", disk(&f.path("libb.so")));
    check(&v, &Quiet).expect("liba finds libb through the program that loads both");

    // A second program loads liba without libb: liba is then on its own.
    let mut only = vec!["-o", "only_a", "only_a.c", "-la"];
    only.extend(runpath);
    gcc(f.dir.path(), &only);
    v.insert("usr/bin/only_a", disk(&f.path("only_a")));
    let p = problems(&v);
    assert_one(
        &p,
        "opt/priv/liba.so: needs libb.so (not found in default ",
        "",
    );
    assert_eq!(p.len(), 1, "{p:#?}");
}

#[test]
fn ld_so_conf_directories_are_searched_and_wrong_files_stop_the_search() {
    let f = Fixture::new();
    let prog = f.stub_program("prog", &[]);
    let mut v = image_with_libc(&prog, "usr/bin/prog");
    add_parents(&mut v, Path::new("/opt/conf/x"));
    add_parents(&mut v, Path::new("/etc/ld.so.conf.d/x"));
    v.insert("opt/conf/libstub.so.1", disk(&f.path("v2/libstub.so.1")));
    let text = |s: &str| Node::File(Data::Inline(s.as_bytes().to_vec()));
    v.insert("etc/ld.so.conf", text("include /etc/ld.so.conf.d/*.conf\n"));
    v.insert("etc/ld.so.conf.d/opt.conf", text("/opt/conf\n"));
    check(&v, &Quiet).expect("found through ld.so.conf");

    // A non-ELF file where the loader looks first ends the search in error
    // ("invalid ELF header"), though a good copy comes later.
    v.insert("opt/conf/libstub.so.1", text("not a library\n"));
    v.insert("usr/lib/libstub.so.1", disk(&f.path("v2/libstub.so.1")));
    assert_eq!(
        problems(&v),
        [
            "usr/bin/prog: needs libstub.so.1: /opt/conf/libstub.so.1 is not a loadable ELF object, and the loader stops there"
        ]
    );
}
