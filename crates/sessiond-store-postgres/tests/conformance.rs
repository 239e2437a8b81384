//! The store conformance suite against PostgreSQL (a fresh database per test), and the checks
//! only a cluster has: two nodes on one database, a lost LISTEN connection, claims across nodes.
//!
//! Every test needs `SESSIOND_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); without it each prints a note and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond_core::account::Account;
use sessiond_core::channel::{NewRecord, Record};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{CreateJobInput, Job, JobStatus};
use sessiond_core::session::{CreateSessionInput, Session};
use sessiond_core::{AccountId, SessionId, Timestamp};
use sessiond_store::{Hub, InsertSession, Store, StoreError};
use sessiond_store_postgres::testkit::{
    drop_database, fresh_database, fresh_store, test_database_url,
};
use sessiond_store_postgres::{PgOptions, PgStore};
use sqlx::{Connection, PgConnection};

#[path = "conformance/parity.rs"]
mod parity;

/// A store on a fresh database, or `None` (after a note) when no server is configured.
async fn fresh() -> Option<Arc<dyn Store>> {
    let base = test_database_url()?;
    // Its database is dropped again when the test shuts the store down.
    let store = fresh_store(&base, PgOptions::default(), Hub::new())
        .await
        .expect("a store on a fresh database");
    Some(Arc::new(store))
}

// The suite's generated tests return early (and pass) when `fresh()` has no server to use.
sessiond_store::conformance_tests!({
    match fresh().await {
        Some(store) => std::future::ready(store),
        None => return,
    }
});

/// A fresh database for a cluster test: its URL, and the base URL to drop it with.
async fn cluster_db() -> Option<(String, String)> {
    let base = test_database_url()?;
    let url = fresh_database(&base).await.expect("create a test database");
    Some((base, url))
}

async fn node(url: &str) -> (Arc<PgStore>, Arc<Hub>) {
    let hub = Hub::new();
    let store = PgStore::connect(url, PgOptions::default(), hub.clone())
        .await
        .expect("connect");
    (Arc::new(store), hub)
}

async fn account(store: &PgStore) -> AccountId {
    let id = AccountId::random();
    store
        .create_account(Account {
            id,
            name: None,
            created_at: Timestamp::now(),
        })
        .await
        .unwrap();
    id
}

fn new_session(account: AccountId) -> Session {
    let now = Timestamp::now();
    CreateSessionInput {
        metadata: Some(json!({"zeta": 1, "alpha": {"y": 2, "b": 1}})),
        data: Some(json!({"z": true, "a": [3, 2, 1]})),
        ..Default::default()
    }
    .validate(now)
    .unwrap()
    .into_session(account, now)
}

async fn session(store: &PgStore, account: AccountId) -> Session {
    match store
        .insert_session(new_session(account), Event::SessionCreated { version: 1 })
        .await
        .unwrap()
    {
        InsertSession::Inserted(s) => s,
        other => panic!("{other:?}"),
    }
}

/// Appends one record the way the service does: commit, then tell the hub.
async fn append(store: &PgStore, hub: &Hub, acc: AccountId, s: SessionId, id: &str, data: &str) {
    let now = Timestamp::now();
    let out = store
        .append_records(
            acc,
            &SessionRef::Id(s),
            "in",
            vec![NewRecord {
                id: id.into(),
                data: data.into(),
                headers: "{}".into(),
                fresh: false,
            }],
            Box::new(|_| Ok(())),
            now,
        )
        .await
        .unwrap()
        .unwrap();
    let records = out
        .results
        .iter()
        .filter(|r| !r.duplicate)
        .map(|r| {
            Arc::new(Record {
                seq: r.seq,
                id: r.id.clone(),
                data: serde_json::value::RawValue::from_string(data.into()).unwrap(),
                headers: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
                created_at: now,
            })
        })
        .collect();
    hub.appended(s, "in", records, out.last_seq);
}

async fn finish(stores: &[&PgStore], base: &str, url: &str) {
    for s in stores {
        s.shutdown().await;
    }
    drop_database(base, url).await.unwrap();
}

