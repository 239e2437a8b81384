//! The midPilot Connector Generator surface (design/compat/MIDPILOT.md): one test per route and
//! per error message, the data shared with the native API, and the product's lifecycle.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sessiond_server::AppOptions;
use uuid::Uuid;

use crate::common::{Api, Resp, TestServer};

const OPENAPI3: &[u8] = include_bytes!("../../../sessiond-docs/tests/fixtures/openapi3.json");
const P: &str = "/api/v1/session";

fn multipart(field: &str, filename: &str, ct: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "midpilot-test-boundary-77aa";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_to(api: &Api, path: &str, filename: &str, ct: &str, bytes: &[u8]) -> Resp {
    let (ct, body) = multipart("documentation", filename, ct, bytes);
    api.raw(Method::POST, path, &ct, body).await
}

async fn upload(api: &Api, sid: &str, filename: &str, ct: &str, bytes: &[u8]) -> Resp {
    upload_to(
        api,
        &format!("{P}/{sid}/documentation"),
        filename,
        ct,
        bytes,
    )
    .await
}

async fn new_session(api: &Api) -> String {
    let r = api.post(P, &json!({})).await.expect(201);
    r["sessionId"].as_str().unwrap().to_owned()
}

async fn shallow_patch(api: &Api, sid: &str, data: Value) -> Resp {
    api.send(Method::PATCH, &format!("{P}/{sid}"), |rb| {
        rb.header("content-type", "application/json")
            .body(json!({ "data": data }).to_string())
    })
    .await
}

fn detail(r: &Resp, status: u16, message: &str) {
    assert_eq!(r.json(), json!({ "detail": message }), "{}", r.what);
    assert_eq!(r.status, status, "{}", r.what);
}

/// Polls the midPilot job list until the job is `finished` or `failed`.
async fn wait_job(api: &Api, sid: &str, job: &str) -> Value {
    for _ in 0..400 {
        let jobs = api.get(&format!("{P}/{sid}/jobs")).await.expect(200);
        if let Some(j) = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["jobId"] == job)
        {
            if j["status"] == "finished" || j["status"] == "failed" {
                return j.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job} did not finish");
}

#[tokio::test]
async fn create_with_server_id() {
    let s = TestServer::start().await;
    let r = s.post(P, &json!({})).await.expect(201);
    assert_eq!(
        r["message"],
        "Session created successfully. Use this session_id in subsequent requests."
    );
    let id = r["sessionId"].as_str().unwrap();
    Uuid::parse_str(id).unwrap();
    s.get(&format!("/v1/sessions/{id}")).await.expect(200);
}

#[tokio::test]
async fn create_with_caller_id_and_409() {
    let s = TestServer::start().await;
    let id = Uuid::new_v4();
    let r = s.post(&format!("{P}/{id}"), &json!({})).await.expect(201);
    assert_eq!(r["sessionId"], id.to_string());
    assert_eq!(
        r["message"],
        "Session created successfully with provided ID."
    );
    let r = s.post(&format!("{P}/{id}"), &json!({})).await;
    detail(&r, 409, &format!("Session {id} already exists"));
}

#[tokio::test]
async fn the_session_prefix_serves_the_same_routes() {
    let s = TestServer::start().await;
    let r = s.post("/session", &json!({})).await.expect(201);
    let id = r["sessionId"].as_str().unwrap();
    let got = s.get(&format!("{P}/{id}")).await.expect(200);
    assert_eq!(got["sessionId"], id);
    assert_eq!(s.head(&format!("/session/{id}")).await.status, 204);
}

#[tokio::test]
async fn get_returns_every_data_key() {
    let s = TestServer::start().await;
    let id = s
        .create(json!({"data": {"a": {"x": 1}, "b": [1, 2]}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.get(&format!("{P}/{id}")).await.expect(200);
    assert_eq!(r["data"], json!({"a": {"x": 1}, "b": [1, 2]}));
    assert_eq!(r["sessionId"], id);
    for k in ["createdAt", "updatedAt"] {
        chrono_like(r[k].as_str().unwrap());
    }
}

fn chrono_like(t: &str) {
    assert!(t.len() >= 20 && t.contains('T'), "not ISO 8601: {t}");
}

#[tokio::test]
async fn unknown_session_is_404_on_get_and_head() {
    let s = TestServer::start().await;
    let id = Uuid::new_v4();
    detail(
        &s.get(&format!("{P}/{id}")).await,
        404,
        &format!("Session {id} not found"),
    );
    assert_eq!(s.head(&format!("{P}/{id}")).await.status, 404);
    let sid = new_session(&s).await;
    assert_eq!(s.head(&format!("{P}/{sid}")).await.status, 204);
}

#[tokio::test]
async fn patch_is_a_shallow_merge_keeping_null() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    shallow_patch(
        &s,
        &sid,
        json!({"a": {"x": 1, "y": 2}, "b": 1, "c": "keep"}),
    )
    .await
    .expect(200);
    let r = shallow_patch(&s, &sid, json!({"a": {"z": 3}, "b": null}))
        .await
        .expect(200);
    assert_eq!(
        r,
        json!({"message": "Session updated successfully", "sessionId": sid})
    );
    let got = s.get(&format!("{P}/{sid}")).await.expect(200);
    assert_eq!(got["data"], json!({"a": {"z": 3}, "b": null, "c": "keep"}));
}

#[tokio::test]
async fn patch_of_an_unknown_session_is_404() {
    let s = TestServer::start().await;
    let id = Uuid::new_v4();
    detail(
        &shallow_patch(&s, &id.to_string(), json!({"a": 1})).await,
        404,
        &format!("Session {id} not found or update failed"),
    );
}

#[tokio::test]
async fn changes_are_shared_with_the_native_api() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let before = s.get(&format!("/v1/sessions/{sid}")).await.expect(200);
    shallow_patch(&s, &sid, json!({"discoveryInput": {"q": 1}}))
        .await
        .expect(200);
    let after = s.get(&format!("/v1/sessions/{sid}")).await.expect(200);
    assert_eq!(after["data"]["discoveryInput"], json!({"q": 1}));
    assert_eq!(
        after["version"].as_i64().unwrap(),
        before["version"].as_i64().unwrap() + 1
    );
    let events = s
        .get(&format!(
            "/v1/sessions/{sid}/channels/events/records?after=0&limit=1000"
        ))
        .await
        .expect(200);
    assert!(
        events["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["data"]["type"] == "session.patched"),
        "{events}"
    );
    // And the other way round.
    s.patch(
        &format!("/v1/sessions/{sid}"),
        &json!({"data": {"native": true}}),
    )
    .await
    .expect(200);
    let got = s.get(&format!("{P}/{sid}")).await.expect(200);
    assert_eq!(got["data"]["native"], true);
    assert_eq!(got["data"]["discoveryInput"], json!({"q": 1}));
}

#[tokio::test]
async fn delete_cascades() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let up = upload(&s, &sid, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    let r = s.delete(&format!("{P}/{sid}")).await.expect(200);
    assert_eq!(
        r,
        json!({"message": "Session deleted successfully", "sessionId": sid})
    );
    assert_eq!(s.get(&format!("/v1/sessions/{sid}")).await.status, 404);
    let job = up["jobId"].as_str().unwrap();
    assert_eq!(s.get(&format!("/v1/jobs/{job}")).await.status, 404);
    detail(
        &s.delete(&format!("{P}/{sid}")).await,
        404,
        &format!("Session {sid} not found"),
    );
}

#[tokio::test]
async fn the_bare_list_is_405() {
    let s = TestServer::start().await;
    detail(&s.get(P).await, 405, "Method Not Allowed");
    detail(&s.get("/session").await, 405, "Method Not Allowed");
}

#[tokio::test]
async fn a_non_uuid_path_id_is_422() {
    let s = TestServer::start().await;
    let r = s.get(&format!("{P}/xyz")).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let d = &r.json()["detail"][0];
    assert_eq!(d["type"], "uuid_parsing");
    assert_eq!(d["loc"], json!(["path", "session_id"]));
    assert_eq!(d["input"], "xyz");
    assert_eq!(
        d["msg"],
        "Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `x` at 1"
    );
    let r = s
        .get(&format!("{P}/{}/documentation/nope", new_session(&s).await))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["detail"][0]["loc"], json!(["path", "doc_id"]));
}

#[tokio::test]
async fn jobs_lists_the_session_jobs_oldest_first() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let a = s
        .post(
            &format!("/api/v1/discovery/{sid}/discovery"),
            &json!({"x": 1}),
        )
        .await
        .expect(200);
    let b = s
        .post(&format!("/api/v1/scrape/{sid}/scrape"), &json!({"x": 2}))
        .await
        .expect(200);
    s.post(
        &format!("/v1/jobs/{}/cancel", b["jobId"].as_str().unwrap()),
        &json!({}),
    )
    .await
    .expect(200);
    let r = s.get(&format!("{P}/{sid}/jobs")).await.expect(200);
    assert_eq!(r["sessionId"], sid);
    let jobs = r["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["jobId"], a["jobId"]);
    assert_eq!(jobs[0]["type"], "discovery.discovery");
    assert_eq!(jobs[0]["status"], "queued");
    assert_eq!(jobs[1]["status"], "failed", "cancelled maps to failed");
    let id = Uuid::new_v4();
    detail(
        &s.get(&format!("{P}/{id}/jobs")).await,
        404,
        &format!("Session {id} not found"),
    );
}

#[tokio::test]
async fn upload_processes_into_documentation_items() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let r = upload(&s, &sid, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    assert_eq!(r["message"], "Documentation upload queued for processing");
    assert_eq!(r["sessionId"], sid);
    assert_eq!(r["status"], "queued");
    let (job, doc) = (r["jobId"].as_str().unwrap(), r["docId"].as_str().unwrap());
    let j = wait_job(&s, &sid, job).await;
    assert_eq!(j["status"], "finished", "{j}");
    assert_eq!(j["type"], "documentation.processUpload");
    let data = s.get(&format!("{P}/{sid}")).await.expect(200)["data"].clone();
    assert_eq!(
        data[format!("documentation.processUpload_{doc}_job_id")],
        json!(job)
    );
    let items = data["documentationItems"].as_array().unwrap();
    assert!(!items.is_empty());
    let item = &items[0];
    assert_eq!(item["page_id"], doc);
    assert_eq!(item["source"], "upload");
    assert_eq!(item["url"], "upload://api.json");
    assert_eq!(item["scrape_job_ids"], json!([job]));
    assert_eq!(item["summary"], Value::Null);
    for k in [
        "filename",
        "chunk_number",
        "token_count",
        "character_count",
        "num_endpoints",
        "tags",
        "category",
        "content_type",
        "parser",
    ] {
        assert!(
            item["metadata"].get(k).is_some(),
            "metadata lacks {k}: {item}"
        );
    }
    let list = s.get(&format!("{P}/{sid}/documentation")).await.expect(200);
    assert_eq!(list["sessionId"], sid);
    assert_eq!(list["count"], items.len());
    assert_eq!(&list["documentationItems"], &data["documentationItems"]);
}

/// Every record `data` of the session's native events channel.
async fn native_events(api: &Api, sid: &str) -> Vec<Value> {
    let page = api
        .get(&format!(
            "/v1/sessions/{sid}/channels/events/records?after=0&limit=1000"
        ))
        .await
        .expect(200);
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"].clone())
        .collect()
}

#[tokio::test]
async fn the_items_are_in_the_session_as_soon_as_the_job_succeeds() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let v0 = s.get(&format!("/v1/sessions/{sid}")).await.expect(200)["version"]
        .as_i64()
        .unwrap();
    let r = upload(&s, &sid, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    let (job, doc) = (r["jobId"].as_str().unwrap(), r["docId"].as_str().unwrap());
    // Poll the native job until it has succeeded, then read the session at once.
    let mut succeeded = false;
    for _ in 0..400 {
        let j = s.get(&format!("/v1/jobs/{job}")).await.expect(200);
        if j["status"] == "succeeded" {
            succeeded = true;
            break;
        }
        assert!(j["status"] == "queued" || j["status"] == "running", "{j}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(succeeded, "job {job} did not succeed");
    let session = s.get(&format!("/v1/sessions/{sid}")).await.expect(200);
    let data = &session["data"];
    assert_eq!(
        data[format!("documentation.processUpload_{doc}_job_id")],
        json!(job)
    );
    let items = data["documentationItems"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|i| i["page_id"] == doc));
    let list = s.get(&format!("{P}/{sid}/documentation")).await.expect(200);
    assert_eq!(&list["documentationItems"], &data["documentationItems"]);
    // One bump for the upload (its job-id key), exactly one for the finish.
    assert_eq!(session["version"], v0 + 2, "{session}");
    let events = native_events(&s, &sid).await;
    let patches: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "session.patched")
        .collect();
    assert_eq!(patches.len(), 2, "{events:?}");
    assert_eq!(patches[0]["version"], v0 + 1);
    assert_eq!(
        patches[0]["patch"]["data"][format!("documentation.processUpload_{doc}_job_id")],
        json!(job)
    );
    assert_eq!(patches[1]["version"], v0 + 2);
    assert_eq!(
        patches[1]["patch"]["data"]["documentationItems"],
        data["documentationItems"]
    );
    // The finish's patch is recorded with the document's new state, in its transaction.
    let ready = events
        .iter()
        .position(|e| e["type"] == "document.ready" && e["documentId"] == doc)
        .expect("document.ready");
    assert_eq!(events[ready + 1]["type"], "session.patched", "{events:?}");
    assert_eq!(events[ready + 1]["version"], v0 + 2);
}

#[tokio::test]
async fn upload_under_a_caller_doc_id() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let doc = Uuid::new_v4();
    let r = upload_to(
        &s,
        &format!("{P}/{sid}/documentation/{doc}"),
        "api.json",
        "application/json",
        OPENAPI3,
    )
    .await
    .expect(200);
    assert_eq!(r["docId"], doc.to_string());
    wait_job(&s, &sid, r["jobId"].as_str().unwrap()).await;
    let one = s
        .get(&format!("{P}/{sid}/documentation/{doc}"))
        .await
        .expect(200);
    assert_eq!(one["docId"], doc.to_string());
    assert!(!one["chunks"].as_array().unwrap().is_empty());
    assert_eq!(one["chunks"][0]["page_id"], doc.to_string());
}

#[tokio::test]
async fn an_empty_upload_is_422() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    detail(
        &upload(&s, &sid, "empty.json", "application/json", b"").await,
        422,
        "Uploaded documentation empty.json is empty.",
    );
}

#[tokio::test]
async fn an_unsupported_type_fails_the_job_not_the_upload() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let r = upload(
        &s,
        &sid,
        "x.bin",
        "application/x-weird",
        b"\x00\x01\x02binary",
    )
    .await
    .expect(200);
    let job = r["jobId"].as_str().unwrap();
    let j = wait_job(&s, &sid, job).await;
    assert_eq!(j["status"], "failed");
    let native = s.get(&format!("/v1/jobs/{job}")).await.expect(200);
    assert!(
        native["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Unsupported documentation content type"),
        "{native}"
    );
}

