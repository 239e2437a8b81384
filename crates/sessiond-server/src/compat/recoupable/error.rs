//! This surface's error bodies, rendered in one place.
//!
//! The general envelope is `{"status":"error","error":"…"}`. The exceptions are the product's
//! own: a bad key answers `{"status":"error","message":"Unauthorized"}`, field errors of a session
//! create carry `missing_fields` and of a session patch `path`, and the chat-id errors of a chat
//! create are a bare `{"error":"…"}`. Every `sessiond_core::Error` a service returns is mapped to
//! one of these by [`From<Error>`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use sessiond_core::error::codes;
use sessiond_core::{Error, ErrorKind};
use utoipa::ToSchema;

pub const NO_OR_TWO_CREDENTIALS: &str =
    "Exactly one of x-api-key or Authorization must be provided";
pub const SESSION_NOT_FOUND: &str = "Session not found";
pub const CHAT_NOT_FOUND: &str = "Chat not found";
pub const FORBIDDEN: &str = "Forbidden";
pub const CHAT_ID_CONFLICT: &str = "Chat ID conflict";
pub const INVALID_CHAT_ID: &str = "Invalid chat id";
pub const ONLY_CHAT: &str = "Cannot delete the only chat in a session";
pub const INVALID_JSON: &str = "Invalid JSON body";
pub const INTERNAL: &str = "Internal server error";

/// The general error envelope (documentation).
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoupErrorBody {
    #[schema(example = "error")]
    pub status: String,
    #[schema(example = "Session not found")]
    pub error: String,
}

/// An error answered by the Recoupable surface: a status and the exact body.
#[derive(Debug)]
pub struct RecoupError {
    status: StatusCode,
    body: Value,
}

impl RecoupError {
    fn new(status: StatusCode, body: Value) -> Self {
        Self { status, body }
    }

    /// `{"status":"error","error": message}`.
    pub fn envelope(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, json!({"status": "error", "error": message.into()}))
    }

    /// None or both of `x-api-key` and `Authorization`.
    pub fn credentials() -> Self {
        Self::envelope(StatusCode::UNAUTHORIZED, NO_OR_TWO_CREDENTIALS)
    }

    /// A key (or bearer token) that does not resolve to an account.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            json!({"status": "error", "message": "Unauthorized"}),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::envelope(StatusCode::BAD_REQUEST, message)
    }

    /// A field of a session create: `{"status":"error","missing_fields":[field],"error"}`.
    pub fn create_field(field: Option<&str>, message: impl Into<String>) -> Self {
        let fields: Vec<&str> = field.into_iter().collect();
        Self::new(
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "missing_fields": fields, "error": message.into()}),
        )
    }

    /// A field of a session patch: `{"status":"error","path":[field],"error"}`.
    pub fn patch_field(field: Option<&str>, message: impl Into<String>) -> Self {
        let path: Vec<&str> = field.into_iter().collect();
        Self::new(
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "path": path, "error": message.into()}),
        )
    }

    /// `{"error":"Invalid chat id"}` (a chat create's own shape).
    pub fn invalid_chat_id() -> Self {
        Self::new(StatusCode::BAD_REQUEST, json!({"error": INVALID_CHAT_ID}))
    }

    pub fn chat_not_found() -> Self {
        Self::envelope(StatusCode::NOT_FOUND, CHAT_NOT_FOUND)
    }
}

impl From<Error> for RecoupError {
    fn from(e: Error) -> Self {
        let status = |s: StatusCode| Self::envelope(s, e.message.clone());
        match (e.kind, e.code) {
            (ErrorKind::Unauthorized, _) => Self::unauthorized(),
            (ErrorKind::Forbidden, _) => Self::envelope(StatusCode::FORBIDDEN, FORBIDDEN),
            (ErrorKind::NotFound, codes::SESSION_NOT_FOUND) => {
                Self::envelope(StatusCode::NOT_FOUND, SESSION_NOT_FOUND)
            }
            (ErrorKind::NotFound, codes::CHAT_NOT_FOUND) => Self::chat_not_found(),
            (ErrorKind::NotFound, _) => status(StatusCode::NOT_FOUND),
            (ErrorKind::Conflict, codes::CHAT_EXISTS) => {
                Self::new(StatusCode::CONFLICT, json!({"error": CHAT_ID_CONFLICT}))
            }
            (ErrorKind::Conflict, codes::LAST_CHAT) => {
                Self::envelope(StatusCode::BAD_REQUEST, ONLY_CHAT)
            }
            (ErrorKind::Conflict, _) => status(StatusCode::CONFLICT),
            (ErrorKind::BadRequest | ErrorKind::Invalid | ErrorKind::PreconditionFailed, _) => {
                status(StatusCode::BAD_REQUEST)
            }
            (ErrorKind::MethodNotAllowed, _) => status(StatusCode::METHOD_NOT_ALLOWED),
            (ErrorKind::PayloadTooLarge, _) => status(StatusCode::PAYLOAD_TOO_LARGE),
            (ErrorKind::UnsupportedMediaType, _) => status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (ErrorKind::Unavailable, _) => {
                tracing::warn!(message = %e.message, "store unavailable");
                status(StatusCode::SERVICE_UNAVAILABLE)
            }
            (ErrorKind::Internal, _) => {
                // Details of internal failures go to the log, not to the client.
                tracing::error!(code = e.code, message = %e.message, "internal error");
                Self::envelope(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL)
            }
        }
    }
}

impl IntoResponse for RecoupError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

pub type RecoupResult<T> = Result<T, RecoupError>;
