//! The trigger.dev Sessions surface (design/compat/TRIGGER.md): start (idempotent on
//! externalId), retrieve, list, update, close, runs as native jobs, `.in`/`.out` appends, SSE in
//! the batch format, the records drain, public tokens (server-signed and client-signed), and
//! that it is all the same storage as the native API.

use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use sessiond_server::AppOptions;

use crate::common::{encode as enc, id_of, Api, Resp, TestServer};

const ADMIN: &str = "adm_trigger_0123456789abcdef";
const SECRET: &str = "tr_dev_0123456789abcdefghijklmn";

/// Every key of a SessionObject (list rows lack `triggerConfig`).
const SESSION_KEYS: &[&str] = &[
    "id",
    "externalId",
    "type",
    "taskIdentifier",
    "triggerConfig",
    "currentRunId",
    "tags",
    "metadata",
    "closedAt",
    "closedReason",
    "expiresAt",
    "createdAt",
    "updatedAt",
];

struct Env {
    s: TestServer,
    account: String,
    key_id: String,
}

impl Env {
    async fn start() -> Env {
        let s = TestServer::start_with(AppOptions {
            auth_required: true,
            admin_key: Some(ADMIN.to_owned()),
            ..AppOptions::default()
        })
        .await;
        let admin = s.bearer(ADMIN);
        let account = id_of(
            &admin
                .post("/v1/accounts", &json!({"name": "trigger"}))
                .await
                .expect(201),
        );
        let key = admin
            .post(
                &format!("/v1/accounts/{account}/keys"),
                &json!({"key": SECRET}),
            )
            .await
            .expect(201);
        Env {
            key_id: id_of(&key),
            s,
            account,
        }
    }

    fn api(&self) -> Api {
        self.s.bearer(SECRET)
    }

    /// A second account with its own key.
    async fn other_key(&self, secret: &str) -> String {
        let admin = self.s.bearer(ADMIN);
        let account = id_of(&admin.post("/v1/accounts", &json!({})).await.expect(201));
        admin
            .post(
                &format!("/v1/accounts/{account}/keys"),
                &json!({"key": secret}),
            )
            .await
            .expect(201);
        account
    }
}

fn start_body(external_id: Option<&str>) -> Value {
    let mut b = json!({
        "type": "chat.agent",
        "taskIdentifier": "my-agent",
        "triggerConfig": {"basePayload": {"chatId": "c1", "n": 1}, "maxAttempts": 2},
        "tags": ["a", "b"],
        "metadata": {"user": "u1"},
    });
    if let Some(e) = external_id {
        b["externalId"] = json!(e);
    }
    b
}

async fn start(api: &Api, body: &Value) -> Resp {
    api.post("/api/v1/sessions", body).await
}

fn native_uuid(friendly: &str) -> String {
    let hex = friendly
        .strip_prefix("session_")
        .unwrap_or_else(|| panic!("not a friendly id: {friendly}"));
    uuid::Uuid::parse_str(hex).unwrap().to_string()
}

fn job_uuid(run: &str) -> String {
    let hex = run
        .strip_prefix("run_")
        .unwrap_or_else(|| panic!("not a run id: {run}"));
    uuid::Uuid::parse_str(hex).unwrap().to_string()
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn assert_session_shape(v: &Value, with_config: bool) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    for k in SESSION_KEYS {
        if *k == "triggerConfig" && !with_config {
            assert!(!obj.contains_key(*k), "list rows omit triggerConfig: {v}");
            continue;
        }
        assert!(obj.contains_key(*k), "missing {k} in {v}");
    }
    assert!(v["id"].as_str().unwrap().starts_with("session_"), "{v}");
}

#[track_caller]
fn assert_error(r: &Resp, status: u16, body: Value) {
    assert_eq!(r.status, status, "{}: {}", r.what, r.text);
    assert_eq!(r.json(), body, "{}", r.what);
}

fn forbidden_body() -> Value {
    json!({"error":"Unauthorized","code":"unauthorized","param":"access_token","type":"authorization"})
}

fn unauthorized_body() -> Value {
    json!({"error": "Invalid or Missing API key"})
}

