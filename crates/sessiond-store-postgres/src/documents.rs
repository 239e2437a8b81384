//! Documents, their bytes, their chunks, and full-text search over the chunks.
//!
//! Lock order (shared by every write here and by session deletion): document, then job, then
//! session, then channel.

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
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::sessions::{self, Lock};
use crate::{db_err, internal, jobs, records, run_rule, sql_limit, sqlstate, UNIQUE_VIOLATION};

const COLUMNS: &str = "id, account_id, session_id, filename, content_type, size_bytes, sha256, \
    status, error::text, chunk_count, token_count, chunk_tokens, overlap_tokens, job_id, \
    created_at, updated_at";

fn doc_row(r: &PgRow) -> Result<Document, StoreError> {
    let get = |i: usize| -> Result<i64, StoreError> { r.try_get(i).map_err(db_err) };
    let status: String = r.try_get(7).map_err(db_err)?;
    let error: Option<String> = r.try_get(8).map_err(db_err)?;
    Ok(Document {
        id: DocumentId(r.try_get(0).map_err(db_err)?),
        account_id: AccountId(r.try_get(1).map_err(db_err)?),
        session_id: SessionId(r.try_get(2).map_err(db_err)?),
        filename: r.try_get(3).map_err(db_err)?,
        content_type: r.try_get(4).map_err(db_err)?,
        size_bytes: get(5)?,
        sha256: r.try_get(6).map_err(db_err)?,
        status: DocumentStatus::parse(&status).unwrap_or(DocumentStatus::Failed),
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        chunk_count: get(9)?,
        token_count: get(10)?,
        chunk_tokens: get(11)?,
        overlap_tokens: get(12)?,
        job_id: r.try_get::<Option<Uuid>, _>(13).map_err(db_err)?.map(JobId),
        created_at: Timestamp::from_millis(get(14)?),
        updated_at: Timestamp::from_millis(get(15)?),
    })
}

async fn by_id(
    conn: &mut PgConnection,
    id: DocumentId,
    lock: bool,
) -> Result<Option<Document>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM documents WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(doc_row).transpose()
}

async fn write(conn: &mut PgConnection, d: &Document) -> Result<(), StoreError> {
    let r = sqlx::query(
        "INSERT INTO documents (id, account_id, session_id, filename, content_type, size_bytes,
            sha256, status, error, chunk_count, token_count, chunk_tokens, overlap_tokens, job_id,
            created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error,
           chunk_count = excluded.chunk_count, token_count = excluded.token_count,
           job_id = excluded.job_id, updated_at = excluded.updated_at",
    )
    .bind(d.id.0)
    .bind(d.account_id.0)
    .bind(d.session_id.0)
    .bind(&d.filename)
    .bind(&d.content_type)
    .bind(d.size_bytes)
    .bind(&d.sha256)
    .bind(d.status.as_str())
    .bind(d.error.as_ref().map(Value::to_string))
    .bind(d.chunk_count)
    .bind(d.token_count)
    .bind(d.chunk_tokens)
    .bind(d.overlap_tokens)
    .bind(d.job_id.map(|j| j.0))
    .bind(d.created_at.millis())
    .bind(d.updated_at.millis())
    .execute(conn)
    .await;
    r.map(|_| ()).map_err(db_err)
}

async fn insert_chunks(
    conn: &mut PgConnection,
    doc: &Document,
    chunks: &[NewChunk],
) -> Result<(), StoreError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = chunks.iter().map(|_| Uuid::new_v4()).collect();
    let idx: Vec<i64> = chunks.iter().map(|c| c.index).collect();
    let content: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
    let tokens: Vec<i64> = chunks.iter().map(|c| c.token_count).collect();
    let chars: Vec<i64> = chunks.iter().map(|c| c.char_count).collect();
    let metadata: Vec<String> = chunks.iter().map(|c| c.metadata.to_string()).collect();
    sqlx::query(
        "INSERT INTO chunks (id, document_id, session_id, idx, content, token_count, char_count,
            metadata)
         SELECT u.id, $1, $2, u.idx, u.content, u.tokens, u.chars, u.metadata::json
         FROM unnest($3::uuid[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::text[])
           AS u(id, idx, content, tokens, chars, metadata)",
    )
    .bind(doc.id.0)
    .bind(doc.session_id.0)
    .bind(&ids)
    .bind(&idx)
    .bind(&content)
    .bind(&tokens)
    .bind(&chars)
    .bind(&metadata)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(db_err)
}

pub async fn list_chunks(
    conn: &mut PgConnection,
    id: DocumentId,
) -> Result<Vec<Chunk>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, document_id, idx, content, token_count, char_count, metadata::text
         FROM chunks WHERE document_id = $1 ORDER BY idx",
    )
    .bind(id.0)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            let metadata: String = r.try_get(6).map_err(db_err)?;
            Ok(Chunk {
                id: ChunkId(r.try_get(0).map_err(db_err)?),
                document_id: DocumentId(r.try_get(1).map_err(db_err)?),
                index: r.try_get(2).map_err(db_err)?,
                content: r.try_get(3).map_err(db_err)?,
                token_count: r.try_get(4).map_err(db_err)?,
                char_count: r.try_get(5).map_err(db_err)?,
                metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            })
        })
        .collect()
}

