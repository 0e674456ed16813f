//! The reference peers follow the documented API (docs/page-server-protocol.md).

mod peers;

use base64::Engine as _;
use peers::{Peer, Role, call};
use serde_json::json;

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

#[test]
fn page_server_serves_the_newest_version_not_newer_than_the_request() {
    let mut ps = Peer::start_on(Role::PageServer, 0, None).unwrap();
    let p = ps.port();
    assert_eq!(
        call(p, "GET", "/api/v1/ping", None, &[]).unwrap(),
        (200, json!({"status":"ok","version":"1.0.0"}))
    );
    let (s, body) = call(
        p,
        "POST",
        "/api/v1/get_page",
        Some(json!({"space_id":1,"page_no":42,"lsn":1000})),
        &[],
    )
    .unwrap();
    assert_eq!(s, 404);
    assert_eq!(body["error"], "Page not found: space=1 page=42");
    for (lsn, byte) in [(500u64, 1u8), (900, 2), (1500, 3)] {
        let r = call(
            p,
            "POST",
            "/api/v1/put_page",
            Some(json!({"space_id":1,"page_no":42,"lsn":lsn,"page_data":b64(&[byte; 16384])})),
            &[],
        )
        .unwrap();
        assert_eq!(r.0, 200);
    }
    let (s, body) = call(
        p,
        "POST",
        "/api/v1/get_page",
        Some(json!({"space_id":1,"page_no":42,"lsn":1000})),
        &[],
    )
    .unwrap();
    assert_eq!((s, body["page_lsn"].as_u64()), (200, Some(900)));
    ps.faults().stale_pages = true;
    let (_, body) = call(
        p,
        "POST",
        "/api/v1/get_page",
        Some(json!({"space_id":1,"page_no":42,"lsn":1000})),
        &[],
    )
    .unwrap();
    assert_eq!(body["page_lsn"], 500);
    assert_eq!(
        call(p, "GET", "/api/v1/get_page", None, &[]).unwrap().0,
        405
    );
    assert_eq!(
        call(
            p,
            "POST",
            "/api/v1/get_page",
            Some(json!({"space_id":1})),
            &[]
        )
        .unwrap()
        .0,
        400
    );
    // Down, then back with its state.
    ps.stop();
    assert!(call(p, "GET", "/api/v1/ping", None, &[]).is_err());
    ps.start().unwrap();
    ps.faults().stale_pages = false;
    assert_eq!(
        call(
            p,
            "POST",
            "/api/v1/get_page",
            Some(json!({"space_id":1,"page_no":42,"lsn":2000})),
            &[]
        )
        .unwrap()
        .1["page_lsn"],
        1500
    );
}

#[test]
fn safekeeper_keeps_a_contiguous_stream_and_checks_its_key() {
    let sk = Peer::start_on(Role::Safekeeper, 0, Some("k3y")).unwrap();
    let p = sk.port();
    let auth = [("Authorization", "Bearer k3y")];
    assert_eq!(
        call(
            p,
            "POST",
            "/api/v1/stream_wal",
            Some(json!({"lsn":100,"wal_data":b64(b"abcd")})),
            &[]
        )
        .unwrap()
        .0,
        401
    );
    let r = call(
        p,
        "POST",
        "/api/v1/stream_wal",
        Some(json!({"lsn":100,"wal_data":b64(b"abcd")})),
        &auth,
    )
    .unwrap();
    assert_eq!(r, (200, json!({"status":"success","last_applied_lsn":104})));
    // Overlapping resend is accepted without duplicating bytes.
    call(
        p,
        "POST",
        "/api/v1/stream_wal",
        Some(json!({"lsn":102,"wal_data":b64(b"cdef")})),
        &auth,
    )
    .unwrap();
    assert_eq!(
        call(p, "GET", "/api/v1/get_latest_lsn", None, &auth)
            .unwrap()
            .1["latest_lsn"],
        106
    );
    let (_, w) = call(p, "GET", "/api/v1/get_wal?lsn=101", None, &auth).unwrap();
    assert_eq!(w["wal_data"], b64(b"bcdef"));
    // A jump is recorded as a gap.
    call(
        p,
        "POST",
        "/api/v1/stream_wal",
        Some(json!({"lsn":110,"wal_data":b64(b"z")})),
        &auth,
    )
    .unwrap();
    assert_eq!(sk.state().wal().gaps, vec![(106, 110)]);
}

