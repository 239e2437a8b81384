//! Every error this surface answers, rendered in one place, the FastAPI way: `{"detail":
//! "<message>"}` with the status, and the pydantic validation body for a path id that is not a
//! UUID.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sessiond_core::{Error, ErrorKind};
use uuid::Uuid;

/// An error answered by the midPilot surface.
#[derive(Debug)]
pub struct MidError {
    status: StatusCode,
    body: Value,
}

pub type MidResult<T> = Result<T, MidError>;

impl MidError {
    /// `{"detail": message}` with `status`.
    pub fn detail(status: StatusCode, message: impl Into<String>) -> Self {
        MidError {
            status,
            body: json!({ "detail": message.into() }),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::detail(StatusCode::NOT_FOUND, message)
    }

    pub fn session_not_found(id: Uuid) -> Self {
        Self::not_found(format!("Session {id} not found"))
    }

    /// 422 with a plain message (FastAPI answers request validation with 422).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::detail(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// The pydantic `uuid_parsing` error for the path parameter `param`. The message is
    /// pydantic-core's: "Input should be a valid UUID, " and the Rust `uuid` crate's parse
    /// error (pydantic-core parses UUIDs with that crate). The `uuid` release pydantic ships
    /// words a bad character "invalid character: expected an optional prefix of `urn:uuid:`
    /// followed by [0-9a-fA-F-], found `x` at 1"; newer releases shortened it, so that wording
    /// is restored here (with its 1-based position).
    pub fn uuid_parsing(param: &str, input: &str, e: uuid::Error) -> Self {
        let reason = e.to_string();
        // That release also counted the position from 1.
        let reason = match reason
            .strip_prefix("invalid character: found ")
            .and_then(|rest| rest.rsplit_once(" at "))
            .and_then(|(found, at)| Some((found, at.parse::<usize>().ok()?)))
        {
            Some((found, at)) => format!(
                "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found {found} at {}",
                at + 1
            ),
            None => reason,
        };
        MidError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({ "detail": [{
                "type": "uuid_parsing",
                "loc": ["path", param],
                "msg": format!("Input should be a valid UUID, {reason}"),
                "input": input,
            }]}),
        }
    }

    /// A native error met for the session `id`: not found with the midPilot message.
    pub fn for_session(id: Uuid) -> impl Fn(Error) -> MidError {
        move |e| {
            if e.kind == ErrorKind::NotFound
                && e.code == sessiond_core::error::codes::SESSION_NOT_FOUND
            {
                MidError::session_not_found(id)
            } else {
                e.into()
            }
        }
    }
}

/// Parses a path UUID, answering the pydantic 422 otherwise.
pub fn path_uuid(param: &str, input: &str) -> MidResult<Uuid> {
    Uuid::parse_str(input).map_err(|e| MidError::uuid_parsing(param, input, e))
}

/// The FastAPI 405.
pub async fn method_not_allowed() -> MidError {
    MidError::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

impl From<Error> for MidError {
    fn from(e: Error) -> Self {
        let status = match e.kind {
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::BadRequest | ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Unavailable => {
                tracing::warn!(message = %e.message, "store unavailable");
                return Self::detail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable, please try again",
                );
            }
            ErrorKind::Internal => {
                tracing::error!(code = e.code, message = %e.message, "internal error");
                return Self::detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
            }
        };
        Self::detail(status, e.message)
    }
}

impl IntoResponse for MidError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
