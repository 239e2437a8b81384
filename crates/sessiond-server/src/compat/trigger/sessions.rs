//! `/api/v1/sessions`: start, list, retrieve, update, close; and `/api/v1/auth/jwt/claims`.

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sessiond_core::cursor::Cursor;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::{Session, SessionFilter, SessionStatus};
use sessiond_core::{Error, SessionId, Timestamp};
use uuid::Uuid;

use super::auth::{mint_session_token, Who};
use super::error::{TriggerError, TriggerResult};
use crate::app::App;
use crate::extract::{body_bytes, query_pairs};
use crate::service::trigger::{
    friendly_id, ListQuery, PageAt, StartInput, TriggerData, UpdateInput,
};

/// The start body is small: metadata is the only thing that grows.
pub const START_BODY_MAX_BYTES: usize = 32 * 1024;
const TAGS_MAX: usize = 10;
const TAG_MAX_CHARS: usize = 128;
const PAGE_SIZE_DEFAULT: usize = 20;
const PAGE_SIZE_MAX: usize = 100;
const MACHINES: &[&str] = &[
    "micro",
    "small-1x",
    "small-2x",
    "medium-1x",
    "medium-2x",
    "large-1x",
    "large-2x",
];

/// A session as this surface renders it. Every nullable field is present.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionObject {
    pub id: String,
    pub external_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub task_identifier: String,
    /// Omitted on list rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_config: Option<Value>,
    pub current_run_id: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Option<Map<String, Value>>,
    pub closed_at: Option<String>,
    pub closed_reason: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl SessionObject {
    pub fn new(s: Session, with_config: bool) -> Self {
        let t = TriggerData::of(&s);
        let task_identifier = t.task_identifier().unwrap_or_default().to_owned();
        let current_run_id = t.current_run_id().map(str::to_owned);
        let trigger_config = with_config.then(|| t.trigger_config().cloned()).flatten();
        SessionObject {
            id: friendly_id(&s),
            external_id: s.external_id,
            kind: s.kind.unwrap_or_default(),
            task_identifier,
            trigger_config,
            current_run_id,
            tags: s.tags,
            metadata: (!s.metadata.is_empty()).then_some(s.metadata),
            closed_at: s.closed_at.map(|t| t.to_rfc3339()),
            closed_reason: s.closed_reason,
            expires_at: s.expires_at.map(|t| t.to_rfc3339()),
            created_at: s.created_at.to_rfc3339(),
            updated_at: s.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSession {
    #[serde(flatten)]
    pub session: SessionObject,
    pub run_id: String,
    pub public_access_token: String,
    pub is_cached: bool,
}

/// `{session}` in a path: a friendly id (`session_<uuid>`) or else an externalId.
pub fn session_ref(segment: &str) -> Option<SessionRef> {
    match segment.strip_prefix("session_") {
        Some(id) => Uuid::parse_str(id)
            .ok()
            .map(|u| SessionRef::Id(SessionId(u))),
        None if segment.is_empty() => None,
        None => Some(SessionRef::External(segment.to_owned())),
    }
}

/// Loads the session a path names, for a caller allowed to read it.
pub async fn readable_session(app: &App, who: &Who, segment: &str) -> TriggerResult<Session> {
    let r = session_ref(segment).ok_or_else(TriggerError::not_found)?;
    let s = app.services.sessions.get(who.account(), &r).await?;
    if !who.can_read(&s) {
        return Err(TriggerError::forbidden());
    }
    Ok(s)
}

async fn json_body(app: &App, req: Request) -> TriggerResult<Option<Value>> {
    let bytes = body_bytes(req, app).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| TriggerError::bad_request("Invalid JSON"))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_field(message)
}

fn opt_string(m: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{key} must be a string"))),
    }
}

fn bounded(key: &str, s: String, min: usize, max: usize) -> Result<String, Error> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(invalid(format!("{key} must be {min} to {max} characters")));
    }
    Ok(s)
}

