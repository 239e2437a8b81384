//! End-to-end tests of `sessiond worker`: a real `sessiond serve` child process, jobs created
//! with the real binary, and a worker child running shell commands for them; progress is
//! followed on the session's `events` channel with `sessiond tail`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");
/// Generous: a debug build on a loaded machine; the happy path takes well under a second.
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

/// Drains a pipe into a shared string for the life of the child, so it never blocks.
fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

/// Sends each stdout line, then `None` at EOF.
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

fn listening_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split_whitespace().next()?.trim_end_matches('/');
    url.starts_with("http://").then(|| url.to_owned())
}

/// Polls `cond` until it holds or `TIMEOUT` passes.
fn eventually(what: &str, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM failed");
}

/// A child process (`serve`, `worker`, `tail`); killed when dropped, even when a test panics.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Option<mpsc::Receiver<Option<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessiond");
        let stderr = drain(child.stderr.take().unwrap());
        let stdout = Some(lines(child.stdout.take().unwrap()));
        Proc {
            child,
            stderr,
            stdout,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

struct Server {
    proc: Proc,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::start_at(dir.path(), 0);
        s._dir = Some(dir);
        s
    }

    /// Starts `sessiond serve` on `127.0.0.1:port` (0: any free port) over `dir`.
    fn start_at(dir: &Path, port: u16) -> Server {
        let mut proc = Proc::spawn(
            command()
                .args([
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--data-dir",
                ])
                .arg(dir),
        );
        let stdout = proc.stdout.take().unwrap();
        let url = loop {
            match stdout.recv_timeout(TIMEOUT) {
                Ok(Some(line)) => {
                    if let Some(url) = listening_url(&line) {
                        break url;
                    }
                }
                other => panic!(
                    "server did not report `listening on …` ({other:?}); stderr:\n{}",
                    proc.log()
                ),
            }
        };
        // Keep draining stdout so that the server never blocks on it.
        std::thread::spawn(move || while let Ok(Some(_)) = stdout.recv() {});
        Server {
            proc,
            url,
            _dir: None,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        command()
            .args(args)
            .args(["--url", &self.url])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a command with `--json` that must succeed; returns its parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let args = [args, &["--json"]].concat();
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.proc.log()
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}):\n{stdout}"))
    }

    fn new_session(&self) -> String {
        str_of(&self.json(&["sessions", "create"]), "id").to_owned()
    }

    fn create_job(&self, session: &str, kind: &str, input: Value, extra: &[&str]) -> String {
        let input = input.to_string();
        let args = [
            &["jobs", "create", session, "--type", kind, "--input", &input],
            extra,
        ]
        .concat();
        str_of(&self.json(&args), "id").to_owned()
    }

    fn job(&self, id: &str) -> Value {
        self.json(&["jobs", "get", id])
    }

    fn worker(&self, types: &[&str], exec: &str, extra: &[&str]) -> Proc {
        let mut cmd = command();
        cmd.arg("worker");
        for t in types {
            cmd.args(["--type", t]);
        }
        cmd.args(["--exec", exec, "--url", &self.url]).args(extra);
        Proc::spawn(&mut cmd)
    }

    /// Follows the session's events from the start.
    fn events(&self, session: &str) -> Events {
        let mut proc = Proc::spawn(command().args(["tail", session, "--json", "--url", &self.url]));
        let rx = proc.stdout.take().unwrap();
        Events {
            _proc: proc,
            rx,
            seen: Vec::new(),
        }
    }
}

/// The session's `events` channel as `sessiond tail --json` prints it.
struct Events {
    _proc: Proc,
    rx: mpsc::Receiver<Option<String>>,
    /// Every event's data so far.
    seen: Vec<Value>,
}

