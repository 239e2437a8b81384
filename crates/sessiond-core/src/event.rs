//! Events the server appends to a session's `events` channel, in the same transaction as the
//! change they describe.

use serde_json::{json, Value};

use crate::session::Session;

/// The name of the server-written channel that holds a session's history.
pub const EVENTS_CHANNEL: &str = "events";

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    SessionCreated {
        version: i64,
    },
    SessionPatched {
        patch: Value,
        version: i64,
    },
    SessionClosed {
        reason: Option<String>,
        version: i64,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SessionCreated { .. } => "session.created",
            Event::SessionPatched { .. } => "session.patched",
            Event::SessionClosed { .. } => "session.closed",
        }
    }

    /// The record `data` of this event: `{"type": "session.patched", "sessionId": …, …}`.
    pub fn to_record_data(&self, session: &Session) -> Value {
        let mut head = serde_json::Map::new();
        head.insert("type".into(), Value::from(self.kind()));
        head.insert("sessionId".into(), Value::from(session.id.to_string()));
        let body = match self {
            Event::SessionCreated { version } => json!({ "version": version }),
            Event::SessionPatched { patch, version } => {
                json!({ "patch": patch, "version": version })
            }
            Event::SessionClosed { reason, version } => {
                json!({ "reason": reason, "version": version })
            }
        };
        if let Value::Object(m) = body {
            head.extend(m);
        }
        Value::Object(head)
    }
}