/// The append of server-generated ids checks the session without a lock, then writes in one
/// statement. A close that commits in between must win: the append is turned away, not
/// written after the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_session_closes_after_its_check_is_turned_away() {
    let Some(base) = test_database_url() else {
        return;
    };
    let store = Arc::new(
        fresh_store(&base, PgOptions::default(), Hub::new())
            .await
            .unwrap(),
    );
    let acc = account(&store).await;
    let s = session(&store, acc).await;
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let guard = {
        let store = store.clone();
        let (first, checks) = (first.clone(), checks.clone());
        move |seen: &Session| {
            checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let verdict = seen.ensure_active(Timestamp::now());
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                // The session is closed (and committed) after the check passed.
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        store
                            .update_session(
                                acc,
                                &SessionRef::Id(seen.id),
                                Box::new(|s: &mut Session| {
                                    Ok(s.close(None, Timestamp::now()).into_iter().collect())
                                }),
                            )
                            .await
                            .unwrap();
                    })
                });
            }
            verdict
        }
    };
    // The channel exists, so the append takes the statement path.
    store
        .append_records(
            acc,
            &SessionRef::Id(s.id),
            "in",
            vec![NewRecord::generated("0".into())],
            Box::new(|_| Ok(())),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    let err = store
        .append_records(
            acc,
            &SessionRef::Id(s.id),
            "in",
            vec![NewRecord::generated("1".into())],
            Box::new(guard),
            Timestamp::now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Rejected(ref e) if e.code == "session_closed"),
        "{err:?}"
    );
    assert_eq!(checks.load(std::sync::atomic::Ordering::SeqCst), 2);
    let page = store
        .read_records(s.id, "in", 0, 10, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((page.last_seq, page.records.len()), (1, 1));
    assert!(page.session_closed);
    store.shutdown().await;
}

/// Readers on node B that are up to date get node A's records from memory: node B reads them
/// from storage once, for all of its readers, instead of each reader reading them itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_b_reads_node_a_records_once_for_all_its_readers() {
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let (a, hub_a) = node(&url).await;
    let (b, hub_b) = node(&url).await;
    let acc = account(&a).await;
    let s = session(&a, acc).await;
    let mut readers: Vec<_> = (0..3).map(|_| hub_b.subscribe(s.id)).collect();
    // The readers have read storage up to the (empty) head, as a live stream does first.
    let changes = readers[0].changes();
    readers[0].observe_head("in", 0, changes);
    for i in 1..=3 {
        append(
            &a,
            &hub_a,
            acc,
            s.id,
            &format!("r{i}"),
            &format!("{{\"i\":{i}}}"),
        )
        .await;
        for r in &mut readers {
            tokio::time::timeout(Duration::from_secs(5), r.changed())
                .await
                .expect("node B's readers are woken");
        }
        // Memory holds the new record once B has read it, so no reader goes to storage.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match readers[0].fetch("in", i - 1) {
                sessiond_store::hub::Fetch::Records(got) => {
                    assert_eq!(got.len(), 1);
                    assert_eq!(got[0].seq, i);
                    assert_eq!(got[0].data.get(), format!("{{\"i\":{i}}}"));
                    break;
                }
                other => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let woken = tokio::time::timeout(left, readers[0].changed()).await;
                    assert!(woken.is_ok(), "record {i} is not in memory: {other:?}");
                }
            }
        }
    }
    finish(&[&a, &b], &base, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_on_node_a_wakes_a_reader_on_node_b() {
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let (a, hub_a) = node(&url).await;
    let (b, hub_b) = node(&url).await;
    assert_ne!(a.node_id(), b.node_id());
    let acc = account(&a).await;
    let s = session(&a, acc).await;

    let mut sub = hub_b.subscribe(s.id);
    let mut own = hub_a.subscribe(s.id);
    // Each wake-up is timed from the moment the append returned (committed, hub told). The
    // median must be under 100 ms; a single slow one on a loaded CI machine may take longer.
    let mut latencies = Vec::new();
    for i in 0..20 {
        append(
            &a,
            &hub_a,
            acc,
            s.id,
            &format!("r{i}"),
            &format!("{{\"i\":{i}}}"),
        )
        .await;
        let appended = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), sub.changed())
            .await
            .expect("node B's reader is woken by node A's append");
        latencies.push(appended.elapsed());
        // Node A's own reader was woken locally, and A ignores its own NOTIFY.
        own.current();
    }
    latencies.sort();
    eprintln!(
        "append on A → reader on B woken: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        latencies[latencies.len() / 2] < Duration::from_millis(100),
        "{latencies:?}"
    );
    // B's reader goes to storage and finds every record.
    assert!(matches!(
        sub.fetch("in", 0),
        sessiond_store::hub::Fetch::Storage
    ));
    let page = b
        .read_records(s.id, "in", 0, 100, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.last_seq, 20);
    assert_eq!(page.records[19].data.get(), "{\"i\":19}");

    // Closing and job signals travel too.
    hub_a.closed(s.id);
    let sig = tokio::time::timeout(Duration::from_secs(2), sub.changed())
        .await
        .unwrap();
    assert!(sig.closed);
    let queued = hub_b.job_notified();
    tokio::pin!(queued);
    queued.as_mut().enable();
    hub_a.job_queued();
    tokio::time::timeout(Duration::from_secs(2), queued)
        .await
        .expect("a job queued on node A wakes claimers on node B");
    // Nothing echoes back to A: its subscriber saw no remote copy of its own signals.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = own.current().changes;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        own.current().changes,
        before,
        "a node ignores its own NOTIFY"
    );
    drop((sub, own));
    finish(&[&a, &b], &base, &url).await;
}

