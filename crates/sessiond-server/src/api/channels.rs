//! `/v1/sessions/{session}/channels`: append, read (JSON, long-poll, SSE), list.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sessiond_core::channel::{ChannelInfo, ChannelName, Record, RecordInput};
use sessiond_core::error::codes;
use sessiond_core::ids::SessionRef;
use sessiond_core::limits::*;
use sessiond_core::session::Session;
use sessiond_core::Error;
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::{Access, Caller, Principal};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{bad_query, query_pairs, ApiJson};
use crate::service::channels::Start;
use crate::stream::{push_sse_event, sse_response, Follow, Item};

/// The `: ping` comment interval of native SSE streams.
const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// A JSON value that distinguishes `null` (present) from a missing key.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordBody {
    /// Producer-chosen id (1–256 characters): a record whose id the channel already holds is not
    /// appended again. Generated when absent (a UUIDv7).
    pub id: Option<String>,
    /// Any JSON value (required; at most 1 MiB with its headers).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object)]
    pub data: Option<Box<RawValue>>,
    /// A JSON object.
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// 1–1,000 records, at most 8 MiB in all.
    pub records: Vec<RecordBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppendedRecordView {
    pub id: String,
    pub seq: i64,
    /// Already in the channel: not appended again; `seq` is the original one.
    pub duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppendView {
    pub first_seq: i64,
    pub last_seq: i64,
    pub records: Vec<AppendedRecordView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordView<'a> {
    pub seq: i64,
    pub id: &'a str,
    #[schema(value_type = Object)]
    pub data: &'a RawValue,
    #[schema(value_type = Object)]
    pub headers: &'a RawValue,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl<'a> From<&'a Record> for RecordView<'a> {
    fn from(r: &'a Record) -> Self {
        RecordView {
            seq: r.seq,
            id: &r.id,
            data: &r.data,
            headers: &r.headers,
            created_at: r.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordPageView<'a> {
    pub records: Vec<RecordView<'a>>,
    /// The channel's last seq (0 when never appended to).
    pub last_seq: i64,
    /// Pass as `after` to continue.
    pub next_after: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub name: String,
    pub last_seq: i64,
    pub record_count: i64,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<ChannelInfo> for ChannelView {
    fn from(c: ChannelInfo) -> Self {
        ChannelView {
            name: c.name,
            last_seq: c.last_seq,
            record_count: c.record_count,
            updated_at: c.updated_at.to_rfc3339(),
        }
    }
}

/// Loads a session for a route a token may use, checking the token's scope.
pub async fn authorized_session(
    app: &App,
    caller: &Principal,
    session: &str,
    access: Access,
) -> Result<Session, Error> {
    let account = caller.session_account()?;
    let s = app
        .services
        .sessions
        .get(account, &SessionRef::parse(session))
        .await?;
    caller.authorize(&s, access)?;
    Ok(s)
}

/// Append records to a channel (created on first append).
#[utoipa::path(post, path = "/v1/sessions/{session}/channels/{name}/records", tag = "channels",
    params(
        ("session" = String, Path, description = "The session's UUID, or its externalId"),
        ("name" = String, Path, description = "`[a-z0-9][a-z0-9._-]{0,63}`; `events` is read-only"),
    ),
    request_body = AppendBody,
    responses(
        (status = 201, description = "At least one record appended", body = AppendView),
        (status = 200, description = "Every record was a duplicate: nothing appended", body = AppendView),
        (status = 400, description = "`invalid_json`, `invalid_channel`", body = ErrorBody),
        (status = 403, description = "`channel_read_only` (events), `forbidden` (token scope)", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`", body = ErrorBody),
        (status = 413, description = "`record_too_large`, `payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `invalid_body`", body = ErrorBody),
    ))]
pub async fn append(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<AppendBody>,
) -> ApiResult<Response> {
    let channel = ChannelName::parse(&name)?;
    let account = caller.session_account()?;
    let r = if caller.is_token() {
        // A token may append to `in` only, of the session it names.
        if channel.as_str() != sessiond_core::channel::IN {
            return Err(
                Error::forbidden("a session token may append to the in channel only").into(),
            );
        }
        let s = authorized_session(&app, &caller, &session, Access::AppendIn).await?;
        SessionRef::Id(s.id)
    } else {
        SessionRef::parse(&session)
    };
    let records = body
        .records
        .into_iter()
        .map(|r| RecordInput {
            id: r.id,
            data: r.data.map(|d| d.get().to_owned()),
            headers: r.headers,
        })
        .collect();
    let appended = app
        .services
        .channels
        .append(account, &r, &channel, records)
        .await?;
    let status = if appended.results.iter().any(|r| !r.duplicate) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let first_seq = appended.results.iter().map(|r| r.seq).min().unwrap_or(0);
    let last_seq = appended.results.iter().map(|r| r.seq).max().unwrap_or(0);
    let view = AppendView {
        first_seq,
        last_seq,
        records: appended
            .results
            .into_iter()
            .map(|r| AppendedRecordView {
                id: r.id,
                seq: r.seq,
                duplicate: r.duplicate,
            })
            .collect(),
    };
    Ok((status, Json(view)).into_response())
}

struct ReadParams {
    start: Start,
    limit: usize,
    wait: Option<Duration>,
    sse: bool,
}

fn parse_seq(what: &str, v: &str) -> Result<Start, Error> {
    if v == "latest" {
        return Ok(Start::Latest);
    }
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Start::After)
        .ok_or_else(|| {
            bad_query(format!(
                "{what} must be a non-negative integer (a seq) or latest, got {v:?}"
            ))
        })
}

fn parse_read(query: Option<&str>, headers: &HeaderMap) -> Result<ReadParams, Error> {
    let mut p = ReadParams {
        start: Start::After(0),
        limit: READ_LIMIT_DEFAULT,
        wait: None,
        sse: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream")),
    };
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "after" => p.start = parse_seq("after", &v)?,
            "limit" => {
                p.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=READ_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        bad_query(format!(
                            "limit must be an integer from 1 to {READ_LIMIT_MAX}, got {v:?}"
                        ))
                    })?
            }
            "wait" => {
                let secs = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= WAIT_MAX_SECONDS)
                    .ok_or_else(|| {
                        bad_query(format!(
                            "wait must be an integer number of seconds from 0 to {WAIT_MAX_SECONDS}, got {v:?}"
                        ))
                    })?;
                p.wait = Some(Duration::from_secs(secs));
            }
            "stream" => match v.as_str() {
                "sse" => p.sse = true,
                other => return Err(bad_query(format!("stream accepts only sse, got {other:?}"))),
            },
            "token" => {}
            other => {
                return Err(bad_query(format!(
                    "unknown query parameter {other:?}; use after, limit, wait, stream, token"
                )))
            }
        }
    }
    if p.sse {
        if let Some(v) = headers.get("last-event-id") {
            let v = v.to_str().unwrap_or("");
            p.start = parse_seq("Last-Event-ID", v.trim()).map_err(|_| {
                Error::bad_request(
                    codes::INVALID_HEADER,
                    format!("Last-Event-ID must be a record seq (an integer), got {v:?}"),
                )
            })?;
        }
    }
    Ok(p)
}

