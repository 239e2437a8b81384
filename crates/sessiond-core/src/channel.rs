//! Channels: durable, ordered record streams per session.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::codes;
use crate::limits::*;
use crate::{Error, Timestamp};

pub const IN: &str = "in";
pub const OUT: &str = "out";
pub use crate::event::EVENTS_CHANNEL as EVENTS;

/// A channel name: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::bad_request(
                codes::INVALID_CHANNEL,
                format!(
                    "invalid channel name {s:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
                ),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_events(&self) -> bool {
        self.0 == EVENTS
    }
}

impl std::fmt::Display for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record ready to append: its id is always set (generated when the producer gave none) and
/// its data and headers are serialised JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub id: String,
    pub data: String,
    pub headers: String,
}

/// A stored record. `data` and `headers` stay raw JSON: the server never needs to look inside.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: i64,
    pub id: String,
    pub data: Box<RawValue>,
    pub headers: Box<RawValue>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub id: String,
    pub seq: i64,
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    pub last_seq: i64,
    pub record_count: i64,
    pub updated_at: Timestamp,
}

/// A record as a producer sent it, before validation. `data` is JSON text (any JSON value,
/// `null` included); `None` means the producer left it out.
#[derive(Debug, Clone)]
pub struct RecordInput {
    pub id: Option<String>,
    pub data: Option<String>,
    pub headers: Option<Value>,
}

/// Checks a batch against every limit and serialises it; ids are generated where missing.
pub fn validate_batch(
    records: Vec<RecordInput>,
    mut generate_id: impl FnMut() -> String,
) -> Result<Vec<NewRecord>, Error> {
    if records.is_empty() {
        return Err(Error::invalid_field(
            "records must hold at least one record",
        ));
    }
    if records.len() > RECORD_BATCH_MAX {
        return Err(Error::invalid_field(format!(
            "a batch holds at most {RECORD_BATCH_MAX} records ({} given)",
            records.len()
        )));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let Some(data) = r.data else {
            return Err(Error::invalid_field(format!(
                "records[{i}].data is required"
            )));
        };
        let headers = match r.headers {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Error::invalid_field(format!(
                    "records[{i}].headers must be a JSON object"
                )))
            }
        };
        let id = match r.id {
            Some(id) => {
                let n = id.chars().count();
                if n == 0 || n > RECORD_ID_MAX_CHARS || id.chars().any(char::is_control) {
                    return Err(Error::invalid_field(format!(
                        "records[{i}].id must be 1 to {RECORD_ID_MAX_CHARS} characters without control characters"
                    )));
                }
                id
            }
            None => generate_id(),
        };
        let headers =
            serde_json::to_string(&headers).map_err(|e| Error::internal(e.to_string()))?;
        let size = data.len() + headers.len();
        if size > RECORD_MAX_BYTES {
            return Err(Error::new(
                crate::ErrorKind::PayloadTooLarge,
                codes::RECORD_TOO_LARGE,
                format!("records[{i}] is {size} bytes as JSON; a record holds at most {RECORD_MAX_BYTES}"),
            ));
        }
        total += size;
        if total > RECORD_BATCH_MAX_BYTES {
            return Err(Error::new(
                crate::ErrorKind::PayloadTooLarge,
                codes::PAYLOAD_TOO_LARGE,
                format!("the batch is over {RECORD_BATCH_MAX_BYTES} bytes as JSON"),
            ));
        }
        out.push(NewRecord { id, data, headers });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn channel_names() {
        for ok in ["in", "out", "a", "0", "a.b_c-d", &"x".repeat(64)] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "In", "-a", ".a", "a b", "a/b", &"x".repeat(65), "é"] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batch_limits() {
        let rec = |data: Option<Value>| RecordInput {
            id: None,
            data: data.map(|d| d.to_string()),
            headers: None,
        };
        let mut n = 0;
        let gen = || {
            n += 1;
            format!("g{n}")
        };
        let ok = validate_batch(vec![rec(Some(json!({"a": 1})))], gen).unwrap();
        assert_eq!(ok[0].id, "g1");
        assert_eq!(ok[0].data, r#"{"a":1}"#);
        assert!(validate_batch(vec![], || "x".into()).is_err());
        assert!(validate_batch(vec![rec(None)], || "x".into()).is_err());
        let many = (0..1001).map(|_| rec(Some(json!(1)))).collect();
        assert!(validate_batch(many, || "x".into()).is_err());
        let big = rec(Some(Value::String("x".repeat(RECORD_MAX_BYTES))));
        assert_eq!(
            validate_batch(vec![big], || "x".into()).unwrap_err().code,
            codes::RECORD_TOO_LARGE
        );
    }
}
