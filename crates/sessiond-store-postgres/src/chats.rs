//! Chats inside a session, their exactly-once messages and per-account read marks.
//!
//! A chat row is locked before anything it leads to (its session's events channel), and
//! session deletion locks a session's chats before the session.

use serde_json::Value;
use sessiond_core::chat::{message_event, Chat, ChatId, Message, NewMessage, Role};
use sessiond_core::error::codes;
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, SessionId, Timestamp};
use sessiond_store::{ChatDelete, ChatUpdate, CreateChat, InsertSession, SessionGuard, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::sessions::{self, Lock};
use crate::{db_err, records, run_rule, sqlstate, UNIQUE_VIOLATION};

const COLUMNS: &str = "id, session_id, account_id, title, model_id, active_stream_id, \
    last_assistant_message_at, message_count, created_at, updated_at";

fn chat_row(r: &PgRow) -> Result<Chat, sqlx::Error> {
    Ok(Chat {
        id: ChatId(r.try_get(0)?),
        session_id: SessionId(r.try_get(1)?),
        account_id: AccountId(r.try_get(2)?),
        title: r.try_get(3)?,
        model_id: r.try_get(4)?,
        active_stream_id: r.try_get(5)?,
        last_assistant_message_at: r.try_get::<Option<i64>, _>(6)?.map(Timestamp::from_millis),
        message_count: r.try_get(7)?,
        created_at: Timestamp::from_millis(r.try_get(8)?),
        updated_at: Timestamp::from_millis(r.try_get(9)?),
    })
}

async fn by_id(
    conn: &mut PgConnection,
    id: ChatId,
    lock: bool,
) -> Result<Option<Chat>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chats WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(chat_row).transpose().map_err(db_err)
}

/// Inserts the chat, or (`upsert`) updates the mutable columns of an existing one. Without
/// `upsert`, `false` when the id is taken.
async fn write(conn: &mut PgConnection, c: &Chat, upsert: bool) -> Result<bool, StoreError> {
    let on_conflict = if upsert {
        "ON CONFLICT (id) DO UPDATE SET title = excluded.title, model_id = excluded.model_id,
           active_stream_id = excluded.active_stream_id,
           last_assistant_message_at = excluded.last_assistant_message_at,
           message_count = excluded.message_count, updated_at = excluded.updated_at"
    } else {
        "ON CONFLICT (id) DO NOTHING"
    };
    let sql = format!(
        "INSERT INTO chats ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) {on_conflict}"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(c.id.0)
        .bind(c.session_id.0)
        .bind(c.account_id.0)
        .bind(&c.title)
        .bind(&c.model_id)
        .bind(&c.active_stream_id)
        .bind(c.last_assistant_message_at.map(|t| t.millis()))
        .bind(c.message_count)
        .bind(c.created_at.millis())
        .bind(c.updated_at.millis())
        .execute(conn)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(db_err)
}

/// Records events on the session's events channel (the caller checked ownership).
async fn record(
    conn: &mut PgConnection,
    session: SessionId,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    if events.iter().all(|e| !e.is_recorded()) {
        return Ok(());
    }
    if let Some(s) = sessions::get_by_id(conn, session, false, Lock::None).await? {
        records::append_events(conn, &s, events, now).await?;
    }
    Ok(())
}

fn chat_exists(id: ChatId) -> StoreError {
    Error::conflict(codes::CHAT_EXISTS, format!("Chat {id} already exists")).into()
}

pub async fn insert_session_with_chat(
    conn: &mut PgConnection,
    session: Session,
    event: Event,
    chat: Chat,
) -> Result<InsertSession, StoreError> {
    if by_id(conn, chat.id, false).await?.is_some() {
        return Err(chat_exists(chat.id));
    }
    let outcome = sessions::insert(conn, session, event).await?;
    if let InsertSession::Inserted(s) = &outcome {
        match write(conn, &chat, false).await {
            Ok(true) => {}
            Ok(false) => return Err(chat_exists(chat.id)),
            Err(e) => return Err(e),
        }
        records::append_events(conn, s, &[chat.event("chat.created")], chat.created_at).await?;
    }
    Ok(outcome)
}

pub async fn create(
    conn: &mut PgConnection,
    account: AccountId,
    r: &SessionRef,
    mut chat: Chat,
    guard: SessionGuard,
) -> Result<CreateChat, StoreError> {
    // Shared: the guard's view of the session holds until commit (as for appends).
    let Some(session) = sessions::get(conn, account, r, false, Lock::Share).await? else {
        return Ok(CreateChat::SessionNotFound);
    };
    let settle = |existing: Chat| {
        if existing.session_id == session.id {
            CreateChat::Existing(existing)
        } else {
            CreateChat::IdTaken
        }
    };
    if let Some(existing) = by_id(conn, chat.id, false).await? {
        return Ok(settle(existing));
    }
    run_rule(|| guard(&session))?;
    chat.session_id = session.id;
    if !write(conn, &chat, false).await? {
        // Created concurrently (DO NOTHING waited for it to commit).
        return match by_id(conn, chat.id, false).await? {
            Some(existing) => Ok(settle(existing)),
            None => Err(chat_exists(chat.id)),
        };
    }
    records::append_events(
        conn,
        &session,
        &[chat.event("chat.created")],
        chat.created_at,
    )
    .await?;
    Ok(CreateChat::Created(chat))
}

pub async fn list(
    conn: &mut PgConnection,
    session: SessionId,
    reader: AccountId,
) -> Result<Vec<(Chat, Option<Timestamp>)>, StoreError> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {cols}, r.read_at FROM chats c
         LEFT JOIN chat_reads r ON r.chat_id = c.id AND r.account_id = $2
         WHERE c.session_id = $1 ORDER BY c.created_at, c.qseq"
    )))
    .bind(session.0)
    .bind(reader.0)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok((
                chat_row(r)?,
                r.try_get::<Option<i64>, _>(10)?.map(Timestamp::from_millis),
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_err)
}