fn external_id(key: &str, s: String) -> Result<String, Error> {
    let s = bounded(key, s.trim().to_owned(), 1, 256)?;
    if s.starts_with("session_") {
        return Err(invalid(format!(
            "{key} cannot start with 'session_' (reserved prefix for internal friendlyIds)"
        )));
    }
    Ok(s)
}

fn tags(key: &str, v: &Value) -> Result<Vec<String>, Error> {
    let items = v
        .as_array()
        .ok_or_else(|| invalid(format!("{key} must be an array of strings")))?;
    if items.len() > TAGS_MAX {
        return Err(invalid(format!("{key} holds at most {TAGS_MAX} tags")));
    }
    items
        .iter()
        .map(|t| match t {
            Value::String(s) if s.chars().count() <= TAG_MAX_CHARS => Ok(s.clone()),
            _ => Err(invalid(format!(
                "{key} must hold strings of at most {TAG_MAX_CHARS} characters"
            ))),
        })
        .collect()
}

fn int_in(m: &Map<String, Value>, key: &str, min: i64, max: i64) -> Result<(), Error> {
    match m.get(key) {
        None => Ok(()),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(invalid(format!(
                "triggerConfig.{key} must be an integer from {min} to {max}"
            ))),
        },
    }
}

fn trigger_config(v: Option<&Value>) -> Result<Map<String, Value>, Error> {
    let m = v
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("triggerConfig is required and must be an object"))?;
    if !m.get("basePayload").is_some_and(Value::is_object) {
        return Err(invalid(
            "triggerConfig.basePayload is required and must be an object",
        ));
    }
    if let Some(machine) = m.get("machine") {
        if !machine.as_str().is_some_and(|x| MACHINES.contains(&x)) {
            return Err(invalid(format!(
                "triggerConfig.machine must be one of {}",
                MACHINES.join(", ")
            )));
        }
    }
    if let Some(q) =
        opt_string(m, "queue").map_err(|_| invalid("triggerConfig.queue must be a string"))?
    {
        bounded("triggerConfig.queue", q, 0, 128)?;
    }
    for key in ["lockToVersion", "region"] {
        opt_string(m, key).map_err(|_| invalid(format!("triggerConfig.{key} must be a string")))?;
    }
    if let Some(t) = m.get("tags") {
        tags("triggerConfig.tags", t)?;
    }
    int_in(m, "maxAttempts", 1, 10)?;
    int_in(m, "maxDuration", 1, i64::MAX)?;
    int_in(m, "idleTimeoutInSeconds", 1, 3600)?;
    Ok(m.clone())
}

fn timestamp(key: &str, v: &Value) -> Result<Timestamp, Error> {
    match v {
        Value::String(s) => Timestamp::parse_rfc3339(s),
        Value::Number(n) => n.as_i64().map(Timestamp::from_millis),
        _ => None,
    }
    .ok_or_else(|| invalid(format!("{key} must be an ISO 8601 date-time")))
}

fn parse_start(body: Option<Value>) -> Result<StartInput, Error> {
    let Some(Value::Object(m)) = body else {
        return Err(invalid("the body must be a JSON object"));
    };
    let kind = opt_string(&m, "type")?.ok_or_else(|| invalid("type is required"))?;
    let kind = bounded("type", kind, 1, 64)?;
    let task_identifier =
        opt_string(&m, "taskIdentifier")?.ok_or_else(|| invalid("taskIdentifier is required"))?;
    let task_identifier = bounded("taskIdentifier", task_identifier, 1, 128)?;
    let external_id = opt_string(&m, "externalId")?
        .map(|e| external_id("externalId", e))
        .transpose()?;
    let trigger_config = trigger_config(m.get("triggerConfig"))?;
    let tags = m.get("tags").map(|t| tags("tags", t)).transpose()?;
    let metadata = match m.get("metadata") {
        None => None,
        Some(Value::Object(o)) => Some(o.clone()),
        Some(_) => return Err(invalid("metadata must be an object")),
    };
    let expires_at = m
        .get("expiresAt")
        .map(|v| timestamp("expiresAt", v))
        .transpose()?;
    Ok(StartInput {
        kind,
        external_id,
        task_identifier,
        trigger_config,
        tags: tags.unwrap_or_default(),
        metadata,
        expires_at,
    })
}

