//! The session resource and its rules: validation of create input, the derived status, the merge
//! patch over the patchable fields, and close.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::codes;
use crate::event::Event;
use crate::limits::*;
use crate::merge_patch;
use crate::{AccountId, Error, SessionId, Timestamp};

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub account_id: AccountId,
    pub external_id: Option<String>,
    pub kind: Option<String>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    pub data: Map<String, Value>,
    pub closed_at: Option<Timestamp>,
    pub closed_reason: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Active,
    Closed,
    Expired,
}

impl SessionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Closed => "closed",
            SessionStatus::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "closed" => Some(Self::Closed),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

impl Session {
    /// Closed if `closedAt`, else expired if `expiresAt` is past, else active.
    pub fn status(&self, now: Timestamp) -> SessionStatus {
        if self.closed_at.is_some() {
            SessionStatus::Closed
        } else if self.expires_at.is_some_and(|e| e <= now) {
            SessionStatus::Expired
        } else {
            SessionStatus::Active
        }
    }

    pub fn is_active(&self, now: Timestamp) -> bool {
        self.status(now) == SessionStatus::Active
    }

    /// Rejects a change to a session that is no longer active.
    pub fn ensure_active(&self, now: Timestamp) -> Result<(), Error> {
        match self.status(now) {
            SessionStatus::Active => Ok(()),
            SessionStatus::Closed => Err(Error::conflict(
                codes::SESSION_CLOSED,
                format!("Session {} is closed", self.id),
            )),
            SessionStatus::Expired => Err(Error::conflict(
                codes::SESSION_CLOSED,
                format!("Session {} has expired", self.id),
            )),
        }
    }

    /// The patchable part of the session as a JSON document (what a merge patch applies to).
    fn patchable(&self) -> Value {
        let mut m = Map::new();
        m.insert("title".into(), opt_str(&self.title));
        m.insert("type".into(), opt_str(&self.kind));
        m.insert(
            "tags".into(),
            Value::Array(self.tags.iter().cloned().map(Value::String).collect()),
        );
        m.insert("metadata".into(), Value::Object(self.metadata.clone()));
        m.insert("data".into(), Value::Object(self.data.clone()));
        m.insert(
            "expiresAt".into(),
            self.expires_at
                .map(|t| Value::String(t.to_rfc3339()))
                .unwrap_or(Value::Null),
        );
        m.into_iter()
            .filter(|(_, v)| !v.is_null())
            .collect::<Map<_, _>>()
            .into()
    }

    /// Applies an RFC 7396 merge patch over `{title,type,tags,metadata,data,expiresAt}`.
    ///
    /// Returns the effective patch (the diff between before and after) and the event to record, or
    /// `None` when nothing changed (then the version is not bumped).
    pub fn apply_merge_patch(
        &mut self,
        patch: &Value,
        now: Timestamp,
    ) -> Result<Option<Event>, Error> {
        let Value::Object(fields) = patch else {
            return Err(Error::invalid(
                codes::INVALID_BODY,
                "a merge patch must be a JSON object",
            ));
        };
        for key in fields.keys() {
            match key.as_str() {
                "title" | "type" | "tags" | "metadata" | "data" | "expiresAt" => {}
                "id" | "externalId" | "status" | "version" | "createdAt" | "updatedAt"
                | "closedAt" | "closedReason" => {
                    return Err(Error::invalid(
                        codes::READ_ONLY_FIELD,
                        format!("{key} is read-only and cannot be patched"),
                    ))
                }
                other => {
                    return Err(Error::invalid(
                        codes::UNKNOWN_FIELD,
                        format!(
                            "unknown field {other:?}: a patch may change title, type, tags, metadata, data and expiresAt"
                        ),
                    ))
                }
            }
        }
        if fields.is_empty() {
            return Ok(None);
        }
        self.ensure_active(now)?;
        // Compare instants, not spellings: render a patched expiresAt the way it is stored.
        let mut patch = patch.clone();
        if let Some(Value::String(at)) = patch.get("expiresAt") {
            let parsed = Timestamp::parse_rfc3339(at).ok_or_else(|| {
                Error::invalid_field(format!("expiresAt {at:?} is not an RFC 3339 date-time"))
            })?;
            patch["expiresAt"] = Value::String(parsed.to_rfc3339());
        }
        let before = self.patchable();
        let mut after = before.clone();
        merge_patch::apply(&mut after, &patch);
        let Some(effective) = merge_patch::diff(&before, &after) else {
            return Ok(None);
        };
        let Value::Object(after) = after else {
            return Err(Error::internal("merge patch produced a non-object"));
        };
        let get = |k: &str| after.get(k).cloned().unwrap_or(Value::Null);
        let title = bounded_opt_string(get("title"), "title", TITLE_MAX_CHARS)?;
        let kind = bounded_opt_string(get("type"), "type", TYPE_MAX_CHARS)?;
        let tags = validate_tags(get("tags"))?;
        let metadata = validate_metadata(get("metadata"))?;
        let data = object_or_empty(get("data"), "data")?;
        let expires_at = match get("expiresAt") {
            Value::Null => None,
            Value::String(s) => Some(Timestamp::parse_rfc3339(&s).ok_or_else(|| {
                Error::invalid_field(format!("expiresAt {s:?} is not an RFC 3339 date-time"))
            })?),
            _ => {
                return Err(Error::invalid_field(
                    "expiresAt must be an RFC 3339 date-time string or null",
                ))
            }
        };
        self.title = title;
        self.kind = kind;
        self.tags = tags;
        self.metadata = metadata;
        self.data = data;
        self.expires_at = expires_at;
        self.version += 1;
        self.updated_at = now;
        Ok(Some(Event::SessionPatched {
            patch: effective,
            version: self.version,
        }))
    }

