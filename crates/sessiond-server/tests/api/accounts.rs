//! Accounts, API keys, and who may see what: with auth required, and in open mode.

use reqwest::Method;
use serde_json::{json, Value};
use sessiond_server::AppOptions;
use uuid::Uuid;

use crate::common::{id_of, ids, path, Api, TestServer};

const ADMIN: &str = "adm_test_0123456789abcdef";

async fn auth_server() -> TestServer {
    TestServer::start_with(AppOptions {
        auth_required: true,
        admin_key: Some(ADMIN.to_owned()),
        ..AppOptions::default()
    })
    .await
}

/// Creates an account as `admin`; returns its id.
async fn account(admin: &Api, name: &str) -> String {
    let r = admin.post("/v1/accounts", &json!({ "name": name })).await;
    let a = r.expect(201);
    assert_eq!(a["name"], name);
    id_of(&a)
}

/// Issues a key for `account`; returns the key object (with its secret).
async fn key(admin: &Api, account: &str) -> Value {
    admin
        .post(
            &format!("/v1/accounts/{account}/keys"),
            &json!({"name": "test"}),
        )
        .await
        .expect(201)
}

fn secret(k: &Value) -> String {
    k["key"].as_str().expect("key secret").to_owned()
}

#[tokio::test]
async fn without_valid_credentials_everything_is_401() {
    let s = auth_server().await;
    let routes = [
        (Method::GET, "/v1/sessions"),
        (Method::POST, "/v1/sessions"),
        (Method::GET, "/v1/sessions/x"),
        (Method::PATCH, "/v1/sessions/x"),
        (Method::DELETE, "/v1/sessions/x"),
        (Method::POST, "/v1/sessions/x/close"),
        (Method::POST, "/v1/accounts"),
        (
            Method::POST,
            "/v1/accounts/00000000-0000-0000-0000-000000000000/keys",
        ),
        (
            Method::DELETE,
            "/v1/keys/00000000-0000-0000-0000-000000000000",
        ),
    ];
    for (m, p) in &routes {
        let json_body =
            |rb: reqwest::RequestBuilder| rb.header("content-type", "application/json").body("{}");
        s.send(m.clone(), p, json_body)
            .await
            .expect_error(401, "unauthorized");
        s.bearer("sk_wrong_wrong_wrong_wrong")
            .send(m.clone(), p, json_body)
            .await
            .expect_error(401, "unauthorized");
        s.x_api_key("sk_wrong_wrong_wrong_wrong")
            .send(m.clone(), p, json_body)
            .await
            .expect_error(401, "unauthorized");
        s.send(m.clone(), p, |rb| {
            json_body(rb).header("authorization", format!("Basic {ADMIN}"))
        })
        .await
        .expect_error(401, "unauthorized");
        s.send(m.clone(), p, |rb| {
            json_body(rb).header("authorization", "Bearer ")
        })
        .await
        .expect_error(401, "unauthorized");
    }
    // Nothing was created by any of them.
    let admin = s.bearer(ADMIN);
    let a = account(&admin, "probe").await;
    let k = secret(&key(&admin, &a).await);
    assert!(s.bearer(&k).list_all("").await.is_empty());
    // Operations routes stay open.
    s.get("/healthz").await.expect(200);
    s.get("/readyz").await.expect(200);
}

#[tokio::test]
async fn admin_creates_accounts_and_keys_and_keys_work() {
    let s = auth_server().await;
    let admin = s.bearer(ADMIN);

    let r = admin.post("/v1/accounts", &json!({"name": "Acme"})).await;
    let acct = r.expect(201);
    let acct_id = id_of(&acct);
    Uuid::parse_str(&acct_id).expect("account id is a UUID");
    assert_eq!(acct["name"], "Acme");
    assert!(acct["createdAt"].as_str().unwrap().ends_with('Z'));

    // A caller-chosen account id; the same again is a conflict.
    let chosen = Uuid::new_v4().to_string();
    let r = admin.post("/v1/accounts", &json!({"id": chosen})).await;
    let a2 = r.expect(201);
    assert_eq!(id_of(&a2), chosen);
    assert!(a2["name"].is_null());
    admin
        .post("/v1/accounts", &json!({"id": chosen}))
        .await
        .expect_error(409, "account_exists");
    admin
        .post("/v1/accounts", &json!({"name": ""}))
        .await
        .expect_error(422, "invalid_field");
    admin
        .post("/v1/accounts", &json!({"name": "x".repeat(129)}))
        .await
        .expect_error(422, "invalid_field");
    admin
        .post("/v1/accounts", &json!({"colour": "x"}))
        .await
        .expect_error(422, "invalid_body");
    // With no body at all.
    admin
        .send(Method::POST, "/v1/accounts", |rb| rb)
        .await
        .expect(201);

    // The admin key via x-api-key works too.
    s.x_api_key(ADMIN)
        .post("/v1/accounts", &json!({"name": "via header"}))
        .await
        .expect(201);

    let r = admin
        .post(
            &format!("/v1/accounts/{acct_id}/keys"),
            &json!({"name": "ci"}),
        )
        .await;
    let k = r.expect(201);
    let sk = secret(&k);
    assert!(sk.starts_with("sk_") && sk.len() >= 40, "{sk}");
    assert_eq!(k["prefix"], sk.chars().take(10).collect::<String>());
    assert_eq!(k["accountId"], acct_id.as_str());
    assert_eq!(k["name"], "ci");
    Uuid::parse_str(&id_of(&k)).expect("key id is a UUID");
    // Keys are distinct.
    let k2 = key(&admin, &acct_id).await;
    assert_ne!(secret(&k2), sk);

    // The key works with Bearer and with x-api-key, and both see the same account.
    let created = s
        .bearer(&sk)
        .post("/v1/sessions", &json!({"title": "mine"}))
        .await
        .expect(201);
    let id = id_of(&created);
    assert_eq!(s.x_api_key(&sk).session(&id).await, created);
    assert_eq!(s.bearer(&secret(&k2)).session(&id).await, created);
    let listed = s.x_api_key(&sk).list_all("").await;
    assert_eq!(ids(&listed), vec![id.clone()]);
    s.bearer(&sk)
        .patch(&path(&id), &json!({"title": "patched"}))
        .await
        .expect(200);
    let r = s.x_api_key(&sk).delete(&path(&id)).await;
    assert_eq!(r.status, 204, "{}", r.text);
}

