use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::{Job, JobStatus};
use sessiond_core::session::Session;
use sessiond_core::{AccountId, JobId, SessionId, Timestamp};
use sessiond_store::{JobCreate, JobUpdate, StoreError, UpdateJob};
use uuid::Uuid;

use crate::{internal, records, sessions};

const COLUMNS: &str =
    "id, account_id, session_id, type, input, input_hash, result, error, progress, \
    attempts, max_attempts, reused_from, output_key, lease_id, lease_seconds, lease_expires_at, \
    worker_id, status, created_at, started_at, finished_at, updated_at";

fn json_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Value>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        }),
    }
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

fn job_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let status: String = r.get(17)?;
    Ok(Job {
        id: JobId(r.get(0)?),
        account_id: AccountId(r.get(1)?),
        session_id: SessionId(r.get(2)?),
        kind: r.get(3)?,
        input: json_col(r, 4)?.unwrap_or(Value::Null),
        input_hash: r.get(5)?,
        result: json_col(r, 6)?,
        error: json_col(r, 7)?,
        progress: json_col(r, 8)?,
        attempts: r.get(9)?,
        max_attempts: r.get(10)?,
        reused_from: r.get::<_, Option<Uuid>>(11)?.map(JobId),
        output_key: r.get(12)?,
        lease_id: r.get(13)?,
        lease_seconds: r.get(14)?,
        lease_expires_at: ts(r.get(15)?),
        worker_id: r.get(16)?,
        status: JobStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                17,
                rusqlite::types::Type::Text,
                format!("unknown job status {status:?}").into(),
            )
        })?,
        created_at: Timestamp::from_millis(r.get(18)?),
        started_at: ts(r.get(19)?),
        finished_at: ts(r.get(20)?),
        updated_at: Timestamp::from_millis(r.get(21)?),
    })
}

fn opt_json(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

pub(crate) fn upsert(conn: &Connection, j: &Job) -> Result<(), StoreError> {
    let values: [&dyn ToSql; 22] = [
        j.id.as_uuid(),
        j.account_id.as_uuid(),
        j.session_id.as_uuid(),
        &j.kind,
        &j.input.to_string(),
        &j.input_hash,
        &opt_json(&j.result),
        &opt_json(&j.error),
        &opt_json(&j.progress),
        &j.attempts,
        &j.max_attempts,
        &j.reused_from.map(|r| r.0),
        &j.output_key,
        &j.lease_id,
        &j.lease_seconds,
        &j.lease_expires_at.map(|t| t.millis()),
        &j.worker_id,
        &j.status.as_str(),
        &j.created_at.millis(),
        &j.started_at.map(|t| t.millis()),
        &j.finished_at.map(|t| t.millis()),
        &j.updated_at.millis(),
    ];
    // An upsert that keeps the row (and its rowid, the tie-break of the queue order).
    conn.prepare_cached(&format!(
        "INSERT INTO jobs ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) \
         ON CONFLICT (id) DO UPDATE SET result = excluded.result, error = excluded.error, \
         progress = excluded.progress, attempts = excluded.attempts, lease_id = excluded.lease_id, \
         lease_seconds = excluded.lease_seconds, lease_expires_at = excluded.lease_expires_at, \
         worker_id = excluded.worker_id, status = excluded.status, started_at = excluded.started_at, \
         finished_at = excluded.finished_at, updated_at = excluded.updated_at"
    ))
    .and_then(|mut st| st.execute(&values[..]))
    .map(|_| ())
    .map_err(internal)
}

pub(crate) fn get_by_id(conn: &Connection, id: JobId) -> Result<Option<Job>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))
        .and_then(|mut st| st.query_row(params![id.as_uuid()], job_row).optional())
        .map_err(internal)
}

pub fn get(conn: &Connection, account: AccountId, id: JobId) -> Result<Option<Job>, StoreError> {
    Ok(get_by_id(conn, id)?.filter(|j| j.account_id == account))
}

pub fn list(conn: &Connection, session: SessionId) -> Result<Vec<Job>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE session_id = ?1 ORDER BY created_at, rowid"
        ))
        .map_err(internal)?;
    let rows = st
        .query_map(params![session.as_uuid()], job_row)
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}