async fn terminate_listeners(url: &str) -> u64 {
    let mut c = PgConnection::connect(url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let _ = c.close().await;
    killed.into_iter().filter(|k| *k).count() as u64
}

async fn listeners(url: &str) -> i64 {
    let mut c = PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    let _ = c.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_reconnects_and_wakes_every_reader() {
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let (a, hub_a) = node(&url).await;
    let acc = account(&a).await;
    let s = session(&a, acc).await;
    let mut sub = hub_a.subscribe(s.id);
    sub.observe_head("in", 0, sub.changes());
    assert!(matches!(
        sub.fetch("in", 0),
        sessiond_store::hub::Fetch::UpToDate
    ));
    let queued = hub_a.job_notified();
    tokio::pin!(queued);
    queued.as_mut().enable();

    assert_eq!(terminate_listeners(&url).await, 1, "one LISTEN connection");
    let sig = tokio::time::timeout(Duration::from_secs(10), sub.changed())
        .await
        .expect("after reconnecting, the listener wakes every reader");
    assert!(!sig.closed && !sig.deleted);
    assert!(
        matches!(sub.fetch("in", 0), sessiond_store::hub::Fetch::Storage),
        "woken readers re-read from storage"
    );
    tokio::time::timeout(Duration::from_secs(1), queued)
        .await
        .expect("and waiting claimers look again");
    assert_eq!(listeners(&url).await, 1, "listening again");

    // The new connection receives other nodes' signals.
    let (b, hub_b) = node(&url).await;
    append(&b, &hub_b, acc, s.id, "after", "1").await;
    tokio::time::timeout(Duration::from_secs(2), sub.changed())
        .await
        .expect("signals arrive over the new LISTEN connection");
    // Twice in a row works as well.
    assert_eq!(terminate_listeners(&url).await, 2);
    tokio::time::timeout(Duration::from_secs(10), sub.changed())
        .await
        .expect("reconnects again");
    drop(sub);
    finish(&[&a, &b], &base, &url).await;
}

/// The backends of this database whose `application_name` is `name` (terminated first with
/// `terminate`).
async fn backends(url: &str, name: &str, terminate: bool) -> Vec<i32> {
    let mut c = PgConnection::connect(url).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "WITH t AS MATERIALIZED (
            SELECT pid FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = $1
              AND pid <> pg_backend_pid()
         )
         SELECT pid FROM t WHERE NOT $2 OR pg_terminate_backend(pid)",
    )
    .bind(name)
    .bind(terminate)
    .fetch_all(&mut c)
    .await
    .unwrap();
    let _ = c.close().await;
    pids
}

/// Point reads run on shared pipelined connections; losing them costs a read nothing (it goes
/// through the pool) and they come back by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_point_read_connections_cost_no_read_and_come_back() {
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let (a, _hub) = node(&url).await;
    let acc = account(&a).await;
    let s = session(&a, acc).await;
    let by_id = SessionRef::Id(s.id);
    // Concurrent reads open every pipelined connection.
    let reads: Vec<_> = (0..16).map(|_| a.get_session(acc, &by_id)).collect();
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap().unwrap(), s);
    }
    // Readers keep reading while the connections are killed under them: queries in flight on
    // a dying connection, and the reads right after, still answer.
    let (count, counted) = tokio::sync::watch::channel(0u64);
    let count = Arc::new(count);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (a, s, stop, count) = (a.clone(), s.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match a.get_session(acc, &SessionRef::Id(s.id)).await {
                        Ok(Some(read)) if read == s => count.send_modify(|n| *n += 1),
                        other => return Err(format!("{other:?}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    let reads_by = |n: u64| {
        let mut counted = counted.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), counted.wait_for(|c| *c >= n))
                .await
                .is_ok_and(|r| r.is_ok())
        }
    };
    let mut all_read = reads_by(200).await;
    let killed = backends(&url, "sessiond-reads", true).await;
    assert!(!killed.is_empty(), "point reads use their own connections");
    let target = *counted.borrow() + 500;
    all_read &= reads_by(target).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap().expect("no read failed");
    }
    assert!(all_read, "the readers kept reading");
    let other = a
        .get_session(acc, &SessionRef::Id(SessionId::random()))
        .await
        .unwrap();
    assert!(other.is_none(), "an unknown session is still not found");
    let now = backends(&url, "sessiond-reads", false).await;
    assert!(!now.is_empty(), "the point-read connections are back");
    assert!(
        now.iter().all(|p| !killed.contains(p)),
        "{now:?} {killed:?}"
    );
    finish(&[&a], &base, &url).await;
}