#[tokio::test]
async fn roles_are_separate() {
    let s = auth_server().await;
    let admin = s.bearer(ADMIN);
    let a = account(&admin, "a").await;
    let k = secret(&key(&admin, &a).await);
    let user = s.bearer(&k);

    // An account key cannot manage accounts or keys.
    user.post("/v1/accounts", &json!({"name": "evil"}))
        .await
        .expect_error(403, "forbidden");
    user.post(&format!("/v1/accounts/{a}/keys"), &json!({}))
        .await
        .expect_error(403, "forbidden");
    let kid = id_of(&key(&admin, &a).await);
    user.delete(&format!("/v1/keys/{kid}"))
        .await
        .expect_error(403, "forbidden");

    // The admin key cannot work on sessions.
    let session = user.create(json!({"externalId": "x-1"})).await;
    admin
        .get("/v1/sessions")
        .await
        .expect_error(403, "forbidden");
    admin
        .post("/v1/sessions", &json!({}))
        .await
        .expect_error(403, "forbidden");
    admin
        .get(&path(&id_of(&session)))
        .await
        .expect_error(403, "forbidden");
    admin
        .patch(&path("x-1"), &json!({"title": "x"}))
        .await
        .expect_error(403, "forbidden");
    admin
        .delete(&path("x-1"))
        .await
        .expect_error(403, "forbidden");
    assert_eq!(user.session("x-1").await, session, "nothing changed");
    assert_eq!(user.list_all("").await.len(), 1);
}

#[tokio::test]
async fn accounts_cannot_see_each_other() {
    let s = auth_server().await;
    let admin = s.bearer(ADMIN);
    let a = s.bearer(&secret(&key(&admin, &account(&admin, "a").await).await));
    let b = s.bearer(&secret(&key(&admin, &account(&admin, "b").await).await));

    let bs = b
        .create(json!({"externalId": "b-only", "data": {"secret": 1}}))
        .await;
    let bid = id_of(&bs);
    // The same externalId in another account is a different session.
    let as_ = a
        .create(json!({"externalId": "b-only", "title": "a's"}))
        .await;
    assert_ne!(id_of(&as_), bid);
    let a2 = a.create(json!({"title": "a two"})).await;

    for r in [bid.as_str(), "no-such"] {
        a.get(&path(r)).await.expect_error(404, "session_not_found");
        assert_eq!(a.head(&path(r)).await.status, 404);
    }
    a.patch(&path(&bid), &json!({"title": "hijack"}))
        .await
        .expect_error(404, "session_not_found");
    a.patch_if(&path(&bid), "\"1\"", &json!({"title": "hijack"}))
        .await
        .expect_error(404, "session_not_found");
    a.post(&format!("{}/close", path(&bid)), &json!({}))
        .await
        .expect_error(404, "session_not_found");
    a.delete(&path(&bid))
        .await
        .expect_error(404, "session_not_found");
    a.get("/v1/sessions?externalId=b-only&include=data")
        .await
        .expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(|row| assert_ne!(id_of(row), bid));

    // By externalId, each account sees its own.
    assert_eq!(a.session("b-only").await, as_);
    assert_eq!(b.session("b-only").await, bs, "b's session untouched");

    let mut a_ids = ids(&a.list_all("").await);
    a_ids.sort();
    let mut expected = vec![id_of(&as_), id_of(&a2)];
    expected.sort();
    assert_eq!(a_ids, expected);
    assert_eq!(ids(&b.list_all("").await), vec![bid]);
}

