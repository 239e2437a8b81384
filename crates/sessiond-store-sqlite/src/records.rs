//! Channel records: the append primitive shared by every write that records an event.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use sessiond_core::event::{Event, EVENTS_CHANNEL};
use sessiond_core::session::Session;
use sessiond_core::{SessionId, Timestamp};
use sessiond_store::StoreError;
use uuid::Uuid;

use crate::internal;

/// Appends records to a channel, creating it on first append; returns the seq of each record.
pub fn append(
    conn: &Connection,
    session: SessionId,
    channel: &str,
    records: &[(String, Value, Value)],
    now: Timestamp,
) -> Result<Vec<i64>, StoreError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM channels WHERE session_id = ?1 AND name = ?2")
        .and_then(|mut st| {
            st.query_row(params![session.as_uuid(), channel], |r| r.get(0))
                .optional()
        })
        .map_err(internal)?;
    let mut seq = last.unwrap_or(0);
    let n = records.len() as i64;
    conn.prepare_cached(
        "INSERT INTO channels (session_id, name, last_seq, record_count, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (session_id, name) DO UPDATE SET
           last_seq = excluded.last_seq,
           record_count = record_count + ?4,
           updated_at = excluded.updated_at",
    )
    .and_then(|mut st| st.execute(params![session.as_uuid(), channel, seq + n, n, now.millis()]))
    .map_err(internal)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO records (session_id, channel, seq, record_id, data, headers, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(internal)?;
    let mut seqs = Vec::with_capacity(records.len());
    for (id, data, headers) in records {
        seq += 1;
        insert
            .execute(params![
                session.as_uuid(),
                channel,
                seq,
                id,
                data.to_string(),
                headers.to_string(),
                now.millis()
            ])
            .map_err(internal)?;
        seqs.push(seq);
    }
    Ok(seqs)
}

/// Appends server events describing a change of `session` to its `events` channel.
pub fn append_events(
    conn: &Connection,
    session: &Session,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let records: Vec<(String, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                Uuid::new_v4().to_string(),
                e.to_record_data(session),
                Value::Object(Default::default()),
            )
        })
        .collect();
    append(conn, session.id, EVENTS_CHANNEL, &records, now).map(|_| ())
}
