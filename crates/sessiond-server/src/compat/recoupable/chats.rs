//! `/api/sessions/{sessionId}/chats…`: the chats of a session, on the native chat service.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond_core::chat::{Chat, ChatId, ChatPatch, Message, NewChat};
use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::AccountId;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::RecoupCaller;
use super::body::{self, Parsed, RawBody};
use super::error::{RecoupError, RecoupErrorBody, RecoupResult, INVALID_JSON};
use crate::app::App;
use crate::service::agent;

/// The model a chat list reports as the default (`defaultModelId`). sessiond runs no model; this
/// is the default of the open-agents front end these clients come from, so its model picker
/// finds it.
pub const DEFAULT_MODEL_ID: &str = "openai/gpt-5.4";

/// A chat as this surface renders it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoupChat {
    pub id: Uuid,
    pub session_id: Uuid,
    pub title: String,
    pub model_id: Option<String>,
    pub active_stream_id: Option<String>,
    #[schema(format = DateTime)]
    pub last_assistant_message_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Chat> for RecoupChat {
    fn from(c: Chat) -> Self {
        RecoupChat {
            id: *c.id.as_uuid(),
            session_id: *c.session_id.as_uuid(),
            title: c.title,
            model_id: c.model_id,
            active_stream_id: c.active_stream_id,
            last_assistant_message_at: c.last_assistant_message_at.map(|t| t.to_rfc3339()),
            created_at: c.created_at.to_rfc3339(),
            updated_at: c.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoupChatSummary {
    #[serde(flatten)]
    pub chat: RecoupChat,
    /// An assistant message arrived after the caller's last read mark.
    pub has_unread: bool,
    /// `activeStreamId` is set.
    pub is_streaming: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoupChatList {
    /// Oldest first.
    pub chats: Vec<RecoupChatSummary>,
    pub default_model_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoupChatResponse {
    pub chat: RecoupChat,
}

/// A message as the AI SDK's `UIMessage`: `{id, role, parts}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoupMessage {
    pub id: String,
    pub role: String,
    #[schema(value_type = Vec<Object>)]
    pub parts: Value,
}

impl From<Message> for RecoupMessage {
    fn from(m: Message) -> Self {
        RecoupMessage {
            id: m.id,
            role: m.role.as_str().to_owned(),
            parts: m.parts,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoupChatWithMessages {
    pub chat: RecoupChat,
    pub is_streaming: bool,
    /// In order.
    pub messages: Vec<RecoupMessage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoupSuccess {
    #[schema(example = true)]
    pub success: bool,
}

const SUCCESS: RecoupSuccess = RecoupSuccess { success: true };

/// The body of a chat create (documentation).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the raw body
#[schema(as = RecoupCreateChatBody)]
pub struct CreateBody {
    /// Claims this chat id (a UUID): the same id in this session answers the existing chat.
    #[schema(format = Uuid)]
    id: Option<String>,
}

/// The body of a chat patch (documentation).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the raw body
#[schema(as = RecoupPatchChatBody)]
#[serde(rename_all = "camelCase")]
pub struct PatchBody {
    /// Trimmed, not empty.
    title: Option<String>,
    /// Trimmed, not empty.
    model_id: Option<String>,
}

/// The session, checked (404, then 403), by its path segment.
async fn owned(app: &App, account: AccountId, session: &str) -> RecoupResult<Session> {
    Ok(agent::get_revealing(&app.services, account, &SessionRef::parse(session)).await?)
}

/// A chat id from the path; one that is not a UUID names no chat.
fn chat_id(s: &str) -> RecoupResult<ChatId> {
    s.parse().map_err(|_| RecoupError::chat_not_found())
}

/// The session's chats, oldest first, with the caller's unread state.
#[utoipa::path(get, path = "/api/sessions/{sessionId}/chats", tag = "recoupable",
    operation_id = "recoupable_list_chats",
    params(("sessionId" = String, Path)),
    responses(
        (status = 200, body = RecoupChatList),
        (status = 401, body = RecoupErrorBody),
        (status = 403, body = RecoupErrorBody),
        (status = 404, body = RecoupErrorBody),
    ))]
pub async fn list(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path(session): Path<String>,
) -> RecoupResult<Json<RecoupChatList>> {
    let s = owned(&app, account, &session).await?;
    let chats = app.services.chats.list(s.id, account).await?;
    Ok(Json(RecoupChatList {
        chats: chats
            .into_iter()
            .map(|(c, has_unread)| RecoupChatSummary {
                is_streaming: c.active_stream_id.is_some(),
                chat: c.into(),
                has_unread,
            })
            .collect(),
        default_model_id: Some(DEFAULT_MODEL_ID.to_owned()),
    }))
}

fn parse_create(bytes: &[u8]) -> RecoupResult<Option<ChatId>> {
    let m = match body::parse(bytes) {
        Parsed::Json(Value::Object(m)) => m,
        // Anything but an object counts as `{}`.
        _ => Map::new(),
    };
    match m.get("id") {
        None => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| RecoupError::invalid_chat_id()),
        Some(_) => Err(RecoupError::invalid_chat_id()),
    }
}

/// Add a chat titled "New chat" (or answer the chat this id already names in this session).
#[utoipa::path(post, path = "/api/sessions/{sessionId}/chats", tag = "recoupable",
    operation_id = "recoupable_create_chat",
    params(("sessionId" = String, Path)),
    request_body = CreateBody,
    responses(
        (status = 200, description = "Created, or the existing chat with this id", body = RecoupChatResponse),
        (status = 400, description = "`{\"error\":\"Invalid chat id\"}`"),
        (status = 401, body = RecoupErrorBody),
        (status = 403, body = RecoupErrorBody),
        (status = 404, body = RecoupErrorBody),
        (status = 409, description = "`{\"error\":\"Chat ID conflict\"}`: the id is another session's chat"),
    ))]
pub async fn create(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path(session): Path<String>,
    RawBody(bytes): RawBody,
) -> RecoupResult<Json<RecoupChatResponse>> {
    let s = owned(&app, account, &session).await?;
    let id = parse_create(&bytes)?;
    let (chat, _created) = app
        .services
        .chats
        .create(
            account,
            &SessionRef::Id(s.id),
            NewChat {
                id,
                ..NewChat::default()
            },
        )
        .await?;
    Ok(Json(RecoupChatResponse { chat: chat.into() }))
}

/// A chat with its messages.
#[utoipa::path(get, path = "/api/sessions/{sessionId}/chats/{chatId}", tag = "recoupable",
    operation_id = "recoupable_get_chat",
    params(("sessionId" = String, Path), ("chatId" = String, Path)),
    responses(
        (status = 200, body = RecoupChatWithMessages),
        (status = 401, body = RecoupErrorBody),
        (status = 403, body = RecoupErrorBody),
        (status = 404, description = "`Session not found`, `Chat not found` (also a chat of another session)", body = RecoupErrorBody),
    ))]
pub async fn get(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path((session, chat)): Path<(String, String)>,
) -> RecoupResult<Json<RecoupChatWithMessages>> {
    let s = owned(&app, account, &session).await?;
    let chat = app.services.chats.get(s.id, chat_id(&chat)?).await?;
    let messages = app.services.chats.messages(chat.id).await?;
    Ok(Json(RecoupChatWithMessages {
        is_streaming: chat.active_stream_id.is_some(),
        chat: chat.into(),
        messages: messages.into_iter().map(RecoupMessage::from).collect(),
    }))
}

fn parse_patch(bytes: &[u8]) -> RecoupResult<ChatPatch> {
    let v = match body::parse(bytes) {
        Parsed::Json(v) => v,
        Parsed::Empty | Parsed::Invalid => return Err(RecoupError::bad_request(INVALID_JSON)),
    };
    let m = body::object(v).map_err(RecoupError::bad_request)?;
    let unknown: Vec<String> = m
        .keys()
        .filter(|k| *k != "title" && *k != "modelId")
        .map(|k| format!("\"{k}\""))
        .collect();
    if !unknown.is_empty() {
        let s = if unknown.len() > 1 { "s" } else { "" };
        return Err(RecoupError::bad_request(format!(
            "Unrecognized key{s}: {}",
            unknown.join(", ")
        )));
    }
    Ok(ChatPatch {
        title: body::string(&m, "title", false).map_err(RecoupError::bad_request)?,
        model_id: body::string(&m, "modelId", false).map_err(RecoupError::bad_request)?,
    })
}

/// Rename a chat or change its model.
#[utoipa::path(patch, path = "/api/sessions/{sessionId}/chats/{chatId}", tag = "recoupable",
    operation_id = "recoupable_patch_chat",
    params(("sessionId" = String, Path), ("chatId" = String, Path)),
    request_body = PatchBody,
    responses(
        (status = 200, body = RecoupChatResponse),
        (status = 400, description = "`At least one field is required`, `<field> cannot be empty`, `Invalid JSON body`", body = RecoupErrorBody),
        (status = 401, body = RecoupErrorBody),
        (status = 403, body = RecoupErrorBody),
        (status = 404, body = RecoupErrorBody),
    ))]
