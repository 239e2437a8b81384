//! Channel records: append (with exactly-once by record id), read, and the event append shared
//! by every write that records an event.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use sessiond_core::channel::{AppendResult, ChannelInfo, NewRecord, Record};
use sessiond_core::event::{Event, EVENTS_CHANNEL};
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, SessionId, Timestamp};
use sessiond_store::{Appended, RecordPage, SessionGuard, StoreError};

use crate::{internal, sessions};

fn last_seq(conn: &Connection, session: SessionId, channel: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT last_seq FROM channels WHERE session_id = ?1 AND name = ?2")
        .and_then(|mut st| {
            st.query_row(params![session.as_uuid(), channel], |r| r.get(0))
                .optional()
        })
        .map(|v| v.unwrap_or(0))
        .map_err(internal)
}

/// Appends records to a channel, creating it on first append. Ids already in the channel (or
/// earlier in the same batch) are reported as duplicates with their original seq.
pub fn append(
    conn: &Connection,
    session: SessionId,
    channel: &str,
    records: &[NewRecord],
    now: Timestamp,
) -> Result<(Vec<AppendResult>, i64), StoreError> {
    let mut seq = last_seq(conn, session, channel)?;
    let mut find = conn
        .prepare_cached(
            "SELECT seq FROM records WHERE session_id = ?1 AND channel = ?2 AND record_id = ?3",
        )
        .map_err(internal)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO records (session_id, channel, seq, record_id, data, headers, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(internal)?;
    let mut in_batch: HashMap<&str, i64> = HashMap::new();
    let mut results = Vec::with_capacity(records.len());
    let mut appended = 0i64;
    let first_new = seq + 1;
    for r in records {
        let existing = match in_batch.get(r.id.as_str()) {
            Some(s) => Some(*s),
            // Nothing before this batch can hold the id if the channel was empty, nor an id
            // the server has just generated.
            None if first_new == 1 || r.fresh => None,
            None => find
                .query_row(params![session.as_uuid(), channel, r.id], |row| row.get(0))
                .optional()
                .map_err(internal)?,
        };
        if let Some(s) = existing {
            results.push(AppendResult {
                id: r.id.clone(),
                seq: s,
                duplicate: true,
            });
            continue;
        }
        if appended == 0 {
            // The channel row must exist before its first record (foreign key).
            ensure_channel(conn, session, channel, now)?;
        }
        seq += 1;
        appended += 1;
        insert
            .execute(params![
                session.as_uuid(),
                channel,
                seq,
                r.id,
                r.data,
                r.headers,
                now.millis()
            ])
            .map_err(internal)?;
        in_batch.insert(&r.id, seq);
        results.push(AppendResult {
            id: r.id.clone(),
            seq,
            duplicate: false,
        });
    }
    if appended > 0 {
        conn.prepare_cached(
            "UPDATE channels SET last_seq = ?3, record_count = record_count + ?4, updated_at = ?5
             WHERE session_id = ?1 AND name = ?2",
        )
        .and_then(|mut st| {
            st.execute(params![
                session.as_uuid(),
                channel,
                seq,
                appended,
                now.millis()
            ])
        })
        .map_err(internal)?;
    }
    Ok((results, seq))
}

fn ensure_channel(
    conn: &Connection,
    session: SessionId,
    channel: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO channels (session_id, name, last_seq, record_count, updated_at)
         VALUES (?1, ?2, 0, 0, ?3) ON CONFLICT (session_id, name) DO NOTHING",
    )
    .and_then(|mut st| st.execute(params![session.as_uuid(), channel, now.millis()]))
    .map(|_| ())
    .map_err(internal)
}

/// Appends server events describing a change of `session` to its `events` channel.
pub fn append_events(
    conn: &Connection,
    session: &Session,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    let records: Vec<NewRecord> = events
        .iter()
        .filter(|e| e.is_recorded())
        .map(|e| NewRecord::generated(e.to_record_data(session).to_string()))
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    append(conn, session.id, EVENTS_CHANNEL, &records, now).map(|_| ())
}

pub fn append_guarded(
    conn: &Connection,
    account: AccountId,
    r: &SessionRef,
    channel: &str,
    records: Vec<NewRecord>,
    guard: SessionGuard,
    now: Timestamp,
) -> Result<Option<Appended>, StoreError> {
    let Some(session) = sessions::get(conn, account, r, false)? else {
        return Ok(None);
    };
    guard(&session)?;
    let (results, last_seq) = append(conn, session.id, channel, &records, now)?;
    Ok(Some(Appended {
        session_id: session.id,
        results,
        last_seq,
    }))
}

pub fn read(
    conn: &Connection,
    session: SessionId,
    channel: &str,
    after: i64,
    limit: usize,
    now: Timestamp,
) -> Result<Option<RecordPage>, StoreError> {
    let state: Option<(Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT closed_at, expires_at FROM sessions WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row(params![session.as_uuid()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(internal)?;
    let Some((closed_at, expires_at)) = state else {
        return Ok(None);
    };
    let last_seq = last_seq(conn, session, channel)?;
    let mut records = Vec::new();
    if last_seq > after {
        let mut st = conn
            .prepare_cached(
                "SELECT seq, record_id, data, headers, created_at FROM records
                 WHERE session_id = ?1 AND channel = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            )
            .map_err(internal)?;
        let rows = st
            .query_map(
                params![session.as_uuid(), channel, after, limit as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .map_err(internal)?;
        for row in rows {
            let (seq, id, data, headers, created_at) = row.map_err(internal)?;
            records.push(Record {
                seq,
                id,
                data: RawValue::from_string(data).map_err(internal)?,
                headers: RawValue::from_string(headers).map_err(internal)?,
                created_at: Timestamp::from_millis(created_at),
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

pub fn list_channels(
    conn: &Connection,
    session: SessionId,
) -> Result<Vec<ChannelInfo>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT name, last_seq, record_count, updated_at FROM channels
             WHERE session_id = ?1 ORDER BY name",
        )
        .map_err(internal)?;
    let rows = st
        .query_map(params![session.as_uuid()], |r| {
            Ok(ChannelInfo {
                name: r.get(0)?,
                last_seq: r.get(1)?,
                record_count: r.get(2)?,
                updated_at: Timestamp::from_millis(r.get(3)?),
            })
        })
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}
