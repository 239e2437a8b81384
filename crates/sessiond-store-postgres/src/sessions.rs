use serde_json::{Map, Value};
use sessiond_core::event::{Event, EVENTS_CHANNEL};
use sessiond_core::ids::SessionRef;
use sessiond_core::session::{Session, SessionQuery, SessionStatus};
use sessiond_core::{AccountId, SessionId, Timestamp};
use sessiond_store::{InsertSession, SessionUpdate, StoreError, UpdateSession};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder, Row};

use crate::{db_err, internal, records, run_rule, sql_limit};

pub(crate) const COLUMNS: &str = "id, account_id, external_id, type, title, tags, metadata::text, \
     data::text, closed_at, closed_reason, expires_at, created_at, updated_at, version";
const COLUMNS_NO_DATA: &str = "id, account_id, external_id, type, title, tags, metadata::text, \
     '{}'::text, closed_at, closed_reason, expires_at, created_at, updated_at, version";

/// How a read of a session row locks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    None,
    /// Blocks writers of the row until commit (appends: the guard's view stays true).
    Share,
    /// Exclusive: the row is about to be rewritten.
    Update,
}

impl Lock {
    fn sql(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::Share => " FOR SHARE",
            Lock::Update => " FOR UPDATE",
        }
    }
}

fn json_map(s: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(s).map_err(internal)
}

/// The column reads a session row needs, from either driver: the pool's (sqlx) or the
/// pipelined point-read connections' (tokio-postgres), so both decode a row the same way.
pub(crate) trait SessionColumns {
    fn uuid(&self, i: usize) -> Result<uuid::Uuid, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn texts(&self, i: usize) -> Result<Vec<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
}

impl SessionColumns for PgRow {
    fn uuid(&self, i: usize) -> Result<uuid::Uuid, StoreError> {
        self.try_get(i).map_err(db_err)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.try_get(i).map_err(db_err)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.try_get(i).map_err(db_err)
    }
    fn texts(&self, i: usize) -> Result<Vec<String>, StoreError> {
        self.try_get(i).map_err(db_err)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.try_get(i).map_err(db_err)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(i).map_err(db_err)
    }
}

/// A row of [`COLUMNS`] (or `COLUMNS_NO_DATA`).
pub(crate) fn session_row(r: &impl SessionColumns) -> Result<Session, StoreError> {
    let ts = |i: usize| -> Result<Option<Timestamp>, StoreError> {
        Ok(r.opt_int(i)?.map(Timestamp::from_millis))
    };
    Ok(Session {
        id: SessionId(r.uuid(0)?),
        account_id: AccountId(r.uuid(1)?),
        external_id: r.opt_text(2)?,
        kind: r.opt_text(3)?,
        title: r.opt_text(4)?,
        tags: r.texts(5)?,
        metadata: json_map(&r.text(6)?)?,
        data: json_map(&r.text(7)?)?,
        closed_at: ts(8)?,
        closed_reason: r.opt_text(9)?,
        expires_at: ts(10)?,
        created_at: Timestamp::from_millis(r.int(11)?),
        updated_at: Timestamp::from_millis(r.int(12)?),
        version: r.int(13)?,
    })
}

fn json_columns(s: &Session) -> Result<(String, String), StoreError> {
    Ok((
        serde_json::to_string(&s.metadata).map_err(internal)?,
        serde_json::to_string(&s.data).map_err(internal)?,
    ))
}

/// The condition that finds one session of an account: `$1` is the account, `$2` the
/// session's id (or its external id with `by_external`).
fn key_filter(by_external: bool) -> &'static str {
    if by_external {
        "account_id = $1 AND external_id = $2"
    } else {
        "account_id = $1 AND id = $2"
    }
}

/// Binds `$1` and `$2` of [`key_filter`].
fn bind_key<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    account: AccountId,
    r: &'q SessionRef,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let query = query.bind(account.0);
    match r {
        SessionRef::Id(id) => query.bind(id.0),
        SessionRef::External(e) => query.bind(e.as_str()),
    }
}

