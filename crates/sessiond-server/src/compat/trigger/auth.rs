//! Who calls the trigger.dev surface: a secret key (any key registered as a sessiond API key, in
//! open mode also nobody), or a public token: an HS256 JWT signed by this server (the
//! `publicAccessToken` of a start) or by the client with its own secret key (after
//! `POST /api/v1/auth/jwt/claims`), with scopes `action:type[:id]`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::Engine as _;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Timestamp};

use super::error::TriggerError;
use crate::app::App;
use crate::auth::{presented_secret, token::looks_like_jwt, Principal};
use crate::service::trigger::friendly_id;

/// How long the `publicAccessToken` of a start lives.
pub const PUBLIC_TOKEN_TTL_SECONDS: i64 = 3600;
const ISSUER: &str = "https://id.trigger.dev";
const AUDIENCE: &str = "https://api.trigger.dev";

/// One scope, `action:type[:id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    action: String,
    kind: String,
    id: Option<String>,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        if s == "admin" {
            return Some(Scope {
                action: "admin".into(),
                kind: String::new(),
                id: None,
            });
        }
        let mut parts = s.splitn(3, ':');
        let action = parts.next().filter(|p| !p.is_empty())?;
        let kind = parts.next().filter(|p| !p.is_empty())?;
        Some(Scope {
            action: action.to_owned(),
            kind: kind.to_owned(),
            id: parts.next().map(str::to_owned),
        })
    }

    /// Does this scope allow `action` on sessions (on the one named by any of `names`, or on
    /// all sessions when `names` is `None`)?
    fn allows(&self, action: &str, names: Option<&[String]>) -> bool {
        if self.action == "admin" {
            return true;
        }
        if self.action != action {
            return false;
        }
        match (self.kind.as_str(), &self.id) {
            ("all", None) | ("sessions", None) => true,
            ("sessions", Some(id)) => names.is_some_and(|n| n.iter().any(|x| x == id)),
            _ => false,
        }
    }
}

/// The caller of a trigger.dev route.
#[derive(Debug, Clone)]
pub enum Who {
    /// A secret key of the account (or nobody, in open mode).
    Secret(AccountId),
    /// A public token of the account with its scopes.
    Public {
        account: AccountId,
        scopes: Vec<Scope>,
    },
}

/// Every string a scope may name a session by.
fn names(s: &Session) -> Vec<String> {
    let mut n = vec![friendly_id(s), s.id.to_string()];
    if let Some(e) = &s.external_id {
        n.push(e.clone());
    }
    n
}

impl Who {
    pub fn account(&self) -> AccountId {
        match self {
            Who::Secret(a) | Who::Public { account: a, .. } => *a,
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, Who::Secret(_))
    }

    /// The account, for routes only a secret key may use (403 for a public token).
    pub fn secret_account(&self) -> Result<AccountId, TriggerError> {
        match self {
            Who::Secret(a) => Ok(*a),
            Who::Public { .. } => Err(TriggerError::forbidden()),
        }
    }

    fn allows(&self, action: &str, names: Option<&[String]>) -> bool {
        match self {
            Who::Secret(_) => true,
            Who::Public { scopes, .. } => scopes.iter().any(|s| s.allows(action, names)),
        }
    }

    /// Retrieve the session, read its channels (SSE and drain).
    pub fn can_read(&self, s: &Session) -> bool {
        self.allows("read", Some(&names(s)))
    }

    /// Append to the session's channels (`.out` additionally needs a secret key).
    pub fn can_write(&self, s: &Session) -> bool {
        self.allows("write", Some(&names(s)))
    }

    /// Start a session (with this externalId, when given).
    pub fn can_create(&self, external_id: Option<&str>) -> bool {
        let named: Vec<String> = external_id.map(str::to_owned).into_iter().collect();
        self.allows("write", None) || (!named.is_empty() && self.allows("write", Some(&named)))
    }

    /// List the account's sessions.
    pub fn can_list(&self) -> bool {
        self.allows("read", None)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    exp: i64,
}

/// The claims of a public access token this server signs.
#[derive(Debug, Serialize)]
struct PublicClaims<'a> {
    sub: String,
    #[serde(rename = "pub")]
    public: bool,
    scopes: Vec<String>,
    iat: i64,
    exp: i64,
    iss: &'a str,
    aud: &'a str,
}

