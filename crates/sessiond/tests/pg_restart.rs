//! PostgreSQL restarts under a running server: requests answer 503 while it is down, the server
//! recovers by itself, and every acknowledged write is there. Restarting the database disturbs
//! every other test using it, so this runs alone and only with `SESSIOND_TEST_PG_RESTART=1`
//! (`.ci/run` has a step for it). Needs `pg_ctlcluster` and `SESSIOND_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // this test uses only part of the helpers
mod support {
    pub mod node;
}

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sessiond_store_postgres::testkit;
use support::node::{append, client, create_session, records_path, Node};

fn pg_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    versions.sort();
    versions.into_iter().next().expect("a PostgreSQL cluster")
}

fn pg_ctl(action: &str) {
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &pg_version(), "main", action])
        .status()
        .expect("run pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_answers_503_then_recovers_with_every_acknowledged_write() {
    if std::env::var("SESSIOND_TEST_PG_RESTART").as_deref() != Ok("1") {
        eprintln!("note: set SESSIOND_TEST_PG_RESTART=1 to restart PostgreSQL in this test");
        return;
    }
    let Some(base) = testkit::test_database_url() else {
        return;
    };
    let db = testkit::fresh_database(&base).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&db, dir.path());
    let c = client();
    let sid = create_session(&c, &node).await;

    let mut acked = Vec::new();
    for i in 0..50 {
        assert_eq!(append(&c, &node, &sid, i).await.unwrap(), 201);
        acked.push(i);
    }

    // Down: requests fail with 503 (not 500, not a hang).
    pg_ctl("stop");
    let mut statuses = Vec::new();
    for i in 50..53 {
        let s = append(&c, &node, &sid, i).await.unwrap();
        if s == 201 {
            acked.push(i);
        }
        statuses.push(s);
    }
    let ready = c.get(node.url("/readyz")).send().await.unwrap().status();
    pg_ctl("start");
    eprintln!("while down: appends answered {statuses:?}, /readyz {ready}");
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    assert_eq!(ready.as_u16(), 503);

    // Up again: the server recovers by itself.
    let t0 = Instant::now();
    let mut i = 53;
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no recovery in 60 s"
        );
        let s = append(&c, &node, &sid, i).await.unwrap();
        if s == 201 {
            acked.push(i);
            break;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("recovered {:?} after the restart", t0.elapsed());
    for j in i + 1..i + 50 {
        assert_eq!(append(&c, &node, &sid, j).await.unwrap(), 201);
        acked.push(j);
    }

    let page: Value = c
        .get(node.url(&format!("{}?after=0&limit=1000", records_path(&sid, "out"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["i"].as_u64().unwrap())
        .collect();
    for a in &acked {
        assert!(got.contains(a), "acknowledged record {a} is missing");
    }
    drop(node);
    testkit::drop_database(&base, &db).await.unwrap();
}
