use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;
use sessiond_core::chat::{message_event, Chat, ChatId, Message, NewMessage, Role};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, SessionId, Timestamp};
use sessiond_store::{ChatDelete, ChatUpdate, CreateChat, InsertSession, SessionGuard, StoreError};
use uuid::Uuid;

use crate::{internal, records, sessions};

const COLUMNS: &str = "id, session_id, account_id, title, model_id, active_stream_id, \
    last_assistant_message_at, message_count, created_at, updated_at";

fn chat_row(r: &Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: ChatId(r.get(0)?),
        session_id: SessionId(r.get(1)?),
        account_id: AccountId(r.get(2)?),
        title: r.get(3)?,
        model_id: r.get(4)?,
        active_stream_id: r.get(5)?,
        last_assistant_message_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
        message_count: r.get(7)?,
        created_at: Timestamp::from_millis(r.get(8)?),
        updated_at: Timestamp::from_millis(r.get(9)?),
    })
}

fn by_id(conn: &Connection, id: ChatId) -> Result<Option<Chat>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM chats WHERE id = ?1"))
        .and_then(|mut st| st.query_row(params![id.as_uuid()], chat_row).optional())
        .map_err(internal)
}

fn write(conn: &Connection, c: &Chat) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO chats ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, model_id = excluded.model_id,
           active_stream_id = excluded.active_stream_id,
           last_assistant_message_at = excluded.last_assistant_message_at,
           message_count = excluded.message_count, updated_at = excluded.updated_at"
    ))
    .and_then(|mut st| {
        st.execute(params![
            c.id.as_uuid(),
            c.session_id.as_uuid(),
            c.account_id.as_uuid(),
            c.title,
            c.model_id,
            c.active_stream_id,
            c.last_assistant_message_at.map(|t| t.millis()),
            c.message_count,
            c.created_at.millis(),
            c.updated_at.millis(),
        ])
    })
    .map(|_| ())
    .map_err(internal)
}

fn session_by_id(conn: &Connection, id: SessionId) -> Result<Option<Session>, StoreError> {
    // The caller already checked ownership; look the session up by id alone.
    let account: Option<Uuid> = conn
        .prepare_cached("SELECT account_id FROM sessions WHERE id = ?1")
        .and_then(|mut st| st.query_row(params![id.as_uuid()], |r| r.get(0)).optional())
        .map_err(internal)?;
    match account {
        Some(a) => sessions::get(conn, AccountId(a), &SessionRef::Id(id), false),
        None => Ok(None),
    }
}

fn record(
    conn: &Connection,
    session: SessionId,
    events: &[Event],
    now: Timestamp,
) -> Result<(), StoreError> {
    if let Some(s) = session_by_id(conn, session)? {
        records::append_events(conn, &s, events, now)?;
    }
    Ok(())
}

pub fn insert_session_with_chat(
    conn: &Connection,
    session: Session,
    event: Event,
    chat: Chat,
) -> Result<InsertSession, StoreError> {
    if by_id(conn, chat.id)?.is_some() {
        return Err(sessiond_core::Error::conflict(
            sessiond_core::error::codes::CHAT_EXISTS,
            format!("Chat {} already exists", chat.id),
        )
        .into());
    }
    let outcome = sessions::insert(conn, session, event)?;
    if let InsertSession::Inserted(s) = &outcome {
        write(conn, &chat)?;
        records::append_events(conn, s, &[chat.event("chat.created")], chat.created_at)?;
    }
    Ok(outcome)
}

pub fn create(
    conn: &Connection,
    account: AccountId,
    r: &SessionRef,
    mut chat: Chat,
    guard: SessionGuard,
) -> Result<CreateChat, StoreError> {
    let Some(session) = sessions::get(conn, account, r, false)? else {
        return Ok(CreateChat::SessionNotFound);
    };
    if let Some(existing) = by_id(conn, chat.id)? {
        return Ok(if existing.session_id == session.id {
            CreateChat::Existing(existing)
        } else {
            CreateChat::IdTaken
        });
    }
    guard(&session)?;
    chat.session_id = session.id;
    write(conn, &chat)?;
    records::append_events(
        conn,
        &session,
        &[chat.event("chat.created")],
        chat.created_at,
    )?;
    Ok(CreateChat::Created(chat))
}