fn exists_elsewhere(id: DocumentId) -> StoreError {
    Error::conflict(
        codes::DOCUMENT_EXISTS,
        format!("Document {id} exists in another session"),
    )
    .into()
}

/// Runs the caller's [`SessionDocuments`] on the session (locked by the caller) with its ready
/// documents (in `list` order) and their chunks, as this transaction sees them; no hook, no
/// reads. Read after the session lock, so a document another transaction finished before it
/// released the session is seen.
async fn run_documents(
    conn: &mut PgConnection,
    session: &mut Session,
    documents: Option<SessionDocuments>,
) -> Result<Vec<Event>, StoreError> {
    let Some(documents) = documents else {
        return Ok(Vec::new());
    };
    let mut ready = Vec::new();
    for d in list(conn, session.id).await? {
        if d.status == DocumentStatus::Ready {
            let chunks = list_chunks(conn, d.id).await?;
            ready.push((d, chunks));
        }
    }
    run_rule(|| documents(session, &ready))
}

pub async fn create(
    conn: &mut PgConnection,
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
    // The document a re-upload replaces is locked before the session (the lock order).
    let existing = by_id(conn, doc.id, true).await?;
    let Some(before) = sessions::get(conn, account, r, true, Lock::Update).await? else {
        return Ok(None);
    };
    doc.session_id = before.id;
    job.session_id = before.id;
    if let Some(existing) = existing {
        if existing.session_id != before.id {
            return Err(exists_elsewhere(doc.id));
        }
        // Re-uploading under the same id replaces the document.
        sqlx::query("DELETE FROM documents WHERE id = $1")
            .bind(doc.id.0)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    let previous = match &reuse {
        None => None,
        Some(reuse) => {
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM documents WHERE account_id = $1 AND sha256 = $2
                 AND chunk_tokens = $3 AND overlap_tokens = $4
                 AND content_type IS NOT DISTINCT FROM $5
                 AND (NOT $6 OR filename IS NOT DISTINCT FROM $7)
                 AND status = 'ready' AND updated_at >= $8
                 ORDER BY updated_at DESC, qseq DESC LIMIT 1"
            )))
            .bind(account.0)
            .bind(&doc.sha256)
            .bind(doc.chunk_tokens)
            .bind(doc.overlap_tokens)
            .bind(&doc.content_type)
            .bind(reuse.match_filename)
            .bind(&doc.filename)
            .bind(reuse.since.millis())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
            row.as_ref().map(doc_row).transpose()?
        }
    };
    let mut session = before.clone();
    let decision = run_rule(|| decide(&mut doc, &mut job, &session, previous.as_ref()))?;
    jobs::upsert(conn, &job).await?;
    write(conn, &doc).await?;
    let stored = sqlx::query("INSERT INTO document_content (document_id, bytes) VALUES ($1, $2)")
        .bind(doc.id.0)
        .bind(&content)
        .execute(&mut *conn)
        .await;
    match stored {
        Ok(_) => {}
        // Another upload of the same new id committed first.
        Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
            return Err(Error::conflict(
                codes::DOCUMENT_EXISTS,
                format!("Document {} is being uploaded concurrently", doc.id),
            )
            .into())
        }
        Err(e) => return Err(db_err(e)),
    }
    if let Some(from) = decision.copy_chunks_from {
        sqlx::query(
            "INSERT INTO chunks (id, document_id, session_id, idx, content, token_count,
                char_count, metadata)
             SELECT gen_random_uuid(), $1, $2, idx, content, token_count, char_count, metadata
             FROM chunks WHERE document_id = $3 ORDER BY idx",
        )
        .bind(doc.id.0)
        .bind(doc.session_id.0)
        .bind(from.0)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    let mut events = decision.events;
    events.extend(run_documents(conn, &mut session, documents).await?);
    if session != before {
        sessions::write(conn, &session).await?;
    } else {
        session = before;
    }
    records::append_events(conn, &session, &events, doc.updated_at).await?;
    Ok(Some((doc, job)))
}

pub async fn get(
    conn: &mut PgConnection,
    session: SessionId,
    id: DocumentId,
) -> Result<Option<Document>, StoreError> {
    Ok(by_id(conn, id, false)
        .await?
        .filter(|d| d.session_id == session))
}

pub async fn find(
    conn: &mut PgConnection,
    account: AccountId,
    id: DocumentId,
) -> Result<Option<Document>, StoreError> {
    Ok(by_id(conn, id, false)
        .await?
        .filter(|d| d.account_id == account))
}

pub async fn list(
    conn: &mut PgConnection,
    session: SessionId,
) -> Result<Vec<Document>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM documents WHERE session_id = $1 ORDER BY created_at, qseq"
    )))
    .bind(session.0)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter().map(doc_row).collect()
}