/// `POST /api/v1/sessions`: start a session (idempotent on externalId) and its first run.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "trigger",
    request_body(content = Object, description = "`type`, `taskIdentifier`, `triggerConfig` (with `basePayload`), `externalId`?, `tags`?, `metadata`?, `expiresAt`?; at most 32 KB"),
    responses(
        (status = 201, description = "Started: the SessionObject with `runId`, `publicAccessToken` (1 h, `read:sessions:{key}` and `write:sessions:{key}`) and `isCached: false`", body = Object),
        (status = 200, description = "An open session with this externalId exists (`isCached: true`); only its triggerConfig was refreshed", body = Object),
        (status = 400, description = "`{\"error\"}`: invalid JSON or body"),
        (status = 401, description = "`{\"error\":\"Invalid or Missing API key\"}`"),
        (status = 403, description = "A public token without `write:sessions`"),
        (status = 409, description = "The externalId's session is closed or expired"),
        (status = 413, description = "Body over 32 KB"),
    ))]
pub async fn create(State(app): State<App>, who: Who, req: Request) -> TriggerResult<Response> {
    let input = parse_start(json_body(&app, req).await?)?;
    if !who.can_create(input.external_id.as_deref()) {
        return Err(TriggerError::forbidden());
    }
    let account = who.account();
    let started = app.services.trigger.start(account, input).await?;
    let token = mint_session_token(&app, account, &started.session)?;
    let status = if started.cached {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = CreatedSession {
        session: SessionObject::new(started.session, true),
        run_id: crate::service::trigger::run_id(started.run),
        public_access_token: token,
        is_cached: started.cached,
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /api/v1/sessions/{session}` by friendly id or externalId.
#[utoipa::path(get, path = "/api/v1/sessions/{session}", tag = "trigger",
    params(("session" = String, Path, description = "`session_…` or the externalId")),
    responses(
        (status = 200, description = "The SessionObject with triggerConfig", body = Object),
        (status = 403, description = "A public token without `read:sessions:{id}`"),
        (status = 404, description = "`{\"error\":\"Not found\"}` with `x-should-retry: false`"),
    ))]
pub async fn retrieve(
    State(app): State<App>,
    who: Who,
    Path(session): Path<String>,
) -> TriggerResult<Json<SessionObject>> {
    let s = readable_session(&app, &who, &session).await?;
    Ok(Json(SessionObject::new(s, true)))
}

fn parse_update(body: Option<Value>) -> Result<UpdateInput, Error> {
    let m = match body {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid("the body must be a JSON object")),
    };
    let mut input = UpdateInput::default();
    if let Some(t) = m.get("tags") {
        input.tags = Some(tags("tags", t)?);
    }
    match m.get("metadata") {
        None => {}
        Some(Value::Null) => input.metadata = Some(None),
        Some(Value::Object(o)) => input.metadata = Some(Some(o.clone())),
        Some(_) => return Err(invalid("metadata must be an object or null")),
    }
    match m.get("externalId") {
        None => {}
        Some(Value::Null) => input.external_id = Some(None),
        Some(Value::String(e)) => {
            input.external_id = Some(Some(external_id("externalId", e.clone())?))
        }
        Some(_) => return Err(invalid("externalId must be a string or null")),
    }
    Ok(input)
}

/// `PATCH /api/v1/sessions/{session}`: tags and metadata replace; externalId is immutable.
#[utoipa::path(patch, path = "/api/v1/sessions/{session}", tag = "trigger",
    params(("session" = String, Path, description = "`session_…` or the externalId")),
    request_body(content = Object, description = "`tags`?, `metadata`? (null clears), `externalId`? (must equal the current one)"),
    responses(
        (status = 200, description = "The updated SessionObject", body = Object),
        (status = 403, description = "Public tokens cannot update"),
        (status = 404, description = "Not found"),
        (status = 409, description = "The session is closed"),
        (status = 422, description = "`externalId cannot be changed after creation`"),
    ))]
