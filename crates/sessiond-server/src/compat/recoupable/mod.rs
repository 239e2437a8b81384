//! The Recoupable agent-sessions surface (`/api/sessions`, design/compat/RECOUPABLE.md): sessions
//! that bind a coding agent to a repository and a sandbox, each with chats. A thin translation onto
//! the native session and chat services; the agent fields live under `data.agent` of the native
//! session, and sessiond provisions nothing.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;

pub mod auth;
pub mod body;
pub mod chats;
pub mod error;
pub mod sessions;

const CORS: [(&str, &str); 3] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, POST, PUT, DELETE, OPTIONS, PATCH",
    ),
    (
        "access-control-allow-headers",
        "Content-Type, Authorization, X-Requested-With, x-api-key",
    ),
];

/// Adds this surface's CORS headers to every response it gives.
async fn cors(mut resp: Response) -> Response {
    for (name, value) in CORS {
        resp.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    resp
}

/// A CORS preflight: 200 with the headers (added by [`cors`]).
async fn preflight() -> Response {
    StatusCode::OK.into_response()
}

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/sessions", post(sessions::create).options(preflight))
        .route(
            "/api/sessions/{sessionId}",
            get(sessions::get).patch(sessions::patch).options(preflight),
        )
        .route(
            "/api/sessions/{sessionId}/chats",
            get(chats::list).post(chats::create).options(preflight),
        )
        .route(
            "/api/sessions/{sessionId}/chats/{chatId}",
            get(chats::get)
                .patch(chats::patch)
                .delete(chats::delete)
                .options(preflight),
        )
        .route(
            "/api/sessions/{sessionId}/chats/{chatId}/read",
            post(chats::read).options(preflight),
        )
        .layer(axum::middleware::map_response(cors))
}
