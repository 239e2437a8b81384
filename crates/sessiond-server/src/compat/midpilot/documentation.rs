//! Documentation: uploads (multipart field `documentation`) processed by the native document
//! service as `documentation.processUpload` jobs, and their chunks as DocumentationItems.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sessiond_core::document::{DocumentId, DocumentStatus};
use sessiond_core::error::codes;
use sessiond_core::job::JobStatus;
use sessiond_core::ErrorKind;
use uuid::Uuid;

use super::auth::MidCaller;
use super::error::{path_uuid, MidError, MidResult};
use super::sessions::{load, session_ref};
use super::stages::status_of;
use crate::api::documents::receive;
use crate::app::App;
use crate::service::documents::{documentation_item, DOCUMENTATION_JOB};

fn doc_not_found(doc: Uuid, session: Uuid) -> MidError {
    MidError::not_found(format!(
        "Documentation {doc} not found in session {session}"
    ))
}

async fn upload_as(
    app: App,
    caller: MidCaller,
    session_id: &str,
    doc_id: Option<&str>,
    req: Request,
) -> MidResult<Json<Value>> {
    let id = path_uuid("session_id", session_id)?;
    let doc_id = doc_id.map(|d| path_uuid("doc_id", d)).transpose()?;
    load(&app, &caller, id).await?;
    let mut received = receive(&app, req, "documentation").await?;
    if let Some(d) = doc_id {
        received.set_doc_id(DocumentId(d));
    }
    let filename = received.filename.clone().unwrap_or_default();
    let documents = &app.services.documents;
    // The product's reuse rule for uploads: filename, content type, SHA-256 and size.
    let (doc, job) = documents
        .upload(
            caller.0,
            &session_ref(id),
            received.into_upload(DOCUMENTATION_JOB, true, false),
        )
        .await
        .map_err(|e| {
            if e.code == codes::EMPTY_DOCUMENT {
                MidError::unprocessable(format!("Uploaded documentation {filename} is empty."))
            } else {
                MidError::for_session(id)(e)
            }
        })?;
    // The upload wrote `documentation.processUpload_{docId}_job_id` (and, when it reused
    // earlier chunks, `documentationItems`) in its own transaction.
    Ok(Json(json!({
        "message": "Documentation upload queued for processing",
        "sessionId": id.to_string(),
        "jobId": job.id.to_string(),
        "docId": doc.id.to_string(),
        "status": status_of(&job),
    })))
}

/// Upload a documentation file (multipart, field `documentation`); processed asynchronously.
#[utoipa::path(post, path = "/api/v1/session/{session_id}/documentation", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    request_body(content = String, description = "multipart/form-data with a `documentation` file field", content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "`{message, sessionId, jobId, docId, status}`"),
        (status = 404, description = "`Session {id} not found`"),
        (status = 422, description = "`Uploaded documentation {filename} is empty.`"),
    ))]
pub async fn upload(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
    req: Request,
) -> MidResult<Json<Value>> {
    upload_as(app, caller, &session_id, None, req).await
}

/// Upload under a caller-chosen docId.
#[utoipa::path(post, path = "/api/v1/session/{session_id}/documentation/{doc_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path), ("doc_id" = Uuid, Path)),
    request_body(content = String, description = "multipart/form-data with a `documentation` file field", content_type = "multipart/form-data"),
    responses((status = 200, description = "`{message, sessionId, jobId, docId, status}`")))]
pub async fn upload_with_id(
    State(app): State<App>,
    caller: MidCaller,
    Path((session_id, doc_id)): Path<(String, String)>,
    req: Request,
) -> MidResult<Json<Value>> {
    upload_as(app, caller, &session_id, Some(&doc_id), req).await
}

/// Every DocumentationItem of the session.
#[utoipa::path(get, path = "/api/v1/session/{session_id}/documentation", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`{sessionId, documentationItems, count}`"),
        (status = 404, description = "`Session {id} not found`"),
    ))]
pub async fn list(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
) -> MidResult<Json<Value>> {
    let s = load(&app, &caller, path_uuid("session_id", &session_id)?).await?;
    let items = app.services.documents.documentation_items(s.id).await?;
    Ok(Json(json!({
        "sessionId": s.id.to_string(),
        "count": items.len(),
        "documentationItems": items,
    })))
}

/// Whether the document's chunks exist (204), it is processing (202), or neither (404).
#[utoipa::path(head, path = "/api/v1/session/{session_id}/documentation/{doc_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path), ("doc_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Chunks exist"),
        (status = 202, description = "Processing: `X-Documentation-Status: processing`, `X-Job-Id`"),
        (status = 404, description = "Neither"),
    ))]