pub async fn update(
    State(app): State<App>,
    who: Who,
    Path(session): Path<String>,
    req: Request,
) -> TriggerResult<Json<SessionObject>> {
    let account = who.secret_account()?;
    let input = parse_update(json_body(&app, req).await?)?;
    let r = session_ref(&session).ok_or_else(TriggerError::not_found)?;
    let s = app.services.trigger.update(account, &r, input).await?;
    Ok(Json(SessionObject::new(s, true)))
}

/// `POST /api/v1/sessions/{session}/close`: terminal and idempotent.
#[utoipa::path(post, path = "/api/v1/sessions/{session}/close", tag = "trigger",
    params(("session" = String, Path, description = "`session_…` or the externalId")),
    request_body(content = Object, description = "`reason`? (at most 256 characters)"),
    responses(
        (status = 200, description = "The closed SessionObject (unchanged when it was closed already)", body = Object),
        (status = 403, description = "Public tokens cannot close"),
        (status = 404, description = "Not found"),
    ))]
pub async fn close(
    State(app): State<App>,
    who: Who,
    Path(session): Path<String>,
    req: Request,
) -> TriggerResult<Json<SessionObject>> {
    let account = who.secret_account()?;
    let reason = match json_body(&app, req).await? {
        None => None,
        Some(Value::Object(m)) => opt_string(&m, "reason")?
            .map(|r| bounded("reason", r, 0, 256))
            .transpose()?,
        Some(_) => return Err(invalid("the body must be a JSON object").into()),
    };
    let r = session_ref(&session).ok_or_else(TriggerError::not_found)?;
    let s = app.services.sessions.close(account, &r, reason).await?;
    Ok(Json(SessionObject::new(s, true)))
}

/// Comma lists and repeated parameters, flattened.
fn many(values: &mut Vec<String>, v: &str) {
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !values.iter().any(|x| x == part) {
            values.push(part.to_owned());
        }
    }
}

/// `1d`, `12h`, `30m`, `45s`, `2w` in milliseconds.
fn period_ms(v: &str) -> Option<i64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = v.split_at(split);
    let n: i64 = n.parse().ok()?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

fn parse_list(query: Option<&str>) -> Result<ListQuery, Error> {
    let bad = |m: String| Error::bad_request(sessiond_core::error::codes::INVALID_QUERY, m);
    let mut q = ListQuery {
        filter: SessionFilter::default(),
        types: Vec::new(),
        task_identifiers: Vec::new(),
        size: PAGE_SIZE_DEFAULT,
        page: PageAt::First,
    };
    let (mut after, mut before) = (None, None);
    let mut tags = Vec::new();
    let mut statuses = Vec::new();
    let epoch = |k: &str, v: &str| {
        v.trim().parse::<i64>().map_err(|_| {
            bad(format!(
                "{k} must be an integer (milliseconds since the epoch)"
            ))
        })
    };
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "page[size]" => {
                q.size = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=PAGE_SIZE_MAX).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "page[size] must be an integer from 1 to {PAGE_SIZE_MAX}"
                        ))
                    })?
            }
            "page[after]" => after = Some(Cursor::decode(&v)?),
            "page[before]" => before = Some(Cursor::decode(&v)?),
            "filter[type]" => many(&mut q.types, &v),
            "filter[tags]" => many(&mut tags, &v),
            "filter[taskIdentifier]" => many(&mut q.task_identifiers, &v),
            "filter[externalId]" => q.filter.external_id = Some(v),
            "filter[status]" => many(&mut statuses, &v),
            "filter[createdAt][period]" => {
                let ms = period_ms(&v).ok_or_else(|| {
                    bad(format!(
                        "filter[createdAt][period] must be a duration such as 30m, 12h, 7d or 2w, got {v:?}"
                    ))
                })?;
                let bound =
                    Timestamp::from_millis(Timestamp::now().millis().saturating_sub(ms) - 1);
                q.filter.created_after = Some(match q.filter.created_after {
                    Some(a) if a > bound => a,
                    _ => bound,
                });
            }
            "filter[createdAt][from]" => {
                let from = epoch(&k, &v)?;
                let bound = Timestamp::from_millis(from.saturating_sub(1));
                q.filter.created_after = Some(match q.filter.created_after {
                    Some(a) if a > bound => a,
                    _ => bound,
                });
            }
            "filter[createdAt][to]" => {
                q.filter.created_before =
                    Some(Timestamp::from_millis(epoch(&k, &v)?.saturating_add(1)))
            }
            // Anything else is ignored, as the clients' schema strips unknown keys.
            _ => {}
        }
    }
    for s in statuses {
        let status = match s.as_str() {
            "ACTIVE" => SessionStatus::Active,
            "CLOSED" => SessionStatus::Closed,
            "EXPIRED" => SessionStatus::Expired,
            other => {
                return Err(bad(format!(
                    "filter[status] must be ACTIVE, CLOSED or EXPIRED, got {other:?}"
                )))
            }
        };
        if !q.filter.statuses.contains(&status) {
            q.filter.statuses.push(status);
        }
    }
    q.filter.tags_any = tags;
    q.page = match (after, before) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "Cannot pass both page[after] and page[before] on the same request".into(),
            ))
        }
        (Some(a), None) => PageAt::After(a),
        (None, Some(b)) => PageAt::Before(b),
        (None, None) => PageAt::First,
    };
    Ok(q)
}

