use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;
use sessiond_core::document::{
    Chunk, ChunkId, Document, DocumentId, DocumentStatus, NewChunk, SearchHit,
};
use sessiond_core::error::codes;
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::Job;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, JobId, SessionId, Timestamp};
use sessiond_store::{
    DocumentCreate, DocumentDescribe, DocumentOutcome, DocumentSettle, DocumentUpload,
    SessionDocuments, StoreError,
};
use uuid::Uuid;

use crate::{internal, jobs, records, sessions};

const COLUMNS: &str = "id, account_id, session_id, filename, content_type, size_bytes, sha256, \
    status, error, chunk_count, token_count, chunk_tokens, overlap_tokens, job_id, created_at, updated_at";

fn doc_row(r: &Row<'_>) -> rusqlite::Result<Document> {
    let status: String = r.get(7)?;
    let error: Option<String> = r.get(8)?;
    Ok(Document {
        id: DocumentId(r.get(0)?),
        account_id: AccountId(r.get(1)?),
        session_id: SessionId(r.get(2)?),
        filename: r.get(3)?,
        content_type: r.get(4)?,
        size_bytes: r.get(5)?,
        sha256: r.get(6)?,
        status: DocumentStatus::parse(&status).unwrap_or(DocumentStatus::Failed),
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        chunk_count: r.get(9)?,
        token_count: r.get(10)?,
        chunk_tokens: r.get(11)?,
        overlap_tokens: r.get(12)?,
        job_id: r.get::<_, Option<Uuid>>(13)?.map(JobId),
        created_at: Timestamp::from_millis(r.get(14)?),
        updated_at: Timestamp::from_millis(r.get(15)?),
    })
}

fn one(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> Result<Option<Document>, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.query_row(args, doc_row).optional())
        .map_err(internal)
}

fn by_id(conn: &Connection, id: DocumentId) -> Result<Option<Document>, StoreError> {
    one(
        conn,
        &format!("SELECT {COLUMNS} FROM documents WHERE id = ?1"),
        &[id.as_uuid()],
    )
}

fn write(conn: &Connection, d: &Document) -> Result<(), StoreError> {
    let error = d.error.as_ref().map(Value::to_string);
    let values: [&dyn ToSql; 16] = [
        d.id.as_uuid(),
        d.account_id.as_uuid(),
        d.session_id.as_uuid(),
        &d.filename,
        &d.content_type,
        &d.size_bytes,
        &d.sha256,
        &d.status.as_str(),
        &error,
        &d.chunk_count,
        &d.token_count,
        &d.chunk_tokens,
        &d.overlap_tokens,
        &d.job_id.map(|j| j.0),
        &d.created_at.millis(),
        &d.updated_at.millis(),
    ];
    conn.prepare_cached(&format!(
        "INSERT INTO documents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error,
           chunk_count = excluded.chunk_count, token_count = excluded.token_count,
           job_id = excluded.job_id, updated_at = excluded.updated_at"
    ))
    .and_then(|mut st| st.execute(&values[..]))
    .map(|_| ())
    .map_err(internal)
}

fn insert_chunks(conn: &Connection, doc: &Document, chunks: &[NewChunk]) -> Result<(), StoreError> {
    let mut st = conn
        .prepare_cached(
            "INSERT INTO chunks (id, document_id, session_id, idx, content, token_count, char_count, metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(internal)?;
    for c in chunks {
        st.execute(params![
            Uuid::new_v4(),
            doc.id.as_uuid(),
            doc.session_id.as_uuid(),
            c.index,
            c.content,
            c.token_count,
            c.char_count,
            c.metadata.to_string(),
        ])
        .map_err(internal)?;
    }
    Ok(())
}

fn chunks_of(conn: &Connection, id: DocumentId) -> Result<Vec<Chunk>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, document_id, idx, content, token_count, char_count, metadata FROM chunks
             WHERE document_id = ?1 ORDER BY idx",
        )
        .map_err(internal)?;
    let rows = st
        .query_map(params![id.as_uuid()], |r| {
            let metadata: String = r.get(6)?;
            Ok(Chunk {
                id: ChunkId(r.get(0)?),
                document_id: DocumentId(r.get(1)?),
                index: r.get(2)?,
                content: r.get(3)?,
                token_count: r.get(4)?,
                char_count: r.get(5)?,
                metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            })
        })
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}

