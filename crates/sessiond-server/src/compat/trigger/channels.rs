//! `/realtime/v1/sessions/{session}/{in|out}`: append, SSE in the batch format (v2), `HEAD`,
//! and the `records` drain. The streams are the native channels `in` and `out`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Serialize;
use serde_json::{json, Value};
use sessiond_core::channel::{ChannelName, Record};
use sessiond_core::limits::READ_LIMIT_MAX;
use sessiond_core::Timestamp;

use super::auth::Who;
use super::error::{TriggerError, TriggerResult, CLOSED_APPEND_MESSAGE, OUT_APPEND_MESSAGE};
use super::sessions::readable_session;
use crate::app::App;
use crate::extract::{body_bytes, query_pairs};
use crate::service::channels::Start;
use crate::stream::{Follow, Item};

/// One record per append, at most this large.
pub const APPEND_MAX_BYTES: usize = 1024 * 1024;
const TIMEOUT_DEFAULT_SECONDS: u64 = 60;
const TIMEOUT_MAX_SECONDS: u64 = 600;
/// How often an open stream sends `event: ping`.
pub const PING_EVERY: Duration = Duration::from_secs(15);

fn channel(io: &str) -> TriggerResult<ChannelName> {
    match io {
        "in" | "out" => Ok(ChannelName::parse(io)?),
        _ => Err(TriggerError::not_found()),
    }
}

/// A record as the clients read it: the envelope `{"data", "id"}` that appends through this
/// surface store as the record's data, or, for a record appended natively, its data wrapped
/// in one (with the record's id).
struct Envelope<'a> {
    record: &'a Record,
    /// The stored data, when it is already an envelope for this record.
    inner: Option<Value>,
}

impl<'a> Envelope<'a> {
    fn of(record: &'a Record) -> Self {
        let parsed: Option<Value> = serde_json::from_str(record.data.get()).ok();
        let inner = parsed.filter(|v| {
            v.as_object().is_some_and(|m| {
                m.len() == 2
                    && m.contains_key("data")
                    && m.get("id").and_then(Value::as_str) == Some(record.id.as_str())
            })
        });
        Envelope { record, inner }
    }

    /// The envelope as JSON text (the SSE record `body`).
    fn body(&self) -> String {
        match &self.inner {
            Some(_) => self.record.data.get().to_owned(),
            None => json!({ "data": self.data(), "id": self.record.id }).to_string(),
        }
    }

    fn data(&self) -> Value {
        match &self.inner {
            Some(v) => v.get("data").cloned().unwrap_or(Value::Null),
            None => serde_json::from_str(self.record.data.get()).unwrap_or(Value::Null),
        }
    }

    /// Native headers (an object) as the `[name, value]` pairs the clients read.
    fn headers(&self) -> Vec<(String, String)> {
        let headers: Value = serde_json::from_str(self.record.headers.get()).unwrap_or(Value::Null);
        headers
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `POST …/{io}/append`: one raw text record; `X-Part-Id` makes it idempotent.
#[utoipa::path(post, path = "/realtime/v1/sessions/{session}/{io}/append", tag = "trigger",
    params(
        ("session" = String, Path, description = "`session_…` or the externalId"),
        ("io" = String, Path, description = "`in` or `out`"),
        ("X-Part-Id" = Option<String>, Header, description = "Idempotency: a repeated part id is not appended again"),
    ),
    request_body(content = String, content_type = "text/plain", description = "Any text, at most 1 MiB"),
    responses(
        (status = 200, description = "`{\"ok\": true, \"seq\": N}`", body = Object),
        (status = 400, description = "`{\"ok\":false,\"error\":\"Cannot append to a closed session\"}`"),
        (status = 403, description = "`.out` with a public token: `{\"ok\":false,\"error\":\"Appending to the out channel requires secret key authentication\"}`"),
        (status = 404, description = "Unknown session"),
        (status = 413, description = "`{\"ok\": false, \"error\"}`: over 1 MiB"),
    ))]
