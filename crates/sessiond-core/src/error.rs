//! The one domain error. Every surface maps `ErrorKind` to its own status codes and renders `code`
//! and `message` in its own wire format.

use std::fmt;

/// What kind of failure this is; each surface maps a kind to an HTTP status in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request syntax (bad JSON, bad query string, bad header): 400.
    BadRequest,
    /// Well-formed but semantically invalid input: 422.
    Invalid,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PreconditionFailed,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The store cannot be reached right now: 503.
    Unavailable,
    Internal,
}

/// A domain error with a stable snake_case `code` and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }
    /// A field failed validation: code `invalid_field`.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, codes::INVALID_FIELD, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, codes::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, codes::FORBIDDEN, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, codes::STORE_UNAVAILABLE, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, codes::INTERNAL, message)
    }
    pub fn session_not_found(reference: impl fmt::Display) -> Self {
        Self::not_found(
            codes::SESSION_NOT_FOUND,
            format!("Session {reference} not found"),
        )
    }
}

/// Every stable error code the native API can answer with. The OpenAPI spec lists these.
pub mod codes {
    pub const INVALID_JSON: &str = "invalid_json";
    pub const INVALID_BODY: &str = "invalid_body";
    pub const INVALID_FIELD: &str = "invalid_field";
    pub const INVALID_QUERY: &str = "invalid_query";
    pub const INVALID_CURSOR: &str = "invalid_cursor";
    pub const INVALID_HEADER: &str = "invalid_header";
    pub const INVALID_ID: &str = "invalid_id";
    pub const READ_ONLY_FIELD: &str = "read_only_field";
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const SESSION_NOT_FOUND: &str = "session_not_found";
    pub const SESSION_EXISTS: &str = "session_exists";
    pub const SESSION_CLOSED: &str = "session_closed";
    pub const VERSION_MISMATCH: &str = "version_mismatch";
    pub const ACCOUNT_NOT_FOUND: &str = "account_not_found";
    pub const ACCOUNT_EXISTS: &str = "account_exists";
    pub const KEY_NOT_FOUND: &str = "key_not_found";
    pub const KEY_EXISTS: &str = "key_exists";
    pub const INVALID_CHANNEL: &str = "invalid_channel";
    pub const RECORD_TOO_LARGE: &str = "record_too_large";
    pub const CHANNEL_READ_ONLY: &str = "channel_read_only";
    pub const TOKEN_EXPIRED: &str = "token_expired";
    pub const INVALID_TOKEN: &str = "invalid_token";
    pub const JOB_NOT_FOUND: &str = "job_not_found";
    pub const DOCUMENT_NOT_FOUND: &str = "document_not_found";
    pub const DOCUMENT_EXISTS: &str = "document_exists";
    pub const UNSUPPORTED_CONTENT_TYPE: &str = "unsupported_content_type";
    pub const EMPTY_DOCUMENT: &str = "empty_document";
    pub const DOCUMENT_SUPERSEDED: &str = "document_superseded";
    pub const LEASE_LOST: &str = "lease_lost";
    pub const CHAT_NOT_FOUND: &str = "chat_not_found";
    pub const CHAT_EXISTS: &str = "chat_exists";
    pub const LAST_CHAT: &str = "last_chat";
    pub const STORE_UNAVAILABLE: &str = "store_unavailable";
    pub const INTERNAL: &str = "internal";

    /// All codes, for documentation.
    pub const ALL: &[&str] = &[
        INVALID_JSON,
        INVALID_BODY,
        INVALID_FIELD,
        INVALID_QUERY,
        INVALID_CURSOR,
        INVALID_HEADER,
        INVALID_ID,
        READ_ONLY_FIELD,
        UNKNOWN_FIELD,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        SESSION_NOT_FOUND,
        SESSION_EXISTS,
        SESSION_CLOSED,
        VERSION_MISMATCH,
        ACCOUNT_NOT_FOUND,
        ACCOUNT_EXISTS,
        KEY_NOT_FOUND,
        KEY_EXISTS,
        INVALID_CHANNEL,
        RECORD_TOO_LARGE,
        CHANNEL_READ_ONLY,
        TOKEN_EXPIRED,
        INVALID_TOKEN,
        JOB_NOT_FOUND,
        DOCUMENT_NOT_FOUND,
        DOCUMENT_EXISTS,
        UNSUPPORTED_CONTENT_TYPE,
        EMPTY_DOCUMENT,
        DOCUMENT_SUPERSEDED,
        LEASE_LOST,
        CHAT_NOT_FOUND,
        CHAT_EXISTS,
        LAST_CHAT,
        STORE_UNAVAILABLE,
        INTERNAL,
    ];
}
