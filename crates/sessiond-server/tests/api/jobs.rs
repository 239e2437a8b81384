//! Jobs: create, list, the worker protocol (claim, heartbeat, complete, fail, cancel), leases and
//! their expiry, retries, reuse, output keys, and how jobs follow their session's close and
//! delete.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sessiond_core::Timestamp;
use sessiond_server::AppOptions;
use uuid::Uuid;

use crate::common::{id_of, path, Api, Resp, TestServer};

/// Every key of a job as the API renders it (a claim adds `leaseId`).
const JOB_KEYS: &[&str] = &[
    "id",
    "sessionId",
    "type",
    "status",
    "input",
    "result",
    "error",
    "progress",
    "attempts",
    "maxAttempts",
    "reusedFrom",
    "outputKey",
    "leaseExpiresAt",
    "createdAt",
    "startedAt",
    "finishedAt",
    "updatedAt",
];

fn jobs_of(session: &str) -> String {
    format!("{}/jobs", path(session))
}

fn job_url(id: &str) -> String {
    format!("/v1/jobs/{id}")
}

fn action(id: &str, what: &str) -> String {
    format!("/v1/jobs/{id}/{what}")
}

/// Asserts the documented shape: every key present (nullable ones as `null`), nothing else
/// (but `leaseId` on a claim), timestamps in UTC with `Z`.
#[track_caller]
fn assert_job_shape(j: &Value) {
    let obj = j
        .as_object()
        .unwrap_or_else(|| panic!("a job is an object: {j}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.retain(|k| *k != "leaseId");
    keys.sort_unstable();
    let mut want = JOB_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "job keys: {j}");
    for k in [
        "leaseExpiresAt",
        "createdAt",
        "startedAt",
        "finishedAt",
        "updatedAt",
    ] {
        if let Some(t) = j[k].as_str() {
            assert!(t.ends_with('Z'), "{k} is not UTC with Z: {j}");
            assert!(
                Timestamp::parse_rfc3339(t).is_some(),
                "{k} is not RFC 3339: {j}"
            );
        } else {
            assert!(j[k].is_null(), "{k} is neither a timestamp nor null: {j}");
        }
    }
    Uuid::parse_str(j["id"].as_str().unwrap()).expect("job id is a UUID");
}

#[track_caller]
fn millis(j: &Value, key: &str) -> i64 {
    Timestamp::parse_rfc3339(
        j[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is null: {j}")),
    )
    .unwrap()
    .millis()
}

/// The job as `GET /v1/jobs/{id}` shows it: a claim response without its `leaseId`.
fn without_lease(j: &Value) -> Value {
    let mut j = j.clone();
    j.as_object_mut().unwrap().remove("leaseId");
    j
}

async fn create_job(api: &Api, session: &str, body: Value) -> Value {
    let j = api.post(&jobs_of(session), &body).await.expect(201);
    assert_job_shape(&j);
    j
}

/// A claim: `Some(job)` on 200, `None` on 204 (with an empty body).
async fn claim(api: &Api, body: Value) -> Option<Value> {
    let r = api.post("/v1/jobs/claim", &body).await;
    match r.status {
        200 => {
            let j = r.json();
            assert_job_shape(&j);
            Uuid::parse_str(j["leaseId"].as_str().expect("a claim has a leaseId"))
                .expect("leaseId is a UUID");
            assert_eq!(j["status"], "running", "{j}");
            Some(j)
        }
        204 => {
            assert!(r.text.is_empty(), "204 with a body: {:?}", r.text);
            None
        }
        other => panic!("{} answered {other}: {}", r.what, r.text),
    }
}

/// Claims the oldest queued job of `kind` (one must be queued).
async fn claim_type(api: &Api, kind: &str) -> Value {
    claim(api, json!({ "types": [kind] }))
        .await
        .unwrap_or_else(|| panic!("no {kind} job to claim"))
}

fn lease(j: &Value) -> String {
    j["leaseId"].as_str().expect("leaseId").to_owned()
}

async fn get_job(api: &Api, id: &str) -> Value {
    let j = api.get(&job_url(id)).await.expect(200);
    assert_job_shape(&j);
    assert!(j.get("leaseId").is_none(), "GET shows no leaseId: {j}");
    j
}

async fn list_jobs(api: &Api, session: &str) -> Vec<Value> {
    let v = api.get(&jobs_of(session)).await.expect(200);
    let rows = v.as_array().expect("a list of jobs").clone();
    rows.iter().for_each(assert_job_shape);
    rows
}

async fn heartbeat(api: &Api, id: &str, lease: &str, progress: Option<Value>) -> Resp {
    let mut body = json!({ "leaseId": lease });
    if let Some(p) = progress {
        body["progress"] = p;
    }
    api.post(&action(id, "heartbeat"), &body).await
}

async fn complete(api: &Api, id: &str, lease: &str, result: Value) -> Resp {
    api.post(
        &action(id, "complete"),
        &json!({ "leaseId": lease, "result": result }),
    )
    .await
}

async fn fail(api: &Api, id: &str, lease: &str, error: Value, retry: Option<bool>) -> Resp {
    let mut body = json!({ "leaseId": lease, "error": error });
    if let Some(r) = retry {
        body["retry"] = json!(r);
    }
    api.post(&action(id, "fail"), &body).await
}

/// Cancel without a body (it takes none).
async fn cancel(api: &Api, id: &str) -> Resp {
    api.send(Method::POST, &action(id, "cancel"), |rb| rb).await
}

/// Every record of the session's `events` channel.
async fn event_records(api: &Api, session: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .get(&format!(
                "{}/channels/events/records?after={after}&limit=1000",
                path(session)
            ))
            .await
            .expect(200);
        let recs = page["records"].as_array().expect("records").clone();
        if recs.is_empty() {
            return out;
        }
        after = recs.last().unwrap()["seq"].as_i64().unwrap();
        out.extend(recs);
    }
}

/// The `data` of every event of the session.
async fn events(api: &Api, session: &str) -> Vec<Value> {
    event_records(api, session)
        .await
        .into_iter()
        .map(|r| r["data"].clone())
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The types of the events about one job, in order.
fn job_events(events: &[Value], job: &str) -> Vec<String> {
    types(
        &events
            .iter()
            .filter(|e| e["jobId"] == job)
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// What a rejected request must leave as it was: the session, its jobs and its events.
async fn snapshot(api: &Api, session: &str) -> Value {
    json!({
        "session": api.session(session).await,
        "jobs": list_jobs(api, session).await,
        "events": event_records(api, session).await,
    })
}

async fn poll_until_not_running(api: &Api, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let j = get_job(api, id).await;
        if j["status"] != "running" {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still running after {within:?}: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_get_and_list_jobs() {
    let s = TestServer::start().await;
    let sess = s.create(json!({"externalId": "job-ext"})).await;
    let sid = id_of(&sess);
    assert!(list_jobs(&s, &sid).await.is_empty());

    let j1 = create_job(
        &s,
        "job-ext",
        json!({"type": "scrape", "input": {"url": "https://example.com", "depth": 2},
               "outputKey": "scrape", "maxAttempts": 5}),
    )
    .await;
    assert_eq!(j1["sessionId"], sid);
    assert_eq!(j1["type"], "scrape");
    assert_eq!(j1["status"], "queued");
    assert_eq!(
        j1["input"],
        json!({"url": "https://example.com", "depth": 2})
    );
    assert_eq!(j1["attempts"], 0);
    assert_eq!(j1["maxAttempts"], 5);
    assert_eq!(j1["outputKey"], "scrape");
    for k in [
        "result",
        "error",
        "progress",
        "reusedFrom",
        "leaseExpiresAt",
        "startedAt",
        "finishedAt",
    ] {
        assert!(j1[k].is_null(), "{k} of a new job: {j1}");
    }
    assert_eq!(j1["createdAt"], j1["updatedAt"]);

    // Defaults: input {}, maxAttempts 3, no outputKey.
    let j2 = create_job(&s, &sid, json!({"type": "discovery.discovery"})).await;
    assert_eq!(j2["input"], json!({}));
    assert_eq!(j2["maxAttempts"], 3);
    assert!(j2["outputKey"].is_null());
    let j3 = create_job(
        &s,
        &sid,
        json!({"type": "a:b/c-d_E9", "input": null, "reuse": false, "maxAttempts": 1}),
    )
    .await;
    assert_eq!(j3["input"], json!({}));
    assert_eq!(j3["maxAttempts"], 1);

    assert_eq!(get_job(&s, &id_of(&j1)).await, j1);
    for r in [sid.as_str(), "job-ext"] {
        let rows = list_jobs(&s, r).await;
        assert_eq!(
            rows,
            vec![j1.clone(), j2.clone(), j3.clone()],
            "oldest first"
        );
    }
    // Jobs are not changes to the session resource.
    assert_eq!(s.session(&sid).await["version"], 1);

    let ev = events(&s, &sid).await;
    assert_eq!(
        types(&ev),
        vec!["session.created", "job.queued", "job.queued", "job.queued"]
    );
    assert_eq!(
        ev[1],
        json!({"type": "job.queued", "sessionId": sid, "jobId": id_of(&j1),
               "jobType": "scrape", "status": "queued", "attempts": 0})
    );
}

#[tokio::test]
async fn claim_heartbeat_complete_round_trip() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let j = create_job(&s, &sid, json!({"type": "render", "input": {"n": 1}})).await;
    let id = id_of(&j);

    assert!(claim(&s, json!({"types": ["other"]})).await.is_none());
    let c = claim(
        &s,
        json!({"types": ["other", "render"], "leaseSeconds": 30, "workerId": "w-1"}),
    )
    .await
    .expect("the render job");
    let l = lease(&c);
    assert_eq!(id_of(&c), id);
    assert_eq!(c["attempts"], 1);
    assert!(c["finishedAt"].is_null());
    assert_eq!(
        millis(&c, "leaseExpiresAt") - millis(&c, "startedAt"),
        30_000,
        "the lease runs leaseSeconds from the claim: {c}"
    );
    assert_eq!(get_job(&s, &id).await, without_lease(&c));
    assert!(
        claim(&s, json!({"types": ["render"]})).await.is_none(),
        "a running job is not claimed again"
    );

    let hb = heartbeat(&s, &id, &l, Some(json!({"pct": 50})))
        .await
        .expect(200);
    assert_job_shape(&hb);
    assert_eq!(hb["status"], "running");
    assert_eq!(hb["progress"], json!({"pct": 50}));
    assert!(millis(&hb, "leaseExpiresAt") >= millis(&c, "leaseExpiresAt"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let hb2 = heartbeat(&s, &id, &l, None).await.expect(200);
    assert_eq!(hb2["progress"], json!({"pct": 50}), "progress kept");
    assert!(
        millis(&hb2, "leaseExpiresAt") > millis(&hb, "leaseExpiresAt"),
        "a heartbeat extends the lease"
    );
    assert_eq!(
        millis(&hb2, "leaseExpiresAt") - millis(&hb2, "updatedAt"),
        30_000,
        "extended by the claim's leaseSeconds: {hb2}"
    );

    let done = complete(&s, &id, &l, json!({"ok": true})).await.expect(200);
    assert_job_shape(&done);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"], json!({"ok": true}));
    assert_eq!(done["attempts"], 1);
    assert!(done["error"].is_null());
    assert!(done["leaseExpiresAt"].is_null());
    assert!(done["finishedAt"].is_string());
    assert_eq!(get_job(&s, &id).await, done);

    let ev = events(&s, &sid).await;
    assert_eq!(
        job_events(&ev, &id),
        vec!["job.queued", "job.running", "job.progress", "job.succeeded"],
        "a heartbeat without progress records nothing"
    );
    let running = ev.iter().find(|e| e["type"] == "job.running").unwrap();
    assert_eq!(running["status"], "running");
    assert_eq!(running["attempts"], 1);
    let progress = ev.iter().find(|e| e["type"] == "job.progress").unwrap();
    assert_eq!(progress["progress"], json!({"pct": 50}));
    let succeeded = ev.iter().find(|e| e["type"] == "job.succeeded").unwrap();
    assert_eq!(succeeded["status"], "succeeded");

    // A finished job: the lease is gone, cancel returns it unchanged.
    let before = snapshot(&s, &sid).await;
    complete(&s, &id, &l, json!(2))
        .await
        .expect_error(409, "lease_lost");
    heartbeat(&s, &id, &l, None)
        .await
        .expect_error(409, "lease_lost");
    fail(&s, &id, &l, json!("x"), None)
        .await
        .expect_error(409, "lease_lost");
    assert_eq!(cancel(&s, &id).await.expect(200), done);
    assert_eq!(snapshot(&s, &sid).await, before, "nothing changed");

    // Boundaries that are accepted: leaseSeconds 5 and 3600, wait 60 (a job is queued: no wait).
    for n in 0..3 {
        create_job(&s, &sid, json!({"type": "b", "input": {"n": n}})).await;
    }
    let c5 = claim(&s, json!({"types": ["b"], "leaseSeconds": 5}))
        .await
        .unwrap();
    assert_eq!(
        millis(&c5, "leaseExpiresAt") - millis(&c5, "startedAt"),
        5_000
    );
    let c3600 = claim(&s, json!({"types": ["b"], "leaseSeconds": 3600}))
        .await
        .unwrap();
    assert_eq!(
        millis(&c3600, "leaseExpiresAt") - millis(&c3600, "startedAt"),
        3_600_000
    );
    let t = Instant::now();
    claim(
        &s,
        json!({"types": ["b"], "wait": 60, "workerId": "w".repeat(256)}),
    )
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    // Cancel also accepts an empty JSON object.
    let q = create_job(&s, &sid, json!({"type": "c"})).await;
    let r = s.post(&action(&id_of(&q), "cancel"), &json!({})).await;
    assert_eq!(r.expect(200)["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_takes_the_oldest_of_the_named_types_and_long_polls() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let a1 = create_job(&s, &sid, json!({"type": "a", "input": {"n": 1}})).await;
    let b1 = create_job(&s, &sid, json!({"type": "b"})).await;
    let a2 = create_job(&s, &sid, json!({"type": "a", "input": {"n": 2}})).await;
    assert_eq!(id_of(&claim_type(&s, "a").await), id_of(&a1));
    let next = claim(&s, json!({"types": ["b", "a"]})).await.unwrap();
    assert_eq!(id_of(&next), id_of(&b1), "the oldest of either type");
    assert_eq!(id_of(&claim_type(&s, "a").await), id_of(&a2));
    assert!(claim(&s, json!({"types": ["a", "b"]})).await.is_none());

    // With nothing to claim, `wait` is honoured, then 204.
    let t = Instant::now();
    assert!(claim(&s, json!({"types": ["a"], "wait": 1}))
        .await
        .is_none());
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );

    // A long-poll returns as soon as a job of its type is queued.
    let api = s.api.clone();
    let t = Instant::now();
    let waiter =
        tokio::spawn(async move { claim(&api, json!({"types": ["late"], "wait": 20})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A job of another type does not end the wait with it.
    create_job(&s, &sid, json!({"type": "unrelated"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = create_job(&s, &sid, json!({"type": "late"})).await;
    let got = waiter.await.unwrap().expect("the late job");
    assert_eq!(id_of(&got), id_of(&late));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(get_job(&s, &id_of(&late)).await["status"], "running");
    assert_eq!(
        list_jobs(&s, &sid)
            .await
            .iter()
            .find(|j| j["type"] == "unrelated")
            .unwrap()["status"],
        "queued"
    );
}

#[tokio::test]
async fn bad_create_requests_change_nothing() {
    let s = TestServer::start().await;
    let sid = id_of(
        &s.create(json!({"externalId": "bad-create", "data": {"k": 1}}))
            .await,
    );
    let p = jobs_of(&sid);
    let before = snapshot(&s, &sid).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({}), 422, "invalid_body"),
        (json!({"input": {}}), 422, "invalid_body"),
        (json!({"type": 5}), 422, "invalid_body"),
        (json!({"type": null}), 422, "invalid_body"),
        (json!({"type": ""}), 422, "invalid_field"),
        (json!({"type": "has space"}), 422, "invalid_field"),
        (json!({"type": "caf\u{e9}"}), 422, "invalid_field"),
        (json!({"type": "x".repeat(129)}), 422, "invalid_field"),
        (json!({"type": "t", "unknown": 1}), 422, "invalid_body"),
        (json!({"type": "t", "sessionId": sid}), 422, "invalid_body"),
        (json!({"type": "t", "input": [1]}), 422, "invalid_field"),
        (json!({"type": "t", "input": "s"}), 422, "invalid_field"),
        (json!({"type": "t", "input": 5}), 422, "invalid_field"),
        (json!({"type": "t", "maxAttempts": 0}), 422, "invalid_field"),
        (
            json!({"type": "t", "maxAttempts": 101}),
            422,
            "invalid_field",
        ),
        (
            json!({"type": "t", "maxAttempts": -1}),
            422,
            "invalid_field",
        ),
        (
            json!({"type": "t", "maxAttempts": "3"}),
            422,
            "invalid_body",
        ),
        (
            json!({"type": "t", "maxAttempts": 1.5}),
            422,
            "invalid_body",
        ),
        (json!({"type": "t", "outputKey": ""}), 422, "invalid_field"),
        (
            json!({"type": "t", "outputKey": " k"}),
            422,
            "invalid_field",
        ),
        (
            json!({"type": "t", "outputKey": "k "}),
            422,
            "invalid_field",
        ),
        (
            json!({"type": "t", "outputKey": "a\nb"}),
            422,
            "invalid_field",
        ),
        (
            json!({"type": "t", "outputKey": "k".repeat(257)}),
            422,
            "invalid_field",
        ),
        (json!({"type": "t", "outputKey": 5}), 422, "invalid_body"),
        (json!({"type": "t", "reuse": "yes"}), 422, "invalid_body"),
        (json!([{"type": "t"}]), 422, "invalid_body"),
    ];
    for (body, status, code) in &cases {
        let r = s.post(&p, body).await;
        r.expect_error(*status, code);
        assert_eq!(snapshot(&s, &sid).await, before, "after {body}");
    }
    s.raw(Method::POST, &p, "application/json", "{not json")
        .await
        .expect_error(400, "invalid_json");
    s.raw(Method::POST, &p, "application/json", "")
        .await
        .expect_error(400, "invalid_json");
    s.raw(Method::POST, &p, "text/plain", r#"{"type":"t"}"#)
        .await
        .expect_error(415, "unsupported_media_type");
    let missing = Uuid::new_v4().to_string();
    for r in [missing.as_str(), "no-such-external-id"] {
        s.post(&jobs_of(r), &json!({"type": "t"}))
            .await
            .expect_error(404, "session_not_found");
        s.get(&jobs_of(r))
            .await
            .expect_error(404, "session_not_found");
    }
    assert_eq!(snapshot(&s, &sid).await, before);

    // The edges of each limit are accepted.
    for body in [
        json!({"type": "x".repeat(128)}),
        json!({"type": "t", "maxAttempts": 1}),
        json!({"type": "t", "maxAttempts": 100}),
        json!({"type": "t", "outputKey": "k".repeat(256)}),
        json!({"type": "t", "outputKey": "spaces inside are fine"}),
    ] {
        create_job(&s, &sid, body).await;
    }
}

#[tokio::test]
async fn an_input_over_one_mebibyte_is_413() {
    let s = TestServer::start_with(AppOptions {
        max_body_bytes: 4 << 20,
        ..AppOptions::default()
    })
    .await;
    let sid = id_of(&s.create(json!({})).await);
    let before = snapshot(&s, &sid).await;
    // `{"blob":"…"}` is 11 bytes around the string.
    let over = "x".repeat((1 << 20) - 10);
    s.post(
        &jobs_of(&sid),
        &json!({"type": "big", "input": {"blob": over}}),
    )
    .await
    .expect_error(413, "payload_too_large");
    assert_eq!(snapshot(&s, &sid).await, before);
    let exact = "x".repeat((1 << 20) - 11);
    let j = create_job(&s, &sid, json!({"type": "big", "input": {"blob": exact}})).await;
    assert_eq!(j["input"]["blob"].as_str().unwrap().len(), (1 << 20) - 11);

    // With the default body limit, the body itself is too large.
    let d = TestServer::start().await;
    let did = id_of(&d.create(json!({})).await);
    d.post(
        &jobs_of(&did),
        &json!({"type": "big", "input": {"blob": "x".repeat(1 << 20)}}),
    )
    .await
    .expect_error(413, "payload_too_large");
    assert!(list_jobs(&d, &did).await.is_empty());
}

#[tokio::test]
async fn bad_worker_requests_change_nothing() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let q = create_job(&s, &sid, json!({"type": "q"})).await;
    let qid = id_of(&q);
    create_job(&s, &sid, json!({"type": "r"})).await;
    let r = claim_type(&s, "r").await;
    let rid = id_of(&r);
    let l = lease(&r);
    let before = snapshot(&s, &sid).await;

    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let claims: Vec<(Value, &str)> = vec![
        (json!({}), "invalid_body"),
        (json!({"types": "q"}), "invalid_body"),
        (json!({"types": ["q"], "leaseSeconds": 4}), "invalid_field"),
        (
            json!({"types": ["q"], "leaseSeconds": 3601}),
            "invalid_field",
        ),
        (json!({"types": ["q"], "leaseSeconds": 0}), "invalid_field"),
        (json!({"types": ["q"], "leaseSeconds": -5}), "invalid_field"),
        (
            json!({"types": ["q"], "leaseSeconds": "60"}),
            "invalid_body",
        ),
        (json!({"types": ["q"], "wait": 61}), "invalid_field"),
        (json!({"types": ["q"], "wait": -1}), "invalid_body"),
        (json!({"types": ["q"], "wait": 1.5}), "invalid_body"),
        (
            json!({"types": ["q"], "workerId": "w".repeat(257)}),
            "invalid_field",
        ),
        (json!({"types": many}), "invalid_field"),
        (json!({"types": ["q"], "extra": true}), "invalid_body"),
    ];
    for (body, code) in &claims {
        s.post("/v1/jobs/claim", body).await.expect_error(422, code);
        assert_eq!(snapshot(&s, &sid).await, before, "after claim {body}");
    }
    for raw in ["{", ""] {
        s.raw(Method::POST, "/v1/jobs/claim", "application/json", raw)
            .await
            .expect_error(400, "invalid_json");
    }

    let bodies: Vec<(&str, Value)> = vec![
        ("heartbeat", json!({})),
        ("heartbeat", json!({"leaseId": "nope"})),
        ("heartbeat", json!({"leaseId": 5})),
        ("heartbeat", json!({"leaseId": l, "extra": 1})),
        ("complete", json!({"result": 1})),
        ("complete", json!({"leaseId": l})),
        ("complete", json!({"leaseId": "nope", "result": 1})),
        ("complete", json!({"leaseId": l, "result": 1, "extra": 1})),
        ("fail", json!({"error": "x"})),
        ("fail", json!({"leaseId": l})),
        ("fail", json!({"leaseId": l, "error": "x", "retry": "no"})),
        ("fail", json!({"leaseId": l, "error": "x", "extra": 1})),
    ];
    for (what, body) in &bodies {
        s.post(&action(&rid, what), body)
            .await
            .expect_error(422, "invalid_body");
        assert_eq!(snapshot(&s, &sid).await, before, "after {what} {body}");
    }
    for raw in ["{", "[1]"] {
        let r = s
            .raw(
                Method::POST,
                &action(&rid, "cancel"),
                "application/json",
                raw,
            )
            .await;
        assert!(
            r.status == 400 || r.status == 422,
            "cancel with {raw:?}: {} {}",
            r.status,
            r.text
        );
    }
    assert_eq!(snapshot(&s, &sid).await, before);

    // Someone else's lease, or a lease on a job that is not running: 409, nothing changes.
    let stranger = Uuid::new_v4().to_string();
    for (id, l) in [
        (rid.as_str(), stranger.as_str()),
        (qid.as_str(), l.as_str()),
    ] {
        heartbeat(&s, id, l, Some(json!({"p": 1})))
            .await
            .expect_error(409, "lease_lost");
        complete(&s, id, l, json!(1))
            .await
            .expect_error(409, "lease_lost");
        fail(&s, id, l, json!("x"), Some(false))
            .await
            .expect_error(409, "lease_lost");
        assert_eq!(snapshot(&s, &sid).await, before, "after lease {l} on {id}");
    }

    // No such job.
    let missing = Uuid::new_v4().to_string();
    for id in [missing.as_str(), "not-a-uuid"] {
        s.get(&job_url(id)).await.expect_error(404, "job_not_found");
        heartbeat(&s, id, &l, None)
            .await
            .expect_error(404, "job_not_found");
        complete(&s, id, &l, json!(1))
            .await
            .expect_error(404, "job_not_found");
        fail(&s, id, &l, json!("x"), None)
            .await
            .expect_error(404, "job_not_found");
        cancel(&s, id).await.expect_error(404, "job_not_found");
    }
    assert_eq!(snapshot(&s, &sid).await, before);

    // The real lease still works.
    assert_eq!(
        complete(&s, &rid, &l, json!(1)).await.expect(200)["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn fail_retries_until_max_attempts() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let j = create_job(&s, &sid, json!({"type": "flaky", "maxAttempts": 3})).await;
    let id = id_of(&j);
    for attempt in 1..=3 {
        let c = claim_type(&s, "flaky").await;
        assert_eq!(id_of(&c), id);
        assert_eq!(c["attempts"], attempt);
        let l = lease(&c);
        let f = fail(
            &s,
            &id,
            &l,
            json!({"message": format!("boom {attempt}")}),
            None,
        )
        .await
        .expect(200);
        assert_job_shape(&f);
        assert_eq!(f["attempts"], attempt);
        assert_eq!(f["error"], json!({"message": format!("boom {attempt}")}));
        assert!(f["leaseExpiresAt"].is_null());
        if attempt < 3 {
            assert_eq!(f["status"], "queued", "attempts remain: {f}");
            assert!(f["finishedAt"].is_null());
        } else {
            assert_eq!(f["status"], "failed", "the last attempt: {f}");
            assert!(f["finishedAt"].is_string());
        }
        assert_eq!(get_job(&s, &id).await, f);
        // The failed attempt's lease is gone.
        complete(&s, &id, &l, json!(1))
            .await
            .expect_error(409, "lease_lost");
    }
    assert!(claim(&s, json!({"types": ["flaky"]})).await.is_none());
    let failed = get_job(&s, &id).await;
    assert_eq!(
        cancel(&s, &id).await.expect(200),
        failed,
        "final stays final"
    );
    let ev = events(&s, &sid).await;
    assert_eq!(
        job_events(&ev, &id),
        vec![
            "job.queued",
            "job.running",
            "job.queued",
            "job.running",
            "job.queued",
            "job.running",
            "job.failed"
        ]
    );
    let requeue = ev
        .iter()
        .filter(|e| e["jobId"] == id && e["type"] == "job.queued")
        .nth(1)
        .unwrap();
    assert_eq!(requeue["detail"]["error"], json!({"message": "boom 1"}));
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "job.failed");
    assert_eq!(last["detail"]["error"], json!({"message": "boom 3"}));

    // retry: false fails at once, whatever attempts remain.
    let k = create_job(&s, &sid, json!({"type": "fatal", "maxAttempts": 5})).await;
    let c = claim_type(&s, "fatal").await;
    let f = fail(&s, &id_of(&k), &lease(&c), json!("bad input"), Some(false))
        .await
        .expect(200);
    assert_eq!(f["status"], "failed");
    assert_eq!(f["attempts"], 1);
    assert!(claim(&s, json!({"types": ["fatal"]})).await.is_none());
    // maxAttempts 1: the first failure is final.
    let once = create_job(&s, &sid, json!({"type": "once", "maxAttempts": 1})).await;
    let c = claim_type(&s, "once").await;
    let f = fail(&s, &id_of(&once), &lease(&c), json!("x"), Some(true))
        .await
        .expect(200);
    assert_eq!(f["status"], "failed");
    // A retried job can still succeed.
    let m = create_job(&s, &sid, json!({"type": "recover", "maxAttempts": 2})).await;
    let c = claim_type(&s, "recover").await;
    fail(&s, &id_of(&m), &lease(&c), json!("transient"), Some(true))
        .await
        .expect(200);
    let c = claim_type(&s, "recover").await;
    assert_eq!(c["attempts"], 2);
    let done = complete(&s, &id_of(&m), &lease(&c), json!("ok"))
        .await
        .expect(200);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_requeues_the_job_or_fails_it_on_the_last_attempt() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let j = create_job(&s, &sid, json!({"type": "slow", "maxAttempts": 3})).await;
    let id = id_of(&j);
    let last = create_job(&s, &sid, json!({"type": "last", "maxAttempts": 1})).await;
    let last_id = id_of(&last);

    let claimed_at = Instant::now();
    let c1 = claim(&s, json!({"types": ["slow"], "leaseSeconds": 5}))
        .await
        .unwrap();
    let l1 = lease(&c1);
    let cl = claim(&s, json!({"types": ["last"], "leaseSeconds": 5}))
        .await
        .unwrap();
    assert!(
        claim(&s, json!({"types": ["slow"]})).await.is_none(),
        "the lease is live"
    );

    // A long-poll returns once the expired lease has put the job back in the queue.
    let c2 = claim(
        &s,
        json!({"types": ["slow"], "wait": 20, "leaseSeconds": 60}),
    )
    .await
    .expect("the job is claimable again before the long-poll ends");
    let after = claimed_at.elapsed();
    assert!(
        after >= Duration::from_millis(4900) && after < Duration::from_secs(12),
        "claimable again after {after:?} (lease 5 s, swept every 1 s)"
    );
    assert_eq!(id_of(&c2), id);
    assert_eq!(c2["attempts"], 2);
    let l2 = lease(&c2);
    assert_ne!(l1, l2);

    // The last attempt's lease ran out at about the same time: failed, with lease_expired. Wait
    // for it first, so that the sweep cannot change the session between the two snapshots below.
    let f = poll_until_not_running(&s, &last_id, Duration::from_secs(10)).await;
    assert_eq!(f["status"], "failed", "{f}");
    assert_eq!(f["error"]["code"], "lease_expired", "{f}");
    assert_eq!(f["attempts"], 1);
    assert!(f["finishedAt"].is_string());
    assert!(f["leaseExpiresAt"].is_null());

    let before = snapshot(&s, &sid).await;
    complete(&s, &id, &l1, json!("late"))
        .await
        .expect_error(409, "lease_lost");
    heartbeat(&s, &id, &l1, None)
        .await
        .expect_error(409, "lease_lost");
    fail(&s, &id, &l1, json!("late"), None)
        .await
        .expect_error(409, "lease_lost");
    assert_eq!(
        snapshot(&s, &sid).await,
        before,
        "the old lease changes nothing"
    );
    let done = complete(&s, &id, &l2, json!("on time")).await.expect(200);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"], "on time");

    complete(&s, &last_id, &lease(&cl), json!(1))
        .await
        .expect_error(409, "lease_lost");

    let ev = events(&s, &sid).await;
    assert_eq!(
        job_events(&ev, &id),
        vec![
            "job.queued",
            "job.running",
            "job.queued",
            "job.running",
            "job.succeeded"
        ]
    );
    let requeue = ev
        .iter()
        .filter(|e| e["jobId"] == id && e["type"] == "job.queued")
        .nth(1)
        .unwrap();
    assert_eq!(requeue["detail"]["error"]["code"], "lease_expired");
    assert_eq!(
        job_events(&ev, &last_id),
        vec!["job.queued", "job.running", "job.failed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_lease_alive_past_its_first_expiry() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let j = create_job(&s, &sid, json!({"type": "long"})).await;
    let id = id_of(&j);
    let c = claim(&s, json!({"types": ["long"], "leaseSeconds": 5}))
        .await
        .unwrap();
    let l = lease(&c);
    let start = Instant::now();
    let mut expires = millis(&c, "leaseExpiresAt");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let hb = heartbeat(&s, &id, &l, None).await.expect(200);
        assert_eq!(hb["status"], "running");
        let e = millis(&hb, "leaseExpiresAt");
        assert!(e > expires, "the lease moves forward");
        expires = e;
        assert!(claim(&s, json!({"types": ["long"]})).await.is_none());
    }
    assert!(
        start.elapsed() > Duration::from_secs(7),
        "past the first expiry"
    );
    let done = complete(&s, &id, &l, json!("finished")).await.expect(200);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 1);
    assert_eq!(
        job_events(&events(&s, &sid).await, &id),
        vec!["job.queued", "job.running", "job.succeeded"],
        "never requeued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_workers_drain_two_thousand_jobs_exactly_once() {
    const SESSIONS: usize = 4;
    const PER_SESSION: usize = 500;
    const JOBS: usize = SESSIONS * PER_SESSION;
    const WORKERS: usize = 8;
    let s = TestServer::start().await;
    let mut sessions = Vec::new();
    for k in 0..SESSIONS {
        sessions.push(id_of(
            &s.create(json!({"title": format!("batch {k}")})).await,
        ));
    }
    let completed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(240);

    let mut producers = Vec::new();
    for (k, sid) in sessions.iter().enumerate() {
        let api = s.api.clone();
        let sid = sid.clone();
        producers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..PER_SESSION {
                let n = k * PER_SESSION + i;
                let j = api
                    .post(
                        &jobs_of(&sid),
                        &json!({"type": "work", "input": {"n": n}, "reuse": false}),
                    )
                    .await
                    .expect(201);
                made.push((id_of(&j), n));
            }
            made
        }));
    }
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let api = s.api.clone();
        let completed = completed.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                assert!(
                    Instant::now() < deadline,
                    "worker {w}: {} of {JOBS} completed before the deadline",
                    completed.load(Ordering::SeqCst)
                );
                let body = json!({"types": ["work"], "wait": 1, "leaseSeconds": 120,
                                  "workerId": format!("w{w}")});
                let r = api.post("/v1/jobs/claim", &body).await;
                match r.status {
                    200 => {
                        let j = r.json();
                        assert_eq!(j["attempts"], 1, "{j}");
                        let id = id_of(&j);
                        let n = j["input"]["n"].as_u64().unwrap();
                        let done = api
                            .post(
                                &action(&id, "complete"),
                                &json!({"leaseId": j["leaseId"], "result": {"n": n, "worker": w}}),
                            )
                            .await
                            .expect(200);
                        assert_eq!(done["status"], "succeeded");
                        completed.fetch_add(1, Ordering::SeqCst);
                        mine.push(id);
                    }
                    204 => {
                        if completed.load(Ordering::SeqCst) >= JOBS {
                            return mine;
                        }
                    }
                    other => panic!("worker {w}: claim answered {other}: {}", r.text),
                }
            }
        }));
    }
    let mut created: HashMap<String, usize> = HashMap::new();
    for p in producers {
        for (id, n) in p.await.unwrap() {
            assert!(created.insert(id, n).is_none());
        }
    }
    let mut by: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for (w, t) in workers.into_iter().enumerate() {
        for id in t.await.unwrap() {
            total += 1;
            assert!(
                by.insert(id.clone(), w).is_none(),
                "job {id} completed twice"
            );
        }
    }
    assert_eq!(total, JOBS);
    assert_eq!(
        by.keys().collect::<HashSet<_>>(),
        created.keys().collect::<HashSet<_>>(),
        "every job completed, none missing"
    );
    for sid in &sessions {
        let rows = list_jobs(&s, sid).await;
        assert_eq!(rows.len(), PER_SESSION);
        for j in &rows {
            let id = id_of(j);
            assert_eq!(j["status"], "succeeded", "{j}");
            assert_eq!(j["attempts"], 1, "{j}");
            assert_eq!(j["input"]["n"], created[&id], "{j}");
            assert_eq!(j["result"], json!({"n": created[&id], "worker": by[&id]}));
        }
        let ev = events(&s, sid).await;
        assert_eq!(ev.len(), 1 + 3 * PER_SESSION, "one event per transition");
        let mut per: HashMap<String, Vec<String>> = HashMap::new();
        for e in &ev[1..] {
            per.entry(e["jobId"].as_str().unwrap().to_owned())
                .or_default()
                .push(e["type"].as_str().unwrap().to_owned());
        }
        assert_eq!(per.len(), PER_SESSION);
        for (id, kinds) in per {
            assert_eq!(
                kinds,
                vec!["job.queued", "job.running", "job.succeeded"],
                "job {id}"
            );
        }
    }
}

#[tokio::test]
async fn reuse_hits_and_misses() {
    let s = TestServer::start().await;
    let a = id_of(&s.create(json!({"data": {}})).await);
    let b = id_of(&s.create(json!({"data": {"keep": true}})).await);
    let input = json!({"url": "https://e.com", "opts": {"depth": 2, "tags": ["x", "y"]},
                       "sessionId": a});
    let first = create_job(
        &s,
        &a,
        json!({"type": "scrape", "input": input, "outputKey": "scrape"}),
    )
    .await;
    let first_id = id_of(&first);
    let c = claim_type(&s, "scrape").await;
    let result = json!({"pages": 3, "title": "E"});
    complete(&s, &first_id, &lease(&c), result.clone())
        .await
        .expect(200);

    // Same input but for key order and the session id: reused, and the output key lands on
    // the new session with a version bump.
    let b_before = s.session(&b).await;
    let hit = create_job(
        &s,
        &b,
        json!({"type": "scrape", "outputKey": "out",
               "input": {"sessionId": b, "opts": {"tags": ["x", "y"], "depth": 2},
                         "url": "https://e.com"}}),
    )
    .await;
    let hit_id = id_of(&hit);
    assert_eq!(hit["status"], "succeeded", "{hit}");
    assert_eq!(hit["reusedFrom"], first_id);
    assert_eq!(hit["result"], result);
    assert_eq!(hit["sessionId"], b);
    assert_eq!(hit["outputKey"], "out");
    assert_eq!(hit["attempts"], 0);
    assert!(hit["finishedAt"].is_string());
    assert!(hit["leaseExpiresAt"].is_null());
    assert_eq!(get_job(&s, &hit_id).await, hit);
    let b_after = s.session(&b).await;
    assert_eq!(b_after["data"], json!({"keep": true, "out": result}));
    assert_eq!(
        b_after["version"].as_i64().unwrap(),
        b_before["version"].as_i64().unwrap() + 1
    );
    let ev = events(&s, &b).await;
    let n = ev.len();
    assert_eq!(
        types(&ev[n - 2..]),
        vec!["job.succeeded", "session.patched"]
    );
    assert_eq!(ev[n - 2]["jobId"], hit_id);
    assert_eq!(ev[n - 2]["detail"]["reusedFrom"], first_id);
    assert_eq!(ev[n - 2]["detail"]["outputKey"], "out");
    assert_eq!(ev[n - 1]["version"], b_after["version"]);
    assert_eq!(ev[n - 1]["patch"]["data"]["out"], result);
    assert!(
        claim(&s, json!({"types": ["scrape"]})).await.is_none(),
        "a reused job is not queued"
    );

    // More hits: ids and the reuse flag inside input are ignored, so is the session.
    let mut succeeded: HashSet<String> = [first_id.clone(), hit_id.clone()].into();
    let plain = json!({"url": "https://e.com", "opts": {"depth": 2, "tags": ["x", "y"]}});
    let mut with_flags = plain.clone();
    with_flags["reuse"] = json!(true);
    with_flags["session_id"] = json!("whatever");
    for (session, body) in [
        (&b, json!({"type": "scrape", "input": plain})),
        (&b, json!({"type": "scrape", "input": with_flags})),
        (&b, json!({"type": "scrape", "input": plain, "reuse": true})),
        (
            &a,
            json!({"type": "scrape", "input": plain, "maxAttempts": 7}),
        ),
    ] {
        let version = s.session(session).await["version"].clone();
        let h = create_job(&s, session, body.clone()).await;
        assert_eq!(h["status"], "succeeded", "{body} should hit: {h}");
        assert!(
            succeeded.contains(h["reusedFrom"].as_str().unwrap_or("")),
            "{body}: reusedFrom {} is not an earlier success",
            h["reusedFrom"]
        );
        assert_eq!(h["result"], result);
        assert_eq!(
            s.session(session).await["version"],
            version,
            "no outputKey: the session is unchanged"
        );
        succeeded.insert(id_of(&h));
    }

    // Misses: any other difference, or reuse: false.
    let b_before = s.session(&b).await;
    let misses = [
        json!({"type": "scrape2", "input": plain}),
        json!({"type": "scrape", "input": {"url": "https://f.com", "opts": {"depth": 2, "tags": ["x", "y"]}}}),
        json!({"type": "scrape", "input": {"url": "https://e.com", "opts": {"depth": 3, "tags": ["x", "y"]}}}),
        json!({"type": "scrape", "input": {"url": "https://e.com", "opts": {"depth": "2", "tags": ["x", "y"]}}}),
        json!({"type": "scrape", "input": {"url": "https://e.com", "opts": {"depth": 2, "tags": ["y", "x"]}}}),
        json!({"type": "scrape", "input": {"url": "https://e.com", "opts": {"depth": 2, "tags": ["x", "y"]}, "lang": "en"}}),
        json!({"type": "scrape", "input": {"url": "https://e.com"}}),
        json!({"type": "scrape", "input": {}}),
        json!({"type": "scrape", "input": plain, "reuse": false, "outputKey": "out"}),
    ];
    for body in misses {
        let m = create_job(&s, &b, body.clone()).await;
        assert_eq!(m["status"], "queued", "{body} should miss: {m}");
        assert!(m["reusedFrom"].is_null());
        assert!(m["result"].is_null());
    }
    assert_eq!(
        s.session(&b).await,
        b_before,
        "misses do not touch the session"
    );

    // A failed, a cancelled, a queued or a running earlier job is never reused.
    let f = create_job(
        &s,
        &a,
        json!({"type": "flaky", "input": {"x": 1}, "maxAttempts": 1}),
    )
    .await;
    let c = claim_type(&s, "flaky").await;
    fail(&s, &id_of(&f), &lease(&c), json!("boom"), None)
        .await
        .expect(200);
    let again = create_job(&s, &b, json!({"type": "flaky", "input": {"x": 1}})).await;
    assert_eq!(again["status"], "queued", "a failed job is never reused");
    let x = create_job(&s, &a, json!({"type": "cx", "input": {"x": 1}})).await;
    cancel(&s, &id_of(&x)).await.expect(200);
    let again = create_job(&s, &b, json!({"type": "cx", "input": {"x": 1}})).await;
    assert_eq!(again["status"], "queued", "a cancelled job is never reused");
    create_job(&s, &a, json!({"type": "qx", "input": {"x": 1}})).await;
    let again = create_job(&s, &b, json!({"type": "qx", "input": {"x": 1}})).await;
    assert_eq!(again["status"], "queued", "a queued job is never reused");
    claim_type(&s, "qx").await;
    let again = create_job(&s, &b, json!({"type": "qx", "input": {"x": 1}})).await;
    assert_eq!(again["status"], "queued", "a running job is never reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_is_limited_to_the_window() {
    let s = TestServer::start_with(AppOptions {
        job_reuse_window_seconds: 2,
        ..AppOptions::default()
    })
    .await;
    let sid = id_of(&s.create(json!({})).await);
    let body = json!({"type": "w", "input": {"q": "same"}});
    let first = create_job(&s, &sid, body.clone()).await;
    let c = claim_type(&s, "w").await;
    complete(&s, &id_of(&first), &lease(&c), json!("r"))
        .await
        .expect(200);
    let hit = create_job(&s, &sid, body.clone()).await;
    assert_eq!(hit["status"], "succeeded", "within the window: {hit}");
    assert_eq!(hit["reusedFrom"], id_of(&first));
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let miss = create_job(&s, &sid, body.clone()).await;
    assert_eq!(miss["status"], "queued", "outside the window: {miss}");
    assert!(miss["reusedFrom"].is_null());
}

const ADMIN: &str = "adm_jobs_test_0123456789";

/// A new account and an API client for it.
async fn account_api(s: &TestServer, name: &str) -> Api {
    let admin = s.bearer(ADMIN);
    let acct = admin
        .post("/v1/accounts", &json!({"name": name}))
        .await
        .expect(201);
    let key = admin
        .post(
            &format!("/v1/accounts/{}/keys", id_of(&acct)),
            &json!({"name": "k"}),
        )
        .await
        .expect(201);
    s.bearer(key["key"].as_str().expect("key secret"))
}

#[tokio::test]
async fn jobs_are_private_to_their_account_and_never_reused_across_accounts() {
    let s = TestServer::start_with(AppOptions {
        auth_required: true,
        admin_key: Some(ADMIN.to_owned()),
        ..AppOptions::default()
    })
    .await;
    let alice = account_api(&s, "alice").await;
    let bob = account_api(&s, "bob").await;
    let sa = id_of(&alice.create(json!({})).await);
    let sb = id_of(&bob.create(json!({})).await);
    let body = json!({"type": "shared", "input": {"x": 1}});
    let ja = create_job(&alice, &sa, body.clone()).await;
    let jid = id_of(&ja);
    let before = snapshot(&alice, &sa).await;

    assert!(
        claim(&bob, json!({"types": ["shared"]})).await.is_none(),
        "bob cannot claim alice's job"
    );
    let stranger = Uuid::new_v4().to_string();
    bob.get(&job_url(&jid))
        .await
        .expect_error(404, "job_not_found");
    heartbeat(&bob, &jid, &stranger, None)
        .await
        .expect_error(404, "job_not_found");
    complete(&bob, &jid, &stranger, json!(1))
        .await
        .expect_error(404, "job_not_found");
    fail(&bob, &jid, &stranger, json!("x"), None)
        .await
        .expect_error(404, "job_not_found");
    cancel(&bob, &jid).await.expect_error(404, "job_not_found");
    bob.get(&jobs_of(&sa))
        .await
        .expect_error(404, "session_not_found");
    bob.post(&jobs_of(&sa), &body)
        .await
        .expect_error(404, "session_not_found");
    assert_eq!(snapshot(&alice, &sa).await, before);

    let c = claim_type(&alice, "shared").await;
    // Even with the real lease, bob cannot finish alice's job.
    complete(&bob, &jid, &lease(&c), json!("stolen"))
        .await
        .expect_error(404, "job_not_found");
    assert_eq!(get_job(&alice, &jid).await["status"], "running");
    complete(&alice, &jid, &lease(&c), json!("mine"))
        .await
        .expect(200);

    let jb = create_job(&bob, &sb, body.clone()).await;
    assert_eq!(
        jb["status"], "queued",
        "another account's success is never reused"
    );
    assert!(jb["reusedFrom"].is_null());
    let again = create_job(&alice, &sa, body.clone()).await;
    assert_eq!(again["reusedFrom"], jid, "the same account reuses it");
    assert_eq!(
        id_of(&claim_type(&bob, "shared").await),
        id_of(&jb),
        "bob claims his own"
    );

    // The admin key does not work on sessions' jobs.
    let admin = s.bearer(ADMIN);
    admin
        .post(&jobs_of(&sa), &body)
        .await
        .expect_error(403, "forbidden");
    admin
        .post("/v1/jobs/claim", &json!({"types": ["shared"]}))
        .await
        .expect_error(403, "forbidden");
    admin
        .get(&job_url(&jid))
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_output_key_lands_with_the_success() {
    let s = TestServer::start().await;
    let sid = id_of(
        &s.create(json!({"data": {"keep": 1, "summary": {"old": 1, "x": 2}}}))
            .await,
    );
    let j = create_job(&s, &sid, json!({"type": "sum", "outputKey": "summary"})).await;
    let id = id_of(&j);
    let c = claim_type(&s, "sum").await;
    let done = complete(&s, &id, &lease(&c), json!({"x": 3, "new": true}))
        .await
        .expect(200);
    assert_eq!(done["status"], "succeeded");
    let r = s.get(&path(&sid)).await;
    let sess = r.expect(200);
    assert_eq!(
        sess["data"],
        json!({"keep": 1, "summary": {"old": 1, "x": 3, "new": true}}),
        "the result is merge-patched at the key"
    );
    assert_eq!(sess["version"], 2);
    assert_eq!(r.etag(), "\"2\"");
    let recs = event_records(&s, &sid).await;
    let n = recs.len();
    let (succ, patched) = (&recs[n - 2], &recs[n - 1]);
    assert_eq!(succ["data"]["type"], "job.succeeded");
    assert_eq!(succ["data"]["jobId"], id);
    assert_eq!(succ["data"]["detail"]["outputKey"], "summary");
    assert_eq!(patched["data"]["type"], "session.patched");
    assert_eq!(patched["data"]["version"], 2);
    assert_eq!(patched["data"]["patch"]["data"]["summary"]["x"], 3);
    assert_eq!(
        patched["seq"].as_i64().unwrap(),
        succ["seq"].as_i64().unwrap() + 1,
        "adjacent: written together"
    );

    // A scalar result replaces the key; no outputKey leaves the session alone.
    let j = create_job(&s, &sid, json!({"type": "count", "outputKey": "count"})).await;
    let c = claim_type(&s, "count").await;
    complete(&s, &id_of(&j), &lease(&c), json!(42))
        .await
        .expect(200);
    let sess = s.session(&sid).await;
    assert_eq!(sess["data"]["count"], 42);
    assert_eq!(sess["version"], 3);
    let j = create_job(&s, &sid, json!({"type": "plain"})).await;
    let c = claim_type(&s, "plain").await;
    complete(&s, &id_of(&j), &lease(&c), json!({"x": 1}))
        .await
        .expect(200);
    assert_eq!(s.session(&sid).await, sess, "no outputKey: unchanged");
    assert_eq!(
        types(&events(&s, &sid).await).last().unwrap(),
        "job.succeeded"
    );

    // Readers never see one without the other, in either order of reading.
    const N: usize = 20;
    let stop = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    let ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    for order in 0..2 {
        let api = s.api.clone();
        let sid = sid.clone();
        let stop = stop.clone();
        let ids = ids.clone();
        readers.push(tokio::spawn(async move {
            let mut checks = 0usize;
            while stop.load(Ordering::SeqCst) == 0 {
                let known: Vec<(usize, String)> =
                    ids.lock().unwrap().iter().cloned().enumerate().collect();
                for (i, jid) in known {
                    let key = format!("out{i}");
                    if order == 0 {
                        let job = api.get(&job_url(&jid)).await.expect(200);
                        let sess = api.session(&sid).await;
                        if job["status"] == "succeeded" {
                            assert_eq!(sess["data"][&key], i, "job done, data missing");
                        }
                    } else {
                        let sess = api.session(&sid).await;
                        let job = api.get(&job_url(&jid)).await.expect(200);
                        if !sess["data"][&key].is_null() {
                            assert_eq!(job["status"], "succeeded", "data there, job not done");
                        }
                    }
                    checks += 1;
                }
                tokio::task::yield_now().await;
            }
            checks
        }));
    }
    for i in 0..N {
        let j = create_job(
            &s,
            &sid,
            json!({"type": "atomic", "outputKey": format!("out{i}"), "input": {"i": i}}),
        )
        .await;
        ids.lock().unwrap().push(id_of(&j));
        let c = claim_type(&s, "atomic").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        complete(&s, &id_of(&j), &lease(&c), json!(i))
            .await
            .expect(200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(1, Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
}

#[tokio::test]
async fn cancel_a_queued_or_running_job() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let q = create_job(&s, &sid, json!({"type": "q"})).await;
    let qid = id_of(&q);
    let x = cancel(&s, &qid).await.expect(200);
    assert_job_shape(&x);
    assert_eq!(x["status"], "cancelled");
    assert_eq!(x["attempts"], 0);
    assert!(x["finishedAt"].is_string());
    assert!(claim(&s, json!({"types": ["q"]})).await.is_none());
    let before = snapshot(&s, &sid).await;
    assert_eq!(cancel(&s, &qid).await.expect(200), x, "unchanged");
    assert_eq!(snapshot(&s, &sid).await, before);

    let r = create_job(&s, &sid, json!({"type": "r"})).await;
    let rid = id_of(&r);
    let c = claim_type(&s, "r").await;
    let l = lease(&c);
    let x = cancel(&s, &rid).await.expect(200);
    assert_eq!(x["status"], "cancelled");
    assert_eq!(x["attempts"], 1);
    assert!(x["leaseExpiresAt"].is_null());
    let before = snapshot(&s, &sid).await;
    heartbeat(&s, &rid, &l, None)
        .await
        .expect_error(409, "lease_lost");
    complete(&s, &rid, &l, json!(1))
        .await
        .expect_error(409, "lease_lost");
    fail(&s, &rid, &l, json!("x"), None)
        .await
        .expect_error(409, "lease_lost");
    assert_eq!(snapshot(&s, &sid).await, before);
    let ev = events(&s, &sid).await;
    assert_eq!(job_events(&ev, &qid), vec!["job.queued", "job.cancelled"]);
    assert_eq!(
        job_events(&ev, &rid),
        vec!["job.queued", "job.running", "job.cancelled"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_complete_ends_consistently() {
    const ROUNDS: usize = 40;
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({"data": {}})).await);
    let mut outcomes: Vec<(String, usize, bool)> = Vec::new();
    for i in 0..ROUNDS {
        let j = create_job(
            &s,
            &sid,
            json!({"type": "race", "input": {"i": i}, "outputKey": format!("k{i}"), "reuse": false}),
        )
        .await;
        let id = id_of(&j);
        let c = claim_type(&s, "race").await;
        let l = lease(&c);
        let go = Arc::new(tokio::sync::Barrier::new(2));
        let (api1, id1, go1) = (s.api.clone(), id.clone(), go.clone());
        let completer = tokio::spawn(async move {
            go1.wait().await;
            complete(&api1, &id1, &l, json!({"i": i})).await
        });
        let (api2, id2, go2) = (s.api.clone(), id.clone(), go.clone());
        let canceller = tokio::spawn(async move {
            go2.wait().await;
            cancel(&api2, &id2).await
        });
        let rc = completer.await.unwrap();
        let rx = canceller.await.unwrap();
        let cancelled = rx.expect(200);
        let last = get_job(&s, &id).await;
        let succeeded = match rc.status {
            200 => {
                let done = rc.json();
                assert_eq!(done["status"], "succeeded");
                assert_eq!(
                    cancelled, done,
                    "round {i}: cancel after complete returns the succeeded job unchanged"
                );
                assert_eq!(last, done);
                true
            }
            _ => {
                rc.expect_error(409, "lease_lost");
                assert_eq!(cancelled["status"], "cancelled", "round {i}: {cancelled}");
                assert!(cancelled["result"].is_null());
                assert_eq!(last, cancelled);
                false
            }
        };
        outcomes.push((id, i, succeeded));
    }
    let wins = outcomes.iter().filter(|o| o.2).count();
    eprintln!(
        "cancel vs complete: {wins} succeeded, {} cancelled",
        ROUNDS - wins
    );
    let sess = s.session(&sid).await;
    let data = sess["data"].as_object().unwrap();
    assert_eq!(data.len(), wins, "output only for the succeeded: {sess}");
    assert_eq!(sess["version"].as_u64().unwrap() as usize, 1 + wins);
    let ev = events(&s, &sid).await;
    for (id, i, succeeded) in outcomes {
        let key = format!("k{i}");
        if succeeded {
            assert_eq!(data[&key], json!({"i": i}));
            assert_eq!(
                job_events(&ev, &id),
                vec!["job.queued", "job.running", "job.succeeded"]
            );
        } else {
            assert!(!data.contains_key(&key));
            assert_eq!(
                job_events(&ev, &id),
                vec!["job.queued", "job.running", "job.cancelled"]
            );
        }
    }
}

#[tokio::test]
async fn closing_a_session_cancels_its_queued_jobs() {
    let s = TestServer::start().await;
    let sid = id_of(
        &s.create(json!({"externalId": "to-close", "data": {}}))
            .await,
    );
    let other = id_of(&s.create(json!({})).await);
    let q1 = id_of(&create_job(&s, &sid, json!({"type": "q", "input": {"n": 1}})).await);
    let q2 = id_of(&create_job(&s, &sid, json!({"type": "q", "input": {"n": 2}})).await);
    let r = id_of(&create_job(&s, &sid, json!({"type": "r", "outputKey": "r"})).await);
    let rc = claim_type(&s, "r").await;
    let d = id_of(&create_job(&s, &sid, json!({"type": "d"})).await);
    let dc = claim_type(&s, "d").await;
    let done = complete(&s, &d, &lease(&dc), json!("d")).await.expect(200);
    let oq = id_of(&create_job(&s, &other, json!({"type": "q"})).await);
    let seq_before = event_records(&s, &sid).await.len();

    let closed = s
        .post(&format!("{}/close", path(&sid)), &json!({}))
        .await
        .expect(200);
    assert_eq!(closed["status"], "closed");
    let rows = list_jobs(&s, &sid).await;
    let by: HashMap<String, Value> = rows.iter().map(|j| (id_of(j), j.clone())).collect();
    for q in [&q1, &q2] {
        assert_eq!(by[q]["status"], "cancelled", "{}", by[q]);
        assert!(by[q]["finishedAt"].is_string());
    }
    assert_eq!(
        by[&r]["status"], "running",
        "a running job is left to finish"
    );
    assert_eq!(by[&d], done, "a finished job is unchanged");
    let ev = events(&s, &sid).await;
    let after = &ev[seq_before..];
    assert_eq!(after[0]["type"], "session.closed");
    let cancelled: HashSet<&str> = after
        .iter()
        .filter(|e| e["type"] == "job.cancelled")
        .map(|e| e["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(cancelled, [q1.as_str(), q2.as_str()].into());
    assert_eq!(after.len(), 3, "{after:?}");

    // Another session's queued job is untouched and is what a claim gets.
    assert_eq!(get_job(&s, &oq).await["status"], "queued");
    assert_eq!(id_of(&claim_type(&s, "q").await), oq);
    assert!(claim(&s, json!({"types": ["q"]})).await.is_none());

    // No new jobs on a closed session.
    let before = snapshot(&s, &sid).await;
    for r in [sid.as_str(), "to-close"] {
        s.post(&jobs_of(r), &json!({"type": "q"}))
            .await
            .expect_error(409, "session_closed");
    }
    assert_eq!(snapshot(&s, &sid).await, before);

    // The running job can still finish, but the closed session's data is not patched.
    let sess = s.session(&sid).await;
    heartbeat(&s, &r, &lease(&rc), Some(json!({"p": 1})))
        .await
        .expect(200);
    let fin = complete(&s, &r, &lease(&rc), json!({"v": 1}))
        .await
        .expect(200);
    assert_eq!(fin["status"], "succeeded");
    assert_eq!(fin["result"], json!({"v": 1}));
    assert_eq!(
        s.session(&sid).await,
        sess,
        "a closed session's data is final"
    );
    let ev = events(&s, &sid).await;
    assert_eq!(types(&ev).last().unwrap(), "job.succeeded");
    assert!(!types(&ev[seq_before..]).contains(&"session.patched".to_owned()));

    // Closing again changes nothing.
    let n = ev.len();
    s.post(&format!("{}/close", path(&sid)), &json!({}))
        .await
        .expect(200);
    assert_eq!(events(&s, &sid).await.len(), n);
}

/// A job that was running when its session closed must not go back to the queue: nothing can
/// claim a closed session's jobs, so a requeued one would stay `queued` for ever (closing is
/// what cancels queued jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_of_a_closed_session_is_never_requeued() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let f = id_of(&create_job(&s, &sid, json!({"type": "f", "maxAttempts": 3})).await);
    let e = id_of(&create_job(&s, &sid, json!({"type": "e", "maxAttempts": 3})).await);
    let fc = claim_type(&s, "f").await;
    claim(&s, json!({"types": ["e"], "leaseSeconds": 5}))
        .await
        .unwrap();
    s.post(&format!("{}/close", path(&sid)), &json!({}))
        .await
        .expect(200);

    let mut problems = Vec::new();
    let failed = fail(&s, &f, &lease(&fc), json!("transient"), Some(true))
        .await
        .expect(200);
    if failed["status"] == "queued" {
        problems.push(format!(
            "fail(retry) on a closed session's job requeued it: {failed}"
        ));
    }
    let expired = poll_until_not_running(&s, &e, Duration::from_secs(12)).await;
    if expired["status"] == "queued" {
        problems.push(format!(
            "lease expiry on a closed session's job requeued it: {expired}"
        ));
    }
    let stuck: Vec<String> = list_jobs(&s, &sid)
        .await
        .iter()
        .filter(|j| j["status"] == "queued")
        .map(id_of)
        .collect();
    if !stuck.is_empty() {
        problems.push(format!(
            "queued jobs on a closed session, which nothing can claim: {stuck:?}"
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn deleting_a_session_removes_its_jobs() {
    let s = TestServer::start().await;
    let fixed = Uuid::new_v4().to_string();
    let sid = id_of(&s.create(json!({"id": fixed})).await);
    let keep = id_of(&s.create(json!({})).await);
    let q = id_of(&create_job(&s, &sid, json!({"type": "q"})).await);
    let r = id_of(&create_job(&s, &sid, json!({"type": "r"})).await);
    let rc = claim_type(&s, "r").await;
    let l = lease(&rc);
    let d = id_of(&create_job(&s, &sid, json!({"type": "d", "input": {"x": 1}})).await);
    let dc = claim_type(&s, "d").await;
    complete(&s, &d, &lease(&dc), json!("d")).await.expect(200);
    let kept = create_job(&s, &keep, json!({"type": "k"})).await;

    let del = s.delete(&path(&sid)).await;
    assert_eq!(del.status, 204, "{}", del.text);
    for id in [&q, &r, &d] {
        s.get(&job_url(id)).await.expect_error(404, "job_not_found");
    }
    heartbeat(&s, &r, &l, None)
        .await
        .expect_error(404, "job_not_found");
    complete(&s, &r, &l, json!(1))
        .await
        .expect_error(404, "job_not_found");
    fail(&s, &r, &l, json!("x"), None)
        .await
        .expect_error(404, "job_not_found");
    cancel(&s, &q).await.expect_error(404, "job_not_found");
    s.get(&jobs_of(&sid))
        .await
        .expect_error(404, "session_not_found");
    s.post(&jobs_of(&sid), &json!({"type": "q"}))
        .await
        .expect_error(404, "session_not_found");
    assert!(claim(&s, json!({"types": ["q", "r", "d"]})).await.is_none());
    let miss = create_job(&s, &keep, json!({"type": "d", "input": {"x": 1}})).await;
    assert_eq!(miss["status"], "queued", "a deleted job is not reused");
    assert_eq!(get_job(&s, &id_of(&kept)).await, kept);

    // A new session with the same id starts without the old one's jobs.
    s.create(json!({"id": fixed})).await;
    assert!(list_jobs(&s, &fixed).await.is_empty());
}

#[tokio::test]
async fn an_expired_session_takes_no_new_jobs() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({"ttlSeconds": 1})).await);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(s.session(&sid).await["status"], "expired");
    s.post(&jobs_of(&sid), &json!({"type": "t"}))
        .await
        .expect_error(409, "session_closed");
    assert!(list_jobs(&s, &sid).await.is_empty(), "reads keep working");
}

#[tokio::test]
async fn session_tokens_cannot_use_jobs() {
    let s = TestServer::start().await;
    let sid = id_of(&s.create(json!({})).await);
    let q = id_of(&create_job(&s, &sid, json!({"type": "q"})).await);
    create_job(&s, &sid, json!({"type": "r"})).await;
    let rc = claim_type(&s, "r").await;
    let r = id_of(&rc);
    let l = lease(&rc);
    let minted = s
        .post(
            &format!("{}/tokens", path(&sid)),
            &json!({"scopes": ["read", "write"]}),
        )
        .await
        .expect(201);
    let t = s.bearer(minted["token"].as_str().unwrap());
    let before = snapshot(&s, &sid).await;

    t.post(&jobs_of(&sid), &json!({"type": "q"}))
        .await
        .expect_error(403, "forbidden");
    t.post("/v1/jobs/claim", &json!({"types": ["q"]}))
        .await
        .expect_error(403, "forbidden");
    t.get(&job_url(&q)).await.expect_error(403, "forbidden");
    heartbeat(&t, &r, &l, None)
        .await
        .expect_error(403, "forbidden");
    complete(&t, &r, &l, json!(1))
        .await
        .expect_error(403, "forbidden");
    fail(&t, &r, &l, json!("x"), None)
        .await
        .expect_error(403, "forbidden");
    cancel(&t, &q).await.expect_error(403, "forbidden");
    assert_eq!(snapshot(&s, &sid).await, before);
    // NATIVE-API.md: "Nothing else (patch, close, delete, `out` append, jobs) is open to a
    // token" -- listing a session's jobs included.
    t.get(&jobs_of(&sid)).await.expect_error(403, "forbidden");
}
