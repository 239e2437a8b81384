//! A reader connected across a server restart loses nothing: the real binary is killed with
//! `kill -9` while SSE readers are connected, restarted on the same port and data dir, and the
//! readers resume with `Last-Event-ID` and see every seq exactly once, in order.
//!
//! HTTP is spoken by hand over `std::net::TcpStream` (as in `restart.rs`) so that this test needs
//! no HTTP client dependency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");
/// Generous: a debug build on a loaded machine; the happy path takes milliseconds.
const TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// a minimal HTTP/1.1 client (one request per connection)

#[derive(Debug)]
struct HttpResp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<HttpResp> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let _ = stream.shutdown(Shutdown::Both);
    parse_response(&raw)
}

fn parse_head(head_text: &str) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResp> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no complete response head in {} bytes", raw.len())))?;
    let head_text = std::str::from_utf8(&raw[..end]).map_err(|e| invalid(e.to_string()))?;
    let (status, headers) = parse_head(head_text)?;
    let mut resp = HttpResp {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if status == 204 || status == 304 {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        resp.body = dechunk(rest)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        if rest.len() < len {
            return Err(invalid(format!(
                "truncated body: {} of {len} bytes",
                rest.len()
            )));
        }
        resp.body = rest[..len].to_vec();
    } else {
        resp.body = rest.to_vec();
    }
    Ok(resp)
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|e| invalid(e.to_string()))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// an SSE reader over a raw connection

#[derive(Debug, Clone, PartialEq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

struct SseConn {
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Decoded body bytes not yet parsed into frames.
    pending: Vec<u8>,
}

impl SseConn {
    /// `GET path` with `Accept: text/event-stream` (and `Last-Event-ID`); asserts a 200 stream.
    fn open(addr: &str, path: &str, last_event_id: Option<i64>) -> SseConn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        );
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        (&stream).write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read the response head");
            assert!(
                n > 0,
                "the connection closed inside the response head: {head:?}"
            );
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let (status, headers) = parse_head(head.trim_end()).unwrap();
        assert_eq!(status, 200, "SSE {path} answered {status}: {head}");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
                .unwrap_or_default()
        };
        assert!(
            header("content-type").starts_with("text/event-stream"),
            "{head}"
        );
        SseConn {
            reader,
            chunked: header("transfer-encoding").contains("chunked"),
            pending: Vec::new(),
        }
    }

    fn parse_one(&mut self) -> Option<Frame> {
        loop {
            let end = self.pending.windows(2).position(|w| w == b"\n\n")?;
            let text = String::from_utf8(self.pending[..end].to_vec()).expect("UTF-8 frame");
            self.pending.drain(..end + 2);
            let mut frame = Frame {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut any = false;
            for line in text.split('\n') {
                if line.starts_with(':') {
                    continue;
                }
                any = true;
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "id" => frame.id = Some(value.to_owned()),
                    "event" => frame.event = Some(value.to_owned()),
                    "data" => {
                        if !frame.data.is_empty() {
                            frame.data.push('\n');
                        }
                        frame.data.push_str(value);
                    }
                    other => panic!("unexpected SSE field {other:?} in {text:?}"),
                }
            }
            if any {
                return Some(frame);
            }
        }
    }

    /// Reads more of the body into `pending`; `Ok(false)` at the clean end of the body.
    fn fill(&mut self) -> std::io::Result<bool> {
        if !self.chunked {
            let mut buf = [0u8; 8192];
            let n = self.reader.read(&mut buf)?;
            self.pending.extend_from_slice(&buf[..n]);
            return Ok(n > 0);
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            return Ok(false);
        }
        let mut chunk = vec![0u8; size + 2];
        self.reader.read_exact(&mut chunk)?;
        self.pending.extend_from_slice(&chunk[..size]);
        Ok(true)
    }

    /// The next event; `Ok(None)` when the server ended the stream cleanly; an error when the
    /// connection broke (a half-received frame is never returned).
    fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if let Some(f) = self.parse_one() {
                return Ok(Some(f));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }
}

