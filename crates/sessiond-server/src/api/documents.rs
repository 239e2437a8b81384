//! Documents: upload (multipart or raw body), list, get with chunks, delete, search.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use sessiond_core::document::{Chunk, Document, DocumentId, SearchHit};
use sessiond_core::error::codes;
use sessiond_core::ids::SessionRef;
use sessiond_core::limits::*;
use sessiond_core::{Error, ErrorKind};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::channels::authorized_session;
use crate::api::jobs::JobView;
use crate::app::App;
use crate::auth::{Access, Caller};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{bad_query, query_pairs};
use crate::service::documents::{Upload, PROCESS_JOB};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentView {
    pub id: Uuid,
    pub session_id: Uuid,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: i64,
    pub sha256: String,
    /// `processing`, `ready` or `failed`.
    pub status: String,
    /// `{"code","message"}` when failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub chunk_count: i64,
    pub token_count: i64,
    pub chunk_tokens: i64,
    pub overlap_tokens: i64,
    pub job_id: Option<Uuid>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Document> for DocumentView {
    fn from(d: Document) -> Self {
        DocumentView {
            id: *d.id.as_uuid(),
            session_id: *d.session_id.as_uuid(),
            filename: d.filename,
            content_type: d.content_type,
            size_bytes: d.size_bytes,
            sha256: d.sha256,
            status: d.status.as_str().to_owned(),
            error: d.error,
            chunk_count: d.chunk_count,
            token_count: d.token_count,
            chunk_tokens: d.chunk_tokens,
            overlap_tokens: d.overlap_tokens,
            job_id: d.job_id.map(|j| j.0),
            created_at: d.created_at.to_rfc3339(),
            updated_at: d.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChunkView {
    pub id: Uuid,
    /// 0-based position in the document.
    pub index: i64,
    pub content: String,
    pub token_count: i64,
    pub char_count: i64,
    /// `chunkNumber`, `tokenCount`, `charCount`, `contentType`, `filename`, `parser`,
    /// `numEndpoints`, `category`, `tags`.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl From<Chunk> for ChunkView {
    fn from(c: Chunk) -> Self {
        ChunkView {
            id: *c.id.as_uuid(),
            index: c.index,
            content: c.content,
            token_count: c.token_count,
            char_count: c.char_count,
            metadata: c.metadata,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentWithChunks {
    #[serde(flatten)]
    pub document: DocumentView,
    pub chunks: Vec<ChunkView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadView {
    pub document: DocumentView,
    pub job: JobView,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHitView {
    pub document_id: Uuid,
    pub chunk_id: Uuid,
    pub index: i64,
    /// Relevance (BM25-based on SQLite); higher is better.
    pub score: f64,
    /// The matching passage, matches between « and ».
    pub snippet: String,
}

impl From<SearchHit> for SearchHitView {
    fn from(h: SearchHit) -> Self {
        SearchHitView {
            document_id: *h.document_id.as_uuid(),
            chunk_id: *h.chunk_id.as_uuid(),
            index: h.index,
            score: h.score,
            snippet: h.snippet,
        }
    }
}

/// Upload settings, from the query string or multipart text fields.
#[derive(Default)]
struct Settings {
    doc_id: Option<DocumentId>,
    filename: Option<String>,
    chunk_tokens: Option<i64>,
    overlap_tokens: Option<i64>,
    reuse: Option<bool>,
}

fn set(s: &mut Settings, key: &str, value: &str) -> Result<bool, Error> {
    let int = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| bad_query(format!("{key} must be an integer, got {v:?}")))
    };
    match key {
        "docId" => {
            s.doc_id = Some(
                value
                    .trim()
                    .parse()
                    .map_err(|_| bad_query(format!("docId must be a UUID, got {value:?}")))?,
            )
        }
        "filename" => s.filename = Some(value.to_owned()),
        "chunkTokens" => s.chunk_tokens = Some(int(value)?),
        "overlapTokens" => s.overlap_tokens = Some(int(value)?),
        "reuse" => {
            s.reuse = Some(match value.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(bad_query(format!(
                        "reuse must be true or false, got {other:?}"
                    )))
                }
            })
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Receives bytes, hashing as they arrive and refusing more than `max`.
struct Receiver {
    bytes: Vec<u8>,
    hasher: Sha256,
    max: usize,
}

impl Receiver {
    fn new(max: usize, hint: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(hint.min(max)),
            hasher: Sha256::new(),
            max,
        }
    }
    fn push(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if self.bytes.len() + chunk.len() > self.max {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                codes::PAYLOAD_TOO_LARGE,
                format!("the upload is larger than the server's limit of {} bytes (see --max-upload-bytes)", self.max),
            ));
        }
        self.hasher.update(chunk);
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }
    fn finish(self) -> (Vec<u8>, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

fn content_length(headers: &HeaderMap) -> usize {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A received upload: the file, its type and name, and the settings.
pub struct Received {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    settings_doc_id: Option<DocumentId>,
    settings: (Option<i64>, Option<i64>, Option<bool>),
}

/// Reads an upload from a multipart body (file field `file_field`) or a raw body.
pub async fn receive(app: &App, req: Request, file_field: &str) -> Result<Received, Error> {
    let max = app.options.max_upload_bytes;
    let query = req.uri().query().map(str::to_owned);
    let mut s = Settings::default();
    for (k, v) in query_pairs(query.as_deref()) {
        if !set(&mut s, &k, &v)? && k != "token" {
            return Err(bad_query(format!(
                "unknown query parameter {k:?}; use docId, filename, chunkTokens, overlapTokens, reuse"
            )));
        }
    }
    let headers = req.headers().clone();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let hint = content_length(&headers);
    let mut file: Option<(Receiver, Option<String>, Option<String>)> = None;
    if ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(req, &()).await.map_err(|e| {
            Error::bad_request(codes::INVALID_BODY, format!("invalid multipart body: {e}"))
        })?;
        while let Some(mut field) = multipart.next_field().await.map_err(|e| {
            Error::bad_request(codes::INVALID_BODY, format!("invalid multipart body: {e}"))
        })? {
            let name = field.name().unwrap_or("").to_owned();
            if name == file_field {
                let mut rx = Receiver::new(max, hint);
                let fname = field.file_name().map(str::to_owned);
                let fct = field.content_type().map(str::to_owned);
                while let Some(chunk) = field.chunk().await.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        Error::new(
                            ErrorKind::PayloadTooLarge,
                            codes::PAYLOAD_TOO_LARGE,
                            "the upload is too large",
                        )
                    } else {
                        Error::bad_request(
                            codes::INVALID_BODY,
                            format!("cannot read the upload: {e}"),
                        )
                    }
                })? {
                    rx.push(&chunk)?;
                }
                file = Some((rx, fct, fname));
            } else {
                let text = field.text().await.map_err(|e| {
                    Error::bad_request(
                        codes::INVALID_BODY,
                        format!("cannot read field {name:?}: {e}"),
                    )
                })?;
                if !set(&mut s, &name, &text)? {
                    return Err(Error::invalid_field(format!(
                        "unknown form field {name:?}; the file goes in {file_field:?}"
                    )));
                }
            }
        }
        if file.is_none() {
            return Err(Error::invalid_field(format!(
                "the multipart body has no file field named {file_field:?}"
            )));
        }
    } else {
        let mut rx = Receiver::new(max, hint);
        let mut stream = Body::into_data_stream(req.into_body());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Error::bad_request(codes::INVALID_BODY, format!("cannot read the upload: {e}"))
            })?;
            rx.push(&chunk)?;
        }
        let ct = (!ct.is_empty()).then_some(ct);
        file = Some((rx, ct, None));
    }
    let Some((rx, content_type, field_name)) = file else {
        return Err(Error::invalid_field("no file in the request"));
    };
    let (bytes, sha256) = rx.finish();
    Ok(Received {
        bytes,
        sha256,
        content_type,
        filename: s.filename.or(field_name),
        settings_doc_id: s.doc_id,
        settings: (s.chunk_tokens, s.overlap_tokens, s.reuse),
    })
}

impl Received {
    /// The upload for the document service, with the surface's choices.
    pub fn into_upload(
        self,
        job_type: &'static str,
        match_filename: bool,
        reject_unsupported: bool,
    ) -> Upload {
        Upload {
            doc_id: self.settings_doc_id,
            filename: self.filename,
            content_type: self.content_type,
            bytes: self.bytes,
            sha256: self.sha256,
            chunk_tokens: self.settings.0,
            overlap_tokens: self.settings.1,
            reuse: self.settings.2.unwrap_or(true),
            job_type,
            match_filename,
            reject_unsupported,
        }
    }

    pub fn set_doc_id(&mut self, id: DocumentId) {
        self.settings_doc_id = Some(id);
    }
}

/// Upload a document: multipart field `file`, or a raw body with its Content-Type and
/// `?filename=`. Processing runs as a job; the same bytes with the same settings already
/// processed in the account are reused unless `reuse=false`.
#[utoipa::path(post, path = "/v1/sessions/{session}/documents", tag = "documents",
    params(
        ("session" = String, Path, description = "The session's UUID, or its externalId"),
        ("docId" = Option<Uuid>, Query, description = "A caller-chosen id: re-uploading under it replaces the document"),
        ("filename" = Option<String>, Query, description = "For raw bodies (multipart carries its own)"),
        ("chunkTokens" = Option<i64>, Query, description = "100–100,000, default 10,000"),
        ("overlapTokens" = Option<i64>, Query, description = "Below chunkTokens, default 500"),
        ("reuse" = Option<bool>, Query, description = "Default true"),
    ),
    request_body(content = String, description = "multipart/form-data with a `file` field (settings may also be form fields), or the raw file", content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Stored; processing (or reused: already ready)", body = UploadView),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`session_closed`, `document_exists`", body = ErrorBody),
        (status = 413, description = "`payload_too_large` (64 MiB by default)", body = ErrorBody),
        (status = 415, description = "`unsupported_content_type`", body = ErrorBody),
        (status = 422, description = "`empty_document`, `invalid_field`", body = ErrorBody),
    ))]