/// A column type changed under the prepared point reads (a newer node's migration, say):
/// the read that finds its statement stale answers anyway, and the connection is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_under_prepared_point_reads_costs_no_read() {
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let (a, _hub) = node(&url).await;
    let acc = account(&a).await;
    let s = session(&a, acc).await;
    let by_id = SessionRef::Id(s.id);
    for _ in 0..4 {
        assert_eq!(a.get_session(acc, &by_id).await.unwrap().unwrap(), s);
    }
    let before = backends(&url, "sessiond-reads", false).await;
    assert!(!before.is_empty());
    let mut c = PgConnection::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE sessions ALTER COLUMN closed_reason TYPE varchar(4000)")
        .execute(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    for _ in 0..8 {
        assert_eq!(a.get_session(acc, &by_id).await.unwrap().unwrap(), s);
    }
    let after = backends(&url, "sessiond-reads", false).await;
    assert!(
        !after.is_empty() && after.iter().all(|p| !before.contains(p)),
        "stale connections were replaced: {before:?} -> {after:?}"
    );
    finish(&[&a], &base, &url).await;
}

fn job(account: AccountId, i: usize) -> Job {
    CreateJobInput {
        kind: "work".into(),
        input: Some(json!({ "i": i })),
        reuse: false,
        output_key: None,
        max_attempts: None,
    }
    .validate(account, Timestamp::now())
    .unwrap()
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_on_two_nodes_take_each_job_exactly_once() {
    const JOBS: usize = 500;
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let (a, _) = node(&url).await;
    let (b, _) = node(&url).await;
    let acc = account(&a).await;
    let sessions = [session(&a, acc).await, session(&b, acc).await];
    let mut created = HashSet::new();
    for i in 0..JOBS {
        let store = if i % 2 == 0 { &a } else { &b };
        let (j, _) = store
            .create_job(
                acc,
                &SessionRef::Id(sessions[i % 2].id),
                job(acc, i),
                None,
                Box::new(|j: &mut Job, _s: &mut Session, _p: Option<&Job>| {
                    Ok(vec![j.created_event()])
                }),
            )
            .await
            .unwrap()
            .unwrap();
        created.insert(j.id);
    }
    let start = Arc::new(tokio::sync::Barrier::new(4));
    let mut tasks = Vec::new();
    for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut got = Vec::new();
            loop {
                let worker = format!("w{n}");
                let claimed = store
                    .claim_job(
                        Some(acc),
                        &["work".to_owned()],
                        Box::new(move |j: &mut Job, _s: &mut Session| {
                            Ok(vec![j.claim(Some(worker), 60, Timestamp::now())])
                        }),
                    )
                    .await
                    .unwrap();
                match claimed {
                    Some((j, _)) => got.push(j),
                    None => break,
                }
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut per_claimer = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        per_claimer.push(got.len());
        for j in got {
            assert_eq!(j.status, JobStatus::Running);
            assert_eq!(j.attempts, 1);
            assert!(seen.insert(j.id), "job {} was claimed twice", j.id);
        }
    }
    eprintln!("claims per claimer: {per_claimer:?}");
    assert_eq!(seen, created, "every job claimed exactly once");
    // Claimers 0 and 2 ran on node A, 1 and 3 on node B.
    assert!(
        per_claimer[0] + per_claimer[2] > 0 && per_claimer[1] + per_claimer[3] > 0,
        "both nodes took part"
    );
    for s in &sessions {
        for j in a.list_jobs(s.id).await.unwrap() {
            assert_eq!(j.status, JobStatus::Running);
        }
    }
    finish(&[&a, &b], &base, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_concurrently_from_several_nodes() {
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::migrate(&url).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().expect("migrate");
    }
    let mut c = PgConnection::connect(&url).await.unwrap();
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM sessiond_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(
        versions,
        (1..=PgStore::schema_version()).collect::<Vec<_>>()
    );
    // A database newer than this build is refused.
    sqlx::query("INSERT INTO sessiond_migrations VALUES (100000, 'future', 0)")
        .execute(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    let err = PgStore::migrate(&url).await.unwrap_err();
    assert!(
        err.to_string().contains("newer than this sessiond"),
        "{err}"
    );
    drop_database(&base, &url).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_round_trips_byte_exact_and_in_key_order() {
    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let (a, _) = node(&url).await;
    let acc = account(&a).await;
    let s = session(&a, acc).await;
    let got = a
        .get_session(acc, &SessionRef::Id(s.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_string(&got.metadata).unwrap(),
        r#"{"zeta":1,"alpha":{"y":2,"b":1}}"#
    );
    assert_eq!(
        serde_json::to_string(&got.data).unwrap(),
        r#"{"z":true,"a":[3,2,1]}"#
    );
    let raw = "{ \"b\" : 1,\n  \"a\": [1.50, \"\\u00e9\"] }";
    a.append_records(
        acc,
        &SessionRef::Id(s.id),
        "in",
        vec![NewRecord {
            id: "x".into(),
            data: raw.into(),
            headers: "{\"z\":1,\"a\":2}".into(),
            fresh: false,
        }],
        Box::new(|_| Ok(())),
        Timestamp::from_millis(1_234_567_890_123),
    )
    .await
    .unwrap()
    .unwrap();
    let page = a
        .read_records(s.id, "in", 0, 10, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.records[0].data.get(), raw);
    assert_eq!(page.records[0].headers.get(), "{\"z\":1,\"a\":2}");
    assert_eq!(page.records[0].created_at.millis(), 1_234_567_890_123);
    finish(&[&a], &base, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_shut_down_is_unavailable_and_describe_hides_the_password() {
    let err = PgStore::connect(
        "postgres://postgres@127.0.0.1:1/nope?connect_timeout=2",
        PgOptions {
            acquire_timeout: Duration::from_secs(2),
            ..PgOptions::default()
        },
        Hub::new(),
    )
    .await
    .err()
    .expect("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    let Some((base, url)) = cluster_db().await else {
        return;
    };
    let with_password = url.replacen("postgres://postgres@", "postgres://postgres:s3cret@", 1);
    let (a, _) = node(&with_password).await;
    let d = a.describe();
    assert!(
        d.starts_with("postgres ") && d.contains("/sessiond_t_"),
        "{d}"
    );
    assert!(!d.contains("s3cret"), "{d}");
    a.ping().await.unwrap();
    a.shutdown().await;
    // An exhausted pool answers Unavailable once the acquire timeout passes.
    let small = PgStore::connect(
        &url,
        PgOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(200),
            ..PgOptions::default()
        },
        Hub::new(),
    )
    .await
    .unwrap();
    let held = small.pool().acquire().await.unwrap();
    assert!(matches!(
        small.get_account(AccountId::random()).await,
        Err(StoreError::Unavailable(_))
    ));
    drop(held);
    small.get_account(AccountId::random()).await.unwrap();
    small.shutdown().await;
    assert!(matches!(a.ping().await, Err(StoreError::Unavailable(_))));
    assert!(matches!(
        a.get_account(AccountId::random()).await,
        Err(StoreError::Unavailable(_))
    ));
    drop_database(&base, &url).await.unwrap();
}

/// The documents and chats checks, on PostgreSQL and on SQLite: both must pass them alike.
macro_rules! parity_tests {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = super::fresh().await else {
                        return;
                    };
                    super::parity::$name(store.clone()).await;
                    store.shutdown().await;
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store: std::sync::Arc<dyn sessiond_store::Store> = std::sync::Arc::new(
                        sessiond_store_sqlite::SqliteStore::open(
                            dir.path().join("t.db"),
                            sessiond_store_sqlite::SqliteOptions::default(),
                        )
                        .unwrap(),
                    );
                    super::parity::$name(store.clone()).await;
                    store.shutdown().await;
                }
            )*
        }
    };
}

parity_tests!(
    documents_lifecycle_search_reuse_and_delete,
    chats_create_messages_reads_and_delete,
);
