//! `/v1/sessions/{session}/chats`: conversations inside a session.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessiond_core::chat::{Chat, ChatId, ChatPatch, Message, MessageInput, NewChat};
use sessiond_core::error::codes;
use sessiond_core::ids::SessionRef;
use sessiond_core::Error;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::channels::authorized_session;
use crate::app::App;
use crate::auth::{Access, Caller};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{ApiJson, OptionalJson};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatView {
    pub id: Uuid,
    pub session_id: Uuid,
    pub title: String,
    pub model_id: Option<String>,
    pub active_stream_id: Option<String>,
    #[schema(format = DateTime)]
    pub last_assistant_message_at: Option<String>,
    pub message_count: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Chat> for ChatView {
    fn from(c: Chat) -> Self {
        ChatView {
            id: *c.id.as_uuid(),
            session_id: *c.session_id.as_uuid(),
            title: c.title,
            model_id: c.model_id,
            active_stream_id: c.active_stream_id,
            last_assistant_message_at: c.last_assistant_message_at.map(|t| t.to_rfc3339()),
            message_count: c.message_count,
            created_at: c.created_at.to_rfc3339(),
            updated_at: c.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatSummaryView {
    #[serde(flatten)]
    pub chat: ChatView,
    /// An assistant message arrived after the caller's last read mark.
    pub has_unread: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub seq: i64,
    pub id: String,
    /// `user`, `assistant`, `system`, `tool`.
    pub role: String,
    #[schema(value_type = Vec<Object>)]
    pub parts: Value,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        MessageView {
            seq: m.seq,
            id: m.id,
            role: m.role.as_str().to_owned(),
            parts: m.parts,
            created_at: m.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatWithMessages {
    #[serde(flatten)]
    pub chat: ChatView,
    pub messages: Vec<MessageView>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateChatBody {
    pub id: Option<Uuid>,
    /// 1–256 characters (trimmed); default "New chat".
    pub title: Option<String>,
    pub model_id: Option<String>,
}

impl From<CreateChatBody> for NewChat {
    fn from(b: CreateChatBody) -> Self {
        NewChat {
            id: b.id.map(ChatId),
            title: b.title,
            model_id: b.model_id,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchChatBody {
    pub title: Option<String>,
    pub model_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// Client-chosen id: a repeated id is not appended again.
    pub id: Option<String>,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    /// A JSON array of parts (at most 1 MiB).
    #[schema(value_type = Vec<Object>)]
    pub parts: Value,
}

fn parse_chat_id(s: &str) -> Result<ChatId, Error> {
    s.parse()
        .map_err(|_| Error::not_found(codes::CHAT_NOT_FOUND, format!("Chat {s} not found")))
}

/// The session's chats, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{session}/chats", tag = "chats",
    params(("session" = String, Path)),
    responses((status = 200, body = [ChatSummaryView]), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
) -> ApiResult<Json<Vec<ChatSummaryView>>> {
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let chats = app
        .services
        .chats
        .list(s.id, caller.session_account()?)
        .await?;
    Ok(Json(
        chats
            .into_iter()
            .map(|(c, has_unread)| ChatSummaryView {
                chat: c.into(),
                has_unread,
            })
            .collect(),
    ))
}

/// Create a chat (the same id again in this session returns it with 200).
#[utoipa::path(post, path = "/v1/sessions/{session}/chats", tag = "chats",
    params(("session" = String, Path)),
    request_body = CreateChatBody,
    responses(
        (status = 201, description = "Created", body = ChatView),
        (status = 200, description = "A chat with this id exists in the session", body = ChatView),
        (status = 409, description = "`chat_exists` (id of another session's chat), `session_closed`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
    OptionalJson(body): OptionalJson<CreateChatBody>,
) -> ApiResult<(StatusCode, Json<ChatView>)> {
    let account = caller.account()?;
    let (chat, created) = app
        .services
        .chats
        .create(account, &SessionRef::parse(&session), body.into())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(chat.into())))
}

/// A chat with its messages.
#[utoipa::path(get, path = "/v1/sessions/{session}/chats/{chat}", tag = "chats",
    params(("session" = String, Path), ("chat" = Uuid, Path)),
    responses((status = 200, body = ChatWithMessages), (status = 404, description = "`chat_not_found`", body = ErrorBody)))]
pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, chat)): Path<(String, String)>,
) -> ApiResult<Json<ChatWithMessages>> {
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let chat = app.services.chats.get(s.id, parse_chat_id(&chat)?).await?;
    let messages = app.services.chats.messages(chat.id).await?;
    Ok(Json(ChatWithMessages {
        chat: chat.into(),
        messages: messages.into_iter().map(MessageView::from).collect(),
    }))
}

/// Rename a chat or change its model.
#[utoipa::path(patch, path = "/v1/sessions/{session}/chats/{chat}", tag = "chats",
    params(("session" = String, Path), ("chat" = Uuid, Path)),
    request_body = PatchChatBody,
    responses((status = 200, body = ChatView), (status = 404, body = ErrorBody), (status = 422, description = "`invalid_field`", body = ErrorBody)))]
pub async fn patch(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, chat)): Path<(String, String)>,
    ApiJson(body): ApiJson<PatchChatBody>,
) -> ApiResult<Json<ChatView>> {
    let account = caller.account()?;
    let s = app
        .services
        .sessions
        .get(account, &SessionRef::parse(&session))
        .await?;
    let chat = app
        .services
        .chats
        .patch(
            s.id,
            parse_chat_id(&chat)?,
            ChatPatch {
                title: body.title,
                model_id: body.model_id,
            },
        )
        .await?;
    Ok(Json(chat.into()))
}

