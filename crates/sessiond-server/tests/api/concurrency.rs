//! Concurrent writers: optimistic concurrency with If-Match loses no update, concurrent creates
//! and idempotent creates race correctly.

use std::collections::{BTreeSet, HashSet};

use serde_json::{json, Value};

use crate::common::{id_of, path, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_if_match_writers_lose_no_update() {
    const CLIENTS: usize = 50;
    const MAX_ATTEMPTS: usize = 10 * CLIENTS;
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({"data": {}})).await);

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let api = s.api.clone();
        let p = path(&id);
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for n in 1..=MAX_ATTEMPTS {
                let r = api.get(&p).await;
                let current = r.expect(200);
                let tag = r.etag().to_owned();
                assert_eq!(tag, format!("\"{}\"", current["version"]));
                let r = api
                    .patch_if(&p, &tag, &json!({"data": { format!("c{c}"): n }}))
                    .await;
                match r.status {
                    200 => {
                        let body = r.json();
                        let v = body["version"].as_i64().unwrap();
                        assert_eq!(r.etag(), format!("\"{v}\""));
                        assert_eq!(v, current["version"].as_i64().unwrap() + 1);
                        // Everything the winner read is still there (nothing overwritten).
                        for (k, val) in current["data"].as_object().unwrap() {
                            assert_eq!(&body["data"][k], val, "{k} was lost");
                        }
                        return (c, n, v);
                    }
                    412 => r.expect_error(412, "version_mismatch"),
                    other => panic!("client {c}: unexpected {other}: {}", r.text),
                }
            }
            panic!("client {c} never won in {MAX_ATTEMPTS} attempts");
        }));
    }
    let mut versions = BTreeSet::new();
    let mut wins = Vec::new();
    for t in tasks {
        let (c, n, v) = t.await.unwrap();
        assert!(
            versions.insert(v),
            "version {v} was returned to two winners"
        );
        wins.push((c, n));
    }
    assert_eq!(versions, (2..=CLIENTS as i64 + 1).collect::<BTreeSet<_>>());

    let last = s.session(&id).await;
    assert_eq!(last["version"], CLIENTS as i64 + 1);
    let data = last["data"].as_object().unwrap();
    assert_eq!(data.len(), CLIENTS, "lost updates: {last}");
    for (c, n) in wins {
        assert_eq!(data[&format!("c{c}")], n, "client {c}'s winning write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_creates() {
    const N: usize = 200;
    let s = TestServer::start().await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let api = s.api.clone();
        tasks.push(tokio::spawn(async move {
            let r = api
                .post(
                    "/v1/sessions",
                    &json!({"title": format!("c{i}"), "data": {"i": i}}),
                )
                .await;
            let body = r.expect(201);
            assert_eq!(body["title"], format!("c{i}"));
            id_of(&body)
        }));
    }
    let mut created = HashSet::new();
    for t in tasks {
        let id = t.await.unwrap();
        assert!(created.insert(id.clone()), "id {id} given twice");
    }
    assert_eq!(created.len(), N);
    let listed = s.list_all("").await;
    assert_eq!(listed.len(), N);
    let listed: HashSet<String> = listed.iter().map(id_of).collect();
    assert_eq!(listed, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_external_id_make_one_session() {
    const N: usize = 30;
    let s = TestServer::start().await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let api = s.api.clone();
        tasks.push(tokio::spawn(async move {
            let r = api
                .post(
                    "/v1/sessions",
                    &json!({"externalId": "race", "title": format!("t{i}")}),
                )
                .await;
            let cached = r.header("x-sessiond-cached") == Some("true");
            let body = match r.status {
                201 => {
                    assert!(!cached);
                    r.json()
                }
                200 => {
                    assert!(cached, "200 without x-sessiond-cached");
                    r.json()
                }
                other => panic!("unexpected {other}: {}", r.text),
            };
            (r.status, body)
        }));
    }
    let mut results: Vec<(u16, Value)> = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        results.iter().filter(|(st, _)| *st == 201).count(),
        1,
        "exactly one create wins"
    );
    let winner = results.iter().find(|(st, _)| *st == 201).unwrap().1.clone();
    for (_, body) in &results {
        assert_eq!(body, &winner, "every caller gets the one session");
    }
    assert_eq!(s.list_all("").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_closes_agree() {
    const N: usize = 20;
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({})).await);
    let mut tasks = Vec::new();
    for i in 0..N {
        let api = s.api.clone();
        let p = format!("{}/close", path(&id));
        tasks.push(tokio::spawn(async move {
            api.post(&p, &json!({"reason": format!("r{i}")}))
                .await
                .expect(200)
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        bodies.push(t.await.unwrap());
    }
    let last = s.session(&id).await;
    assert_eq!(last["version"], 2, "one close, one version bump");
    for b in &bodies {
        assert_eq!(b, &last, "every close answers the one closed state");
    }
}
