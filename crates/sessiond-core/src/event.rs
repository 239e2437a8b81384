//! Events the server appends to a session's `events` channel, in the same transaction as the
//! change they describe.

use serde_json::{json, Value};

use crate::job::{JobEventKind, JobId};
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
    Job {
        kind: JobEventKind,
        job_id: JobId,
        job_type: String,
        status: &'static str,
        attempts: i64,
        detail: Option<Value>,
    },
    Document {
        kind: crate::document::DocumentEventKind,
        detail: Value,
    },
    Chat {
        kind: &'static str,
        detail: Value,
    },
    /// A change that must be written but is not recorded on the events channel (a lease
    /// extension).
    Silent,
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SessionCreated { .. } => "session.created",
            Event::SessionPatched { .. } => "session.patched",
            Event::SessionClosed { .. } => "session.closed",
            Event::Job { kind, .. } => kind.as_str(),
            Event::Document { kind, .. } => kind.as_str(),
            Event::Chat { kind, .. } => kind,
            Event::Silent => "silent",
        }
    }

    /// Whether this event is appended to the events channel.
    pub fn is_recorded(&self) -> bool {
        !matches!(self, Event::Silent)
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
            Event::Job {
                kind,
                job_id,
                job_type,
                status,
                attempts,
                detail,
            } => {
                let mut m = json!({
                    "jobId": job_id.to_string(),
                    "jobType": job_type,
                    "status": status,
                    "attempts": attempts,
                });
                if let (Some(d), Value::Object(obj)) = (detail, &mut m) {
                    let key = if *kind == JobEventKind::Progress {
                        "progress"
                    } else {
                        "detail"
                    };
                    obj.insert(key.into(), d.clone());
                }
                m
            }
            Event::Document { detail, .. } | Event::Chat { detail, .. } => detail.clone(),
            Event::Silent => json!({}),
        };
        if let Value::Object(m) = body {
            head.extend(m);
        }
        Value::Object(head)
    }
}