/// Delete a chat (not the session's last one).
#[utoipa::path(delete, path = "/v1/sessions/{session}/chats/{chat}", tag = "chats",
    params(("session" = String, Path), ("chat" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "`last_chat`", body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, chat)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let account = caller.account()?;
    let s = app
        .services
        .sessions
        .get(account, &SessionRef::parse(&session))
        .await?;
    app.services
        .chats
        .delete(s.id, parse_chat_id(&chat)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The chat's messages in order.
#[utoipa::path(get, path = "/v1/sessions/{session}/chats/{chat}/messages", tag = "chats",
    params(("session" = String, Path), ("chat" = Uuid, Path)),
    responses((status = 200, body = [MessageView]), (status = 404, body = ErrorBody)))]
pub async fn messages(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, chat)): Path<(String, String)>,
) -> ApiResult<Json<Vec<MessageView>>> {
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    let chat = app.services.chats.get(s.id, parse_chat_id(&chat)?).await?;
    let messages = app.services.chats.messages(chat.id).await?;
    Ok(Json(messages.into_iter().map(MessageView::from).collect()))
}

/// Append a message (exactly once by `id`).
#[utoipa::path(post, path = "/v1/sessions/{session}/chats/{chat}/messages", tag = "chats",
    params(("session" = String, Path), ("chat" = Uuid, Path)),
    request_body = MessageBody,
    responses(
        (status = 201, description = "Appended", body = MessageView),
        (status = 200, description = "A message with this id was already appended", body = MessageView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`session_closed`", body = ErrorBody),
        (status = 422, description = "`invalid_field`", body = ErrorBody),
    ))]
pub async fn append(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, chat)): Path<(String, String)>,
    ApiJson(body): ApiJson<MessageBody>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    let account = caller.account()?;
    let s = app
        .services
        .sessions
        .get(account, &SessionRef::parse(&session))
        .await?;
    let (message, duplicate) = app
        .services
        .chats
        .append(
            &s,
            parse_chat_id(&chat)?,
            MessageInput {
                id: body.id,
                role: body.role,
                parts: body.parts,
            },
        )
        .await?;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(message.into())))
}

/// Mark the chat read for the caller's account (clears `hasUnread`).
#[utoipa::path(post, path = "/v1/sessions/{session}/chats/{chat}/read", tag = "chats",
    params(("session" = String, Path), ("chat" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((session, chat)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let s = authorized_session(&app, &caller, &session, Access::Read).await?;
    app.services
        .chats
        .mark_read(s.id, parse_chat_id(&chat)?, caller.session_account()?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