pub async fn content(
    conn: &mut PgConnection,
    id: DocumentId,
) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar("SELECT bytes FROM document_content WHERE document_id = $1")
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(db_err)
}

pub async fn finish(
    conn: &mut PgConnection,
    account: AccountId,
    id: DocumentId,
    outcome: DocumentOutcome,
    settle: DocumentSettle,
    documents: Option<SessionDocuments>,
) -> Result<Option<(Document, Job)>, StoreError> {
    let Some(mut doc) = by_id(conn, id, true)
        .await?
        .filter(|d| d.account_id == account)
    else {
        return Ok(None);
    };
    let Some(job_id) = doc.job_id else {
        return Ok(None);
    };
    let Some(mut job) = jobs::get_by_id(conn, job_id, true).await? else {
        return Ok(None);
    };
    let Some(before) = sessions::get(
        conn,
        account,
        &SessionRef::Id(doc.session_id),
        true,
        Lock::Update,
    )
    .await?
    else {
        return Ok(None);
    };
    match &outcome {
        DocumentOutcome::Ready(chunks) => {
            sqlx::query("DELETE FROM chunks WHERE document_id = $1")
                .bind(doc.id.0)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
            insert_chunks(conn, &doc, chunks).await?;
            doc.status = DocumentStatus::Ready;
            doc.chunk_count = chunks.len() as i64;
            doc.token_count = chunks.iter().map(|c| c.token_count).sum();
        }
        DocumentOutcome::Failed => doc.status = DocumentStatus::Failed,
    }
    let mut session = before.clone();
    let mut events = run_rule(|| settle(&mut doc, &mut job, &mut session))?;
    write(conn, &doc).await?;
    jobs::upsert(conn, &job).await?;
    events.extend(run_documents(conn, &mut session, documents).await?);
    if session != before {
        sessions::write(conn, &session).await?;
    }
    records::append_events(conn, &session, &events, doc.updated_at).await?;
    Ok(Some((doc, job)))
}

pub async fn delete(
    conn: &mut PgConnection,
    session: SessionId,
    id: DocumentId,
    describe: DocumentDescribe,
    documents: Option<SessionDocuments>,
) -> Result<Option<(Document, i64)>, StoreError> {
    let Some(doc) = by_id(conn, id, true)
        .await?
        .filter(|d| d.session_id == session)
    else {
        return Ok(None);
    };
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE document_id = $1")
        .bind(id.0)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    sqlx::query("DELETE FROM documents WHERE id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    // The session is only read whole (and locked, to be rewritten) for the caller's hook.
    let (with_data, lock) = match documents {
        Some(_) => (true, Lock::Update),
        None => (false, Lock::None),
    };
    if let Some(mut s) = sessions::get(
        conn,
        doc.account_id,
        &SessionRef::Id(session),
        with_data,
        lock,
    )
    .await?
    {
        let mut events = run_rule(|| Ok(describe(&doc)))?;
        let changes = run_documents(conn, &mut s, documents).await?;
        if !changes.is_empty() {
            sessions::write(conn, &s).await?;
        }
        events.extend(changes);
        records::append_events(conn, &s, &events, Timestamp::now()).await?;
    }
    Ok(Some((doc, chunks)))
}

/// The words of a free-text query: every one must appear (each word's tokens as a phrase),
/// operators in the input taken literally.
fn query_words(q: &str) -> Vec<String> {
    q.split_whitespace().map(str::to_owned).collect()
}

pub async fn search(
    conn: &mut PgConnection,
    session: SessionId,
    query: &str,
    limit: usize,
) -> Result<Vec<SearchHit>, StoreError> {
    let words = query_words(query);
    if words.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    // AND of one phrase query per word, built in SQL from bound words (never spliced in).
    let rows = sqlx::query(
        "WITH q AS (
            SELECT (SELECT string_agg('(' || phraseto_tsquery('simple', w)::text || ')', ' & ')
                    FROM unnest($1::text[]) AS w
                    WHERE phraseto_tsquery('simple', w)::text <> '')::tsquery AS q
         )
         SELECT c.document_id, c.id, c.idx, ts_rank_cd(c.tsv, q.q, 1)::float8 AS score,
                ts_headline('simple', c.content, q.q,
                    'StartSel=«, StopSel=», MaxWords=24, MinWords=8, ShortWord=0, MaxFragments=1, FragmentDelimiter=…')
         FROM chunks c, q
         WHERE q.q IS NOT NULL AND c.session_id = $2 AND c.tsv @@ q.q
         ORDER BY score DESC, c.document_id, c.idx
         LIMIT $3",
    )
    .bind(&words)
    .bind(session.0)
    .bind(sql_limit(limit))
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(SearchHit {
                document_id: DocumentId(r.try_get(0)?),
                chunk_id: ChunkId(r.try_get(1)?),
                index: r.try_get(2)?,
                score: r.try_get(3)?,
                snippet: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_err)
        .map_err(|e| match e {
            StoreError::Internal(m) => internal(format!("search failed: {m}")),
            other => other,
        })
}
