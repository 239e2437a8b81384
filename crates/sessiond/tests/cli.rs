//! End-to-end tests of the CLI: a real `sessiond serve` child process on a free loopback port,
//! driven by the real binary's client commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");

/// The binary with no `SESSIOND_*` variables inherited, so a developer's environment (an admin
/// key, a URL) cannot change what the tests see.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SESSIOND_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A running server; killed when dropped, even when the test panics.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut child = command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessiond serve");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut server = Server {
            child,
            url: String::new(),
            log: log.clone(),
            _dir: dir,
        };
        // Both pipes are drained for the life of the child so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = listening_url(&line) {
                    let _ = tx.send(url);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => server.url = url,
            Err(e) => panic!(
                "server did not report `listening on …` ({e:?}); stderr:\n{}",
                server.log.lock().unwrap()
            ),
        }
        server
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
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
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        check_ok(args, self.run_with_stdin(args, None), &self.log)
    }

    /// Runs a command with `--json` that must succeed; returns its parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let args = [args, &["--json"]].concat();
        let out = self.ok(&args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}):\n{out}"))
    }

    /// Runs a command that must fail; returns its stderr.
    fn fail(&self, args: &[&str]) -> String {
        check_fail(args, self.run_with_stdin(args, None))
    }
}

/// The URL in the readiness line `listening on http://127.0.0.1:PORT`, tolerating a log prefix
/// and trailing words.
fn listening_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split_whitespace().next()?.trim_end_matches('/');
    url.starts_with("http://").then(|| url.to_owned())
}

fn check_ok(args: &[&str], out: Output, log: &Mutex<String>) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log.lock().unwrap()
    );
    stdout
}

fn check_fail(args: &[&str], out: Output) -> String {
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

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

#[test]
fn session_lifecycle() {
    let s = Server::start();

    let table = s.ok(&[
        "sessions",
        "create",
        "--external-id",
        "ext one α",
        "--type",
        "agent",
        "--title",
        "Hello",
        "--tag",
        "a",
        "--tag",
        "b",
        "--metadata",
        r#"{"team":"x"}"#,
        "--data",
        r#"{"n":1,"nested":{"a":1}}"#,
    ]);
    assert!(
        table.contains("ext one α") && table.contains("Hello") && table.contains("active"),
        "{table}"
    );

    // Same externalId while active: the existing session comes back, unchanged.
    let args = [
        "sessions",
        "create",
        "--external-id",
        "ext one α",
        "--title",
        "Other",
        "--json",
    ];
    let out = s.run_with_stdin(&args, None);
    let again: Value = serde_json::from_str(&check_ok(&args, out.clone(), &s.log)).unwrap();
    assert_eq!(again["title"], "Hello");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // The externalId (with a space and non-ASCII) addresses the session in the path.
    let by_ext = s.json(&["sessions", "get", "ext one α"]);
    let id = str_of(&by_ext, "id").to_owned();
    assert_eq!(by_ext["id"], again["id"]);

    let got = s.json(&["sessions", "get", &id]);
    assert_eq!(got["type"], "agent");
    assert_eq!(got["tags"], json!(["a", "b"]));
    assert_eq!(got["metadata"], json!({"team": "x"}));
    assert_eq!(got["data"], json!({"n": 1, "nested": {"a": 1}}));
    assert_eq!(got["version"], 1);
    assert_eq!(got["status"], "active");

    let table = s.ok(&["sessions", "get", &id]);
    assert!(
        table.contains(&id) && table.contains("\"nested\""),
        "{table}"
    );

    // Merge patch: nested objects merge, null deletes.
    let patched = s.json(&[
        "sessions",
        "patch",
        &id,
        r#"{"title":"Renamed","data":{"nested":{"b":2},"n":null}}"#,
        "--if-match",
        "1",
    ]);
    assert_eq!(patched["title"], "Renamed");
    assert_eq!(patched["data"], json!({"nested": {"a": 1, "b": 2}}));
    assert_eq!(patched["version"], 2);

    let err = s.fail(&[
        "sessions",
        "patch",
        &id,
        r#"{"title":"x"}"#,
        "--if-match",
        "1",
    ]);
    assert!(err.contains("version_mismatch"), "{err}");

    // The patch from stdin.
    let args = ["sessions", "patch", &id, "-", "--json"];
    let out = s.run_with_stdin(&args, Some(r#"{"tags":["c"]}"#));
    let patched: Value = serde_json::from_str(&check_ok(&args, out, &s.log)).unwrap();
    assert_eq!(patched["tags"], json!(["c"]));
    assert_eq!(patched["version"], 3);

    let closed = s.json(&["sessions", "close", &id, "--reason", "done"]);
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["closedReason"], "done");
    let err = s.fail(&["sessions", "patch", &id, r#"{"title":"late"}"#]);
    assert!(err.contains("session_closed"), "{err}");

    assert_eq!(
        s.json(&["sessions", "delete", &id]),
        json!({ "deleted": id })
    );
    let err = s.fail(&["sessions", "get", &id]);
    assert!(
        err.contains(&id) && err.contains("session_not_found"),
        "{err}"
    );

    // Table-mode delete prints a confirmation.
    let other = s.json(&["sessions", "create"]);
    let other_id = str_of(&other, "id");
    let out = s.ok(&["sessions", "delete", other_id]);
    assert!(out.contains("deleted") && out.contains(other_id), "{out}");
}

#[test]
fn list_filters_and_pages() {
    let s = Server::start();
    let mut ids = Vec::new();
    for i in 0..5 {
        let meta = format!(r#"{{"i":"{i}"}}"#);
        let title = format!("item {i}");
        let created = s.json(&[
            "sessions",
            "create",
            "--tag",
            "batch",
            "--title",
            &title,
            "--metadata",
            &meta,
            "--data",
            r#"{"big":true}"#,
        ]);
        ids.push(str_of(&created, "id").to_owned());
    }
    let special = s.json(&["sessions", "create", "--type", "special", "--tag", "other"]);

    let page = s.json(&["sessions", "list", "--tag", "batch", "--limit", "2"]);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["nextCursor"].is_string(), "{page}");
    let table = s.ok(&["sessions", "list", "--tag", "batch", "--limit", "2"]);
    assert!(table.contains("--cursor"), "{table}");

    // --all follows nextCursor over 3 pages (2 + 2 + 1) and prints one array.
    let all = s.json(&[
        "sessions", "list", "--tag", "batch", "--limit", "2", "--all",
    ]);
    let mut got: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "id").to_owned())
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);

    // List rows omit data unless asked for.
    let page = s.json(&["sessions", "list", "--type", "special"]);
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], special["id"]);
    assert!(rows[0].get("data").is_none(), "{page}");
    let page = s.json(&["sessions", "list", "--metadata", "i=3", "--include-data"]);
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{page}");
    assert_eq!(rows[0]["title"], "item 3");
    assert_eq!(rows[0]["data"], json!({"big": true}));

    let table = s.ok(&["sessions", "list", "--q", "item", "--limit", "100"]);
    for i in 0..5 {
        assert!(table.contains(&format!("item {i}")), "{table}");
    }
    assert!(!table.contains("special"), "{table}");

    s.ok(&["sessions", "close", &ids[0]]);
    let page = s.json(&["sessions", "list", "--status", "closed"]);
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{page}");
    assert_eq!(rows[0]["id"], ids[0].as_str());
}