/// The read of one session of an account, parameters as [`key_filter`]'s.
pub(crate) fn get_sql(by_external: bool, with_data: bool, lock: Lock) -> String {
    let cols = if with_data { COLUMNS } else { COLUMNS_NO_DATA };
    format!(
        "SELECT {cols} FROM sessions WHERE {}{}",
        key_filter(by_external),
        lock.sql()
    )
}

pub async fn get(
    conn: &mut PgConnection,
    account: AccountId,
    r: &SessionRef,
    with_data: bool,
    lock: Lock,
) -> Result<Option<Session>, StoreError> {
    let by_external = matches!(r, SessionRef::External(_));
    let query = sqlx::query(AssertSqlSafe(get_sql(by_external, with_data, lock)));
    let row = bind_key(query, account, r)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(session_row).transpose()
}

/// A session (without its data) locked `FOR SHARE`, and the last seq of its `channel` locked
/// `FOR UPDATE` (`None` when the channel does not exist yet), in one round trip. The session
/// row is locked first, as every other writer does, so the two locks cannot deadlock.
pub async fn get_for_append(
    conn: &mut PgConnection,
    account: AccountId,
    r: &SessionRef,
    channel: &str,
) -> Result<Option<(Session, Option<i64>)>, StoreError> {
    let filter = key_filter(matches!(r, SessionRef::External(_)));
    // MATERIALIZED keeps the session's lock in the CTE, taken before the lateral join reads
    // (and locks) the channel row.
    let q = sqlx::query(AssertSqlSafe(format!(
        "WITH s AS MATERIALIZED (
            SELECT {COLUMNS_NO_DATA} FROM sessions WHERE {filter} FOR SHARE
         )
         SELECT s.*, c.last_seq FROM s LEFT JOIN LATERAL (
            SELECT last_seq FROM channels WHERE session_id = s.id AND name = $3 FOR UPDATE
         ) c ON true"
    )));
    let row = bind_key(q, account, r)
        .bind(channel)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let head: Option<i64> = row.try_get(14).map_err(db_err)?;
    Ok(Some((session_row(&row)?, head)))
}

/// The account that owns the session with this id.
pub async fn owner(
    conn: &mut PgConnection,
    id: SessionId,
) -> Result<Option<AccountId>, StoreError> {
    let row = sqlx::query("SELECT account_id FROM sessions WHERE id = $1")
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.map(|r| r.try_get::<uuid::Uuid, _>(0).map(AccountId))
        .transpose()
        .map_err(db_err)
}

/// A session by id alone, whatever its account (the caller already checked ownership).
pub async fn get_by_id(
    conn: &mut PgConnection,
    id: SessionId,
    with_data: bool,
    lock: Lock,
) -> Result<Option<Session>, StoreError> {
    let cols = if with_data { COLUMNS } else { COLUMNS_NO_DATA };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {cols} FROM sessions WHERE id = $1{}",
        lock.sql()
    )))
    .bind(id.0)
    .fetch_optional(conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(session_row).transpose()
}