impl Events {
    /// Reads events until `done` holds over all seen so far; panics after `TIMEOUT` with
    /// `context` (the worker's log, say).
    fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool, context: impl Fn() -> String) {
        let deadline = Instant::now() + TIMEOUT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Some(line)) => {
                    let record: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("tail printed non-JSON ({e}): {line}"));
                    self.seen.push(record["data"].clone());
                }
                other => panic!(
                    "waiting for {what}: {other:?}; events so far:\n{}\n{}",
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    context()
                ),
            }
        }
    }

    /// Waits for `kind` (`job.succeeded`, …) for each of `jobs`.
    fn until_each(&mut self, kind: &str, jobs: &[&str], context: impl Fn() -> String) {
        let want: HashSet<String> = jobs.iter().map(|j| (*j).to_owned()).collect();
        self.until(
            &format!("{kind} for {jobs:?}"),
            |seen| {
                let got: HashSet<String> = seen
                    .iter()
                    .filter(|e| e["type"] == kind)
                    .filter_map(|e| e["jobId"].as_str().map(str::to_owned))
                    .collect();
                want.is_subset(&got)
            },
            context,
        );
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// Echoes the input and the job's environment back as the result.
const ECHO: &str = r#"python3 -c 'import json, os, sys
d = json.load(sys.stdin)
print(json.dumps({"got": d, "job": os.environ["SESSIOND_JOB_ID"],
  "session": os.environ["SESSIOND_SESSION_ID"], "type": os.environ["SESSIOND_JOB_TYPE"]}))'"#;

#[test]
fn runs_jobs_end_to_end() {
    let s = Server::start();
    let sid = s.new_session();
    let mut jobs = Vec::new();
    for i in 0..5 {
        let extra: &[&str] = if i == 3 {
            &["--output-key", "echoed"]
        } else {
            &[]
        };
        jobs.push(s.create_job(&sid, "echo", json!({"n": i, "text": "héllo"}), extra));
    }
    let mut events = s.events(&sid);
    let mut worker = s.worker(&["echo"], ECHO, &["--concurrency", "2"]);
    let ids: Vec<&str> = jobs.iter().map(String::as_str).collect();
    events.until_each("job.succeeded", &ids, || worker.log());

    for (i, id) in jobs.iter().enumerate() {
        let job = s.job(id);
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(
            job["result"],
            json!({"got": {"n": i, "text": "héllo"}, "job": id, "session": sid, "type": "echo"}),
            "{job}"
        );
    }
    // The output key landed in the session's data, in the same transaction as the success.
    let session = s.json(&["sessions", "get", &sid]);
    assert_eq!(
        session["data"]["echoed"],
        s.job(&jobs[3])["result"],
        "{session}"
    );

    let log = worker.log();
    for id in &jobs {
        assert!(
            log.contains(&format!("job {id} (echo, session {sid}): claimed")),
            "{log}"
        );
        assert!(
            log.contains(&format!("job {id} (echo): succeeded in ")),
            "{log}"
        );
    }

    // The same input again is reused from the earlier success, unless --no-reuse.
    let again = s.json(&[
        "jobs",
        "create",
        &sid,
        "--type",
        "echo",
        "--input",
        r#"{"n":0,"text":"héllo"}"#,
    ]);
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["reusedFrom"], jobs[0].as_str());
    let fresh = s.create_job(
        &sid,
        "echo",
        json!({"n": 0, "text": "héllo"}),
        &["--no-reuse"],
    );
    events.until_each("job.succeeded", &[&fresh], || worker.log());
    assert_eq!(s.job(&fresh)["result"]["job"], fresh.as_str());

    // Idle, the worker sits in a 20 s long-poll: SIGTERM must cancel it and exit at once.
    let t = Instant::now();
    sigterm(&worker.child);
    let status = worker.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; stderr:\n{}", worker.log());
    assert!(t.elapsed() < Duration::from_secs(10));
    let log = worker.log();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("6 succeeded, 0 failed"), "{log}");
}

