//! The patched MariaDB against the reference Page Server and Safekeeper
//! (tests/peers): pages served on a cold buffer pool, corrupt and stale
//! pages rejected, the Page Server down, gap-free redo that matches
//! ib_logfile0 byte for byte, the Safekeeper down and back, and kill -9.
//!
//! Needs a patched build: MPSI_TEST_MARIADB names a cmake build directory
//! (with sql/mariadbd) or an install root (with usr/sbin/mariadbd). The
//! end-to-end tier (.ci/e2e) sets it and runs these tests with --ignored;
//! a plain `cargo test` shows them as ignored, and run without a build they
//! fail saying what is missing.

mod peers;

use peers::{Peer, Role};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One server at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const ROWS: u64 = 20_000;

struct Mariadb {
    mariadbd: PathBuf,
    client: PathBuf,
    messages: PathBuf,
    /// mariadb-install-db and its --basedir, in an install root.
    install_db: Option<(PathBuf, PathBuf)>,
}

fn mariadb() -> Mariadb {
    let dir = match std::env::var("MPSI_TEST_MARIADB") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => panic!(
            "MPSI_TEST_MARIADB is not set: these tests need a patched MariaDB build \
             (a cmake build directory or an install root); .ci/e2e sets it"
        ),
    };
    let (mariadbd, client) = if dir.join("sql/mariadbd").is_file() {
        (dir.join("sql/mariadbd"), dir.join("client/mariadb"))
    } else {
        (dir.join("usr/sbin/mariadbd"), dir.join("usr/bin/mariadb"))
    };
    assert!(mariadbd.is_file(), "no mariadbd under {}", dir.display());
    let messages = ["sql/share", "usr/share/mariadb", "usr/share/mysql"]
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.join("english/errmsg.sys").is_file())
        .unwrap_or_else(|| panic!("no english/errmsg.sys under {}", dir.display()));
    let install_db = Some((dir.join("usr/bin/mariadb-install-db"), dir.join("usr")))
        .filter(|(script, _)| script.is_file());
    Mariadb {
        mariadbd,
        client,
        messages,
        install_db,
    }
}

struct Server<'a> {
    m: &'a Mariadb,
    datadir: PathBuf,
    child: Option<Child>,
}

