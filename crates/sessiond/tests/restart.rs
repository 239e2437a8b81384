//! Durability of the real binary: what the server acknowledged survives `kill -9` under load, and
//! SIGTERM shuts down gracefully with exit code 0.
//!
//! HTTP is spoken by hand over `std::net::TcpStream` (one request per connection,
//! `Connection: close`) so that this test needs no HTTP client dependency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");

// ---------------------------------------------------------------------------------------------
// a minimal HTTP/1.1 client

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

/// One request on a fresh connection. An error means no complete response was received (a
/// truncated response is an error too, never a success).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpResp> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    stream.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
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
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> std::io::Result<HttpResp> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no complete response head in {} bytes", raw.len())))?;
    let head_text = std::str::from_utf8(&raw[..end]).map_err(|e| invalid(e.to_string()))?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = HttpResp {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if head || status == 204 || status == 304 {
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

/// A running `sessiond serve`; killed when dropped (also when a test panics).
struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
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
    /// Starts the server on a free port over `data_dir`; returns once it printed its address.
    fn start(data_dir: &Path) -> Server {
        let mut child = command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
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
        // Both pipes are drained for the life of the child so it never blocks on a full pipe.
        std::thread::spawn(move || {
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
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => panic!(
                "server printed no first line ({e:?}); stderr:\n{}",
                server.log()
            ),
        };
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .trim_end_matches('/')
            .to_owned();
        server.addr = addr;
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> HttpResp {
        let body = body.map(Value::to_string);
        http(&self.addr, method, path, &[], body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nserver log:\n{}", self.log()))
    }

    /// SIGKILL, and reap.
    fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().expect("SIGKILL");
        c.wait().expect("wait after SIGKILL");
    }

    /// Waits for the process to exit by itself, for at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        let pid = c.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait());
        });
        match rx.recv_timeout(timeout) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                // Do not leave the process behind (it is not reaped yet, so the pid is its own).
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                panic!(
                    "the server did not exit within {timeout:?}; stderr:\n{}",
                    self.log()
                );
            }
        }
    }
}

/// Every session the list returns, following cursors.
fn list_all(server: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/sessions?limit=100".to_owned(),
            Some(c) => format!("/v1/sessions?limit=100&cursor={c}"),
        };
        let r = server.request("GET", &path, None);
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let page = r.json();
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            // Cursors are URL-safe base64 without padding: no encoding needed.
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tests

