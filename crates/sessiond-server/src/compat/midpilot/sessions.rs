//! The session routes: create (server or caller id), get, HEAD, the shallow-merge PATCH, DELETE
//! and the session's jobs.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use sessiond_core::ids::SessionRef;
use sessiond_core::job::Job;
use sessiond_core::session::{CreateSessionInput, Session};
use sessiond_core::SessionId;
use uuid::Uuid;

use super::auth::MidCaller;
use super::error::{path_uuid, MidError, MidResult};
use super::stages::status_of;
use crate::app::App;

pub fn session_ref(id: Uuid) -> SessionRef {
    SessionRef::Id(SessionId(id))
}

/// The session `id` of the caller's account, or the midPilot 404.
pub async fn load(app: &App, caller: &MidCaller, id: Uuid) -> MidResult<Session> {
    app.services
        .sessions
        .get(caller.0, &session_ref(id))
        .await
        .map_err(MidError::for_session(id))
}

fn created(s: &Session, message: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({ "sessionId": s.id.to_string(), "message": message })),
    )
}

/// Create a session with a server-chosen id.
#[utoipa::path(post, path = "/api/v1/session", tag = "midpilot",
    responses((status = 201, description = "`{sessionId, message}`")))]
pub async fn create(
    State(app): State<App>,
    caller: MidCaller,
) -> MidResult<(StatusCode, Json<Value>)> {
    let c = app
        .services
        .sessions
        .create(caller.0, CreateSessionInput::default())
        .await?;
    Ok(created(
        &c.session,
        "Session created successfully. Use this session_id in subsequent requests.",
    ))
}

/// Create a session with the caller's id.
#[utoipa::path(post, path = "/api/v1/session/{session_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 201, description = "`{sessionId, message}`"),
        (status = 409, description = "`Session {id} already exists`"),
        (status = 422, description = "Not a UUID"),
    ))]
pub async fn create_with_id(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
) -> MidResult<(StatusCode, Json<Value>)> {
    let id = path_uuid("session_id", &session_id)?;
    let c = app
        .services
        .sessions
        .create(
            caller.0,
            CreateSessionInput {
                id: Some(id),
                ..CreateSessionInput::default()
            },
        )
        .await?;
    Ok(created(
        &c.session,
        "Session created successfully with provided ID.",
    ))
}

/// The session with every data key.
#[utoipa::path(get, path = "/api/v1/session/{session_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`{sessionId, data, createdAt, updatedAt}`"),
        (status = 404, description = "`Session {id} not found`"),
    ))]
pub async fn get(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
) -> MidResult<Json<Value>> {
    let s = load(&app, &caller, path_uuid("session_id", &session_id)?).await?;
    Ok(Json(json!({
        "sessionId": s.id.to_string(),
        "data": s.data,
        "createdAt": s.created_at.to_rfc3339(),
        "updatedAt": s.updated_at.to_rfc3339(),
    })))
}

/// Whether the session exists: 204 or 404.
#[utoipa::path(head, path = "/api/v1/session/{session_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    responses((status = 204, description = "Exists"), (status = 404, description = "Unknown")))]
pub async fn head(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
) -> StatusCode {
    let Ok(id) = Uuid::parse_str(&session_id) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    match load(&app, &caller, id).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::NOT_FOUND,
    }
}

/// Shallow merge of `data`: each top-level key replaces the stored key whole, `null` is stored.
#[utoipa::path(patch, path = "/api/v1/session/{session_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    request_body(content = Object, description = "`{\"data\": {…}}`"),
    responses(
        (status = 200, description = "`{message, sessionId}`"),
        (status = 404, description = "`Session {id} not found or update failed`"),
        (status = 422, description = "Not a UUID, or no `data` object"),
    ))]
pub async fn patch(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
    body: Bytes,
) -> MidResult<Json<Value>> {
    let id = path_uuid("session_id", &session_id)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| MidError::unprocessable(format!("JSON decode error: {e}")))?;
    let Some(Value::Object(data)) = body.get("data").cloned() else {
        return Err(MidError::unprocessable(
            "Field required: data must be an object",
        ));
    };
    let not_found = || MidError::not_found(format!("Session {id} not found or update failed"));
    app.services
        .sessions
        .replace_data_keys(caller.0, &session_ref(id), data)
        .await
        .map_err(|e| {
            if e.kind == sessiond_core::ErrorKind::NotFound {
                not_found()
            } else {
                e.into()
            }
        })?;
    Ok(Json(json!({
        "message": "Session updated successfully",
        "sessionId": id.to_string(),
    })))
}

/// Delete the session and everything under it.
#[utoipa::path(delete, path = "/api/v1/session/{session_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`{message, sessionId}`"),
        (status = 404, description = "`Session {id} not found`"),
    ))]
pub async fn delete(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
) -> MidResult<Json<Value>> {
    let id = path_uuid("session_id", &session_id)?;
    app.services
        .sessions
        .delete(caller.0, &session_ref(id))
        .await
        .map_err(MidError::for_session(id))?;
    Ok(Json(json!({
        "message": "Session deleted successfully",
        "sessionId": id.to_string(),
    })))
}

fn job_row(j: &Job) -> Value {
    let mut row = json!({
        "jobId": j.id.to_string(),
        "type": j.kind,
        "status": status_of(j),
        "createdAt": j.created_at.to_rfc3339(),
        "updatedAt": j.updated_at.to_rfc3339(),
    });
    if let Some(t) = j.started_at {
        row["startedAt"] = json!(t.to_rfc3339());
    }
    if let Some(t) = j.finished_at {
        row["finishedAt"] = json!(t.to_rfc3339());
    }
    row
}

/// The session's jobs, oldest first.
#[utoipa::path(get, path = "/api/v1/session/{session_id}/jobs", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`{sessionId, jobs}`"),
        (status = 404, description = "`Session {id} not found`"),
    ))]
pub async fn jobs(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
) -> MidResult<Json<Value>> {
    let s = load(&app, &caller, path_uuid("session_id", &session_id)?).await?;
    let jobs = app.services.jobs.list(s.id).await?;
    Ok(Json(json!({
        "sessionId": s.id.to_string(),
        "jobs": jobs.iter().map(job_row).collect::<Vec<_>>(),
    })))
}