impl<'a> Server<'a> {
    fn start(m: &'a Mariadb, datadir: &Path, extra: &[String]) -> Server<'a> {
        fs::create_dir_all(datadir).unwrap();
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(datadir.join("error.log"))
            .unwrap();
        let child = Command::new(&m.mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!(
                "--socket={}",
                datadir.join("mysqld.sock").display()
            ))
            .arg(format!("--lc-messages-dir={}", m.messages.display()))
            .args([
                "--user=root",
                "--skip-networking",
                "--skip-grant-tables",
                "--innodb-buffer-pool-size=8M",
            ])
            .args([
                "--innodb-read-ahead-threshold=0",
                "--innodb-random-read-ahead=OFF",
            ])
            .args([
                "--innodb-buffer-pool-load-at-startup=OFF",
                "--innodb-buffer-pool-dump-at-shutdown=OFF",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Server {
            m,
            datadir: datadir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while s.try_sql("SELECT 1").is_err() {
            if Instant::now() > deadline {
                panic!("mariadbd did not start:\n{}", s.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.datadir.join("error.log")).unwrap_or_default();
        log.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn try_sql(&self, q: &str) -> Result<String, String> {
        let out = Command::new(&self.m.client)
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!(
                "--socket={}",
                self.datadir.join("mysqld.sock").display()
            ))
            .args(["-e", q])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn sql(&self, q: &str) -> String {
        self.try_sql(q)
            .unwrap_or_else(|e| panic!("{q}: {e}\n{}", self.log_tail()))
    }

    fn status(&self, name: &str) -> String {
        let row = self.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"));
        row.split('\t')
            .nth(1)
            .unwrap_or_else(|| panic!("no status variable {name}"))
            .to_string()
    }

    fn counter(&self, name: &str) -> u64 {
        self.status(name).parse().unwrap()
    }

    /// Writes every dirty page and waits until the page push queue is idle.
    fn flush_all(&self) {
        self.sql(
            "SET GLOBAL innodb_max_dirty_pages_pct_lwm=0; SET GLOBAL innodb_max_dirty_pages_pct=0",
        );
        wait_for("dirty pages to be written", 60, || {
            self.counter("Innodb_buffer_pool_pages_dirty") == 0
        });
        let mut last = u64::MAX;
        wait_for("page pushes to settle", 60, || {
            let now = self.counter("Page_server_pages_pushed")
                + self.counter("Page_server_pages_push_dropped");
            let settled = now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(500));
            settled
        });
    }

    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not shut down:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates an empty data directory: with mariadb-install-db when the
/// build is an install root, else (a cmake build directory) an empty
/// directory in which mariadbd creates a new InnoDB system tablespace.
fn install_db(m: &Mariadb, datadir: &Path) {
    let _ = fs::remove_dir_all(datadir);
    fs::create_dir_all(datadir).unwrap();
    let Some((script, basedir)) = &m.install_db else {
        return;
    };
    let out = Command::new(script)
        .arg("--no-defaults")
        .arg(format!("--basedir={}", basedir.display()))
        .arg(format!("--datadir={}", datadir.display()))
        .args([
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb-install-db failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What every test starts with: the build, the machine to itself (the
/// lock is released when the test ends), a temporary directory with a
/// data directory path in it, and a fresh pair of reference peers on
/// 127.0.0.1.
struct Setup {
    _serial: std::sync::MutexGuard<'static, ()>,
    m: Mariadb,
    tmp: tempfile::TempDir,
    datadir: PathBuf,
    ps: Peer,
    sk: Peer,
}

fn setup() -> Setup {
    let m = mariadb();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    Setup {
        _serial,
        m,
        datadir: tmp.path().join("data"),
        tmp,
        ps: Peer::start_on(Role::PageServer, 0, None).unwrap(),
        sk: Peer::start_on(Role::Safekeeper, 0, None).unwrap(),
    }
}

fn wait_for(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn feature_args(ps: u16, sk: u16) -> Vec<String> {
    vec![
        "--innodb-page-server-enabled=ON".into(),
        "--innodb-page-server-address=127.0.0.1".into(),
        format!("--innodb-page-server-port={ps}"),
        "--innodb-safekeeper-address=127.0.0.1".into(),
        format!("--innodb-safekeeper-port={sk}"),
        "--innodb-page-server-timeout-ms=2000".into(),
        // Generous for a loaded test machine; the read timeout test sets
        // its own. loose-: the option is newer than some builds tested.
        "--loose-innodb-page-server-read-timeout-ms=1000".into(),
    ]
}

fn load_table(s: &Server) {
    s.sql("CREATE DATABASE IF NOT EXISTS t");
    s.sql("CREATE TABLE t.a (id INT PRIMARY KEY, v VARCHAR(1000)) ENGINE=InnoDB");
    // 20,000 rows of 1,000 bytes: ~20 MB, well above the 8 MB buffer pool.
    s.sql(&format!(
        "INSERT INTO t.a SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000) FROM t.seq_1_to_{ROWS}"
    ));
}

/// What the scan query must return, computed independently.
fn expected_scan(updated: bool) -> String {
    let sum: u64 = (1..=ROWS)
        .map(|i| {
            let c = if updated {
                b'a' + (i % 26) as u8
            } else {
                b'A' + (i % 26) as u8
            };
            crc32fast::hash(&vec![c; 1000]) as u64
        })
        .sum();
    format!("{ROWS}\t{sum}")
}

const SCAN: &str = "SELECT COUNT(*), SUM(CRC32(v)) FROM t.a";

/// Rewrites every row (lower-case letters when `updated`), flushes, scans,
/// and asserts that the scan is right, that no Page Server answer was used
/// (`what` names the faulty answers) and that refusing them counted errors.
fn rewrite_and_scan_refusing_every_answer(s: &Server<'_>, updated: bool, what: &str) {
    let (served, errors) = (
        s.counter("Page_server_pages_served"),
        s.counter("Page_server_errors"),
    );
    let first = if updated { 97 } else { 65 };
    s.sql(&format!(
        "UPDATE t.a SET v = REPEAT(CHAR({first} + id % 26), 1000)"
    ));
    s.flush_all();
    assert_eq!(s.sql(SCAN), expected_scan(updated));
    assert_eq!(
        s.counter("Page_server_pages_served"),
        served,
        "{what} was used"
    );
    assert!(s.counter("Page_server_errors") > errors);
}

#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn read_path_serves_verified_pages_and_falls_back_safely() {
    let Setup {
        _serial,
        m,
        tmp,
        mut ps,
        sk,
        datadir: _datadir,
    } = setup();

    // Reference: the same data with the feature off.
    let off = Server::start(&m, &tmp.path().join("off"), &[]);
    assert_eq!(off.status("Page_server_state"), "disabled");
    load_table(&off);
    assert_eq!(off.sql(SCAN), expected_scan(false));
    off.stop();

    let s = Server::start(
        &m,
        &tmp.path().join("on"),
        &feature_args(ps.port(), sk.port()),
    );
    let vars = s.sql("SHOW VARIABLES LIKE 'innodb_page_server%'");
    assert!(vars.contains("innodb_page_server_enabled\tON"), "{vars}");
    assert!(
        vars.contains(&format!("innodb_page_server_port\t{}", ps.port())),
        "{vars}"
    );
    load_table(&s);
    s.flush_all();
    assert!(
        s.counter("Page_server_pages_pushed") > 500,
        "pages pushed: {}",
        s.status("Page_server_pages_pushed")
    );
    assert!(!ps.state().pages.is_empty());

    // Cold reads: the table does not fit the buffer pool, so a scan misses.
    let served = s.counter("Page_server_pages_served");
    assert_eq!(s.sql(SCAN), expected_scan(false));
    let served_now = s.counter("Page_server_pages_served");
    assert!(
        served_now > served + 100,
        "pages served {served} -> {served_now}\n{}",
        s.sql("SHOW STATUS LIKE 'Page_server%'")
    );
    assert!(s.counter("Page_server_latency_avg_us") > 0);
    assert_eq!(s.status("Page_server_state"), "connected");

    // Corrupt pages are rejected before InnoDB sees them, then read locally.
    ps.faults().corrupt_pages = true;
    let (bad, fb) = (
        s.counter("Page_server_checksum_failures"),
        s.counter("Page_server_fallbacks"),
    );
    assert_eq!(s.sql(SCAN), expected_scan(false));
    assert!(s.counter("Page_server_checksum_failures") > bad + 100);
    assert!(s.counter("Page_server_fallbacks") > fb + 100);
    ps.faults().corrupt_pages = false;

    // Stale pages: rewrite every page, then let the peer serve old versions.
    s.sql("UPDATE t.a SET v = REPEAT(CHAR(97 + id % 26), 1000)");
    s.flush_all();
    ps.faults().stale_pages = true;
    let stale = s.counter("Page_server_stale_pages");
    assert_eq!(
        s.sql(SCAN),
        expected_scan(true),
        "a stale page must never be used"
    );
    assert!(s.counter("Page_server_stale_pages") > stale + 100);
    ps.faults().stale_pages = false;
    let served = s.counter("Page_server_pages_served");
    assert_eq!(s.sql(SCAN), expected_scan(true));
    assert!(
        s.counter("Page_server_pages_served") > served + 100,
        "fresh versions are served again"
    );

    // An oversized answer is refused without being read whole (issue 8,
    // defect 5): the Page Server cannot make a reading thread allocate
    // more than a few page sizes.
    ps.faults().oversized_body = Some(1 << 20);
    rewrite_and_scan_refusing_every_answer(&s, false, "an oversized answer");
    ps.faults().oversized_body = None;

    // Chunked answers (issue 8, defect 8): well framed, they are served;
    // chunk data not followed by CRLF is broken framing, refused as a
    // transport failure although the bytes would decode. First the
    // backoff the oversized answers opened must be over.
    wait_for("the Page Server connected again", 30, || {
        s.status("Page_server_state") == "connected"
    });
    ps.faults().chunked_get_page = true;
    let served = s.counter("Page_server_pages_served");
    s.sql("UPDATE t.a SET v = REPEAT(CHAR(97 + id % 26), 1000)");
    s.flush_all();
    assert_eq!(s.sql(SCAN), expected_scan(true));
    assert!(
        s.counter("Page_server_pages_served") > served + 100,
        "chunked answers are served"
    );
    ps.faults().bad_chunk_terminator = true;
    rewrite_and_scan_refusing_every_answer(&s, false, "a chunk not ended by CRLF");
    ps.faults().chunked_get_page = false;
    ps.faults().bad_chunk_terminator = false;

    // Page Server down: queries still succeed from local pages.
    ps.stop();
    let fb = s.counter("Page_server_fallbacks");
    assert_eq!(s.sql(SCAN), expected_scan(false));
    assert!(s.counter("Page_server_fallbacks") > fb + 100);
    assert_eq!(s.status("Page_server_state"), "disconnected");
    s.stop();
}

/// The redo bytes [from, to) as ib_logfile0 holds them.
fn log_file_bytes(datadir: &Path, from: u64, to: u64) -> Vec<u8> {
    let file = fs::read(datadir.join("ib_logfile0")).unwrap();
    let first_lsn = u64::from_be_bytes(file[8..16].try_into().unwrap());
    let capacity = file.len() as u64 - 12288;
    (from..to)
        .map(|lsn| file[(12288 + (lsn - first_lsn) % capacity) as usize])
        .collect()
}

#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn redo_reaches_the_safekeeper_gap_free_even_across_an_outage() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        mut sk,
        datadir,
    } = setup();
    let s = Server::start(&m, &datadir, &feature_args(ps.port(), sk.port()));
    s.sql("CREATE DATABASE t; CREATE TABLE t.c (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB");
    for i in 0..200 {
        s.sql(&format!(
            "INSERT INTO t.c VALUES ({i}, REPEAT('x', {}))",
            10 + i % 150
        ));
    }
    let committed = s.counter("Innodb_lsn_flushed");
    wait_for("the Safekeeper to catch up", 30, || {
        sk.state().wal_end().is_some_and(|e| e >= committed)
    });
    assert_eq!(s.status("Page_server_safekeeper_state"), "connected");

    // Safekeeper down: commits go on; the backlog arrives when it is back.
    sk.stop();
    let t = Instant::now();
    for i in 200..400 {
        s.sql(&format!(
            "INSERT INTO t.c VALUES ({i}, 'while the safekeeper is down')"
        ));
    }
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "commits must not wait for the Safekeeper"
    );
    wait_for("the Safekeeper to be seen down", 30, || {
        s.status("Page_server_safekeeper_state") == "disconnected"
    });
    let committed = s.counter("Innodb_lsn_flushed");
    assert!(sk.state().wal_end().unwrap() < committed);
    sk.start().unwrap();
    wait_for("the backlog to arrive", 60, || {
        sk.state().wal_end().is_some_and(|e| e >= committed)
    });
    assert_eq!(s.counter("Page_server_redo_gaps"), 0);
    assert!(s.counter("Page_server_safekeeper_acked_lsn") >= committed);

    // What arrived is the redo log itself, without gaps.
    assert_wal_matches_log(&sk, &datadir, false);
    s.stop();
}

#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn kill_9_with_the_feature_on_loses_no_committed_row() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    let args = feature_args(ps.port(), sk.port());
    let s = Server::start(&m, &datadir, &args);
    load_table(&s);
    s.flush_all();
    s.sql("CREATE TABLE t.k (id INT PRIMARY KEY) ENGINE=InnoDB");
    for i in 0..300 {
        s.sql(&format!("INSERT INTO t.k VALUES ({i})"));
    }
    s.sql("UPDATE t.a SET v = REPEAT(CHAR(97 + id % 26), 1000) WHERE id % 2 = 0");
    s.kill9();
    let s = Server::start(&m, &datadir, &args);
    assert_eq!(s.sql("SELECT COUNT(*), MAX(id) FROM t.k"), "300\t299");
    let even_updated =
        s.sql("SELECT COUNT(*) FROM t.a WHERE id % 2 = 0 AND v = REPEAT(CHAR(97 + id % 26), 1000)");
    assert_eq!(even_updated, (ROWS / 2).to_string());
    s.sql("CHECK TABLE t.a");
    s.stop();
}

/// Issue 8, defect 1: a Page Server that still holds the pages of a
/// previous database on the same datadir path (re-created with
/// mariadb-install-db) must never have one of them accepted, even once the
/// new database has written past the old one's LSN, and whether the peer
/// knows the database identity extension or not.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn pages_of_a_previous_database_on_the_same_peer_are_never_accepted() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    // A Page Server without the identity extension: one store for all.
    ps.faults().ignore_identity = true;
    let args = feature_args(ps.port(), sk.port());

    // The previous database: loaded, then every row rewritten.
    install_db(&m, &datadir);
    let s = Server::start(&m, &datadir, &args);
    load_table(&s);
    s.sql("UPDATE t.a SET v = REPEAT(CHAR(97 + id % 26), 1000)");
    s.flush_all();
    let old_lsn = s.counter("Innodb_lsn_current");
    let old_id = fs::read_to_string(datadir.join("ib_page_server_id")).unwrap_or_default();
    s.stop();
    let old_images = ps.state().images();
    assert!(old_images > 500, "images of the old database: {old_images}");

    // The same datadir re-created, against the same peer.
    install_db(&m, &datadir);
    ps.state().generation += 1;
    let s = Server::start(&m, &datadir, &args);
    load_table(&s);
    s.flush_all();
    // Write past the old database's LSN with a small buffer pool, so that
    // t.a is evicted and every old image is "not newer than" the request.
    s.sql("CREATE TABLE t.f (id INT PRIMARY KEY, v VARCHAR(1000)) ENGINE=InnoDB");
    s.sql(&format!(
        "INSERT INTO t.f SELECT seq, REPEAT('f', 1000) FROM t.seq_1_to_{ROWS}"
    ));
    let mut round = 0;
    while s.counter("Innodb_lsn_current") <= old_lsn + (1 << 20) {
        round += 1;
        s.sql(&format!(
            "UPDATE t.f SET v = REPEAT(CHAR(65 + (id + {round}) % 26), 1000)"
        ));
    }
    s.flush_all();

    // A peer that mixes both databases: only our own images may be used.
    let served = s.counter("Page_server_pages_served");
    assert_eq!(s.sql(SCAN), expected_scan(false), "an old page was used");
    assert_eq!(s.sql("CHECK TABLE t.a").split('\t').next_back(), Some("OK"));
    eprintln!(
        "mixed peer: {} pages served and accepted, {} stale",
        s.counter("Page_server_pages_served") - served,
        s.counter("Page_server_stale_pages")
    );

    // A peer that serves nothing but the previous database's images.
    ps.faults().foreign_database_pages = true;
    let (served, offered) = (
        s.counter("Page_server_pages_served"),
        ps.state().foreign_pages_served,
    );
    assert_eq!(s.sql(SCAN), expected_scan(false), "an old page was used");
    let offered = ps.state().foreign_pages_served - offered;
    let accepted = s.counter("Page_server_pages_served") - served;
    assert!(offered > 100, "old images offered: {offered}");
    assert_eq!(
        accepted, 0,
        "{offered} old images offered, {accepted} accepted"
    );
    assert_eq!(s.sql("CHECK TABLE t.a").split('\t').next_back(), Some("OK"));

    // The identity extension: each datadir has its own id, sent with every
    // request; a peer that labels an image with another id is refused.
    let new_id = fs::read_to_string(datadir.join("ib_page_server_id")).unwrap_or_default();
    assert_eq!(new_id.trim().len(), 32, "ib_page_server_id: {new_id:?}");
    assert_ne!(old_id.trim(), new_id.trim());
    {
        let st = ps.state();
        let pushed = &st.identities["put_page"];
        assert!(pushed.contains(old_id.trim()) && pushed.contains(new_id.trim()));
        let asked = &st.identities["get_page"];
        assert!(
            asked.contains(new_id.trim()) && asked.len() <= 2,
            "{asked:?}"
        );
        assert!(sk.state().identities["stream_wal"].contains(new_id.trim()));
    }
    ps.faults().ignore_identity = false;
    let (served, foreign) = (
        s.counter("Page_server_pages_served"),
        s.counter("Page_server_foreign_pages"),
    );
    assert_eq!(s.sql(SCAN), expected_scan(false));
    assert_eq!(s.counter("Page_server_pages_served"), served);
    assert!(s.counter("Page_server_foreign_pages") > foreign + 100);
    // ... and one that lies about the id still meets the exact-LSN rule.
    ps.faults().lie_about_database = true;
    let served = s.counter("Page_server_pages_served");
    assert_eq!(s.sql(SCAN), expected_scan(false));
    assert_eq!(s.counter("Page_server_pages_served"), served);
    s.stop();
}

/// The Safekeeper's copy of the current database's redo, checked against
/// ib_logfile0: gap-free from its start, or (`after_gaps`) from the end
/// of its last gap. Returns the checked range.
fn assert_wal_matches_log(sk: &Peer, datadir: &Path, after_gaps: bool) -> (u64, u64) {
    let w = sk.state().wal();
    let start = w.start.expect("the Safekeeper has no redo");
    let end = start + w.data.len() as u64;
    let from = match w.gaps.last() {
        Some(&(_, gap_end)) if after_gaps => gap_end,
        _ => {
            assert!(w.gaps.is_empty(), "gaps at the Safekeeper: {:?}", w.gaps);
            start
        }
    };
    let ours = &w.data[(from - start) as usize..];
    let file = log_file_bytes(datadir, from, end);
    if let Some(i) = ours.iter().zip(&file).position(|(a, b)| a != b) {
        panic!(
            "the Safekeeper's redo differs from ib_logfile0 at LSN {} (range {from}..{end})",
            from + i as u64
        );
    }
    (from, end)
}

fn insert_rows(s: &Server, from: u32, n: u32) {
    for i in from..from + n {
        s.sql(&format!(
            "INSERT INTO t.c VALUES ({i}, REPEAT('r', {}))",
            10 + i % 150
        ));
    }
}

fn wait_caught_up(s: &Server, sk: &Peer, what: &str) {
    let committed = s.counter("Innodb_lsn_flushed");
    wait_for(what, 60, || {
        sk.state().wal_end().is_some_and(|e| e >= committed)
    });
}

/// Issue 8, defect 2: a restart while the Safekeeper is down must not
/// lose [its end, the restart LSN), and a Safekeeper that comes back with
/// an older end and refuses chunks past it must be resumed from its end.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn redo_resumes_at_the_safekeepers_end_after_a_restart_or_a_rejection() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        mut sk,
        datadir,
    } = setup();
    let args = feature_args(ps.port(), sk.port());
    let s = Server::start(&m, &datadir, &args);
    s.sql("CREATE DATABASE t; CREATE TABLE t.c (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB");
    insert_rows(&s, 0, 100);
    wait_caught_up(&s, &sk, "the Safekeeper to catch up");

    // A restart while the Safekeeper is down.
    sk.stop();
    insert_rows(&s, 100, 100);
    s.stop();
    let s = Server::start(&m, &datadir, &args);
    insert_rows(&s, 200, 100);
    std::thread::sleep(Duration::from_secs(2));
    sk.start().unwrap();
    wait_caught_up(&s, &sk, "the backlog after a restart");
    assert_eq!(s.counter("Page_server_redo_gaps"), 0);
    assert_wal_matches_log(&sk, &datadir, false);

    // The Safekeeper comes back with an older end, and rejects chunks
    // that start past it.
    sk.faults().reject_gaps = true;
    sk.stop();
    {
        let mut st = sk.state();
        let current = st.current.clone();
        let w = st.streams.get_mut(&current).unwrap();
        let keep = w.data.len().saturating_sub(20_000);
        w.data.truncate(keep);
    }
    insert_rows(&s, 300, 100);
    sk.start().unwrap();
    wait_caught_up(&s, &sk, "the Safekeeper to be resumed from its older end");
    assert_eq!(s.counter("Page_server_redo_gaps"), 0);
    assert_wal_matches_log(&sk, &datadir, false);
    assert_eq!(s.status("Page_server_safekeeper_state"), "connected");
    s.stop();
}

/// Issue 8, defect 2: a Safekeeper whose copy ends beyond this server's
/// log holds another history: streaming stops with an error, and commits
/// do not wait for it.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn a_safekeeper_with_another_history_stops_the_stream() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    let args = feature_args(ps.port(), sk.port());
    let s = Server::start(&m, &datadir, &args);
    s.sql("CREATE DATABASE t; CREATE TABLE t.c (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB");
    insert_rows(&s, 0, 50);
    wait_caught_up(&s, &sk, "the Safekeeper to catch up");
    s.stop();

    sk.faults().foreign_history = Some(1 << 30);
    let s = Server::start(&m, &datadir, &args);
    insert_rows(&s, 50, 20);
    wait_for("the stream to stop", 30, || {
        s.status("Page_server_safekeeper_state") == "stopped"
    });
    let log = fs::read_to_string(datadir.join("error.log")).unwrap();
    assert!(log.contains("another history"), "{}", s.log_tail());
    let chunks = sk.state().count("stream_wal");
    s.sql("SET GLOBAL innodb_safekeeper_max_lag=1");
    let t = Instant::now();
    insert_rows(&s, 70, 20);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "commits waited for a stopped stream: {:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sk.state().count("stream_wal"), chunks, "foreign bytes sent");
    s.stop();
}

/// Issue 8, defect 2: a gap that cannot be avoided (a tiny log and ring
/// while the Safekeeper is down) is counted and logged, and what follows
/// it is still the redo log byte for byte.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn a_forced_redo_gap_is_reported_and_the_rest_is_exact() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        mut sk,
        datadir,
    } = setup();
    let mut args = feature_args(ps.port(), sk.port());
    args.push("--innodb-log-file-size=4M".into());
    args.push("--innodb-safekeeper-buffer-size=1M".into());
    let s = Server::start(&m, &datadir, &args);
    s.sql("CREATE DATABASE t; CREATE TABLE t.c (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB");
    insert_rows(&s, 0, 20);
    wait_caught_up(&s, &sk, "the Safekeeper to catch up");
    sk.stop();
    load_table(&s);
    sk.start().unwrap();
    wait_caught_up(&s, &sk, "the Safekeeper to get what is left");
    assert!(s.counter("Page_server_redo_gaps") > 0);
    let log = fs::read_to_string(datadir.join("error.log")).unwrap();
    assert!(
        log.contains("can no longer be streamed to the Safekeeper"),
        "{}",
        s.log_tail()
    );
    assert!(!sk.state().wal().gaps.is_empty());
    let (from, end) = assert_wal_matches_log(&sk, &datadir, true);
    assert!(end > from);
    s.stop();
}

/// Starts mariadbd with settings that must make it refuse to start, and
/// returns how it ended (its error log is datadir/error.log).
fn start_must_fail(m: &Mariadb, datadir: &Path, args: &[String]) -> std::process::ExitStatus {
    fs::create_dir_all(datadir).unwrap();
    let log = fs::File::create(datadir.join("error.log")).unwrap();
    let mut child = Command::new(&m.mariadbd)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!(
            "--socket={}",
            datadir.join("mysqld.sock").display()
        ))
        .arg(format!("--lc-messages-dir={}", m.messages.display()))
        .args(["--user=root", "--skip-networking", "--skip-grant-tables"])
        .args(["--innodb-buffer-pool-size=8M"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mariadbd started with {args:?}:\n{}",
                fs::read_to_string(datadir.join("error.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 8, defect 5: memory that cannot be had makes InnoDB refuse to
/// start with a message, instead of std::terminate() on a bad_alloc.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn an_impossible_buffer_size_fails_startup_cleanly() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps: _ps,
        sk: _sk,
        datadir,
    } = setup();
    fs::create_dir_all(&datadir).unwrap();
    let mut args = feature_args(1, 1);
    args.push(format!("--innodb-safekeeper-buffer-size={}", 1u64 << 36));
    let status = start_must_fail(&m, &datadir, &args);
    let text = fs::read_to_string(datadir.join("error.log")).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        None,
        "mariadbd was killed by a signal:\n{text}"
    );
    assert!(!text.contains("terminate called"), "{text}");
    assert!(
        text.contains("cannot allocate") && text.contains("innodb_safekeeper_buffer_size"),
        "{text}"
    );
}

/// Issue 8, defect 7: requests under way when the shutdown drain starts
/// (idle pings of both threads) are bounded by the drain deadline, not by
/// innodb_page_server_timeout_ms.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn shutdown_is_bounded_even_when_both_peers_hang() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    let mut args = feature_args(ps.port(), sk.port());
    args.push("--innodb-page-server-timeout-ms=120000".into());
    let s = Server::start(&m, &datadir, &args);
    s.sql("CREATE DATABASE t; CREATE TABLE t.c (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB");
    insert_rows(&s, 0, 20);
    wait_caught_up(&s, &sk, "the Safekeeper to catch up");
    // Both peers stop answering; the idle pings (every 5 s) hang.
    ps.faults().delay = Some(Duration::from_secs(300));
    sk.faults().delay = Some(Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(7));
    let t = Instant::now();
    s.stop();
    let took = t.elapsed();
    eprintln!("shutdown with hanging peers took {took:?}");
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");
}

/// Issue 8, defect 4: with innodb_safekeeper_max_lag, commits wait for a
/// slow Safekeeper (bounded), but not one by one for a Safekeeper that is
/// known to be down.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn commits_do_not_each_wait_for_a_safekeeper_that_is_down() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        mut sk,
        datadir,
    } = setup();
    let s = Server::start(&m, &datadir, &feature_args(ps.port(), sk.port()));
    s.sql("CREATE DATABASE t; CREATE TABLE t.c (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB");
    insert_rows(&s, 0, 20);
    wait_caught_up(&s, &sk, "the Safekeeper to catch up");
    s.sql("SET GLOBAL innodb_safekeeper_max_lag=1");

    // Slow but answering: commits wait for it.
    sk.faults().delay = Some(Duration::from_millis(300));
    let waits = s.counter("Page_server_commit_throttle_waits");
    insert_rows(&s, 20, 5);
    assert!(s.counter("Page_server_commit_throttle_waits") > waits);
    sk.faults().delay = None;

    // Down: the commits go on without waiting 2 s each.
    sk.stop();
    wait_for("the Safekeeper to be seen down", 30, || {
        insert_rows(&s, 1000 + rand_id(), 1);
        s.status("Page_server_safekeeper_state") == "disconnected"
    });
    let t = Instant::now();
    insert_rows(&s, 100, 20);
    let took = t.elapsed();
    eprintln!("20 commits with the Safekeeper down: {took:?}");
    assert!(took < Duration::from_secs(10), "20 commits took {took:?}");
    s.stop();
}

