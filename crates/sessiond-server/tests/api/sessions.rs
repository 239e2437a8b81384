//! `/v1/sessions` over HTTP: create, get, head, patch, close, delete, list, bad input and the
//! derived status.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sessiond_server::AppOptions;
use uuid::Uuid;

use crate::common::{encode, id_of, ids, path, sort_like_list, TestServer};

/// Asserts the shape every session response has: every documented key, nullable ones present.
#[track_caller]
fn assert_session_shape(s: &Value, with_data: bool) {
    let obj = s
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {s}"));
    let mut expected = vec![
        "id",
        "externalId",
        "type",
        "title",
        "tags",
        "metadata",
        "status",
        "closedAt",
        "closedReason",
        "expiresAt",
        "createdAt",
        "updatedAt",
        "version",
    ];
    if with_data {
        expected.push("data");
    }
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    expected.sort_unstable();
    assert_eq!(keys, expected, "keys of {s}");
    for ts in ["createdAt", "updatedAt"] {
        let t = s[ts]
            .as_str()
            .unwrap_or_else(|| panic!("{ts} not a string in {s}"));
        assert!(
            t.ends_with('Z') && t.len() == 24,
            "{ts} is not RFC 3339 UTC ms: {t}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// create

#[tokio::test]
async fn create_assigns_a_uuid_and_answers_201_with_location_and_etag() {
    let s = TestServer::start().await;
    let r = s.post("/v1/sessions", &json!({})).await;
    let body = r.expect(201);
    assert_session_shape(&body, true);
    let id = id_of(&body);
    let uuid = Uuid::parse_str(&id).expect("id is a UUID");
    assert_eq!(uuid.get_version_num(), 4, "server ids are UUID v4");
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/sessions/{id}").as_str())
    );
    assert_eq!(r.etag(), "\"1\"");
    assert_eq!(r.header("x-sessiond-cached"), None);
    assert_eq!(body["version"], 1);
    assert_eq!(body["status"], "active");
    for k in [
        "externalId",
        "type",
        "title",
        "closedAt",
        "closedReason",
        "expiresAt",
    ] {
        assert!(body[k].is_null(), "{k} should be null: {body}");
    }
    assert_eq!(body["tags"], json!([]));
    assert_eq!(body["metadata"], json!({}));
    assert_eq!(body["data"], json!({}));
    assert_eq!(body["createdAt"], body["updatedAt"]);

    // No body at all is the same as {}.
    let r = s.send(Method::POST, "/v1/sessions", |rb| rb).await;
    let other = r.expect(201);
    assert_ne!(id_of(&other), id);

    // What was created is what GET answers.
    assert_eq!(s.session(&id).await, body);
}

#[tokio::test]
async fn create_echoes_every_field() {
    let s = TestServer::start().await;
    let body = s
        .create(json!({
            "externalId": "job αβ 42",
            "type": "agent",
            "title": "Hello",
            "tags": ["a", "b", "a"],
            "metadata": {"team": "x", "n": 1},
            "data": {"nested": {"k": [1, 2]}},
            "expiresAt": "2099-01-01T00:00:00+02:00",
        }))
        .await;
    assert_session_shape(&body, true);
    assert_eq!(body["externalId"], "job αβ 42");
    assert_eq!(body["type"], "agent");
    assert_eq!(body["title"], "Hello");
    assert_eq!(
        body["tags"],
        json!(["a", "b"]),
        "repeated tags are kept once"
    );
    assert_eq!(body["metadata"], json!({"team": "x", "n": 1}));
    assert_eq!(body["data"], json!({"nested": {"k": [1, 2]}}));
    assert_eq!(
        body["expiresAt"], "2098-12-31T22:00:00.000Z",
        "rendered in UTC with Z"
    );
    assert_eq!(body["status"], "active");

    // ttlSeconds resolves to an expiresAt in the future.
    let t = s.create(json!({"ttlSeconds": 3600})).await;
    let exp = t["expiresAt"].as_str().unwrap();
    assert!(exp > t["createdAt"].as_str().unwrap(), "{t}");
}

#[tokio::test]
async fn create_with_a_caller_id_and_the_same_id_again_is_409() {
    let s = TestServer::start().await;
    let id = Uuid::new_v4().to_string();
    let r = s
        .post("/v1/sessions", &json!({"id": id, "title": "first"}))
        .await;
    let first = r.expect(201);
    assert_eq!(id_of(&first), id);
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/sessions/{id}").as_str())
    );

    let r = s
        .post("/v1/sessions", &json!({"id": id, "title": "second"}))
        .await;
    r.expect_error(409, "session_exists");
    assert_eq!(
        s.session(&id).await,
        first,
        "the existing session is unchanged"
    );
    assert_eq!(s.list_all("").await.len(), 1);

    // A non-UUID id is a body error.
    s.post("/v1/sessions", &json!({"id": "not-a-uuid"}))
        .await
        .expect_error(422, "invalid_body");
}

#[tokio::test]
async fn create_with_an_active_external_id_is_idempotent() {
    let s = TestServer::start().await;
    let r = s
        .post(
            "/v1/sessions",
            &json!({"externalId": "job-1", "title": "a", "data": {"x": 1}}),
        )
        .await;
    let first = r.expect(201);

    let r = s
        .post(
            "/v1/sessions",
            &json!({"externalId": "job-1", "title": "b", "tags": ["t"], "data": {"x": 2}}),
        )
        .await;
    let again = r.expect(200);
    assert_eq!(r.header("x-sessiond-cached"), Some("true"));
    assert_eq!(r.etag(), "\"1\"");
    assert_eq!(again, first, "the existing session comes back unchanged");
    assert_eq!(
        s.session("job-1").await,
        first,
        "nothing changed in the store"
    );
    assert_eq!(s.list_all("").await.len(), 1, "no second session");

    // Still idempotent after a patch: the current state comes back.
    s.patch(&path("job-1"), &json!({"title": "patched"}))
        .await
        .expect(200);
    let r = s
        .post("/v1/sessions", &json!({"externalId": "job-1"}))
        .await;
    let cached = r.expect(200);
    assert_eq!(r.header("x-sessiond-cached"), Some("true"));
    assert_eq!(cached["title"], "patched");
    assert_eq!(cached["version"], 2);
    assert_eq!(r.etag(), "\"2\"");
}

#[tokio::test]
async fn create_with_the_external_id_of_a_closed_session_is_409() {
    let s = TestServer::start().await;
    let first = s.create(json!({"externalId": "done-1"})).await;
    let closed = s
        .post("/v1/sessions/done-1/close", &json!({}))
        .await
        .expect(200);
    s.post("/v1/sessions", &json!({"externalId": "done-1"}))
        .await
        .expect_error(409, "session_closed");
    let now = s.session(&id_of(&first)).await;
    assert_eq!(now, closed, "the closed session is unchanged");
    assert_eq!(s.list_all("").await.len(), 1);
}

#[tokio::test]
async fn create_rejects_bad_external_ids() {
    let s = TestServer::start().await;
    for ext in [
        json!(Uuid::new_v4().to_string()),
        json!(Uuid::new_v4().simple().to_string()),
        json!(""),
        json!("a".repeat(257)),
        json!("a/b"),
    ] {
        s.post("/v1/sessions", &json!({ "externalId": ext }))
            .await
            .expect_error(422, "invalid_field");
    }
    assert!(s.list_all("").await.is_empty(), "nothing was created");
    // 256 characters is fine.
    s.create(json!({"externalId": "é".repeat(256)})).await;
}

// ---------------------------------------------------------------------------------------------
// get, head

#[tokio::test]
async fn get_by_id_and_by_external_id() {
    let s = TestServer::start().await;
    // An externalId that needs percent-encoding in the path.
    let created = s
        .create(json!({"externalId": "user 42 α?#", "title": "t"}))
        .await;
    let id = id_of(&created);

    let r = s.get(&path(&id)).await;
    assert_eq!(r.expect(200), created);
    assert_eq!(r.etag(), "\"1\"");
    let r = s.get(&path("user 42 α?#")).await;
    assert_eq!(r.expect(200), created);
    assert_eq!(r.etag(), "\"1\"");

    s.get(&path(&Uuid::new_v4().to_string()))
        .await
        .expect_error(404, "session_not_found");
    s.get(&path("no-such-external-id"))
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test]
async fn head_answers_the_etag_without_a_body() {
    let s = TestServer::start().await;
    let created = s
        .create(json!({"externalId": "h-1", "data": {"big": "x"}}))
        .await;
    let id = id_of(&created);

    let r = s.head(&path(&id)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.etag(), "\"1\"");
    assert!(r.text.is_empty(), "HEAD has no body: {:?}", r.text);

    s.patch(&path(&id), &json!({"title": "x"}))
        .await
        .expect(200);
    let r = s.head(&path("h-1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.etag(), "\"2\"");
    assert!(r.text.is_empty());

    let r = s.head(&path(&Uuid::new_v4().to_string())).await;
    assert_eq!(r.status, 404);
    assert!(r.text.is_empty(), "HEAD has no body: {:?}", r.text);
    let r = s.head(&path("nope")).await;
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------------------------------------
// patch

#[tokio::test]
async fn patch_is_an_rfc7396_merge_patch() {
    let s = TestServer::start().await;
    let created = s
        .create(json!({
            "externalId": "p-1",
            "type": "agent",
            "title": "old",
            "tags": ["a", "b"],
            "metadata": {"team": "x", "drop": "me"},
            "data": {"a": {"b": 1, "c": 2}, "list": [1, 2, 3], "gone": true, "keep": "k"},
        }))
        .await;
    let id = id_of(&created);

    let r = s
        .patch(
            &path(&id),
            &json!({
                "title": null,
                "tags": ["c"],
                "metadata": {"drop": null, "new": "y"},
                "data": {"a": {"c": null, "d": {"e": 5}}, "list": [9], "gone": null, "added": 1},
            }),
        )
        .await;
    let patched = r.expect(200);
    assert_eq!(r.etag(), "\"2\"");
    assert_session_shape(&patched, true);
    assert_eq!(patched["version"], 2);
    assert!(patched["title"].is_null(), "null deletes: {patched}");
    assert_eq!(patched["type"], "agent", "untouched fields stay");
    assert_eq!(patched["tags"], json!(["c"]), "arrays replace");
    assert_eq!(patched["metadata"], json!({"team": "x", "new": "y"}));
    assert_eq!(
        patched["data"],
        json!({"a": {"b": 1, "d": {"e": 5}}, "list": [9], "keep": "k", "added": 1})
    );
    assert_eq!(patched["externalId"], "p-1");
    assert_eq!(patched["createdAt"], created["createdAt"]);
    assert!(patched["updatedAt"].as_str() >= created["updatedAt"].as_str());
    assert_eq!(s.session(&id).await, patched, "GET sees the patch");

    // By externalId, and with plain JSON.
    let r = s
        .raw(
            Method::PATCH,
            &path("p-1"),
            "application/json",
            json!({"type": null, "expiresAt": "2099-05-05T05:05:05Z"}).to_string(),
        )
        .await;
    let p = r.expect(200);
    assert_eq!(p["version"], 3);
    assert!(p["type"].is_null());
    assert_eq!(p["expiresAt"], "2099-05-05T05:05:05.000Z");
    let p = s
        .patch(&path("p-1"), &json!({"expiresAt": null}))
        .await
        .expect(200);
    assert!(p["expiresAt"].is_null());
    assert_eq!(p["version"], 4);

    // Setting data to null empties it; tags to null empties them.
    let p = s
        .patch(&path("p-1"), &json!({"data": null, "tags": null}))
        .await
        .expect(200);
    assert_eq!(p["data"], json!({}));
    assert_eq!(p["tags"], json!([]));
    assert_eq!(p["version"], 5);

    s.patch(&path(&Uuid::new_v4().to_string()), &json!({"title": "x"}))
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test]
async fn patch_if_match() {
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({"title": "v1"})).await);
    let p = path(&id);

    let r = s.patch_if(&p, "\"1\"", &json!({"title": "v2"})).await;
    assert_eq!(r.expect(200)["version"], 2);
    assert_eq!(r.etag(), "\"2\"");

    let before = s.session(&id).await;
    s.patch_if(&p, "\"1\"", &json!({"title": "stale"}))
        .await
        .expect_error(412, "version_mismatch");
    s.patch_if(&p, "\"3\"", &json!({"title": "future"}))
        .await
        .expect_error(412, "version_mismatch");
    assert_eq!(
        s.session(&id).await,
        before,
        "a stale If-Match changes nothing"
    );

    let r = s.patch_if(&p, "*", &json!({"title": "any"})).await;
    assert_eq!(r.expect(200)["version"], 3);
    // Whitespace around the tag is tolerated (RFC 9110 allows OWS).
    let r = s.patch_if(&p, " \"3\" ", &json!({"title": "ows"})).await;
    assert_eq!(r.expect(200)["version"], 4);

    let before = s.session(&id).await;
    for bad in [
        "W/\"4\"",
        "4",
        "\"x\"",
        "\"0\"",
        "\"-1\"",
        "\"4\", \"5\"",
        "\"\"",
    ] {
        let r = s.patch_if(&p, bad, &json!({"title": "bad"})).await;
        r.expect_error(400, "invalid_header");
    }
    assert_eq!(
        s.session(&id).await,
        before,
        "a malformed If-Match changes nothing"
    );

    // If-Match on a missing session is still a 404.
    s.patch_if(
        &path(&Uuid::new_v4().to_string()),
        "\"1\"",
        &json!({"title": "x"}),
    )
    .await
    .expect_error(404, "session_not_found");
}

#[tokio::test]
async fn patch_rejects_read_only_and_unknown_fields() {
    let s = TestServer::start().await;
    let created = s
        .create(json!({"externalId": "ro-1", "data": {"a": 1}}))
        .await;
    let id = id_of(&created);
    for field in [
        "externalId",
        "id",
        "version",
        "status",
        "createdAt",
        "closedAt",
    ] {
        s.patch(&path(&id), &json!({ field: "x", "title": "mixed" }))
            .await
            .expect_error(422, "read_only_field");
    }
    for field in ["colour", "Title", "datas"] {
        s.patch(&path(&id), &json!({ field: 1, "title": "mixed" }))
            .await
            .expect_error(422, "unknown_field");
    }
    assert_eq!(
        s.session(&id).await,
        created,
        "a rejected patch changes nothing"
    );
}

#[tokio::test]
async fn patch_a_closed_session_is_409() {
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({})).await);
    let closed = s
        .post(&format!("{}/close", path(&id)), &json!({"reason": "done"}))
        .await
        .expect(200);
    s.patch(&path(&id), &json!({"title": "late"}))
        .await
        .expect_error(409, "session_closed");
    s.patch_if(&path(&id), "\"2\"", &json!({"data": {"x": 1}}))
        .await
        .expect_error(409, "session_closed");
    assert_eq!(s.session(&id).await, closed);
}

