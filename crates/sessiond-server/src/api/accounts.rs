//! Accounts and API keys (admin key only; in open mode, anyone on loopback).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::error::codes;
use sessiond_core::{AccountId, Error, KeyId};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::App;
use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::OptionalJson;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    /// A caller-chosen UUID; generated when absent.
    pub id: Option<Uuid>,
    /// 1–128 characters.
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: Uuid,
    pub name: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            id: *a.id.as_uuid(),
            name: a.name,
            created_at: a.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// 1–128 characters, to tell keys apart.
    pub name: Option<String>,
    /// Register an existing secret (20–256 characters, no spaces) instead of generating one.
    pub key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: Option<String>,
    /// The first characters of the secret.
    pub prefix: String,
    /// The secret. Shown only in this response; the server keeps only its SHA-256.
    pub key: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl KeyView {
    fn new(k: ApiKey, secret: String) -> Self {
        KeyView {
            id: *k.id.as_uuid(),
            account_id: *k.account_id.as_uuid(),
            name: k.name,
            prefix: k.prefix,
            key: secret,
            created_at: k.created_at.to_rfc3339(),
        }
    }
}

fn parse_uuid(what: &str, s: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(s).map_err(|_| {
        Error::bad_request(
            codes::INVALID_ID,
            format!("{what} must be a UUID, got {s:?}"),
        )
    })
}

/// Create an account.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts",
    request_body = CreateAccountBody,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Created", body = AccountView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not the admin key", body = ErrorBody),
        (status = 409, description = "`account_exists`", body = ErrorBody),
    ))]
pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    OptionalJson(body): OptionalJson<CreateAccountBody>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    caller.ensure_admin()?;
    let account = app
        .services
        .accounts
        .create(body.id.map(AccountId), body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

/// Issue an API key for an account. The secret is in this response only.
#[utoipa::path(post, path = "/v1/accounts/{account}/keys", tag = "accounts",
    params(("account" = Uuid, Path)),
    request_body = CreateKeyBody,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Created", body = KeyView),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`account_not_found`", body = ErrorBody),
        (status = 409, description = "`key_exists`: that secret is registered already", body = ErrorBody),
    ))]
pub async fn create_key(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(account): Path<String>,
    OptionalJson(body): OptionalJson<CreateKeyBody>,
) -> ApiResult<(StatusCode, Json<KeyView>)> {
    caller.ensure_admin()?;
    let account = AccountId(parse_uuid("account id", &account)?);
    let issued = app
        .services
        .accounts
        .create_key(account, body.name, body.key)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyView::new(issued.key, issued.secret)),
    ))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/v1/keys/{key}", tag = "accounts",
    params(("key" = Uuid, Path, description = "The key's id (not its secret)")),
    security(("admin_key" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`key_not_found`", body = ErrorBody),
    ))]
pub async fn revoke_key(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    caller.ensure_admin()?;
    let key = KeyId(parse_uuid("key id", &key)?);
    app.services.accounts.revoke_key(key).await?;
    app.auth.forget(key);
    Ok(StatusCode::NO_CONTENT)
}