fn rand_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Issue 8, defect 3: a slow but answering Page Server (900 ms per
/// get_page) must not stall foreground reads, which may hold latches:
/// each read gives up after innodb_page_server_read_timeout_ms, and a run
/// of slow answers opens the circuit, while other sessions write.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn a_slow_page_server_does_not_stall_foreground_reads() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    let mut args = feature_args(ps.port(), sk.port());
    args.push("--loose-innodb-page-server-read-timeout-ms=20".into());
    let s = Server::start(&m, &datadir, &args);
    load_table(&s);
    s.sql("CREATE TABLE t.c (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB");
    s.sql("UPDATE t.a SET v = REPEAT(CHAR(65 + id % 26), 1000) WHERE id % 7 = 0");
    s.flush_all();
    ps.faults().get_page_delay = Some(Duration::from_millis(900));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (worst, total, n) = std::thread::scope(|sc| {
        // Concurrent DML in another session.
        sc.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s.sql(&format!("REPLACE INTO t.c VALUES ({}, 'dml')", i % 100));
                i += 1;
            }
        });
        let mut worst = Duration::ZERO;
        let mut total = Duration::ZERO;
        let mut n = 0u32;
        for k in 0..60u64 {
            let id = 1 + (k * 331) % ROWS;
            let t = Instant::now();
            let v = s.sql(&format!("SELECT LENGTH(v) FROM t.a WHERE id = {id}"));
            let took = t.elapsed();
            assert_eq!(v, "1000");
            worst = worst.max(took);
            total += took;
            n += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (worst, total, n)
    });
    eprintln!(
        "slow Page Server (900 ms): {n} point reads, worst {worst:?}, mean {:?}; requests {}, errors {}, served {}",
        total / n,
        s.counter("Page_server_requests"),
        s.counter("Page_server_errors"),
        s.counter("Page_server_pages_served")
    );
    assert!(
        worst < Duration::from_millis(600),
        "a foreground read waited {worst:?} for a slow Page Server"
    );
    assert_eq!(s.sql("SELECT COUNT(*) FROM t.a"), ROWS.to_string());
    s.stop();
}

