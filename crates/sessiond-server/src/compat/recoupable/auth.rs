//! Who is calling, as this surface decides it: exactly one of `x-api-key` and
//! `Authorization: Bearer` (none is accepted only in open mode, as the default account). The
//! secret itself is resolved by the server's one [`crate::auth::Authenticator`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use sessiond_core::AccountId;

use super::error::RecoupError;
use crate::app::App;
use crate::auth::Principal;

/// The account a request acts for.
pub struct RecoupCaller(pub AccountId);

/// A header that is present with a non-empty value.
fn present(parts: &Parts, name: impl axum::http::header::AsHeaderName) -> Option<&HeaderValue> {
    parts
        .headers
        .get(name)
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
}

fn bearer(v: &HeaderValue) -> Option<&str> {
    let v = v.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<App> for RecoupCaller {
    type Rejection = RecoupError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let api_key = present(parts, "x-api-key");
        let authorization = present(parts, header::AUTHORIZATION);
        let secret = match (api_key, authorization) {
            (Some(_), Some(_)) => return Err(RecoupError::credentials()),
            (None, None) if app.auth.required() => return Err(RecoupError::credentials()),
            (None, None) => None,
            (Some(key), None) => Some(
                key.to_str()
                    .map_err(|_| RecoupError::unauthorized())?
                    .trim(),
            ),
            (None, Some(auth)) => Some(bearer(auth).ok_or_else(RecoupError::unauthorized)?),
        };
        match app.auth.resolve(secret).await? {
            Principal::Account { account, .. } => Ok(RecoupCaller(account)),
            Principal::Anonymous => Ok(RecoupCaller(AccountId::DEFAULT)),
            // The admin key manages accounts, and a session token is bound to native routes;
            // neither is an account's key here.
            Principal::Admin | Principal::Token(_) => Err(RecoupError::unauthorized()),
        }
    }
}