#[tokio::test]
async fn caller_supplied_secrets() {
    let s = auth_server().await;
    let admin = s.bearer(ADMIN);
    let a = account(&admin, "a").await;
    let b = account(&admin, "b").await;
    let mine = "tr_dev_0123456789abcdefghij";

    let r = admin
        .post(&format!("/v1/accounts/{a}/keys"), &json!({"key": mine}))
        .await;
    let k = r.expect(201);
    assert_eq!(k["key"], mine);
    assert_eq!(k["prefix"], &mine[..10]);
    s.bearer(mine).create(json!({"title": "with my key"})).await;
    assert_eq!(s.x_api_key(mine).list_all("").await.len(), 1);

    // The same secret again, for any account, is a conflict.
    for acct in [&a, &b] {
        admin
            .post(&format!("/v1/accounts/{acct}/keys"), &json!({"key": mine}))
            .await
            .expect_error(409, "key_exists");
    }
    // Bad secrets.
    for bad in ["short", "has a space in it 123456", &"x".repeat(257)] {
        admin
            .post(&format!("/v1/accounts/{a}/keys"), &json!({"key": bad}))
            .await
            .expect_error(422, "invalid_field");
    }
    // Still one working key on a; b's view is empty.
    assert_eq!(s.bearer(mine).list_all("").await.len(), 1);
}

#[tokio::test]
async fn key_routes_validate_their_ids() {
    let s = auth_server().await;
    let admin = s.bearer(ADMIN);
    admin
        .post(&format!("/v1/accounts/{}/keys", Uuid::new_v4()), &json!({}))
        .await
        .expect_error(404, "account_not_found");
    admin
        .post("/v1/accounts/not-a-uuid/keys", &json!({}))
        .await
        .expect_error(400, "invalid_id");
    admin
        .delete("/v1/keys/not-a-uuid")
        .await
        .expect_error(400, "invalid_id");
    admin
        .delete(&format!("/v1/keys/{}", Uuid::new_v4()))
        .await
        .expect_error(404, "key_not_found");
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let s = auth_server().await;
    let admin = s.bearer(ADMIN);
    let a = account(&admin, "a").await;
    let k1 = key(&admin, &a).await;
    let k2 = key(&admin, &a).await;
    let user = s.bearer(&secret(&k1));
    // Used (and so cached) before revocation.
    let created = user.create(json!({"title": "t"})).await;
    user.session(&id_of(&created)).await;

    let r = admin.delete(&format!("/v1/keys/{}", id_of(&k1))).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    user.get("/v1/sessions")
        .await
        .expect_error(401, "unauthorized");
    s.x_api_key(&secret(&k1))
        .get(&path(&id_of(&created)))
        .await
        .expect_error(401, "unauthorized");
    admin
        .delete(&format!("/v1/keys/{}", id_of(&k1)))
        .await
        .expect_error(404, "key_not_found");

    // The account's other key still works and sees the session.
    assert_eq!(
        s.bearer(&secret(&k2)).session(&id_of(&created)).await,
        created
    );
}

#[tokio::test]
async fn open_mode_needs_no_credentials_but_rejects_wrong_ones() {
    let s = TestServer::start().await;
    let created = s.create(json!({"title": "anon"})).await;
    assert_eq!(s.session(&id_of(&created)).await, created);
    assert_eq!(s.list_all("").await.len(), 1);

    s.bearer("sk_wrong_wrong_wrong_wrong")
        .get("/v1/sessions")
        .await
        .expect_error(401, "unauthorized");
    s.x_api_key("sk_wrong_wrong_wrong_wrong")
        .post("/v1/sessions", &json!({}))
        .await
        .expect_error(401, "unauthorized");
    s.send(Method::GET, "/v1/sessions", |rb| {
        rb.header("authorization", "Token abc")
    })
    .await
    .expect_error(401, "unauthorized");

    // Without credentials the caller may manage accounts (loopback open mode); a key issued
    // this way works and sees only its own account, not the default account's sessions.
    let a = account(&s.api, "team").await;
    let k = secret(&key(&s.api, &a).await);
    let user = s.bearer(&k);
    assert!(user.list_all("").await.is_empty());
    user.get(&path(&id_of(&created)))
        .await
        .expect_error(404, "session_not_found");
    let theirs = user.create(json!({"title": "team's"})).await;
    s.get(&path(&id_of(&theirs)))
        .await
        .expect_error(404, "session_not_found");
    assert_eq!(ids(&s.list_all("").await), vec![id_of(&created)]);
}

#[tokio::test]
async fn the_auth_scheme_is_case_insensitive() {
    // RFC 9110 section 11.1: "It uses a case-insensitive token to identify the authentication
    // scheme". Clients send `Bearer`, `bearer` and `BEARER`.
    let s = auth_server().await;
    let admin = s.bearer(ADMIN);
    let a = account(&admin, "a").await;
    let k = secret(&key(&admin, &a).await);
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        s.send(Method::GET, "/v1/sessions", |rb| {
            rb.header("authorization", format!("{scheme} {k}"))
        })
        .await
        .expect(200);
    }
}
