//! Reference Page Server and Safekeeper: the HTTP/1.1 + JSON API of the
//! control plane (docs/page-server-protocol.md), in process, with fault
//! injection. The e2e tests run the patched MariaDB against these; the
//! `reference_peers` example serves them standalone for manual runs and
//! benchmarks. They listen on 127.0.0.1 only.
//!
//! Both peers implement the database identity extension: page images and
//! redo are kept per `database_id` (requests without one share the
//! database ""), and `get_page` echoes the identity of the image it
//! serves. `Faults::ignore_identity` turns that off (a peer without the
//! extension: one store for every database, no echo).
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Faults a test can switch on at any time.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Flip a byte in every served page (the checksum must catch it).
    pub corrupt_pages: bool,
    /// Serve the oldest stored version instead of the newest eligible one.
    pub stale_pages: bool,
    /// Serve the image of the same page number in another tablespace.
    pub other_space_pages: bool,
    /// Serve only images of previous databases: another `database_id`, or
    /// an earlier `State::generation` (for computes that send no
    /// identity). They keep their own label unless `lie_about_database`.
    pub foreign_database_pages: bool,
    /// Echo the requested `database_id` whatever image is served.
    pub lie_about_database: bool,
    /// Behave like a peer without the identity extension: one store for
    /// every database, no `database_id` in answers.
    pub ignore_identity: bool,
    /// Answer every request with this status (500 etc.).
    pub error_status: Option<u16>,
    /// Sleep this long before answering.
    pub delay: Option<Duration>,
    /// Sleep this long before answering `get_page` only.
    pub get_page_delay: Option<Duration>,
    /// Pad every `get_page` answer with this many bytes of junk.
    pub oversized_body: Option<usize>,
    /// Frame `get_page` answers with `Transfer-Encoding: chunked` (in two
    /// chunks) instead of `Content-Length`.
    pub chunked_get_page: bool,
    /// With `chunked_get_page`: end each chunk's data with two bytes that
    /// are not CRLF (broken framing a client must refuse).
    pub bad_chunk_terminator: bool,
    /// Answer `put_pages` with 404, like a Page Server without the batch
    /// endpoint.
    pub no_put_pages: bool,
    /// Safekeeper: reject (400) a chunk that starts after its end.
    pub reject_gaps: bool,
    /// Safekeeper: report `get_latest_lsn` this far beyond its real end
    /// (a copy of the log from another history).
    pub foreign_history: Option<u64>,
}

/// A stored page image.
#[derive(Clone, Debug)]
pub struct Image {
    pub data: Vec<u8>,
    /// The `database_id` it was pushed with ("" when none).
    pub database: String,
    /// `State::generation` when it was pushed.
    pub generation: u64,
}

/// One database's copy of the redo stream at the Safekeeper.
#[derive(Clone, Debug, Default)]
pub struct Wal {
    pub start: Option<u64>,
    pub data: Vec<u8>,
    /// Ranges the compute skipped (lsn jumped beyond the end).
    pub gaps: Vec<(u64, u64)>,
}

impl Wal {
    pub fn end(&self) -> Option<u64> {
        self.start.map(|s| s + self.data.len() as u64)
    }
}

