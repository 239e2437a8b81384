//! Chats: conversations inside a session, with ordered, exactly-once messages.

use serde_json::{json, Value};

use crate::error::codes;
use crate::event::Event;
use crate::{AccountId, Error, SessionId, Timestamp};

crate::ids::uuid_id!(
    /// A chat's id.
    ChatId
);

pub const CHAT_TITLE_MAX_CHARS: usize = 256;
pub const MODEL_ID_MAX_CHARS: usize = 256;
pub const MESSAGE_ID_MAX_CHARS: usize = 256;
/// One message's parts, as JSON.
pub const MESSAGE_MAX_BYTES: usize = 1024 * 1024;
pub const DEFAULT_CHAT_TITLE: &str = "New chat";

#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub id: ChatId,
    pub session_id: SessionId,
    pub account_id: AccountId,
    pub title: String,
    pub model_id: Option<String>,
    pub active_stream_id: Option<String>,
    pub last_assistant_message_at: Option<Timestamp>,
    pub message_count: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    System,
    Tool,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Tool => "tool",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub seq: i64,
    pub id: String,
    pub chat_id: ChatId,
    pub role: Role,
    /// JSON array of parts, stored as written.
    pub parts: Value,
    pub created_at: Timestamp,
}

/// A chat to create: validated title and model.
#[derive(Debug, Clone, Default)]
pub struct NewChat {
    pub id: Option<ChatId>,
    pub title: Option<String>,
    pub model_id: Option<String>,
}

fn trimmed(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, Error> {
    match v {
        None => Ok(None),
        Some(s) => {
            let t = s.trim();
            if t.is_empty() {
                return Err(Error::invalid_field(format!("{field} cannot be empty")));
            }
            if t.chars().count() > max {
                return Err(Error::invalid_field(format!(
                    "{field} must be at most {max} characters"
                )));
            }
            Ok(Some(t.to_owned()))
        }
    }
}

impl NewChat {
    pub fn validate(self) -> Result<NewChat, Error> {
        Ok(NewChat {
            id: self.id,
            title: trimmed("title", self.title, CHAT_TITLE_MAX_CHARS)?,
            model_id: trimmed("modelId", self.model_id, MODEL_ID_MAX_CHARS)?,
        })
    }

    pub fn into_chat(self, session: SessionId, account: AccountId, now: Timestamp) -> Chat {
        Chat {
            id: self.id.unwrap_or_else(ChatId::random),
            session_id: session,
            account_id: account,
            title: self.title.unwrap_or_else(|| DEFAULT_CHAT_TITLE.to_owned()),
            model_id: self.model_id,
            active_stream_id: None,
            last_assistant_message_at: None,
            message_count: 0,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A change to a chat's title or model; at least one field.
#[derive(Debug, Clone, Default)]
pub struct ChatPatch {
    pub title: Option<String>,
    pub model_id: Option<String>,
}

impl ChatPatch {
    pub fn validate(self) -> Result<ChatPatch, Error> {
        if self.title.is_none() && self.model_id.is_none() {
            return Err(Error::invalid_field("At least one field is required"));
        }
        Ok(ChatPatch {
            title: trimmed("title", self.title, CHAT_TITLE_MAX_CHARS)?,
            model_id: trimmed("modelId", self.model_id, MODEL_ID_MAX_CHARS)?,
        })
    }
}

impl Chat {
    /// Applies a patch; `None` when nothing changed.
    pub fn apply(&mut self, patch: ChatPatch, now: Timestamp) -> Option<Event> {
        let mut changed = false;
        if let Some(t) = patch.title {
            changed |= self.title != t;
            self.title = t;
        }
        if patch.model_id.is_some() && self.model_id != patch.model_id {
            self.model_id = patch.model_id;
            changed = true;
        }
        if !changed {
            return None;
        }
        self.updated_at = now;
        Some(self.event("chat.updated"))
    }

    pub fn event(&self, kind: &'static str) -> Event {
        Event::Chat {
            kind,
            detail: json!({
                "chatId": self.id.to_string(),
                "title": self.title,
                "modelId": self.model_id,
                "messageCount": self.message_count,
            }),
        }
    }

    /// Whether the account has not read the chat since the last assistant message.
    pub fn has_unread(&self, read_at: Option<Timestamp>) -> bool {
        match (self.last_assistant_message_at, read_at) {
            (Some(last), Some(read)) => last > read,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// A message as a client sent it.
#[derive(Debug, Clone)]
pub struct MessageInput {
    pub id: Option<String>,
    pub role: String,
    pub parts: Value,
}

/// A validated message ready to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub id: String,
    pub role: Role,
    pub parts: Value,
}

impl MessageInput {
    pub fn validate(self, generate_id: impl FnOnce() -> String) -> Result<NewMessage, Error> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            Error::invalid_field(format!(
                "role must be user, assistant, system or tool, got {:?}",
                self.role
            ))
        })?;
        if !self.parts.is_array() {
            return Err(Error::invalid_field("parts must be a JSON array"));
        }
        let size = self.parts.to_string().len();
        if size > MESSAGE_MAX_BYTES {
            return Err(Error::new(
                crate::ErrorKind::PayloadTooLarge,
                codes::PAYLOAD_TOO_LARGE,
                format!("the message is {size} bytes as JSON; the limit is {MESSAGE_MAX_BYTES}"),
            ));
        }
        let id = match self.id {
            Some(id) => {
                let n = id.chars().count();
                if n == 0 || n > MESSAGE_ID_MAX_CHARS || id.chars().any(char::is_control) {
                    return Err(Error::invalid_field(format!(
                        "id must be 1 to {MESSAGE_ID_MAX_CHARS} characters"
                    )));
                }
                id
            }
            None => generate_id(),
        };
        Ok(NewMessage {
            id,
            role,
            parts: self.parts,
        })
    }
}

pub fn message_event(chat: &Chat, m: &Message) -> Event {
    Event::Chat {
        kind: "chat.message",
        detail: json!({
            "chatId": chat.id.to_string(),
            "messageId": m.id,
            "seq": m.seq,
            "role": m.role.as_str(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_rules() {
        assert!(ChatPatch::default().validate().is_err());
        let e = ChatPatch {
            title: Some("  ".into()),
            model_id: None,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.message, "title cannot be empty");
        let p = ChatPatch {
            title: Some(" Plan ".into()),
            model_id: None,
        }
        .validate()
        .unwrap();
        assert_eq!(p.title.as_deref(), Some("Plan"));
    }

    #[test]
    fn unread() {
        let now = Timestamp::from_millis(10);
        let mut c = NewChat::default().into_chat(SessionId::random(), AccountId::DEFAULT, now);
        assert!(!c.has_unread(None));
        c.last_assistant_message_at = Some(Timestamp::from_millis(20));
        assert!(c.has_unread(None));
        assert!(c.has_unread(Some(Timestamp::from_millis(15))));
        assert!(!c.has_unread(Some(Timestamp::from_millis(20))));
    }

    #[test]
    fn message_validation() {
        let ok = MessageInput {
            id: None,
            role: "user".into(),
            parts: json!([{"type":"text","text":"hi"}]),
        }
        .validate(|| "g".into())
        .unwrap();
        assert_eq!(ok.id, "g");
        assert!(MessageInput {
            id: None,
            role: "bot".into(),
            parts: json!([])
        }
        .validate(|| "g".into())
        .is_err());
        assert!(MessageInput {
            id: None,
            role: "user".into(),
            parts: json!({})
        }
        .validate(|| "g".into())
        .is_err());
    }
}
