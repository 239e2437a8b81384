//! Documents: upload (streamed raw body with byte progress), list, get, delete, search.

use std::path::Path;
use std::sync::Arc;

use futures::stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::jobs::Job;
use crate::{error_chain, Client, ClientError, Method, Result};

/// Bytes read from the file per body chunk.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// A document as the server renders it (list rows and the upload answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub id: String,
    pub session_id: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: i64,
    pub sha256: String,
    /// `processing`, `ready` or `failed`.
    pub status: String,
    /// `{"code","message"}` when failed.
    #[serde(default)]
    pub error: Option<Value>,
    pub chunk_count: i64,
    pub token_count: i64,
    pub chunk_tokens: i64,
    pub overlap_tokens: i64,
    #[serde(default)]
    pub job_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Document {
    /// Ready or failed: processing is over.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "ready" | "failed")
    }
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    pub id: String,
    /// 0-based.
    pub index: i64,
    pub content: String,
    pub token_count: i64,
    pub char_count: i64,
    pub metadata: Value,
}

/// A document with its chunks in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentWithChunks {
    #[serde(flatten)]
    pub document: Document,
    pub chunks: Vec<Chunk>,
}

/// Answer of an upload: the stored document and its processing job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uploaded {
    pub document: Document,
    pub job: Job,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    pub document_id: String,
    pub chunk_id: String,
    pub index: i64,
    pub score: f64,
    /// The matching passage, matches between « and ».
    pub snippet: String,
}

/// Upload settings; `None` leaves the server default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadOptions {
    pub doc_id: Option<String>,
    /// Defaults to the file's name.
    pub filename: Option<String>,
    /// Sent as the body's `Content-Type`; without it `application/octet-stream` lets the
    /// server detect the type from the filename and the first bytes.
    pub content_type: Option<String>,
    pub chunk_tokens: Option<i64>,
    pub overlap_tokens: Option<i64>,
    /// `Some(false)` processes the bytes again even when an earlier result could be reused.
    pub reuse: Option<bool>,
}

/// Called with the total number of bytes sent so far.
pub type ByteProgress = Arc<dyn Fn(u64) + Send + Sync>;

impl Client {
    fn upload_url(&self, session: &str, opts: &UploadOptions, filename: &str) -> Result<url::Url> {
        let mut url = self.url(&["v1", "sessions", session, "documents"])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("filename", filename);
            if let Some(id) = &opts.doc_id {
                q.append_pair("docId", id);
            }
            if let Some(n) = opts.chunk_tokens {
                q.append_pair("chunkTokens", &n.to_string());
            }
            if let Some(n) = opts.overlap_tokens {
                q.append_pair("overlapTokens", &n.to_string());
            }
            if let Some(r) = opts.reuse {
                q.append_pair("reuse", if r { "true" } else { "false" });
            }
        }
        Ok(url)
    }

    /// Uploads bytes held in memory as a raw body.
    pub async fn upload_document_bytes(
        &self,
        session: &str,
        bytes: Vec<u8>,
        opts: &UploadOptions,
    ) -> Result<Uploaded> {
        let filename = opts.filename.clone().unwrap_or_else(|| "upload".to_owned());
        let url = self.upload_url(session, opts, &filename)?;
        let ct = opts
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let req = self
            .request(Method::POST, url.clone())
            .header(reqwest::header::CONTENT_TYPE, ct)
            .body(bytes);
        Self::json(self.send(req, &url).await?).await
    }

    /// Uploads a file, streaming it from disk; `progress` is told the bytes sent so far after
    /// each chunk. The answer comes once the server stored the file (processing goes on).
    pub async fn upload_document(
        &self,
        session: &str,
        path: &Path,
        opts: &UploadOptions,
        progress: Option<ByteProgress>,
    ) -> Result<Uploaded> {
        let io = |e: std::io::Error| ClientError::Transport(format!("{}: {e}", path.display()));
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let filename = opts.filename.clone().unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "upload".to_owned())
        });
        let url = self.upload_url(session, opts, &filename)?;
        let ct = opts
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let body_stream = stream::unfold(
            (file, 0u64, progress),
            |(mut file, sent, progress)| async move {
                let mut buf = vec![0u8; UPLOAD_CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        let sent = sent + n as u64;
                        if let Some(p) = &progress {
                            p(sent);
                        }
                        Some((Ok::<_, std::io::Error>(buf), (file, sent, progress)))
                    }
                    Err(e) => Some((Err(e), (file, sent, progress))),
                }
            },
        );
        let req = self
            .request(Method::POST, url.clone())
            .header(reqwest::header::CONTENT_TYPE, ct)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(body_stream));
        Self::json(self.send(req, &url).await?).await
    }

    /// The session's documents, oldest first.
    pub async fn list_documents(&self, session: &str) -> Result<Vec<Document>> {
        let url = self.url(&["v1", "sessions", session, "documents"])?;
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    /// A document with its chunks.
    pub async fn get_document(&self, session: &str, doc: &str) -> Result<DocumentWithChunks> {
        let url = self.url(&["v1", "sessions", session, "documents", doc])?;
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }

    /// Deletes a document and its chunks.
    pub async fn delete_document(&self, session: &str, doc: &str) -> Result<()> {
        let url = self.url(&["v1", "sessions", session, "documents", doc])?;
        let resp = self
            .send(self.request(Method::DELETE, url.clone()), &url)
            .await?;
        // Drain the (empty) body so that the connection goes back to the pool.
        resp.bytes().await.map_err(|e| {
            ClientError::Transport(format!("reading the response: {}", error_chain(&e)))
        })?;
        Ok(())
    }

    /// Full-text search over the session's chunks (every word must appear), best first.
    pub async fn search_chunks(
        &self,
        session: &str,
        query: &str,
        limit: Option<u32>,
    ) -> Result<Vec<SearchHit>> {
        let mut url = self.url(&["v1", "sessions", session, "chunks", "search"])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("q", query);
            if let Some(n) = limit {
                q.append_pair("limit", &n.to_string());
            }
        }
        let resp = self
            .send(self.request(Method::GET, url.clone()), &url)
            .await?;
        Self::json(resp).await
    }
}
