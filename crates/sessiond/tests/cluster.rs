//! Two real nodes on one PostgreSQL database: realtime across nodes, long-polls woken by the
//! other node, jobs claimed exactly once across nodes, and a lost LISTEN connection. Skipped
//! (with a note) when `SESSIOND_TEST_DATABASE_URL` is unset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support {
    pub mod node;
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessiond_store_postgres::testkit;
use support::node::{append, client, create_session, records_path, subscribe, Node};

struct Cluster {
    a: Node,
    b: Node,
    base: String,
    db: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Drops the test database, also when a test fails (`WITH (FORCE)`: the nodes' connections
/// are closed for them; the nodes are killed right after).
impl Drop for Cluster {
    fn drop(&mut self) {
        let (base, db) = (self.base.clone(), self.db.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(testkit::drop_database(&base, &db)).ok()
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} left for the hourly sweep", self.db);
        }
    }
}

async fn cluster() -> Option<Cluster> {
    let base = testkit::test_database_url()?;
    let db = testkit::fresh_database(&base).await.unwrap();
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(&db, da.path());
    let b = Node::start(&db, dbb.path());
    Some(Cluster {
        a,
        b,
        base,
        db,
        _dirs: (da, dbb),
    })
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>, within: Duration) -> u64 {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("no record within the limit")
        .expect("the stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_on_a_reaches_a_subscriber_on_b() {
    let Some(cl) = cluster().await else { return };
    let c = client();
    let sid = create_session(&c, &cl.a).await;
    let mut rx = subscribe(&cl.b, &sid).await;
    // Warm-up: the stream is live once the first record arrives.
    assert_eq!(append(&c, &cl.a, &sid, 0).await.unwrap(), 201);
    assert_eq!(recv(&mut rx, Duration::from_secs(5)).await, 0);
    let mut lat = Vec::new();
    for i in 1..=20u64 {
        let t0 = Instant::now();
        assert_eq!(append(&c, &cl.a, &sid, i).await.unwrap(), 201);
        assert_eq!(recv(&mut rx, Duration::from_secs(1)).await, i);
        lat.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort();
    let median = lat[lat.len() / 2];
    eprintln!(
        "append on A -> SSE on B: median {median:?}, max {:?}",
        lat[lat.len() - 1]
    );
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(lat.iter().all(|l| *l < Duration::from_secs(1)), "{lat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_on_b_wakes_for_an_append_on_a() {
    let Some(cl) = cluster().await else { return };
    let c = client();
    let sid = create_session(&c, &cl.a).await;
    let url =
        cl.b.url(&format!("{}?after=0&wait=20", records_path(&sid, "out")));
    let t0 = Instant::now();
    let poll = tokio::spawn({
        let c = c.clone();
        async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(append(&c, &cl.a, &sid, 7).await.unwrap(), 201);
    let page = poll.await.unwrap();
    let took = t0.elapsed();
    eprintln!("long-poll on B woke after {took:?} (append at 500 ms)");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(page["records"][0]["data"]["i"], 7, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_on_two_nodes_complete_each_job_once() {
    const JOBS: usize = 2000;
    let Some(cl) = cluster().await else { return };
    let cl = Arc::new(cl);
    let c = client();
    let sid = create_session(&c, &cl.a).await;
    let t0 = Instant::now();
    let mut producers = Vec::new();
    for p in 0..4 {
        let (c, cl, sid) = (c.clone(), cl.clone(), sid.clone());
        producers.push(tokio::spawn(async move {
            let node = if p % 2 == 0 { &cl.a } else { &cl.b };
            for n in (p..JOBS).step_by(4) {
                let r = c
                    .post(node.url(&format!("/v1/sessions/{sid}/jobs")))
                    .json(&json!({"type": "work", "input": {"n": n}, "reuse": false}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "{:?}", r.text().await);
            }
        }));
    }
    let completed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (c, cl, completed) = (c.clone(), cl.clone(), completed.clone());
        workers.push(tokio::spawn(async move {
            let node = if w % 2 == 0 { &cl.a } else { &cl.b };
            let mut mine: Vec<u64> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                assert!(Instant::now() < deadline, "worker {w}: out of time");
                let r = c
                    .post(node.url("/v1/jobs/claim"))
                    .json(&json!({"types": ["work"], "wait": 1, "leaseSeconds": 120}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => {
                        let j: Value = r.json().await.unwrap();
                        let id = j["id"].as_str().unwrap().to_owned();
                        let done = c
                            .post(node.url(&format!("/v1/jobs/{id}/complete")))
                            .json(&json!({"leaseId": j["leaseId"], "result": {"w": w}}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(done.status(), 200, "{:?}", done.text().await);
                        completed.fetch_add(1, Ordering::SeqCst);
                        mine.push(j["input"]["n"].as_u64().unwrap());
                    }
                    204 => {
                        if completed.load(Ordering::SeqCst) >= JOBS {
                            return mine;
                        }
                    }
                    other => panic!("worker {w}: claim answered {other}"),
                }
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let mine = w.await.unwrap();
        per_worker.push(mine.len());
        for n in mine {
            *seen.entry(n).or_default() += 1;
        }
    }
    eprintln!(
        "{JOBS} jobs drained in {:?}; per worker {per_worker:?}",
        t0.elapsed()
    );
    assert_eq!(seen.len(), JOBS);
    assert!(seen.values().all(|&k| k == 1), "a job completed twice");
    assert!(per_worker.iter().all(|&k| k > 0), "{per_worker:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_listen_connection_loses_no_record() {
    const N: u64 = 200;
    let Some(cl) = cluster().await else { return };
    let c = client();
    let sid = create_session(&c, &cl.a).await;
    let mut rx = subscribe(&cl.b, &sid).await;
    assert_eq!(append(&c, &cl.a, &sid, 0).await.unwrap(), 201);
    assert_eq!(recv(&mut rx, Duration::from_secs(5)).await, 0);
    let admin = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&cl.db).await.unwrap()
    };
    let name = cl
        .db
        .split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut admin = Some(admin);
    for i in 1..=N {
        assert_eq!(append(&c, &cl.a, &sid, i).await.unwrap(), 201);
        if i == N / 2 {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(&name)
            .fetch_all(admin.as_mut().unwrap())
            .await
            .unwrap();
            eprintln!("terminated {} LISTEN connections", killed.len());
            assert!(!killed.is_empty());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 1..=N {
        assert_eq!(recv(&mut rx, Duration::from_secs(10)).await, i);
    }
}