    /// Replaces top-level keys of `data` whole (a shallow merge): each given key takes the given
    /// value, `null` included (stored as JSON null, not removed); other keys are kept. Returns the
    /// event to record, or `None` when nothing changed (then the version is not bumped).
    pub fn replace_data_keys(
        &mut self,
        keys: Map<String, Value>,
        now: Timestamp,
    ) -> Result<Option<Event>, Error> {
        let changed: Map<String, Value> = keys
            .into_iter()
            .filter(|(k, v)| self.data.get(k) != Some(v))
            .collect();
        if changed.is_empty() {
            return Ok(None);
        }
        self.ensure_active(now)?;
        for (k, v) in &changed {
            self.data.insert(k.clone(), v.clone());
        }
        self.version += 1;
        self.updated_at = now;
        Ok(Some(Event::SessionPatched {
            patch: serde_json::json!({ "data": changed }),
            version: self.version,
        }))
    }

    /// Closes the session. Idempotent: closing a closed session changes nothing (`None`).
    pub fn close(&mut self, reason: Option<String>, now: Timestamp) -> Option<Event> {
        if self.closed_at.is_some() {
            return None;
        }
        self.closed_at = Some(now);
        self.closed_reason = reason;
        self.version += 1;
        self.updated_at = now;
        Some(Event::SessionClosed {
            reason: self.closed_reason.clone(),
            version: self.version,
        })
    }
}

fn opt_str(s: &Option<String>) -> Value {
    s.clone().map(Value::String).unwrap_or(Value::Null)
}

/// The validated input of a create.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub id: Option<SessionId>,
    pub external_id: Option<String>,
    pub kind: Option<String>,
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    pub data: Map<String, Value>,
    pub expires_at: Option<Timestamp>,
}

/// The raw create input, as a surface parsed it (types already checked, values not yet).
#[derive(Debug, Clone, Default)]
pub struct CreateSessionInput {
    pub id: Option<Uuid>,
    pub external_id: Option<String>,
    pub kind: Option<String>,
    pub title: Option<String>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Value>,
    pub data: Option<Value>,
    pub expires_at: Option<Timestamp>,
    pub ttl_seconds: Option<i64>,
}