/// Issue 8, defect 8: more readers at once than the 32 idle connections
/// the pool used to keep. The pool now keeps as many as have run at once,
/// so 48 concurrent readers reuse their connections instead of opening
/// new ones whenever more than 32 finish together.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn many_concurrent_readers_reuse_their_connections() {
    const READERS: u64 = 48;
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    let s = Server::start(&m, &datadir, &feature_args(ps.port(), sk.port()));
    load_table(&s);
    s.flush_all();
    // Answers slow enough (well under half the read timeout) that the
    // readers' requests overlap.
    ps.faults().get_page_delay = Some(Duration::from_millis(20));
    let (conns, gets) = {
        let st = ps.state();
        (st.connections, st.count("get_page"))
    };
    let served = s.counter("Page_server_pages_served");
    // Each round reads half the table, 48 ranges at once; the halves
    // alternate, so each round finds its pages evicted by the one before.
    for half in [0, 1].repeat(4) {
        std::thread::scope(|sc| {
            for r in 0..READERS {
                let s = &s;
                sc.spawn(move || {
                    let span = ROWS / 2 / READERS;
                    let from = half * ROWS / 2 + r * span + 1;
                    let got = s.sql(&format!(
                        "SELECT COUNT(*) FROM t.a WHERE id BETWEEN {from} AND {} AND LENGTH(v) = 1000",
                        from + span - 1
                    ));
                    assert_eq!(got, span.to_string());
                });
            }
        });
    }
    let st = ps.state();
    let (conns, gets) = (st.connections - conns, st.count("get_page") - gets);
    drop(st);
    let served = s.counter("Page_server_pages_served") - served;
    eprintln!(
        "{READERS} concurrent readers: {gets} get_page requests, {served} pages served, {conns} new connections"
    );
    assert!(
        served > 1000,
        "too few remote reads to measure ({served} served)"
    );
    // The fixed pool of 32 opened about 16 more in every round.
    assert!(
        conns <= READERS + READERS / 4,
        "{conns} connections opened for {gets} requests of {READERS} readers"
    );
    s.stop();
}

