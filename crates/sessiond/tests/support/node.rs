//! Real `sessiond serve` processes on PostgreSQL, for the cluster and restart tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_sessiond");
pub const TOKEN_SECRET: &str = "cluster-test-secret-0123456789abcdef0123456789";

/// One node; killed on drop.
pub struct Node {
    pub child: Child,
    pub base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    pub fn start(database_url: &str, data_dir: &Path) -> Node {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("SESSIOND_TOKEN_SECRET", TOKEN_SECRET)
            .env_remove("SESSIOND_ADMIN_KEY")
            .env_remove("SESSIOND_DATABASE_URL")
            .env("SESSIOND_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sessiond serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a first line").expect("stdout");
        let base = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        let store = lines.next().expect("a store line").expect("stdout");
        assert!(store.starts_with("store: postgres"), "{store}");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Node { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn create_session(c: &reqwest::Client, node: &Node) -> String {
    let r = c
        .post(node.url("/v1/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

pub fn records_path(session: &str, channel: &str) -> String {
    format!("/v1/sessions/{session}/channels/{channel}/records")
}

/// Appends one record `{"i": i}`; returns the status.
pub async fn append(
    c: &reqwest::Client,
    node: &Node,
    session: &str,
    i: u64,
) -> reqwest::Result<u16> {
    let r = c
        .post(node.url(&records_path(session, "out")))
        .json(&json!({"records": [{"data": {"i": i}}]}))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// Opens an SSE stream on `out` and forwards each record's `data.i`.
pub async fn subscribe(node: &Node, session: &str) -> mpsc::UnboundedReceiver<u64> {
    let c = reqwest::Client::new();
    let r = c
        .get(node.url(&records_path(session, "out")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf[..end].to_owned();
                buf.drain(..end + 2);
                let mut kind = "message";
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if kind == "record" {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    if tx.send(v["data"]["i"].as_u64().unwrap()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}