impl CreateSessionInput {
    /// Checks every limit; `now` resolves `ttlSeconds`.
    pub fn validate(self, now: Timestamp) -> Result<NewSession, Error> {
        let external_id = match self.external_id {
            None => None,
            Some(e) => Some(validate_external_id(e)?),
        };
        let kind = bounded_opt_string(
            self.kind.map(Value::String).unwrap_or(Value::Null),
            "type",
            TYPE_MAX_CHARS,
        )?;
        let title = bounded_opt_string(
            self.title.map(Value::String).unwrap_or(Value::Null),
            "title",
            TITLE_MAX_CHARS,
        )?;
        let tags = validate_tags(
            self.tags
                .map(|t| Value::Array(t.into_iter().map(Value::String).collect()))
                .unwrap_or(Value::Null),
        )?;
        let metadata = validate_metadata(self.metadata.unwrap_or(Value::Null))?;
        let data = object_or_empty(self.data.unwrap_or(Value::Null), "data")?;
        let expires_at = match (self.expires_at, self.ttl_seconds) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_field(
                    "give either expiresAt or ttlSeconds, not both",
                ))
            }
            (Some(at), None) => {
                if at <= now {
                    return Err(Error::invalid_field("expiresAt must be in the future"));
                }
                Some(at)
            }
            (None, Some(ttl)) => {
                if !(1..=TTL_MAX_SECONDS).contains(&ttl) {
                    return Err(Error::invalid_field(format!(
                        "ttlSeconds must be between 1 and {TTL_MAX_SECONDS}"
                    )));
                }
                Some(now.plus_seconds(ttl))
            }
            (None, None) => None,
        };
        Ok(NewSession {
            id: self.id.map(SessionId),
            external_id,
            kind,
            title,
            tags,
            metadata,
            data,
            expires_at,
        })
    }
}

impl NewSession {
    /// The session as it is first stored (version 1).
    pub fn into_session(self, account_id: AccountId, now: Timestamp) -> Session {
        Session {
            id: self.id.unwrap_or_else(SessionId::random),
            account_id,
            external_id: self.external_id,
            kind: self.kind,
            title: self.title,
            tags: self.tags,
            metadata: self.metadata,
            data: self.data,
            closed_at: None,
            closed_reason: None,
            expires_at: self.expires_at,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

pub fn validate_external_id(e: String) -> Result<String, Error> {
    let n = e.chars().count();
    if n == 0 || n > EXTERNAL_ID_MAX_CHARS {
        return Err(Error::invalid_field(format!(
            "externalId must be 1 to {EXTERNAL_ID_MAX_CHARS} characters"
        )));
    }
    if Uuid::parse_str(&e).is_ok() {
        return Err(Error::invalid_field(
            "externalId must not be a UUID: a UUID in a path always names a session id",
        ));
    }
    if e.contains('/') || e.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            "externalId must not contain '/' or control characters (it is used as a path segment)",
        ));
    }
    Ok(e)
}

pub fn validate_close_reason(reason: Option<String>) -> Result<Option<String>, Error> {
    match reason {
        Some(r) if r.chars().count() > CLOSE_REASON_MAX_CHARS => Err(Error::invalid_field(
            format!("reason must be at most {CLOSE_REASON_MAX_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

fn bounded_opt_string(v: Value, field: &str, max: usize) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            if s.chars().count() > max {
                Err(Error::invalid_field(format!(
                    "{field} must be at most {max} characters"
                )))
            } else {
                Ok(Some(s))
            }
        }
        _ => Err(Error::invalid_field(format!(
            "{field} must be a string or null"
        ))),
    }
}

fn validate_tags(v: Value) -> Result<Vec<String>, Error> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(Error::invalid_field("tags must be an array of strings")),
    };
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(tag) = item else {
            return Err(Error::invalid_field("tags must be an array of strings"));
        };
        let n = tag.chars().count();
        if n == 0 || n > TAG_MAX_CHARS {
            return Err(Error::invalid_field(format!(
                "each tag must be 1 to {TAG_MAX_CHARS} characters"
            )));
        }
        // Tags are a set: a repeated tag is kept once, in first-seen order.
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > TAGS_MAX {
        return Err(Error::invalid_field(format!(
            "a session has at most {TAGS_MAX} tags ({} given)",
            tags.len()
        )));
    }
    Ok(tags)
}

fn object_or_empty(v: Value, field: &str) -> Result<Map<String, Value>, Error> {
    match v {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        _ => Err(Error::invalid_field(format!(
            "{field} must be a JSON object"
        ))),
    }
}

