//! Operations routes, request ids, the catch-all answers and shutdown.

use reqwest::Method;
use serde_json::{json, Value};
use sessiond_server::AppOptions;

use crate::common::{id_of, path, TestServer};

#[tokio::test]
async fn health_and_readiness() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/healthz").await.expect(200), json!({"status": "ok"}));
    assert_eq!(s.get("/readyz").await.expect(200)["status"], "ready");
    assert_eq!(s.head("/healthz").await.status, 200);
}

/// The value of the first series of `name` whose line contains every one of `labels`
/// (0 when there is none yet).
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    // The recorder is process-wide (other tests add to it concurrently), so the checks are on
    // increases, which only this test's requests guarantee.
    let s = TestServer::start().await;
    let get_200 = [
        "method=\"GET\"",
        "route=\"/v1/sessions/{session}\"",
        "status=\"200\"",
    ];
    let get_404 = [
        "method=\"GET\"",
        "route=\"/v1/sessions/{session}\"",
        "status=\"404\"",
    ];
    let before = s.get("/metrics").await.text;

    let id = id_of(&s.create(json!({})).await);
    s.session(&id).await;
    s.session(&id).await;
    s.get(&path("missing"))
        .await
        .expect_error(404, "session_not_found");

    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        r.header("content-type")
    );
    let text = &r.text;
    let total = "sessiond_http_requests_total";
    assert!(
        metric(text, total, &get_200) >= metric(&before, total, &get_200) + 2.0,
        "GET /v1/sessions/{{session}} 200 not counted:\n{text}"
    );
    assert!(
        metric(text, total, &get_404) >= metric(&before, total, &get_404) + 1.0,
        "GET /v1/sessions/{{session}} 404 not counted:\n{text}"
    );
    assert!(
        text.lines().all(|l| !l.contains(&id)),
        "a raw session id leaked into a label:\n{text}"
    );
    let created = "sessiond_sessions_created_total";
    assert!(
        metric(text, created, &[]) >= metric(&before, created, &[]) + 1.0,
        "{created} did not increase:\n{text}"
    );
    let buckets = "sessiond_http_request_duration_seconds_bucket";
    let inf = [
        "method=\"GET\"",
        "route=\"/v1/sessions/{session}\"",
        "le=\"+Inf\"",
    ];
    assert!(
        metric(text, buckets, &inf) >= metric(&before, buckets, &inf) + 3.0,
        "no latency histogram for the route:\n{text}"
    );
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let s = TestServer::start().await;
    let r = s.get("/openapi.json").await;
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let doc: Value = r.expect(200);
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "{version}");
    let paths = doc["paths"].as_object().expect("paths");
    let expected: &[(&str, &[&str])] = &[
        ("/v1/sessions", &["get", "post"]),
        ("/v1/sessions/{session}", &["get", "patch", "delete"]),
        ("/v1/sessions/{session}/close", &["post"]),
        ("/v1/sessions/{session}/tokens", &["post"]),
        ("/v1/sessions/{session}/channels", &["get"]),
        (
            "/v1/sessions/{session}/channels/{name}/records",
            &["get", "post"],
        ),
        ("/v1/accounts", &["post"]),
        ("/v1/accounts/{account}/keys", &["post"]),
        ("/v1/keys/{key}", &["delete"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
    ];
    for (p, methods) in expected {
        let item = paths
            .get(*p)
            .unwrap_or_else(|| panic!("{p} missing from /openapi.json paths: {:?}", paths.keys()));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {p} missing from /openapi.json");
        }
    }
    // Every stable error code is documented.
    let description = doc["info"]["description"].as_str().unwrap_or("");
    for code in sessiond_core::error::codes::ALL {
        assert!(
            description.contains(&format!("`{code}`")),
            "error code {code} is not documented"
        );
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let s = TestServer::start_with(AppOptions {
        max_body_bytes: 64,
        ..AppOptions::default()
    })
    .await;
    let id = id_of(&s.create(json!({})).await);
    let big = json!({"title": "x".repeat(200)}).to_string();
    let cases: Vec<(Method, String, Option<String>)> = vec![
        (Method::GET, "/healthz".into(), None),
        (Method::GET, path(&id), None),
        (Method::HEAD, path(&id), None),
        (Method::GET, path("missing"), None),
        (Method::GET, "/nope".into(), None),
        (Method::PUT, "/v1/sessions".into(), None),
        (Method::GET, "/v1/sessions?limit=0".into(), None),
        (Method::POST, "/v1/sessions".into(), Some("{".into())),
        (Method::POST, "/v1/sessions".into(), Some(big)),
    ];
    let mut seen = std::collections::HashSet::new();
    for (m, p, body) in &cases {
        let r = s
            .send(m.clone(), p, |rb| match body {
                Some(b) => rb
                    .header("content-type", "application/json")
                    .body(b.clone()),
                None => rb,
            })
            .await;
        let rid = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{m} {p} ({}) has no x-request-id", r.status))
            .to_owned();
        assert!(!rid.is_empty());
        assert!(seen.insert(rid.clone()), "request id {rid} reused");

        let mine = format!("client-{}-{}", m, seen.len());
        let r = s
            .send(m.clone(), p, |rb| {
                let rb = rb.header("x-request-id", &mine);
                match body {
                    Some(b) => rb
                        .header("content-type", "application/json")
                        .body(b.clone()),
                    None => rb,
                }
            })
            .await;
        assert_eq!(
            r.header("x-request-id"),
            Some(mine.as_str()),
            "{m} {p} ({}) did not echo the request id",
            r.status
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json_errors() {
    let s = TestServer::start().await;
    for p in [
        "/nope",
        "/v1",
        "/v1/sessions/a/b/c",
        "/v1/session",
        "/v2/sessions",
    ] {
        s.get(p).await.expect_error(404, "not_found");
        s.post(p, &json!({})).await.expect_error(404, "not_found");
    }
    let cases = [
        (Method::PUT, "/v1/sessions"),
        (Method::DELETE, "/v1/sessions"),
        (Method::PUT, "/v1/sessions/abc"),
        (Method::POST, "/v1/sessions/abc"),
        (Method::GET, "/v1/sessions/abc/close"),
        (Method::GET, "/v1/accounts"),
        (Method::DELETE, "/v1/accounts/abc/keys"),
        (Method::GET, "/v1/keys/abc"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/metrics"),
    ];
    for (m, p) in cases {
        s.send(m, p, |rb| rb)
            .await
            .expect_error(405, "method_not_allowed");
    }
}

#[tokio::test]
async fn stop_shuts_the_server_down() {
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({"title": "before stop"})).await);
    s.session(&id).await;
    let url = s.url("/healthz");
    s.stop().await;
    let err = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect_err("the server still answers after stop");
    assert!(err.is_connect() || err.is_request(), "{err}");
}

#[tokio::test]
async fn method_not_allowed_lists_the_allowed_methods() {
    // RFC 9110 section 15.5.6: a 405 response MUST carry an Allow header.
    let s = TestServer::start().await;
    let r = s.send(Method::PUT, "/v1/sessions", |rb| rb).await;
    r.expect_error(405, "method_not_allowed");
    let allow = r
        .header("allow")
        .unwrap_or_else(|| panic!("405 without Allow: {:?}", r.headers));
    let allow: Vec<String> = allow
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    for m in ["GET", "POST"] {
        assert!(allow.contains(&m.to_owned()), "Allow: {allow:?}");
    }
    let r = s.send(Method::PUT, "/v1/sessions/abc", |rb| rb).await;
    r.expect_error(405, "method_not_allowed");
    let allow = r.header("allow").unwrap_or("");
    for m in ["GET", "PATCH", "DELETE"] {
        assert!(allow.contains(m), "Allow: {allow:?}");
    }
}

#[tokio::test]
async fn a_store_that_is_down_answers_503() {
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({})).await);
    s.store.shutdown().await;
    let r = s.get("/readyz").await;
    r.expect_error(503, "store_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    s.get(&path(&id))
        .await
        .expect_error(503, "store_unavailable");
    s.post("/v1/sessions", &json!({}))
        .await
        .expect_error(503, "store_unavailable");
    // The process itself is still up.
    s.get("/healthz").await.expect(200);
}
