//! The trigger.dev surface driven by the real npm clients: a `sessiond serve` child process with
//! authentication on, a secret key in the trigger format registered through the admin API, and
//! `tests/trigger-client/run.mjs` (which uses `@trigger.dev/sdk` and `@trigger.dev/core` as an
//! application would). Skipped, with a message, only when `node` is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond_client::{Client, Method};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");
const ADMIN: &str = "adm_trigger_client_0123456789";

fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/trigger-client")
        .canonicalize()
        .expect("tests/trigger-client exists")
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

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SESSIOND_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--auth", "on"])
        .args(["--admin-key", ADMIN, "--data-dir"])
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
                if let Some(url) = rest.split_whitespace().next() {
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        }
    });
    let url = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => url,
        Err(e) => panic!(
            "server did not report `listening on …` ({e:?}); stderr:\n{}",
            log.lock().unwrap()
        ),
    };
    Server {
        child,
        url,
        log,
        _dir: dir,
    }
}

fn node_version() -> Option<String> {
    let out = Command::new("node").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `npm ci` when the client packages are not installed yet (the lockfile pins them).
fn install(project: &Path) {
    if project
        .join("node_modules/@trigger.dev/sdk/package.json")
        .exists()
        && project
            .join("node_modules/@trigger.dev/core/package.json")
            .exists()
    {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(project)
        .output()
        .expect("run npm (node is installed, npm should be too)");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn trigger_dev_clients_work_against_sessiond() {
    let Some(version) = node_version() else {
        println!(
            "SKIPPED trigger_dev_clients_work_against_sessiond: `node` is not installed, so the \
             @trigger.dev client test (tests/trigger-client) cannot run"
        );
        return;
    };
    let project = project();
    install(&project);
    let server = start_server();
    let secret = format!("tr_dev_{}", uuid_like());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let admin = Client::new(&server.url, Some(ADMIN.to_owned())).unwrap();
        let account = admin.create_account(Some("trigger client")).await.unwrap();
        admin
            .request_json(
                Method::POST,
                &format!("/v1/accounts/{}/keys", account.id),
                Some(json!({"key": secret, "name": "trigger.dev secret key"})),
            )
            .await
            .unwrap();
    });
    let started = Instant::now();
    let out = Command::new("node")
        .arg(project.join("run.mjs"))
        .arg(&server.url)
        .arg(&secret)
        .current_dir(&project)
        .env_remove("TRIGGER_API_URL")
        .env_remove("TRIGGER_SECRET_KEY")
        .env_remove("TRIGGER_ACCESS_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "node {version}, {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "the trigger.dev client run failed ({})\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log.lock().unwrap()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// 24 alphanumeric characters, as trigger.dev keys have.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:024x}", nanos ^ (u128::from(std::process::id()) << 64))
        .chars()
        .rev()
        .take(24)
        .collect()
}
