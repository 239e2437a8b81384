//! Typed async HTTP client for the sessiond native API (`/v1`), used by the CLI and by the
//! integration tests.

use reqwest::header::{HeaderMap, CONTENT_TYPE, ETAG, IF_MATCH};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

pub use documents::{
    ByteProgress, Chunk, Document, DocumentWithChunks, SearchHit, UploadOptions, Uploaded,
};
pub use follow::{Follow, FollowEvent, FollowFrom, Reconnect};
pub use jobs::{ClaimedJob, CreateJob, Job};
pub use reqwest::Method;

mod documents;
mod follow;
mod jobs;
mod sse;

/// Everything a call can fail with. `Display` is a one-line message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-success status.
    #[error("{code} ({status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The request never got an HTTP answer (connection refused, timeout, …).
    #[error("{0} (is the sessiond server running there? check --url / SESSIOND_URL)")]
    Transport(String),
    /// The server answered, but not with what the API promises.
    #[error("unexpected response from the server: {0}")]
    Decode(String),
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
}

impl ClientError {
    /// The HTTP status for an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable error code for an API error (`session_not_found`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A session as the server renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub external_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub title: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Absent from list rows unless the list asked for `include=data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    pub status: String,
    pub closed_at: Option<String>,
    pub closed_reason: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    pub data: Vec<Session>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub name: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub name: Option<String>,
    pub prefix: String,
    /// The secret; only present in the answer to the create call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_at: String,
}

/// One record of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub seq: u64,
    pub id: String,
    pub data: Value,
    #[serde(default)]
    pub headers: Map<String, Value>,
    pub created_at: String,
}

/// Answer of a JSON read of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordPage {
    pub records: Vec<Record>,
    /// The channel's last seq (0 when never appended to).
    pub last_seq: u64,
    /// Pass as `after` to read on.
    pub next_after: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendedRecord {
    pub id: String,
    pub seq: u64,
    /// The channel already had a record with this id: nothing was appended, `seq` is the
    /// original one.
    pub duplicate: bool,
}

/// Answer of an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendResult {
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: Vec<AppendedRecord>,
}

impl AppendResult {
    /// How many records this call appended (duplicates excluded).
    pub fn appended(&self) -> usize {
        self.records.iter().filter(|r| !r.duplicate).count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInfo {
    pub name: String,
    pub last_seq: u64,
    pub record_count: u64,
    pub updated_at: String,
}

/// A session-scoped token (`POST /v1/sessions/{id}/tokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionToken {
    pub token: String,
    pub expires_at: String,
    /// e.g. `read:sessions:{id}`.
    pub scopes: Vec<String>,
}

/// Body of `POST /v1/sessions`; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// Filters and paging for `GET /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListSessions {
    pub statuses: Vec<String>,
    pub kind: Option<String>,
    /// Any-of.
    pub tags: Vec<String>,
    pub external_id: Option<String>,
    /// String equality on top-level metadata keys, sent as `metadata.<key>=<value>`.
    pub metadata: Vec<(String, String)>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub include_data: bool,
}

impl ListSessions {
    fn query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut push = |k: &str, v: &str| pairs.push((k.to_owned(), v.to_owned()));
        for s in &self.statuses {
            push("status", s);
        }
        if let Some(v) = &self.kind {
            push("type", v);
        }
        for t in &self.tags {
            push("tag", t);
        }
        if let Some(v) = &self.external_id {
            push("externalId", v);
        }
        for (k, v) in &self.metadata {
            push(&format!("metadata.{k}"), v);
        }
        if let Some(v) = &self.created_after {
            push("createdAfter", v);
        }
        if let Some(v) = &self.created_before {
            push("createdBefore", v);
        }
        if let Some(v) = &self.q {
            push("q", v);
        }
        if let Some(v) = self.limit {
            push("limit", &v.to_string());
        }
        if let Some(v) = &self.cursor {
            push("cursor", v);
        }
        if self.include_data {
            push("include", "data");
        }
        pairs
    }
}

/// A client for one server. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

