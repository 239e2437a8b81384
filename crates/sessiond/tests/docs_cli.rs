//! End-to-end tests of `sessiond docs upload|list|get|search|delete` against a real `sessiond serve`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

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

fn write(dir: &std::path::Path, name: &str, body: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn upload_wait_list_get_search_delete() {
    let s = Server::start();
    let session = s.json(&["sessions", "create", "--external-id", "docs-cli"]);
    let sid = str_of(&session, "id").to_owned();
    let files = tempfile::tempdir().unwrap();
    let md = write(
        files.path(),
        "guide.md",
        b"# Narwhal guide\n\nThe narwhal lives in arctic waters.\n\n## Tusks\n\nGET /narwhals lists them.\n",
    );
    let txt = write(files.path(), "notes.txt", b"plain notes about walruses\n");

    let (table, _) = s.ok(&["docs", "list", "docs-cli"]);
    assert!(table.contains("no documents"), "{table}");

    // Upload two files and wait until both are processed.
    let docs = s.json(&[
        "docs",
        "upload",
        "docs-cli",
        &md,
        &txt,
        "--chunk-tokens",
        "500",
    ]);
    let docs = docs.as_array().unwrap().clone();
    assert_eq!(docs.len(), 2, "{docs:?}");
    for d in &docs {
        assert_eq!(d["status"], "ready", "{d}");
        assert_eq!(d["chunkTokens"], 500);
        assert_eq!(d["sessionId"], sid.as_str());
    }
    assert_eq!(docs[0]["filename"], "guide.md");
    assert_eq!(docs[0]["contentType"], "text/markdown");
    let doc = str_of(&docs[0], "id").to_owned();

    // The table form.
    let (table, _) = s.ok(&["docs", "list", &sid]);
    assert!(
        table.contains("guide.md") && table.contains("notes.txt"),
        "{table}"
    );
    assert!(table.contains("ready"), "{table}");

    let got = s.json(&["docs", "get", "docs-cli", &doc]);
    assert_eq!(got["id"], doc.as_str());
    let chunks = got["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    assert_eq!(chunks[0]["metadata"]["parser"], "markdown");
    assert_eq!(chunks[0]["metadata"]["numEndpoints"], 1);
    let (table, _) = s.ok(&["docs", "get", "docs-cli", &doc]);
    assert!(
        table.contains("sha256") && table.contains("Narwhal"),
        "{table}"
    );

    let hits = s.json(&["docs", "search", "docs-cli", "narwhal arctic"]);
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["documentId"], doc.as_str());
    assert!(
        hits[0]["snippet"].as_str().unwrap().contains("«narwhal»"),
        "{hits:?}"
    );
    let (table, _) = s.ok(&["docs", "search", "docs-cli", "walruses", "--limit", "5"]);
    assert!(table.contains("«walruses»"), "{table}");

    // The same file again is reused; --no-reuse and --no-wait process it afresh.
    let again = s.json(&["docs", "upload", "docs-cli", &md, "--chunk-tokens", "500"]);
    assert_eq!(again[0]["status"], "ready");
    let fresh = s.json(&["docs", "upload", "docs-cli", &md, "--no-reuse", "--no-wait"]);
    assert_eq!(fresh[0]["status"], "processing", "{fresh}");

    // Replace by --doc-id.
    let replaced = s.json(&["docs", "upload", "docs-cli", &txt, "--doc-id", &doc]);
    assert_eq!(replaced[0]["id"], doc.as_str());
    assert_eq!(replaced[0]["filename"], "notes.txt");

    let deleted = s.json(&["docs", "delete", "docs-cli", &doc]);
    assert_eq!(deleted["deleted"], doc.as_str());
    let err = s.fail(&["docs", "get", "docs-cli", &doc]);
    assert!(err.contains("document_not_found"), "{err}");

    // A document that fails to process makes the command fail, after printing it.
    let bad = write(files.path(), "latin1.txt", b"caf\xe9\n");
    let out = s.run(&["docs", "upload", "docs-cli", &bad, "--json"]);
    assert!(!out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed[0]["status"], "failed");
    assert_eq!(printed[0]["error"]["code"], "invalid_utf8");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed"), "{err}");

    // Bad input is refused by the server with its code.
    let empty = write(files.path(), "empty.txt", b"");
    let err = s.fail(&["docs", "upload", "docs-cli", &empty]);
    assert!(err.contains("empty_document"), "{err}");
    let err = s.fail(&["docs", "upload", "docs-cli", &md, "--chunk-tokens", "5"]);
    assert!(err.contains("invalid_field"), "{err}");
    let err = s.fail(&["docs", "upload", "docs-cli", &md, &txt, "--doc-id", &doc]);
    assert!(err.contains("--doc-id"), "{err}");
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}
