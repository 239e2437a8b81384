//! `/v1/sessions`: create, get, head, patch, close, delete, list.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond_core::cursor::Cursor;
use sessiond_core::ids::SessionRef;
use sessiond_core::limits::*;
use sessiond_core::session::{CreateSessionInput, Session, SessionFilter, SessionStatus};
use sessiond_core::{Error, Timestamp};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::App;
use crate::auth::{Access, Caller};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{bad_query, if_match, query_pairs, ApiJson, OptionalJson};

/// A session as the native API renders it. Every nullable field is present.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: Uuid,
    pub external_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Omitted from list rows unless `include=data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
    pub status: StatusView,
    #[schema(format = DateTime)]
    pub closed_at: Option<String>,
    pub closed_reason: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Starts at 1; +1 on every change to the session (not on channel appends).
    pub version: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusView {
    Active,
    Closed,
    Expired,
}

impl From<SessionStatus> for StatusView {
    fn from(s: SessionStatus) -> Self {
        match s {
            SessionStatus::Active => StatusView::Active,
            SessionStatus::Closed => StatusView::Closed,
            SessionStatus::Expired => StatusView::Expired,
        }
    }
}

impl SessionView {
    pub fn new(s: Session, with_data: bool, now: Timestamp) -> Self {
        let status = s.status(now).into();
        SessionView {
            id: *s.id.as_uuid(),
            external_id: s.external_id,
            kind: s.kind,
            title: s.title,
            tags: s.tags,
            metadata: s.metadata,
            data: with_data.then_some(s.data),
            status,
            closed_at: s.closed_at.map(|t| t.to_rfc3339()),
            closed_reason: s.closed_reason,
            expires_at: s.expires_at.map(|t| t.to_rfc3339()),
            created_at: s.created_at.to_rfc3339(),
            updated_at: s.updated_at.to_rfc3339(),
            version: s.version,
        }
    }
}

fn etag(version: i64) -> HeaderValue {
    // A formatted integer is always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// 200/201 with the session body and its ETag.
fn session_response(status: StatusCode, s: Session) -> Response {
    let tag = etag(s.version);
    let mut resp = (status, Json(SessionView::new(s, true, Timestamp::now()))).into_response();
    resp.headers_mut().insert(header::ETAG, tag);
    resp
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionBody {
    /// A caller-chosen UUID; the server picks a v4 UUID when absent.
    pub id: Option<Uuid>,
    /// 1–256 characters, not a UUID. Creating again with the same externalId while that session
    /// is active returns it (200, `x-sessiond-cached: true`).
    pub external_id: Option<String>,
    /// At most 64 characters.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// At most 256 characters.
    pub title: Option<String>,
    /// At most 32 tags of 1–128 characters; repeated tags are kept once.
    pub tags: Option<Vec<String>>,
    /// A JSON object of at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// A JSON object: the session's state.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// When the session expires (RFC 3339, in the future). Exclusive with `ttlSeconds`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// Seconds until the session expires (1 to 315,360,000).
    pub ttl_seconds: Option<i64>,
    /// Create the session's first chat in the same transaction.
    pub chat: Option<crate::api::chats::CreateChatBody>,
}

/// Create a session.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body = CreateSessionBody,
    responses(
        (status = 201, description = "Created", body = SessionView,
         headers(("Location" = String, description = "/v1/sessions/{id}"), ("ETag" = String))),
        (status = 200, description = "An active session with this externalId exists; it is returned unchanged",
         body = SessionView, headers(("x-sessiond-cached" = String, description = "true"))),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 409, description = "`session_exists` (same id) or `session_closed` (the externalId's session is closed or expired)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_field`", body = ErrorBody),
    ))]
pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    OptionalJson(body): OptionalJson<CreateSessionBody>,
) -> ApiResult<Response> {
    let account = caller.account()?;
    let input = CreateSessionInput {
        id: body.id,
        external_id: body.external_id,
        kind: body.kind,
        title: body.title,
        tags: body.tags,
        metadata: body.metadata,
        data: body.data,
        expires_at: body.expires_at,
        ttl_seconds: body.ttl_seconds,
    };
    let created = app
        .services
        .sessions
        .create_with_chat(account, input, body.chat.map(Into::into))
        .await?;
    let id = created.session.id;
    if created.cached {
        let mut resp = session_response(StatusCode::OK, created.session);
        resp.headers_mut()
            .insert("x-sessiond-cached", HeaderValue::from_static("true"));
        return Ok(resp);
    }
    let mut resp = session_response(StatusCode::CREATED, created.session);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/sessions/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Get a session (HEAD answers the same headers without a body).
#[utoipa::path(get, path = "/v1/sessions/{session}", tag = "sessions",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    responses(
        (status = 200, description = "The session", body = SessionView, headers(("ETag" = String, description = "\"<version>\""))),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ))]
pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
) -> ApiResult<Response> {
    let s = crate::api::channels::authorized_session(&app, &caller, &session, Access::Read).await?;
    Ok(session_response(StatusCode::OK, s))
}

/// Apply an RFC 7396 merge patch to `{title, type, tags, metadata, data, expiresAt}`.
#[utoipa::path(patch, path = "/v1/sessions/{session}", tag = "sessions",
    params(
        ("session" = String, Path, description = "The session's UUID, or its externalId"),
        ("If-Match" = Option<String>, Header, description = "\"<version>\" or *: 412 when the session's version differs"),
        ("Prefer" = Option<String>, Header, description = "return=minimal answers 204 without a body"),
    ),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "Nested objects merge, null deletes a key, arrays replace. id and externalId are read-only."),
    responses(
        (status = 200, description = "The patched session", body = SessionView),
        (status = 204, description = "Patched (Prefer: return=minimal)"),
        (status = 400, description = "`invalid_json`, `invalid_header`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`", body = ErrorBody),
        (status = 412, description = "`version_mismatch`", body = ErrorBody),
        (status = 422, description = "`read_only_field`, `unknown_field`, `invalid_field`, `invalid_body`", body = ErrorBody),
    ))]
pub async fn patch(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> ApiResult<Response> {
    let account = caller.account()?;
    let condition = if_match(&headers)?;
    let r = SessionRef::parse(&session);
    let s = app
        .services
        .sessions
        .patch(account, &r, patch, condition)
        .await?;
    if prefers_minimal(&headers) {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        resp.headers_mut().insert(header::ETAG, etag(s.version));
        return Ok(resp);
    }
    Ok(session_response(StatusCode::OK, s))
}

fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// At most 256 characters.
    pub reason: Option<String>,
}

