//! Request bodies as this surface reads them: raw bytes (so that empty or invalid JSON can mean
//! `{}` where the product says so), and field checks worded like the product's schema library.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

use super::error::RecoupError;
use crate::extract::body_bytes;

/// The request body, unparsed (over the size limit: 413).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = RecoupError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(RawBody(body_bytes(req, state).await?))
    }
}

/// What a body holds.
pub enum Parsed {
    /// Nothing but whitespace.
    Empty,
    /// Not JSON.
    Invalid,
    Json(Value),
}

pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.trim_ascii().is_empty() {
        return Parsed::Empty;
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Parsed::Json(v),
        Err(_) => Parsed::Invalid,
    }
}

/// The JSON type of a value as the messages name it.
pub fn received(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `Invalid input: expected <what>, received <type>`.
pub fn expected(what: &str, v: &Value) -> String {
    format!("Invalid input: expected {what}, received {}", received(v))
}

/// The body as an object, or the message for what it is instead.
pub fn object(v: Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(expected("object", &other)),
    }
}

/// An optional string field; `null` counts as absent when `null_ok`.
pub fn string(m: &Map<String, Value>, key: &str, null_ok: bool) -> Result<Option<String>, String> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Null) if null_ok => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(expected("string", other)),
    }
}

/// An optional boolean field; `null` counts as absent.
pub fn boolean(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(expected("boolean", other)),
    }
}

/// An optional integer ≥ 0.
pub fn count(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    let Some(v) = m.get(key) else {
        return Ok(None);
    };
    let Value::Number(n) = v else {
        return Err(expected("number", v));
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    if n.as_i64().is_some() {
        return Err("Too small: expected number to be >=0".into());
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f < 0.0 => {
            Err("Too small: expected number to be >=0".into())
        }
        // A whole number written with a fraction (`3.0`) is an integer.
        Some(f) if f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err("Invalid input: expected int, received number".into()),
    }
}