/// Runs the caller's [`SessionDocuments`] on the session with its ready documents (in `list`
/// order) and their chunks, as this transaction sees them; no hook, no reads.
fn run_documents(
    conn: &Connection,
    session: &mut Session,
    documents: Option<SessionDocuments>,
) -> Result<Vec<Event>, StoreError> {
    let Some(documents) = documents else {
        return Ok(Vec::new());
    };
    let ready = list(conn, session.id)?
        .into_iter()
        .filter(|d| d.status == DocumentStatus::Ready)
        .map(|d| chunks_of(conn, d.id).map(|chunks| (d, chunks)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(documents(session, &ready)?)
}

pub fn create(
    conn: &Connection,
    account: AccountId,
    r: &SessionRef,
    upload: DocumentUpload,
    decide: DocumentCreate,
    documents: Option<SessionDocuments>,
) -> Result<Option<(Document, Job)>, StoreError> {
    let DocumentUpload {
        document: mut doc,
        content,
        mut job,
        reuse,
    } = upload;
    let Some(before) = sessions::get(conn, account, r, true)? else {
        return Ok(None);
    };
    doc.session_id = before.id;
    job.session_id = before.id;
    if let Some(existing) = by_id(conn, doc.id)? {
        if existing.session_id != before.id {
            return Err(Error::conflict(
                codes::DOCUMENT_EXISTS,
                format!("Document {} exists in another session", doc.id),
            )
            .into());
        }
        // Re-uploading under the same id replaces the document.
        conn.execute(
            "DELETE FROM documents WHERE id = ?1",
            params![doc.id.as_uuid()],
        )
        .map_err(internal)?;
    }
    let previous = match &reuse {
        None => None,
        Some(reuse) => one(
            conn,
            &format!(
                "SELECT {COLUMNS} FROM documents WHERE account_id = ?1 AND sha256 = ?2
                 AND chunk_tokens = ?3 AND overlap_tokens = ?4 AND content_type IS ?5
                 AND (?6 = 0 OR filename IS ?7) AND status = 'ready' AND updated_at >= ?8
                 ORDER BY updated_at DESC LIMIT 1"
            ),
            &[
                account.as_uuid(),
                &doc.sha256,
                &doc.chunk_tokens,
                &doc.overlap_tokens,
                &doc.content_type,
                &reuse.match_filename,
                &doc.filename,
                &reuse.since.millis(),
            ],
        )?,
    };
    let mut session = before.clone();
    let decision = decide(&mut doc, &mut job, &session, previous.as_ref())?;
    // The job row must exist before the document names it.
    jobs::upsert(conn, &job)?;
    write(conn, &doc)?;
    conn.prepare_cached("INSERT INTO document_content (document_id, bytes) VALUES (?1, ?2)")
        .and_then(|mut st| st.execute(params![doc.id.as_uuid(), content]))
        .map_err(internal)?;
    if let Some(from) = decision.copy_chunks_from {
        conn.prepare_cached(
            "INSERT INTO chunks (id, document_id, session_id, idx, content, token_count, char_count, metadata)
             SELECT randomblob(16), ?1, ?2, idx, content, token_count, char_count, metadata
             FROM chunks WHERE document_id = ?3 ORDER BY idx",
        )
        .and_then(|mut st| {
            st.execute(params![doc.id.as_uuid(), doc.session_id.as_uuid(), from.as_uuid()])
        })
        .map_err(internal)?;
    }
    let mut events = decision.events;
    events.extend(run_documents(conn, &mut session, documents)?);
    if session != before {
        sessions::write(conn, &session)?;
    } else {
        session = before;
    }
    records::append_events(conn, &session, &events, doc.updated_at)?;
    Ok(Some((doc, job)))
}

pub fn get(
    conn: &Connection,
    session: SessionId,
    id: DocumentId,
) -> Result<Option<Document>, StoreError> {
    Ok(by_id(conn, id)?.filter(|d| d.session_id == session))
}

pub fn find(
    conn: &Connection,
    account: AccountId,
    id: DocumentId,
) -> Result<Option<Document>, StoreError> {
    Ok(by_id(conn, id)?.filter(|d| d.account_id == account))
}

pub fn list(conn: &Connection, session: SessionId) -> Result<Vec<Document>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM documents WHERE session_id = ?1 ORDER BY created_at, rowid"
        ))
        .map_err(internal)?;
    let rows = st
        .query_map(params![session.as_uuid()], doc_row)
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}