/// A public token for one session, keyed like the clients key streams: `externalId ?? id`.
pub fn mint_session_token(
    app: &App,
    account: AccountId,
    s: &Session,
) -> Result<String, TriggerError> {
    let key = s.external_id.clone().unwrap_or_else(|| friendly_id(s));
    let iat = Timestamp::now().millis() / 1000;
    let claims = PublicClaims {
        sub: account.to_string(),
        public: true,
        scopes: vec![
            format!("read:sessions:{key}"),
            format!("write:sessions:{key}"),
        ],
        iat,
        exp: iat + PUBLIC_TOKEN_TTL_SECONDS,
        iss: ISSUER,
        aud: AUDIENCE,
    };
    Ok(app.auth.tokens().sign_claims(&claims)?)
}

/// The subject of a JWT, read without verifying it (to know whose keys to verify it with).
fn unverified_subject(token: &str) -> Option<AccountId> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")?.as_str()?.parse().ok()
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "sub"]);
    v
}

async fn verify_public(app: &App, token: &str) -> Result<Who, TriggerError> {
    let account = unverified_subject(token).ok_or_else(TriggerError::unauthorized)?;
    let claims = match app.auth.tokens().verify_claims::<Claims>(token) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
            // Not ours: perhaps signed by the client with one of the account's keys.
            let validation = validation();
            let mut verified = None;
            for secret in app.services.accounts.key_secrets(account).await? {
                let key = DecodingKey::from_secret(secret.as_bytes());
                match decode::<Claims>(token, &key, &validation) {
                    Ok(d) => {
                        verified = Some(d.claims);
                        break;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            jsonwebtoken::errors::ErrorKind::InvalidSignature
                        ) => {}
                    Err(_) => return Err(TriggerError::unauthorized()),
                }
            }
            verified.ok_or_else(TriggerError::unauthorized)?
        }
        Err(_) => return Err(TriggerError::unauthorized()),
    };
    if claims.sub.parse::<AccountId>().ok() != Some(account) {
        return Err(TriggerError::unauthorized());
    }
    let scopes = claims
        .scopes
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Scope::parse(s))
        .collect();
    Ok(Who::Public { account, scopes })
}

pub async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Who, TriggerError> {
    let secret = presented_secret(headers).map_err(|_| TriggerError::unauthorized())?;
    if let Some(s) = secret {
        if looks_like_jwt(s) {
            return verify_public(app, s).await;
        }
    }
    match app.auth.resolve(secret).await {
        Ok(Principal::Account { account, .. }) => Ok(Who::Secret(account)),
        Ok(Principal::Anonymous) => Ok(Who::Secret(AccountId::DEFAULT)),
        // The admin key manages accounts and keys, not sessions.
        Ok(Principal::Admin) => Err(TriggerError::forbidden()),
        Ok(Principal::Token(_)) => Err(TriggerError::unauthorized()),
        Err(e) if e.kind == sessiond_core::ErrorKind::Unauthorized => {
            Err(TriggerError::unauthorized())
        }
        Err(e) => Err(e.into()),
    }
}

impl FromRequestParts<App> for Who {
    type Rejection = TriggerError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        authenticate(app, &parts.headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_grammar() {
        let names = vec!["session_1".to_owned(), "chat-1".to_owned()];
        let s = |x: &str| Scope::parse(x).unwrap();
        assert!(s("read:sessions:chat-1").allows("read", Some(&names)));
        assert!(!s("read:sessions:chat-1").allows("write", Some(&names)));
        assert!(!s("read:sessions:other").allows("read", Some(&names)));
        assert!(!s("read:sessions:chat-1").allows("read", None));
        assert!(s("read:sessions").allows("read", None));
        assert!(s("write:sessions").allows("write", Some(&names)));
        assert!(s("admin").allows("write", None));
        assert!(s("read:all").allows("read", Some(&names)));
        assert!(!s("read:runs:chat-1").allows("read", Some(&names)));
        assert!(!s("trigger:tasks:x").allows("write", None));
        assert_eq!(Scope::parse("read"), None);
        assert_eq!(Scope::parse(""), None);
    }
}
