//! Pipeline stage jobs: `POST /api/v1/{module}/{sessionId}/{operation…}` creates the native job
//! `{module}.{operation}` (an external worker runs it); `GET` on the same path reports it in the
//! midPilot status shape.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::Uri;
use axum::Json;
use serde_json::{json, Map, Value};
use sessiond_core::job::{CreateJobInput, Job, JobStatus};
use sessiond_core::session::Session;
use sessiond_core::{ErrorKind, JobId, Timestamp};

use super::auth::MidCaller;
use super::error::{path_uuid, MidError, MidResult};
use super::sessions::{load, session_ref};
use crate::app::App;
use crate::extract::query_pairs;
use crate::service::jobs::SessionChangeForJob;

/// A job's status as midPilot names it: `succeeded` is `finished`, `cancelled` is `failed`.
pub fn status_of(job: &Job) -> &'static str {
    match job.status {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Succeeded => "finished",
        JobStatus::Failed | JobStatus::Cancelled => "failed",
    }
}

/// The module of a stage path (`/api/v1/{module}/…`).
fn module_of(uri: &Uri) -> MidResult<String> {
    uri.path()
        .split('/')
        .nth(3)
        .filter(|m| super::MODULES.contains(m))
        .map(str::to_owned)
        .ok_or_else(|| MidError::not_found("Not Found"))
}

/// The operation, without surrounding slashes; the native job type is `{module}.{operation}`
/// and the session keys are `<label>JobId`, `<label>Input`, `<label>Output`, where the label is
/// the operation in camelCase (`discovery` → `discovery`, `classes/extract` →
/// `classesExtract`).
fn operation_and_label(operation: &str) -> MidResult<(String, String)> {
    let op = operation.trim_matches('/');
    if op.is_empty() {
        return Err(MidError::not_found("Not Found"));
    }
    let mut label = String::new();
    for (i, word) in op
        .split(['/', '-', '_', '.'])
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                label.extend(first.to_lowercase());
            } else {
                label.extend(first.to_uppercase());
            }
            label.push_str(chars.as_str());
        }
    }
    Ok((op.to_owned(), label))
}

/// Create the stage job.
#[utoipa::path(post, path = "/api/v1/{module}/{session_id}/{operation}", tag = "midpilot",
    params(
        ("module" = String, Path, description = "`discovery`, `scrape`, `digester` or `codegen`"),
        ("session_id" = Uuid, Path),
        ("operation" = String, Path, description = "One or more segments; the job type is `{module}.{operation}`"),
    ),
    request_body(content = Object, description = "The stage input; `usePreviousSessionData: true` or `skipCache: false` asks for reuse"),
    responses(
        (status = 200, description = "`{jobId}`"),
        (status = 404, description = "`Session {id} not found`"),
    ))]
pub async fn create(
    State(app): State<App>,
    caller: MidCaller,
    uri: Uri,
    Path((session_id, operation)): Path<(String, String)>,
    body: Bytes,
) -> MidResult<Json<Value>> {
    let module = module_of(&uri)?;
    let id = path_uuid("session_id", &session_id)?;
    let (operation, label) = operation_and_label(&operation)?;
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| MidError::unprocessable(format!("JSON decode error: {e}")))?
    };
    let reuse = input.get("usePreviousSessionData").and_then(Value::as_bool) == Some(true)
        || input.get("skipCache").and_then(Value::as_bool) == Some(false);
    let job_key = format!("{label}JobId");
    let input_key = format!("{label}Input");
    let recorded_input = input.clone();
    let change: SessionChangeForJob =
        Box::new(move |job: &Job, s: &mut Session, now: Timestamp| {
            let mut keys = Map::new();
            keys.insert(job_key, json!(job.id.to_string()));
            keys.insert(input_key, recorded_input);
            Ok(s.replace_data_keys(keys, now)?.into_iter().collect())
        });
    let (job, _) = app
        .services
        .jobs
        .create_with(
            caller.0,
            &session_ref(id),
            CreateJobInput {
                kind: format!("{module}.{operation}"),
                input: Some(input),
                reuse,
                output_key: Some(format!("{label}Output")),
                max_attempts: None,
            },
            Some(change),
        )
        .await
        .map_err(MidError::for_session(id))?;
    Ok(Json(json!({ "jobId": job.id.to_string() })))
}

fn not_found_body(job_id: &str) -> Value {
    json!({
        "jobId": job_id,
        "status": "not_found",
        "createdAt": null,
        "startedAt": null,
        "updatedAt": null,
        "progress": {},
        "errors": [],
    })
}

fn status_body(job: &Job) -> Value {
    let mut body = json!({
        "jobId": job.id.to_string(),
        "status": status_of(job),
        "createdAt": job.created_at.to_rfc3339(),
        "startedAt": job.started_at.map(|t| t.to_rfc3339()),
        "updatedAt": job.updated_at.to_rfc3339(),
        "progress": job.progress.clone().unwrap_or_else(|| json!({})),
        "errors": match &job.error {
            None => vec![],
            Some(e) => vec![e
                .get("message")
                .and_then(Value::as_str)
                .map(|m| json!(m))
                .unwrap_or_else(|| e.clone())],
        },
    });
    if let Some(result) = &job.result {
        body["result"] = result.clone();
    }
    body
}

/// The stage job's status: `?jobId=`, else the session's `<label>JobId`.
#[utoipa::path(get, path = "/api/v1/{module}/{session_id}/{operation}", tag = "midpilot",
    params(
        ("module" = String, Path),
        ("session_id" = Uuid, Path),
        ("operation" = String, Path),
        ("jobId" = Option<Uuid>, Query),
    ),
    responses(
        (status = 200, description = "`{jobId, status, createdAt, startedAt, updatedAt, progress, result?, errors}`; `status: not_found` for an unknown job"),
        (status = 404, description = "`No {label} job found in session {sessionId}`"),
    ))]
pub async fn status(
    State(app): State<App>,
    caller: MidCaller,
    uri: Uri,
    Path((session_id, operation)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> MidResult<Json<Value>> {
    module_of(&uri)?;
    let id = path_uuid("session_id", &session_id)?;
    let (_, label) = operation_and_label(&operation)?;
    let s = load(&app, &caller, id).await?;
    let asked = query_pairs(query.as_deref())
        .into_iter()
        .find(|(k, _)| k == "jobId")
        .map(|(_, v)| v);
    let job_id = match asked {
        Some(j) => j,
        None => match s.data.get(&format!("{label}JobId")).and_then(Value::as_str) {
            Some(j) => j.to_owned(),
            None => {
                return Err(MidError::not_found(format!(
                    "No {label} job found in session {id}"
                )))
            }
        },
    };
    let Ok(parsed) = job_id.parse::<JobId>() else {
        return Ok(Json(not_found_body(&job_id)));
    };
    match app.services.jobs.get(caller.0, parsed).await {
        Ok(job) if job.session_id == s.id => Ok(Json(status_body(&job))),
        Ok(_) => Ok(Json(not_found_body(&job_id))),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(Json(not_found_body(&job_id))),
        Err(e) => Err(e.into()),
    }
}
