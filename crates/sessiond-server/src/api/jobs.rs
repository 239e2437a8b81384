//! Jobs: per session, and the worker protocol under `/v1/jobs`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessiond_core::error::codes;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{CreateJobInput, Job};
use sessiond_core::{Error, JobId};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::App;
use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, OptionalJson};
use crate::service::jobs::Claim;

/// A job. Every nullable field is present.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: Uuid,
    pub session_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub reused_from: Option<Uuid>,
    pub output_key: Option<String>,
    #[schema(format = DateTime)]
    pub lease_expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        JobView {
            id: *j.id.as_uuid(),
            session_id: *j.session_id.as_uuid(),
            kind: j.kind,
            status: j.status.as_str().to_owned(),
            input: j.input,
            result: j.result,
            error: j.error,
            progress: j.progress,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            reused_from: j.reused_from.map(|r| r.0),
            output_key: j.output_key,
            lease_expires_at: j.lease_expires_at.map(|t| t.to_rfc3339()),
            created_at: j.created_at.to_rfc3339(),
            started_at: j.started_at.map(|t| t.to_rfc3339()),
            finished_at: j.finished_at.map(|t| t.to_rfc3339()),
            updated_at: j.updated_at.to_rfc3339(),
        }
    }
}

/// A claimed job: the job and the lease that heartbeat, complete and fail must present.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedJobView {
    #[serde(flatten)]
    pub job: JobView,
    pub lease_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJobBody {
    /// 1–128 of `A-Za-z0-9._-:/`, e.g. `scrape` or `discovery.discovery`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON object of at most 1 MiB.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Reuse an earlier success with the same type and normalized input (keys sorted; session
    /// and document ids and cache flags ignored) finished within the reuse window. Default true.
    pub reuse: Option<bool>,
    /// A top-level key of the session's data: the result is merge-patched there on success.
    pub output_key: Option<String>,
    /// 1–100, default 3.
    pub max_attempts: Option<i64>,
}

fn parse_job_id(s: &str) -> Result<JobId, Error> {
    s.parse::<JobId>()
        .map_err(|_| Error::not_found(codes::JOB_NOT_FOUND, format!("Job {s} not found")))
}

/// Create a job on the session.
#[utoipa::path(post, path = "/v1/sessions/{session}/jobs", tag = "jobs",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    request_body = CreateJobBody,
    responses(
        (status = 201, description = "Created: `queued`, or `succeeded` with `reusedFrom` when an earlier result was reused", body = JobView),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: input over 1 MiB", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `invalid_body`", body = ErrorBody),
    ))]
pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
    ApiJson(body): ApiJson<CreateJobBody>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let account = caller.account()?;
    let job = app
        .services
        .jobs
        .create(
            account,
            &SessionRef::parse(&session),
            CreateJobInput {
                kind: body.kind,
                input: body.input,
                reuse: body.reuse.unwrap_or(true),
                output_key: body.output_key,
                max_attempts: body.max_attempts,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(job.into())))
}

/// The session's jobs, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{session}/jobs", tag = "jobs",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    responses(
        (status = 200, description = "Jobs, oldest first", body = [JobView]),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ))]
pub async fn list(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
) -> ApiResult<Json<Vec<JobView>>> {
    // Jobs are not open to session tokens.
    let s = app
        .services
        .sessions
        .get(caller.account()?, &SessionRef::parse(&session))
        .await?;
    let jobs = app.services.jobs.list(s.id).await?;
    Ok(Json(jobs.into_iter().map(JobView::from).collect()))
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "`job_not_found`", body = ErrorBody),
    ))]
pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let job = app
        .services
        .jobs
        .get(caller.account()?, parse_job_id(&id)?)
        .await?;
    Ok(Json(job.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimBody {
    /// Job types this worker runs (an unknown type simply has nothing to claim).
    pub types: Vec<String>,
    /// 5–3600, default 60.
    pub lease_seconds: Option<i64>,
    /// Long-poll up to this many seconds (≤ 60) for a job; default 0.
    pub wait: Option<u64>,
    /// Free text recorded on the job (≤ 256 characters).
    pub worker_id: Option<String>,
}

/// Worker: lease the oldest queued job of the given types.
#[utoipa::path(post, path = "/v1/jobs/claim", tag = "jobs",
    request_body = ClaimBody,
    responses(
        (status = 200, description = "A job, now `running`, with its lease", body = ClaimedJobView),
        (status = 204, description = "No job within `wait`"),
        (status = 422, description = "`invalid_field`: leaseSeconds or wait out of range", body = ErrorBody),
    ))]
