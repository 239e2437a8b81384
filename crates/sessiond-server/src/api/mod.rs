//! The native `/v1` API: one file per resource. Handlers parse, call a service, render.

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use sessiond_core::limits::RECORD_BATCH_MAX_BYTES;

use crate::app::App;

pub mod accounts;
pub mod channels;
pub mod chats;
pub mod documents;
pub mod jobs;
pub mod ops;
pub mod sessions;
pub mod tokens;

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/sessions/{session}",
            get(sessions::get)
                .patch(sessions::patch)
                .delete(sessions::delete),
        )
        .route("/v1/sessions/{session}/close", post(sessions::close))
        .route("/v1/sessions/{session}/tokens", post(tokens::mint))
        .route("/v1/sessions/{session}/channels", get(channels::list))
        .route(
            "/v1/sessions/{session}/channels/{name}/records",
            // A batch may be 8 MiB of records plus its JSON envelope.
            post(channels::append)
                .layer(DefaultBodyLimit::max(RECORD_BATCH_MAX_BYTES + 256 * 1024))
                .get(channels::read),
        )
        .route(
            "/v1/sessions/{session}/jobs",
            post(jobs::create).get(jobs::list),
        )
        .route(
            "/v1/sessions/{session}/chats",
            get(chats::list).post(chats::create),
        )
        .route(
            "/v1/sessions/{session}/chats/{chat}",
            get(chats::get).patch(chats::patch).delete(chats::delete),
        )
        .route(
            "/v1/sessions/{session}/chats/{chat}/messages",
            get(chats::messages).post(chats::append),
        )
        .route(
            "/v1/sessions/{session}/chats/{chat}/read",
            post(chats::read),
        )
        .route(
            "/v1/sessions/{session}/documents",
            // Uploads enforce their own limit while streaming (--max-upload-bytes).
            post(documents::upload)
                .layer(DefaultBodyLimit::disable())
                .get(documents::list),
        )
        .route(
            "/v1/sessions/{session}/documents/{doc}",
            get(documents::get).delete(documents::delete),
        )
        .route(
            "/v1/sessions/{session}/chunks/search",
            get(documents::search),
        )
        .route("/v1/jobs/claim", post(jobs::claim))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/heartbeat", post(jobs::heartbeat))
        .route("/v1/jobs/{id}/complete", post(jobs::complete))
        .route("/v1/jobs/{id}/fail", post(jobs::fail))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/accounts", post(accounts::create))
        .route("/v1/accounts/{account}/keys", post(accounts::create_key))
        .route("/v1/keys/{key}", delete(accounts::revoke_key))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
}
