//! A real Docker engine loads mpsi's docker-archive. The engine comes from
//! .ci/test (a private dockerd on its own socket, MPSI_TEST_DOCKER_HOST).

mod common;

use common::*;
use std::process::{Command, Stdio};

/// The engine .ci/test started; a run without one is a mistake, not a pass.
fn docker_host() -> String {
    match std::env::var("MPSI_TEST_DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => panic!(
            "this test needs a Docker engine: set MPSI_TEST_DOCKER_HOST to its socket \
             (unix:///path/docker.sock); bash .ci/test starts a private dockerd and runs it with --ignored"
        ),
    }
}

fn docker(host: &str) -> Command {
    let mut c = Command::new(require_tool("docker"));
    c.env("DOCKER_HOST", host);
    c
}

#[test]
#[ignore = "needs a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/test runs it with --ignored"]
fn docker_loads_the_docker_archive_from_a_pipe() {
    let host = docker_host();
    let Assembled {
        tmp: _tmp,
        store,
        layout,
        report,
        ..
    } = assembled_fixture();

    // mpsi export ... -o - | docker load
    let mut export = mpsi(&store)
        .args(["export", "--format", "docker-archive", "-o", "-", "-l"])
        .arg(&layout)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = docker(&host)
        .arg("load")
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(export.wait().unwrap().success());
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert!(String::from_utf8_lossy(&load.stdout).contains("mpsi-test/fixture:v1"));

    // The engine's image ID is our config digest; its config is ours.
    let out = run_ok(docker(&host).args(["image", "inspect", "mpsi-test/fixture:v1"]));
    let info = json(&out);
    assert_eq!(info[0]["Id"], report["config_digest"]);
    assert_eq!(
        info[0]["RootFS"]["Layers"][1],
        report["layers"][1]["diff_id"]
    );
    assert_eq!(info[0]["Config"]["Healthcheck"]["Retries"], 4);
    assert_eq!(info[0]["Config"]["User"], "1000:1000");

    // Files come out of a container with their content and declared owner.
    let name = format!("mpsi-test-{}", std::process::id());
    run_ok(docker(&host).args([
        "create",
        "--network",
        "host",
        "--name",
        &name,
        "mpsi-test/fixture:v1",
    ]));
    let cp = docker(&host)
        .args(["cp", &format!("{name}:/etc/app/extra.conf"), "-"])
        .output()
        .unwrap();
    run_ok(docker(&host).args(["rm", &name]));
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let mut ar = tar::Archive::new(&cp.stdout[..]);
    let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.header().uid().unwrap(), 1000);
    assert_eq!(entry.header().mode().unwrap() & 0o777, 0o600);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
    assert_eq!(text, "[section]\nkey = value\n");
    run_ok(docker(&host).args(["rmi", "mpsi-test/fixture:v1"]));
}
