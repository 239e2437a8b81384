//! The midPilot Connector Generator surface (`/api/v1/session`, `/session`, and the pipeline
//! stages under `/api/v1/{discovery|scrape|digester|codegen}`, design/compat/MIDPILOT.md): a thin
//! translation onto the native session, job and document services. Session `data` is the native
//! session's `data`; uploads are native documents processed by the job type
//! `documentation.processUpload`; stage requests are native jobs `{module}.{operation}` that
//! external workers claim.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::app::App;

pub mod auth;
pub mod documentation;
pub mod error;
pub mod sessions;
pub mod stages;

/// The stage modules a request may name.
pub const MODULES: [&str; 4] = ["discovery", "scrape", "digester", "codegen"];

/// Every route answers other methods with the FastAPI 405 body.
fn with_405(r: MethodRouter<App>) -> MethodRouter<App> {
    r.fallback(error::method_not_allowed)
}

fn session_routes(prefix: &str) -> Router<App> {
    Router::new()
        .route(
            prefix,
            with_405(post(sessions::create).get(error::method_not_allowed)),
        )
        .route(
            &format!("{prefix}/{{session_id}}"),
            with_405(
                post(sessions::create_with_id)
                    .get(sessions::get)
                    .head(sessions::head)
                    .patch(sessions::patch)
                    .delete(sessions::delete),
            ),
        )
        .route(
            &format!("{prefix}/{{session_id}}/jobs"),
            with_405(get(sessions::jobs)),
        )
        .route(
            &format!("{prefix}/{{session_id}}/documentation"),
            with_405(
                // Uploads enforce their own limit while streaming (--max-upload-bytes).
                post(documentation::upload)
                    .layer(DefaultBodyLimit::disable())
                    .get(documentation::list)
                    .delete(documentation::delete_all),
            ),
        )
        .route(
            &format!("{prefix}/{{session_id}}/documentation/{{doc_id}}"),
            with_405(
                post(documentation::upload_with_id)
                    .layer(DefaultBodyLimit::disable())
                    .head(documentation::head)
                    .get(documentation::get)
                    .delete(documentation::delete),
            ),
        )
}

pub fn router() -> Router<App> {
    let mut r = session_routes("/api/v1/session").merge(session_routes("/session"));
    for module in MODULES {
        r = r.route(
            &format!("/api/v1/{module}/{{session_id}}/{{*operation}}"),
            with_405(post(stages::create).get(stages::status)),
        );
    }
    r
}
