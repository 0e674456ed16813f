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
    assert_eq!(sk.state().wal_gaps, vec![(106, 110)]);
}