/// What the peer has seen and stored.
#[derive(Debug, Default)]
pub struct State {
    /// (database_id, space, page) -> page LSN -> image; with
    /// `ignore_identity`, database_id is "" for every image.
    pub pages: HashMap<(String, u64, u64), BTreeMap<u64, Image>>,
    /// The Safekeeper's contiguous copies of the redo stream, by database.
    pub streams: BTreeMap<String, Wal>,
    /// The database of the last `stream_wal` or `get_latest_lsn`.
    pub current: String,
    /// A label a test raises when it re-creates a database, so that
    /// images of the previous one are known even without identities.
    pub generation: u64,
    pub requests: BTreeMap<String, u64>,
    /// TCP connections accepted.
    pub connections: u64,
    pub pages_served: u64,
    /// Served images of another database or an earlier generation.
    pub foreign_pages_served: u64,
    pub pages_not_found: u64,
    /// The `database_id` values seen, by endpoint.
    pub identities: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl State {
    /// The redo stream of the current database.
    pub fn wal(&self) -> Wal {
        self.streams.get(&self.current).cloned().unwrap_or_default()
    }
    pub fn wal_end(&self) -> Option<u64> {
        self.streams.get(&self.current).and_then(Wal::end)
    }
    pub fn count(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
    }
    /// Number of stored page images.
    pub fn images(&self) -> usize {
        self.pages.values().map(BTreeMap::len).sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    PageServer,
    Safekeeper,
}

struct Shared {
    role: Role,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    api_key: Option<String>,
    running: AtomicBool,
}

/// A running peer. `stop` makes it refuse connections (as if down);
/// `start` brings it back on the same port with its state intact.
pub struct Peer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Peer {
    /// Starts a peer on 127.0.0.1 (port 0: any free port).
    pub fn start_on(role: Role, port: u16, api_key: Option<&str>) -> io::Result<Peer> {
        let shared = Arc::new(Shared {
            role,
            state: Mutex::new(State::default()),
            faults: Mutex::new(Faults::default()),
            api_key: api_key.map(String::from),
            running: AtomicBool::new(false),
        });
        let mut peer = Peer {
            shared,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            acceptor: None,
        };
        peer.start()?;
        Ok(peer)
    }

    pub fn start(&mut self) -> io::Result<()> {
        if self.acceptor.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)?;
        self.addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        self.shared.running.store(true, Ordering::SeqCst);
        let shared = self.shared.clone();
        self.acceptor = Some(thread::spawn(move || accept_loop(listener, shared)));
        Ok(())
    }

    /// Closes the listener and every connection: the peer is down.
    pub fn stop(&mut self) {
        self.shared.running.store(false, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = Vec::new();
    while shared.running.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.state.lock().unwrap().connections += 1;
                let shared = shared.clone();
                conns.push(thread::spawn(move || {
                    let _ = serve(stream, &shared);
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
        conns.retain(|h| !h.is_finished());
    }
    for h in conns {
        let _ = h.join();
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Serves one keep-alive connection until the client closes it or the peer
/// stops.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // Short read timeouts so a stopped peer drops its connections promptly.
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader, shared)? {
            Some(r) => r,
            None => return Ok(()),
        };
        let faults = shared.faults.lock().unwrap().clone();
        if let Some(d) = faults.delay {
            nap(shared, d);
        }
        if let Some(d) = faults.get_page_delay
            && req.path == "/api/v1/get_page"
        {
            nap(shared, d);
        }
        let (status, body) = match faults.error_status {
            Some(s) => (s, json!({"status": "error", "error": "injected fault"})),
            None => handle(shared, &req, &faults),
        };
        let body = serde_json::to_vec(&body)?;
        let close = req
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        write!(
            writer,
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n{}",
            reason(status),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        if faults.chunked_get_page && req.path == "/api/v1/get_page" {
            writer.write_all(b"Transfer-Encoding: chunked\r\n\r\n")?;
            let end: &[u8] = if faults.bad_chunk_terminator {
                b"XX"
            } else {
                b"\r\n"
            };
            let (a, b) = body.split_at(body.len() / 2);
            for chunk in [a, b] {
                write!(writer, "{:x}\r\n", chunk.len())?;
                writer.write_all(chunk)?;
                writer.write_all(end)?;
            }
            writer.write_all(b"0\r\n\r\n")?;
        } else {
            write!(writer, "Content-Length: {}\r\n\r\n", body.len())?;
            writer.write_all(&body)?;
        }
        writer.flush()?;
        if close || !shared.running.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

/// Sleeps, but returns early when the peer is stopped (so a long delay
/// never holds up `stop` or `drop`).
fn nap(shared: &Shared, d: Duration) {
    let until = std::time::Instant::now() + d;
    while shared.running.load(Ordering::SeqCst) {
        let now = std::time::Instant::now();
        if now >= until {
            return;
        }
        thread::sleep((until - now).min(Duration::from_millis(10)));
    }
}

fn read_request(r: &mut BufReader<TcpStream>, shared: &Shared) -> io::Result<Option<Request>> {
    let mut line = String::new();
    loop {
        match r.read_line(&mut line) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if is_timeout(&e) => {
                if !shared.running.load(Ordering::SeqCst) {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (path, query) = target
        .split_once('?')
        .map(|(p, q)| (p.to_string(), q.to_string()))
        .unwrap_or((target, String::new()));
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        read_line_blocking(r, &mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut body[got..]) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Request {
        method,
        path,
        query,
        headers,
        body,
    }))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn read_line_blocking(r: &mut BufReader<TcpStream>, buf: &mut String) -> io::Result<()> {
    loop {
        match r.read_line(buf) {
            Ok(_) => return Ok(()),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn error(status: u16, msg: impl Into<String>) -> (u16, Value) {
    (status, json!({"status": "error", "error": msg.into()}))
}

fn handle(shared: &Shared, req: &Request, faults: &Faults) -> (u16, Value) {
    let endpoint = req.path.trim_start_matches("/api/v1/").to_string();
    shared
        .state
        .lock()
        .unwrap()
        .requests
        .entry(endpoint.clone())
        .and_modify(|n| *n += 1)
        .or_insert(1);
    let expected = match endpoint.as_str() {
        "ping" | "get_latest_lsn" | "get_wal" | "metrics" => "GET",
        "put_pages" if faults.no_put_pages => {
            return error(404, format!("no such endpoint: {}", req.path));
        }
        "get_page" | "put_page" | "put_pages" | "stream_wal" => "POST",
        _ => return error(404, format!("no such endpoint: {}", req.path)),
    };
    if req.method != expected {
        return error(405, format!("{} needs {expected}", req.path));
    }
    if shared.role == Role::Safekeeper
        && let Some(key) = &shared.api_key
    {
        let bearer = req
            .headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        let header = req.headers.get("x-api-key").map(String::as_str);
        if bearer != Some(key.as_str()) && header != Some(key.as_str()) {
            return error(401, "missing or wrong API key");
        }
    }
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return error(400, format!("bad JSON: {e}")),
        }
    };
    let num = |k: &str| body[k].as_u64();
    // The database identity extension: from the body, or the query string
    // of a GET.
    let database: String = body["database_id"]
        .as_str()
        .map(String::from)
        .or_else(|| {
            req.query
                .split('&')
                .find_map(|kv| kv.strip_prefix("database_id="))
                .map(String::from)
        })
        .unwrap_or_default();
    let mut st = shared.state.lock().unwrap();
    if !database.is_empty() {
        st.identities
            .entry(endpoint.clone())
            .or_default()
            .insert(database.clone());
    }
    let db = if faults.ignore_identity {
        String::new()
    } else {
        database.clone()
    };
    match (shared.role, endpoint.as_str()) {
        (_, "ping") => (200, json!({"status": "ok", "version": "1.0.0"})),
        (Role::PageServer, "get_page") => {
            let (Some(space), Some(page), Some(lsn)) =
                (num("space_id"), num("page_no"), num("lsn"))
            else {
                return error(400, "space_id, page_no and lsn are required");
            };
            let generation = st.generation;
            let foreign = |i: &Image| i.database != database || i.generation != generation;
            // Candidates: (lsn, image) of this page, from the stores the
            // fault mode allows.
            let mut candidates: Vec<(u64, Image)> = Vec::new();
            for ((d, sp, pg), versions) in &st.pages {
                let same_page = *sp == space && *pg == page;
                let other_space = *sp != space && *pg == page;
                let page_ok = if faults.other_space_pages {
                    other_space
                } else {
                    same_page
                };
                let store_ok = faults.ignore_identity || faults.foreign_database_pages || *d == db;
                if page_ok && store_ok {
                    for (l, i) in versions {
                        if !faults.foreign_database_pages || foreign(i) {
                            candidates.push((*l, i.clone()));
                        }
                    }
                }
            }
            candidates.sort_by_key(|(l, _)| *l);
            let found = if faults.stale_pages {
                candidates.first()
            } else if faults.foreign_database_pages {
                candidates
                    .iter()
                    .rev()
                    .find(|(l, _)| *l <= lsn)
                    .or(candidates.last())
            } else {
                candidates.iter().rev().find(|(l, _)| *l <= lsn)
            };
            match found.cloned() {
                Some((page_lsn, image)) => {
                    let mut data = image.data.clone();
                    if faults.corrupt_pages && data.len() > 100 {
                        data[100] ^= 0x5a;
                    }
                    st.pages_served += 1;
                    if foreign(&image) {
                        st.foreign_pages_served += 1;
                    }
                    let mut answer = json!({"status": "success", "page_data": B64.encode(&data), "page_lsn": page_lsn});
                    if !faults.ignore_identity {
                        let label = if faults.lie_about_database {
                            database.clone()
                        } else {
                            image.database.clone()
                        };
                        if !label.is_empty() {
                            answer["database_id"] = json!(label);
                        }
                    }
                    if let Some(n) = faults.oversized_body {
                        answer["padding"] = json!("x".repeat(n));
                    }
                    (200, answer)
                }
                None => {
                    st.pages_not_found += 1;
                    error(404, format!("Page not found: space={space} page={page}"))
                }
            }
        }
        (Role::PageServer, "put_page" | "put_pages") => {
            // put_pages: {"database_id", "pages": [put_page bodies without
            // database_id]}; stored all or nothing.
            let one = [body.clone()];
            let pages = match body["pages"].as_array() {
                Some(p) if endpoint == "put_pages" && !p.is_empty() => p.as_slice(),
                _ if endpoint == "put_pages" => {
                    return error(400, "pages must be a non-empty array");
                }
                _ => &one,
            };
            let mut images = Vec::with_capacity(pages.len());
            for p in pages {
                let n = |k: &str| p[k].as_u64();
                let (Some(space), Some(page), Some(lsn)) = (n("space_id"), n("page_no"), n("lsn"))
                else {
                    return error(400, "space_id, page_no and lsn are required");
                };
                let Some(Ok(data)) = p["page_data"].as_str().map(|s| B64.decode(s)) else {
                    return error(400, "page_data must be base64");
                };
                images.push((space, page, lsn, data));
            }
            let generation = st.generation;
            for (space, page, lsn, data) in images {
                let image = Image {
                    data,
                    database: database.clone(),
                    generation,
                };
                st.pages
                    .entry((db.clone(), space, page))
                    .or_default()
                    .insert(lsn, image);
            }
            (200, json!({"status": "success"}))
        }
        (_, "stream_wal") => {
            let Some(lsn) = num("lsn") else {
                return error(400, "lsn is required");
            };
            let Some(Ok(data)) = body["wal_data"].as_str().map(|s| B64.decode(s)) else {
                return error(400, "wal_data must be base64");
            };
            st.current = db.clone();
            let wal = st.streams.entry(db).or_default();
            let end = match wal.end() {
                None => {
                    wal.start = Some(lsn);
                    lsn
                }
                Some(e) => e,
            };
            if lsn > end {
                if faults.reject_gaps {
                    return error(
                        400,
                        format!("lsn {lsn} is beyond the end of the log at {end}"),
                    );
                }
                // The compute reported a gap: record it and continue from here.
                wal.gaps.push((end, lsn));
                let gap = (lsn - end) as usize;
                wal.data.extend(std::iter::repeat_n(0, gap));
            }
            let skip = (end.max(lsn) - lsn) as usize;
            if skip < data.len() {
                wal.data.extend_from_slice(&data[skip..]);
            }
            let applied = wal.end().unwrap_or(lsn);
            (
                200,
                json!({"status": "success", "last_applied_lsn": applied}),
            )
        }
        (Role::Safekeeper, "get_latest_lsn") => {
            st.current = db.clone();
            match st.streams.get(&db).and_then(Wal::end) {
                Some(l) => (
                    200,
                    json!({"status": "success", "latest_lsn": l + faults.foreign_history.unwrap_or(0)}),
                ),
                None => error(404, "no WAL received yet"),
            }
        }
        (Role::Safekeeper, "get_wal") => {
            let from: u64 = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("lsn="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let wal = st.streams.get(&db).cloned().unwrap_or_default();
            match (wal.start, wal.end()) {
                (Some(s), Some(e)) if from >= s && from <= e => {
                    let data = &wal.data[(from - s) as usize..];
                    (
                        200,
                        json!({"status": "success", "lsn": from, "wal_data": B64.encode(data)}),
                    )
                }
                _ => error(404, format!("no WAL at lsn {from}")),
            }
        }
        (Role::Safekeeper, "metrics") => {
            let wal = st.streams.get(&db).cloned().unwrap_or_default();
            (
                200,
                json!({"status": "success", "wal_start": wal.start, "latest_lsn": wal.end(), "gaps": wal.gaps.len(), "databases": st.streams.len(), "requests": st.requests}),
            )
        }
        _ => error(404, format!("{} is not served by this peer", req.path)),
    }
}

/// A minimal HTTP client for tests of the peers themselves.
pub fn call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(&body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json_body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((
        status,
        serde_json::from_str(json_body).unwrap_or(Value::Null),
    ))
}
