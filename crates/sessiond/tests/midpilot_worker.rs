//! A midPilot pipeline stage job run end to end by a real `sessiond worker`: a `sessiond serve`
//! child, the stage requested on the midPilot surface, a worker child completing it, and the
//! result read back on the midPilot surface (status and the session's `<x>Output` key).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");
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

/// Killed when dropped, even when the test panics.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path) -> (Proc, String) {
    let mut child = command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sessiond serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((_, rest)) = line.split_once("listening on ") {
                let url = rest.split_whitespace().next().unwrap_or("");
                let _ = tx.send(url.trim_end_matches('/').to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(TIMEOUT)
        .expect("server did not report `listening on …`");
    (Proc(child), url)
}

#[tokio::test]
async fn a_worker_completes_a_discovery_stage_job() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{url}/api/v1/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = created["sessionId"].as_str().unwrap().to_owned();
    let stage = format!("{url}/api/v1/discovery/{sid}/discovery");
    let r = http
        .post(&stage)
        .json(&json!({"application": "petstore"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let job: Value = r.json().await.unwrap();
    let job = job["jobId"].as_str().unwrap().to_owned();

    let _worker = Proc(
        command()
            .args([
                "worker",
                "--type",
                "discovery.discovery",
                "--exec",
                "echo '{\"candidates\": [\"petstore\"]}'",
                "--url",
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sessiond worker"),
    );

    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        let st: Value = http
            .get(format!("{stage}?jobId={job}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if st["status"] == "finished" || st["status"] == "failed" {
            break st;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["status"], "finished", "{status}");
    assert_eq!(status["result"], json!({"candidates": ["petstore"]}));
    let session: Value = http
        .get(format!("{url}/api/v1/session/{sid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["data"]["discoveryJobId"], json!(job));
    assert_eq!(
        session["data"]["discoveryOutput"],
        json!({"candidates": ["petstore"]})
    );
}