pub async fn patch(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path((session, chat)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> RecoupResult<Json<RecoupChatResponse>> {
    let s = owned(&app, account, &session).await?;
    let id = chat_id(&chat)?;
    // The chat must exist before its body is judged.
    app.services.chats.get(s.id, id).await?;
    let change = parse_patch(&bytes)?;
    let chat = app.services.chats.patch(s.id, id, change).await?;
    Ok(Json(RecoupChatResponse { chat: chat.into() }))
}

/// Delete a chat; not the session's only one.
#[utoipa::path(delete, path = "/api/sessions/{sessionId}/chats/{chatId}", tag = "recoupable",
    operation_id = "recoupable_delete_chat",
    params(("sessionId" = String, Path), ("chatId" = String, Path)),
    responses(
        (status = 200, body = RecoupSuccess),
        (status = 400, description = "`Cannot delete the only chat in a session`", body = RecoupErrorBody),
        (status = 401, body = RecoupErrorBody),
        (status = 403, body = RecoupErrorBody),
        (status = 404, body = RecoupErrorBody),
    ))]
pub async fn delete(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path((session, chat)): Path<(String, String)>,
) -> RecoupResult<Json<RecoupSuccess>> {
    let s = owned(&app, account, &session).await?;
    app.services.chats.delete(s.id, chat_id(&chat)?).await?;
    Ok(Json(SUCCESS))
}

/// Mark the chat read for the caller (clears `hasUnread`).
#[utoipa::path(post, path = "/api/sessions/{sessionId}/chats/{chatId}/read", tag = "recoupable",
    operation_id = "recoupable_mark_chat_read",
    params(("sessionId" = String, Path), ("chatId" = String, Path)),
    responses(
        (status = 200, body = RecoupSuccess),
        (status = 401, body = RecoupErrorBody),
        (status = 403, body = RecoupErrorBody),
        (status = 404, body = RecoupErrorBody),
    ))]
pub async fn read(
    State(app): State<App>,
    RecoupCaller(account): RecoupCaller,
    Path((session, chat)): Path<(String, String)>,
) -> RecoupResult<Json<RecoupSuccess>> {
    let s = owned(&app, account, &session).await?;
    app.services
        .chats
        .mark_read(s.id, chat_id(&chat)?, account)
        .await?;
    Ok(Json(SUCCESS))
}
