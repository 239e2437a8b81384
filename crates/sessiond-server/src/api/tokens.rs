//! `POST /v1/sessions/{session}/tokens`: session-scoped tokens for browsers and agents.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sessiond_core::ids::SessionRef;
use sessiond_core::limits::{TOKEN_TTL_DEFAULT_SECONDS, TOKEN_TTL_MAX_SECONDS};
use sessiond_core::Error;
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::OptionalJson;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    /// GET the session, list and read every channel.
    Read,
    /// Append to the `in` channel.
    Write,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MintBody {
    /// Default `["read"]`.
    pub scopes: Option<Vec<ScopeName>>,
    /// 1–86,400, default 3,600.
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// An HS256 JWT: send as `Authorization: Bearer <token>` or `?token=` on GET.
    pub token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// e.g. `read:sessions:{id}`, `write:sessions:{id}`.
    pub scopes: Vec<String>,
}

/// Mint a token scoped to one session.
#[utoipa::path(post, path = "/v1/sessions/{session}/tokens", tag = "channels",
    params(("session" = String, Path, description = "The session's UUID, or its externalId")),
    request_body = MintBody,
    responses(
        (status = 201, description = "Minted", body = TokenView),
        (status = 403, description = "`forbidden`: tokens cannot mint tokens", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`, `invalid_body`", body = ErrorBody),
    ))]
pub async fn mint(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(session): Path<String>,
    OptionalJson(body): OptionalJson<MintBody>,
) -> ApiResult<(StatusCode, Json<TokenView>)> {
    let account = caller.account()?;
    let scopes = body.scopes.unwrap_or_else(|| vec![ScopeName::Read]);
    if scopes.is_empty() {
        return Err(Error::invalid_field("scopes must name read, write or both").into());
    }
    let ttl = body.ttl_seconds.unwrap_or(TOKEN_TTL_DEFAULT_SECONDS);
    if !(1..=TOKEN_TTL_MAX_SECONDS).contains(&ttl) {
        return Err(Error::invalid_field(format!(
            "ttlSeconds must be from 1 to {TOKEN_TTL_MAX_SECONDS}"
        ))
        .into());
    }
    let s = app
        .services
        .sessions
        .get(account, &SessionRef::parse(&session))
        .await?;
    let minted = app.auth.tokens().mint(
        account,
        &s,
        scopes.contains(&ScopeName::Read),
        scopes.contains(&ScopeName::Write),
        ttl,
    )?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            token: minted.token,
            expires_at: minted.expires_at.to_rfc3339(),
            scopes: minted.scopes,
        }),
    ))
}