pub async fn append(
    State(app): State<App>,
    who: Who,
    Path((session, io)): Path<(String, String)>,
    req: Request,
) -> TriggerResult<Json<Value>> {
    let channel = channel(&io)?;
    let r = super::sessions::session_ref(&session).ok_or_else(TriggerError::not_found)?;
    let account = who.account();
    let s = app.services.sessions.get(account, &r).await?;
    if !who.can_write(&s) {
        return Err(TriggerError::forbidden());
    }
    if !s.is_active(Timestamp::now()) {
        return Err(TriggerError::append(
            StatusCode::BAD_REQUEST,
            CLOSED_APPEND_MESSAGE,
        ));
    }
    if io == "out" && !who.is_secret() {
        return Err(TriggerError::append(
            StatusCode::FORBIDDEN,
            OUT_APPEND_MESSAGE,
        ));
    }
    let part_id = req
        .headers()
        .get("x-part-id")
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                TriggerError::append(StatusCode::BAD_REQUEST, "X-Part-Id is not valid text")
            })
        })
        .transpose()?;
    let body = body_bytes(req, &app)
        .await
        .map_err(TriggerError::from_append)?;
    let raw = String::from_utf8_lossy(&body).into_owned();
    let appended = app
        .services
        .trigger
        .append(account, s, &channel, raw, part_id)
        .await
        .map_err(TriggerError::from_append)?;
    Ok(Json(json!({ "ok": true, "seq": appended.seq })))
}

#[derive(Serialize)]
struct BatchRecord {
    seq_num: i64,
    timestamp: i64,
    headers: Vec<(String, String)>,
    body: String,
}

/// Where a read starts: `Last-Event-ID` (the digits before any `-` or `,`), else the
/// `X-Trigger-Stream-Start: latest` of newer clients, else the first record.
fn resume_after(headers: &HeaderMap) -> Option<i64> {
    let v = headers.get("last-event-id")?.to_str().ok()?;
    let digits: String = v
        .trim()
        .chars()
        .take_while(|c| *c != '-' && *c != ',')
        .collect();
    digits.parse::<i64>().ok().filter(|n| *n >= 0)
}

fn timeout(headers: &HeaderMap) -> TriggerResult<Duration> {
    let Some(v) = headers.get("timeout-seconds") else {
        return Ok(Duration::from_secs(TIMEOUT_DEFAULT_SECONDS));
    };
    let bad = |m: &str| TriggerError::text(StatusCode::BAD_REQUEST, m);
    let n: i64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| bad("Invalid timeout seconds"))?;
    if n < 1 {
        return Err(bad("Timeout seconds must be greater than 0"));
    }
    if n as u64 > TIMEOUT_MAX_SECONDS {
        return Err(bad("Timeout seconds must be less than 600"));
    }
    Ok(Duration::from_secs(n as u64))
}

/// The SSE events for one batch of records; `count`/`bytes` accumulate over the connection.
fn batch_event(records: &[Arc<Record>], count: &mut u64, bytes: &mut u64) -> Option<SseEvent> {
    let last = records.last()?;
    let rendered: Vec<BatchRecord> = records
        .iter()
        .map(|r| {
            let e = Envelope::of(r);
            BatchRecord {
                seq_num: r.seq,
                timestamp: r.created_at.millis(),
                headers: e.headers(),
                body: e.body(),
            }
        })
        .collect();
    *count += rendered.len() as u64;
    *bytes += rendered.iter().map(|r| r.body.len() as u64).sum::<u64>();
    let data = json!({ "records": rendered }).to_string();
    Some(
        SseEvent::default()
            .event("batch")
            .id(format!("{},{},{}", last.seq, count, bytes))
            .data(data),
    )
}

fn ping() -> SseEvent {
    SseEvent::default()
        .event("ping")
        .data(json!({ "timestamp": Timestamp::now().millis() }).to_string())
}

/// Records from the follower as batch events, a ping at once and then every [`PING_EVERY`];
/// ends when the follower does (idle timeout, deletion, shutdown).
fn events(
    items: impl Stream<Item = Item> + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct State {
        items: std::pin::Pin<Box<dyn Stream<Item = Item> + Send>>,
        tick: tokio::time::Interval,
        count: u64,
        bytes: u64,
    }
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = State {
        items: Box::pin(items),
        tick,
        count: 0,
        bytes: 0,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            tokio::select! {
                item = futures::StreamExt::next(&mut st.items) => match item {
                    Some(Item::Records(records)) => {
                        if let Some(ev) = batch_event(&records, &mut st.count, &mut st.bytes) {
                            return Some((Ok(ev), st));
                        }
                    }
                    // A closed session keeps its stream readable; a deleted one ends it.
                    Some(Item::Closed) => {}
                    Some(Item::Deleted) | None => return None,
                },
                _ = st.tick.tick() => return Some((Ok(ping()), st)),
            }
        }
    })
}