impl Client {
    /// `base_url` is the server root (e.g. `http://127.0.0.1:7800`); a path prefix is kept, so a
    /// server behind a reverse proxy at `/sessiond` works too.
    pub fn new(base_url: &str, key: Option<String>) -> Result<Client> {
        let base = Url::parse(base_url)
            .map_err(|e| ClientError::InvalidUrl(format!("{base_url}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ClientError::InvalidUrl(format!(
                "{base_url}: expected an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        Ok(Client { http, base, key })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The base URL followed by `segments`, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Result<Url> {
        // URL parsers (this one and the WHATWG rules it follows) drop dot segments even when
        // percent-encoded, so such a reference could silently address another route.
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(ClientError::InvalidUrl(format!(
                "{bad:?} cannot be used as a path segment (id or externalId)"
            )));
        }
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl(self.base.to_string()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends the request and turns a non-success status into `ClientError::Api`.
    async fn send(&self, req: RequestBuilder, url: &Url) -> Result<Response> {
        let resp = req.send().await.map_err(|e| {
            // The URL leads our message; reqwest would repeat it.
            let e = e.without_url();
            ClientError::Transport(format!("cannot reach {url}: {}", error_chain(&e)))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(api_error(status, &body))
    }

    async fn json<T: DeserializeOwned>(resp: Response) -> Result<T> {
        let bytes = resp.bytes().await.map_err(|e| {
            ClientError::Transport(format!("reading the response: {}", error_chain(&e)))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Creates a session. The flag is true when the server returned an existing active session
    /// with the same `externalId` (idempotent create, `x-sessiond-cached: true`).
    pub async fn create_session(&self, body: &CreateSession) -> Result<(Session, bool)> {
        let url = self.url(&["v1", "sessions"])?;
        let resp = self
            .send(self.request(Method::POST, url.clone()).json(body), &url)
            .await?;
        let cached = is_cached(resp.headers());
        Ok((Self::json(resp).await?, cached))
    }

    /// `session` is the id or the externalId.
    pub async fn get_session(&self, session: &str) -> Result<Session> {
        let url = self.url(&["v1", "sessions", session])?;
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    /// The current version (from the ETag), or `None` when the session does not exist.
    pub async fn head_session(&self, session: &str) -> Result<Option<i64>> {
        let url = self.url(&["v1", "sessions", session])?;
        let resp = match self
            .send(self.request(Method::HEAD, url.clone()), &url)
            .await
        {
            Ok(resp) => resp,
            Err(ClientError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Decode("HEAD response without an ETag".into()))?;
        parse_etag(etag)
            .map(Some)
            .ok_or_else(|| ClientError::Decode(format!("ETag {etag} is not a version")))
    }

    /// Applies an RFC 7396 merge patch; with `if_match` the server refuses a stale version (412).
    pub async fn patch_session(
        &self,
        session: &str,
        patch: &Value,
        if_match: Option<i64>,
    ) -> Result<Session> {
        let url = self.url(&["v1", "sessions", session])?;
        let body = serde_json::to_vec(patch).map_err(|e| ClientError::Decode(e.to_string()))?;
        let mut req = self
            .request(Method::PATCH, url.clone())
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(body);
        if let Some(v) = if_match {
            req = req.header(IF_MATCH, format!("\"{v}\""));
        }
        Self::json(self.send(req, &url).await?).await
    }

    /// Closes the session (idempotent).
    pub async fn close_session(&self, session: &str, reason: Option<&str>) -> Result<Session> {
        let url = self.url(&["v1", "sessions", session, "close"])?;
        let body = match reason {
            Some(r) => serde_json::json!({ "reason": r }),
            None => serde_json::json!({}),
        };
        let req = self.request(Method::POST, url.clone()).json(&body);
        Self::json(self.send(req, &url).await?).await
    }

    pub async fn delete_session(&self, session: &str) -> Result<()> {
        let url = self.url(&["v1", "sessions", session])?;
        self.send(self.request(Method::DELETE, url.clone()), &url)
            .await?;
        Ok(())
    }

    /// One page of sessions; pass `next_cursor` back as `cursor` for the next one.
    pub async fn list_sessions(&self, params: &ListSessions) -> Result<SessionPage> {
        let mut url = self.url(&["v1", "sessions"])?;
        let pairs = params.query_pairs();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    /// Appends records to a channel (created on first append). Each element is one record
    /// object: `{"data": …, "id"?: …, "headers"?: …}`; at most 1,000 per call, all-or-nothing.
    pub async fn append_records(
        &self,
        session: &str,
        channel: &str,
        records: &[Value],
    ) -> Result<AppendResult> {
        let url = self.url(&["v1", "sessions", session, "channels", channel, "records"])?;
        let req = self
            .request(Method::POST, url.clone())
            .json(&serde_json::json!({ "records": records }));
        Self::json(self.send(req, &url).await?).await
    }

    /// Records with seq > `after`, at most `limit` (server default 100, max 1,000). With
    /// `wait_secs` the server holds the request (≤ 60 s) until at least one record exists.
    pub async fn read_records(
        &self,
        session: &str,
        channel: &str,
        after: u64,
        limit: Option<u32>,
        wait_secs: Option<u64>,
    ) -> Result<RecordPage> {
        self.read_page(session, channel, &after.to_string(), limit, wait_secs)
            .await
    }

    /// `after` is a seq or `latest`.
    async fn read_page(
        &self,
        session: &str,
        channel: &str,
        after: &str,
        limit: Option<u32>,
        wait_secs: Option<u64>,
    ) -> Result<RecordPage> {
        let mut url = self.url(&["v1", "sessions", session, "channels", channel, "records"])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("after", after);
            if let Some(n) = limit {
                q.append_pair("limit", &n.to_string());
            }
            if let Some(s) = wait_secs {
                q.append_pair("wait", &s.to_string());
            }
        }
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    /// The session's channels, by name.
    pub async fn list_channels(&self, session: &str) -> Result<Vec<ChannelInfo>> {
        let url = self.url(&["v1", "sessions", session, "channels"])?;
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    /// Mints a token for one session. `scopes` are `read` and/or `write` (empty: the server
    /// default, `read`); `ttl_seconds` defaults to 1 h on the server, at most 24 h.
    pub async fn mint_token(
        &self,
        session: &str,
        scopes: &[&str],
        ttl_seconds: Option<u64>,
    ) -> Result<SessionToken> {
        let url = self.url(&["v1", "sessions", session, "tokens"])?;
        let mut body = Map::new();
        if !scopes.is_empty() {
            body.insert("scopes".into(), serde_json::json!(scopes));
        }
        if let Some(ttl) = ttl_seconds {
            body.insert("ttlSeconds".into(), ttl.into());
        }
        let req = self
            .request(Method::POST, url.clone())
            .json(&Value::Object(body));
        Self::json(self.send(req, &url).await?).await
    }

    pub async fn create_account(&self, name: Option<&str>) -> Result<Account> {
        let url = self.url(&["v1", "accounts"])?;
        let req = self
            .request(Method::POST, url.clone())
            .json(&name_body(name));
        Self::json(self.send(req, &url).await?).await
    }

    /// Creates an API key for the account; the answer carries the secret, which is never
    /// shown again.
    pub async fn create_key(&self, account_id: &str, name: Option<&str>) -> Result<ApiKey> {
        let url = self.url(&["v1", "accounts", account_id, "keys"])?;
        let req = self
            .request(Method::POST, url.clone())
            .json(&name_body(name));
        Self::json(self.send(req, &url).await?).await
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<()> {
        let url = self.url(&["v1", "keys", key_id])?;
        self.send(self.request(Method::DELETE, url.clone()), &url)
            .await?;
        Ok(())
    }

    /// `GET /healthz`: succeeds when the process is up.
    pub async fn health(&self) -> Result<()> {
        let url = self.url(&["healthz"])?;
        self.send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Ok(())
    }

    /// Escape hatch for routes without a typed method. `path` (with an optional query) is
    /// appended to the base URL as given, so the caller encodes it. An empty answer is `null`.
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = self.join_raw(path)?;
        let mut req = self.request(method, url.clone());
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = self.send(req, &url).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let bytes = resp.bytes().await.map_err(|e| {
            ClientError::Transport(format!("reading the response: {}", error_chain(&e)))
        })?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn join_raw(&self, path: &str) -> Result<Url> {
        let mut base = self.base.clone();
        base.set_query(None);
        base.set_fragment(None);
        let joined = format!(
            "{}/{}",
            base.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        Url::parse(&joined).map_err(|e| ClientError::InvalidUrl(format!("{joined}: {e}")))
    }
}

fn name_body(name: Option<&str>) -> Value {
    match name {
        Some(n) => serde_json::json!({ "name": n }),
        None => serde_json::json!({}),
    }
}

fn is_cached(headers: &HeaderMap) -> bool {
    headers
        .get("x-sessiond-cached")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `"<n>"` (or a weak `W/"<n>"`) → n.
fn parse_etag(etag: &str) -> Option<i64> {
    let tag = etag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// Builds `ClientError::Api` from an error answer: the `{"error":{"code","message"}}` body when it
/// has that shape, else the status reason as code and the raw text as message.
fn api_error(status: StatusCode, body: &str) -> ClientError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    if let Ok(Envelope { error }) = serde_json::from_str::<Envelope>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        };
    }
    let reason = status.canonical_reason().unwrap_or("http error");
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let text = body.trim();
    let message = if text.is_empty() {
        reason.to_owned()
    } else {
        // Keep the message one line and bounded (an HTML error page from a proxy, say).
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match line.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &line[..i]),
            None => line,
        }
    };
    ClientError::Api {
        status: status.as_u16(),
        code,
        message,
    }
}

/// reqwest's top-level message is vague ("error sending request"); the cause is in the sources.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(base, None).unwrap()
    }

    #[test]
    fn parses_the_error_envelope() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":"session_not_found","message":"Session x not found"}}"#,
        );
        assert_eq!(
            e,
            ClientError::Api {
                status: 404,
                code: "session_not_found".into(),
                message: "Session x not found".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "session_not_found (404): Session x not found"
        );
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), Some("session_not_found"));
    }

    #[test]
    fn falls_back_to_raw_text() {
        let e = api_error(StatusCode::BAD_GATEWAY, "upstream\n  down\n");
        assert_eq!(e.to_string(), "bad_gateway (502): upstream down");
        let e = api_error(StatusCode::SERVICE_UNAVAILABLE, "");
        assert_eq!(
            e.to_string(),
            "service_unavailable (503): Service Unavailable"
        );
        let e = api_error(StatusCode::BAD_REQUEST, r#"{"error":"plain string"}"#);
        assert_eq!(e.code(), Some("bad_request"));
        assert_eq!(
            e.to_string(),
            r#"bad_request (400): {"error":"plain string"}"#
        );
        let long = "x".repeat(1000);
        let ClientError::Api { message, .. } = api_error(StatusCode::INTERNAL_SERVER_ERROR, &long)
        else {
            panic!("not an api error")
        };
        assert_eq!(message.chars().count(), 301);
    }

    #[test]
    fn transport_error_suggests_checking_the_server() {
        let e = ClientError::Transport("cannot reach http://127.0.0.1:1/healthz: refused".into());
        let s = e.to_string();
        assert!(s.contains("http://127.0.0.1:1/healthz"), "{s}");
        assert!(s.contains("--url"), "{s}");
    }

    #[test]
    fn rejects_bad_base_urls() {
        assert!(matches!(
            Client::new("not a url", None),
            Err(ClientError::InvalidUrl(_))
        ));
        assert!(matches!(
            Client::new("ftp://x", None),
            Err(ClientError::InvalidUrl(_))
        ));
        assert!(matches!(
            Client::new("mailto:a@b", None),
            Err(ClientError::InvalidUrl(_))
        ));
    }

    #[test]
    fn encodes_path_segments() {
        let c = client("http://127.0.0.1:7800");
        let u = c.url(&["v1", "sessions", "my ext/id?#%"]).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:7800/v1/sessions/my%20ext%2Fid%3F%23%25"
        );
        // A base path prefix (reverse proxy) is kept, with or without a trailing slash.
        for base in ["http://h/prefix", "http://h/prefix/"] {
            let u = client(base).url(&["v1", "sessions"]).unwrap();
            assert_eq!(u.as_str(), "http://h/prefix/v1/sessions");
        }
        for bad in ["", ".", ".."] {
            assert!(matches!(
                c.url(&["v1", "sessions", bad]),
                Err(ClientError::InvalidUrl(_))
            ));
        }
        let u = client("http://h/prefix/")
            .join_raw("/v1/jobs/claim?x=1")
            .unwrap();
        assert_eq!(u.as_str(), "http://h/prefix/v1/jobs/claim?x=1");
    }

    #[test]
    fn builds_the_list_query() {
        let c = client("http://h");
        let params = ListSessions {
            statuses: vec!["active".into(), "closed".into()],
            kind: Some("agent".into()),
            tags: vec!["a".into(), "b c".into()],
            external_id: Some("e&1".into()),
            metadata: vec![("team".into(), "x=y".into())],
            created_after: Some("2024-01-01T00:00:00Z".into()),
            created_before: None,
            q: Some("hello".into()),
            limit: Some(2),
            cursor: Some("abc".into()),
            include_data: true,
        };
        let mut url = c.url(&["v1", "sessions"]).unwrap();
        url.query_pairs_mut().extend_pairs(params.query_pairs());
        assert_eq!(
            url.query(),
            Some(
                "status=active&status=closed&type=agent&tag=a&tag=b+c&externalId=e%261\
                 &metadata.team=x%3Dy&createdAfter=2024-01-01T00%3A00%3A00Z&q=hello&limit=2\
                 &cursor=abc&include=data"
            )
        );
        assert!(ListSessions::default().query_pairs().is_empty());
    }

    #[test]
    fn parses_etags() {
        assert_eq!(parse_etag("\"3\""), Some(3));
        assert_eq!(parse_etag("W/\"12\""), Some(12));
        assert_eq!(parse_etag("3"), None);
        assert_eq!(parse_etag("\"x\""), None);
    }

    #[test]
    fn session_wire_shape() {
        let row = serde_json::json!({
            "id": "1b4e", "externalId": null, "type": "agent", "title": null, "tags": ["a"],
            "metadata": {}, "status": "active", "closedAt": null, "closedReason": null,
            "expiresAt": null, "createdAt": "2024-01-01T00:00:00Z",
            "updatedAt": "2024-01-01T00:00:00Z", "version": 1
        });
        let s: Session = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(s.kind.as_deref(), Some("agent"));
        assert_eq!(s.data, None);
        // A list row without data renders back without data.
        assert_eq!(serde_json::to_value(&s).unwrap(), row);

        let body = CreateSession {
            kind: Some("agent".into()),
            ttl_seconds: Some(60),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"type": "agent", "ttlSeconds": 60})
        );
    }
}
