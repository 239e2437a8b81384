//! Who is calling: the native credential resolution (`x-api-key` or `Authorization: Bearer`;
//! none in open mode, as the default account), with errors in this surface's shape.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sessiond_core::AccountId;

use super::error::MidError;
use crate::app::App;
use crate::auth::presented_secret;

/// The account a request acts for.
pub struct MidCaller(pub AccountId);

impl FromRequestParts<App> for MidCaller {
    type Rejection = MidError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let secret = presented_secret(&parts.headers)?;
        let principal = app.auth.resolve(secret).await?;
        Ok(MidCaller(principal.account()?))
    }
}