pub fn list(
    conn: &Connection,
    session: SessionId,
    reader: AccountId,
) -> Result<Vec<(Chat, Option<Timestamp>)>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {}, r.read_at FROM chats c
             LEFT JOIN chat_reads r ON r.chat_id = c.id AND r.account_id = ?2
             WHERE c.session_id = ?1 ORDER BY c.created_at, c.rowid",
            COLUMNS
                .split(", ")
                .map(|c| format!("c.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .map_err(internal)?;
    let rows = st
        .query_map(params![session.as_uuid(), reader.as_uuid()], |r| {
            Ok((
                chat_row(r)?,
                r.get::<_, Option<i64>>(10)?.map(Timestamp::from_millis),
            ))
        })
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}

pub fn get(conn: &Connection, session: SessionId, id: ChatId) -> Result<Option<Chat>, StoreError> {
    Ok(by_id(conn, id)?.filter(|c| c.session_id == session))
}

pub fn update(
    conn: &Connection,
    session: SessionId,
    id: ChatId,
    update: ChatUpdate,
) -> Result<Option<Chat>, StoreError> {
    let Some(mut chat) = get(conn, session, id)? else {
        return Ok(None);
    };
    if let Some(event) = update(&mut chat)? {
        write(conn, &chat)?;
        record(conn, session, &[event], chat.updated_at)?;
    }
    Ok(Some(chat))
}

pub fn delete(
    conn: &Connection,
    session: SessionId,
    id: ChatId,
    decide: ChatDelete,
) -> Result<Option<Chat>, StoreError> {
    let Some(chat) = get(conn, session, id)? else {
        return Ok(None);
    };
    let count: i64 = conn
        .query_row(
            "SELECT count(*) FROM chats WHERE session_id = ?1",
            params![session.as_uuid()],
            |r| r.get(0),
        )
        .map_err(internal)?;
    let events = decide(&chat, count)?;
    conn.execute("DELETE FROM chats WHERE id = ?1", params![id.as_uuid()])
        .map_err(internal)?;
    record(conn, session, &events, Timestamp::now())?;
    Ok(Some(chat))
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    let role: String = r.get(3)?;
    let parts: String = r.get(4)?;
    Ok(Message {
        chat_id: ChatId(r.get(0)?),
        seq: r.get(1)?,
        id: r.get(2)?,
        role: Role::parse(&role).unwrap_or(Role::User),
        parts: serde_json::from_str(&parts).unwrap_or(Value::Null),
        created_at: Timestamp::from_millis(r.get(5)?),
    })
}

pub fn append_message(
    conn: &Connection,
    session: SessionId,
    id: ChatId,
    m: NewMessage,
    now: Timestamp,
) -> Result<Option<(Message, bool)>, StoreError> {
    let Some(mut chat) = get(conn, session, id)? else {
        return Ok(None);
    };
    let existing = conn
        .prepare_cached(
            "SELECT chat_id, seq, message_id, role, parts, created_at FROM chat_messages
             WHERE chat_id = ?1 AND message_id = ?2",
        )
        .and_then(|mut st| {
            st.query_row(params![id.as_uuid(), m.id], message_row)
                .optional()
        })
        .map_err(internal)?;
    if let Some(existing) = existing {
        return Ok(Some((existing, true)));
    }
    let message = Message {
        seq: chat.message_count + 1,
        id: m.id,
        chat_id: id,
        role: m.role,
        parts: m.parts,
        created_at: now,
    };
    conn.prepare_cached(
        "INSERT INTO chat_messages (chat_id, seq, message_id, role, parts, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| {
        st.execute(params![
            id.as_uuid(),
            message.seq,
            message.id,
            message.role.as_str(),
            message.parts.to_string(),
            now.millis()
        ])
    })
    .map_err(internal)?;
    chat.message_count = message.seq;
    chat.updated_at = now;
    if message.role == Role::Assistant {
        chat.last_assistant_message_at = Some(now);
    }
    write(conn, &chat)?;
    record(conn, session, &[message_event(&chat, &message)], now)?;
    Ok(Some((message, false)))
}

pub fn list_messages(conn: &Connection, chat: ChatId) -> Result<Vec<Message>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT chat_id, seq, message_id, role, parts, created_at FROM chat_messages
             WHERE chat_id = ?1 ORDER BY seq",
        )
        .map_err(internal)?;
    let rows = st
        .query_map(params![chat.as_uuid()], message_row)
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}

pub fn mark_read(
    conn: &Connection,
    session: SessionId,
    chat: ChatId,
    reader: AccountId,
    at: Timestamp,
) -> Result<bool, StoreError> {
    if get(conn, session, chat)?.is_none() {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO chat_reads (chat_id, account_id, read_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (chat_id, account_id) DO UPDATE SET read_at = max(read_at, excluded.read_at)",
    )
    .and_then(|mut st| st.execute(params![chat.as_uuid(), reader.as_uuid(), at.millis()]))
    .map(|_| true)
    .map_err(internal)
}