/// Close a session: terminal and idempotent.
#[utoipa::path(post, path = "/v1/sessions/{session}/close", tag = "sessions",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    request_body = CloseBody,
    responses(
        (status = 200, description = "The closed session (unchanged when it was closed already)", body = SessionView),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
pub async fn close(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
    OptionalJson(body): OptionalJson<CloseBody>,
) -> ApiResult<Response> {
    let account = caller.account()?;
    let r = SessionRef::parse(&session);
    let s = app
        .services
        .sessions
        .close(account, &r, body.reason)
        .await?;
    Ok(session_response(StatusCode::OK, s))
}

/// Delete a session and everything under it.
#[utoipa::path(delete, path = "/v1/sessions/{session}", tag = "sessions",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ))]
pub async fn delete(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
) -> ApiResult<StatusCode> {
    let account = caller.account()?;
    let r = SessionRef::parse(&session);
    app.services.sessions.delete(account, &r).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query parameters of the list (documentation only: the handler parses the raw query so that
/// keys may repeat and `metadata.<key>` may be anything).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// `active`, `closed`, `expired`; repeatable or a comma list.
    pub status: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Repeatable (`tag=a&tag=b`); a session matches when it has any of the tags.
    pub tag: Option<String>,
    pub external_id: Option<String>,
    /// RFC 3339; sessions created strictly after.
    pub created_after: Option<String>,
    /// RFC 3339; sessions created strictly before.
    pub created_before: Option<String>,
    /// Substring of the title (ASCII case-insensitive).
    pub q: Option<String>,
    /// 1–100, default 20.
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// `data` to include each session's data.
    pub include: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    pub data: Vec<SessionView>,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

struct ListRequest {
    filter: SessionFilter,
    cursor: Option<Cursor>,
    limit: usize,
    include_data: bool,
}

fn parse_list_query(query: Option<&str>) -> Result<ListRequest, Error> {
    let mut req = ListRequest {
        filter: SessionFilter::default(),
        cursor: None,
        limit: LIST_LIMIT_DEFAULT,
        include_data: false,
    };
    let bad_time =
        |k: &str, v: &str| bad_query(format!("{k} must be an RFC 3339 date-time, got {v:?}"));
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "status" => {
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let s = SessionStatus::parse(part).ok_or_else(|| {
                        bad_query(format!(
                            "status must be active, closed or expired, got {part:?}"
                        ))
                    })?;
                    if !req.filter.statuses.contains(&s) {
                        req.filter.statuses.push(s);
                    }
                }
            }
            "type" => req.filter.kind = Some(value),
            // Repeatable, never split: a tag may contain a comma.
            "tag" => req.filter.tags_any.push(value),
            "externalId" => req.filter.external_id = Some(value),
            "createdAfter" => {
                req.filter.created_after =
                    Some(Timestamp::parse_rfc3339(&value).ok_or_else(|| bad_time(&key, &value))?)
            }
            "createdBefore" => {
                req.filter.created_before = Some(
                    Timestamp::parse_rfc3339_ceil(&value).ok_or_else(|| bad_time(&key, &value))?,
                )
            }
            "q" => {
                if value.chars().count() > QUERY_MAX_CHARS {
                    return Err(bad_query(format!(
                        "q must be at most {QUERY_MAX_CHARS} characters"
                    )));
                }
                req.filter.title_contains = Some(value);
            }
            "limit" => {
                req.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        bad_query(format!(
                            "limit must be an integer from 1 to {LIST_LIMIT_MAX}, got {value:?}"
                        ))
                    })?;
            }
            "cursor" => req.cursor = Some(Cursor::decode(&value)?),
            // A credential, consumed by authentication.
            "token" => {}
            "include" => {
                for part in value.split(',').map(str::trim) {
                    match part {
                        "data" => req.include_data = true,
                        other => {
                            return Err(bad_query(format!(
                                "include accepts only data, got {other:?}"
                            )))
                        }
                    }
                }
            }
            k => match k.strip_prefix("metadata.") {
                Some(mk) if !mk.is_empty() => req.filter.metadata_eq.push((mk.to_owned(), value)),
                _ => {
                    return Err(bad_query(format!(
                        "unknown query parameter {k:?}; filters are status, type, tag, externalId, \
                         metadata.<key>, createdAfter, createdBefore, q, plus limit, cursor, include"
                    )))
                }
            },
        }
    }
    let f = &req.filter;
    if f.tags_any.len() > FILTER_VALUES_MAX || f.metadata_eq.len() > FILTER_VALUES_MAX {
        return Err(bad_query(format!(
            "at most {FILTER_VALUES_MAX} tag and {FILTER_VALUES_MAX} metadata filters per request"
        )));
    }
    Ok(req)
}

/// List the account's sessions, newest first, with keyset pagination.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    params(ListParams,
        ("metadata.<key>" = Option<String>, Query, description = "String equality on a top-level metadata key; repeatable with different keys")),
    responses(
        (status = 200, description = "One page", body = SessionPage),
        (status = 400, description = "`invalid_query`, `invalid_cursor`", body = ErrorBody),
    ))]
pub async fn list(
    State(app): State<App>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<SessionPage>> {
    let account = caller.account()?;
    let req = parse_list_query(query.as_deref())?;
    let page = app
        .services
        .sessions
        .list(account, req.filter, req.cursor, req.limit, req.include_data)
        .await?;
    let now = Timestamp::now();
    Ok(Json(SessionPage {
        data: page
            .sessions
            .into_iter()
            .map(|s| SessionView::new(s, req.include_data, now))
            .collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}