#[tokio::test]
async fn patch_prefer_return_minimal_is_204_with_etag() {
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({})).await);
    let r = s
        .send(Method::PATCH, &path(&id), |rb| {
            rb.header("content-type", "application/merge-patch+json")
                .header("prefer", "return=minimal")
                .body(r#"{"title":"min"}"#)
        })
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    assert_eq!(r.etag(), "\"2\"");
    let now = s.session(&id).await;
    assert_eq!(now["title"], "min");
    assert_eq!(now["version"], 2);
}

#[tokio::test]
async fn an_empty_or_no_op_patch_does_not_bump_the_version() {
    let s = TestServer::start().await;
    let created = s
        .create(json!({"title": "same", "data": {"a": {"b": 1}}}))
        .await;
    let id = id_of(&created);
    for patch in [
        json!({}),
        json!({"title": "same"}),
        json!({"data": {"a": {"b": 1}}}),
        json!({"data": {"missing": null}}),
    ] {
        let r = s.patch(&path(&id), &patch).await;
        let body = r.expect(200);
        assert_eq!(body, created, "{patch} changed the session");
        assert_eq!(r.etag(), "\"1\"");
    }
    assert_eq!(s.session(&id).await, created);
}

#[tokio::test]
async fn patch_needs_a_json_content_type_and_a_json_object() {
    let s = TestServer::start().await;
    let created = s.create(json!({"title": "t"})).await;
    let id = id_of(&created);
    s.raw(Method::PATCH, &path(&id), "text/plain", r#"{"title":"x"}"#)
        .await
        .expect_error(415, "unsupported_media_type");
    s.raw(
        Method::PATCH,
        &path(&id),
        "application/x-www-form-urlencoded",
        "title=x",
    )
    .await
    .expect_error(415, "unsupported_media_type");
    s.raw(
        Method::PATCH,
        &path(&id),
        "application/merge-patch+json",
        "{\"title\":",
    )
    .await
    .expect_error(400, "invalid_json");
    s.raw(
        Method::PATCH,
        &path(&id),
        "application/merge-patch+json",
        "",
    )
    .await
    .expect_error(400, "invalid_json");
    for not_object in ["[]", "\"x\"", "1", "null"] {
        s.raw(
            Method::PATCH,
            &path(&id),
            "application/merge-patch+json",
            not_object,
        )
        .await
        .expect_error(422, "invalid_body");
    }
    // Wrong types inside a patch.
    for bad in [
        json!({"title": 5}),
        json!({"tags": "x"}),
        json!({"tags": [1]}),
        json!({"metadata": [1]}),
        json!({"data": "x"}),
        json!({"expiresAt": "tomorrow"}),
        json!({"expiresAt": 5}),
        json!({"title": "x".repeat(257)}),
        json!({"type": "x".repeat(65)}),
        json!({"tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
        json!({"metadata": {"k": "v".repeat(17 * 1024)}}),
    ] {
        s.patch(&path(&id), &bad)
            .await
            .expect_error(422, "invalid_field");
    }
    assert_eq!(
        s.session(&id).await,
        created,
        "no rejected patch changed anything"
    );
}

// ---------------------------------------------------------------------------------------------
// close, delete

#[tokio::test]
async fn close_is_terminal_and_idempotent() {
    let s = TestServer::start().await;
    let created = s.create(json!({"externalId": "c-1", "title": "t"})).await;
    let id = id_of(&created);

    let r = s
        .post(
            &format!("{}/close", path(&id)),
            &json!({"reason": "finished"}),
        )
        .await;
    let closed = r.expect(200);
    assert_eq!(r.etag(), "\"2\"");
    assert_session_shape(&closed, true);
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["closedReason"], "finished");
    assert_eq!(closed["version"], 2);
    let closed_at = closed["closedAt"].as_str().expect("closedAt").to_owned();
    assert!(closed_at.as_str() >= created["createdAt"].as_str().unwrap());

    // Again, with another reason and by externalId: unchanged.
    let r = s
        .post("/v1/sessions/c-1/close", &json!({"reason": "other"}))
        .await;
    let again = r.expect(200);
    assert_eq!(again, closed);
    assert_eq!(r.etag(), "\"2\"");
    // And without a body.
    let again = s
        .send(Method::POST, &format!("{}/close", path(&id)), |rb| rb)
        .await
        .expect(200);
    assert_eq!(again["closedAt"], closed_at.as_str());
    assert_eq!(again["version"], 2);

    // Reads keep working.
    assert_eq!(s.session("c-1").await, closed);
    assert_eq!(s.head(&path(&id)).await.status, 200);
}

#[tokio::test]
async fn close_rejects_bad_input() {
    let s = TestServer::start().await;
    let created = s.create(json!({})).await;
    let id = id_of(&created);
    let close = format!("{}/close", path(&id));
    s.post(&close, &json!({"reason": "r".repeat(257)}))
        .await
        .expect_error(422, "invalid_field");
    s.post(&close, &json!({"reason": 5}))
        .await
        .expect_error(422, "invalid_body");
    s.post(&close, &json!({"because": "x"}))
        .await
        .expect_error(422, "invalid_body");
    s.raw(Method::POST, &close, "application/json", "{")
        .await
        .expect_error(400, "invalid_json");
    s.raw(Method::POST, &close, "text/plain", "{}")
        .await
        .expect_error(415, "unsupported_media_type");
    assert_eq!(s.session(&id).await, created, "still open and unchanged");

    // 256 characters is the limit, and it is accepted.
    let ok = s
        .post(&close, &json!({"reason": "é".repeat(256)}))
        .await
        .expect(200);
    assert_eq!(ok["closedReason"].as_str().unwrap().chars().count(), 256);

    s.post(
        &format!("/v1/sessions/{}/close", Uuid::new_v4()),
        &json!({}),
    )
    .await
    .expect_error(404, "session_not_found");
}

#[tokio::test]
async fn delete_removes_the_session_and_frees_its_id_and_external_id() {
    let s = TestServer::start().await;
    let keep = s.create(json!({"title": "keep"})).await;
    let id = Uuid::new_v4().to_string();
    s.create(json!({"id": id, "externalId": "d-1", "data": {"x": 1}}))
        .await;
    s.patch(&path(&id), &json!({"title": "t"}))
        .await
        .expect(200);

    let r = s.delete(&path(&id)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    s.get(&path(&id))
        .await
        .expect_error(404, "session_not_found");
    s.get(&path("d-1"))
        .await
        .expect_error(404, "session_not_found");
    assert_eq!(s.head(&path(&id)).await.status, 404);
    s.patch(&path(&id), &json!({"title": "x"}))
        .await
        .expect_error(404, "session_not_found");
    s.post(&format!("{}/close", path(&id)), &json!({}))
        .await
        .expect_error(404, "session_not_found");
    s.delete(&path(&id))
        .await
        .expect_error(404, "session_not_found");
    assert_eq!(ids(&s.list_all("").await), vec![id_of(&keep)]);

    // Everything under the session went with it: the same id and externalId start afresh
    // (version 1, empty data) rather than colliding with leftovers.
    let again = s.create(json!({"id": id, "externalId": "d-1"})).await;
    assert_eq!(again["version"], 1);
    assert_eq!(again["data"], json!({}));

    // Delete by externalId.
    let r = s.delete(&path("d-1")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    s.get(&path(&id))
        .await
        .expect_error(404, "session_not_found");
    s.delete(&path("d-1"))
        .await
        .expect_error(404, "session_not_found");
    assert_eq!(
        s.session(&id_of(&keep)).await,
        keep,
        "other sessions untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// list

/// Creates the fixture of the filter tests; returns every session as GET renders it now.
async fn filter_fixture(s: &TestServer) -> Vec<Value> {
    let mut made = vec![
        s.create(
            json!({"type": "agent", "title": "Alpha report", "tags": ["red", "blue"],
                        "metadata": {"team": "x", "n": 1}}),
        )
        .await,
        s.create(
            json!({"type": "agent", "title": "beta REPORT", "tags": ["green"],
                        "metadata": {"team": "y"}}),
        )
        .await,
        s.create(
            json!({"type": "tool", "title": "gamma", "tags": ["blue"], "externalId": "ext-3",
                        "metadata": {"team": "x", "n": "1"}}),
        )
        .await,
        s.create(json!({"tags": ["red"], "expiresAt": "2099-01-01T00:00:00Z"}))
            .await,
        s.create(json!({"type": "agent", "title": "closed report"}))
            .await,
    ];
    let closed = id_of(&made[4]);
    made[4] = s
        .post(&format!("{}/close", path(&closed)), &json!({}))
        .await
        .expect(200);
    made
}

/// The ids the list answers for `query` (one page of up to 100).
async fn list_ids(s: &TestServer, query: &str) -> Vec<String> {
    let page = s.get(&format!("/v1/sessions?{query}")).await.expect(200);
    assert!(
        page["nextCursor"].is_null(),
        "{query}: unexpected second page"
    );
    ids(page["data"].as_array().expect("data"))
}

/// The expected answer: the fixture rows that pass `keep`, in list order.
fn expect_ids(all: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<String> {
    let mut rows: Vec<Value> = all.iter().filter(|v| keep(v)).cloned().collect();
    sort_like_list(&mut rows);
    ids(&rows)
}

#[tokio::test]
async fn list_filters() {
    let s = TestServer::start().await;
    let all = filter_fixture(&s).await;
    let has_tag = |v: &Value, t: &str| v["tags"].as_array().unwrap().iter().any(|x| x == t);

    let cases: Vec<(&str, Vec<String>)> = vec![
        ("", expect_ids(&all, |_| true)),
        (
            "status=active",
            expect_ids(&all, |v| v["status"] == "active"),
        ),
        (
            "status=closed",
            expect_ids(&all, |v| v["status"] == "closed"),
        ),
        ("status=expired", vec![]),
        ("status=active,closed", expect_ids(&all, |_| true)),
        ("status=active&status=closed", expect_ids(&all, |_| true)),
        (
            "status=closed&status=expired",
            expect_ids(&all, |v| v["status"] == "closed"),
        ),
        ("type=agent", expect_ids(&all, |v| v["type"] == "agent")),
        ("type=tool", expect_ids(&all, |v| v["type"] == "tool")),
        ("type=none", vec![]),
        (
            "type=agent&status=active",
            expect_ids(&all, |v| v["type"] == "agent" && v["status"] == "active"),
        ),
        ("tag=blue", expect_ids(&all, |v| has_tag(v, "blue"))),
        (
            "tag=green&tag=red",
            expect_ids(&all, |v| has_tag(v, "green") || has_tag(v, "red")),
        ),
        ("tag=purple", vec![]),
        (
            "externalId=ext-3",
            expect_ids(&all, |v| v["externalId"] == "ext-3"),
        ),
        ("externalId=ext-4", vec![]),
        (
            "metadata.team=x",
            expect_ids(&all, |v| v["metadata"]["team"] == "x"),
        ),
        (
            "metadata.team=x&type=agent",
            expect_ids(&all, |v| {
                v["metadata"]["team"] == "x" && v["type"] == "agent"
            }),
        ),
        // String equality: the number 1 does not equal "1".
        (
            "metadata.n=1",
            expect_ids(&all, |v| v["metadata"]["n"] == "1"),
        ),
        (
            "metadata.team=x&metadata.n=1",
            expect_ids(&all, |v| v["metadata"]["n"] == "1"),
        ),
        ("metadata.nokey=x", vec![]),
        (
            "q=report",
            expect_ids(&all, |v| {
                v["title"]
                    .as_str()
                    .is_some_and(|t| t.to_lowercase().contains("report"))
            }),
        ),
        (
            "q=REP",
            expect_ids(&all, |v| {
                v["title"]
                    .as_str()
                    .is_some_and(|t| t.to_lowercase().contains("rep"))
            }),
        ),
        (
            "q=alpha%20rep",
            expect_ids(&all, |v| v["title"] == "Alpha report"),
        ),
        ("q=zzz", vec![]),
    ];
    for (query, expected) in cases {
        assert_eq!(
            list_ids(&s, query).await,
            expected,
            "GET /v1/sessions?{query}"
        );
    }

    // Time windows, strict on both ends. Timestamps may tie (millisecond precision), so the
    // expectation is computed from the rendered values.
    let mut sorted = all.clone();
    sort_like_list(&mut sorted);
    let mid = sorted[2]["createdAt"].as_str().unwrap().to_owned();
    let oldest = sorted.last().unwrap()["createdAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let newest = sorted[0]["createdAt"].as_str().unwrap().to_owned();
    let after = |t: &str| expect_ids(&all, |v| v["createdAt"].as_str().unwrap() > t);
    let before = |t: &str| expect_ids(&all, |v| v["createdAt"].as_str().unwrap() < t);
    assert_eq!(
        list_ids(&s, &format!("createdAfter={}", encode(&mid))).await,
        after(&mid)
    );
    assert_eq!(
        list_ids(&s, &format!("createdBefore={}", encode(&mid))).await,
        before(&mid)
    );
    assert_eq!(
        list_ids(&s, &format!("createdAfter={}", encode(&oldest))).await,
        after(&oldest)
    );
    assert!(list_ids(&s, &format!("createdAfter={}", encode(&newest)))
        .await
        .is_empty());
    assert_eq!(
        list_ids(
            &s,
            "createdAfter=2000-01-01T00:00:00Z&createdBefore=2100-01-01T00:00:00%2B01:00"
        )
        .await,
        expect_ids(&all, |_| true)
    );
    assert!(list_ids(&s, "createdAfter=2100-01-01T00:00:00Z")
        .await
        .is_empty());
    assert!(list_ids(&s, "createdBefore=2000-01-01T00:00:00Z")
        .await
        .is_empty());
    let window = format!(
        "createdAfter={}&createdBefore={}",
        encode(&oldest),
        encode(&newest)
    );
    assert_eq!(
        list_ids(&s, &window).await,
        expect_ids(&all, |v| {
            let t = v["createdAt"].as_str().unwrap();
            t > oldest.as_str() && t < newest.as_str()
        })
    );
}

#[tokio::test]
async fn list_rows_omit_data_unless_asked() {
    let s = TestServer::start().await;
    let created = s
        .create(json!({"title": "d", "data": {"big": {"state": [1, 2, 3]}}}))
        .await;
    let page = s.get("/v1/sessions").await.expect(200);
    let row = &page["data"][0];
    assert_session_shape(row, false);
    let mut without = created.clone();
    without.as_object_mut().unwrap().remove("data");
    assert_eq!(row, &without);

    let page = s.get("/v1/sessions?include=data").await.expect(200);
    assert_session_shape(&page["data"][0], true);
    assert_eq!(page["data"][0], created);

    s.get("/v1/sessions?include=everything")
        .await
        .expect_error(400, "invalid_query");
}

#[tokio::test]
async fn list_rejects_bad_queries() {
    let s = TestServer::start().await;
    s.create(json!({})).await;
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=",
        "status=bogus",
        "status=active,bogus",
        "createdAfter=yesterday",
        "createdBefore=2024-13-01T00:00:00Z",
        "colour=red",
        "metadata.=x",
        "Status=active",
    ] {
        s.get(&format!("/v1/sessions?{q}"))
            .await
            .expect_error(400, "invalid_query");
    }
    for c in ["garbage", "!!!", "djE6eDp5", ""] {
        s.get(&format!("/v1/sessions?cursor={}", encode(c)))
            .await
            .expect_error(400, "invalid_cursor");
    }
    // The edges of limit are accepted.
    for q in ["limit=1", "limit=100"] {
        s.get(&format!("/v1/sessions?{q}")).await.expect(200);
    }
}

#[tokio::test]
async fn list_default_limit_is_20() {
    let s = TestServer::start().await;
    for i in 0..25 {
        s.create(json!({ "title": format!("s{i}") })).await;
    }
    let page = s.get("/v1/sessions").await.expect(200);
    assert_eq!(page["data"].as_array().unwrap().len(), 20);
    let cursor = page["nextCursor"].as_str().expect("a next page").to_owned();
    let rest = s
        .get(&format!("/v1/sessions?cursor={}", encode(&cursor)))
        .await
        .expect(200);
    assert_eq!(rest["data"].as_array().unwrap().len(), 5);
    assert!(rest["nextCursor"].is_null());

    // Exactly `limit` rows left: no further cursor.
    let page = s.get("/v1/sessions?limit=25").await.expect(200);
    assert_eq!(page["data"].as_array().unwrap().len(), 25);
    assert!(page["nextCursor"].is_null(), "{}", page["nextCursor"]);
}

#[tokio::test]
async fn keyset_pagination_visits_every_session_once_while_sessions_are_created() {
    let s = TestServer::start().await;
    // Concurrent creates, so that many sessions share a createdAt millisecond and the order
    // falls back to the id.
    let mut tasks = Vec::new();
    for i in 0..45 {
        let api = s.api.clone();
        tasks.push(tokio::spawn(async move {
            api.create(json!({ "title": format!("page {i}"), "type": "paged" }))
                .await
        }));
    }
    let mut originals = Vec::new();
    for t in tasks {
        originals.push(t.await.unwrap());
    }
    sort_like_list(&mut originals);
    let expected = ids(&originals);

    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    let mut extra = HashSet::new();
    for _ in 0..20 {
        let mut q = "/v1/sessions?limit=10".to_owned();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = s.get(&q).await.expect(200);
        let rows = page["data"].as_array().unwrap();
        sizes.push(rows.len());
        seen.extend(ids(rows));
        // New sessions between pages are newer than every cursor: they must not show up.
        for _ in 0..2 {
            extra.insert(id_of(&s.create(json!({"title": "between pages"})).await));
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, vec![10, 10, 10, 10, 5]);
    assert_eq!(
        seen, expected,
        "every session once, in createdAt desc, id desc order"
    );
    assert!(seen.iter().all(|id| !extra.contains(id)));

    // A filter keeps applying across pages.
    let mut filtered = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = "/v1/sessions?limit=7&type=paged".to_owned();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = s.get(&q).await.expect(200);
        filtered.extend(ids(page["data"].as_array().unwrap()));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(filtered.len() <= 45, "pagination does not end");
    }
    assert_eq!(filtered, expected);
    assert_eq!(s.list_all("").await.len(), 45 + extra.len());
}

// ---------------------------------------------------------------------------------------------
// bad input: a 4xx with a stable code, and nothing stored

#[tokio::test]
async fn create_rejects_bad_input_and_stores_nothing() {
    let s = TestServer::start().await;
    let existing = s.create(json!({"externalId": "keep", "title": "k"})).await;

    let raw = |body: &'static str| {
        let api = s.api.clone();
        async move {
            api.raw(Method::POST, "/v1/sessions", "application/json", body)
                .await
        }
    };
    raw("{").await.expect_error(400, "invalid_json");
    raw("{\"title\": \"x\",}")
        .await
        .expect_error(400, "invalid_json");
    raw("not json").await.expect_error(400, "invalid_json");
    raw("[]").await.expect_error(422, "invalid_body");
    raw("\"x\"").await.expect_error(422, "invalid_body");
    s.raw(Method::POST, "/v1/sessions", "text/plain", "{}")
        .await
        .expect_error(415, "unsupported_media_type");

    let body_errors = [
        json!({"title": 5}),
        json!({"tags": "x"}),
        json!({"tags": [1]}),
        json!({"type": true}),
        json!({"externalId": 7}),
        json!({"ttlSeconds": "60"}),
        json!({"expiresAt": "soon"}),
        json!({"unknown": 1}),
        json!({"status": "closed"}),
        json!({"version": 3}),
    ];
    for b in body_errors {
        let r = s.post("/v1/sessions", &b).await;
        assert!(
            r.status == 422
                && ["invalid_body", "invalid_field"]
                    .contains(&r.json()["error"]["code"].as_str().unwrap_or("")),
            "{b}: {} {}",
            r.status,
            r.text
        );
        r.expect_error(422, r.json()["error"]["code"].as_str().unwrap());
    }

    let tags33: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let field_errors = [
        json!({"tags": tags33}),
        json!({"tags": ["x".repeat(129)]}),
        json!({"tags": [""]}),
        json!({"data": [1, 2]}),
        json!({"data": "x"}),
        json!({"data": 1}),
        json!({"metadata": [1]}),
        json!({"metadata": "x"}),
        json!({"metadata": {"k": "v".repeat(16 * 1024)}}),
        json!({"metadata": {"k".repeat(257): 1}}),
        json!({"expiresAt": "2000-01-01T00:00:00Z"}),
        json!({"expiresAt": "2099-01-01T00:00:00Z", "ttlSeconds": 60}),
        json!({"ttlSeconds": 0}),
        json!({"ttlSeconds": -5}),
        json!({"ttlSeconds": 315_360_001}),
        json!({"title": "x".repeat(257)}),
        json!({"type": "x".repeat(65)}),
        json!({"externalId": "keep", "tags": ["x".repeat(129)]}),
    ];
    for b in field_errors {
        s.post("/v1/sessions", &b)
            .await
            .expect_error(422, "invalid_field");
    }

    // Nothing was stored, and the existing session is untouched.
    let all = s.list_all("include=data").await;
    assert_eq!(all, vec![existing.clone()]);

    // The limits themselves are accepted.
    let tags32: Vec<String> = (0..32).map(|i| format!("t{i}")).collect();
    let mut tags_dup = tags32.clone();
    tags_dup.push("t0".into());
    let ok = s
        .create(json!({
            "tags": tags_dup,
            "title": "x".repeat(256),
            "type": "x".repeat(64),
            "metadata": {"k": "v".repeat(16 * 1024 - 10)},
        }))
        .await;
    assert_eq!(ok["tags"].as_array().unwrap().len(), 32);
    s.create(json!({"tags": ["x".repeat(128)], "ttlSeconds": 315_360_000}))
        .await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let s = TestServer::start_with(AppOptions {
        max_body_bytes: 2048,
        ..AppOptions::default()
    })
    .await;
    let created = s.create(json!({"title": "small"})).await;
    let id = id_of(&created);
    let big = json!({"data": {"blob": "x".repeat(4096)}});
    s.post("/v1/sessions", &big)
        .await
        .expect_error(413, "payload_too_large");
    s.patch(&path(&id), &big)
        .await
        .expect_error(413, "payload_too_large");
    s.post(
        &format!("{}/close", path(&id)),
        &json!({"reason": "x".repeat(4096)}),
    )
    .await
    .expect_error(413, "payload_too_large");
    assert_eq!(s.list_all("include=data").await, vec![created.clone()]);
    // Just under the limit is fine.
    s.patch(&path(&id), &json!({"data": {"blob": "x".repeat(1900)}}))
        .await
        .expect(200);
    s.stop().await;

    // The default limit is 1 MiB.
    let s = TestServer::start().await;
    let created = s.create(json!({})).await;
    let huge = json!({"data": {"blob": "x".repeat(1024 * 1024 + 1)}});
    s.post("/v1/sessions", &huge)
        .await
        .expect_error(413, "payload_too_large");
    s.patch(&path(&id_of(&created)), &huge)
        .await
        .expect_error(413, "payload_too_large");
    assert_eq!(s.list_all("include=data").await, vec![created]);
    s.create(json!({"data": {"blob": "x".repeat(1000 * 1000)}}))
        .await;
}

// ---------------------------------------------------------------------------------------------
// derived status

#[tokio::test]
async fn a_session_past_its_ttl_is_expired() {
    let s = TestServer::start().await;
    let created = s
        .create(json!({"externalId": "ttl-1", "ttlSeconds": 1, "title": "short"}))
        .await;
    let long = s.create(json!({"ttlSeconds": 3600})).await;
    assert_eq!(created["status"], "active");
    let id = id_of(&created);

    // Waiting on the wall clock (not on another task): poll until the status flips.
    let deadline = Instant::now() + Duration::from_secs(3);
    let expired = loop {
        let now = s.session(&id).await;
        if now["status"] == "expired" {
            break now;
        }
        assert_eq!(now["status"], "active");
        assert!(
            Instant::now() < deadline,
            "still not expired after 3 s: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(expired["version"], 1, "expiry is derived, not a write");
    assert!(expired["closedAt"].is_null());

    s.patch(&path(&id), &json!({"title": "late"}))
        .await
        .expect_error(409, "session_closed");
    s.post("/v1/sessions", &json!({"externalId": "ttl-1"}))
        .await
        .expect_error(409, "session_closed");
    assert_eq!(list_ids(&s, "status=expired").await, vec![id.clone()]);
    assert_eq!(list_ids(&s, "status=active").await, vec![id_of(&long)]);
    let rows = s.list_all("status=expired").await;
    assert_eq!(rows[0]["status"], "expired");
    assert_eq!(
        s.session(&id).await,
        expired,
        "rejected writes changed nothing"
    );

    // Closing an expired session makes it closed.
    let closed = s
        .post(&format!("{}/close", path(&id)), &json!({}))
        .await
        .expect(200);
    assert_eq!(closed["status"], "closed");
    assert_eq!(list_ids(&s, "status=closed").await, vec![id]);
    assert!(list_ids(&s, "status=expired").await.is_empty());
}

#[tokio::test]
async fn list_limits_filter_sizes() {
    let s = TestServer::start().await;
    s.create(json!({"tags": ["t0"], "title": "x"})).await;
    let tags: Vec<String> = (0..32).map(|i| format!("tag=t{i}")).collect();
    assert_eq!(
        list_ids(&s, &tags.join("&")).await.len(),
        1,
        "32 tag filters are fine"
    );
    let tags: Vec<String> = (0..33).map(|i| format!("tag=t{i}")).collect();
    s.get(&format!("/v1/sessions?{}", tags.join("&")))
        .await
        .expect_error(400, "invalid_query");
    let md: Vec<String> = (0..33).map(|i| format!("metadata.k{i}=v")).collect();
    s.get(&format!("/v1/sessions?{}", md.join("&")))
        .await
        .expect_error(400, "invalid_query");
    assert!(list_ids(&s, &format!("q={}", "x".repeat(256)))
        .await
        .is_empty());
    s.get(&format!("/v1/sessions?q={}", "x".repeat(257)))
        .await
        .expect_error(400, "invalid_query");
}

#[tokio::test]
async fn json_content_types_with_parameters_are_accepted() {
    let s = TestServer::start().await;
    let r = s
        .raw(
            Method::POST,
            "/v1/sessions",
            "application/json; charset=utf-8",
            r#"{"title":"cs"}"#,
        )
        .await;
    let id = id_of(&r.expect(201));
    s.raw(
        Method::PATCH,
        &path(&id),
        "Application/Merge-Patch+JSON; charset=UTF-8",
        r#"{"title":"p"}"#,
    )
    .await
    .expect(200);
    // A body without any content type is taken as JSON too.
    let r = s
        .send(Method::PATCH, &path(&id), |rb| {
            rb.body(r#"{"title":"none"}"#)
        })
        .await;
    assert_eq!(r.expect(200)["title"], "none");
}

#[tokio::test]
async fn merge_patch_creates_intermediate_objects() {
    // RFC 7396 appendix A: {"a":{"bb":{"ccc":null}}} applied to {} gives {"a":{"bb":{}}}.
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({"data": {"keep": [1, null]}})).await);
    let p = s
        .patch(&path(&id), &json!({"data": {"a": {"bb": {"ccc": null}}}}))
        .await
        .expect(200);
    assert_eq!(p["data"], json!({"keep": [1, null], "a": {"bb": {}}}));
    assert_eq!(p["version"], 2);
    // null inside an array is a value, not a deletion.
    let p = s
        .patch(&path(&id), &json!({"data": {"keep": [null]}}))
        .await
        .expect(200);
    assert_eq!(p["data"]["keep"], json!([null]));
}

#[tokio::test]
async fn a_patch_to_an_equal_expires_at_changes_nothing() {
    // The same instant written another way is not a change: no version bump (the rule of
    // `no_op_patch_does_not_bump`, over HTTP).
    let s = TestServer::start().await;
    let created = s.create(json!({"expiresAt": "2099-05-05T05:05:05Z"})).await;
    assert_eq!(created["expiresAt"], "2099-05-05T05:05:05.000Z");
    let id = id_of(&created);
    for same in [
        "2099-05-05T05:05:05.000Z",
        "2099-05-05T05:05:05Z",
        "2099-05-05T07:05:05+02:00",
    ] {
        let r = s.patch(&path(&id), &json!({ "expiresAt": same })).await;
        assert_eq!(
            r.expect(200),
            created,
            "expiresAt {same} bumped the version"
        );
    }
}

#[tokio::test]
async fn created_before_is_strict_at_sub_millisecond_precision() {
    // createdAt is stored with millisecond precision. A bound with finer precision must still
    // compare correctly: a session created at .123 is before .1235.
    let s = TestServer::start().await;
    let created = s.create(json!({})).await;
    let at = created["createdAt"].as_str().unwrap().to_owned();
    let finer = at.replace('Z', "5Z");
    assert_eq!(
        list_ids(&s, &format!("createdBefore={}", encode(&finer))).await,
        vec![id_of(&created)],
        "createdBefore={finer} should include a session created at {at}"
    );
    assert!(list_ids(&s, &format!("createdAfter={}", encode(&finer)))
        .await
        .is_empty());
}

#[tokio::test]
async fn delete_cascades_to_channels_and_records() {
    let s = TestServer::start().await;
    let id = Uuid::new_v4().to_string();
    s.create(json!({"id": id, "externalId": "cascade"})).await;
    s.patch(&path(&id), &json!({"title": "t"}))
        .await
        .expect(200);
    let records = format!("{}/channels/in/records", path(&id));
    let append = json!({"records": [{"id": "r1", "data": {"x": 1}}, {"id": "r2", "data": 2}]});
    s.post(&records, &append).await.expect(201);
    let channels = s.get(&format!("{}/channels", path(&id))).await.expect(200);
    let names: Vec<&str> = channels
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"in") && names.contains(&"events"),
        "{channels}"
    );

    let r = s.delete(&path(&id)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    s.get(&format!("{}/channels", path(&id)))
        .await
        .expect_error(404, "session_not_found");
    s.get(&records).await.expect_error(404, "session_not_found");

    // A new session with the same id starts with nothing of the old one's.
    s.create(json!({"id": id, "externalId": "cascade"})).await;
    let channels = s.get(&format!("{}/channels", path(&id))).await.expect(200);
    let channels = channels.as_array().unwrap();
    assert_eq!(
        channels.len(),
        1,
        "only the new events channel: {channels:?}"
    );
    assert_eq!(channels[0]["name"], "events");
    assert_eq!(
        channels[0]["lastSeq"], 1,
        "one session.created event: {channels:?}"
    );
    assert_eq!(channels[0]["recordCount"], 1);
    let page = s.get(&records).await.expect(200);
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["lastSeq"], 0);
    // Record ids of the deleted session are forgotten too.
    let again = s.post(&records, &append).await.expect(201);
    assert_eq!(again["firstSeq"], 1);
    assert!(again["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["duplicate"] == false));
}