#[test]
fn failures_are_reported_and_retried() {
    let s = Server::start();
    let sid = s.new_session();
    let boom = s.create_job(&sid, "boom", json!({}), &["--max-attempts", "2"]);
    let text = s.create_job(&sid, "text", json!({}), &["--max-attempts", "1"]);
    let empty = s.create_job(&sid, "empty", json!({}), &[]);
    let mut events = s.events(&sid);
    // One command for three types, told apart by SESSIOND_JOB_TYPE.
    let exec = r#"case "$SESSIOND_JOB_TYPE" in
        boom) echo "attempt $SESSIOND_JOB_ATTEMPT: bad things happened" >&2; exit 3 ;;
        text) echo "hello, not json" ;;
        empty) ;;
    esac"#;
    let worker = s.worker(&["boom", "text", "empty"], exec, &[]);
    events.until_each("job.failed", &[&boom, &text], || worker.log());
    events.until_each("job.succeeded", &[&empty], || worker.log());

    let job = s.job(&boom);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(
        job["error"],
        json!({"message": "attempt 2: bad things happened", "exitCode": 3}),
        "{job}"
    );
    // The first attempt was queued again with its error.
    assert!(
        events.seen.iter().any(|e| e["type"] == "job.queued"
            && e["jobId"] == boom.as_str()
            && e["detail"]["error"]["message"] == "attempt 1: bad things happened"),
        "{:?}",
        events.seen
    );

    let job = s.job(&text);
    assert_eq!(job["status"], "failed", "{job}");
    let message = str_of(&job["error"], "message");
    assert!(message.starts_with("stdout is not JSON: "), "{job}");
    assert_eq!(job["error"]["exitCode"], 0, "{job}");
    assert_eq!(job["error"]["stdout"], "hello, not json\n", "{job}");

    // Exit 0 with nothing on stdout: success with a null result.
    let job = s.job(&empty);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], Value::Null, "{job}");

    let log = worker.log();
    assert!(
        log.contains(&format!("job {boom} (boom): failed in ",))
            && log.contains(
                "exit code 3: attempt 1: bad things happened (queued again, attempt 1/2)"
            )
            && log.contains("(final, attempt 2/2)"),
        "{log}"
    );
}

#[test]
fn sigterm_lets_the_running_job_finish() {
    let s = Server::start();
    let sid = s.new_session();
    let slow = s.create_job(&sid, "slow", json!({}), &[]);
    let mut events = s.events(&sid);
    let mut worker = s.worker(&["slow"], "sleep 2; echo '{\"slept\": true}'", &[]);
    events.until_each("job.running", &[&slow], || worker.log());
    // Queued while the only slot is busy: after SIGTERM it must stay queued.
    let later = s.create_job(&sid, "slow", json!({"later": true}), &[]);
    sigterm(&worker.child);

    let status = worker.wait_exit(TIMEOUT);
    assert!(status.success(), "{status}; stderr:\n{}", worker.log());
    let job = s.job(&slow);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], json!({"slept": true}));
    assert_eq!(s.job(&later)["status"], "queued");
    let log = worker.log();
    assert!(log.contains("SIGTERM: claiming no more jobs"), "{log}");
    assert!(
        log.contains(&format!("job {slow} (slow): succeeded in ")),
        "{log}"
    );
}

#[test]
fn a_second_signal_kills_the_command() {
    let s = Server::start();
    let sid = s.new_session();
    let stuck = s.create_job(&sid, "stuck", json!({}), &[]);
    let mut events = s.events(&sid);
    let mut worker = s.worker(&["stuck"], "sleep 60", &[]);
    events.until_each("job.running", &[&stuck], || worker.log());
    sigterm(&worker.child);
    eventually(
        "the first signal's note",
        || worker.log().contains("claiming no more"),
        || worker.log(),
    );
    sigterm(&worker.child);

    let status = worker.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status}; stderr:\n{}", worker.log());
    // Reported as a failed attempt, so it is queued again rather than waiting out the lease.
    let job = s.job(&stuck);
    assert_eq!(job["status"], "queued", "{job}");
    assert!(
        str_of(&job["error"], "message").contains("stopped"),
        "{job}"
    );
}

#[test]
fn a_cancelled_job_is_killed_and_dropped() {
    let s = Server::start();
    let sid = s.new_session();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let job = s.create_job(&sid, "long", json!({}), &[]);
    let mut events = s.events(&sid);
    // `sleep` is a child of `sh` here: the kill must reach the whole process group.
    let exec = format!("echo $$ > '{}'; sleep 60; echo done", pidfile.display());
    let mut worker = s.worker(&["long"], &exec, &["--lease", "5"]);
    events.until_each("job.running", &[&job], || worker.log());
    eventually(
        "the pid file",
        || std::fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n')),
        || worker.log(),
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();

    assert_eq!(s.json(&["jobs", "cancel", &job])["status"], "cancelled");
    // The next heartbeat (every lease/3 ≈ 1.7 s) is refused: the command is killed.
    eventually(
        "the job to be dropped",
        || worker.log().contains("dropped after"),
        || worker.log(),
    );
    let alive = Command::new("kill")
        .args(["-0", &pid])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!alive.success(), "the command (pid {pid}) still runs");
    assert_eq!(s.job(&job)["status"], "cancelled");
    assert!(worker.running(), "the worker must go on claiming");

    sigterm(&worker.child);
    assert!(worker.wait_exit(TIMEOUT).success());
}