pub async fn upload(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
    req: Request,
) -> ApiResult<(StatusCode, Json<UploadView>)> {
    let account = caller.account()?;
    let received = receive(&app, req, "file").await?;
    let (doc, job) = app
        .services
        .documents
        .upload(
            account,
            &SessionRef::parse(&session),
            received.into_upload(PROCESS_JOB, false, true),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(UploadView {
            document: doc.into(),
            job: job.into(),
        }),
    ))
}

/// The session's documents, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{session}/documents", tag = "documents",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    responses(
        (status = 200, description = "Documents", body = [DocumentView]),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ))]
pub async fn list(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
) -> ApiResult<Json<Vec<DocumentView>>> {
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let docs = app.services.documents.list(s.id).await?;
    Ok(Json(docs.into_iter().map(DocumentView::from).collect()))
}

fn parse_doc_id(s: &str) -> Result<DocumentId, Error> {
    s.parse()
        .map_err(|_| Error::not_found(codes::DOCUMENT_NOT_FOUND, format!("Document {s} not found")))
}

/// A document with its chunks.
#[utoipa::path(get, path = "/v1/sessions/{session}/documents/{doc}", tag = "documents",
    params(("session" = String, Path), ("doc" = Uuid, Path)),
    responses(
        (status = 200, description = "The document and its chunks in order", body = DocumentWithChunks),
        (status = 404, description = "`session_not_found`, `document_not_found`", body = ErrorBody),
    ))]
pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, doc)): Path<(String, String)>,
) -> ApiResult<Json<DocumentWithChunks>> {
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let doc = app
        .services
        .documents
        .get(s.id, parse_doc_id(&doc)?)
        .await?;
    let chunks = app.services.documents.chunks(doc.id).await?;
    Ok(Json(DocumentWithChunks {
        document: doc.into(),
        chunks: chunks.into_iter().map(ChunkView::from).collect(),
    }))
}

/// Delete a document and its chunks.
#[utoipa::path(delete, path = "/v1/sessions/{session}/documents/{doc}", tag = "documents",
    params(("session" = String, Path), ("doc" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`session_not_found`, `document_not_found`", body = ErrorBody),
    ))]
pub async fn delete(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, doc)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let account = caller.account()?;
    let s = app
        .services
        .sessions
        .get(account, &SessionRef::parse(&session))
        .await?;
    app.services
        .documents
        .delete(s.id, parse_doc_id(&doc)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Full-text search over the session's chunks, best first.
#[utoipa::path(get, path = "/v1/sessions/{session}/chunks/search", tag = "documents",
    params(
        ("session" = String, Path),
        ("q" = String, Query, description = "Words that must all appear (1–512 characters)"),
        ("limit" = Option<u32>, Query, description = "1–100, default 10"),
    ),
    responses(
        (status = 200, description = "Hits, best first", body = [SearchHitView]),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ))]
pub async fn search(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<SearchHitView>>> {
    let mut q = None;
    let mut limit = SEARCH_LIMIT_DEFAULT;
    for (k, v) in query_pairs(query.as_deref()) {
        match k.as_str() {
            "q" => q = Some(v),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=SEARCH_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        bad_query(format!(
                            "limit must be from 1 to {SEARCH_LIMIT_MAX}, got {v:?}"
                        ))
                    })?
            }
            "token" => {}
            other => {
                return Err(bad_query(format!(
                    "unknown query parameter {other:?}; use q and limit"
                ))
                .into())
            }
        }
    }
    let q = q
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| bad_query("q is required: the words to search for"))?;
    if q.chars().count() > SEARCH_QUERY_MAX_CHARS {
        return Err(bad_query(format!(
            "q must be at most {SEARCH_QUERY_MAX_CHARS} characters"
        ))
        .into());
    }
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let hits = app.services.documents.search(s.id, &q, limit).await?;
    Ok(Json(hits.into_iter().map(SearchHitView::from).collect()))
}
