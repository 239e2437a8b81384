//! Session tokens: minting, the JWT they are, and the full scope matrix — every route × every
//! kind of credential, with the exact status and error code.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use sessiond_server::AppOptions;
use uuid::Uuid;

use crate::common::{id_of, path, Api, TestServer};

const ADMIN: &str = "adm_tokens_0123456789abcdef";

async fn auth_server() -> TestServer {
    TestServer::start_with(AppOptions {
        auth_required: true,
        admin_key: Some(ADMIN.to_owned()),
        ..AppOptions::default()
    })
    .await
}

/// A new account and one of its API keys, through the admin routes; returns (account id, key).
async fn account_key(s: &TestServer, name: &str) -> (String, String) {
    let admin = s.bearer(ADMIN);
    let account = id_of(
        &admin
            .post("/v1/accounts", &json!({ "name": name }))
            .await
            .expect(201),
    );
    let key = admin
        .post(
            &format!("/v1/accounts/{account}/keys"),
            &json!({"name": "tokens test"}),
        )
        .await
        .expect(201);
    let secret = key["key"].as_str().expect("key secret").to_owned();
    (account, secret)
}

/// Mints a token; asserts 201 and returns the answer.
async fn mint(api: &Api, session: &str, body: Value) -> Value {
    api.post(&format!("{}/tokens", path(session)), &body)
        .await
        .expect(201)
}

fn token_of(minted: &Value) -> String {
    minted["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {minted}"))
        .to_owned()
}

/// The decoded claims (the middle part) of a JWT.
fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("claims are base64url");
    serde_json::from_slice(&bytes).expect("claims are JSON")
}

/// The same JWT with one character of its signature changed.
fn tamper_signature(jwt: &str) -> String {
    let (head, sig) = jwt.rsplit_once('.').expect("a JWT");
    let mut sig: Vec<char> = sig.chars().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
    format!("{head}.{}", sig.into_iter().collect::<String>())
}

/// The same JWT with its claims replaced (the signature kept, so no longer valid).
fn tamper_claims(jwt: &str, claims: &Value) -> String {
    let mut parts = jwt.split('.');
    let head = parts.next().unwrap();
    let _ = parts.next();
    let sig = parts.next().unwrap();
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{head}.{body}.{sig}")
}

// ---------------------------------------------------------------------------------------------
// the matrix

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    GetSession,
    HeadSession,
    ListSessions,
    CreateSession,
    ListChannels,
    ReadJson(&'static str),
    ReadSse(&'static str),
    Append(&'static str),
    MintToken,
    // Destructive routes last, so that the account key's column can run them in order.
    Patch,
    Close,
    Delete,
}

const ROUTES: [Route; 18] = [
    Route::GetSession,
    Route::HeadSession,
    Route::ListSessions,
    Route::CreateSession,
    Route::ListChannels,
    Route::ReadJson("in"),
    Route::ReadJson("out"),
    Route::ReadJson("events"),
    Route::ReadSse("in"),
    Route::ReadSse("out"),
    Route::ReadSse("events"),
    Route::Append("in"),
    Route::Append("out"),
    Route::Append("events"),
    Route::MintToken,
    Route::Patch,
    Route::Close,
    Route::Delete,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    /// The session's account's API key (the control column).
    AccountKey,
    NoCredentials,
    Read,
    Write,
    ReadWrite,
    /// read+write on another session of the same account.
    OtherSession,
    /// read+write on a session of another account.
    OtherAccount,
    Expired,
    TamperedSignature,
    TamperedClaims,
    /// Signed by another server's secret.
    ForeignSigner,
}

/// What one call answered: status, error code (when the body is an error envelope), body.
#[derive(Debug)]
struct Outcome {
    status: u16,
    code: Option<String>,
    text: String,
}

/// Calls `route` on `session` with `api`'s credentials.
async fn call(api: &Api, route: Route, session: &str) -> Outcome {
    let p = path(session);
    let rb = match route {
        Route::GetSession => api.request(Method::GET, &p),
        Route::HeadSession => api.request(Method::HEAD, &p),
        Route::ListSessions => api.request(Method::GET, "/v1/sessions"),
        Route::CreateSession => api.request(Method::POST, "/v1/sessions").json(&json!({})),
        Route::ListChannels => api.request(Method::GET, &format!("{p}/channels")),
        Route::ReadJson(ch) => api.request(Method::GET, &format!("{p}/channels/{ch}/records")),
        Route::ReadSse(ch) => api
            .request(Method::GET, &format!("{p}/channels/{ch}/records"))
            .header("accept", "text/event-stream"),
        Route::Append(ch) => api
            .request(Method::POST, &format!("{p}/channels/{ch}/records"))
            .json(&json!({"records": [{"data": "matrix"}]})),
        Route::MintToken => api
            .request(Method::POST, &format!("{p}/tokens"))
            .json(&json!({"scopes": ["read"]})),
        Route::Patch => api
            .request(Method::PATCH, &p)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"title":"patched"}"#),
        Route::Close => api
            .request(Method::POST, &format!("{p}/close"))
            .json(&json!({})),
        Route::Delete => api.request(Method::DELETE, &p),
    };
    let mut resp = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{route:?}: request failed: {e}"));
    let status = resp.status().as_u16();
    if matches!(route, Route::ReadSse(_)) && status == 200 {
        // A live stream: check it is one and that it delivers the first record, then drop it.
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut buf = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !buf.contains("\n\n") {
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Ok(Ok(Some(b))) => buf.push_str(&String::from_utf8_lossy(&b)),
                other => panic!("{route:?}: no first event ({other:?}); got {buf:?}"),
            }
        }
        let text = format!("content-type {ct:?}; first frame {buf:?}");
        let ok = ct.starts_with("text/event-stream")
            && buf.starts_with("id: 1\n")
            && buf.contains("event: record\n");
        return Outcome {
            status: if ok { 200 } else { 599 },
            code: None,
            text,
        };
    }
    let text = resp.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    Outcome { status, code, text }
}

