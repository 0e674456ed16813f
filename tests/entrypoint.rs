//! The image's `docker-entrypoint.sh` and `healthcheck.sh`
//! (rootfs/usr/local/bin, documented in docs/image.md), through the bash
//! suites in tests/entrypoint/: their own logic with recording stand-ins
//! for the MariaDB programs, shellcheck, and (ignored by default) a run
//! against real MariaDB 10.11 binaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a bash suite; on failure the panic carries its whole output.
fn run_suite(script: &str, env: &[(&str, &Path)]) {
    let path = root().join("tests/entrypoint").join(script);
    let mut cmd = Command::new(common::require_tool("bash"));
    cmd.arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        path.display(),
        out.status
    );
    assert!(
        stdout.contains(" checks, 0 failed"),
        "no summary line:\n{stdout}"
    );
}

#[test]
fn entrypoint_and_healthcheck_logic() {
    // The suite feeds initdb files compressed with each of these, binds a
    // unix socket (python3) and runs a case as another uid (setpriv).
    for tool in [
        "gzip", "xz", "zstd", "flock", "timeout", "python3", "setpriv",
    ] {
        common::require_tool(tool);
    }
    run_suite("run.sh", &[]);
}

#[test]
fn scripts_pass_shellcheck() {
    let shellcheck = common::require_tool("shellcheck");
    let bin = root().join("rootfs/usr/local/bin");
    let out = Command::new(shellcheck)
        .arg(bin.join("docker-entrypoint.sh"))
        .arg(bin.join("healthcheck.sh"))
        .output()
        .expect("spawn shellcheck");
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs MariaDB 10.11 binaries in MPSI_TEST_MARIADB_ROOT (Debian's packages unpacked); .ci/test runs it with --ignored"]
fn entrypoint_with_real_mariadb() {
    let dir = std::env::var_os("MPSI_TEST_MARIADB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "MPSI_TEST_MARIADB_ROOT is not set: unpack Debian's mariadb-server-core, \
             mariadb-client-core and mariadb-client into a directory (apt-get download; \
             dpkg-deb -x) and point it there, as .ci/test does"
            )
        });
    assert!(
        dir.join("usr/sbin/mariadbd").is_file(),
        "{} has no usr/sbin/mariadbd",
        dir.display()
    );
    run_suite("real-server.sh", &[("MARIADB_ROOT", dir.as_path())]);
}
