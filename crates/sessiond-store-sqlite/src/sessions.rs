use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::{Session, SessionQuery, SessionStatus};
use sessiond_core::{AccountId, SessionId, Timestamp};
use sessiond_store::{InsertSession, SessionUpdate, StoreError, UpdateSession};

use crate::{internal, records};

const COLUMNS: &str = "id, account_id, external_id, type, title, tags, metadata, data, closed_at, \
                       closed_reason, expires_at, created_at, updated_at, version";
const COLUMNS_NO_DATA: &str = "id, account_id, external_id, type, title, tags, metadata, '{}', \
                               closed_at, closed_reason, expires_at, created_at, updated_at, version";

fn json_err(col: usize, e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    let tags: String = r.get(5)?;
    let metadata: String = r.get(6)?;
    let data: String = r.get(7)?;
    Ok(Session {
        id: SessionId(r.get(0)?),
        account_id: AccountId(r.get(1)?),
        external_id: r.get(2)?,
        kind: r.get(3)?,
        title: r.get(4)?,
        tags: serde_json::from_str(&tags).map_err(|e| json_err(5, e))?,
        metadata: serde_json::from_str::<Map<String, Value>>(&metadata)
            .map_err(|e| json_err(6, e))?,
        data: serde_json::from_str::<Map<String, Value>>(&data).map_err(|e| json_err(7, e))?,
        closed_at: r.get::<_, Option<i64>>(8)?.map(Timestamp::from_millis),
        closed_reason: r.get(9)?,
        expires_at: r.get::<_, Option<i64>>(10)?.map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(r.get(11)?),
        updated_at: Timestamp::from_millis(r.get(12)?),
        version: r.get(13)?,
    })
}

/// The JSON columns of a session, serialised.
fn json_columns(s: &Session) -> Result<(String, String, String), StoreError> {
    Ok((
        serde_json::to_string(&s.tags).map_err(internal)?,
        serde_json::to_string(&s.metadata).map_err(internal)?,
        serde_json::to_string(&s.data).map_err(internal)?,
    ))
}

pub fn get(
    conn: &Connection,
    account: AccountId,
    r: &SessionRef,
    with_data: bool,
) -> Result<Option<Session>, StoreError> {
    let cols = if with_data { COLUMNS } else { COLUMNS_NO_DATA };
    let result = match r {
        SessionRef::Id(id) => conn
            .prepare_cached(&format!(
                "SELECT {cols} FROM sessions WHERE id = ?1 AND account_id = ?2"
            ))
            .and_then(|mut st| {
                st.query_row(params![id.as_uuid(), account.as_uuid()], session_row)
                    .optional()
            }),
        SessionRef::External(e) => conn
            .prepare_cached(&format!(
                "SELECT {cols} FROM sessions WHERE account_id = ?1 AND external_id = ?2"
            ))
            .and_then(|mut st| {
                st.query_row(params![account.as_uuid(), e], session_row)
                    .optional()
            }),
    };
    result.map_err(internal)
}

/// The account that owns the session with this id.
pub fn owner(conn: &Connection, id: SessionId) -> Result<Option<AccountId>, StoreError> {
    conn.prepare_cached("SELECT account_id FROM sessions WHERE id = ?1")
        .and_then(|mut st| st.query_row(params![id.as_uuid()], |r| r.get(0)).optional())
        .map(|a| a.map(AccountId))
        .map_err(internal)
}

pub fn insert(
    conn: &Connection,
    session: Session,
    event: Event,
) -> Result<InsertSession, StoreError> {
    if let Some(ext) = &session.external_id {
        let existing = get(
            conn,
            session.account_id,
            &SessionRef::External(ext.clone()),
            true,
        )?;
        if let Some(existing) = existing {
            return Ok(InsertSession::ExternalIdTaken(existing));
        }
    }
    let taken: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1)")
        .and_then(|mut st| st.query_row(params![session.id.as_uuid()], |r| r.get(0)))
        .map_err(internal)?;
    if taken {
        return Ok(InsertSession::IdTaken);
    }
    let (tags, metadata, data) = json_columns(&session)?;
    conn.prepare_cached(&format!(
        "INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))
    .and_then(|mut st| {
        st.execute(params![
            session.id.as_uuid(),
            session.account_id.as_uuid(),
            session.external_id,
            session.kind,
            session.title,
            tags,
            metadata,
            data,
            session.closed_at.map(|t| t.millis()),
            session.closed_reason,
            session.expires_at.map(|t| t.millis()),
            session.created_at.millis(),
            session.updated_at.millis(),
            session.version,
        ])
    })
    .map_err(internal)?;
    records::append_events(conn, &session, &[event], session.created_at)?;
    Ok(InsertSession::Inserted(session))
}

pub fn update(
    conn: &Connection,
    account: AccountId,
    r: &SessionRef,
    update: SessionUpdate,
) -> Result<UpdateSession, StoreError> {
    let Some(original) = get(conn, account, r, true)? else {
        return Ok(UpdateSession::NotFound);
    };
    let mut s = original.clone();
    let events = update(&mut s)?;
    if events.is_empty() {
        return Ok(UpdateSession::Unchanged(original));
    }
    write(conn, &s)?;
    records::append_events(conn, &s, &events, s.updated_at)?;
    Ok(UpdateSession::Updated(s))
}

/// Writes every mutable column of an existing session.
pub fn write(conn: &Connection, s: &Session) -> Result<(), StoreError> {
    let (tags, metadata, data) = json_columns(s)?;
    conn.prepare_cached(
        "UPDATE sessions SET type = ?2, title = ?3, tags = ?4, metadata = ?5, data = ?6,
           closed_at = ?7, closed_reason = ?8, expires_at = ?9, updated_at = ?10, version = ?11
         WHERE id = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.id.as_uuid(),
            s.kind,
            s.title,
            tags,
            metadata,
            data,
            s.closed_at.map(|t| t.millis()),
            s.closed_reason,
            s.expires_at.map(|t| t.millis()),
            s.updated_at.millis(),
            s.version,
        ])
    })
    .map(|_| ())
    .map_err(internal)
}

