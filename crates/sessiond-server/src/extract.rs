//! Request parsing shared by every native handler: JSON bodies with clear errors, raw query
//! strings with repeatable keys, and conditional-request headers.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use sessiond_core::error::codes;
use sessiond_core::{Error, ErrorKind};

use crate::error::ApiError;

/// Reads the body as bytes, mapping "too large" to a clear 413.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::new(
                ErrorKind::PayloadTooLarge,
                codes::PAYLOAD_TOO_LARGE,
                "the request body is larger than the server's limit (see --max-body-bytes)",
            )
        } else {
            Error::bad_request(
                codes::INVALID_BODY,
                format!("cannot read the request body: {rej}"),
            )
        }
    })
}

/// Accepts `application/json`, any `+json` type, or no content type at all.
pub fn ensure_json_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::UnsupportedMediaType,
            codes::UNSUPPORTED_MEDIA_TYPE,
            format!("expected a JSON body (Content-Type: application/json), got {ct:?}"),
        ))
    }
}

/// Parses JSON, telling a syntax error (400 `invalid_json`) from a shape error (422 `invalid_body`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request(
            codes::INVALID_JSON,
            "the request body is empty; send a JSON document",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                Error::invalid(codes::INVALID_BODY, format!("invalid request body: {e}"))
            }
            _ => Error::bad_request(
                codes::INVALID_JSON,
                format!("the body is not valid JSON: {e}"),
            ),
        }
    })
}

/// A JSON request body parsed into `T`, with errors in the native format.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        ensure_json_content_type(req.headers())?;
        let bytes = body_bytes(req, state).await?;
        Ok(ApiJson(parse_json(&bytes)?))
    }
}

/// Like [`ApiJson`] but an empty body is `T::default()` (for bodies whose fields are all optional).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        ensure_json_content_type(req.headers())?;
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        Ok(OptionalJson(parse_json(&bytes)?))
    }
}

/// The raw query string as ordered key/value pairs (keys may repeat).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn bad_query(message: impl Into<String>) -> Error {
    Error::bad_request(codes::INVALID_QUERY, message)
}

/// `If-Match` as the native API understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Version(i64),
}

/// Parses `If-Match: "<version>"` (or `*`). A weak tag or anything else is a 400.
pub fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, Error> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        Error::bad_request(
            codes::INVALID_HEADER,
            "If-Match must be a strong ETag such as \"3\" (the session's version in quotes) or *",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s == "*" {
        return Ok(Some(IfMatch::Any));
    }
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(bad)?;
    let version: i64 = inner.parse().map_err(|_| bad())?;
    if version < 1 {
        return Err(bad());
    }
    Ok(Some(IfMatch::Version(version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, "\"7\"".parse().unwrap());
        assert_eq!(if_match(&h).unwrap(), Some(IfMatch::Version(7)));
        h.insert(header::IF_MATCH, "*".parse().unwrap());
        assert_eq!(if_match(&h).unwrap(), Some(IfMatch::Any));
        for bad in ["7", "W/\"7\"", "\"x\"", "\"0\"", "\"7\", \"8\""] {
            h.insert(header::IF_MATCH, bad.parse().unwrap());
            assert_eq!(
                if_match(&h).unwrap_err().code,
                codes::INVALID_HEADER,
                "{bad}"
            );
        }
    }

    #[test]
    fn json_errors_are_classified() {
        assert_eq!(
            parse_json::<serde_json::Value>(b"{").unwrap_err().code,
            codes::INVALID_JSON
        );
        assert_eq!(
            parse_json::<serde_json::Value>(b"").unwrap_err().code,
            codes::INVALID_JSON
        );
        assert_eq!(
            parse_json::<Vec<u8>>(b"{}").unwrap_err().code,
            codes::INVALID_BODY
        );
    }
}
