//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let codes = sessiond_core::error::codes::ALL
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let info = &mut openapi.info;
        info.description = Some(format!(
            "{}\n\nErrors are `{{\"error\": {{\"code\", \"message\"}}}}`. Stable codes: {codes}.",
            info.description.as_deref().unwrap_or_default()
        ));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiond",
        description = "A durable session server for AI agents and LLM pipelines. Authenticate with \
            `Authorization: Bearer <key>` or `x-api-key: <key>` (open mode on loopback needs neither). \
            JSON bodies are limited to 1 MiB by default (413 beyond).",
        license(name = "Apache-2.0")
    ),
    paths(
        api::sessions::create,
        api::sessions::list,
        api::sessions::get,
        api::sessions::patch,
        api::sessions::close,
        api::sessions::delete,
        api::tokens::mint,
        api::channels::append,
        api::channels::read,
        api::channels::list,
        api::chats::list,
        api::chats::create,
        api::chats::get,
        api::chats::patch,
        api::chats::delete,
        api::chats::messages,
        api::chats::append,
        api::chats::read,
        api::documents::upload,
        api::documents::list,
        api::documents::get,
        api::documents::delete,
        api::documents::search,
        api::jobs::create,
        api::jobs::list,
        api::jobs::get,
        api::jobs::claim,
        api::jobs::heartbeat,
        api::jobs::complete,
        api::jobs::fail,
        api::jobs::cancel,
        api::accounts::create,
        api::accounts::create_key,
        api::accounts::revoke_key,
        api::ops::healthz,
        api::ops::readyz,
        api::ops::metrics,
        api::ops::openapi,
        crate::compat::recoupable::sessions::create,
        crate::compat::recoupable::sessions::get,
        crate::compat::recoupable::sessions::patch,
        crate::compat::recoupable::chats::list,
        crate::compat::recoupable::chats::create,
        crate::compat::recoupable::chats::get,
        crate::compat::recoupable::chats::patch,
        crate::compat::recoupable::chats::delete,
        crate::compat::recoupable::chats::read,
        crate::compat::trigger::sessions::create,
        crate::compat::trigger::sessions::list,
        crate::compat::trigger::sessions::retrieve,
        crate::compat::trigger::sessions::update,
        crate::compat::trigger::sessions::close,
        crate::compat::trigger::sessions::claims,
        crate::compat::trigger::channels::append,
        crate::compat::trigger::channels::read,
        crate::compat::trigger::channels::head,
        crate::compat::trigger::channels::records,
        crate::compat::midpilot::sessions::create,
        crate::compat::midpilot::sessions::create_with_id,
        crate::compat::midpilot::sessions::get,
        crate::compat::midpilot::sessions::head,
        crate::compat::midpilot::sessions::patch,
        crate::compat::midpilot::sessions::delete,
        crate::compat::midpilot::sessions::jobs,
        crate::compat::midpilot::documentation::upload,
        crate::compat::midpilot::documentation::upload_with_id,
        crate::compat::midpilot::documentation::list,
        crate::compat::midpilot::documentation::head,
        crate::compat::midpilot::documentation::get,
        crate::compat::midpilot::documentation::delete,
        crate::compat::midpilot::documentation::delete_all,
        crate::compat::midpilot::stages::create,
        crate::compat::midpilot::stages::status,
    ),
    modifiers(&Security),
    security(("api_key" = [])),
    tags(
        (name = "sessions", description = "Sessions and their JSON state"),
        (name = "channels", description = "Durable, ordered, resumable record streams per session; session tokens"),
        (name = "chats", description = "Conversations inside a session, with ordered, exactly-once messages"),
        (name = "documents", description = "Files uploaded to a session, parsed and cut into token-sized chunks; full-text search"),
        (name = "jobs", description = "Work tracked per session; the worker protocol (claim, heartbeat, complete, fail)"),
        (name = "accounts", description = "Accounts and API keys (admin key)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "trigger", description = "Compatibility: trigger.dev Sessions (`/api/v1/sessions`, `/realtime/v1/sessions`) for `@trigger.dev/sdk` 4.x; secret keys are registered API keys, public tokens are HS256 JWTs; errors are `{\"error\"}`"),
        (name = "recoupable", description = "Compatibility: Recoupable agent sessions (`/api/sessions`) with chats; errors are `{\"status\":\"error\",\"error\"}`, CORS on every route"),
        (name = "midpilot", description = "Compatibility: midPilot Connector Generator sessions (`/api/v1/session`, also at `/session`), documentation uploads and pipeline stage jobs (`/api/v1/{discovery|scrape|digester|codegen}`); errors are FastAPI's `{\"detail\"}`"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default())
        .clone()
}