/// Checks a record event and returns its (seq, id, data).
fn record(f: &Frame) -> (i64, String, Value) {
    assert_eq!(f.event.as_deref(), Some("record"), "{:?}", f.event);
    let r: Value = serde_json::from_str(&f.data).expect("record JSON");
    let seq = r["seq"].as_i64().expect("seq");
    assert_eq!(
        f.id.as_deref(),
        Some(seq.to_string().as_str()),
        "{:?}",
        f.id
    );
    (seq, r["id"].as_str().unwrap().to_owned(), r["data"].clone())
}

/// What a reader saw, in order.
#[derive(Default)]
struct Seen(Vec<(i64, String, Value)>);

impl Seen {
    fn last(&self) -> i64 {
        self.0.last().map_or(0, |r| r.0)
    }

    /// Accepts a record event, which must be the next seq.
    fn push(&mut self, f: &Frame) {
        let r = record(f);
        assert_eq!(
            r.0,
            self.last() + 1,
            "out of order or repeated: {} after {}",
            r.0,
            self.last()
        );
        self.0.push(r);
    }

    /// Reads records until `until` (inclusive), which must arrive before the connection ends.
    fn read_until(&mut self, conn: &mut SseConn, until: i64) {
        while self.last() < until {
            match conn.next() {
                Ok(Some(f)) => self.push(&f),
                other => panic!("stream ended at {} before {until}: {other:?}", self.last()),
            }
        }
    }

    fn assert_complete(&self, total: i64) {
        let seqs: Vec<i64> = self.0.iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
        for (seq, id, data) in &self.0 {
            assert_eq!(id, &format!("r{seq:03}"));
            assert_eq!(data, &json!({ "n": seq }));
        }
    }
}

/// The body of the batch holding records `n..=end`: ids `r001`…, data `{"n": seq}`.
fn batch(n: i64, end: i64) -> String {
    let records: Vec<Value> = (n..=end)
        .map(|i| json!({"id": format!("r{i:03}"), "data": {"n": i}}))
        .collect();
    json!({ "records": records }).to_string()
}