/// Writes the job, the session when the change touched it, and the events.
fn write_change(
    conn: &Connection,
    job: &Job,
    before: &Session,
    session: &Session,
    events: &[sessiond_core::event::Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    upsert(conn, job)?;
    if session != before {
        sessions::write(conn, session)?;
    }
    records::append_events(conn, session, events, now)
}

pub fn create(
    conn: &Connection,
    account: AccountId,
    r: &SessionRef,
    mut job: Job,
    reuse_since: Option<Timestamp>,
    decide: JobCreate,
) -> Result<Option<(Job, Session)>, StoreError> {
    let Some(before) = sessions::get(conn, account, r, true)? else {
        return Ok(None);
    };
    job.session_id = before.id;
    let previous = match reuse_since {
        None => None,
        Some(since) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE account_id = ?1 AND type = ?2 AND input_hash = ?3
                 AND status = 'succeeded' AND finished_at >= ?4
                 ORDER BY finished_at DESC, rowid DESC LIMIT 1"
            ))
            .and_then(|mut st| {
                st.query_row(
                    params![account.as_uuid(), job.kind, job.input_hash, since.millis()],
                    job_row,
                )
                .optional()
            })
            .map_err(internal)?,
    };
    let mut session = before.clone();
    let events = decide(&mut job, &mut session, previous.as_ref())?;
    write_change(conn, &job, &before, &session, &events, job.updated_at)?;
    Ok(Some((job, session)))
}

fn apply(conn: &Connection, mut job: Job, update: JobUpdate) -> Result<UpdateJob, StoreError> {
    let Some(before) = sessions::get(conn, job.account_id, &SessionRef::Id(job.session_id), true)?
    else {
        return Ok(UpdateJob::NotFound);
    };
    let original = job.clone();
    let mut session = before.clone();
    let events = update(&mut job, &mut session)?;
    if events.is_empty() {
        return Ok(UpdateJob::Unchanged(original));
    }
    write_change(conn, &job, &before, &session, &events, job.updated_at)?;
    Ok(UpdateJob::Updated(job, session))
}

pub fn update(
    conn: &Connection,
    account: AccountId,
    id: JobId,
    update: JobUpdate,
) -> Result<UpdateJob, StoreError> {
    match get(conn, account, id)? {
        Some(job) => apply(conn, job, update),
        None => Ok(UpdateJob::NotFound),
    }
}

pub fn claim(
    conn: &Connection,
    account: Option<AccountId>,
    types: &[String],
    claim: JobUpdate,
) -> Result<Option<(Job, Session)>, StoreError> {
    if types.is_empty() {
        return Ok(None);
    }
    let placeholders = vec!["?"; types.len()].join(", ");
    // A plain equality on the account (not `?1 IS NULL OR …`) lets the partial queue index
    // serve the claim instead of a scan of every job.
    let by_account = if account.is_some() {
        "j.account_id = ?1"
    } else {
        "?1 IS NULL"
    };
    let sql = format!(
        "SELECT {} FROM jobs j JOIN sessions s ON s.id = j.session_id
         WHERE {by_account} AND j.status = 'queued' AND j.type IN ({placeholders})
           AND s.closed_at IS NULL
           AND (s.expires_at IS NULL OR s.expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER))
         ORDER BY j.created_at, j.rowid LIMIT 1",
        COLUMNS
            .split(", ")
            .map(|c| format!("j.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let account = account.map(|a| a.0);
    let mut args: Vec<&dyn ToSql> = vec![&account];
    for t in types {
        args.push(t);
    }
    let job = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row(&args[..], job_row).optional())
        .map_err(internal)?;
    let Some(job) = job else {
        return Ok(None);
    };
    match apply(conn, job, claim)? {
        UpdateJob::Updated(job, session) => Ok(Some((job, session))),
        _ => Ok(None),
    }
}

pub fn expired(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<(AccountId, JobId)>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT account_id, id FROM jobs WHERE status = 'running' AND lease_expires_at <= ?1
             ORDER BY lease_expires_at LIMIT ?2",
        )
        .map_err(internal)?;
    let rows = st
        .query_map(params![now.millis(), limit as i64], |r| {
            Ok((AccountId(r.get(0)?), JobId(r.get(1)?)))
        })
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}