#[tokio::test]
async fn start_retrieve_cached_and_conflicts() {
    let env = Env::start().await;
    let api = env.api();
    let r = start(&api, &start_body(Some("chat-1"))).await;
    let created = r.expect(201);
    assert_session_shape(&created, true);
    assert_eq!(created["isCached"], false);
    assert_eq!(created["externalId"], "chat-1");
    assert_eq!(created["type"], "chat.agent");
    assert_eq!(created["taskIdentifier"], "my-agent");
    assert_eq!(created["tags"], json!(["a", "b"]));
    assert_eq!(created["metadata"], json!({"user": "u1"}));
    assert_eq!(created["closedAt"], Value::Null);
    assert_eq!(created["expiresAt"], Value::Null);
    assert_eq!(
        created["triggerConfig"],
        json!({"basePayload": {"chatId": "c1", "n": 1}, "maxAttempts": 2})
    );
    let run = created["runId"].as_str().unwrap().to_owned();
    assert!(run.starts_with("run_"), "{created}");
    assert_eq!(created["currentRunId"], json!(run));
    let token = created["publicAccessToken"].as_str().unwrap();
    let c = claims(token);
    assert_eq!(c["sub"], json!(env.account));
    assert_eq!(c["pub"], true);
    assert_eq!(
        c["scopes"],
        json!(["read:sessions:chat-1", "write:sessions:chat-1"])
    );
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );

    // Retrieve by both ids.
    let id = created["id"].as_str().unwrap().to_owned();
    let by_id = api.get(&format!("/api/v1/sessions/{id}")).await.expect(200);
    let by_ext = api.get("/api/v1/sessions/chat-1").await.expect(200);
    assert_session_shape(&by_id, true);
    assert_eq!(by_id, by_ext);
    assert_eq!(by_id["currentRunId"], json!(run));

    // The same native session: type, externalId, tags, metadata native; the rest in data.trigger.
    let native = api
        .get(&format!("/v1/sessions/{}", native_uuid(&id)))
        .await
        .expect(200);
    assert_eq!(native["externalId"], "chat-1");
    assert_eq!(native["type"], "chat.agent");
    assert_eq!(native["data"]["trigger"]["taskIdentifier"], "my-agent");
    assert_eq!(native["data"]["trigger"]["currentRunId"], json!(run));
    let version = native["version"].as_i64().unwrap();

    // Start again: cached, only triggerConfig refreshed, the queued run kept.
    let mut again = start_body(Some("chat-1"));
    again["triggerConfig"] = json!({"basePayload": {"chatId": "c1", "n": 2}});
    again["tags"] = json!(["z"]);
    let r = start(&api, &again).await;
    let cached = r.expect(200);
    assert_eq!(cached["isCached"], true);
    assert_eq!(cached["id"], json!(id));
    assert_eq!(cached["runId"], json!(run));
    assert_eq!(
        cached["tags"],
        json!(["a", "b"]),
        "only triggerConfig changes"
    );
    assert_eq!(
        cached["triggerConfig"],
        json!({"basePayload": {"chatId": "c1", "n": 2}})
    );
    let native = api
        .get(&format!("/v1/sessions/{}", native_uuid(&id)))
        .await
        .expect(200);
    assert_eq!(native["version"].as_i64().unwrap(), version + 1);
    // The same again changes nothing.
    start(&api, &again).await.expect(200);
    let native = api
        .get(&format!("/v1/sessions/{}", native_uuid(&id)))
        .await
        .expect(200);
    assert_eq!(native["version"].as_i64().unwrap(), version + 1);

    // Without externalId: a new session every time, token keyed by the friendly id.
    let a = start(&api, &start_body(None)).await.expect(201);
    let b = start(&api, &start_body(None)).await.expect(201);
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["externalId"], Value::Null);
    let c = claims(a["publicAccessToken"].as_str().unwrap());
    assert_eq!(
        c["scopes"][0],
        json!(format!("read:sessions:{}", a["id"].as_str().unwrap()))
    );

    // Closed → 409, final.
    api.post("/api/v1/sessions/chat-1/close", &json!({}))
        .await
        .expect(200);
    let r = start(&api, &start_body(Some("chat-1"))).await;
    assert_error(
        &r,
        409,
        json!({"error": "Session is closed; use a different externalId to create a new session"}),
    );
    assert_eq!(r.header("x-should-retry"), Some("false"));

    // Expired → 409 likewise.
    let mut soon = start_body(Some("chat-exp"));
    soon["expiresAt"] = json!(sessiond_core::Timestamp::now().plus_seconds(1).to_rfc3339());
    start(&api, &soon).await.expect(201);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = start(&api, &start_body(Some("chat-exp"))).await;
    assert_error(
        &r,
        409,
        json!({"error": "Session is expired; use a different externalId to create a new session"}),
    );

    // Unknown sessions: 404 with x-should-retry: false.
    for p in [
        "/api/v1/sessions/session_00000000000000000000000000000000",
        "/api/v1/sessions/session_nothex",
        "/api/v1/sessions/no-such-external-id",
    ] {
        let r = api.get(p).await;
        assert_error(&r, 404, json!({"error": "Not found"}));
        assert_eq!(r.header("x-should-retry"), Some("false"), "{p}");
    }
}

