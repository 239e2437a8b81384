//! Documents uploaded to a session, and the chunks they are cut into.

use serde_json::{json, Value};

use crate::event::Event;
use crate::job::JobId;
use crate::{AccountId, SessionId, Timestamp};

crate::ids::uuid_id!(
    /// A document's id (server-chosen, or the caller's `docId`).
    DocumentId
);
crate::ids::uuid_id!(
    /// A chunk's id.
    ChunkId
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentStatus {
    Processing,
    Ready,
    Failed,
}

impl DocumentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            DocumentStatus::Processing => "processing",
            DocumentStatus::Ready => "ready",
            DocumentStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "processing" => DocumentStatus::Processing,
            "ready" => DocumentStatus::Ready,
            "failed" => DocumentStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: DocumentId,
    pub account_id: AccountId,
    pub session_id: SessionId,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: i64,
    pub sha256: String,
    pub status: DocumentStatus,
    /// `{"code","message"}` when failed.
    pub error: Option<Value>,
    pub chunk_count: i64,
    pub token_count: i64,
    pub chunk_tokens: i64,
    pub overlap_tokens: i64,
    /// The processing job.
    pub job_id: Option<JobId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A chunk ready to store (produced by the parser, or copied from an earlier document).
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    pub index: i64,
    pub content: String,
    pub token_count: i64,
    pub char_count: i64,
    pub metadata: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: ChunkId,
    pub document_id: DocumentId,
    pub index: i64,
    pub content: String,
    pub token_count: i64,
    pub char_count: i64,
    pub metadata: Value,
}

/// A full-text search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub document_id: DocumentId,
    pub chunk_id: ChunkId,
    pub index: i64,
    /// Higher is better.
    pub score: f64,
    pub snippet: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentEventKind {
    Uploaded,
    Ready,
    Failed,
    Reused,
    Deleted,
}

impl DocumentEventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DocumentEventKind::Uploaded => "document.uploaded",
            DocumentEventKind::Ready => "document.ready",
            DocumentEventKind::Failed => "document.failed",
            DocumentEventKind::Reused => "document.reused",
            DocumentEventKind::Deleted => "document.deleted",
        }
    }
}

impl Document {
    pub fn event(&self, kind: DocumentEventKind) -> Event {
        Event::Document {
            kind,
            detail: json!({
                "documentId": self.id.to_string(),
                "filename": self.filename,
                "status": self.status.as_str(),
                "chunkCount": self.chunk_count,
                "tokenCount": self.token_count,
                "jobId": self.job_id.map(|j| j.to_string()),
                "error": self.error,
            }),
        }
    }
}