/// Issue 8, defect 8: with innodb_page_server_fallback=OFF a failing Page
/// Server fails client statements, but background work (here purge) reads
/// the local file instead of failing.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn strict_mode_fails_clients_but_not_purge() {
    use std::io::{BufRead, BufReader, Write};
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        mut ps,
        sk,
        datadir,
    } = setup();
    let s = Server::start(&m, &datadir, &feature_args(ps.port(), sk.port()));
    load_table(&s);
    s.flush_all();

    // A read view that keeps purge from removing the rows deleted next.
    let mut snapshot = Command::new(&m.client)
        .args(["--no-defaults", "-uroot", "-N", "-B", "--unbuffered"])
        .arg(format!(
            "--socket={}",
            datadir.join("mysqld.sock").display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_snapshot = snapshot.stdin.take().unwrap();
    let mut from_snapshot = BufReader::new(snapshot.stdout.take().unwrap());
    writeln!(
        to_snapshot,
        "START TRANSACTION WITH CONSISTENT SNAPSHOT; SELECT COUNT(*) FROM t.a;"
    )
    .unwrap();
    let mut line = String::new();
    from_snapshot.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), ROWS.to_string());

    s.sql("DELETE FROM t.a WHERE id % 2 = 0");
    // A second table as large as the first evicts t.a's pages.
    s.sql("CREATE TABLE t.b LIKE t.a");
    s.sql("INSERT INTO t.b SELECT * FROM t.a");
    s.sql(&format!(
        "INSERT INTO t.b SELECT seq, REPEAT('b', 1000) FROM t.seq_1_to_{ROWS} WHERE seq % 2 = 0"
    ));
    s.flush_all();
    let history = || {
        s.sql("SELECT COUNT FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rseg_history_len'")
            .parse::<u64>()
            .unwrap()
    };
    assert!(history() > 0, "nothing left to purge");

    s.sql("SET GLOBAL innodb_page_server_fallback = OFF");
    ps.stop();
    let log_before = fs::read_to_string(datadir.join("error.log")).unwrap().len();
    let fallbacks = s.counter("Page_server_fallbacks");
    writeln!(to_snapshot, "COMMIT;").unwrap();
    drop(to_snapshot);
    assert!(snapshot.wait().unwrap().success());
    wait_for("purge to finish", 120, || history() == 0);
    let purge_fallbacks = s.counter("Page_server_fallbacks") - fallbacks;
    let log = fs::read_to_string(datadir.join("error.log")).unwrap();
    let new_log = &log[log_before..];
    eprintln!("purge with the Page Server down and fallback=OFF: {purge_fallbacks} local reads");
    assert!(
        purge_fallbacks > 10,
        "purge made too few eligible reads ({purge_fallbacks}) to show anything"
    );
    assert!(
        !new_log.contains("innodb_page_server_fallback=OFF"),
        "a purge read failed in strict mode:\n{new_log}"
    );

    // A client's read still fails while the Page Server is down.
    let scan = s.try_sql("SELECT COUNT(*), SUM(CRC32(v)) FROM t.b");
    assert!(scan.is_err(), "a strict read succeeded: {scan:?}");
    let log = fs::read_to_string(datadir.join("error.log")).unwrap();
    assert!(
        log[log_before..].contains("innodb_page_server_fallback=OFF"),
        "the failed client read was not logged"
    );
    s.sql("SET GLOBAL innodb_page_server_fallback = ON");
    assert_eq!(s.sql("SELECT COUNT(*) FROM t.a"), (ROWS / 2).to_string());
    assert_eq!(s.sql("CHECK TABLE t.a").split('\t').next_back(), Some("OK"));
    s.stop();
}