#[tokio::test]
async fn start_validation() {
    let env = Env::start().await;
    let api = env.api();
    let r = api
        .raw(Method::POST, "/api/v1/sessions", "application/json", "{")
        .await;
    assert_error(&r, 400, json!({"error": "Invalid JSON"}));
    let mut cases = Vec::new();
    for (k, v) in [
        ("type", json!("")),
        ("type", json!("x".repeat(65))),
        ("taskIdentifier", json!("")),
        ("taskIdentifier", json!(7)),
        ("externalId", json!("session_abc")),
        ("externalId", json!("   ")),
        ("externalId", json!("x".repeat(257))),
        (
            "tags",
            json!((0..11).map(|i| format!("t{i}")).collect::<Vec<_>>()),
        ),
        ("tags", json!(["x".repeat(129)])),
        ("metadata", json!([1])),
        ("triggerConfig", json!({})),
        ("triggerConfig", json!({"basePayload": 1})),
        (
            "triggerConfig",
            json!({"basePayload": {}, "maxAttempts": 11}),
        ),
        (
            "triggerConfig",
            json!({"basePayload": {}, "idleTimeoutInSeconds": 0}),
        ),
        (
            "triggerConfig",
            json!({"basePayload": {}, "machine": "huge"}),
        ),
        ("expiresAt", json!("tomorrow")),
    ] {
        let mut b = start_body(None);
        b[k] = v;
        cases.push(b);
    }
    for missing in ["type", "taskIdentifier", "triggerConfig"] {
        let mut b = start_body(None);
        b.as_object_mut().unwrap().remove(missing);
        cases.push(b);
    }
    for b in cases {
        let r = start(&api, &b).await;
        assert_eq!(r.status, 400, "{b}: {}", r.text);
        let body = r.json();
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
    // The externalId is trimmed.
    let mut b = start_body(Some("  padded  "));
    b["metadata"] = json!({});
    let r = start(&api, &b).await.expect(201);
    assert_eq!(r["externalId"], "padded");
    // Over 32 KB → 413.
    let mut big = start_body(None);
    big["metadata"] = json!({"x": "y".repeat(40 * 1024)});
    let r = start(&api, &big).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.json()["error"].is_string());
    // Nothing was created by the refusals.
    let list = api.get("/api/v1/sessions").await.expect(200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

async fn native_jobs(api: &Api, friendly: &str) -> Vec<Value> {
    api.get(&format!("/v1/sessions/{}/jobs", native_uuid(friendly)))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn runs_are_native_jobs_and_in_appends_continue() {
    let env = Env::start().await;
    let api = env.api();
    let created = start(&api, &start_body(Some("run-test"))).await.expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    let run = created["runId"].as_str().unwrap().to_owned();
    let jobs = native_jobs(&api, &id).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["id"], json!(job_uuid(&run)));
    assert_eq!(jobs[0]["type"], "task:my-agent");
    assert_eq!(jobs[0]["status"], "queued");
    assert_eq!(jobs[0]["input"], json!({"chatId": "c1", "n": 1}));
    assert_eq!(jobs[0]["maxAttempts"], 2);

    // While the run is queued, `.in` appends enqueue nothing.
    api.raw(
        Method::POST,
        "/realtime/v1/sessions/run-test/in/append",
        "text/plain",
        "hi",
    )
    .await
    .expect(200);
    assert_eq!(native_jobs(&api, &id).await.len(), 1);

    // A worker takes the run and finishes it.
    let claimed = api
        .post("/v1/jobs/claim", &json!({"types": ["task:my-agent"]}))
        .await
        .expect(200);
    assert_eq!(claimed["id"], json!(job_uuid(&run)));
    // Running counts as live too.
    api.raw(
        Method::POST,
        "/realtime/v1/sessions/run-test/in/append",
        "text/plain",
        "again",
    )
    .await
    .expect(200);
    assert_eq!(native_jobs(&api, &id).await.len(), 1);
    api.post(
        &format!("/v1/jobs/{}/complete", job_uuid(&run)),
        &json!({"leaseId": claimed["leaseId"], "result": {"ok": true}}),
    )
    .await
    .expect(200);

    // Now an `.in` append enqueues a continuation and currentRunId follows it.
    api.raw(
        Method::POST,
        "/realtime/v1/sessions/run-test/in/append",
        "text/plain",
        "next",
    )
    .await
    .expect(200);
    let jobs = native_jobs(&api, &id).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[1]["status"], "queued");
    assert_eq!(jobs[1]["type"], "task:my-agent");
    let s = api.get("/api/v1/sessions/run-test").await.expect(200);
    let next_run = format!("run_{}", jobs[1]["id"].as_str().unwrap().replace('-', ""));
    assert_eq!(s["currentRunId"], json!(next_run));
    // `.out` appends never start runs.
    api.raw(
        Method::POST,
        "/realtime/v1/sessions/run-test/out/append",
        "text/plain",
        "o",
    )
    .await
    .expect(200);
    assert_eq!(native_jobs(&api, &id).await.len(), 2);
    // A cached start returns the live run.
    let cached = start(&api, &start_body(Some("run-test"))).await.expect(200);
    assert_eq!(cached["runId"], json!(next_run));
    // Concurrent `.in` appends after the run finished enqueue one continuation between them.
    let claimed = api
        .post("/v1/jobs/claim", &json!({"types": ["task:my-agent"]}))
        .await
        .expect(200);
    api.post(
        &format!("/v1/jobs/{}/cancel", claimed["id"].as_str().unwrap()),
        &json!({}),
    )
    .await
    .expect(200);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.raw(
                Method::POST,
                "/realtime/v1/sessions/run-test/in/append",
                "text/plain",
                format!("c{i}"),
            )
            .await
            .expect(200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let jobs = native_jobs(&api, &id).await;
    let queued: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "queued").collect();
    assert_eq!(queued.len(), 1, "{jobs:?}");
    let s = api.get("/api/v1/sessions/run-test").await.expect(200);
    assert_eq!(
        s["currentRunId"],
        json!(format!(
            "run_{}",
            queued[0]["id"].as_str().unwrap().replace('-', "")
        ))
    );
    // Closing cancels the queued run (native rule).
    api.post(
        "/api/v1/sessions/run-test/close",
        &json!({"reason": "done"}),
    )
    .await
    .expect(200);
    let jobs = native_jobs(&api, &id).await;
    assert!(jobs.iter().all(|j| j["status"] != "queued"), "{jobs:?}");
}

async fn list(api: &Api, query: &str) -> Value {
    let r = api.get(&format!("/api/v1/sessions?{query}")).await;
    let v = r.expect(200);
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{v}");
    for row in v["data"].as_array().unwrap() {
        assert_session_shape(row, false);
    }
    v
}

fn ext_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["externalId"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn list_filters_and_paging() {
    let env = Env::start().await;
    let api = env.api();
    let mut made = Vec::new();
    for i in 0..7 {
        let mut b = start_body(Some(&format!("s{i}")));
        b["type"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        b["taskIdentifier"] = json!(if i < 3 { "task-a" } else { "task-b" });
        b["tags"] = json!([format!("t{}", i % 3)]);
        let r = start(&api, &b).await.expect(201);
        made.push(r);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // A native session is not a trigger session.
    api.post(
        "/v1/sessions",
        &json!({"externalId": "native-one", "type": "even"}),
    )
    .await
    .expect(201);
    api.post("/api/v1/sessions/s1/close", &json!({}))
        .await
        .expect(200);

    let all = list(&api, "").await;
    assert_eq!(ext_ids(&all), ["s6", "s5", "s4", "s3", "s2", "s1", "s0"]);
    assert_eq!(all["pagination"], json!({}), "empty cursors are omitted");
    assert_eq!(all["data"][0]["currentRunId"], made[6]["runId"]);

    let q = |query: &'static str| {
        let api = api.clone();
        async move { ext_ids(&list(&api, query).await) }
    };
    assert_eq!(q("filter[type]=odd").await, ["s5", "s3", "s1"]);
    assert_eq!(q("filter[type]=odd,even").await.len(), 7);
    assert_eq!(q("filter[type]=odd&filter[type]=even").await.len(), 7);
    assert_eq!(q("filter[tags]=t0").await, ["s6", "s3", "s0"]);
    assert_eq!(
        q("filter[tags]=t0,t1").await,
        ["s6", "s4", "s3", "s1", "s0"]
    );
    assert_eq!(q("filter[taskIdentifier]=task-a").await, ["s2", "s1", "s0"]);
    assert_eq!(
        q("filter[taskIdentifier]=task-a&filter[taskIdentifier]=task-b&filter[type]=even").await,
        ["s6", "s4", "s2", "s0"]
    );
    assert_eq!(q("filter[externalId]=s4").await, ["s4"]);
    assert_eq!(q("filter[status]=CLOSED").await, ["s1"]);
    assert_eq!(q("filter[status]=ACTIVE,EXPIRED").await.len(), 6);
    assert_eq!(q("filter[createdAt][period]=1h").await.len(), 7);
    let t3 = chrono::DateTime::parse_from_rfc3339(made[3]["createdAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let t5 = chrono::DateTime::parse_from_rfc3339(made[5]["createdAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert_eq!(
        ext_ids(
            &list(
                &api,
                &format!("filter[createdAt][from]={t3}&filter[createdAt][to]={t5}")
            )
            .await
        ),
        ["s5", "s4", "s3"]
    );

    // Pages of 3 forwards, then back.
    let p1 = list(&api, "page[size]=3").await;
    assert_eq!(ext_ids(&p1), ["s6", "s5", "s4"]);
    assert!(p1["pagination"].get("previous").is_none());
    let next = p1["pagination"]["next"].as_str().unwrap().to_owned();
    let p2 = list(&api, &format!("page[size]=3&page[after]={}", enc(&next))).await;
    assert_eq!(ext_ids(&p2), ["s3", "s2", "s1"]);
    let next = p2["pagination"]["next"].as_str().unwrap().to_owned();
    let p3 = list(&api, &format!("page[size]=3&page[after]={}", enc(&next))).await;
    assert_eq!(ext_ids(&p3), ["s0"]);
    assert!(p3["pagination"].get("next").is_none(), "{p3}");
    let prev = p3["pagination"]["previous"].as_str().unwrap().to_owned();
    let back2 = list(&api, &format!("page[size]=3&page[before]={}", enc(&prev))).await;
    assert_eq!(ext_ids(&back2), ["s3", "s2", "s1"]);
    let prev = back2["pagination"]["previous"].as_str().unwrap().to_owned();
    let back1 = list(&api, &format!("page[size]=3&page[before]={}", enc(&prev))).await;
    assert_eq!(ext_ids(&back1), ["s6", "s5", "s4"]);
    assert!(back1["pagination"].get("previous").is_none(), "{back1}");
    assert!(back1["pagination"]["next"].is_string());
    // Filtered paging backwards.
    let f1 = list(&api, "page[size]=2&filter[type]=even").await;
    assert_eq!(ext_ids(&f1), ["s6", "s4"]);
    let next = f1["pagination"]["next"].as_str().unwrap().to_owned();
    let f2 = list(
        &api,
        &format!("page[size]=2&filter[type]=even&page[after]={}", enc(&next)),
    )
    .await;
    assert_eq!(ext_ids(&f2), ["s2", "s0"]);
    let prev = f2["pagination"]["previous"].as_str().unwrap().to_owned();
    let f1b = list(
        &api,
        &format!("page[size]=2&filter[type]=even&page[before]={}", enc(&prev)),
    )
    .await;
    assert_eq!(ext_ids(&f1b), ["s6", "s4"]);

    // Refusals.
    for bad in [
        format!("page[after]={}&page[before]={}", enc(&next), enc(&next)),
        "page[size]=0".into(),
        "page[size]=101".into(),
        "page[after]=garbage!".into(),
        "filter[status]=OPEN".into(),
        "filter[createdAt][from]=yesterday".into(),
        "filter[createdAt][period]=forever".into(),
    ] {
        let r = api.get(&format!("/api/v1/sessions?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert!(r.json()["error"].is_string(), "{bad}");
    }
}

#[tokio::test]
async fn update_and_close() {
    let env = Env::start().await;
    let api = env.api();
    let created = start(&api, &start_body(Some("upd"))).await.expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    let u = api
        .send(Method::PATCH, "/api/v1/sessions/upd", |rb| {
            rb.json(&json!({"tags": ["x"], "metadata": {"k": {"v": 1}}}))
        })
        .await
        .expect(200);
    assert_session_shape(&u, true);
    assert_eq!(u["tags"], json!(["x"]));
    assert_eq!(
        u["metadata"],
        json!({"k": {"v": 1}}),
        "metadata is replaced"
    );
    let u = api
        .send(Method::PATCH, &format!("/api/v1/sessions/{id}"), |rb| {
            rb.json(&json!({"metadata": {"k": {"w": 2}}, "externalId": "upd"}))
        })
        .await
        .expect(200);
    assert_eq!(
        u["metadata"],
        json!({"k": {"w": 2}}),
        "nested objects replace too"
    );
    let u = api
        .send(Method::PATCH, "/api/v1/sessions/upd", |rb| {
            rb.json(&json!({"metadata": null}))
        })
        .await
        .expect(200);
    assert_eq!(u["metadata"], Value::Null);
    for body in [json!({"externalId": "other"}), json!({"externalId": null})] {
        let r = api
            .send(Method::PATCH, "/api/v1/sessions/upd", |rb| rb.json(&body))
            .await;
        assert_error(
            &r,
            422,
            json!({"error": "externalId cannot be changed after creation"}),
        );
    }
    let r = api
        .send(Method::PATCH, "/api/v1/sessions/upd", |rb| {
            rb.json(&json!({"tags": "nope"}))
        })
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    // A public token cannot update or close.
    let token = created["publicAccessToken"].as_str().unwrap();
    let pat = env.s.bearer(token);
    let r = pat
        .send(Method::PATCH, "/api/v1/sessions/upd", |rb| {
            rb.json(&json!({"tags": []}))
        })
        .await;
    assert_error(&r, 403, forbidden_body());
    let r = pat.post("/api/v1/sessions/upd/close", &json!({})).await;
    assert_error(&r, 403, forbidden_body());
    // Close: terminal, idempotent.
    let closed = api
        .post("/api/v1/sessions/upd/close", &json!({"reason": "finished"}))
        .await
        .expect(200);
    assert!(closed["closedAt"].is_string());
    assert_eq!(closed["closedReason"], "finished");
    let again = api
        .send(
            Method::POST,
            &format!("/api/v1/sessions/{id}/close"),
            |rb| rb,
        )
        .await
        .expect(200);
    assert_eq!(again["closedAt"], closed["closedAt"]);
    assert_eq!(again["closedReason"], "finished");
    let r = api.post("/api/v1/sessions/nope/close", &json!({})).await;
    assert_error(&r, 404, json!({"error": "Not found"}));
}

/// Signs a public token the way the clients do: HS256 with the secret key.
fn client_token(secret: &str, sub: &str, scopes: &[&str], exp_in: i64) -> String {
    let now = sessiond_core::Timestamp::now().millis() / 1000;
    let claims = json!({
        "sub": sub, "pub": true, "scopes": scopes, "iat": now, "exp": now + exp_in,
        "iss": "https://id.trigger.dev", "aud": "https://api.trigger.dev",
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn auth_keys_and_public_tokens() {
    let env = Env::start().await;
    let api = env.api();
    let created = start(&api, &start_body(Some("auth-1"))).await.expect(201);
    let other = start(&api, &start_body(Some("auth-2"))).await.expect(201);
    let friendly = created["id"].as_str().unwrap().to_owned();

    // 401s and 403s, exactly.
    for r in [
        env.s.get("/api/v1/sessions").await,
        env.s
            .bearer("tr_dev_notregistered000000000")
            .get("/api/v1/sessions")
            .await,
        env.s
            .bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
            .get("/api/v1/sessions")
            .await,
    ] {
        assert_error(&r, 401, unauthorized_body());
    }
    let r = env.s.bearer(ADMIN).get("/api/v1/sessions").await;
    assert_error(&r, 403, forbidden_body());

    // Claims for self-signed tokens.
    let c = api
        .post("/api/v1/auth/jwt/claims", &json!({}))
        .await
        .expect(200);
    assert_eq!(c, json!({"sub": env.account, "pub": true}));

    // The server's token: read and `.in` on its session only.
    let pat = env.s.bearer(created["publicAccessToken"].as_str().unwrap());
    pat.get("/api/v1/sessions/auth-1").await.expect(200);
    pat.get(&format!("/api/v1/sessions/{friendly}"))
        .await
        .expect(200);
    assert_error(
        &pat.get("/api/v1/sessions/auth-2").await,
        403,
        forbidden_body(),
    );
    assert_error(&pat.get("/api/v1/sessions").await, 403, forbidden_body());
    assert_error(
        &pat.post("/api/v1/sessions", &start_body(Some("auth-3")))
            .await,
        403,
        forbidden_body(),
    );
    assert_error(
        &pat.post("/api/v1/auth/jwt/claims", &json!({})).await,
        403,
        forbidden_body(),
    );
    pat.raw(
        Method::POST,
        "/realtime/v1/sessions/auth-1/in/append",
        "text/plain",
        "from browser",
    )
    .await
    .expect(200);
    let r = pat
        .raw(
            Method::POST,
            "/realtime/v1/sessions/auth-1/out/append",
            "text/plain",
            "x",
        )
        .await;
    assert_error(
        &r,
        403,
        json!({"ok": false, "error": "Appending to the out channel requires secret key authentication"}),
    );
    let r = pat
        .raw(
            Method::POST,
            "/realtime/v1/sessions/auth-2/in/append",
            "text/plain",
            "x",
        )
        .await;
    assert_error(&r, 403, forbidden_body());
    pat.get("/realtime/v1/sessions/auth-1/in/records")
        .await
        .expect(200);
    assert_error(
        &pat.get("/realtime/v1/sessions/auth-2/in/records").await,
        403,
        forbidden_body(),
    );

    // Tokens the client signs with its secret key, by scope.
    let acc = env.account.clone();
    let read_only = env
        .s
        .bearer(&client_token(SECRET, &acc, &["read:sessions:auth-2"], 600));
    read_only.get("/api/v1/sessions/auth-2").await.expect(200);
    let r = read_only
        .raw(
            Method::POST,
            "/realtime/v1/sessions/auth-2/in/append",
            "text/plain",
            "x",
        )
        .await;
    assert_error(&r, 403, forbidden_body());
    let by_friendly = env.s.bearer(&client_token(
        SECRET,
        &acc,
        &[&format!("write:sessions:{}", other["id"].as_str().unwrap())],
        600,
    ));
    by_friendly
        .raw(
            Method::POST,
            "/realtime/v1/sessions/auth-2/in/append",
            "text/plain",
            "x",
        )
        .await
        .expect(200);
    let lister = env
        .s
        .bearer(&client_token(SECRET, &acc, &["read:sessions"], 600));
    assert_eq!(
        lister.get("/api/v1/sessions").await.expect(200)["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let creator = env
        .s
        .bearer(&client_token(SECRET, &acc, &["write:sessions"], 600));
    creator
        .post("/api/v1/sessions", &start_body(Some("by-token")))
        .await
        .expect(201);
    let named = env
        .s
        .bearer(&client_token(SECRET, &acc, &["write:sessions:named"], 600));
    named
        .post("/api/v1/sessions", &start_body(Some("named")))
        .await
        .expect(201);
    assert_error(
        &named
            .post("/api/v1/sessions", &start_body(Some("unnamed")))
            .await,
        403,
        forbidden_body(),
    );
    let admin_scope = env.s.bearer(&client_token(SECRET, &acc, &["admin"], 600));
    admin_scope.get("/api/v1/sessions").await.expect(200);
    let no_scopes = env.s.bearer(&client_token(SECRET, &acc, &[], 600));
    assert_error(
        &no_scopes.get("/api/v1/sessions/auth-1").await,
        403,
        forbidden_body(),
    );

    // Refused: expired, wrong key, another account's key, a revoked key.
    for t in [
        client_token(SECRET, &acc, &["admin"], -10),
        client_token("tr_dev_someotherkey0000000000", &acc, &["admin"], 600),
    ] {
        assert_error(
            &env.s.bearer(&t).get("/api/v1/sessions/auth-1").await,
            401,
            unauthorized_body(),
        );
    }
    let other_secret = "tr_prod_sk_0123456789abcdefghijklmn";
    let other_account = env.other_key(other_secret).await;
    let foreign = client_token(other_secret, &acc, &["admin"], 600);
    assert_error(
        &env.s.bearer(&foreign).get("/api/v1/sessions/auth-1").await,
        401,
        unauthorized_body(),
    );
    // Their own token sees their own (empty) account, not ours.
    let theirs = client_token(other_secret, &other_account, &["admin"], 600);
    assert_error(
        &env.s.bearer(&theirs).get("/api/v1/sessions/auth-1").await,
        404,
        json!({"error": "Not found"}),
    );
    let their_key = env.s.bearer(other_secret);
    assert_error(
        &their_key.get("/api/v1/sessions/auth-1").await,
        404,
        json!({"error": "Not found"}),
    );
    let good = client_token(SECRET, &acc, &["admin"], 600);
    env.s
        .bearer(&good)
        .get("/api/v1/sessions/auth-1")
        .await
        .expect(200);
    env.s
        .bearer(ADMIN)
        .delete(&format!("/v1/keys/{}", env.key_id))
        .await
        .expect(204);
    assert_error(
        &env.s.bearer(&good).get("/api/v1/sessions/auth-1").await,
        401,
        unauthorized_body(),
    );
    assert_error(&api.get("/api/v1/sessions").await, 401, unauthorized_body());
}

/// One parsed SSE event.
#[derive(Debug, Default, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: String,
}

fn parse_sse(text: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut ev = Sse::default();
        let mut any = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                ev.event = v.trim().to_owned();
                any = true;
            } else if let Some(v) = line.strip_prefix("id:") {
                ev.id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                any = true;
            }
        }
        if any {
            out.push(ev);
        }
    }
    out
}

/// The records of the batch events, in order.
fn batch_records(events: &[Sse]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event == "batch")
        .flat_map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            v["records"].as_array().unwrap().clone()
        })
        .collect()
}

async fn sse(api: &Api, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut hs = headers.to_vec();
    hs.push(("accept", "text/event-stream"));
    api.send(Method::GET, path, |mut rb| {
        for (k, v) in hs {
            rb = rb.header(k, v);
        }
        rb
    })
    .await
}

#[tokio::test]
async fn channels_append_sse_and_drain() {
    let env = Env::start().await;
    let api = env.api();
    let created = start(&api, &start_body(Some("chan"))).await.expect(201);
    let friendly = created["id"].as_str().unwrap().to_owned();
    let uuid = native_uuid(&friendly);
    let append = |io: &'static str, body: &'static str, part: Option<&'static str>| {
        let api = api.clone();
        async move {
            api.send(
                Method::POST,
                &format!("/realtime/v1/sessions/chan/{io}/append"),
                |mut rb| {
                    if let Some(p) = part {
                        rb = rb.header("x-part-id", p);
                    }
                    rb.header("content-type", "application/json").body(body)
                },
            )
            .await
        }
    };
    let a = append("in", "{\"hello\":1}", Some("p1")).await.expect(200);
    assert_eq!(a, json!({"ok": true, "seq": 1}));
    let a = append("in", "{\"hello\":1}", Some("p1")).await.expect(200);
    assert_eq!(
        a,
        json!({"ok": true, "seq": 1}),
        "a repeated X-Part-Id is not appended"
    );
    let a = append("in", "plain text", None).await.expect(200);
    assert_eq!(a["seq"], 2);
    // The same native channel: `{"data": "<raw>", "id"}` with record id = the part id.
    let native = api
        .get(&format!("/v1/sessions/{uuid}/channels/in/records"))
        .await
        .expect(200);
    let recs = native["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["id"], "p1");
    assert_eq!(
        recs[0]["data"],
        json!({"data": "{\"hello\":1}", "id": "p1"})
    );
    assert_eq!(recs[1]["data"]["data"], "plain text");
    assert_eq!(recs[1]["data"]["id"], recs[1]["id"]);
    // And vice versa: natively appended `out` records read here.
    api.post(
        &format!("/v1/sessions/{uuid}/channels/out/records"),
        &json!({"records": [{"id": "n1", "data": {"type": "text", "v": 1}}, {"data": "s", "headers": {"h": "1"}}]}),
    )
    .await
    .expect(201);
    append("out", "secret-side", Some("o3")).await.expect(200);

    // Drain.
    let d = api
        .get("/realtime/v1/sessions/chan/out/records")
        .await
        .expect(200);
    let recs = d["records"].as_array().unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(
        recs[0],
        json!({"data": {"type": "text", "v": 1}, "id": "n1", "seqNum": 1})
    );
    assert_eq!(recs[1]["data"], "s");
    assert_eq!(recs[1]["headers"], json!([["h", "1"]]));
    assert_eq!(
        recs[2],
        json!({"data": "secret-side", "id": "o3", "seqNum": 3})
    );
    let d = api
        .get(&format!(
            "/realtime/v1/sessions/{friendly}/out/records?afterEventId=2"
        ))
        .await
        .expect(200);
    assert_eq!(d["records"].as_array().unwrap().len(), 1);
    let d = api
        .get("/realtime/v1/sessions/chan/out/records?afterEventId=99")
        .await
        .expect(200);
    assert_eq!(d, json!({"records": []}));
    let d = api.get("/realtime/v1/sessions/chan/other/records").await;
    assert_error(&d, 404, json!({"error": "Not found"}));
    for bad in ["-1", "1a", ""] {
        let r = api
            .get(&format!(
                "/realtime/v1/sessions/chan/out/records?afterEventId={bad}"
            ))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let fresh = start(&api, &start_body(Some("empty"))).await.expect(201);
    let _ = fresh;
    let d = api
        .get("/realtime/v1/sessions/empty/out/records")
        .await
        .expect(200);
    assert_eq!(d, json!({"records": []}));

    // HEAD.
    let h = api.head("/realtime/v1/sessions/chan/out").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("x-last-chunk-index"), Some("3"));

    // SSE: the backlog in batches, then the stream ends after Timeout-Seconds idle.
    let t0 = Instant::now();
    let r = sse(
        &api,
        "/realtime/v1/sessions/chan/out",
        &[("timeout-seconds", "1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "ends after the idle timeout"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r.header("x-stream-version"), Some("v2"));
    assert_eq!(r.header("access-control-expose-headers"), Some("*"));
    let events = parse_sse(&r.text);
    let ping = events.iter().find(|e| e.event == "ping").expect("a ping");
    let pv: Value = serde_json::from_str(&ping.data).unwrap();
    assert!(pv["timestamp"].as_i64().unwrap() > 0, "{pv}");
    let batches: Vec<&Sse> = events.iter().filter(|e| e.event == "batch").collect();
    let last = batches.last().unwrap();
    let id = last.id.clone().unwrap();
    let parts: Vec<&str> = id.split(',').collect();
    assert_eq!(parts.len(), 3, "{id}");
    assert_eq!(parts[0], "3");
    assert_eq!(parts[1], "3");
    let recs = batch_records(&events);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["seq_num"], 1);
    assert!(recs[0]["timestamp"].as_i64().unwrap() > 0);
    assert_eq!(recs[0]["headers"], json!([]));
    let body: Value = serde_json::from_str(recs[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"data": {"type": "text", "v": 1}, "id": "n1"}));
    let body: Value = serde_json::from_str(recs[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"data": "secret-side", "id": "o3"}));
    assert_eq!(recs[1]["headers"], json!([["h", "1"]]));

    // Resume after Last-Event-ID (digits before any ',' or '-').
    for last in ["1", "1,1,50", "1-0"] {
        let r = sse(
            &api,
            "/realtime/v1/sessions/chan/out",
            &[("timeout-seconds", "1"), ("last-event-id", last)],
        )
        .await;
        let recs = batch_records(&parse_sse(&r.text));
        assert_eq!(
            recs.iter()
                .map(|r| r["seq_num"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [2, 3],
            "{last}"
        );
    }

    // Live: records appended while reading arrive, the stream stays open past a close.
    let reader = {
        let api = api.clone();
        tokio::spawn(async move {
            sse(
                &api,
                "/realtime/v1/sessions/chan/in",
                &[("timeout-seconds", "2"), ("last-event-id", "2")],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.post(
        &format!("/v1/sessions/{uuid}/channels/in/records"),
        &json!({"records": [{"id": "live", "data": {"x": 1}}]}),
    )
    .await
    .expect(201);
    api.post("/api/v1/sessions/chan/close", &json!({}))
        .await
        .expect(200);
    let r = reader.await.unwrap();
    let recs = batch_records(&parse_sse(&r.text));
    assert_eq!(recs.len(), 1, "{}", r.text);
    assert_eq!(recs[0]["seq_num"], 3);
    // Closed: reads keep working, appends are refused.
    let r = sse(
        &api,
        "/realtime/v1/sessions/chan/in",
        &[("timeout-seconds", "1")],
    )
    .await;
    assert_eq!(batch_records(&parse_sse(&r.text)).len(), 3);
    let r = append("in", "late", None).await;
    assert_error(
        &r,
        400,
        json!({"ok": false, "error": "Cannot append to a closed session"}),
    );

    // Header and path refusals.
    for (v, msg) in [
        ("0", "Timeout seconds must be greater than 0"),
        ("601", "Timeout seconds must be less than 600"),
        ("10abc", "Invalid timeout seconds"),
    ] {
        let r = sse(
            &api,
            "/realtime/v1/sessions/chan/out",
            &[("timeout-seconds", v)],
        )
        .await;
        assert_eq!(r.status, 400, "{v}");
        assert_eq!(r.text, msg);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    }
    let r = sse(&api, "/realtime/v1/sessions/nope/out", &[]).await;
    assert_error(&r, 404, json!({"error": "Not found"}));
    let r = sse(&api, "/realtime/v1/sessions/chan/sideways", &[]).await;
    assert_error(&r, 404, json!({"error": "Not found"}));
    let r = api
        .raw(
            Method::POST,
            "/realtime/v1/sessions/nope/in/append",
            "text/plain",
            "x",
        )
        .await;
    assert_error(&r, 404, json!({"error": "Not found"}));
}

#[tokio::test]
async fn append_limits_and_cors() {
    let env = Env::start().await;
    let api = env.api();
    start(&api, &start_body(Some("big"))).await.expect(201);
    let r = api
        .raw(
            Method::POST,
            "/realtime/v1/sessions/big/in/append",
            "text/plain",
            "x".repeat(1024 * 1024 + 1),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert!(v["error"].is_string());
    let r = api
        .raw(
            Method::POST,
            "/realtime/v1/sessions/big/in/append",
            "text/plain",
            "x".repeat(1000),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A bad part id is refused in the append shape.
    let r = api
        .send(Method::POST, "/realtime/v1/sessions/big/in/append", |rb| {
            rb.header("x-part-id", "x".repeat(300)).body("x")
        })
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json()["ok"], false);
    // CORS is open.
    let r = env
        .s
        .send(Method::OPTIONS, "/api/v1/sessions", |rb| {
            rb.header("origin", "https://app.example")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
        })
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.text);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = api
        .send(Method::GET, "/api/v1/sessions", |rb| {
            rb.header("origin", "https://app.example")
        })
        .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

/// In open mode (no credentials needed on loopback) the surface acts as the default account.
#[tokio::test]
async fn open_mode() {
    let s = TestServer::start().await;
    let created = start(&s, &start_body(Some("open"))).await.expect(201);
    let token = created["publicAccessToken"].as_str().unwrap();
    assert_eq!(
        claims(token)["sub"],
        json!("00000000-0000-0000-0000-000000000000")
    );
    s.bearer(token)
        .get("/api/v1/sessions/open")
        .await
        .expect(200);
    let native = s.get("/v1/sessions/open").await.expect(200);
    assert_eq!(native["data"]["trigger"]["taskIdentifier"], "my-agent");
}

#[tokio::test]
async fn openapi_documents_the_surface() {
    let s = TestServer::start().await;
    let doc = s.get("/openapi.json").await.expect(200);
    let paths = doc["paths"].as_object().unwrap();
    for (p, methods) in [
        ("/api/v1/sessions", &["get", "post"][..]),
        ("/api/v1/sessions/{session}", &["get", "patch"]),
        ("/api/v1/sessions/{session}/close", &["post"]),
        ("/api/v1/auth/jwt/claims", &["post"]),
        ("/realtime/v1/sessions/{session}/{io}", &["get", "head"]),
        ("/realtime/v1/sessions/{session}/{io}/append", &["post"]),
        ("/realtime/v1/sessions/{session}/{io}/records", &["get"]),
    ] {
        let item = paths
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing from /openapi.json"));
        for m in methods {
            assert_eq!(item[*m]["tags"], json!(["trigger"]), "{m} {p}");
        }
    }
    assert!(doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "trigger"));
}
