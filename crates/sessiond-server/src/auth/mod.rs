//! Who is calling: API keys (hashed, cached briefly), the admin key, session tokens, and open
//! mode.
//!
//! Each surface extracts credentials from its own headers and renders failures its own way; the
//! resolution from a secret to a [`Principal`] is done here once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use sessiond_core::account::ApiKey;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, KeyId};
use sessiond_store::Store;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::ApiError;

pub mod token;

pub use token::{TokenGrant, TokenSigner};

/// How long a resolved key is trusted before it is looked up again. Revocation through this
/// node takes effect at once; through another node of a cluster, within this delay.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
const KEY_CACHE_MAX: usize = 10_000;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin key: manages accounts and keys.
    Admin,
    /// An account's API key.
    Account { account: AccountId, key: KeyId },
    /// Open mode without credentials: the default account, with admin rights (loopback only).
    Anonymous,
    /// A session token: read and/or append to `in` on the sessions it names.
    Token(TokenGrant),
}

/// What a token-capable route wants to do with a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET the session, read its channels and documents.
    Read,
    /// Append to the channel `in`.
    AppendIn,
}

impl Principal {
    /// The account whose sessions this caller works on.
    pub fn account(&self) -> Result<AccountId, Error> {
        match self {
            Principal::Account { account, .. } => Ok(*account),
            Principal::Anonymous => Ok(AccountId::DEFAULT),
            Principal::Admin => Err(admin_not_for_sessions()),
            Principal::Token(_) => Err(Error::forbidden(
                "a session token can only read its session and append to its in channel; use an API key",
            )),
        }
    }

    /// The account for a route a session token may also use; check the token's scope with
    /// [`Principal::authorize`] once the session is loaded.
    pub fn session_account(&self) -> Result<AccountId, Error> {
        match self {
            Principal::Token(grant) => Ok(grant.account),
            other => other.account(),
        }
    }

    /// For a token, whether its scopes allow `access` to `session` (403 otherwise).
    pub fn authorize(&self, session: &Session, access: Access) -> Result<(), Error> {
        let Principal::Token(grant) = self else {
            return Ok(());
        };
        let allowed = match access {
            Access::Read => grant.can_read(session),
            Access::AppendIn => grant.can_write(session),
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::forbidden(match access {
                Access::Read => format!("this token does not grant read on session {}", session.id),
                Access::AppendIn => format!(
                    "this token does not grant write on session {} (write allows appending to in only)",
                    session.id
                ),
            }))
        }
    }

    pub fn is_token(&self) -> bool {
        matches!(self, Principal::Token(_))
    }

    pub fn ensure_admin(&self) -> Result<(), Error> {
        match self {
            Principal::Admin | Principal::Anonymous => Ok(()),
            Principal::Account { .. } | Principal::Token(_) => {
                Err(Error::forbidden("this route needs the admin key"))
            }
        }
    }
}

fn admin_not_for_sessions() -> Error {
    Error::forbidden(
        "the admin key manages accounts and keys only; use an account's API key for sessions",
    )
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Resolves secrets to principals.
pub struct Authenticator {
    store: Arc<dyn Store>,
    admin_hash: Option<[u8; 32]>,
    required: bool,
    tokens: TokenSigner,
    cache: RwLock<HashMap<[u8; 32], (Instant, ApiKey)>>,
}

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        admin_key: Option<&str>,
        required: bool,
        tokens: TokenSigner,
    ) -> Self {
        Self {
            store,
            admin_hash: admin_key.map(hash_secret),
            required,
            tokens,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    pub fn tokens(&self) -> &TokenSigner {
        &self.tokens
    }

    /// The principal for a presented secret (`None`: no credentials at all).
    pub async fn resolve(&self, secret: Option<&str>) -> Result<Principal, Error> {
        let Some(secret) = secret else {
            return if self.required {
                Err(Error::unauthorized(
                    "missing credentials: send Authorization: Bearer <key> or x-api-key: <key>",
                ))
            } else {
                Ok(Principal::Anonymous)
            };
        };
        if token::looks_like_jwt(secret) {
            return Ok(Principal::Token(self.tokens.verify(secret)?));
        }
        let hash = hash_secret(secret);
        // Comparing digests keeps the comparison independent of where the secrets differ.
        if self.admin_hash == Some(hash) {
            return Ok(Principal::Admin);
        }
        match self.lookup(hash).await? {
            Some(key) => Ok(Principal::Account {
                account: key.account_id,
                key: key.id,
            }),
            None => Err(Error::unauthorized("invalid API key")),
        }
    }

    /// The live key with this secret hash, from the cache or the store.
    pub async fn lookup(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, Error> {
        if let Ok(cache) = self.cache.read() {
            if let Some((at, key)) = cache.get(&hash) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return Ok(Some(key.clone()));
                }
            }
        }
        let key = self.store.find_api_key(hash).await?;
        if let (Some(key), Ok(mut cache)) = (&key, self.cache.write()) {
            if cache.len() >= KEY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, (Instant::now(), key.clone()));
        }
        Ok(key)
    }

    /// Forgets a revoked key at once.
    pub fn forget(&self, key: KeyId) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, (_, k)| k.id != key);
        }
    }
}

/// The secret from `Authorization: Bearer …` or else `x-api-key`.
pub fn presented_secret(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| Error::unauthorized("the Authorization header is not valid text"))?;
        // The scheme is case-insensitive (RFC 9110 section 11.1).
        let token = v
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::unauthorized("the Authorization header must be \"Bearer <key>\"")
            })?;
        return Ok(Some(token));
    }
    if let Some(v) = headers.get("x-api-key") {
        let v = v
            .to_str()
            .map_err(|_| Error::unauthorized("the x-api-key header is not valid text"))?
            .trim();
        if !v.is_empty() {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The caller of a native route.
pub struct Caller(pub Principal);

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let mut secret = presented_secret(&parts.headers)?.map(str::to_owned);
        if let Some(t) = query_token(parts.uri.query()) {
            // Browsers' EventSource cannot set headers; a token in the URL is for reads only.
            if parts.method != axum::http::Method::GET && parts.method != axum::http::Method::HEAD {
                return Err(Error::unauthorized(
                    "?token= is accepted on GET requests only; send Authorization: Bearer <token>",
                )
                .into());
            }
            if secret.is_none() {
                secret = Some(t);
            }
        }
        Ok(Caller(app.auth.resolve(secret.as_deref()).await?))
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}