async fn get_in(
    conn: &mut PgConnection,
    session: SessionId,
    id: ChatId,
    lock: bool,
) -> Result<Option<Chat>, StoreError> {
    Ok(by_id(conn, id, lock)
        .await?
        .filter(|c| c.session_id == session))
}

pub async fn get(
    conn: &mut PgConnection,
    session: SessionId,
    id: ChatId,
) -> Result<Option<Chat>, StoreError> {
    get_in(conn, session, id, false).await
}

pub async fn update(
    conn: &mut PgConnection,
    session: SessionId,
    id: ChatId,
    update: ChatUpdate,
) -> Result<Option<Chat>, StoreError> {
    let Some(mut chat) = get_in(conn, session, id, true).await? else {
        return Ok(None);
    };
    if let Some(event) = run_rule(|| update(&mut chat))? {
        write(conn, &chat, true).await?;
        record(conn, session, &[event], chat.updated_at).await?;
    }
    Ok(Some(chat))
}

pub async fn delete(
    conn: &mut PgConnection,
    session: SessionId,
    id: ChatId,
    decide: ChatDelete,
) -> Result<Option<Chat>, StoreError> {
    let Some(chat) = get_in(conn, session, id, true).await? else {
        return Ok(None);
    };
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM chats WHERE session_id = $1")
        .bind(session.0)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    let events = run_rule(|| decide(&chat, count))?;
    sqlx::query("DELETE FROM chats WHERE id = $1")
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    record(conn, session, &events, Timestamp::now()).await?;
    Ok(Some(chat))
}

fn message_row(r: &PgRow) -> Result<Message, sqlx::Error> {
    let role: String = r.try_get(3)?;
    let parts: String = r.try_get(4)?;
    Ok(Message {
        chat_id: ChatId(r.try_get(0)?),
        seq: r.try_get(1)?,
        id: r.try_get(2)?,
        role: Role::parse(&role).unwrap_or(Role::User),
        parts: serde_json::from_str(&parts).unwrap_or(Value::Null),
        created_at: Timestamp::from_millis(r.try_get(5)?),
    })
}

pub async fn append_message(
    conn: &mut PgConnection,
    session: SessionId,
    id: ChatId,
    m: NewMessage,
    now: Timestamp,
) -> Result<Option<(Message, bool)>, StoreError> {
    // The chat row lock serialises seq assignment per chat.
    let Some(mut chat) = get_in(conn, session, id, true).await? else {
        return Ok(None);
    };
    let existing = sqlx::query(
        "SELECT chat_id, seq, message_id, role, parts::text, created_at FROM chat_messages
         WHERE chat_id = $1 AND message_id = $2",
    )
    .bind(id.0)
    .bind(&m.id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    if let Some(existing) = existing {
        return Ok(Some((message_row(&existing).map_err(db_err)?, true)));
    }
    let message = Message {
        seq: chat.message_count + 1,
        id: m.id,
        chat_id: id,
        role: m.role,
        parts: m.parts,
        created_at: now,
    };
    let inserted = sqlx::query(
        "INSERT INTO chat_messages (chat_id, seq, message_id, role, parts, created_at)
         VALUES ($1, $2, $3, $4, $5::json, $6)",
    )
    .bind(id.0)
    .bind(message.seq)
    .bind(&message.id)
    .bind(message.role.as_str())
    .bind(message.parts.to_string())
    .bind(now.millis())
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
            return Err(StoreError::Unavailable(
                "a concurrent append to this chat won; retry".into(),
            ))
        }
        Err(e) => return Err(db_err(e)),
    }
    chat.message_count = message.seq;
    chat.updated_at = now;
    if message.role == Role::Assistant {
        chat.last_assistant_message_at = Some(now);
    }
    write(conn, &chat, true).await?;
    record(conn, session, &[message_event(&chat, &message)], now).await?;
    Ok(Some((message, false)))
}

pub async fn list_messages(
    conn: &mut PgConnection,
    chat: ChatId,
) -> Result<Vec<Message>, StoreError> {
    let rows = sqlx::query(
        "SELECT chat_id, seq, message_id, role, parts::text, created_at FROM chat_messages
         WHERE chat_id = $1 ORDER BY seq",
    )
    .bind(chat.0)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(message_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)
}

pub async fn mark_read(
    conn: &mut PgConnection,
    session: SessionId,
    chat: ChatId,
    reader: AccountId,
    at: Timestamp,
) -> Result<bool, StoreError> {
    if get_in(conn, session, chat, false).await?.is_none() {
        return Ok(false);
    }
    let r = sqlx::query(
        "INSERT INTO chat_reads (chat_id, account_id, read_at) VALUES ($1, $2, $3)
         ON CONFLICT (chat_id, account_id)
         DO UPDATE SET read_at = GREATEST(chat_reads.read_at, excluded.read_at)",
    )
    .bind(chat.0)
    .bind(reader.0)
    .bind(at.millis())
    .execute(conn)
    .await;
    match r {
        Ok(_) => Ok(true),
        // The chat was deleted between the check and the write.
        Err(e) if sqlstate(&e).as_deref() == Some(crate::FOREIGN_KEY_VIOLATION) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}
