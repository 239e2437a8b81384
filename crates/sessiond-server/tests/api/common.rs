//! The test harness: a real server (the same `App` and `serve` the binary uses) on a free loopback
//! port over a fresh store, and small helpers for JSON requests and error envelopes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use sessiond_server::{App, AppOptions};
use sessiond_store::{Hub, Store};
use sessiond_store_postgres::{testkit, PgOptions};
use sessiond_store_sqlite::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Whether this test binary runs on PostgreSQL: always in `api_postgres` (which is skipped
/// without `SESSIOND_TEST_DATABASE_URL`), and in `api` when `SESSIOND_TEST_BACKEND=postgres`
/// and `SESSIOND_TEST_DATABASE_URL` are both set.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var(testkit::TEST_DATABASE_URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty())?;
    let opted_in = std::env::var("SESSIOND_TEST_BACKEND").is_ok_and(|b| b == "postgres");
    (crate::FORCE_POSTGRES || opted_in).then_some(url)
}

/// The store every test server runs on, with the hub it feeds. The one place that picks a
/// backend: a fresh PostgreSQL database per server (see [`postgres_url`]), else SQLite in `dir`.
pub async fn open_store_with_hub(dir: &Path) -> (Arc<dyn Store>, Arc<Hub>) {
    let hub = Hub::new();
    if let Some(url) = postgres_url() {
        let opts = PgOptions {
            max_connections: 8,
            ..PgOptions::default()
        };
        let store = testkit::fresh_store(&url, opts, hub.clone())
            .await
            .expect("a fresh PostgreSQL store");
        return (Arc::new(store), hub);
    }
    let store = SqliteStore::open(dir.join("sessiond.db"), SqliteOptions::default())
        .expect("open the SQLite store");
    (Arc::new(store), hub)
}

/// [`open_store_with_hub`] without the hub (for tests that build their own `App`).
pub async fn open_store(dir: &Path) -> Arc<dyn Store> {
    open_store_with_hub(dir).await.0
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(String),
    ApiKey(String),
}

/// A client bound to one server and one credential. `TestServer` derefs to the anonymous one.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub auth: Auth,
}

/// A running server over a fresh store in a temporary directory.
pub struct TestServer {
    pub api: Api,
    /// The store under the server, for tests that look below the API.
    pub store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(AppOptions::default()).await
    }

    pub async fn start_with(options: AppOptions) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, hub) = open_store_with_hub(dir.path()).await;
        let app = App::with_hub(store.clone(), hub, options)
            .await
            .expect("App::with_hub");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sessiond_server::serve(listener, app, async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        TestServer {
            api: Api {
                client,
                base: format!("http://{addr}"),
                auth: Auth::None,
            },
            store,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// The same server, with `Authorization: Bearer <secret>`.
    pub fn bearer(&self, secret: &str) -> Api {
        Api {
            auth: Auth::Bearer(secret.to_owned()),
            ..self.api.clone()
        }
    }

    /// The same server, with `x-api-key: <secret>`.
    pub fn x_api_key(&self, secret: &str) -> Api {
        Api {
            auth: Auth::ApiKey(secret.to_owned()),
            ..self.api.clone()
        }
    }

    /// Triggers the graceful shutdown and waits for `serve` to return (it must, promptly).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("serve did not return within 10 s of the shutdown signal")
                .expect("serve task panicked");
            result.expect("serve returned an error");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A response, read fully, with what was asked kept for failure messages.
#[derive(Debug)]
pub struct Resp {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics with context when it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {:?}", self.what, self.text))
    }

    /// Asserts the status; returns the JSON body (`Null` for an empty body).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{} answered {} (expected {status}): {}",
            self.what, self.status, self.text
        );
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an error in the native envelope: the status, the stable code, a non-empty
    /// message, and nothing else in the body.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "{} answered {} (expected {status} {code}): {}",
            self.what, self.status, self.text
        );
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{}: error content-type is {ct:?}",
            self.what
        );
        let body = self.json();
        let obj = body
            .as_object()
            .unwrap_or_else(|| panic!("{}: error body is not an object: {body}", self.what));
        assert_eq!(
            obj.len(),
            1,
            "{}: extra keys in the envelope: {body}",
            self.what
        );
        assert_eq!(
            body["error"]["code"], code,
            "{}: wrong error code: {body}",
            self.what
        );
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: error.message is not a string: {body}", self.what));
        assert!(
            !message.trim().is_empty(),
            "{}: empty error message",
            self.what
        );
    }

    /// The `ETag` header (panics when absent).
    #[track_caller]
    pub fn etag(&self) -> &str {
        self.header("etag")
            .unwrap_or_else(|| panic!("{}: no ETag header", self.what))
    }
}

pub async fn send(what: String, rb: RequestBuilder) -> Resp {
    let r = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
    Resp {
        what,
        status,
        headers,
        text,
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with this client's credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match &self.auth {
            Auth::None => rb,
            Auth::Bearer(k) => rb.bearer_auth(k),
            Auth::ApiKey(k) => rb.header("x-api-key", k),
        }
    }

    /// Sends a request built from [`Api::request`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        f: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Resp {
        let what = format!("{method} {path}");
        send(what, f(self.request(method, path))).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, |rb| rb).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.send(Method::HEAD, path, |rb| rb).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, |rb| rb).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, |rb| rb.json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, |rb| {
            rb.header("content-type", "application/merge-patch+json")
                .body(body.to_string())
        })
        .await
    }

    /// A PATCH guarded by `If-Match: <tag>` (the tag exactly as given).
    pub async fn patch_if(&self, path: &str, if_match: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, |rb| {
            rb.header("content-type", "application/merge-patch+json")
                .header("if-match", if_match)
                .body(body.to_string())
        })
        .await
    }

    /// A request with a raw body and content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        let body = body.into();
        self.send(method, path, |rb| {
            rb.header("content-type", content_type).body(body)
        })
        .await
    }

    /// Creates a session; asserts 201 and returns it.
    pub async fn create(&self, body: Value) -> Value {
        self.post("/v1/sessions", &body).await.expect(201)
    }

    /// GETs a session by id or externalId; asserts 200 and returns it.
    pub async fn session(&self, r: &str) -> Value {
        self.get(&format!("/v1/sessions/{}", encode(r)))
            .await
            .expect(200)
    }

    /// Every session the list returns, following cursors (limit 100 per page).
    pub async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = "/v1/sessions?limit=100".to_owned();
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(&encode(c));
            }
            let page = self.get(&path).await.expect(200);
            out.extend(page["data"].as_array().expect("data array").iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("list_all did not reach the last page");
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `id` of a session (or any object with one).
#[track_caller]
pub fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id in {v}"))
        .to_owned()
}

/// The ids of list rows, in order.
pub fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(id_of).collect()
}

/// Sorts sessions the way the list orders them: `createdAt desc, id desc`. Rendered timestamps
/// are fixed-width UTC with milliseconds, and UUIDs are compared as lowercase hex, so both
/// compare correctly as strings.
pub fn sort_like_list(rows: &mut [Value]) {
    rows.sort_by(|a, b| {
        let ka = (
            a["createdAt"].as_str().unwrap_or(""),
            a["id"].as_str().unwrap_or(""),
        );
        let kb = (
            b["createdAt"].as_str().unwrap_or(""),
            b["id"].as_str().unwrap_or(""),
        );
        kb.cmp(&ka)
    });
}

/// The list path for a session reference.
pub fn path(r: &str) -> String {
    format!("/v1/sessions/{}", encode(r))
}