/// Issue 8, defect 8: an address with a port and an API key with a line
/// break are refused at startup; ROW_FORMAT=COMPRESSED pages are never
/// pushed, whatever their KEY_BLOCK_SIZE.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn bad_addresses_and_keys_are_refused_and_compressed_pages_not_pushed() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    let mut args = feature_args(1, 1);
    args.push("--innodb-page-server-address=127.0.0.1:8081".into());
    start_must_fail(&m, &datadir, &args);
    let log = fs::read_to_string(datadir.join("error.log")).unwrap();
    assert!(
        log.contains("'127.0.0.1:8081' is not a valid host name"),
        "{log}"
    );

    let mut args = feature_args(1, 1);
    args.push("--innodb-safekeeper-api-key=k\r\nX-Injected: 1".into());
    start_must_fail(&m, &datadir, &args);
    let log = fs::read_to_string(datadir.join("error.log")).unwrap();
    assert!(log.contains("must not contain control characters"), "{log}");

    let _ = fs::remove_dir_all(&datadir);
    let s = Server::start(&m, &datadir, &feature_args(ps.port(), sk.port()));
    s.sql("CREATE DATABASE t; CREATE TABLE t.z (id INT PRIMARY KEY, v VARCHAR(1000)) ENGINE=InnoDB ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=16");
    s.sql("INSERT INTO t.z SELECT seq, REPEAT('z', 1000) FROM t.seq_1_to_2000");
    s.flush_all();
    let space: u64 = s
        .sql("SELECT space FROM information_schema.innodb_sys_tables WHERE name = 't/z'")
        .parse()
        .unwrap();
    let pushed = ps
        .state()
        .pages
        .keys()
        .filter(|(_, sp, _)| *sp == space)
        .count();
    assert_eq!(
        pushed, 0,
        "pages of a ROW_FORMAT=COMPRESSED table were pushed"
    );
    s.stop();
}