#[test]
fn acknowledged_writes_survive_kill_9_under_load() {
    const CREATORS: usize = 16;
    const PATCHERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());

    // The sessions the patchers own.
    let patched: Vec<String> = (0..PATCHERS)
        .map(|i| {
            let r = server.request(
                "POST",
                "/v1/sessions",
                Some(&json!({"title": format!("p{i}")})),
            );
            assert_eq!(r.status, 201);
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();

    let killing = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut creators = Vec::new();
    for t in 0..CREATORS {
        let addr = server.addr.clone();
        let killing = killing.clone();
        let failures = failures.clone();
        creators.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            for n in 0.. {
                let body =
                    json!({"title": format!("t{t}-{n}"), "data": {"t": t, "n": n}}).to_string();
                match http(&addr, "POST", "/v1/sessions", &[], Some(&body)) {
                    Ok(r) if r.status == 201 => {
                        acked.push(r.json()["id"].as_str().unwrap().to_owned());
                    }
                    Ok(r) => {
                        failures.lock().unwrap().push(format!(
                            "create answered {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ));
                        break;
                    }
                    Err(e) => {
                        if !killing.load(Ordering::SeqCst) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("create failed before the kill: {e}"));
                        }
                        break;
                    }
                }
            }
            acked
        }));
    }
    let mut patchers = Vec::new();
    for id in patched.clone() {
        let addr = server.addr.clone();
        let killing = killing.clone();
        let failures = failures.clone();
        patchers.push(std::thread::spawn(move || {
            // (acknowledged version, the n it carries)
            let mut acked: (i64, i64) = (1, 0);
            let path = format!("/v1/sessions/{id}");
            for n in 1.. {
                let body = json!({"data": {"n": n}}).to_string();
                let tag = format!("\"{}\"", acked.0);
                match http(&addr, "PATCH", &path, &[("If-Match", &tag)], Some(&body)) {
                    Ok(r) if r.status == 200 => {
                        let v = r.json()["version"].as_i64().unwrap();
                        assert_eq!(v, acked.0 + 1);
                        acked = (v, n);
                    }
                    Ok(r) => {
                        failures.lock().unwrap().push(format!(
                            "patch answered {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ));
                        break;
                    }
                    Err(e) => {
                        if !killing.load(Ordering::SeqCst) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("patch failed before the kill: {e}"));
                        }
                        break;
                    }
                }
            }
            (id, acked)
        }));
    }

    // The load runs for a while (this is load duration, not synchronisation); then the process
    // is killed while requests are in flight: no worker has been told to stop.
    std::thread::sleep(Duration::from_millis(1500));
    killing.store(true, Ordering::SeqCst);
    let log = server.log();
    server.kill9();

    let mut acked: Vec<String> = Vec::new();
    for c in creators {
        acked.extend(c.join().unwrap());
    }
    let patch_acks: Vec<(String, (i64, i64))> =
        patchers.into_iter().map(|p| p.join().unwrap()).collect();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failures under load: {failures:#?}\nserver log:\n{log}"
    );
    assert!(
        acked.len() >= CREATORS,
        "too little load to prove anything: {} creates acknowledged",
        acked.len()
    );
    eprintln!(
        "acknowledged before kill -9: {} creates, patch versions {:?}",
        acked.len(),
        patch_acks.iter().map(|(_, (v, _))| *v).collect::<Vec<_>>()
    );
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice");

    // Restart on the same data dir.
    let server = Server::start(dir.path());
    let acked = Arc::new(acked);
    let missing = Arc::new(Mutex::new(Vec::new()));
    let checkers: Vec<_> = (0..8)
        .map(|k| {
            let acked = acked.clone();
            let missing = missing.clone();
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                for id in acked.iter().skip(k).step_by(8) {
                    let r = http(&addr, "GET", &format!("/v1/sessions/{id}"), &[], None)
                        .unwrap_or_else(|e| panic!("GET {id} after restart: {e}"));
                    if r.status != 200 {
                        missing.lock().unwrap().push(format!("{id}: {}", r.status));
                    }
                }
            })
        })
        .collect();
    for c in checkers {
        c.join().unwrap();
    }
    let missing = missing.lock().unwrap().clone();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged sessions lost after kill -9: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );

    // Counted by the list: every acknowledged create, plus at most one unacknowledged one in
    // flight per creator at the kill, plus the patchers' sessions.
    let listed = list_all(&server);
    let listed_ids: HashSet<String> = listed
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed_ids.len(),
        listed.len(),
        "the list repeated a session"
    );
    assert!(
        acked.iter().all(|id| listed_ids.contains(id)),
        "the list misses acknowledged sessions"
    );
    let creates = listed.len() - PATCHERS;
    assert!(
        creates >= acked.len() && creates <= acked.len() + CREATORS,
        "{creates} sessions listed for {} acknowledged creates",
        acked.len()
    );

    // Acknowledged patches survived: the version is the acknowledged one, or one more when a
    // patch was in flight at the kill (then its data is there with it, never half of it).
    for (id, (version, n)) in patch_acks {
        let r = server.request("GET", &format!("/v1/sessions/{id}"), None);
        assert_eq!(r.status, 200);
        let s = r.json();
        let v = s["version"].as_i64().unwrap();
        assert!(
            v == version || v == version + 1,
            "session {id}: version {v} after restart, {version} acknowledged"
        );
        assert_eq!(
            s["data"]["n"].as_i64().unwrap_or(0),
            n + (v - version),
            "{s}"
        );
        assert_eq!(r.header("etag"), Some(format!("\"{v}\"").as_str()));
        assert!(
            version > 1,
            "patcher on {id} never got a patch acknowledged"
        );
    }

    // And the restarted server takes writes.
    let r = server.request(
        "POST",
        "/v1/sessions",
        Some(&json!({"title": "after restart"})),
    );
    assert_eq!(r.status, 201);
}

#[test]
fn sigterm_shuts_down_gracefully_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let r = server.request(
        "POST",
        "/v1/sessions",
        Some(&json!({"externalId": "term-1", "data": {"x": 1}})),
    );
    assert_eq!(r.status, 201);
    let created = r.json();
    let r = server.request("GET", "/healthz", None);
    assert_eq!(r.status, 200);
    assert!(r.header("x-request-id").is_some());

    // An idle client connection (no request sent) must not hold the shutdown up.
    let idle = TcpStream::connect(&server.addr).unwrap();

    let started = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.pid().to_string())
        .status()
        .expect("run kill -TERM");
    assert!(status.success());
    let exit = server.wait_exit(Duration::from_secs(10));
    assert!(
        exit.success(),
        "exit status {exit:?} after SIGTERM; stderr:\n{}",
        server.log()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(idle);

    // Nothing was lost.
    let server = Server::start(dir.path());
    let r = server.request("GET", "/v1/sessions/term-1", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), created);
}
