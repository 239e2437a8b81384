//! Channel records: append (exactly once by record id), read, and the event append shared by
//! every write that records an event.

use std::collections::HashMap;

use serde_json::value::RawValue;
use sessiond_core::channel::{AppendResult, ChannelInfo, NewRecord, Record};
use sessiond_core::event::{Event, EVENTS_CHANNEL};
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, SessionId, Timestamp};
use sessiond_store::{Appended, RecordPage, SessionGuard, StoreError};
use sqlx::{PgConnection, Row};

use crate::sessions;
use crate::{db_err, internal, run_rule, sql_limit};

/// The channel's last seq, its row locked until the transaction ends (`None`: no such channel).
async fn select_locked(
    conn: &mut PgConnection,
    session: SessionId,
    channel: &str,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar::<_, i64>(
        "SELECT last_seq FROM channels WHERE session_id = $1 AND name = $2 FOR UPDATE",
    )
    .bind(session.0)
    .bind(channel)
    .fetch_optional(conn)
    .await
    .map_err(db_err)
}

/// Locks the channel row (creating it on first use) and returns its last seq. The lock
/// serialises seq assignment per channel until the transaction ends.
async fn lock_channel(
    conn: &mut PgConnection,
    session: SessionId,
    channel: &str,
    now: Timestamp,
) -> Result<i64, StoreError> {
    match select_locked(conn, session, channel).await? {
        Some(seq) => Ok(seq),
        None => create_channel(conn, session, channel, now).await,
    }
}

/// Creates the channel row and returns its (locked) last seq, or locks the row a concurrent
/// transaction created first.
async fn create_channel(
    conn: &mut PgConnection,
    session: SessionId,
    channel: &str,
    now: Timestamp,
) -> Result<i64, StoreError> {
    // A row we insert is ours until commit; on conflict someone else created it meanwhile
    // (DO NOTHING waits for them to settle), and the second select locks theirs.
    let created = sqlx::query_scalar::<_, i64>(
        "INSERT INTO channels (session_id, name, last_seq, record_count, updated_at)
         VALUES ($1, $2, 0, 0, $3) ON CONFLICT (session_id, name) DO NOTHING RETURNING last_seq",
    )
    .bind(session.0)
    .bind(channel)
    .bind(now.millis())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    if let Some(seq) = created {
        return Ok(seq);
    }
    select_locked(conn, session, channel)
        .await?
        .ok_or_else(|| StoreError::Internal(format!("channel {channel} vanished while locking")))
}

/// Appends records to a channel whose row is locked and whose last seq is `seq`. Ids already
/// in the channel (or earlier in the same batch) are reported as duplicates with their original
/// seq; ids the server has just generated (`fresh`) are not looked up.
async fn append_locked(
    conn: &mut PgConnection,
    session: SessionId,
    channel: &str,
    records: &[NewRecord],
    now: Timestamp,
    mut seq: i64,
) -> Result<(Vec<AppendResult>, i64), StoreError> {
    let mut existing: HashMap<String, i64> = HashMap::new();
    // Nothing before this batch can hold an id if the channel was empty.
    let ids: Vec<&str> = records
        .iter()
        .filter(|r| !r.fresh)
        .map(|r| r.id.as_str())
        .collect();
    if seq > 0 && !ids.is_empty() {
        let rows = sqlx::query(
            "SELECT record_id, seq FROM records
             WHERE session_id = $1 AND channel = $2 AND record_id = ANY($3)",
        )
        .bind(session.0)
        .bind(channel)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        for r in rows {
            existing.insert(r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?);
        }
    }
    let mut results = Vec::with_capacity(records.len());
    let mut seqs: Vec<i64> = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    let mut datas: Vec<&str> = Vec::new();
    let mut headers: Vec<&str> = Vec::new();
    for r in records {
        if let Some(&s) = existing.get(r.id.as_str()) {
            results.push(AppendResult {
                id: r.id.clone(),
                seq: s,
                duplicate: true,
            });
            continue;
        }
        seq += 1;
        existing.insert(r.id.clone(), seq);
        seqs.push(seq);
        ids.push(&r.id);
        datas.push(&r.data);
        headers.push(&r.headers);
        results.push(AppendResult {
            id: r.id.clone(),
            seq,
            duplicate: false,
        });
    }
    if !seqs.is_empty() {
        let appended = seqs.len() as i64;
        // One statement writes the records and moves the channel head.
        sqlx::query(
            "WITH ins AS (
                INSERT INTO records (session_id, channel, seq, record_id, data, headers, created_at)
                SELECT $1, $2, u.seq, u.id, u.data, u.headers, $7
                FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[]) AS u(seq, id, data, headers)
             )
             UPDATE channels SET last_seq = $8, record_count = record_count + $9, updated_at = $7
             WHERE session_id = $1 AND name = $2",
        )
        .bind(session.0)
        .bind(channel)
        .bind(&seqs)
        .bind(&ids)
        .bind(&datas)
        .bind(&headers)
        .bind(now.millis())
        .bind(seq)
        .bind(appended)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok((results, seq))
}