/// `GET /api/v1/sessions`: filters, cursor pages, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "trigger",
    params(
        ("page[size]" = Option<u32>, Query, description = "1–100, default 20"),
        ("page[after]" = Option<String>, Query, description = "`pagination.next` of a page"),
        ("page[before]" = Option<String>, Query, description = "`pagination.previous` of a page (not with page[after])"),
        ("filter[type]" = Option<String>, Query, description = "Any of (comma list or repeated)"),
        ("filter[tags]" = Option<String>, Query, description = "Any of"),
        ("filter[taskIdentifier]" = Option<String>, Query, description = "Any of"),
        ("filter[externalId]" = Option<String>, Query),
        ("filter[status]" = Option<String>, Query, description = "ACTIVE, CLOSED, EXPIRED; any of"),
        ("filter[createdAt][period]" = Option<String>, Query, description = "e.g. 1d, 12h"),
        ("filter[createdAt][from]" = Option<i64>, Query, description = "Epoch milliseconds, inclusive"),
        ("filter[createdAt][to]" = Option<i64>, Query, description = "Epoch milliseconds, inclusive"),
    ),
    responses(
        (status = 200, description = "`{\"data\": [SessionObject without triggerConfig], \"pagination\": {\"next\"?, \"previous\"?}}`", body = Object),
        (status = 400, description = "Invalid query"),
    ))]
pub async fn list(
    State(app): State<App>,
    who: Who,
    RawQuery(query): RawQuery,
) -> TriggerResult<Json<Value>> {
    if !who.can_list() {
        return Err(TriggerError::forbidden());
    }
    let q = parse_list(query.as_deref())?;
    let page = app.services.trigger.list(who.account(), q).await?;
    let data: Vec<SessionObject> = page
        .sessions
        .into_iter()
        .map(|s| SessionObject::new(s, false))
        .collect();
    let mut pagination = Map::new();
    if let Some(c) = page.next {
        pagination.insert("next".into(), Value::String(c.encode()));
    }
    if let Some(c) = page.previous {
        pagination.insert("previous".into(), Value::String(c.encode()));
    }
    Ok(Json(json!({ "data": data, "pagination": pagination })))
}

/// `POST /api/v1/auth/jwt/claims`: what a client puts in the public tokens it signs itself.
#[utoipa::path(post, path = "/api/v1/auth/jwt/claims", tag = "trigger",
    responses(
        (status = 200, description = "`{\"sub\": <account id>, \"pub\": true}`", body = Object),
        (status = 401, description = "Not a registered secret key"),
    ))]
pub async fn claims(who: Who) -> TriggerResult<Json<Value>> {
    let account = who.secret_account()?;
    Ok(Json(json!({ "sub": account.to_string(), "pub": true })))
}