/// `GET …/{io}`: the stream as SSE batches.
#[utoipa::path(get, path = "/realtime/v1/sessions/{session}/{io}", tag = "trigger",
    params(
        ("session" = String, Path, description = "`session_…` or the externalId"),
        ("io" = String, Path, description = "`in` or `out`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this seq (digits before any `-` or `,`)"),
        ("Timeout-Seconds" = Option<u32>, Header, description = "1–600, default 60: the stream ends after this long without a record"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`, `X-Stream-Version: v2`: `event: batch` with `id: <seq>,<count>,<bytes>` and `data: {\"records\":[{\"seq_num\",\"timestamp\",\"headers\",\"body\"}]}`; `event: ping` with `data: {\"timestamp\"}`", content_type = "text/event-stream"),
        (status = 400, description = "Invalid Timeout-Seconds (plain text)"),
        (status = 403, description = "A public token without read on the session"),
        (status = 404, description = "Unknown session"),
    ))]
pub async fn read(
    State(app): State<App>,
    who: Who,
    Path((session, io)): Path<(String, String)>,
    headers: HeaderMap,
) -> TriggerResult<Response> {
    let channel = channel(&io)?;
    let idle = timeout(&headers)?;
    let s = readable_session(&app, &who, &session).await?;
    let channels = &app.services.channels;
    let after = match resume_after(&headers) {
        Some(n) => n,
        None => {
            let latest = headers
                .get("x-trigger-stream-start")
                .and_then(|v| v.to_str().ok())
                == Some("latest");
            if latest {
                channels.last_seq(s.id, &channel).await?
            } else {
                0
            }
        }
    };
    let items = Follow {
        store: channels.store().clone(),
        hub: channels.hub().clone(),
        shutdown: channels.shutdown_token().clone(),
        session: s.id,
        channel: channel.as_str().to_owned(),
        after,
        end_on_close: false,
        idle_timeout: Some(idle),
    }
    .stream();
    let mut resp = Sse::new(events(items)).into_response();
    let h = resp.headers_mut();
    h.insert("x-stream-version", HeaderValue::from_static("v2"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// `HEAD …/{io}`: 200 with the stream's last seq in `X-Last-Chunk-Index`.
#[utoipa::path(head, path = "/realtime/v1/sessions/{session}/{io}", tag = "trigger",
    params(
        ("session" = String, Path, description = "`session_…` or the externalId"),
        ("io" = String, Path, description = "`in` or `out`"),
    ),
    responses(
        (status = 200, description = "`X-Last-Chunk-Index`: the stream's last seq (0 when empty)"),
        (status = 404, description = "Unknown session"),
    ))]
pub async fn head(
    State(app): State<App>,
    who: Who,
    Path((session, io)): Path<(String, String)>,
) -> TriggerResult<Response> {
    let channel = channel(&io)?;
    let s = readable_session(&app, &who, &session).await?;
    let last = app.services.channels.last_seq(s.id, &channel).await?;
    let mut resp = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&last.to_string()) {
        resp.headers_mut().insert("x-last-chunk-index", v);
    }
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("*"),
    );
    Ok(resp)
}

/// `GET …/{io}/records?afterEventId=N`: the records after N, at most 1000, without waiting.
#[utoipa::path(get, path = "/realtime/v1/sessions/{session}/{io}/records", tag = "trigger",
    params(
        ("session" = String, Path, description = "`session_…` or the externalId"),
        ("io" = String, Path, description = "`in` or `out`"),
        ("afterEventId" = Option<String>, Query, description = "Digits: records with a greater seq (default: from the first)"),
    ),
    responses(
        (status = 200, description = "`{\"records\": [{\"data\", \"id\", \"seqNum\", \"headers\"?}]}`", body = Object),
        (status = 400, description = "afterEventId is not digits"),
        (status = 404, description = "Unknown session"),
    ))]
pub async fn records(
    State(app): State<App>,
    who: Who,
    Path((session, io)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> TriggerResult<Json<Value>> {
    let channel = channel(&io)?;
    let mut after = 0i64;
    for (k, v) in query_pairs(query.as_deref()) {
        if k == "afterEventId" {
            after = Some(&v)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| TriggerError::bad_request("afterEventId must be digits"))?;
        }
    }
    let s = readable_session(&app, &who, &session).await?;
    let page = app
        .services
        .channels
        .read(s.id, &channel, Start::After(after), READ_LIMIT_MAX, None)
        .await?;
    let records: Vec<Value> = page
        .records
        .iter()
        .map(|r| {
            let e = Envelope::of(r);
            let id = e
                .inner
                .as_ref()
                .and_then(|v| v.get("id"))
                .cloned()
                .unwrap_or_else(|| Value::String(r.id.clone()));
            let mut out = json!({ "data": e.data(), "id": id, "seqNum": r.seq });
            let headers = e.headers();
            if !headers.is_empty() {
                out["headers"] = json!(headers);
            }
            out
        })
        .collect();
    Ok(Json(json!({ "records": records })))
}
