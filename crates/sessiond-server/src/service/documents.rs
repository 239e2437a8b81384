//! Documents: upload, server-side processing (a built-in job), chunks, search.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sessiond_core::document::{
    Chunk, Document, DocumentEventKind, DocumentId, DocumentStatus, NewChunk, SearchHit,
};
use sessiond_core::error::codes;
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{CreateJobInput, Job, JobStatus};
use sessiond_core::limits::*;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, ErrorKind, SessionId, Timestamp};
use sessiond_store::{
    DocumentDecision, DocumentOutcome, DocumentReuse, DocumentUpload, Hub, SessionDocuments, Store,
};
use tokio_util::sync::CancellationToken;
use tracing::instrument;
use uuid::Uuid;

use super::jobs::{Claim, JobService};

/// The native processing job type.
pub const PROCESS_JOB: &str = "document.process";
pub use super::jobs::SERVER_JOB_TYPES as BUILTIN_JOB_TYPES;
/// The midPilot compat upload's processing job type (design/compat/MIDPILOT.md).
pub const DOCUMENTATION_JOB: &str = "documentation.processUpload";
/// The session data key the midPilot surface keeps the documentation items under.
pub const DOCUMENTATION_ITEMS_KEY: &str = "documentationItems";

/// The session data key that holds the processing job id of a midPilot upload.
pub fn documentation_job_key(doc: DocumentId) -> String {
    format!("{DOCUMENTATION_JOB}_{doc}_job_id")
}

/// A chunk as a midPilot DocumentationItem: `page_id` is the document, `url`
/// `upload://{filename}`, `scrape_job_ids` its processing job, metadata snake_case.
pub fn documentation_item(doc: &Document, chunk: &Chunk) -> Value {
    let metadata = serde_json::from_value::<sessiond_docs::ChunkMetadata>(chunk.metadata.clone())
        .map(|m| m.to_snake_case_json())
        .unwrap_or_else(|_| chunk.metadata.clone());
    json!({
        "id": chunk.id.to_string(),
        "page_id": doc.id.to_string(),
        "source": "upload",
        "scrape_job_ids": doc.job_id.map(|j| vec![j.to_string()]),
        "url": doc.filename.as_ref().map(|f| format!("upload://{f}")),
        "summary": chunk.metadata.get("summary").cloned().unwrap_or(Value::Null),
        "content": chunk.content,
        "metadata": metadata,
    })
}

/// Every chunk of the given ready documents, in order, as midPilot DocumentationItems.
fn documentation_items_of(docs: &[(Document, Vec<Chunk>)]) -> Vec<Value> {
    docs.iter()
        .flat_map(|(doc, chunks)| chunks.iter().map(move |c| documentation_item(doc, c)))
        .collect()
}

/// The midPilot view of a session's documents, kept by the store in the same transaction as
/// the document change: `documentationItems` (every ready document's items) and `extra` keys,
/// each replaced whole (`Session::replace_data_keys`). A session no longer active is left alone
/// (the document change still commits).
fn documentation_keys(mut extra: Map<String, Value>) -> SessionDocuments {
    Box::new(
        move |s: &mut Session, docs: &[(Document, Vec<Chunk>)]| -> Result<Vec<Event>, Error> {
            let now = Timestamp::now();
            if !s.is_active(now) {
                return Ok(Vec::new());
            }
            extra.insert(
                DOCUMENTATION_ITEMS_KEY.to_owned(),
                Value::Array(documentation_items_of(docs)),
            );
            Ok(s.replace_data_keys(extra, now)?.into_iter().collect())
        },
    )
}

/// The keys a midPilot upload's document change writes: its job id, and the items.
fn documentation_upload_keys(doc: DocumentId, job: sessiond_core::JobId) -> SessionDocuments {
    let mut keys = Map::new();
    keys.insert(documentation_job_key(doc), json!(job.to_string()));
    documentation_keys(keys)
}

/// Lease of a processing job; progress heartbeats extend it.
const PROCESS_LEASE_SECONDS: i64 = 300;

#[derive(Clone)]
pub struct DocumentService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    jobs: JobService,
    shutdown: CancellationToken,
    reuse_window_seconds: i64,
}