/// The records on the `events` channel that describe `events` of `session` (silent events are
/// not recorded).
pub(crate) fn event_records(session: &Session, events: &[Event]) -> Vec<NewRecord> {
    events
        .iter()
        .filter(|e| e.is_recorded())
        .map(|e| NewRecord::generated(e.to_record_data(session).to_string()))
        .collect()
}

/// A batch as the three text arrays an insert statement unnests: ids, data, headers.
pub(crate) fn record_columns(records: &[NewRecord]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let ids = records.iter().map(|r| r.id.as_str()).collect();
    let datas = records.iter().map(|r| r.data.as_str()).collect();
    let headers = records.iter().map(|r| r.headers.as_str()).collect();
    (ids, datas, headers)
}

/// Appends server events describing a change of `session` to its `events` channel, in the
/// caller's transaction. Silent events are not recorded.
pub async fn append_events(
    conn: &mut PgConnection,
    session: &Session,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    let records = event_records(session, events);
    if records.is_empty() {
        return Ok(());
    }
    let seq = lock_channel(conn, session.id, EVENTS_CHANNEL, now).await?;
    append_locked(conn, session.id, EVENTS_CHANNEL, &records, now, seq)
        .await
        .map(|_| ())
}

/// The append of records whose ids the server generated (so none can be a duplicate) without
/// an explicit transaction: the caller read `session` unlocked and ran the guard on it; this one
/// statement locks the session (`FOR SHARE`), checks it is still the row the guard saw, moves
/// the channel head and writes the records. `Ok(None)` when that did not apply (the session
/// changed meanwhile, or the channel does not exist yet): nothing was written, and the caller
/// takes the locking path ([`append_guarded`]), as it does for any batch with a client-chosen
/// id. Must run outside a transaction: the statement commits on its own.
pub async fn append_fresh(
    conn: &mut PgConnection,
    session: &Session,
    channel: &str,
    records: &[NewRecord],
    now: Timestamp,
) -> Result<Option<Appended>, StoreError> {
    let n = records.len() as i64;
    let (ids, datas, headers) = record_columns(records);
    // The session subquery runs first (an InitPlan), so the session is locked before the
    // channel row, as on every other write path.
    let head: Option<i64> = sqlx::query_scalar(
        "WITH c AS (
            UPDATE channels SET last_seq = last_seq + $4, record_count = record_count + $4,
                updated_at = $5
            WHERE name = $2 AND session_id = (
                SELECT id FROM sessions
                WHERE id = $1 AND version = $3 AND updated_at = $9
                  AND closed_at IS NOT DISTINCT FROM $10 AND expires_at IS NOT DISTINCT FROM $11
                FOR SHARE
            )
            RETURNING last_seq
         ), ins AS (
            INSERT INTO records (session_id, channel, seq, record_id, data, headers, created_at)
            SELECT $1, $2, c.last_seq - $4 + u.ord, u.id, u.data, u.headers, $5
            FROM c, unnest($6::text[], $7::text[], $8::text[]) WITH ORDINALITY
                AS u(id, data, headers, ord)
         )
         SELECT last_seq FROM c",
    )
    .bind(session.id.0)
    .bind(channel)
    .bind(session.version)
    .bind(n)
    .bind(now.millis())
    .bind(&ids)
    .bind(&datas)
    .bind(&headers)
    .bind(session.updated_at.millis())
    .bind(session.closed_at.map(|t| t.millis()))
    .bind(session.expires_at.map(|t| t.millis()))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(last_seq) = head else {
        return Ok(None);
    };
    let first = last_seq - n + 1;
    let results = records
        .iter()
        .zip(first..)
        .map(|(r, seq)| AppendResult {
            id: r.id.clone(),
            seq,
            duplicate: false,
        })
        .collect();
    Ok(Some(Appended {
        session_id: session.id,
        results,
        last_seq,
    }))
}