#[test]
fn accounts_and_keys() {
    let s = Server::start();
    let table = s.ok(&["accounts", "create", "--name", "beta"]);
    assert!(table.contains("beta"), "{table}");
    let account = s.json(&["accounts", "create", "--name", "acme"]);
    let account_id = str_of(&account, "id");
    assert_eq!(account["name"], "acme");

    let table = s.ok(&["keys", "create", account_id, "--name", "table"]);
    assert!(table.contains("shown only once"), "{table}");

    let key = s.json(&["keys", "create", account_id, "--name", "ci"]);
    let secret = str_of(&key, "key");
    let key_id = str_of(&key, "id");
    assert_eq!(key["accountId"], account["id"]);

    let created = s.json(&["sessions", "create", "--key", secret, "--title", "mine"]);
    let sid = str_of(&created, "id");
    // Without the key the request acts as the default account, which cannot see it.
    let err = s.fail(&["sessions", "get", sid]);
    assert!(err.contains("session_not_found"), "{err}");
    assert_eq!(
        s.json(&["sessions", "get", sid, "--key", secret])["title"],
        "mine"
    );

    let out = s.ok(&["keys", "revoke", key_id]);
    assert!(out.contains(key_id), "{out}");
    let err = s.fail(&["sessions", "create", "--key", secret]);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn bad_arguments_name_the_flag() {
    // Parsed before any request, so no server is needed.
    let run = |args: &[&str]| {
        let out = command()
            .args(args)
            .args(["--url", "http://127.0.0.1:9"])
            .output()
            .unwrap();
        check_fail(args, out)
    };
    let err = run(&["sessions", "create", "--data", "{bad"]);
    assert!(err.contains("--data"), "{err}");
    let err = run(&["sessions", "create", "--metadata", "[1]"]);
    assert!(
        err.contains("--metadata") && err.contains("object"),
        "{err}"
    );
    let err = run(&["sessions", "list", "--metadata", "novalue"]);
    assert!(err.contains("--metadata"), "{err}");
    let err = run(&["sessions", "patch", "x", "{bad"]);
    assert!(err.contains("PATCH"), "{err}");
}

#[test]
fn unreachable_server_is_explained() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let args = ["sessions", "list", "--url", &url];
    let err = check_fail(&args, command().args(args).output().unwrap());
    assert!(err.contains(&url) && err.contains("running"), "{err}");
}