/// An upload as a surface received it.
pub struct Upload {
    pub doc_id: Option<DocumentId>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`, computed while receiving them.
    pub sha256: String,
    pub chunk_tokens: Option<i64>,
    pub overlap_tokens: Option<i64>,
    pub reuse: bool,
    /// The processing job's type (compat surfaces use their own).
    pub job_type: &'static str,
    /// Reuse also requires the same filename.
    pub match_filename: bool,
    /// Refuse a type known to be unsupported with 415 (else the document fails later).
    pub reject_unsupported: bool,
}

fn not_found(id: DocumentId) -> Error {
    Error::not_found(
        codes::DOCUMENT_NOT_FOUND,
        format!("Document {id} not found"),
    )
}

fn chunk_settings(chunk: Option<i64>, overlap: Option<i64>) -> Result<(i64, i64), Error> {
    let chunk = chunk.unwrap_or(CHUNK_TOKENS_DEFAULT);
    if !(CHUNK_TOKENS_MIN..=CHUNK_TOKENS_MAX).contains(&chunk) {
        return Err(Error::invalid_field(format!(
            "chunkTokens must be from {CHUNK_TOKENS_MIN} to {CHUNK_TOKENS_MAX}"
        )));
    }
    // The default overlap shrinks with small windows so that it stays below them.
    let overlap = overlap.unwrap_or(OVERLAP_TOKENS_DEFAULT.min(chunk / 2));
    if overlap < 0 || overlap >= chunk {
        return Err(Error::invalid_field(
            "overlapTokens must be at least 0 and below chunkTokens",
        ));
    }
    Ok((chunk, overlap))
}

impl DocumentService {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        jobs: JobService,
        shutdown: CancellationToken,
        reuse_window_seconds: i64,
    ) -> Self {
        Self {
            store,
            hub,
            jobs,
            shutdown,
            reuse_window_seconds,
        }
    }

    /// Stores the upload and queues its processing, or reuses the chunks of the same bytes
    /// processed earlier in the account with the same settings.
    #[instrument(skip_all, fields(session = %session, bytes = up.bytes.len()))]
    pub async fn upload(
        &self,
        account: AccountId,
        session: &SessionRef,
        up: Upload,
    ) -> Result<(Document, Job), Error> {
        let (chunk_tokens, overlap_tokens) = chunk_settings(up.chunk_tokens, up.overlap_tokens)?;
        if let Some(f) = &up.filename {
            if f.chars().count() > FILENAME_MAX_CHARS || f.chars().any(char::is_control) {
                return Err(Error::invalid_field(format!(
                    "filename must be at most {FILENAME_MAX_CHARS} characters without control characters"
                )));
            }
        }
        if up.bytes.is_empty() {
            return Err(Error::invalid(
                codes::EMPTY_DOCUMENT,
                format!(
                    "the uploaded file{} is empty",
                    up.filename
                        .as_deref()
                        .map(|f| format!(" {f}"))
                        .unwrap_or_default()
                ),
            ));
        }
        // Store the resolved type, so that reuse compares what the parser will see.
        let prefix = &up.bytes[..up.bytes.len().min(8192)];
        let content_type = match sessiond_docs::resolve(
            up.content_type.as_deref(),
            up.filename.as_deref(),
            prefix,
        ) {
            Ok(d) => Some(d.content_type),
            Err(e) if up.reject_unsupported => {
                return Err(Error::new(
                    ErrorKind::UnsupportedMediaType,
                    codes::UNSUPPORTED_CONTENT_TYPE,
                    e.to_string(),
                ))
            }
            // The document fails when processed, with the parser's message.
            Err(e) => e.content_type,
        };
        let now = Timestamp::now();
        let doc = Document {
            id: up.doc_id.unwrap_or_else(DocumentId::random),
            account_id: account,
            session_id: SessionId(Uuid::nil()),
            filename: up.filename.clone(),
            content_type: content_type.clone(),
            size_bytes: up.bytes.len() as i64,
            sha256: up.sha256.clone(),
            status: DocumentStatus::Processing,
            error: None,
            chunk_count: 0,
            token_count: 0,
            chunk_tokens,
            overlap_tokens,
            job_id: None,
            created_at: now,
            updated_at: now,
        };
        let mut input = json!({
            "documentId": doc.id.to_string(),
            "sha256": up.sha256,
            "sizeBytes": doc.size_bytes,
            "contentType": content_type,
            "chunkTokens": chunk_tokens,
            "overlapTokens": overlap_tokens,
        });
        if up.match_filename {
            input["filename"] = json!(up.filename);
        }
        // The processing job is an ordinary job: reuse is decided per document, not per job.
        // A parse failure is final; attempts only cover a node dying mid-way (its lease expires).
        let (job, _) = CreateJobInput {
            kind: up.job_type.to_owned(),
            input: Some(input),
            reuse: false,
            output_key: None,
            max_attempts: Some(3),
        }
        .validate(account, now)?;
        let reuse = up.reuse.then(|| DocumentReuse {
            since: now.plus_seconds(-self.reuse_window_seconds),
            match_filename: up.match_filename,
        });
        // A midPilot upload writes its job-id key and the session's items with the document.
        let keys =
            (up.job_type == DOCUMENTATION_JOB).then(|| documentation_upload_keys(doc.id, job.id));
        let (doc, job) = self
            .store
            .create_document(
                account,
                session,
                DocumentUpload {
                    document: doc,
                    content: up.bytes,
                    job,
                    reuse,
                },
                Box::new(
                    move |doc: &mut Document,
                          job: &mut Job,
                          s: &Session,
                          previous: Option<&Document>| {
                        s.ensure_active(now)?;
                        doc.job_id = Some(job.id);
                        let mut events = vec![doc.event(DocumentEventKind::Uploaded)];
                        let Some(previous) = previous else {
                            events.push(job.created_event());
                            return Ok(DocumentDecision {
                                events,
                                copy_chunks_from: None,
                            });
                        };
                        doc.status = DocumentStatus::Ready;
                        doc.chunk_count = previous.chunk_count;
                        doc.token_count = previous.token_count;
                        job.succeed_reused(
                            previous.job_id,
                            json!({
                                "documentId": doc.id.to_string(),
                                "reusedDocumentId": previous.id.to_string(),
                                "chunkCount": previous.chunk_count,
                                "tokenCount": previous.token_count,
                            }),
                            now,
                        );
                        events.push(job.created_event());
                        events.push(doc.event(DocumentEventKind::Reused));
                        Ok(DocumentDecision {
                            events,
                            copy_chunks_from: Some(previous.id),
                        })
                    },
                ),
                keys,
            )
            .await?
            .ok_or_else(|| Error::session_not_found(session))?;
        self.hub
            .channel_changed(doc.session_id, sessiond_core::event::EVENTS_CHANNEL);
        if job.status == JobStatus::Queued {
            self.hub.job_queued();
        }
        Ok((doc, job))
    }

    pub async fn list(&self, session: SessionId) -> Result<Vec<Document>, Error> {
        Ok(self.store.list_documents(session).await?)
    }

    pub async fn get(&self, session: SessionId, id: DocumentId) -> Result<Document, Error> {
        self.store
            .get_document(session, id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    pub async fn chunks(&self, id: DocumentId) -> Result<Vec<Chunk>, Error> {
        Ok(self.store.list_chunks(id).await?)
    }

    /// Deletes the document and its chunks; the number of chunks removed.
    pub async fn delete(&self, session: SessionId, id: DocumentId) -> Result<i64, Error> {
        self.delete_keeping(session, id, None).await
    }

    /// Deletes the document as [`Self::delete`] does, rewriting the session's
    /// `documentationItems` in the same transaction (the midPilot surface).
    pub async fn delete_documentation(
        &self,
        session: SessionId,
        id: DocumentId,
    ) -> Result<i64, Error> {
        self.delete_keeping(session, id, Some(documentation_keys(Map::new())))
            .await
    }

    async fn delete_keeping(
        &self,
        session: SessionId,
        id: DocumentId,
        keys: Option<SessionDocuments>,
    ) -> Result<i64, Error> {
        let (_, chunks) = self
            .store
            .delete_document(
                session,
                id,
                Box::new(|d: &Document| vec![d.event(DocumentEventKind::Deleted)]),
                keys,
            )
            .await?
            .ok_or_else(|| not_found(id))?;
        self.hub
            .channel_changed(session, sessiond_core::event::EVENTS_CHANNEL);
        Ok(chunks)
    }

    pub async fn search(
        &self,
        session: SessionId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SearchHit>, Error> {
        Ok(self.store.search_chunks(session, query, limit).await?)
    }

    /// Every chunk of the session's ready documents, oldest document first, as midPilot
    /// DocumentationItems.
    pub async fn documentation_items(&self, session: SessionId) -> Result<Vec<Value>, Error> {
        let mut docs = Vec::new();
        for doc in self.list(session).await? {
            if doc.status == DocumentStatus::Ready {
                let chunks = self.chunks(doc.id).await?;
                docs.push((doc, chunks));
            }
        }
        Ok(documentation_items_of(&docs))
    }

    /// Runs `n` processors that claim the built-in job types until shutdown.
    pub fn spawn_processors(&self, n: usize) {
        for i in 0..n {
            let svc = self.clone();
            tokio::spawn(async move {
                while !svc.shutdown.is_cancelled() {
                    let claim = Claim {
                        types: BUILTIN_JOB_TYPES.iter().map(|s| s.to_string()).collect(),
                        lease_seconds: PROCESS_LEASE_SECONDS,
                        wait: Duration::from_secs(20),
                        worker_id: Some(format!("sessiond-processor-{i}")),
                    };
                    // Processing jobs exist in every account: claim across all of them.
                    match svc.jobs.claim_any(claim).await {
                        Ok(Some(job)) => svc.process(job).await,
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "document processor cannot claim; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = svc.shutdown.cancelled() => return,
                            }
                        }
                    }
                }
            });
        }
    }

    #[instrument(skip_all, fields(job = %job.id))]
    async fn process(&self, job: Job) {
        let account = job.account_id;
        let Some(lease) = job.lease_id else { return };
        let doc_id = job
            .input
            .get("documentId")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<DocumentId>().ok());
        let doc = match doc_id {
            Some(id) => self.store.find_document(account, id).await.ok().flatten(),
            None => None,
        };
        let (Some(doc), Some(bytes)) = (
            doc.clone(),
            match &doc {
                Some(d) => self.store.document_content(d.id).await.ok().flatten(),
                None => None,
            },
        ) else {
            // The document went away (deleted): nothing to do.
            let _ = self.jobs.cancel(account, job.id).await;
            return;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
        let opts = sessiond_docs::ChunkOptions {
            chunk_tokens: usize::try_from(doc.chunk_tokens).unwrap_or(0),
            overlap_tokens: usize::try_from(doc.overlap_tokens).unwrap_or(0),
        };
        let content_type = doc.content_type.clone();
        let filename = doc.filename.clone();
        let work = tokio::task::spawn_blocking(move || {
            sessiond_docs::process_with_progress(
                &bytes,
                content_type.as_deref(),
                filename.as_deref(),
                &opts,
                &mut |p: sessiond_docs::Progress| {
                    let _ = tx.send(p.fraction);
                },
            )
        });
        tokio::pin!(work);
        // Report progress (which also extends the lease) at most once a second.
        let mut last = tokio::time::Instant::now();
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                Some(fraction) = rx.recv() => {
                    if last.elapsed() >= Duration::from_secs(1) {
                        last = tokio::time::Instant::now();
                        let progress = json!({"stage": "processing", "fraction": fraction});
                        if self.jobs.heartbeat(account, job.id, lease, Some(progress)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let now = Timestamp::now();
        let job_id = job.id;
        // A midPilot upload's items land in the session with the document's new state.
        let keys =
            || (job.kind == DOCUMENTATION_JOB).then(|| documentation_upload_keys(doc.id, job_id));
        let outcome = match result {
            Ok(Ok(processed)) => Ok(processed
                .chunks
                .into_iter()
                .map(|c| NewChunk {
                    index: c.index as i64,
                    content: c.content,
                    token_count: c.token_count as i64,
                    char_count: c.char_count as i64,
                    metadata: serde_json::to_value(&c.metadata).unwrap_or(Value::Null),
                })
                .collect::<Vec<_>>()),
            Ok(Err(e)) => Err(json!({"code": e.code(), "message": e.to_string()})),
            Err(e) => {
                Err(json!({"code": "internal", "message": format!("processing crashed: {e}")}))
            }
        };
        let finished = match outcome {
            Ok(chunks) => {
                self.store
                    .finish_document(
                        account,
                        doc.id,
                        DocumentOutcome::Ready(chunks),
                        Box::new(move |d: &mut Document, j: &mut Job, s: &mut Session| {
                            superseded(j, job_id)?;
                            d.updated_at = now;
                            let result = json!({
                                "documentId": d.id.to_string(),
                                "chunkCount": d.chunk_count,
                                "tokenCount": d.token_count,
                            });
                            let mut events = j.complete(s, lease, result, now)?;
                            events.push(d.event(DocumentEventKind::Ready));
                            Ok(events)
                        }),
                        keys(),
                    )
                    .await
            }
            Err(error) => {
                self.store
                    .finish_document(
                        account,
                        doc.id,
                        DocumentOutcome::Failed,
                        Box::new(move |d: &mut Document, j: &mut Job, s: &mut Session| {
                            superseded(j, job_id)?;
                            d.updated_at = now;
                            d.error = Some(error.clone());
                            let mut events = j.fail(s, lease, error, false, now)?;
                            events.push(d.event(DocumentEventKind::Failed));
                            Ok(events)
                        }),
                        keys(),
                    )
                    .await
            }
        };
        match finished {
            Ok(Some((d, _))) => {
                self.hub
                    .channel_changed(d.session_id, sessiond_core::event::EVENTS_CHANNEL);
            }
            Ok(None) => {}
            Err(sessiond_store::StoreError::Rejected(e))
                if e.code == codes::DOCUMENT_SUPERSEDED =>
            {
                // The document was uploaded again meanwhile: this run's work is void.
                let _ = self.jobs.cancel(account, job_id).await;
            }
            Err(e) => tracing::warn!(error = %e, "finishing a document failed"),
        }
    }
}

/// Refuses to finish a document with the result of a job that is no longer its job (it was
/// re-uploaded under the same id while this job ran).
fn superseded(current: &Job, finishing: sessiond_core::JobId) -> Result<(), Error> {
    if current.id == finishing {
        Ok(())
    } else {
        Err(Error::conflict(
            codes::DOCUMENT_SUPERSEDED,
            "the document was uploaded again while it was being processed",
        ))
    }
}
