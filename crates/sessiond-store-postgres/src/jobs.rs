use serde_json::Value;
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{Job, JobStatus};
use sessiond_core::session::Session;
use sessiond_core::{AccountId, JobId, SessionId, Timestamp};
use sessiond_store::{JobCreate, JobUpdate, StoreError, UpdateJob};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::sessions::{self, Lock};
use crate::{db_err, internal, records, run_rule, sql_limit};

/// Selected columns, JSON as text so it reads back exactly as written.
const COLUMNS: &str = "id, account_id, session_id, type, input::text, input_hash, result::text, \
    error::text, progress::text, attempts, max_attempts, reused_from, output_key, lease_id, \
    lease_seconds, lease_expires_at, worker_id, status, created_at, started_at, finished_at, \
    updated_at";

fn j_columns() -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("j.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_col(r: &PgRow, i: usize) -> Result<Option<Value>, StoreError> {
    match r.try_get::<Option<String>, _>(i).map_err(db_err)? {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s).map(Some).map_err(internal),
    }
}

pub(crate) fn job_row(r: &PgRow) -> Result<Job, StoreError> {
    let get_i64 = |i: usize| -> Result<i64, StoreError> { r.try_get(i).map_err(db_err) };
    let ts = |i: usize| -> Result<Option<Timestamp>, StoreError> {
        Ok(r.try_get::<Option<i64>, _>(i)
            .map_err(db_err)?
            .map(Timestamp::from_millis))
    };
    let status: String = r.try_get(17).map_err(db_err)?;
    Ok(Job {
        id: JobId(r.try_get(0).map_err(db_err)?),
        account_id: AccountId(r.try_get(1).map_err(db_err)?),
        session_id: SessionId(r.try_get(2).map_err(db_err)?),
        kind: r.try_get(3).map_err(db_err)?,
        input: json_col(r, 4)?.unwrap_or(Value::Null),
        input_hash: r.try_get(5).map_err(db_err)?,
        result: json_col(r, 6)?,
        error: json_col(r, 7)?,
        progress: json_col(r, 8)?,
        attempts: get_i64(9)?,
        max_attempts: get_i64(10)?,
        reused_from: r.try_get::<Option<Uuid>, _>(11).map_err(db_err)?.map(JobId),
        output_key: r.try_get(12).map_err(db_err)?,
        lease_id: r.try_get(13).map_err(db_err)?,
        lease_seconds: get_i64(14)?,
        lease_expires_at: ts(15)?,
        worker_id: r.try_get(16).map_err(db_err)?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("unknown job status {status:?}")))?,
        created_at: Timestamp::from_millis(get_i64(18)?),
        started_at: ts(19)?,
        finished_at: ts(20)?,
        updated_at: Timestamp::from_millis(get_i64(21)?),
    })
}

fn opt_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

/// Inserts the job, or updates the mutable columns of an existing one (keeping its place in
/// the queue order).
pub(crate) async fn upsert(conn: &mut PgConnection, j: &Job) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO jobs (id, account_id, session_id, type, input, input_hash, result, error,
            progress, attempts, max_attempts, reused_from, output_key, lease_id, lease_seconds,
            lease_expires_at, worker_id, status, created_at, started_at, finished_at, updated_at)
         VALUES ($1, $2, $3, $4, $5::json, $6, $7::json, $8::json, $9::json, $10, $11, $12, $13,
            $14, $15, $16, $17, $18, $19, $20, $21, $22)
         ON CONFLICT (id) DO UPDATE SET result = excluded.result, error = excluded.error,
           progress = excluded.progress, attempts = excluded.attempts,
           lease_id = excluded.lease_id, lease_seconds = excluded.lease_seconds,
           lease_expires_at = excluded.lease_expires_at, worker_id = excluded.worker_id,
           status = excluded.status, started_at = excluded.started_at,
           finished_at = excluded.finished_at, updated_at = excluded.updated_at",
    )
    .bind(j.id.0)
    .bind(j.account_id.0)
    .bind(j.session_id.0)
    .bind(&j.kind)
    .bind(j.input.to_string())
    .bind(&j.input_hash)
    .bind(opt_json(&j.result))
    .bind(opt_json(&j.error))
    .bind(opt_json(&j.progress))
    .bind(j.attempts)
    .bind(j.max_attempts)
    .bind(j.reused_from.map(|r| r.0))
    .bind(&j.output_key)
    .bind(j.lease_id)
    .bind(j.lease_seconds)
    .bind(j.lease_expires_at.map(|t| t.millis()))
    .bind(&j.worker_id)
    .bind(j.status.as_str())
    .bind(j.created_at.millis())
    .bind(j.started_at.map(|t| t.millis()))
    .bind(j.finished_at.map(|t| t.millis()))
    .bind(j.updated_at.millis())
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(db_err)
}

/// The job by id, whatever its account; `lock` takes its row exclusively.
pub(crate) async fn get_by_id(
    conn: &mut PgConnection,
    id: JobId,
    lock: bool,
) -> Result<Option<Job>, StoreError> {
    let sql = if lock {
        format!("SELECT {COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {COLUMNS} FROM jobs WHERE id = $1")
    };
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(job_row).transpose()
}

pub async fn get(
    conn: &mut PgConnection,
    account: AccountId,
    id: JobId,
    lock: bool,
) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE id = $1 AND account_id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id.0)
        .bind(account.0)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(job_row).transpose()
}

