//! Reference Page Server and Safekeeper: the HTTP/1.1 + JSON API of the
//! control plane (docs/page-server-protocol.md), in process, with fault
//! injection. The e2e tests run the patched MariaDB against these; the
//! `reference_peers` example serves them standalone for manual runs and
//! benchmarks. They listen on 127.0.0.1 only.
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
    /// Answer every request with this status (500 etc.).
    pub error_status: Option<u16>,
    /// Sleep this long before answering.
    pub delay: Option<Duration>,
}

/// What the peer has seen and stored.
#[derive(Debug, Default)]
pub struct State {
    /// (space, page) -> page LSN -> image
    pub pages: HashMap<(u64, u64), BTreeMap<u64, Vec<u8>>>,
    /// The Safekeeper's contiguous copy of the redo stream.
    pub wal_start: Option<u64>,
    pub wal: Vec<u8>,
    /// Ranges the compute skipped (lsn jumped beyond the end).
    pub wal_gaps: Vec<(u64, u64)>,
    pub requests: BTreeMap<String, u64>,
    pub pages_served: u64,
    pub pages_not_found: u64,
}

impl State {
    pub fn wal_end(&self) -> Option<u64> {
        self.wal_start.map(|s| s + self.wal.len() as u64)
    }
    pub fn count(&self, endpoint: &str) -> u64 {
        self.requests.get(endpoint).copied().unwrap_or(0)
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
            thread::sleep(d);
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
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        writer.write_all(&body)?;
        writer.flush()?;
        if close || !shared.running.load(Ordering::SeqCst) {
            return Ok(());
        }
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
        "get_page" | "put_page" | "stream_wal" => "POST",
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
    let mut st = shared.state.lock().unwrap();
    match (shared.role, endpoint.as_str()) {
        (_, "ping") => (200, json!({"status": "ok", "version": "1.0.0"})),
        (Role::PageServer, "get_page") => {
            let (Some(space), Some(page), Some(lsn)) =
                (num("space_id"), num("page_no"), num("lsn"))
            else {
                return error(400, "space_id, page_no and lsn are required");
            };
            let versions = st.pages.get(&(space, page));
            let found = versions.and_then(|v| {
                if faults.stale_pages {
                    v.iter().next()
                } else {
                    v.range(..=lsn).next_back()
                }
            });
            match found.map(|(l, d)| (*l, d.clone())) {
                Some((page_lsn, mut data)) => {
                    if faults.corrupt_pages && data.len() > 100 {
                        data[100] ^= 0x5a;
                    }
                    st.pages_served += 1;
                    (
                        200,
                        json!({"status": "success", "page_data": B64.encode(&data), "page_lsn": page_lsn}),
                    )
                }
                None => {
                    st.pages_not_found += 1;
                    error(404, format!("Page not found: space={space} page={page}"))
                }
            }
        }
        (Role::PageServer, "put_page") => {
            let (Some(space), Some(page), Some(lsn)) =
                (num("space_id"), num("page_no"), num("lsn"))
            else {
                return error(400, "space_id, page_no and lsn are required");
            };
            let Some(Ok(data)) = body["page_data"].as_str().map(|s| B64.decode(s)) else {
                return error(400, "page_data must be base64");
            };
            st.pages.entry((space, page)).or_default().insert(lsn, data);
            (200, json!({"status": "success"}))
        }
        (_, "stream_wal") => {
            let Some(lsn) = num("lsn") else {
                return error(400, "lsn is required");
            };
            let Some(Ok(data)) = body["wal_data"].as_str().map(|s| B64.decode(s)) else {
                return error(400, "wal_data must be base64");
            };
            let end = match st.wal_end() {
                None => {
                    st.wal_start = Some(lsn);
                    lsn
                }
                Some(e) => e,
            };
            if lsn > end {
                // The compute reported a gap: record it and continue from here.
                st.wal_gaps.push((end, lsn));
                let gap = (lsn - end) as usize;
                st.wal.extend(std::iter::repeat_n(0, gap));
            }
            let skip = (end.max(lsn) - lsn) as usize;
            if skip < data.len() {
                st.wal.extend_from_slice(&data[skip..]);
            }
            let applied = st.wal_end().unwrap_or(lsn);
            (
                200,
                json!({"status": "success", "last_applied_lsn": applied}),
            )
        }
        (Role::Safekeeper, "get_latest_lsn") => match st.wal_end() {
            Some(l) => (200, json!({"status": "success", "latest_lsn": l})),
            None => error(404, "no WAL received yet"),
        },
        (Role::Safekeeper, "get_wal") => {
            let from: u64 = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("lsn="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match (st.wal_start, st.wal_end()) {
                (Some(s), Some(e)) if from >= s && from <= e => {
                    let data = &st.wal[(from - s) as usize..];
                    (
                        200,
                        json!({"status": "success", "lsn": from, "wal_data": B64.encode(data)}),
                    )
                }
                _ => error(404, format!("no WAL at lsn {from}")),
            }
        }
        (Role::Safekeeper, "metrics") => (
            200,
            json!({"status": "success", "wal_start": st.wal_start, "latest_lsn": st.wal_end(), "gaps": st.wal_gaps.len(), "requests": st.requests}),
        ),
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