/// Inserts a session with its first events in one statement: the session row, its `events`
/// channel and the event records. A single statement is atomic by itself, so a create needs no
/// BEGIN/COMMIT round trips (the foreign keys are checked at the end of the statement).
pub async fn insert(
    conn: &mut PgConnection,
    session: Session,
    event: Event,
) -> Result<InsertSession, StoreError> {
    let (metadata, data) = json_columns(&session)?;
    let events = records::event_records(&session, std::slice::from_ref(&event));
    let seqs: Vec<i64> = (1..).take(events.len()).collect();
    let (ids, datas, headers) = records::record_columns(&events);
    // ON CONFLICT DO NOTHING covers both the id and the (account, externalId) uniqueness, and
    // waits for a concurrent insert of the same key to settle instead of failing; a session not
    // inserted writes no channel and no records.
    let inserted: i64 = sqlx::query_scalar(
        "WITH s AS (
            INSERT INTO sessions (id, account_id, external_id, type, title, tags, metadata, data,
                closed_at, closed_reason, expires_at, created_at, updated_at, version)
            VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8::json, $9, $10, $11, $12, $13, $14)
            ON CONFLICT DO NOTHING
            RETURNING id
         ), c AS (
            INSERT INTO channels (session_id, name, last_seq, record_count, updated_at)
            SELECT id, $15, $16, $16, $12 FROM s WHERE $16 > 0
         ), r AS (
            INSERT INTO records (session_id, channel, seq, record_id, data, headers, created_at)
            SELECT s.id, $15, u.seq, u.id, u.data, u.headers, $12
            FROM s, unnest($17::bigint[], $18::text[], $19::text[], $20::text[])
                AS u(seq, id, data, headers)
         )
         SELECT count(*) FROM s",
    )
    .bind(session.id.0)
    .bind(session.account_id.0)
    .bind(&session.external_id)
    .bind(&session.kind)
    .bind(&session.title)
    .bind(&session.tags)
    .bind(metadata)
    .bind(data)
    .bind(session.closed_at.map(|t| t.millis()))
    .bind(&session.closed_reason)
    .bind(session.expires_at.map(|t| t.millis()))
    .bind(session.created_at.millis())
    .bind(session.updated_at.millis())
    .bind(session.version)
    .bind(EVENTS_CHANNEL)
    .bind(seqs.len() as i64)
    .bind(&seqs)
    .bind(&ids)
    .bind(&datas)
    .bind(&headers)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    if inserted == 0 {
        // The externalId conflict wins over the id one, as in the SQLite backend.
        if let Some(ext) = &session.external_id {
            let existing = get(
                conn,
                session.account_id,
                &SessionRef::External(ext.clone()),
                true,
                Lock::None,
            )
            .await?;
            if let Some(existing) = existing {
                return Ok(InsertSession::ExternalIdTaken(existing));
            }
        }
        return Ok(InsertSession::IdTaken);
    }
    Ok(InsertSession::Inserted(session))
}

pub async fn update(
    conn: &mut PgConnection,
    account: AccountId,
    r: &SessionRef,
    update: SessionUpdate,
) -> Result<UpdateSession, StoreError> {
    let Some(original) = get(conn, account, r, true, Lock::Update).await? else {
        return Ok(UpdateSession::NotFound);
    };
    let mut s = original.clone();
    let events = run_rule(|| update(&mut s))?;
    if events.is_empty() {
        return Ok(UpdateSession::Unchanged(original));
    }
    write(conn, &s).await?;
    records::append_events(conn, &s, &events, s.updated_at).await?;
    Ok(UpdateSession::Updated(s))
}

/// Writes every mutable column of an existing session (the caller holds its row lock).
pub async fn write(conn: &mut PgConnection, s: &Session) -> Result<(), StoreError> {
    let (metadata, data) = json_columns(s)?;
    sqlx::query(
        "UPDATE sessions SET type = $2, title = $3, tags = $4, metadata = $5::json,
           data = $6::json, closed_at = $7, closed_reason = $8, expires_at = $9,
           updated_at = $10, version = $11
         WHERE id = $1",
    )
    .bind(s.id.0)
    .bind(&s.kind)
    .bind(&s.title)
    .bind(&s.tags)
    .bind(metadata)
    .bind(data)
    .bind(s.closed_at.map(|t| t.millis()))
    .bind(&s.closed_reason)
    .bind(s.expires_at.map(|t| t.millis()))
    .bind(s.updated_at.millis())
    .bind(s.version)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(db_err)
}