pub async fn list(conn: &mut PgConnection, session: SessionId) -> Result<Vec<Job>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE session_id = $1 ORDER BY created_at, qseq"
    )))
    .bind(session.0)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter().map(job_row).collect()
}

/// Writes the job, the session when the change touched it, and the events.
async fn write_change(
    conn: &mut PgConnection,
    job: &Job,
    before: &Session,
    session: &Session,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    upsert(conn, job).await?;
    if session != before {
        sessions::write(conn, session).await?;
    }
    records::append_events(conn, session, events, now).await
}

pub async fn create(
    conn: &mut PgConnection,
    account: AccountId,
    r: &SessionRef,
    mut job: Job,
    reuse_since: Option<Timestamp>,
    decide: JobCreate,
) -> Result<Option<(Job, Session)>, StoreError> {
    let Some(before) = sessions::get(conn, account, r, true, Lock::Update).await? else {
        return Ok(None);
    };
    job.session_id = before.id;
    let previous = match reuse_since {
        None => None,
        Some(since) => {
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM jobs WHERE account_id = $1 AND type = $2
                 AND input_hash = $3 AND status = 'succeeded' AND finished_at >= $4
                 ORDER BY finished_at DESC, qseq DESC LIMIT 1"
            )))
            .bind(account.0)
            .bind(&job.kind)
            .bind(&job.input_hash)
            .bind(since.millis())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
            row.as_ref().map(job_row).transpose()?
        }
    };
    let mut session = before.clone();
    let events = run_rule(|| decide(&mut job, &mut session, previous.as_ref()))?;
    write_change(conn, &job, &before, &session, &events, job.updated_at).await?;
    Ok(Some((job, session)))
}

/// Runs `update` on a job whose row the caller has locked, with its session locked too.
async fn apply(
    conn: &mut PgConnection,
    mut job: Job,
    update: JobUpdate,
) -> Result<UpdateJob, StoreError> {
    let Some(before) = sessions::get(
        conn,
        job.account_id,
        &SessionRef::Id(job.session_id),
        true,
        Lock::Update,
    )
    .await?
    else {
        return Ok(UpdateJob::NotFound);
    };
    let original = job.clone();
    let mut session = before.clone();
    let events = run_rule(|| update(&mut job, &mut session))?;
    if events.is_empty() {
        return Ok(UpdateJob::Unchanged(original));
    }
    write_change(conn, &job, &before, &session, &events, job.updated_at).await?;
    Ok(UpdateJob::Updated(job, session))
}

pub async fn update(
    conn: &mut PgConnection,
    account: AccountId,
    id: JobId,
    update: JobUpdate,
) -> Result<UpdateJob, StoreError> {
    match get(conn, account, id, true).await? {
        Some(job) => apply(conn, job, update).await,
        None => Ok(UpdateJob::NotFound),
    }
}

pub async fn claim(
    conn: &mut PgConnection,
    account: Option<AccountId>,
    types: &[String],
    claim: JobUpdate,
    now: Timestamp,
) -> Result<Option<(Job, Session)>, StoreError> {
    if types.is_empty() {
        return Ok(None);
    }
    // SKIP LOCKED: a job another claimer holds is passed over, never waited for, so each
    // queued job goes to exactly one claimer across every node.
    let filter = if account.is_some() {
        "j.account_id = $3 AND "
    } else {
        ""
    };
    // The oldest job of each type is found through the queue index in its order (one lateral
    // probe per type); `type = ANY(...)` in one scan would make the planner sort every queued
    // job of the account first, which with a deep queue costs tens of milliseconds a claim.
    let sql = format!(
        "SELECT x.* FROM unnest($1::text[]) AS t(type) CROSS JOIN LATERAL (
            SELECT {}, j.qseq AS claim_qseq FROM jobs j JOIN sessions s ON s.id = j.session_id
            WHERE {filter}j.status = 'queued' AND j.type = t.type
              AND s.closed_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > $2)
            ORDER BY j.created_at, j.qseq LIMIT 1
            FOR UPDATE OF j SKIP LOCKED
         ) x
         ORDER BY x.created_at, x.claim_qseq LIMIT 1",
        j_columns()
    );
    // Each probe locks its type's head; a repeated type would lock a second job for nothing.
    // (The heads not chosen stay locked until this short transaction ends: other claimers skip
    // them meanwhile, which only hands them the next job.)
    let mut unique: Vec<&str> = types.iter().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(unique)
        .bind(now.millis());
    if let Some(a) = account {
        q = q.bind(a.0);
    }
    let row = q.fetch_optional(&mut *conn).await.map_err(db_err)?;
    let Some(job) = row.as_ref().map(job_row).transpose()? else {
        return Ok(None);
    };
    match apply(conn, job, claim).await? {
        UpdateJob::Updated(job, session) => Ok(Some((job, session))),
        _ => Ok(None),
    }
}

pub async fn expired(
    conn: &mut PgConnection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(AccountId, JobId)>, StoreError> {
    let rows = sqlx::query(
        "SELECT account_id, id FROM jobs WHERE status = 'running' AND lease_expires_at <= $1
         ORDER BY lease_expires_at LIMIT $2",
    )
    .bind(now.millis())
    .bind(sql_limit(limit))
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| Ok((AccountId(r.try_get(0)?), JobId(r.try_get(1)?))))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_err)
}
