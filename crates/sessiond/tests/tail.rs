//! End-to-end tests of `sessiond append|tail|channels|tokens`: a real `sessiond serve` child
//! process, driven by the real binary's client commands, including a `tail` that must survive
//! `kill -9` and a restart of the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");
/// Generous: a debug build on a loaded machine; the happy path takes milliseconds.
const TIMEOUT: Duration = Duration::from_secs(30);

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

/// Drains a pipe into a shared string for the life of the child, so it never blocks; the
/// thread ends when the pipe closes.
fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (log, thread)
}

/// Sends each stdout line, then `None` at EOF (the child exited or closed stdout).
fn lines(stdout: ChildStdout) -> mpsc::Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    rx
}

/// A running server; killed when dropped, even when the test panics.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `sessiond serve` on `127.0.0.1:port` (0: any free port) over `dir`.
    fn start(dir: &Path, port: u16) -> Server {
        let mut child = command()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessiond serve");
        let (log, _) = drain(child.stderr.take().unwrap());
        let stdout = lines(child.stdout.take().unwrap());
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        loop {
            match stdout.recv_timeout(TIMEOUT) {
                Ok(Some(line)) => {
                    if let Some(url) = listening_url(&line) {
                        server.url = url;
                        break;
                    }
                }
                other => panic!(
                    "server did not report `listening on …` ({other:?}); stderr:\n{}",
                    server.log.lock().unwrap()
                ),
            }
        }
        // Keep draining stdout so that the server never blocks on it.
        std::thread::spawn(move || while let Ok(Some(_)) = stdout.recv() {});
        server
    }

    /// `kill -9`: no graceful shutdown, no flush.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = command()
            .args(args)
            .args(["--url", &self.url])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_owned();
            // From a thread: a large input must not deadlock against the child's output.
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log.lock().unwrap()
        );
        stdout
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    /// Runs a command with `--json` that must succeed; returns its parsed stdout.
    fn json_with(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let args = [args, &["--json"]].concat();
        let out = self.ok_with(&args, stdin);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}):\n{out}"))
    }

    fn json(&self, args: &[&str]) -> Value {
        self.json_with(args, None)
    }

    /// Runs a command that must fail; returns its stderr.
    fn fail_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{args:?} should have failed; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !stderr.trim().is_empty(),
            "{args:?} failed without a message"
        );
        stderr
    }

    fn new_session(&self) -> String {
        self.json(&["sessions", "create"])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Starts `sessiond tail` with `args` against this server (the URL stays valid across a
    /// restart on the same port).
    fn tail(&self, args: &[&str]) -> Tail {
        let mut child = command()
            .arg("tail")
            .args(args)
            .args(["--url", &self.url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stderr, stderr_thread) = drain(child.stderr.take().unwrap());
        let stdout = lines(child.stdout.take().unwrap());
        Tail {
            child,
            stdout,
            stderr,
            stderr_thread: Some(stderr_thread),
        }
    }
}

fn listening_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split_whitespace().next()?.trim_end_matches('/');
    url.starts_with("http://").then(|| url.to_owned())
}

/// A running `sessiond tail`; killed when dropped.
struct Tail {
    child: Child,
    stdout: mpsc::Receiver<Option<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tail {
    fn line(&self) -> String {
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(Some(line)) => line,
            other => panic!(
                "tail printed no line ({other:?}); stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
        }
    }

    fn record(&self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Waits for stdout to end, then for the exit status; returns it with the stderr text.
    fn exit(mut self) -> (ExitStatus, String) {
        match self.stdout.recv_timeout(TIMEOUT) {
            Ok(None) => {}
            other => panic!(
                "tail did not end ({other:?}); stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
        }
        let status = self.child.wait().unwrap();
        // The child is gone, so its stderr pipe is closed and the drain ends.
        if let Some(t) = self.stderr_thread.take() {
            t.join().unwrap();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (status, stderr)
    }
}

fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

#[test]
fn append_single_and_stdin_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), 0);
    let id = s.new_session();

    let out = s.ok(&["append", &id, "in", r#"{"n":1}"#]);
    assert_eq!(out.trim(), "appended 1 record (seq 1)");
    let r = s.json(&["append", &id, "in", r#""two""#, "--id", "rec-2"]);
    assert_eq!(r["firstSeq"], 2);
    assert_eq!(r["records"][0]["id"], "rec-2");
    assert_eq!(r["records"][0]["duplicate"], false);
    // Exactly-once: the same id again appends nothing and names the original seq.
    let out = s.ok(&["append", &id, "in", r#""again""#, "--id", "rec-2"]);
    assert!(out.contains("already appended (seq 2)"), "{out}");

    // JSON lines: blank lines skipped, CRLF accepted, any JSON value is one record's data.
    let out = s.ok_with(
        &["append", &id, "in", "-"],
        Some("{\"n\":3}\n\n  \n[4]\r\n\"five\"\nnull"),
    );
    assert_eq!(out.trim(), "appended 4 records (seq 3..6)");
    // The data argument defaults to stdin.
    let out = s.ok_with(&["append", &id, "in"], Some("7\n"));
    assert_eq!(out.trim(), "appended 1 record (seq 7)");

    // A bad line is named; what precedes it is appended, nothing after it.
    let err = s.fail_with(
        &["append", &id, "in", "-"],
        Some("8\n\n{\"n\":9}\n{bad\n10\n"),
    );
    assert!(
        err.contains("line 4") && err.contains("not valid JSON"),
        "{err}"
    );
    assert!(
        err.contains("seq 8..9") && err.contains("nothing after"),
        "{err}"
    );
    let channels = s.json(&["channels", &id]);
    let inch = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "in")
        .unwrap_or_else(|| panic!("no in channel in {channels}"));
    assert_eq!(inch["lastSeq"], 9);
    assert_eq!(inch["recordCount"], 9);
    let err = s.fail_with(&["append", &id, "in", "-"], Some("{bad\n"));
    assert!(
        err.contains("line 1") && err.contains("nothing was appended"),
        "{err}"
    );

    // More than one batch: --json prints every answer, each of at most 500 records.
    let input: String = (1..=1200).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let answers = s.json_with(&["append", &id, "bulk", "-"], Some(&input));
    let answers = answers.as_array().unwrap();
    assert!(answers.len() >= 3, "{} batches", answers.len());
    let mut next = 1;
    for a in answers {
        let records = a["records"].as_array().unwrap();
        assert!(records.len() <= 500, "a batch of {}", records.len());
        assert_eq!(a["firstSeq"], next);
        next += records.len() as u64;
        assert_eq!(a["lastSeq"], next - 1);
    }
    assert_eq!(next, 1201);

    let table = s.ok(&["channels", &id]);
    for want in ["events", "in", "bulk", "1200", "lastSeq"] {
        assert!(table.contains(want), "{want}: {table}");
    }

    // Argument errors name what is wrong.
    let err = s.fail_with(&["append", &id, "in", "{bad"], None);
    assert!(err.contains("JSON"), "{err}");
    let err = s.fail_with(&["append", &id, "in", "-", "--id", "x"], Some("1\n"));
    assert!(err.contains("--id"), "{err}");
    let err = s.fail_with(&["append", &id, "events", "1"], None);
    assert!(err.contains("403"), "{err}");
}

#[test]
fn tail_prints_records_live_and_exits_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), 0);
    let id = s.new_session();
    s.ok_with(&["append", &id, "in", "-"], Some("{\"n\":1}\n[2]\n"));

    let tail = s.tail(&[&id, "--channel", "in", "--after", "0"]);
    let first = tail.line();
    let fields: Vec<&str> = first.split("  ").collect();
    assert_eq!(fields.len(), 3, "{first}");
    assert_eq!(fields[0], "1");
    assert!(
        fields[1].ends_with('Z') && fields[1].contains('T'),
        "{first}"
    );
    assert_eq!(fields[2], r#"{"n":1}"#);
    assert!(tail.line().ends_with("  [2]"));
    // Live: appended after tail caught up.
    s.ok(&["append", &id, "in", r#"{"live":true}"#]);
    assert!(tail.line().starts_with("3  "));
    s.ok(&["sessions", "close", &id]);
    let (status, stderr) = tail.exit();
    assert!(status.success(), "{status}; stderr:\n{stderr}");

    // A closed session: every record after --after, then exit 0. The default channel is
    // `events`, the session's audit history.
    let tail = s.tail(&[&id, "--json", "--channel", "in", "--after", "1"]);
    assert_eq!(seq(&tail.record()), 2);
    assert_eq!(tail.record()["data"]["live"], true);
    let (status, _) = tail.exit();
    assert!(status.success());
    let tail = s.tail(&[&id, "--json"]);
    assert_eq!(tail.record()["data"]["type"], "session.created");
    assert_eq!(tail.record()["data"]["type"], "session.closed");
    let (status, _) = tail.exit();
    assert!(status.success());
}

#[test]
fn tail_fails_on_delete_and_on_a_missing_session() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), 0);
    let id = s.new_session();
    s.ok(&["append", &id, "in", "1"]);
    let tail = s.tail(&[&id, "--channel", "in", "--json"]);
    assert_eq!(seq(&tail.record()), 1);
    s.ok(&["sessions", "delete", &id]);
    let (status, stderr) = tail.exit();
    assert!(!status.success());
    assert!(stderr.contains("deleted"), "{stderr}");

    // 404 is final: no retrying forever.
    let tail = s.tail(&[&id]);
    let (status, stderr) = tail.exit();
    assert!(!status.success());
    assert!(stderr.contains("session_not_found"), "{stderr}");
    assert!(!stderr.contains("reconnecting"), "{stderr}");
}

#[test]
fn session_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), 0);
    let id = s.new_session();
    let t = s.json(&[
        "tokens", "create", &id, "--scope", "read", "--scope", "write", "--ttl", "60",
    ]);
    let token = t["token"].as_str().unwrap();
    assert_eq!(
        t["scopes"],
        serde_json::json!([
            format!("read:sessions:{id}"),
            format!("write:sessions:{id}")
        ])
    );
    assert!(t["expiresAt"].is_string());
    // `write` opens the `in` channel, nothing else.
    s.ok(&["append", &id, "in", "1", "--key", token]);
    let err = s.fail_with(&["append", &id, "out", "1", "--key", token], None);
    assert!(err.contains("forbidden"), "{err}");
    // `read` opens reading.
    let channels = s.json(&["channels", &id, "--key", token]);
    assert!(channels
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "in"));

    let out = s.ok(&["tokens", "create", &id]);
    assert!(
        out.contains("Token:") && out.contains(&format!("read:sessions:{id}")),
        "{out}"
    );
    assert!(!out.contains("write:"), "{out}");
    let err = s.fail_with(&["tokens", "create", &id, "--scope", "admin"], None);
    assert!(err.contains("--scope"), "{err}");
}

#[test]
fn tail_follows_live_and_resumes_after_the_server_restarts() {
    // A fixed port, so that the restarted server is where `tail` keeps reconnecting.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), port);
    let id = s.new_session();

    let tail = s.tail(&[&id, "--channel", "in", "--json"]);
    for i in 1..=3 {
        s.ok(&["append", &id, "in", &format!(r#"{{"i":{i}}}"#)]);
    }
    let mut got: Vec<u64> = (0..3).map(|_| seq(&tail.record())).collect();
    assert_eq!(got, [1, 2, 3]);

    s.kill9();
    let s = Server::start(dir.path(), port);
    for i in 4..=6 {
        s.ok(&["append", &id, "in", &format!(r#"{{"i":{i}}}"#)]);
    }
    for _ in 0..3 {
        let r = tail.record();
        assert_eq!(r["data"]["i"], seq(&r));
        got.push(seq(&r));
    }
    assert_eq!(
        got,
        [1, 2, 3, 4, 5, 6],
        "each record exactly once, in order"
    );

    s.ok(&["sessions", "close", &id]);
    let (status, stderr) = tail.exit();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("reconnecting") && stderr.contains("(after seq 3)"),
        "{stderr}"
    );
}