#[tokio::test]
async fn an_upload_into_an_unknown_session_is_404() {
    let s = TestServer::start().await;
    let id = Uuid::new_v4();
    detail(
        &upload(
            &s,
            &id.to_string(),
            "api.json",
            "application/json",
            OPENAPI3,
        )
        .await,
        404,
        &format!("Session {id} not found"),
    );
    detail(
        &s.get(&format!("{P}/{id}/documentation")).await,
        404,
        &format!("Session {id} not found"),
    );
}

#[tokio::test]
async fn head_documentation_is_202_then_204_and_404() {
    let s = TestServer::start_with(AppOptions {
        document_processors: 0,
        ..AppOptions::default()
    })
    .await;
    let sid = new_session(&s).await;
    let r = upload(&s, &sid, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    let doc = r["docId"].as_str().unwrap();
    let h = s.head(&format!("{P}/{sid}/documentation/{doc}")).await;
    assert_eq!(h.status, 202);
    assert_eq!(h.header("x-documentation-status"), Some("processing"));
    assert_eq!(h.header("x-job-id"), r["jobId"].as_str());
    let other = Uuid::new_v4();
    assert_eq!(
        s.head(&format!("{P}/{sid}/documentation/{other}"))
            .await
            .status,
        404
    );

    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let r = upload(&s, &sid, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    wait_job(&s, &sid, r["jobId"].as_str().unwrap()).await;
    let doc = r["docId"].as_str().unwrap();
    assert_eq!(
        s.head(&format!("{P}/{sid}/documentation/{doc}"))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn get_and_delete_one_document() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let missing = Uuid::new_v4();
    let msg = format!("Documentation {missing} not found in session {sid}");
    detail(
        &s.get(&format!("{P}/{sid}/documentation/{missing}")).await,
        404,
        &msg,
    );
    detail(
        &s.delete(&format!("{P}/{sid}/documentation/{missing}"))
            .await,
        404,
        &msg,
    );
    let r = upload(&s, &sid, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    wait_job(&s, &sid, r["jobId"].as_str().unwrap()).await;
    let doc = r["docId"].as_str().unwrap();
    let n = s
        .get(&format!("{P}/{sid}/documentation/{doc}"))
        .await
        .expect(200)["chunks"]
        .as_array()
        .unwrap()
        .len();
    let d = s
        .delete(&format!("{P}/{sid}/documentation/{doc}"))
        .await
        .expect(200);
    assert_eq!(
        d,
        json!({
            "message": format!("Documentation deleted successfully ({n} chunk(s) removed)"),
            "sessionId": sid,
            "deletedPageId": doc,
            "deletedChunks": n,
        })
    );
    let data = s.get(&format!("{P}/{sid}")).await.expect(200)["data"].clone();
    assert_eq!(data["documentationItems"], json!([]));
}

#[tokio::test]
async fn delete_all_documentation() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let r = upload(&s, &sid, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    wait_job(&s, &sid, r["jobId"].as_str().unwrap()).await;
    let d = s
        .delete(&format!("{P}/{sid}/documentation"))
        .await
        .expect(200);
    assert_eq!(
        d,
        json!({"message": "All documentation deleted successfully", "sessionId": sid})
    );
    let list = s.get(&format!("{P}/{sid}/documentation")).await.expect(200);
    assert_eq!(list["count"], 0);
}

#[tokio::test]
async fn a_second_identical_upload_reuses_the_chunks() {
    let s = TestServer::start().await;
    let a = new_session(&s).await;
    let r = upload(&s, &a, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    wait_job(&s, &a, r["jobId"].as_str().unwrap()).await;
    let b = new_session(&s).await;
    let r2 = upload(&s, &b, "api.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    assert_eq!(r2["status"], "finished", "{r2}");
    let items = s.get(&format!("{P}/{b}")).await.expect(200)["data"]["documentationItems"].clone();
    assert!(!items.as_array().unwrap().is_empty());
    assert_eq!(items[0]["page_id"], r2["docId"]);
    // Another filename is another input.
    let c = new_session(&s).await;
    let r3 = upload(&s, &c, "other.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    assert_eq!(r3["status"], "queued");
}

#[tokio::test]
async fn a_stage_job_writes_its_keys_and_reports_status() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let path = format!("/api/v1/discovery/{sid}/discovery");
    let r = s.post(&path, &json!({"sources": ["a"]})).await.expect(200);
    let job = r["jobId"].as_str().unwrap().to_owned();
    let data = s.get(&format!("{P}/{sid}")).await.expect(200)["data"].clone();
    assert_eq!(data["discoveryJobId"], json!(job));
    assert_eq!(data["discoveryInput"], json!({"sources": ["a"]}));
    let st = s.get(&path).await.expect(200);
    assert_eq!(st["jobId"], json!(job));
    assert_eq!(st["status"], "queued");
    assert_eq!(st["progress"], json!({}));
    assert_eq!(st["errors"], json!([]));
    // A worker on the native protocol completes it.
    let claimed = s
        .post("/v1/jobs/claim", &json!({"types": ["discovery.discovery"]}))
        .await
        .expect(200);
    let st = s.get(&path).await.expect(200);
    assert_eq!(st["status"], "running");
    s.post(
        &format!("/v1/jobs/{job}/complete"),
        &json!({"leaseId": claimed["leaseId"], "result": {"found": 3}}),
    )
    .await
    .expect(200);
    let st = s.get(&format!("{path}?jobId={job}")).await.expect(200);
    assert_eq!(st["status"], "finished");
    assert_eq!(st["result"], json!({"found": 3}));
    let data = s.get(&format!("{P}/{sid}")).await.expect(200)["data"].clone();
    assert_eq!(data["discoveryOutput"], json!({"found": 3}));
}

#[tokio::test]
async fn stage_status_of_unknown_and_missing_jobs() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let other = Uuid::new_v4();
    let st = s
        .get(&format!("/api/v1/scrape/{sid}/scrape?jobId={other}"))
        .await
        .expect(200);
    assert_eq!(st["status"], "not_found");
    assert_eq!(st["jobId"], other.to_string());
    detail(
        &s.get(&format!("/api/v1/scrape/{sid}/scrape")).await,
        404,
        &format!("No scrape job found in session {sid}"),
    );
    let id = Uuid::new_v4();
    detail(
        &s.post(&format!("/api/v1/codegen/{id}/generate"), &json!({}))
            .await,
        404,
        &format!("Session {id} not found"),
    );
}

#[tokio::test]
async fn stage_jobs_reuse_with_use_previous_session_data() {
    let s = TestServer::start().await;
    let a = new_session(&s).await;
    let path = format!("/api/v1/digester/{a}/classes");
    let r = s.post(&path, &json!({"q": 1})).await.expect(200);
    let job = r["jobId"].as_str().unwrap();
    let claimed = s
        .post("/v1/jobs/claim", &json!({"types": ["digester.classes"]}))
        .await
        .expect(200);
    s.post(
        &format!("/v1/jobs/{job}/complete"),
        &json!({"leaseId": claimed["leaseId"], "result": {"classes": ["User"]}}),
    )
    .await
    .expect(200);
    let b = new_session(&s).await;
    let path_b = format!("/api/v1/digester/{b}/classes");
    // Without the flag: a new job.
    s.post(&path_b, &json!({"q": 1})).await.expect(200);
    assert_eq!(s.get(&path_b).await.expect(200)["status"], "queued");
    for body in [
        json!({"q": 1, "usePreviousSessionData": true}),
        json!({"q": 1, "skipCache": false}),
    ] {
        s.post(&path_b, &body).await.expect(200);
        let st = s.get(&path_b).await.expect(200);
        assert_eq!(st["status"], "finished", "{body}");
        assert_eq!(st["result"], json!({"classes": ["User"]}));
    }
    let data = s.get(&format!("{P}/{b}")).await.expect(200)["data"].clone();
    assert_eq!(data["classesOutput"], json!({"classes": ["User"]}));
}

#[tokio::test]
async fn with_auth_on_the_routes_take_api_keys() {
    const ADMIN: &str = "admin-secret-midpilot";
    let s = TestServer::start_with(AppOptions {
        auth_required: true,
        admin_key: Some(ADMIN.to_owned()),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(s.post(P, &json!({})).await.status, 401);
    let admin = s.bearer(ADMIN);
    let acct = admin
        .post("/v1/accounts", &json!({"name": "a"}))
        .await
        .expect(201);
    let k = admin
        .post(
            &format!("/v1/accounts/{}/keys", acct["id"].as_str().unwrap()),
            &json!({"name": "k"}),
        )
        .await
        .expect(201);
    let key = k["key"].as_str().unwrap();
    let sid = new_session(&s.x_api_key(key)).await;
    s.bearer(key).get(&format!("{P}/{sid}")).await.expect(200);
    let r = s.get(&format!("{P}/{sid}")).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["detail"].is_string());
}

/// The product's documented lifecycle, end to end.
#[tokio::test]
async fn walkthrough() {
    let s = TestServer::start().await;
    let sid = new_session(&s).await;
    let r = upload(&s, &sid, "petstore.json", "application/json", OPENAPI3)
        .await
        .expect(200);
    let job = r["jobId"].as_str().unwrap();
    assert_eq!(wait_job(&s, &sid, job).await["status"], "finished");
    let docs = s.get(&format!("{P}/{sid}/documentation")).await.expect(200);
    assert!(docs["count"].as_u64().unwrap() > 0);
    shallow_patch(
        &s,
        &sid,
        json!({"discoveryInput": {"application": "petstore"}}),
    )
    .await
    .expect(200);
    let path = format!("/api/v1/discovery/{sid}/discovery");
    let created = s
        .post(&path, &json!({"application": "petstore"}))
        .await
        .expect(200);
    let claimed = s
        .post("/v1/jobs/claim", &json!({"types": ["discovery.discovery"]}))
        .await
        .expect(200);
    assert_eq!(claimed["id"], created["jobId"]);
    s.post(
        &format!("/v1/jobs/{}/complete", claimed["id"].as_str().unwrap()),
        &json!({"leaseId": claimed["leaseId"], "result": {"candidates": 1}}),
    )
    .await
    .expect(200);
    assert_eq!(s.get(&path).await.expect(200)["status"], "finished");
    let got = s.get(&format!("{P}/{sid}")).await.expect(200);
    assert_eq!(got["data"]["discoveryOutput"], json!({"candidates": 1}));
    assert!(
        got["data"]["documentationItems"].as_array().unwrap().len() as u64
            == docs["count"].as_u64().unwrap()
    );
    s.delete(&format!("{P}/{sid}")).await.expect(200);
    assert_eq!(s.head(&format!("{P}/{sid}")).await.status, 404);
}