#[test]
fn waits_for_an_unreachable_server() {
    // A free port, for a server that is not there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut worker =
        Proc::spawn(command().args(["worker", "--type", "echo", "--exec", "cat", "--url", &url]));
    eventually(
        "a retry note",
        || worker.log().contains("note: cannot claim jobs"),
        || worker.log(),
    );
    assert!(worker.running(), "the worker gave up:\n{}", worker.log());

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_at(dir.path(), port);
    let sid = s.new_session();
    let job = s.create_job(&sid, "echo", json!({"back": true}), &[]);
    let mut events = s.events(&sid);
    events.until_each("job.succeeded", &[&job], || worker.log());
    assert_eq!(s.job(&job)["result"], json!({"back": true}));
    assert!(
        worker.log().contains("reached the server again"),
        "{}",
        worker.log()
    );

    sigterm(&worker.child);
    assert!(worker.wait_exit(TIMEOUT).success());
}

#[test]
fn a_refused_claim_is_fatal() {
    let s = Server::start();
    let mut worker = s.worker(&["echo"], "cat", &["--key", "sk_not_a_real_key"]);
    let status = worker.wait_exit(TIMEOUT);
    assert!(!status.success());
    let log = worker.log();
    assert!(
        log.contains("cannot claim jobs") && log.contains("401"),
        "{log}"
    );
}

/// The typed client's side of the worker protocol, without the worker.
#[test]
fn client_claims_heartbeats_and_completes() {
    use sessiond_client::{Client, CreateJob};

    let s = Server::start();
    let sid = s.new_session();
    let client = Client::new(&s.url, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let types = vec!["proto".to_owned()];
        // Nothing queued: the long poll answers 204 after `wait`.
        let t = Instant::now();
        let none = client.claim_job(&types, Some(5), 1, None).await.unwrap();
        assert!(none.is_none());
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );

        // A job created while a claim waits is handed to it.
        let waiting = {
            let (client, types) = (client.clone(), types.clone());
            tokio::spawn(async move { client.claim_job(&types, Some(5), 10, Some("me")).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = CreateJob {
            kind: "proto".into(),
            input: Some(serde_json::from_value(json!({"x": 1})).unwrap()),
            output_key: Some("proto".into()),
            ..Default::default()
        };
        let created = client.create_job(&sid, &body).await.unwrap();
        assert_eq!(created.status, "queued");
        let claimed = waiting
            .await
            .unwrap()
            .unwrap()
            .expect("claimed within the wait");
        assert_eq!(claimed.job.id, created.id);
        assert_eq!(claimed.job.status, "running");
        assert_eq!(claimed.job.attempts, 1);

        let progress = json!({"done": 1});
        let beat = client
            .heartbeat_job(&claimed.job.id, &claimed.lease_id, Some(&progress))
            .await
            .unwrap();
        assert_eq!(beat.progress, Some(progress));
        let done = client
            .complete_job(&claimed.job.id, &claimed.lease_id, &json!({"y": 2}))
            .await
            .unwrap();
        assert_eq!(done.status, "succeeded");
        assert!(done.is_finished());
        let e = client
            .heartbeat_job(&claimed.job.id, &claimed.lease_id, None)
            .await
            .unwrap_err();
        assert!(e.is_lease_lost(), "{e}");
        let e = client
            .fail_job(&claimed.job.id, &claimed.lease_id, &json!({"m": 1}), None)
            .await
            .unwrap_err();
        assert!(e.is_lease_lost(), "{e}");
        let session = client.get_session(&sid).await.unwrap();
        assert_eq!(session.data.unwrap()["proto"], json!({"y": 2}));

        let listed = client.list_jobs(&sid).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0], client.get_job(&created.id).await.unwrap());
        // Cancelling a finished job leaves it as it is.
        assert_eq!(
            client.cancel_job(&created.id).await.unwrap().status,
            "succeeded"
        );
    });
}