pub async fn delete(
    conn: &mut PgConnection,
    account: AccountId,
    r: &SessionRef,
) -> Result<Option<SessionId>, StoreError> {
    let id = match r {
        SessionRef::Id(id) => *id,
        SessionRef::External(_) => match get(conn, account, r, false, Lock::None).await? {
            Some(s) => s.id,
            None => return Ok(None),
        },
    };
    // Lock what the cascade deletes before the session itself, in the order every other
    // write takes them (document, job, chat, then session), so the cascade cannot deadlock
    // with a concurrent job, document or chat change.
    for sql in [
        "SELECT d.id FROM documents d JOIN sessions s ON s.id = d.session_id
         WHERE d.session_id = $1 AND s.account_id = $2 ORDER BY d.id FOR UPDATE OF d",
        "SELECT j.id FROM jobs j JOIN sessions s ON s.id = j.session_id
         WHERE j.session_id = $1 AND s.account_id = $2 ORDER BY j.id FOR UPDATE OF j",
        "SELECT c.id FROM chats c JOIN sessions s ON s.id = c.session_id
         WHERE c.session_id = $1 AND s.account_id = $2 ORDER BY c.id FOR UPDATE OF c",
    ] {
        sqlx::query(sql)
            .bind(id.0)
            .bind(account.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    let n = sqlx::query("DELETE FROM sessions WHERE id = $1 AND account_id = $2")
        .bind(id.0)
        .bind(account.0)
        .execute(conn)
        .await
        .map_err(db_err)?
        .rows_affected();
    Ok((n > 0).then_some(id))
}

/// ASCII-only lower-casing in SQL, like SQLite's `lower()`, so title filters match the same
/// rows on both backends.
const ASCII_LOWER_TITLE: &str =
    "translate(title, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')";

pub async fn list(
    conn: &mut PgConnection,
    account: AccountId,
    q: &SessionQuery,
    include_data: bool,
) -> Result<Vec<Session>, StoreError> {
    let cols = if include_data {
        COLUMNS
    } else {
        COLUMNS_NO_DATA
    };
    let mut b: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {cols} FROM sessions WHERE account_id = "));
    b.push_bind(account.0);
    let f = &q.filter;
    if let Some(c) = &q.after {
        b.push(" AND (created_at, id) < (")
            .push_bind(c.created_at.millis())
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    if let Some(kind) = &f.kind {
        b.push(" AND type = ").push_bind(kind.clone());
    }
    if let Some(e) = &f.external_id {
        b.push(" AND external_id = ").push_bind(e.clone());
    }
    if let Some(t) = f.created_after {
        b.push(" AND created_at > ").push_bind(t.millis());
    }
    if let Some(t) = f.created_before {
        b.push(" AND created_at < ").push_bind(t.millis());
    }
    if let Some(needle) = &f.title_contains {
        b.push(format!(" AND strpos({ASCII_LOWER_TITLE}, "))
            .push_bind(needle.to_ascii_lowercase())
            .push(") > 0");
    }
    if !f.tags_any.is_empty() {
        b.push(" AND tags && ").push_bind(f.tags_any.clone());
    }
    for (k, v) in &f.metadata_eq {
        // Containment of {"k": "v"}: the key holds exactly this string (never a number).
        b.push(" AND metadata_idx @> jsonb_build_object(")
            .push_bind(k.clone())
            .push("::text, ")
            .push_bind(v.clone())
            .push("::text)");
    }
    if !f.statuses.is_empty() {
        let now = q.now.millis();
        b.push(" AND (");
        for (i, s) in f.statuses.iter().enumerate() {
            if i > 0 {
                b.push(" OR ");
            }
            match s {
                SessionStatus::Active => {
                    b.push("(closed_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                        .push_bind(now)
                        .push("))");
                }
                SessionStatus::Closed => {
                    b.push("(closed_at IS NOT NULL)");
                }
                SessionStatus::Expired => {
                    b.push("(closed_at IS NULL AND expires_at <= ")
                        .push_bind(now)
                        .push(")");
                }
            }
        }
        b.push(")");
    }
    b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(sql_limit(q.limit));
    let rows = b.build().fetch_all(conn).await.map_err(db_err)?;
    rows.iter().map(session_row).collect()
}