pub async fn head(
    State(app): State<App>,
    caller: MidCaller,
    Path((session_id, doc_id)): Path<(String, String)>,
) -> MidResult<Response> {
    let id = path_uuid("session_id", &session_id)?;
    let doc_id = path_uuid("doc_id", &doc_id)?;
    let s = load(&app, &caller, id).await?;
    let doc = match app.services.documents.get(s.id, DocumentId(doc_id)).await {
        Ok(d) => d,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(StatusCode::NOT_FOUND.into_response()),
        Err(e) => return Err(e.into()),
    };
    if doc.status == DocumentStatus::Ready && doc.chunk_count > 0 {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if let Some(job_id) = doc.job_id {
        let job = app.services.jobs.get(caller.0, job_id).await?;
        if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-documentation-status",
                HeaderValue::from_static("processing"),
            );
            if let Ok(v) = HeaderValue::from_str(&job.id.to_string()) {
                headers.insert("x-job-id", v);
            }
            return Ok((StatusCode::ACCEPTED, headers).into_response());
        }
    }
    Ok(StatusCode::NOT_FOUND.into_response())
}

/// One document's chunks as DocumentationItems.
#[utoipa::path(get, path = "/api/v1/session/{session_id}/documentation/{doc_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path), ("doc_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`{docId, chunks}`"),
        (status = 404, description = "`Documentation {docId} not found in session {id}`"),
    ))]
pub async fn get(
    State(app): State<App>,
    caller: MidCaller,
    Path((session_id, doc_id)): Path<(String, String)>,
) -> MidResult<Json<Value>> {
    let id = path_uuid("session_id", &session_id)?;
    let doc_id = path_uuid("doc_id", &doc_id)?;
    let s = load(&app, &caller, id).await?;
    let documents = &app.services.documents;
    let doc = documents
        .get(s.id, DocumentId(doc_id))
        .await
        .map_err(|e| match e.kind {
            ErrorKind::NotFound => doc_not_found(doc_id, id),
            _ => e.into(),
        })?;
    let chunks = documents.chunks(doc.id).await?;
    if chunks.is_empty() {
        return Err(doc_not_found(doc_id, id));
    }
    Ok(Json(json!({
        "docId": doc.id.to_string(),
        "chunks": chunks.iter().map(|c| documentation_item(&doc, c)).collect::<Vec<_>>(),
    })))
}

/// Delete one document and its chunks.
#[utoipa::path(delete, path = "/api/v1/session/{session_id}/documentation/{doc_id}", tag = "midpilot",
    params(("session_id" = Uuid, Path), ("doc_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`{message, sessionId, deletedPageId, deletedChunks}`"),
        (status = 404, description = "`Documentation {docId} not found in session {id}`"),
    ))]
pub async fn delete(
    State(app): State<App>,
    caller: MidCaller,
    Path((session_id, doc_id)): Path<(String, String)>,
) -> MidResult<Json<Value>> {
    let id = path_uuid("session_id", &session_id)?;
    let doc_id = path_uuid("doc_id", &doc_id)?;
    let s = load(&app, &caller, id).await?;
    let documents = &app.services.documents;
    // `documentationItems` is rewritten in the delete's transaction.
    let n = documents
        .delete_documentation(s.id, DocumentId(doc_id))
        .await
        .map_err(|e| match e.kind {
            ErrorKind::NotFound => doc_not_found(doc_id, id),
            _ => e.into(),
        })?;
    Ok(Json(json!({
        "message": format!("Documentation deleted successfully ({n} chunk(s) removed)"),
        "sessionId": id.to_string(),
        "deletedPageId": doc_id.to_string(),
        "deletedChunks": n,
    })))
}

/// Delete all of the session's documentation.
#[utoipa::path(delete, path = "/api/v1/session/{session_id}/documentation", tag = "midpilot",
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, description = "`{message, sessionId}`"),
        (status = 404, description = "`Session {id} not found`"),
    ))]
pub async fn delete_all(
    State(app): State<App>,
    caller: MidCaller,
    Path(session_id): Path<String>,
) -> MidResult<Json<Value>> {
    let id = path_uuid("session_id", &session_id)?;
    let s = load(&app, &caller, id).await?;
    let documents = &app.services.documents;
    // Each delete rewrites `documentationItems` in its own transaction.
    for doc in documents.list(s.id).await? {
        match documents.delete_documentation(s.id, doc.id).await {
            Ok(_) => {}
            // Deleted concurrently: already gone.
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({
        "message": "All documentation deleted successfully",
        "sessionId": id.to_string(),
    })))
}
