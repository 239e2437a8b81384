//! End-to-end tests of `sessiond jobs create|list|get|cancel` against a real `sessiond serve`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");

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
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no `listening on` ({e:?}):\n{}", log.lock().unwrap()));
        Server {
            child,
            url,
            log,
            _dir: dir,
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

    /// Runs a command that must succeed; returns its stdout and stderr.
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
            out.status,
            self.log.lock().unwrap()
        );
        (stdout, stderr)
    }

    fn json(&self, args: &[&str]) -> Value {
        let args = [args, &["--json"]].concat();
        let (out, _) = self.ok(&args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}):\n{out}"))
    }

    /// Runs a command that must fail; returns its stderr.
    fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} should have failed; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

#[test]
fn create_list_get_cancel() {
    let s = Server::start();
    let session = s.json(&["sessions", "create", "--external-id", "jobs-cli"]);
    let sid = str_of(&session, "id");

    let (table, _) = s.ok(&["jobs", "list", sid]);
    assert!(table.contains("no jobs"), "{table}");

    // By externalId, with every option.
    let first = s.json(&[
        "jobs",
        "create",
        "jobs-cli",
        "--type",
        "scrape",
        "--input",
        r#"{"url":"https://example.com"}"#,
        "--output-key",
        "scraped",
        "--max-attempts",
        "5",
        "--no-reuse",
    ]);
    let first_id = str_of(&first, "id");
    assert_eq!(first["sessionId"], sid);
    assert_eq!(first["type"], "scrape");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["input"], json!({"url": "https://example.com"}));
    assert_eq!(first["outputKey"], "scraped");
    assert_eq!(first["maxAttempts"], 5);
    assert_eq!(first["attempts"], 0);
    assert_eq!(first["result"], Value::Null);

    // Defaults: input {}, 3 attempts; the table shows the job.
    let (table, _) = s.ok(&["jobs", "create", sid, "--type", "index"]);
    assert!(
        table.contains("index") && table.contains("queued") && table.contains("0/3"),
        "{table}"
    );

    let listed = s.json(&["jobs", "list", sid]);
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(rows[0]["id"], first_id, "oldest first");
    assert_eq!(rows[1]["type"], "index");
    assert_eq!(rows[1]["input"], json!({}));
    let (table, _) = s.ok(&["jobs", "list", "jobs-cli"]);
    assert!(
        table.contains(first_id) && table.contains("scraped") && table.contains("0/5"),
        "{table}"
    );

    assert_eq!(s.json(&["jobs", "get", first_id]), first);
    let (table, _) = s.ok(&["jobs", "get", first_id]);
    assert!(
        table.contains("https://example.com") && table.contains("outputKey"),
        "{table}"
    );

    let cancelled = s.json(&["jobs", "cancel", first_id]);
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finishedAt"].is_string(), "{cancelled}");
    // Cancelling again changes nothing.
    let (table, _) = s.ok(&["jobs", "cancel", first_id]);
    assert!(table.contains("cancelled"), "{table}");
    assert_eq!(s.json(&["jobs", "get", first_id])["status"], "cancelled");
}

#[test]
fn errors_name_the_problem() {
    let s = Server::start();
    let sid = str_of(&s.json(&["sessions", "create"]), "id").to_owned();

    let err = s.fail(&["jobs", "create", &sid, "--type", "x", "--input", "[1]"]);
    assert!(
        err.contains("--input") && err.contains("JSON object"),
        "{err}"
    );
    let err = s.fail(&["jobs", "create", &sid]);
    assert!(err.contains("--type"), "{err}");
    let err = s.fail(&["jobs", "create", &sid, "--type", "bad type!"]);
    assert!(
        err.contains("cannot create a job") && err.contains("invalid_field"),
        "{err}"
    );
    let err = s.fail(&["jobs", "create", "no-such-session", "--type", "x"]);
    assert!(err.contains("session_not_found"), "{err}");

    let missing = "00000000-0000-4000-8000-000000000000";
    let err = s.fail(&["jobs", "get", missing]);
    assert!(
        err.contains(missing) && err.contains("job_not_found"),
        "{err}"
    );
    let err = s.fail(&["jobs", "cancel", "not-a-uuid"]);
    assert!(err.contains("job_not_found"), "{err}");
    let err = s.fail(&["jobs", "list", "no-such-session"]);
    assert!(err.contains("session_not_found"), "{err}");
}