/// One follower item as SSE frames: every record of a batch in one chunk, so a burst of records
/// costs one write.
fn sse_frames(item: Item) -> bytes::Bytes {
    let mut out = Vec::new();
    match item {
        Item::Records(records) => {
            for r in &records {
                let data = serde_json::to_vec(&RecordView::from(r.as_ref())).unwrap_or_default();
                push_sse_event(&mut out, Some(r.seq), "record", &data);
            }
        }
        Item::Closed => push_sse_event(&mut out, None, "closed", b"{}"),
        Item::Deleted => push_sse_event(&mut out, None, "deleted", b"{}"),
    }
    bytes::Bytes::from(out)
}

/// Read records: JSON (optionally long-polling with `wait`), or a live SSE stream.
#[utoipa::path(get, path = "/v1/sessions/{session}/channels/{name}/records", tag = "channels",
    params(
        ("session" = String, Path, description = "The session's UUID, or its externalId"),
        ("name" = String, Path),
        ("after" = Option<String>, Query, description = "Records with seq > after (default 0); `latest` for only new ones"),
        ("limit" = Option<u32>, Query, description = "1–1000, default 100 (JSON reads)"),
        ("wait" = Option<u32>, Query, description = "Long-poll: hold up to this many seconds (≤ 60) until a record exists"),
        ("stream" = Option<String>, Query, description = "`sse` for an event stream (same as Accept: text/event-stream)"),
        ("token" = Option<String>, Query, description = "A session token, for clients that cannot set headers (GET only)"),
        ("Last-Event-ID" = Option<String>, Header, description = "SSE resume: the last seq received"),
    ),
    responses(
        (status = 200, description = "Records (JSON), or an event stream: each record is `id: <seq>`, `event: record`, `data: <record>`; \
            `: ping` every 15 s; `event: closed` when the session closes (after every record), `event: deleted` when it is deleted",
         content(
            (RecordPageView = "application/json"),
            (String = "text/event-stream"),
         )),
        (status = 400, description = "`invalid_query`, `invalid_header`, `invalid_channel`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `token_expired`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`forbidden`: token for another session", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ))]
pub async fn read(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let channel = ChannelName::parse(&name)?;
    let params = parse_read(query.as_deref(), &headers)?;
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let channels = &app.services.channels;
    if params.sse {
        let after = match params.start {
            Start::After(n) => n,
            Start::Latest => channels.last_seq(s.id, &channel).await?,
        };
        let items = Follow {
            store: channels.store().clone(),
            hub: channels.hub().clone(),
            shutdown: channels.shutdown_token().clone(),
            session: s.id,
            channel: channel.as_str().to_owned(),
            after,
            end_on_close: true,
            idle_timeout: None,
        }
        .stream();
        let frames = items.map(sse_frames);
        let resp = sse_response(frames, SSE_HEARTBEAT);
        return Ok(resp);
    }
    let page = channels
        .read(s.id, &channel, params.start, params.limit, params.wait)
        .await?;
    let next_after = page
        .records
        .last()
        .map(|r| r.seq)
        .unwrap_or(match params.start {
            Start::After(n) => n,
            Start::Latest => page.last_seq,
        });
    let view = RecordPageView {
        records: page.records.iter().map(RecordView::from).collect(),
        last_seq: page.last_seq,
        next_after,
    };
    Ok(Json(view).into_response())
}

/// The session's channels.
#[utoipa::path(get, path = "/v1/sessions/{session}/channels", tag = "channels",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    responses(
        (status = 200, description = "Channels by name", body = [ChannelView]),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ))]
pub async fn list(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
) -> ApiResult<Json<Vec<ChannelView>>> {
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let channels = app.services.channels.list(s.id).await?;
    Ok(Json(channels.into_iter().map(ChannelView::from).collect()))
}