/// Appends records `from..=to` in batches of 10 (pausing `pause` between batches), asserting
/// each record lands on the seq its number says — also when a batch is a retry of one the
/// server committed without answering (then it is all duplicates, with the original seqs).
/// Returns the last record acknowledged; an error is a failed request, with how far it got.
fn append_range(
    addr: &str,
    session: &str,
    from: i64,
    to: i64,
    pause: Duration,
) -> Result<i64, (i64, std::io::Error)> {
    let p = format!("/v1/sessions/{session}/channels/in/records");
    let mut n = from;
    while n <= to {
        let end = (n + 9).min(to);
        let r = http(addr, "POST", &p, Some(&batch(n, end))).map_err(|e| (n - 1, e))?;
        assert!(
            r.status == 201 || r.status == 200,
            "append {n}..={end} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let body = r.json();
        assert_eq!(body["firstSeq"], n, "{body}");
        assert_eq!(body["lastSeq"], end, "{body}");
        let dups: Vec<bool> = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["duplicate"].as_bool().unwrap())
            .collect();
        // All or nothing: a retried batch is all duplicates (200) or all new (201).
        let all_dup = dups.iter().all(|d| *d);
        assert!(all_dup || dups.iter().all(|d| !d), "mixed batch {body}");
        assert_eq!(r.status == 200, all_dup, "{body}");
        n = end + 1;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    Ok(to)
}

// ---------------------------------------------------------------------------------------------
// the server process

/// The binary with no `SESSIOND_*` variables inherited.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SESSIOND_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A free loopback port (released again: the server binds it).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `sessiond serve`; killed when dropped (also when a test panics).
struct Server {
    child: Option<Child>,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    /// Starts the server on `127.0.0.1:port` over `data_dir`, retrying for a while when the
    /// port is not free yet (just after a kill).
    fn start(data_dir: &Path, port: u16) -> Server {
        let started = Instant::now();
        loop {
            match Self::try_start(data_dir, port) {
                Ok(s) => return s,
                Err(log) if started.elapsed() < TIMEOUT && log.contains("in use") => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(log) => panic!("the server did not start on port {port}; stderr:\n{log}"),
            }
        }
    }

    fn try_start(data_dir: &Path, port: u16) -> Result<Server, String> {
        let mut child = command()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessiond serve");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let drained = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = true;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if first {
                    first = false;
                    let _ = tx.send(line);
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            log,
        };
        match rx.recv_timeout(TIMEOUT) {
            Ok(line) => {
                let addr = line
                    .strip_prefix("listening on http://")
                    .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                    .trim()
                    .trim_end_matches('/')
                    .to_owned();
                assert_eq!(addr, format!("127.0.0.1:{port}"));
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                // Exited (or hung): reap it and hand back what it said.
                if let Some(mut c) = server.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                let _ = drained.join();
                let log = server.log();
                Err(log)
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> HttpResp {
        let body = body.map(Value::to_string);
        http(&self.addr, method, path, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nserver log:\n{}", self.log()))
    }

    /// Appends records `from..=to` in batches of 10, asserting each lands on its seq.
    fn append_range(&self, session: &str, from: i64, to: i64) {
        if let Err((n, e)) = append_range(&self.addr, session, from, to, Duration::ZERO) {
            panic!(
                "append {from}..={to} failed after {n}: {e}\nserver log:\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL, and reap.
    fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().expect("SIGKILL");
        c.wait().expect("wait after SIGKILL");
    }
}

// ---------------------------------------------------------------------------------------------
// the test

#[test]
fn sse_readers_resume_across_a_kill_9_restart_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port);
    let addr = server.addr.clone();

    let r = server.request("POST", "/v1/sessions", Some(&json!({})));
    assert_eq!(r.status, 201);
    let session = r.json()["id"].as_str().unwrap().to_owned();
    let stream_path = format!("/v1/sessions/{session}/channels/in/records");
    server.append_range(&session, 1, 100);

    // Reader A stays connected through the kill; reader B stops reading at 40 and is gone
    // before the kill (it will catch up from storage after the restart).
    let mut a = Seen::default();
    let mut conn_a = SseConn::open(&addr, &stream_path, None);
    a.read_until(&mut conn_a, 40);
    let mut b = Seen::default();
    let mut conn_b = SseConn::open(&addr, &stream_path, None);
    b.read_until(&mut conn_b, 40);
    drop(conn_b);

    // kill -9 in the middle of A's stream.
    server.kill9();
    // Whatever complete events A still receives from the dead connection are valid, in order;
    // then the connection breaks (never a clean end of the stream, nor a partial frame).
    loop {
        match conn_a.next() {
            Ok(Some(f)) => a.push(&f),
            Ok(None) => panic!("the stream ended cleanly after kill -9"),
            Err(_) => break,
        }
    }
    drop(conn_a);
    let a_before = a.last();
    assert!(
        (40..=100).contains(&a_before),
        "reader A saw up to {a_before}"
    );
    eprintln!("reader A saw 1..={a_before} before the connection broke");

    // Restart on the same port and data dir: everything acknowledged is there.
    let server = Server::start(dir.path(), port);
    assert_eq!(server.addr, addr);
    let page = server.request("GET", &format!("{stream_path}?after=0&limit=1000"), None);
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["lastSeq"], 100, "acknowledged records lost");

    // A reconnects first (so 101..=200 reach it live), then the appends, then B catches up.
    let mut conn_a = SseConn::open(&addr, &stream_path, Some(a_before));
    a.read_until(&mut conn_a, 100);
    server.append_range(&session, 101, 200);
    a.read_until(&mut conn_a, 200);
    let mut conn_b = SseConn::open(&addr, &stream_path, Some(b.last()));
    b.read_until(&mut conn_b, 200);

    // Closing the session ends both streams cleanly, with nothing after 200.
    let r = server.request(
        "POST",
        &format!("/v1/sessions/{session}/close"),
        Some(&json!({})),
    );
    assert_eq!(r.status, 200);
    for conn in [&mut conn_a, &mut conn_b] {
        let f = conn.next().expect("the closed event").expect("an event");
        assert_eq!(f.event.as_deref(), Some("closed"), "{f:?}");
        assert!(
            matches!(conn.next(), Ok(None)),
            "the stream did not end after closed"
        );
    }
    a.assert_complete(200);
    b.assert_complete(200);

    // A fresh reader resuming from any point after the restart gets the rest exactly once.
    let mut c = Seen::default();
    let mut conn_c = SseConn::open(&addr, &stream_path, None);
    c.read_until(&mut conn_c, 200);
    let f = conn_c.next().unwrap().unwrap();
    assert_eq!(f.event.as_deref(), Some("closed"));
    c.assert_complete(200);
}

/// The kill lands while records are being appended and streamed live: the reader is cut off
/// at an arbitrary point of the live stream and the writer in the middle of its batches (one
/// may be committed without an answer). After the restart the writer retries from its last
/// acknowledged record (exactly-once by id) and the reader resumes with `Last-Event-ID`.
#[test]
fn a_live_reader_cut_by_kill_9_mid_write_resumes_with_nothing_lost() {
    const TOTAL: i64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port);
    let addr = server.addr.clone();
    let r = server.request("POST", "/v1/sessions", Some(&json!({})));
    assert_eq!(r.status, 201);
    let session = r.json()["id"].as_str().unwrap().to_owned();
    let stream_path = format!("/v1/sessions/{session}/channels/in/records");
    server.append_range(&session, 1, 50);

    let mut a = Seen::default();
    let mut conn_a = SseConn::open(&addr, &stream_path, None);
    a.read_until(&mut conn_a, 50);
    // The writer runs until the kill stops it.
    let writer = {
        let addr = addr.clone();
        let session = session.clone();
        std::thread::spawn(move || {
            append_range(&addr, &session, 51, TOTAL, Duration::from_millis(1))
        })
    };
    // Read live for a while, then kill while both are mid-way.
    a.read_until(&mut conn_a, 150);
    server.kill9();
    let acked = match writer.join().unwrap() {
        Ok(to) => panic!("the writer finished all {to} records before the kill"),
        Err((acked, e)) => {
            eprintln!("writer: {acked} acknowledged, then {e}");
            acked
        }
    };
    loop {
        match conn_a.next() {
            Ok(Some(f)) => a.push(&f),
            Ok(None) => panic!("the stream ended cleanly after kill -9"),
            Err(_) => break,
        }
    }
    drop(conn_a);
    let a_before = a.last();
    eprintln!("reader: {a_before} received before the connection broke");
    // A reader never sees a record before it is committed; one batch may have been committed
    // without its answer reaching the writer.
    assert!(
        a_before >= 150 && a_before <= acked + 10,
        "reader saw {a_before}, writer had {acked} acknowledged"
    );

    let server = Server::start(dir.path(), port);
    let mut conn_a = SseConn::open(&addr, &stream_path, Some(a_before));
    // A reader that was not connected at all resumes from an earlier point.
    let mut b = Seen::default();
    b.read_until(&mut SseConn::open(&addr, &stream_path, None), 20);
    let mut conn_b = SseConn::open(&addr, &stream_path, Some(b.last()));
    // The writer retries from its last acknowledged record.
    append_range(&addr, &session, acked + 1, TOTAL, Duration::ZERO)
        .unwrap_or_else(|(n, e)| panic!("append after restart failed after {n}: {e}"));
    a.read_until(&mut conn_a, TOTAL);
    b.read_until(&mut conn_b, TOTAL);
    let r = server.request(
        "POST",
        &format!("/v1/sessions/{session}/close"),
        Some(&json!({})),
    );
    assert_eq!(r.status, 200);
    for conn in [&mut conn_a, &mut conn_b] {
        let f = conn.next().expect("the closed event").expect("an event");
        assert_eq!(f.event.as_deref(), Some("closed"), "{f:?}");
        assert!(
            matches!(conn.next(), Ok(None)),
            "the stream did not end after closed"
        );
    }
    a.assert_complete(TOTAL);
    b.assert_complete(TOTAL);
    let page = server.request(
        "GET",
        &format!("{stream_path}?after={}&limit=1", TOTAL - 1),
        None,
    );
    assert_eq!(page.json()["lastSeq"], TOTAL);
}