pub async fn claim(
    State(app): State<App>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<ClaimBody>,
) -> ApiResult<Response> {
    let account = caller.account()?;
    let claim = Claim::new(body.types, body.lease_seconds, body.wait, body.worker_id)?;
    match app.services.jobs.claim(account, claim).await? {
        Some(job) => {
            let lease_id = job.lease_id.unwrap_or_default();
            Ok(Json(ClaimedJobView {
                job: job.into(),
                lease_id,
            })
            .into_response())
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatBody {
    pub lease_id: Uuid,
    /// Any JSON; recorded on the job and as a `job.progress` event.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteBody {
    pub lease_id: Uuid,
    #[schema(value_type = Object)]
    pub result: Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailBody {
    pub lease_id: Uuid,
    #[schema(value_type = Object)]
    pub error: Value,
    /// Default true: retried while attempts remain.
    pub retry: Option<bool>,
}

/// Worker: extend the lease (and report progress).
#[utoipa::path(post, path = "/v1/jobs/{id}/heartbeat", tag = "jobs",
    params(("id" = Uuid, Path)),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The job with its extended lease", body = JobView),
        (status = 404, description = "`job_not_found`", body = ErrorBody),
        (status = 409, description = "`lease_lost`: not running or not held by this lease", body = ErrorBody),
    ))]
pub async fn heartbeat(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> ApiResult<Json<JobView>> {
    let job = app
        .services
        .jobs
        .heartbeat(
            caller.account()?,
            parse_job_id(&id)?,
            body.lease_id,
            body.progress,
        )
        .await?;
    Ok(Json(job.into()))
}

/// Worker: the job succeeded. With `outputKey`, the result is merge-patched into the session's
/// data in the same transaction.
#[utoipa::path(post, path = "/v1/jobs/{id}/complete", tag = "jobs",
    params(("id" = Uuid, Path)),
    request_body = CompleteBody,
    responses(
        (status = 200, description = "The succeeded job", body = JobView),
        (status = 404, description = "`job_not_found`", body = ErrorBody),
        (status = 409, description = "`lease_lost`", body = ErrorBody),
    ))]
pub async fn complete(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> ApiResult<Json<JobView>> {
    let job = app
        .services
        .jobs
        .complete(
            caller.account()?,
            parse_job_id(&id)?,
            body.lease_id,
            body.result,
        )
        .await?;
    Ok(Json(job.into()))
}

/// Worker: the attempt failed; retried until `maxAttempts` unless `retry: false`.
#[utoipa::path(post, path = "/v1/jobs/{id}/fail", tag = "jobs",
    params(("id" = Uuid, Path)),
    request_body = FailBody,
    responses(
        (status = 200, description = "The job: `queued` again, or `failed`", body = JobView),
        (status = 404, description = "`job_not_found`", body = ErrorBody),
        (status = 409, description = "`lease_lost`", body = ErrorBody),
    ))]
pub async fn fail(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> ApiResult<Json<JobView>> {
    let job = app
        .services
        .jobs
        .fail(
            caller.account()?,
            parse_job_id(&id)?,
            body.lease_id,
            body.error,
            body.retry.unwrap_or(true),
        )
        .await?;
    Ok(Json(job.into()))
}

/// Cancel a queued or running job (a finished job is returned unchanged).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "`job_not_found`", body = ErrorBody),
    ))]
pub async fn cancel(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    OptionalJson(_body): OptionalJson<serde_json::Map<String, Value>>,
) -> ApiResult<Json<JobView>> {
    let job = app
        .services
        .jobs
        .cancel(caller.account()?, parse_job_id(&id)?)
        .await?;
    Ok(Json(job.into()))
}