fn validate_metadata(v: Value) -> Result<Map<String, Value>, Error> {
    let m = object_or_empty(v, "metadata")?;
    if let Some(k) = m
        .keys()
        .find(|k| k.chars().count() > METADATA_KEY_MAX_CHARS)
    {
        return Err(Error::invalid_field(format!(
            "metadata key {:?}… is longer than {METADATA_KEY_MAX_CHARS} characters",
            k.chars().take(32).collect::<String>()
        )));
    }
    let size = serde_json::to_vec(&m)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if size > METADATA_MAX_BYTES {
        return Err(Error::invalid_field(format!(
            "metadata is {size} bytes as JSON; the limit is {METADATA_MAX_BYTES}"
        )));
    }
    Ok(m)
}

/// What a session listing may filter on.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub statuses: Vec<SessionStatus>,
    pub kind: Option<String>,
    pub tags_any: Vec<String>,
    pub external_id: Option<String>,
    pub metadata_eq: Vec<(String, String)>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    pub title_contains: Option<String>,
}

/// One page request: filter, position and size. Backends return up to `limit` rows in
/// `createdAt desc, id desc` order, strictly after `after` when given.
#[derive(Debug, Clone)]
pub struct SessionQuery {
    pub filter: SessionFilter,
    pub after: Option<crate::cursor::Cursor>,
    pub limit: usize,
    /// The instant against which `expired` is judged.
    pub now: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session() -> Session {
        let now = Timestamp::from_millis(1_000_000);
        CreateSessionInput {
            title: Some("t".into()),
            tags: Some(vec!["a".into(), "b".into(), "a".into()]),
            data: Some(json!({"x": {"y": 1}})),
            ..Default::default()
        }
        .validate(now)
        .unwrap()
        .into_session(AccountId::DEFAULT, now)
    }

    #[test]
    fn tags_are_deduplicated() {
        assert_eq!(session().tags, vec!["a", "b"]);
    }

    #[test]
    fn merge_patch_merges_nested_and_bumps_version() {
        let mut s = session();
        let now = Timestamp::from_millis(2_000_000);
        let ev = s
            .apply_merge_patch(&json!({"data": {"x": {"z": 2}}, "title": null}), now)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.data,
            json!({"x": {"y": 1, "z": 2}}).as_object().unwrap().clone()
        );
        assert_eq!(s.title, None);
        assert_eq!(s.version, 2);
        match ev {
            Event::SessionPatched { patch, version } => {
                assert_eq!(version, 2);
                assert_eq!(patch, json!({"title": null, "data": {"x": {"z": 2}}}));
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    #[test]
    fn no_op_patch_does_not_bump() {
        let mut s = session();
        let now = Timestamp::from_millis(2_000_000);
        assert!(s.apply_merge_patch(&json!({}), now).unwrap().is_none());
        assert!(s
            .apply_merge_patch(&json!({"title": "t"}), now)
            .unwrap()
            .is_none());
        assert_eq!(s.version, 1);
    }

    #[test]
    fn read_only_and_unknown_fields_are_rejected_without_change() {
        let mut s = session();
        let before = s.clone();
        let now = Timestamp::from_millis(2_000_000);
        let e = s
            .apply_merge_patch(&json!({"externalId": "x"}), now)
            .unwrap_err();
        assert_eq!(e.code, codes::READ_ONLY_FIELD);
        let e = s
            .apply_merge_patch(&json!({"colour": "x"}), now)
            .unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_FIELD);
        let e = s.apply_merge_patch(&json!({"tags": [1]}), now).unwrap_err();
        assert_eq!(e.code, codes::INVALID_FIELD);
        assert_eq!(s, before);
    }

    #[test]
    fn status_is_derived() {
        let mut s = session();
        let now = Timestamp::from_millis(5_000_000);
        assert_eq!(s.status(now), SessionStatus::Active);
        s.expires_at = Some(Timestamp::from_millis(4_000_000));
        assert_eq!(s.status(now), SessionStatus::Expired);
        s.close(None, now);
        assert_eq!(s.status(now), SessionStatus::Closed);
        assert!(s.close(None, now).is_none(), "close is idempotent");
    }

    #[test]
    fn external_id_rules() {
        assert!(validate_external_id(Uuid::new_v4().to_string()).is_err());
        assert!(validate_external_id(String::new()).is_err());
        assert!(validate_external_id("a".repeat(257)).is_err());
        assert!(validate_external_id("a/b".into()).is_err());
        assert!(validate_external_id("user-42".into()).is_ok());
    }
}
