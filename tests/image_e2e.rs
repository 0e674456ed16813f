//! The real mariadb-pageserver image in a real Docker engine: what a user of
//! the official `mariadb` image does with it, against the reference Page
//! Server and Safekeeper. `.ci/e2e` runs these after assembling the image
//! (MPSI_TEST_IMAGE_LAYOUT) with a private dockerd (MPSI_TEST_DOCKER_HOST);
//! containers use `--network host` or `--network none` and talk only to
//! 127.0.0.1.

mod common;
#[path = "peers/mod.rs"]
mod peers;

use common::{docker, docker_host, json, mpsi, run_ok};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The assembled image's OCI layout.
fn layout() -> PathBuf {
    match std::env::var("MPSI_TEST_IMAGE_LAYOUT") {
        Ok(l) if !l.is_empty() => PathBuf::from(l),
        _ => panic!(
            "MPSI_TEST_IMAGE_LAYOUT is unset: this test needs the assembled \
             mariadb-pageserver layout (bash .ci/e2e assembles it into out/oci)"
        ),
    }
}

/// The image, loaded once into the engine with `mpsi load`; its name.
fn image() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let layout = layout();
        let store = tempfile::tempdir().unwrap();
        let report = json(&run_ok(
            mpsi(store.path())
                .env("DOCKER_HOST", docker_host())
                .args(["load", "--json", "-l"])
                .arg(&layout),
        ));
        report["loaded"][0]
            .as_str()
            .expect("mpsi load names the loaded image")
            .to_string()
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `docker run --rm --network none IMAGE args...`, which must succeed.
fn run_in_image(args: &[&str]) -> String {
    let host = docker_host();
    let out = run_ok(
        docker(&host)
            .args(["run", "--rm", "--network", "none"])
            .args(args),
    );
    text(&out)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
#[ignore = "needs the assembled image (MPSI_TEST_IMAGE_LAYOUT) and a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/e2e runs them with --ignored"]
fn the_server_and_its_tools_run_in_the_image() {
    let img = image();
    let version = run_in_image(&[img, "mariadbd", "--version"]);
    assert!(
        version.contains("10.11.18") && version.contains("mariadb-pageserver (mpsi)"),
        "mariadbd --version: {version}"
    );
    let client = run_in_image(&["--entrypoint", "mariadb", img, "--version"]);
    assert!(client.contains("10.11.18"), "mariadb --version: {client}");

    // As the user of the official image would: a datadir initialised as
    // mysql inside the container, a server on a port that is not 3306, and
    // the client of the same container asking it for its version.
    let script = r#"set -e
mariadb-install-db --datadir=/tmp/db --auth-root-authentication-method=normal --skip-test-db >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
mariadbd --datadir=/tmp/db --port=13307 --bind-address=127.0.0.1 --socket=/tmp/db.sock >/tmp/server.log 2>&1 &
for i in $(seq 1 120); do
  if mariadb --protocol=tcp -h127.0.0.1 -P13307 -uroot -N -e 'SELECT @@version' 2>/dev/null; then
    mariadb-admin --socket=/tmp/db.sock -uroot shutdown; wait; exit 0
  fi
  sleep 0.5
done
cat /tmp/server.log; exit 1"#;
    let out = run_in_image(&["--user", "mysql", "--entrypoint", "bash", img, "-c", script]);
    assert!(
        out.lines().any(|l| l.starts_with("10.11.18")),
        "SELECT @@version through the image's client: {out}"
    );
    let whoami = run_in_image(&["--user", "mysql", "--entrypoint", "id", img, "-un"]);
    assert_eq!(whoami.trim(), "mysql");
}

/// A started container: removed (with its anonymous volumes) when dropped.
struct Container {
    host: String,
    name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&self.host)
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

impl Container {
    fn exec(&self, args: &[&str]) -> Output {
        docker(&self.host)
            .args(["exec", &self.name])
            .args(args)
            .output()
            .unwrap()
    }

    fn inspect(&self, format: &str) -> String {
        let out = run_ok(docker(&self.host).args(["inspect", "-f", format, &self.name]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn logs(&self) -> String {
        text(
            &docker(&self.host)
                .args(["logs", &self.name])
                .output()
                .unwrap(),
        )
    }

    /// Waits (at most `limit`) until Docker's healthcheck reports healthy.
    fn wait_healthy(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self
                .inspect("{{.State.Status}} {{.State.Health.Status}}")
                .as_str()
            {
                "running healthy" => return,
                s if s.starts_with("exited") || s.starts_with("dead") => {
                    panic!("the container stopped ({s}); its log:\n{}", self.logs())
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        panic!(
            "the container was not healthy within {limit:?}; its log:\n{}",
            self.logs()
        );
    }

    /// `mariadb` in the container as `user`, over TCP on `port`; stdout.
    fn query(&self, port: u16, user: &str, password: &str, sql: &str) -> String {
        let port = port.to_string();
        let out = self.exec(&[
            "mariadb",
            "--protocol=tcp",
            "-h127.0.0.1",
            "-P",
            &port,
            "-u",
            user,
            &format!("-p{password}"),
            "-N",
            "-e",
            sql,
        ]);
        assert!(
            out.status.success(),
            "mariadb -u{user} -e {sql:?}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Waits (at most `limit`) until `ready` holds.
fn eventually(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "needs the assembled image (MPSI_TEST_IMAGE_LAYOUT) and a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/e2e runs them with --ignored"]
fn a_container_starts_like_the_official_image_and_talks_to_the_peers() {
    let img = image();
    let host = docker_host();
    let ps = peers::Peer::start_on(peers::Role::PageServer, 0, None).unwrap();
    let sk = peers::Peer::start_on(peers::Role::Safekeeper, 0, None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (secrets, initdb, data) = (
        tmp.path().join("secrets"),
        tmp.path().join("initdb"),
        tmp.path().join("data"),
    );
    for d in [&secrets, &initdb, &data] {
        std::fs::create_dir(d).unwrap();
    }
    let root_pw = format!("root-secret-{}", std::process::id());
    let app_pw = format!("app-secret-{}", std::process::id());
    write(&secrets.join("root"), root_pw.as_bytes());
    write(&secrets.join("app"), app_pw.as_bytes());
    write(
        &initdb.join("01-seed.sql.gz"),
        &gzip(b"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;\nINSERT INTO t VALUES (1, 'seeded');\n"),
    );
    // Runs on the first start only: it appends to a file in the datadir.
    write(
        &initdb.join("02-mark.sh"),
        b"echo ran >> /var/lib/mysql/initdb-runs\n",
    );
    let port = free_port();
    let name = format!("mpsi-e2e-{}", std::process::id());
    let vol = |h: &Path, c: &str| format!("{}:{c}", h.display());
    run_ok(docker(&host).args([
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        // Only so this test may read the server's /proc/1/environ: mariadbd
        // is not dumpable once it runs as mysql.
        "--cap-add",
        "SYS_PTRACE",
        "-v",
        &vol(&secrets, "/run/secrets:ro"),
        "-v",
        &vol(&initdb, "/docker-entrypoint-initdb.d:ro"),
        "-v",
        &vol(&data, "/var/lib/mysql"),
        "-e",
        "MYSQL_ROOT_PASSWORD_FILE=/run/secrets/root",
        "-e",
        "MARIADB_DATABASE=app",
        "-e",
        "MARIADB_USER=app",
        "-e",
        "MARIADB_PASSWORD_FILE=/run/secrets/app",
        "-e",
        &format!("PAGE_SERVER_URL=http://127.0.0.1:{}", ps.port()),
        "-e",
        &format!("SAFEKEEPER_URL=http://127.0.0.1:{}", sk.port()),
        img,
        &format!("--port={port}"),
        "--bind-address=127.0.0.1",
        // A buffer pool smaller than the table below, so a scan reads cold
        // pages.
        "--innodb-buffer-pool-size=8M",
    ]));
    let c = Container {
        host: host.clone(),
        name,
    };
    c.wait_healthy(Duration::from_secs(240));

    // The seed variables and the init files did their work.
    assert_eq!(
        c.query(port, "app", &app_pw, "SELECT v FROM app.t"),
        "seeded"
    );
    let root = c.query(port, "root", &root_pw, "SELECT CURRENT_USER()");
    assert!(root.starts_with("root@"), "{root}");
    // The server is PID 1, and its environment holds no secret.
    let comm = c.exec(&["cat", "/proc/1/comm"]);
    assert_eq!(String::from_utf8_lossy(&comm.stdout).trim(), "mariadbd");
    let environ = c.exec(&["cat", "/proc/1/environ"]);
    assert!(environ.status.success(), "{}", text(&environ));
    let environ = String::from_utf8_lossy(&environ.stdout).into_owned();
    let inspect = text(&run_ok(docker(&host).args(["inspect", &c.name, img])));
    let history = text(&run_ok(docker(&host).args(["history", "--no-trunc", img])));
    for (what, seen) in [
        ("/proc/1/environ", &environ),
        ("docker inspect", &inspect),
        ("docker history", &history),
    ] {
        for pw in [&root_pw, &app_pw] {
            assert!(!seen.contains(pw.as_str()), "{what} shows a password");
        }
    }
    assert!(
        environ.contains("PAGE_SERVER_URL"),
        "the server keeps its non-secret settings: {environ}"
    );

    // The patched InnoDB pushes pages to the Page Server and streams redo
    // to the Safekeeper.
    c.query(
        port,
        "app",
        &app_pw,
        "INSERT INTO app.t SELECT seq + 1, 'more' FROM app.seq_1_to_2000",
    );
    eventually(
        Duration::from_secs(60),
        "the Safekeeper received redo",
        || sk.state().wal_end().unwrap_or(0) > 0,
    );
    c.query(
        port,
        "root",
        &root_pw,
        "SET GLOBAL innodb_max_dirty_pages_pct = 0",
    );
    eventually(
        Duration::from_secs(90),
        "the Page Server received pages",
        || ps.state().images() > 0,
    );
    // The URLs became the server's settings, and the counters moved.
    let vars = c.query(
        port,
        "root",
        &root_pw,
        "SHOW VARIABLES WHERE Variable_name IN ('innodb_page_server_enabled', \
'innodb_page_server_address', 'innodb_page_server_port', 'innodb_safekeeper_address', \
'innodb_safekeeper_port')",
    );
    for want in [
        "innodb_page_server_enabled\tON".to_string(),
        "innodb_page_server_address\t127.0.0.1".into(),
        format!("innodb_page_server_port\t{}", ps.port()),
        "innodb_safekeeper_address\t127.0.0.1".into(),
        format!("innodb_safekeeper_port\t{}", sk.port()),
    ] {
        assert!(vars.lines().any(|l| l == want), "{want:?} in:\n{vars}");
    }
    let pushed = status(&c.query(
        port,
        "root",
        &root_pw,
        "SHOW STATUS LIKE 'Page_server_pages_pushed'",
    ));
    assert!(pushed > 0, "pages pushed after the write: {pushed}");
    let logs = c.logs();
    for line in [
        "InnoDB: Page Server at 127.0.0.1",
        "Safekeeper at 127.0.0.1",
        "ready for connections",
    ] {
        assert!(logs.contains(line), "the log has {line:?}:\n{logs}");
    }

    // The healthcheck the image declares passes when run by hand too.
    let health = c.exec(&["healthcheck.sh", "--connect", "--innodb_initialized"]);
    assert!(health.status.success(), "healthcheck.sh: {}", text(&health));

    // docker stop: SIGTERM to mariadbd as PID 1, a clean shutdown.
    run_ok(docker(&host).args(["stop", "-t", "60", &c.name]));
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0");
    let before = c.logs();
    assert!(before.contains("Shutdown complete"), "{before}");

    // The next start keeps the data, does not initialise again and needs
    // no crash recovery.
    run_ok(docker(&host).args(["start", &c.name]));
    c.wait_healthy(Duration::from_secs(120));
    let all = c.logs();
    let second = all.get(before.len()..).unwrap_or(&all);
    assert!(
        !second.contains("crash recovery"),
        "the start after a clean stop ran crash recovery:\n{second}"
    );
    assert_eq!(
        c.query(port, "app", &app_pw, "SELECT COUNT(*) FROM app.t"),
        "2001"
    );
    let runs = std::fs::read_to_string(data.join("initdb-runs")).unwrap();
    assert_eq!(
        runs, "ran\n",
        "the init scripts ran on the first start only"
    );
    // Cold reads: pages written in this run, pushed, evicted from the small
    // buffer pool, and read back through the Page Server.
    let sql = |q: &str| c.query(port, "root", &root_pw, q);
    sql("CREATE TABLE app.big (id INT PRIMARY KEY, v VARCHAR(1000)) ENGINE=InnoDB");
    sql(
        "INSERT INTO app.big SELECT seq, REPEAT(CHAR(97 + seq % 26), 1000) FROM app.seq_1_to_20000",
    );
    sql("SET GLOBAL innodb_max_dirty_pages_pct = 0");
    let counter = |name: &str| status(&sql(&format!("SHOW STATUS LIKE '{name}'")));
    eventually(
        Duration::from_secs(90),
        "the big table's pages pushed",
        || counter("Page_server_pages_pushed") > 1000,
    );
    let served = counter("Page_server_pages_served");
    assert_eq!(
        sql("SELECT COUNT(*), SUM(LENGTH(v)) FROM app.big"),
        "20000\t20000000"
    );
    let served_now = counter("Page_server_pages_served");
    assert!(
        served_now > served,
        "pages served by the cold scan: {served} -> {served_now}\n{}",
        sql("SHOW STATUS LIKE 'Page_server%'")
    );
    run_ok(docker(&host).args(["stop", "-t", "60", &c.name]));
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0");
}

/// The value of a one-row `SHOW STATUS` answer (`name<TAB>value`).
fn status(row: &str) -> u64 {
    row.split('\t')
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a counter row: {row:?}"))
}

#[test]
#[ignore = "needs the assembled image (MPSI_TEST_IMAGE_LAYOUT) and a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/e2e runs them with --ignored"]
fn bad_settings_stop_the_container_naming_the_variables() {
    let img = image();
    let host = docker_host();
    for (env, named) in [
        (
            &["PAGE_SERVER_URL=ftp://127.0.0.1:1"][..],
            &["PAGE_SERVER_URL"][..],
        ),
        (
            &["MARIADB_PASSWORD=a", "MARIADB_PASSWORD_FILE=/etc/hostname"][..],
            &["MARIADB_PASSWORD", "MARIADB_PASSWORD_FILE"][..],
        ),
    ] {
        let mut c = docker(&host);
        c.args(["run", "--rm", "--network", "none"]);
        for e in ["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1"].iter().chain(env) {
            c.args(["-e", e]);
        }
        let out = c.arg(img).output().unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "{env:?} started: {said}");
        for n in named {
            assert!(said.contains(n), "{env:?}: the error names {n}: {said}");
        }
        assert!(!said.contains("ready for connections"), "{said}");
    }
}

/// The image manifest's digest in an OCI layout: the entry of index.json
/// that carries a tag (artifacts such as an SBOM carry none).
fn layout_image_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| !m["annotations"]["org.opencontainers.image.ref.name"].is_null())
        .and_then(|m| m["digest"].as_str())
        .expect("the layout's index.json has a tagged image manifest")
        .to_string()
}

#[test]
#[ignore = "needs the assembled image (MPSI_TEST_IMAGE_LAYOUT) and a Docker engine (MPSI_TEST_DOCKER_HOST); .ci/e2e runs them with --ignored"]
fn the_image_pushes_to_a_real_registry_and_docker_pulls_and_runs_it() {
    let img = image();
    let layout = PathBuf::from(std::env::var("MPSI_TEST_IMAGE_LAYOUT").unwrap());
    let reg = common::registry::Registry::start(None);
    let reference = format!("{}/mariadb-pageserver:e2e", reg.host());
    let tmp = tempfile::tempdir().unwrap();
    let digest_file = tmp.path().join("digest");
    let out = run_ok(
        mpsi(&tmp.path().join("store"))
            .env("HOME", tmp.path())
            .args(["push", "--json", "-l"])
            .arg(&layout)
            .arg(&reference)
            .arg("--digest-file")
            .arg(&digest_file),
    );
    let report = json(&out);
    let ours = layout_image_digest(&layout);
    assert_eq!(report["digest"], ours.as_str(), "{report}");
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap().trim(), ours);

    // skopeo reads the same manifest and blobs back.
    common::registry::pull_back_and_compare(&reference, &layout, None, &ours);
    // A Docker engine pulls it by name (127.0.0.1 registries are insecure
    // by default) and gets the image mpsi load gave it: the same image id.
    let host = docker_host();
    run_ok(docker(&host).args(["pull", "-q", &reference]));
    let id = |r: &str| {
        let o = run_ok(docker(&host).args(["image", "inspect", "-f", "{{.Id}}", r]));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(id(&reference), id(img));
    let version = run_in_image(&[&reference, "mariadbd", "--version"]);
    assert!(version.contains("10.11.18"), "{version}");
    let _ = docker(&host).args(["rmi", &reference]).output();
}

/// The layers of the layout's image, unpacked in order with tar(1) into
/// `dest`, as a runtime applies them.
fn unpack_image(layout: &Path, dest: &Path) {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let read = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blob(d)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    // The image manifest (an SBOM or other artifact manifest has another config type).
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| read(m["digest"].as_str().unwrap()))
        .find(|m| m["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json")
        .expect("the layout holds an image manifest");
    std::fs::create_dir_all(dest).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        run_ok(
            std::process::Command::new(common::require_tool("tar"))
                .arg("-xf")
                .arg(blob(l["digest"].as_str().unwrap()))
                .arg("-C")
                .arg(dest),
        );
    }
}

#[test]
#[ignore = "needs the assembled image (MPSI_TEST_IMAGE_LAYOUT) and root (chroot into it); .ci/e2e runs it with --ignored"]
fn the_unpacked_image_has_no_setid_or_world_writable_path_and_its_accounts_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    unpack_image(&layout(), &root);
    assert!(
        root.join("usr/bin/bash").is_file(),
        "the image was unpacked"
    );
    assert_eq!(common::risky_paths(&root), Vec::<String>::new());
    common::assert_accounts_read_by_the_image(&root);
}