/// The expected (status, code) of `route` for `cred`.
fn expected(cred: Cred, route: Route) -> (u16, Option<&'static str>) {
    use Route::*;
    const FORBIDDEN: (u16, Option<&str>) = (403, Some("forbidden"));
    let reads = matches!(
        route,
        GetSession | HeadSession | ListChannels | ReadJson(_) | ReadSse(_)
    );
    let append_in = route == Append("in");
    match cred {
        Cred::AccountKey => match route {
            GetSession | HeadSession | ListSessions | ListChannels | ReadJson(_) | ReadSse(_) => {
                (200, None)
            }
            Patch | Close => (200, None),
            CreateSession | MintToken => (201, None),
            Append("events") => (403, Some("channel_read_only")),
            Append(_) => (201, None),
            Delete => (204, None),
        },
        Cred::NoCredentials => (401, Some("unauthorized")),
        Cred::Expired => (401, Some("token_expired")),
        Cred::TamperedSignature | Cred::TamperedClaims | Cred::ForeignSigner => {
            (401, Some("invalid_token"))
        }
        Cred::Read if reads => (200, None),
        Cred::Write if append_in => (201, None),
        Cred::ReadWrite if reads => (200, None),
        Cred::ReadWrite if append_in => (201, None),
        Cred::Read | Cred::Write | Cred::ReadWrite | Cred::OtherSession => FORBIDDEN,
        // Another account's session does not exist for this token's account.
        Cred::OtherAccount if reads || append_in => (404, Some("session_not_found")),
        Cred::OtherAccount => FORBIDDEN,
    }
}

/// Runs every route for `cred` on `session`; returns the mismatches.
async fn column(api: &Api, cred: Cred, session: &str, routes: &[Route]) -> Vec<String> {
    let mut bad = Vec::new();
    for &route in routes {
        let (status, code) = expected(cred, route);
        let got = call(api, route, session).await;
        // A HEAD answer has no body to carry a code.
        let code = if route == Route::HeadSession {
            None
        } else {
            code
        };
        if got.status != status || (code.is_some() && got.code.as_deref() != code) {
            bad.push(format!(
                "{cred:?} × {route:?}: expected {status} {code:?}, got {} {:?}: {}",
                got.status, got.code, got.text
            ));
        }
    }
    bad
}

