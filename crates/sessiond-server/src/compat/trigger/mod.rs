//! The trigger.dev Sessions surface (`/api/v1/sessions`, `/realtime/v1/sessions`,
//! design/compat/TRIGGER.md): what `@trigger.dev/sdk` and `@trigger.dev/core` 4.x call for
//! `sessions.start/retrieve/update/close/list`, `.in.send`, `.out.read` and the records drain.
//! A thin translation onto the native services: the rules live in `service::trigger`.

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::CorsLayer;

use crate::app::App;

pub mod auth;
pub mod channels;
pub mod error;
pub mod sessions;

/// Preflights are answered by the CORS layer; this only makes OPTIONS reach it.
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

pub fn router() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/sessions",
            post(sessions::create)
                .layer(DefaultBodyLimit::max(sessions::START_BODY_MAX_BYTES))
                .get(sessions::list)
                .options(preflight),
        )
        .route(
            "/api/v1/sessions/{session}",
            get(sessions::retrieve)
                .patch(sessions::update)
                .options(preflight),
        )
        .route(
            "/api/v1/sessions/{session}/close",
            post(sessions::close).options(preflight),
        )
        .route(
            "/api/v1/auth/jwt/claims",
            post(sessions::claims).options(preflight),
        )
        .route(
            "/realtime/v1/sessions/{session}/{io}",
            get(channels::read).head(channels::head).options(preflight),
        )
        .route(
            "/realtime/v1/sessions/{session}/{io}/append",
            post(channels::append)
                .layer(DefaultBodyLimit::max(channels::APPEND_MAX_BYTES))
                .options(preflight),
        )
        .route(
            "/realtime/v1/sessions/{session}/{io}/records",
            get(channels::records).options(preflight),
        )
        // The clients run in browsers too.
        .layer(CorsLayer::permissive())
}