/// Issue 8, defect 6: page images go to the Page Server several to a
/// `put_pages` request, so a peer a few milliseconds away keeps up with
/// the page cleaner; a Page Server without that endpoint gets one image
/// per `put_page`, and both kinds are served back.
#[test]
#[ignore = "needs a patched MariaDB build (MPSI_TEST_MARIADB); .ci/e2e runs it with --ignored"]
fn page_pushes_are_batched_and_keep_up_with_a_slow_page_server() {
    let Setup {
        _serial,
        m,
        tmp: _tmp,
        ps,
        sk,
        datadir,
    } = setup();
    let s = Server::start(&m, &datadir, &feature_args(ps.port(), sk.port()));
    let requests = |ps: &Peer| {
        let st = ps.state();
        (st.count("put_pages"), st.count("put_page"))
    };

    // 10 ms per request: one image per request would be 100 a second.
    ps.faults().delay = Some(Duration::from_millis(10));
    let started = Instant::now();
    load_table(&s);
    s.flush_all();
    let seconds = started.elapsed().as_secs_f64();
    ps.faults().delay = None;
    let (batches, singles) = requests(&ps);
    let pushed = s.counter("Page_server_pages_pushed");
    let dropped = s.counter("Page_server_pages_push_dropped");
    eprintln!(
        "10 ms per request: {pushed} images pushed in {batches} put_pages and {singles} put_page requests, {dropped} dropped, load and flush {seconds:.1} s"
    );
    assert!(pushed > 1000, "too few images pushed to measure ({pushed})");
    assert!(
        pushed >= 8 * (batches + singles),
        "{pushed} images took {} requests",
        batches + singles
    );
    assert!(
        dropped * 10 <= pushed,
        "{dropped} images dropped, {pushed} pushed"
    );
    assert_eq!(s.counter("Page_server_push_errors"), 0);
    let served = s.counter("Page_server_pages_served");
    assert_eq!(s.sql(SCAN), expected_scan(false));
    assert!(
        s.counter("Page_server_pages_served") > served,
        "no batched image was served"
    );

    // A Page Server without put_pages: one image per put_page, no errors.
    ps.faults().no_put_pages = true;
    s.sql("UPDATE t.a SET v = REPEAT(CHAR(97 + id % 26), 1000)");
    s.flush_all();
    let (batches_after, singles_after) = requests(&ps);
    let pushed_after = s.counter("Page_server_pages_pushed") - pushed;
    eprintln!(
        "without put_pages: {pushed_after} images pushed in {} put_page requests ({} put_pages refused)",
        singles_after - singles,
        batches_after - batches
    );
    assert_eq!(
        batches_after - batches,
        1,
        "put_pages was tried again after a 404"
    );
    assert!(pushed_after > 1000, "{pushed_after} images pushed");
    assert_eq!(singles_after - singles, pushed_after);
    assert_eq!(s.counter("Page_server_push_errors"), 0);
    let log = fs::read_to_string(datadir.join("error.log")).unwrap();
    assert_eq!(
        log.matches("answered put_pages with HTTP status 404")
            .count(),
        1,
        "{}",
        s.log_tail()
    );
    let served = s.counter("Page_server_pages_served");
    assert_eq!(s.sql(SCAN), expected_scan(true));
    assert!(
        s.counter("Page_server_pages_served") > served,
        "no image pushed by put_page was served"
    );
    s.stop();
}