#[test]
fn peers_keep_each_database_apart_and_inject_the_issue_8_faults() {
    let ps = Peer::start_on(Role::PageServer, 0, None).unwrap();
    let p = ps.port();
    let put = |db: &str, lsn: u64, byte: u8| {
        let r = call(
            p,
            "POST",
            "/api/v1/put_page",
            Some(json!({"space_id":5,"page_no":3,"lsn":lsn,"database_id":db,"page_data":b64(&[byte; 64])})),
            &[],
        )
        .unwrap();
        assert_eq!(r.0, 200);
    };
    let get = |db: &str, lsn: u64| {
        call(
            p,
            "POST",
            "/api/v1/get_page",
            Some(json!({"space_id":5,"page_no":3,"lsn":lsn,"database_id":db})),
            &[],
        )
        .unwrap()
    };
    put("aaaa", 100, 1);
    ps.state().generation += 1;
    put("bbbb", 50, 2);
    // Each database sees its own images, labelled with its id.
    let (s, b) = get("bbbb", 1000);
    assert_eq!(
        (s, b["page_lsn"].as_u64(), b["database_id"].as_str()),
        (200, Some(50), Some("bbbb"))
    );
    assert_eq!(get("cccc", 1000).0, 404);
    // Another database's images, labelled honestly or not.
    ps.faults().foreign_database_pages = true;
    let (_, b) = get("bbbb", 1000);
    assert_eq!(
        (b["page_lsn"].as_u64(), b["database_id"].as_str()),
        (Some(100), Some("aaaa"))
    );
    ps.faults().lie_about_database = true;
    assert_eq!(get("bbbb", 1000).1["database_id"], "bbbb");
    assert_eq!(ps.state().foreign_pages_served, 2);
    // A peer without the extension: one store, no label.
    {
        let mut f = ps.faults();
        *f = Default::default();
        f.ignore_identity = true;
    }
    put("aaaa", 70, 3);
    put("bbbb", 80, 4);
    let (_, b) = get("bbbb", 75);
    assert_eq!(
        (b["page_lsn"].as_u64(), b.get("database_id")),
        (Some(70), None)
    );
    // Another space's page; an oversized answer.
    *ps.faults() = Default::default();
    call(
        p,
        "POST",
        "/api/v1/put_page",
        Some(json!({"space_id":6,"page_no":3,"lsn":60,"database_id":"bbbb","page_data":b64(&[9; 64])})),
        &[],
    )
    .unwrap();
    ps.faults().other_space_pages = true;
    assert_eq!(get("bbbb", 1000).1["page_lsn"], 60);
    {
        let mut f = ps.faults();
        *f = Default::default();
        f.oversized_body = Some(100_000);
    }
    assert!(get("bbbb", 1000).1["padding"].as_str().unwrap().len() == 100_000);

    // The Safekeeper keeps one stream per database, can refuse gaps and
    // can pretend to hold another history.
    let sk = Peer::start_on(Role::Safekeeper, 0, None).unwrap();
    let q = sk.port();
    let wal = |db: &str, lsn: u64, data: &[u8]| {
        call(
            q,
            "POST",
            "/api/v1/stream_wal",
            Some(json!({"lsn":lsn,"wal_data":b64(data),"database_id":db})),
            &[],
        )
        .unwrap()
        .0
    };
    assert_eq!(wal("aaaa", 100, b"abcd"), 200);
    assert_eq!(wal("bbbb", 500, b"xy"), 200);
    let latest = |db: &str| {
        call(
            q,
            "GET",
            &format!("/api/v1/get_latest_lsn?database_id={db}"),
            None,
            &[],
        )
        .unwrap()
        .1["latest_lsn"]
            .as_u64()
    };
    assert_eq!((latest("aaaa"), latest("bbbb")), (Some(104), Some(502)));
    sk.faults().reject_gaps = true;
    assert_eq!(wal("aaaa", 110, b"z"), 400);
    assert_eq!(wal("aaaa", 104, b"e"), 200);
    sk.faults().foreign_history = Some(1000);
    assert_eq!(latest("aaaa"), Some(1105));
    assert_eq!(sk.state().streams["aaaa"].data, b"abcde");
}

#[test]
fn put_pages_stores_a_batch_all_or_nothing_and_can_be_refused() {
    let ps = Peer::start_on(Role::PageServer, 0, None).unwrap();
    let p = ps.port();
    let page = |no: u64, lsn: u64, byte: u8| json!({"space_id":3,"page_no":no,"lsn":lsn,"page_data":b64(&[byte; 16384])});
    let get = |no: u64| {
        call(
            p,
            "POST",
            "/api/v1/get_page",
            Some(json!({"space_id":3,"page_no":no,"lsn":10_000,"database_id":"d1"})),
            &[],
        )
        .unwrap()
    };
    let put = |pages: serde_json::Value| {
        call(
            p,
            "POST",
            "/api/v1/put_pages",
            Some(json!({"database_id":"d1","pages":pages})),
            &[],
        )
        .unwrap()
        .0
    };
    assert_eq!(put(json!([page(1, 100, 1), page(2, 200, 2)])), 200);
    let (s, body) = get(2);
    assert_eq!((s, body["page_lsn"].as_u64()), (200, Some(200)));
    assert_eq!(body["database_id"], "d1");
    assert_eq!(body["page_data"], b64(&[2; 16384]));
    // One bad image: nothing of the batch is stored.
    assert_eq!(
        put(json!([page(4, 400, 4), {"space_id":3,"page_no":5}])),
        400
    );
    assert_eq!(get(4).0, 404);
    assert_eq!(put(json!([])), 400);
    // Like a Page Server without the batch endpoint.
    ps.faults().no_put_pages = true;
    assert_eq!(put(json!([page(6, 600, 6)])), 404);
    assert_eq!(get(6).0, 404);
    assert_eq!(ps.state().images(), 2);
}