pub async fn append_guarded(
    conn: &mut PgConnection,
    account: AccountId,
    r: &SessionRef,
    channel: &str,
    records: Vec<NewRecord>,
    guard: SessionGuard,
    now: Timestamp,
) -> Result<Option<Appended>, StoreError> {
    // A shared lock: appends to the session run side by side, but a close (or any other
    // session write) waits for them, so what the guard accepted holds until commit.
    // The channel row is locked in the same round trip; a rejected append simply rolls back.
    let Some((session, head)) = sessions::get_for_append(conn, account, r, channel).await? else {
        return Ok(None);
    };
    run_rule(|| guard(&session))?;
    let (results, last_seq) = if records.is_empty() {
        (Vec::new(), head.unwrap_or(0))
    } else {
        let seq = match head {
            Some(seq) => seq,
            None => create_channel(conn, session.id, channel, now).await?,
        };
        append_locked(conn, session.id, channel, &records, now, seq).await?
    };
    Ok(Some(Appended {
        session_id: session.id,
        results,
        last_seq,
    }))
}

pub async fn read(
    conn: &mut PgConnection,
    session: SessionId,
    channel: &str,
    after: i64,
    limit: usize,
    now: Timestamp,
) -> Result<Option<RecordPage>, StoreError> {
    // The head first; the records are then read up to that head only. Records at or below a
    // committed head are committed too (they went in with it), so the page is consistent
    // without a snapshot spanning both statements.
    let state = sqlx::query(
        "SELECT s.closed_at, s.expires_at, c.last_seq FROM sessions s
         LEFT JOIN channels c ON c.session_id = s.id AND c.name = $2
         WHERE s.id = $1",
    )
    .bind(session.0)
    .bind(channel)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(state) = state else {
        return Ok(None);
    };
    let closed_at: Option<i64> = state.try_get(0).map_err(db_err)?;
    let expires_at: Option<i64> = state.try_get(1).map_err(db_err)?;
    let last_seq: i64 = state
        .try_get::<Option<i64>, _>(2)
        .map_err(db_err)?
        .unwrap_or(0);
    let mut records = Vec::new();
    if last_seq > after && limit > 0 {
        let rows = sqlx::query(
            "SELECT seq, record_id, data, headers, created_at FROM records
             WHERE session_id = $1 AND channel = $2 AND seq > $3 AND seq <= $4
             ORDER BY seq LIMIT $5",
        )
        .bind(session.0)
        .bind(channel)
        .bind(after)
        .bind(last_seq)
        .bind(sql_limit(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        records.reserve(rows.len());
        for r in rows {
            records.push(Record {
                seq: r.try_get(0).map_err(db_err)?,
                id: r.try_get(1).map_err(db_err)?,
                data: RawValue::from_string(r.try_get(2).map_err(db_err)?).map_err(internal)?,
                headers: RawValue::from_string(r.try_get(3).map_err(db_err)?).map_err(internal)?,
                created_at: Timestamp::from_millis(r.try_get(4).map_err(db_err)?),
            });
        }
    }
    let session_closed = closed_at.is_some() || expires_at.is_some_and(|e| e <= now.millis());
    Ok(Some(RecordPage {
        records,
        last_seq,
        session_closed,
    }))
}

pub async fn list_channels(
    conn: &mut PgConnection,
    session: SessionId,
) -> Result<Vec<ChannelInfo>, StoreError> {
    // Byte order, like SQLite's BINARY collation, whatever the database's collation is.
    let rows = sqlx::query(
        "SELECT name, last_seq, record_count, updated_at FROM channels
         WHERE session_id = $1 ORDER BY name COLLATE \"C\"",
    )
    .bind(session.0)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(ChannelInfo {
                name: r.try_get(0)?,
                last_seq: r.try_get(1)?,
                record_count: r.try_get(2)?,
                updated_at: Timestamp::from_millis(r.try_get(3)?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_err)
}