pub fn delete(
    conn: &Connection,
    account: AccountId,
    r: &SessionRef,
) -> Result<Option<SessionId>, StoreError> {
    let id = match r {
        SessionRef::Id(id) => *id,
        SessionRef::External(_) => match get(conn, account, r, false)? {
            Some(s) => s.id,
            None => return Ok(None),
        },
    };
    let n = conn
        .prepare_cached("DELETE FROM sessions WHERE id = ?1 AND account_id = ?2")
        .and_then(|mut st| st.execute(params![id.as_uuid(), account.as_uuid()]))
        .map_err(internal)?;
    Ok((n > 0).then_some(id))
}

pub fn list(
    conn: &Connection,
    account: AccountId,
    q: &SessionQuery,
    include_data: bool,
) -> Result<Vec<Session>, StoreError> {
    let mut sql = format!(
        "SELECT {} FROM sessions s WHERE account_id = ?",
        if include_data {
            COLUMNS
        } else {
            COLUMNS_NO_DATA
        }
    );
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(*account.as_uuid())];
    let f = &q.filter;
    if let Some(c) = &q.after {
        sql.push_str(" AND (created_at, id) < (?, ?)");
        args.push(Box::new(c.created_at.millis()));
        args.push(Box::new(c.id));
    }
    if let Some(kind) = &f.kind {
        sql.push_str(" AND type = ?");
        args.push(Box::new(kind.clone()));
    }
    if let Some(e) = &f.external_id {
        sql.push_str(" AND external_id = ?");
        args.push(Box::new(e.clone()));
    }
    if let Some(t) = f.created_after {
        sql.push_str(" AND created_at > ?");
        args.push(Box::new(t.millis()));
    }
    if let Some(t) = f.created_before {
        sql.push_str(" AND created_at < ?");
        args.push(Box::new(t.millis()));
    }
    if let Some(needle) = &f.title_contains {
        sql.push_str(" AND instr(lower(title), lower(?)) > 0");
        args.push(Box::new(needle.clone()));
    }
    if !f.tags_any.is_empty() {
        sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(s.tags) WHERE json_each.value IN (");
        sql.push_str(&vec!["?"; f.tags_any.len()].join(", "));
        sql.push_str("))");
        for t in &f.tags_any {
            args.push(Box::new(t.clone()));
        }
    }
    for (k, v) in &f.metadata_eq {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(s.metadata) m WHERE m.key = ? AND m.type = 'text' AND m.value = ?)",
        );
        args.push(Box::new(k.clone()));
        args.push(Box::new(v.clone()));
    }
    if !f.statuses.is_empty() {
        let now = q.now.millis();
        let parts: Vec<&str> = f
            .statuses
            .iter()
            .map(|s| match s {
                SessionStatus::Active => {
                    "(closed_at IS NULL AND (expires_at IS NULL OR expires_at > ?))"
                }
                SessionStatus::Closed => "(closed_at IS NOT NULL AND ? IS NOT NULL)",
                SessionStatus::Expired => "(closed_at IS NULL AND expires_at <= ?)",
            })
            .collect();
        sql.push_str(" AND (");
        sql.push_str(&parts.join(" OR "));
        sql.push(')');
        for _ in &f.statuses {
            args.push(Box::new(now));
        }
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
    args.push(Box::new(q.limit as i64));

    let mut st = conn.prepare_cached(&sql).map_err(internal)?;
    let rows = st
        .query_map(
            rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
            session_row,
        )
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}