/// Mints a read+write token with a 1 s lifetime and waits until the server calls it expired.
async fn expired_token(s: &TestServer, owner: &Api, session: &str) -> String {
    let minted_at = Instant::now();
    let token = token_of(
        &mint(
            owner,
            session,
            json!({"scopes": ["read", "write"], "ttlSeconds": 1}),
        )
        .await,
    );
    let api = s.bearer(&token);
    let first = api.get(&path(session)).await;
    if minted_at.elapsed() < Duration::from_millis(500) {
        first.expect(200);
    }
    for _ in 0..100 {
        let r = api.get(&path(session)).await;
        if r.status == 401 {
            r.expect_error(401, "token_expired");
            assert!(
                minted_at.elapsed() >= Duration::from_millis(900),
                "expired after {:?}, before its 1 s lifetime",
                minted_at.elapsed()
            );
            return token;
        }
        r.expect(200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a 1 s token still works after 10 s");
}

#[tokio::test]
async fn every_route_with_every_credential() {
    let s = auth_server().await;
    let (_, key) = account_key(&s, "matrix").await;
    let owner = s.bearer(&key);
    let a = id_of(&owner.create(json!({"externalId": "matrix-a"})).await);
    let b = id_of(&owner.create(json!({})).await);
    for id in [&a, &b] {
        for ch in ["in", "out"] {
            owner
                .post(
                    &format!("{}/channels/{ch}/records", path(id)),
                    &json!({"records": [{"data": "seed"}]}),
                )
                .await
                .expect(201);
        }
    }
    let (_, other_key) = account_key(&s, "other").await;
    let other_owner = s.bearer(&other_key);
    let foreign = id_of(&other_owner.create(json!({})).await);

    let read = token_of(&mint(&owner, &a, json!({"scopes": ["read"]})).await);
    let write = token_of(&mint(&owner, &a, json!({"scopes": ["write"]})).await);
    let read_write = token_of(&mint(&owner, &a, json!({"scopes": ["read", "write"]})).await);
    let other_session = token_of(&mint(&owner, &b, json!({"scopes": ["read", "write"]})).await);
    let other_account =
        token_of(&mint(&other_owner, &foreign, json!({"scopes": ["read", "write"]})).await);
    let tampered = tamper_signature(&read_write);
    let mut forged_claims = claims(&read);
    forged_claims["scopes"] = json!([format!("read:sessions:{a}"), format!("write:sessions:{a}")]);
    let forged = tamper_claims(&read, &forged_claims);
    let elsewhere = TestServer::start().await;
    let elsewhere_session = id_of(&elsewhere.create(json!({"id": a})).await);
    let foreign_signed = token_of(
        &mint(
            &elsewhere,
            &elsewhere_session,
            json!({"scopes": ["read", "write"]}),
        )
        .await,
    );
    let expired = expired_token(&s, &owner, &a).await;

    let mut mismatches = Vec::new();
    let columns: Vec<(Cred, Api)> = vec![
        (Cred::NoCredentials, s.api.clone()),
        (Cred::Read, s.bearer(&read)),
        (Cred::Write, s.bearer(&write)),
        (Cred::ReadWrite, s.bearer(&read_write)),
        (Cred::OtherSession, s.bearer(&other_session)),
        (Cred::OtherAccount, s.bearer(&other_account)),
        (Cred::Expired, s.bearer(&expired)),
        (Cred::TamperedSignature, s.bearer(&tampered)),
        (Cred::TamperedClaims, s.bearer(&forged)),
        (Cred::ForeignSigner, s.bearer(&foreign_signed)),
    ];
    let routes = ROUTES;
    for (cred, api) in &columns {
        mismatches.extend(column(api, *cred, &a, &routes).await);
    }
    // The same tokens addressed by externalId.
    for (cred, api) in &columns[1..4] {
        mismatches.extend(
            column(
                api,
                *cred,
                "matrix-a",
                &[
                    Route::GetSession,
                    Route::ReadJson("in"),
                    Route::Append("in"),
                    Route::Patch,
                ],
            )
            .await,
        );
    }
    // Nothing any token did changed the session: still version 1, not closed, not deleted.
    let sa = owner.session(&a).await;
    assert_eq!(sa["version"], 1, "{sa}");
    assert_eq!(sa["status"], "active", "{sa}");
    assert!(sa["title"].is_null(), "{sa}");
    // Appends with write scopes went to `in` only: seed + Write + ReadWrite (+2 by externalId).
    let page = owner
        .get(&format!("{}/channels/in/records", path(&a)))
        .await
        .expect(200);
    let ins = page["records"].as_array().unwrap().len();
    let outs = owner
        .get(&format!("{}/channels/out/records", path(&a)))
        .await
        .expect(200)["records"]
        .as_array()
        .unwrap()
        .len();
    let on_b = owner
        .get(&format!("{}/channels/in/records", path(&b)))
        .await
        .expect(200)["records"]
        .as_array()
        .unwrap()
        .len();

    // The control column last (it patches, closes and deletes its own session).
    let c = id_of(&owner.create(json!({})).await);
    for ch in ["in", "out"] {
        owner
            .post(
                &format!("{}/channels/{ch}/records", path(&c)),
                &json!({"records": [{"data": "seed"}]}),
            )
            .await
            .expect(201);
    }
    mismatches.extend(column(&owner, Cred::AccountKey, &c, &routes).await);
    owner
        .get(&path(&c))
        .await
        .expect_error(404, "session_not_found");

    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(ins, 1 + 2 + 2, "{page}");
    assert_eq!(outs, 1, "a token appended to out");
    assert_eq!(on_b, 1, "a token appended to another session");
}

// ---------------------------------------------------------------------------------------------
// minting

#[tokio::test]
async fn minting_answers_a_scoped_hs256_jwt() {
    let s = auth_server().await;
    let (account, key) = account_key(&s, "mint").await;
    let owner = s.bearer(&key);
    let id = id_of(&owner.create(json!({"externalId": "mint-ext"})).await);

    // Default: read only, one hour.
    let r = owner
        .send(Method::POST, &format!("{}/tokens", path(&id)), |rb| rb)
        .await;
    let minted = r.expect(201);
    let mut keys: Vec<&str> = minted
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expiresAt", "scopes", "token"], "{minted}");
    assert_eq!(minted["scopes"], json!([format!("read:sessions:{id}")]));
    let token = token_of(&minted);
    assert!(
        token.starts_with("eyJ") && token.split('.').count() == 3,
        "{token}"
    );
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256", "{header}");
    let c = claims(&token);
    assert_eq!(c["sub"], account.as_str(), "{c}");
    assert_eq!(c["scopes"], minted["scopes"], "{c}");
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 3600, "{c}");
    assert!(Uuid::parse_str(c["jti"].as_str().unwrap()).is_ok(), "{c}");
    let now = chrono::Utc::now().timestamp();
    assert!((iat - now).abs() <= 5, "iat {iat} vs now {now}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(minted["expiresAt"].as_str().unwrap())
        .expect("expiresAt is RFC 3339");
    assert_eq!(expires_at.timestamp(), exp, "expiresAt is the exp claim");
    assert!(minted["expiresAt"].as_str().unwrap().ends_with('Z'));
    // Every mint is a different token (jti).
    let again = token_of(&mint(&owner, &id, json!({})).await);
    assert_ne!(again, token);
    assert_ne!(claims(&again)["jti"], c["jti"]);

    // Scopes and lifetimes.
    let m = mint(&owner, &id, json!({"scopes": ["write"], "ttlSeconds": 60})).await;
    assert_eq!(m["scopes"], json!([format!("write:sessions:{id}")]));
    let c = claims(&token_of(&m));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 60);
    let m = mint(
        &owner,
        &id,
        json!({"scopes": ["write", "read"], "ttlSeconds": 86_400}),
    )
    .await;
    assert_eq!(
        m["scopes"],
        json!([
            format!("read:sessions:{id}"),
            format!("write:sessions:{id}")
        ])
    );
    // By externalId: the scopes still name the UUID.
    let m = mint(&owner, "mint-ext", json!({"scopes": ["read"]})).await;
    assert_eq!(m["scopes"], json!([format!("read:sessions:{id}")]));

    // Bad bodies.
    let p = format!("{}/tokens", path(&id));
    for (body, status, code) in [
        (json!({"scopes": []}), 422, "invalid_field"),
        (json!({"ttlSeconds": 0}), 422, "invalid_field"),
        (json!({"ttlSeconds": -1}), 422, "invalid_field"),
        (json!({"ttlSeconds": 86_401}), 422, "invalid_field"),
        (json!({"scopes": ["admin"]}), 422, "invalid_body"),
        (json!({"scopes": "read"}), 422, "invalid_body"),
        (json!({"ttlSeconds": "60"}), 422, "invalid_body"),
        (json!({"scope": ["read"]}), 422, "invalid_body"),
    ] {
        let r = owner.post(&p, &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        r.expect_error(status, code);
    }
    owner
        .raw(Method::POST, &p, "application/json", "{")
        .await
        .expect_error(400, "invalid_json");

    // Who may mint: not for a missing session, not for another account's, not the admin key.
    let missing = Uuid::new_v4().to_string();
    owner
        .post(&format!("{}/tokens", path(&missing)), &json!({}))
        .await
        .expect_error(404, "session_not_found");
    let (_, other_key) = account_key(&s, "someone else").await;
    s.bearer(&other_key)
        .post(&p, &json!({}))
        .await
        .expect_error(404, "session_not_found");
    s.bearer(ADMIN)
        .post(&p, &json!({}))
        .await
        .expect_error(403, "forbidden");
    s.post(&p, &json!({}))
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn a_token_in_the_query_works_on_get_only() {
    let s = auth_server().await;
    let (_, key) = account_key(&s, "query").await;
    let owner = s.bearer(&key);
    let id = id_of(&owner.create(json!({})).await);
    owner
        .post(
            &format!("{}/channels/in/records", path(&id)),
            &json!({"records": [{"id": "r1", "data": 1}]}),
        )
        .await
        .expect(201);
    let rw = token_of(&mint(&owner, &id, json!({"scopes": ["read", "write"]})).await);
    let q = format!("token={rw}");

    // GET and HEAD.
    let got = s.get(&format!("{}?{q}", path(&id))).await.expect(200);
    assert_eq!(id_of(&got), id);
    let r = s.head(&format!("{}?{q}", path(&id))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.get(&format!("{}/channels?{q}", path(&id)))
        .await
        .expect(200);
    let page = s
        .get(&format!("{}/channels/in/records?after=0&{q}", path(&id)))
        .await
        .expect(200);
    assert_eq!(page["records"][0]["id"], "r1");
    // SSE the way a browser's EventSource would: no headers, everything in the URL.
    let mut resp = s
        .client
        .get(s.url(&format!("{}/channels/in/records?stream=sse&{q}", path(&id))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    while !buf.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream is open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(buf.starts_with("id: 1\nevent: record\n"), "{buf:?}");
    drop(resp);

    // Scopes still apply to a token in the query.
    let read = token_of(&mint(&owner, &id, json!({"scopes": ["read"]})).await);
    let write = token_of(&mint(&owner, &id, json!({"scopes": ["write"]})).await);
    s.get(&format!("{}?token={write}", path(&id)))
        .await
        .expect_error(403, "forbidden");
    s.get(&format!("{}?token={}", path(&id), tamper_signature(&read)))
        .await
        .expect_error(401, "invalid_token");
    s.get(&format!("/v1/sessions?token={read}"))
        .await
        .expect_error(403, "forbidden");

    // Any other method: 401, even with a token that would allow the call in a header.
    let append = format!("{}/channels/in/records?{q}", path(&id));
    s.post(&append, &json!({"records": [{"data": 2}]}))
        .await
        .expect_error(401, "unauthorized");
    s.patch(&format!("{}?{q}", path(&id)), &json!({"title": "x"}))
        .await
        .expect_error(401, "unauthorized");
    s.delete(&format!("{}?{q}", path(&id)))
        .await
        .expect_error(401, "unauthorized");
    // Even alongside a valid Authorization header.
    owner
        .post(&append, &json!({"records": [{"data": 2}]}))
        .await
        .expect_error(401, "unauthorized");
    // In a header the same token appends.
    s.bearer(&rw)
        .post(
            &format!("{}/channels/in/records", path(&id)),
            &json!({"records": [{"data": 3}]}),
        )
        .await
        .expect(201);
    let page = owner
        .get(&format!("{}/channels/in/records", path(&id)))
        .await
        .expect(200);
    assert_eq!(
        page["lastSeq"], 2,
        "the refused appends appended nothing: {page}"
    );
}

/// `?token=` is a credential on GET requests, whatever the secret: the auth layer accepts an
/// API key there, and every GET route must then accept the parameter.
#[tokio::test]
async fn an_api_key_in_the_query_works_on_every_get() {
    let s = auth_server().await;
    let (_, key) = account_key(&s, "query-key").await;
    let owner = s.bearer(&key);
    let id = id_of(&owner.create(json!({})).await);
    let q = format!("token={key}");
    s.get(&format!("{}?{q}", path(&id))).await.expect(200);
    s.get(&format!("{}/channels?{q}", path(&id)))
        .await
        .expect(200);
    s.get(&format!("{}/channels/in/records?{q}", path(&id)))
        .await
        .expect(200);
    let page = s.get(&format!("/v1/sessions?{q}")).await.expect(200);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
}

#[tokio::test]
async fn tokens_follow_the_session_lifecycle() {
    let s = auth_server().await;
    let (_, key) = account_key(&s, "lifecycle").await;
    let owner = s.bearer(&key);
    let id = id_of(&owner.create(json!({})).await);
    let rw = s.bearer(&token_of(
        &mint(&owner, &id, json!({"scopes": ["read", "write"]})).await,
    ));
    let append = format!("{}/channels/in/records", path(&id));
    rw.post(&append, &json!({"records": [{"data": 1}]}))
        .await
        .expect(201);
    // A token never bumps the version; it sees the session as it is.
    assert_eq!(rw.session(&id).await["version"], 1);

    owner
        .post(&format!("{}/close", path(&id)), &json!({}))
        .await
        .expect(200);
    // Closed: reading works, appending is a conflict, not a scope error.
    rw.get(&append).await.expect(200);
    assert_eq!(rw.session(&id).await["status"], "closed");
    rw.post(&append, &json!({"records": [{"data": 2}]}))
        .await
        .expect_error(409, "session_closed");
    // A read-only token on a closed session is still refused the append by scope.
    let read = s.bearer(&token_of(
        &mint(&owner, &id, json!({"scopes": ["read"]})).await,
    ));
    read.post(&append, &json!({"records": [{"data": 2}]}))
        .await
        .expect_error(403, "forbidden");

    owner.delete(&path(&id)).await.expect(204);
    rw.get(&path(&id))
        .await
        .expect_error(404, "session_not_found");
    rw.get(&append).await.expect_error(404, "session_not_found");
    rw.post(&append, &json!({"records": [{"data": 3}]}))
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test]
async fn tokens_are_restricted_in_open_mode_too() {
    let s = TestServer::start().await;
    let id = id_of(&s.create(json!({})).await);
    let read = s.bearer(&token_of(&mint(&s, &id, json!({"scopes": ["read"]})).await));
    read.get(&path(&id)).await.expect(200);
    read.patch(&path(&id), &json!({"title": "x"}))
        .await
        .expect_error(403, "forbidden");
    read.post(
        &format!("{}/channels/in/records", path(&id)),
        &json!({"records": [{"data": 1}]}),
    )
    .await
    .expect_error(403, "forbidden");
    read.get("/v1/sessions")
        .await
        .expect_error(403, "forbidden");
    read.delete(&path(&id)).await.expect_error(403, "forbidden");
    s.bearer(&tamper_signature(&token_of(
        &mint(&s, &id, json!({})).await,
    )))
    .get(&path(&id))
    .await
    .expect_error(401, "invalid_token");
    // Without credentials, open mode may do all of it.
    s.patch(&path(&id), &json!({"title": "x"}))
        .await
        .expect(200);
    // Malformed JWT-looking secrets are invalid tokens, not unknown keys.
    s.bearer("eyJhbGciOiJIUzI1NiJ9.e30.AAAA")
        .get(&path(&id))
        .await
        .expect_error(401, "invalid_token");
}
