//! Every error this surface answers, rendered in one place: `{"error": "<message>"}` for the
//! management routes, `{"ok": false, "error"}` for appends, plain text for stream headers, and
//! the fixed 401/403/404 bodies the trigger.dev clients expect.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sessiond_core::error::codes;
use sessiond_core::{Error, ErrorKind};

pub const UNAUTHORIZED_MESSAGE: &str = "Invalid or Missing API key";
pub const CLOSED_APPEND_MESSAGE: &str = "Cannot append to a closed session";
pub const OUT_APPEND_MESSAGE: &str =
    "Appending to the out channel requires secret key authentication";

#[derive(Debug)]
enum Body {
    Json(Value),
    Text(String),
}

/// An error answered by the trigger.dev surface.
#[derive(Debug)]
pub struct TriggerError {
    status: StatusCode,
    body: Body,
}

pub type TriggerResult<T> = Result<T, TriggerError>;

impl TriggerError {
    fn json(status: StatusCode, body: Value) -> Self {
        TriggerError {
            status,
            body: Body::Json(body),
        }
    }

    pub fn unauthorized() -> Self {
        Self::json(
            StatusCode::UNAUTHORIZED,
            json!({ "error": UNAUTHORIZED_MESSAGE }),
        )
    }

    /// What a public token (or a key) that may not do this gets.
    pub fn forbidden() -> Self {
        Self::json(
            StatusCode::FORBIDDEN,
            json!({
                "error": "Unauthorized",
                "code": "unauthorized",
                "param": "access_token",
                "type": "authorization",
            }),
        )
    }

    pub fn not_found() -> Self {
        Self::json(StatusCode::NOT_FOUND, json!({ "error": "Not found" }))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::json(StatusCode::BAD_REQUEST, json!({ "error": message.into() }))
    }

    /// A plain-text answer (the stream routes answer header errors this way).
    pub fn text(status: StatusCode, message: impl Into<String>) -> Self {
        TriggerError {
            status,
            body: Body::Text(message.into()),
        }
    }

    /// `{"ok": false, "error"}`, the shape of the append route's own refusals.
    pub fn append(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(status, json!({ "ok": false, "error": message.into() }))
    }

    /// A domain error met by an append: closed sessions and oversized records in the append
    /// shape, the rest as everywhere else.
    pub fn from_append(e: Error) -> Self {
        match e.kind {
            ErrorKind::Conflict if e.code == codes::SESSION_CLOSED => {
                Self::append(StatusCode::BAD_REQUEST, CLOSED_APPEND_MESSAGE)
            }
            ErrorKind::PayloadTooLarge => Self::append(StatusCode::PAYLOAD_TOO_LARGE, e.message),
            ErrorKind::BadRequest | ErrorKind::Invalid => {
                Self::append(StatusCode::BAD_REQUEST, e.message)
            }
            _ => e.into(),
        }
    }
}

impl From<Error> for TriggerError {
    fn from(e: Error) -> Self {
        let message = |m: String| json!({ "error": m });
        match e.kind {
            ErrorKind::Unauthorized => Self::unauthorized(),
            ErrorKind::Forbidden => Self::forbidden(),
            ErrorKind::NotFound => Self::not_found(),
            ErrorKind::BadRequest if e.code == codes::INVALID_JSON => {
                Self::bad_request("Invalid JSON")
            }
            // The one semantic refusal the surface answers with 422.
            ErrorKind::Invalid if e.code == codes::READ_ONLY_FIELD => {
                Self::json(StatusCode::UNPROCESSABLE_ENTITY, message(e.message))
            }
            ErrorKind::BadRequest | ErrorKind::Invalid | ErrorKind::UnsupportedMediaType => {
                Self::bad_request(e.message)
            }
            ErrorKind::Conflict | ErrorKind::PreconditionFailed => {
                Self::json(StatusCode::CONFLICT, message(e.message))
            }
            ErrorKind::PayloadTooLarge => {
                Self::json(StatusCode::PAYLOAD_TOO_LARGE, message(e.message))
            }
            ErrorKind::MethodNotAllowed => {
                Self::json(StatusCode::METHOD_NOT_ALLOWED, message(e.message))
            }
            ErrorKind::Unavailable => {
                tracing::warn!(message = %e.message, "store unavailable");
                Self::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    message("Service unavailable, please try again".into()),
                )
            }
            ErrorKind::Internal => {
                tracing::error!(code = e.code, message = %e.message, "internal error");
                Self::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message("Something went wrong".into()),
                )
            }
        }
    }
}

impl IntoResponse for TriggerError {
    fn into_response(self) -> Response {
        let mut resp = match self.body {
            Body::Json(v) => (self.status, Json(v)).into_response(),
            Body::Text(t) => (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                t,
            )
                .into_response(),
        };
        // The clients retry 409s (and 5xx) unless told otherwise; a refusal is final.
        if self.status.is_client_error() {
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