pub fn content(conn: &Connection, id: DocumentId) -> Result<Option<Vec<u8>>, StoreError> {
    conn.prepare_cached("SELECT bytes FROM document_content WHERE document_id = ?1")
        .and_then(|mut st| st.query_row(params![id.as_uuid()], |r| r.get(0)).optional())
        .map_err(internal)
}

pub fn list_chunks(conn: &Connection, id: DocumentId) -> Result<Vec<Chunk>, StoreError> {
    chunks_of(conn, id)
}

pub fn finish(
    conn: &Connection,
    account: AccountId,
    id: DocumentId,
    outcome: DocumentOutcome,
    settle: DocumentSettle,
    documents: Option<SessionDocuments>,
) -> Result<Option<(Document, Job)>, StoreError> {
    let Some(mut doc) = find(conn, account, id)? else {
        return Ok(None);
    };
    let Some(mut job) = doc
        .job_id
        .map(|j| jobs::get_by_id(conn, j))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    let Some(before) = sessions::get(conn, account, &SessionRef::Id(doc.session_id), true)? else {
        return Ok(None);
    };
    match &outcome {
        DocumentOutcome::Ready(chunks) => {
            conn.execute(
                "DELETE FROM chunks WHERE document_id = ?1",
                params![doc.id.as_uuid()],
            )
            .map_err(internal)?;
            insert_chunks(conn, &doc, chunks)?;
            doc.status = DocumentStatus::Ready;
            doc.chunk_count = chunks.len() as i64;
            doc.token_count = chunks.iter().map(|c| c.token_count).sum();
        }
        DocumentOutcome::Failed => doc.status = DocumentStatus::Failed,
    }
    let mut session = before.clone();
    let mut events = settle(&mut doc, &mut job, &mut session)?;
    write(conn, &doc)?;
    jobs::upsert(conn, &job)?;
    events.extend(run_documents(conn, &mut session, documents)?);
    if session != before {
        sessions::write(conn, &session)?;
    }
    records::append_events(conn, &session, &events, doc.updated_at)?;
    Ok(Some((doc, job)))
}

pub fn delete(
    conn: &Connection,
    session: SessionId,
    id: DocumentId,
    describe: DocumentDescribe,
    documents: Option<SessionDocuments>,
) -> Result<Option<(Document, i64)>, StoreError> {
    let Some(doc) = get(conn, session, id)? else {
        return Ok(None);
    };
    let chunks: i64 = conn
        .query_row(
            "SELECT count(*) FROM chunks WHERE document_id = ?1",
            params![id.as_uuid()],
            |r| r.get(0),
        )
        .map_err(internal)?;
    conn.execute("DELETE FROM documents WHERE id = ?1", params![id.as_uuid()])
        .map_err(internal)?;
    // The session's data is only needed (and only rewritten) for the caller's hook.
    let with_data = documents.is_some();
    if let Some(mut s) = sessions::get(conn, doc.account_id, &SessionRef::Id(session), with_data)? {
        let mut events = describe(&doc);
        let changes = run_documents(conn, &mut s, documents)?;
        if !changes.is_empty() {
            sessions::write(conn, &s)?;
        }
        events.extend(changes);
        records::append_events(conn, &s, &events, Timestamp::now())?;
    }
    Ok(Some((doc, chunks)))
}

/// Turns free text into an FTS5 query: every word must appear (quoted, so operators in the
/// input are taken literally).
pub fn fts_query(q: &str) -> String {
    q.split_whitespace()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn search(
    conn: &Connection,
    session: SessionId,
    query: &str,
    limit: usize,
) -> Result<Vec<SearchHit>, StoreError> {
    let q = fts_query(query);
    if q.is_empty() {
        return Ok(Vec::new());
    }
    let mut st = conn
        .prepare_cached(
            "SELECT c.document_id, c.id, c.idx, bm25(chunks_fts) AS rank,
                    snippet(chunks_fts, 0, '«', '»', '…', 24)
             FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid
             WHERE chunks_fts MATCH ?1 AND c.session_id = ?2
             ORDER BY rank LIMIT ?3",
        )
        .map_err(internal)?;
    let rows = st
        .query_map(params![q, session.as_uuid(), limit as i64], |r| {
            Ok(SearchHit {
                document_id: DocumentId(r.get(0)?),
                chunk_id: ChunkId(r.get(1)?),
                index: r.get(2)?,
                // bm25 is lower-is-better and negative; flip it so higher is better.
                score: -r.get::<_, f64>(3)?,
                snippet: r.get(4)?,
            })
        })
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}
