//! Session tokens: HS256 JWTs signed with the server's secret, carrying scopes such as
//! `read:sessions:{id}` and `write:sessions:{id}`.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sessiond_core::error::codes;
use sessiond_core::session::Session;
use sessiond_core::{AccountId, Error, Timestamp};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scopes: Vec<String>,
    iat: i64,
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
}

/// What a verified token allows: reading sessions and appending to their `in` channel, each
/// by session id or externalId as written in the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub account: AccountId,
    pub read: Vec<String>,
    pub write: Vec<String>,
}

fn names(session: &Session, key: &str) -> bool {
    key == session.id.to_string() || session.external_id.as_deref() == Some(key)
}

impl TokenGrant {
    pub fn can_read(&self, s: &Session) -> bool {
        self.read.iter().any(|k| names(s, k))
    }
    pub fn can_write(&self, s: &Session) -> bool {
        self.write.iter().any(|k| names(s, k))
    }
}

/// Mints and verifies session tokens.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

/// A minted token.
pub struct Minted {
    pub token: String,
    pub expires_at: Timestamp,
    pub scopes: Vec<String>,
}

/// Does this bearer value look like a JWT rather than an API key?
pub fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ") && s.split('.').count() == 3
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn mint(
        &self,
        account: AccountId,
        session: &Session,
        read: bool,
        write: bool,
        ttl_seconds: i64,
    ) -> Result<Minted, Error> {
        let now = Timestamp::now();
        let expires_at = now.plus_seconds(ttl_seconds);
        let mut scopes = Vec::new();
        if read {
            scopes.push(format!("read:sessions:{}", session.id));
        }
        if write {
            scopes.push(format!("write:sessions:{}", session.id));
        }
        let claims = Claims {
            sub: account.to_string(),
            scopes: scopes.clone(),
            iat: now.millis() / 1000,
            exp: expires_at.millis() / 1000,
            jti: Some(Uuid::new_v4().to_string()),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::internal(format!("cannot sign a token: {e}")))?;
        Ok(Minted {
            token,
            expires_at: Timestamp::from_millis(claims.exp * 1000),
            scopes,
        })
    }

    /// Signs arbitrary claims with the server's secret (HS256), for surfaces whose tokens carry
    /// claims of their own (trigger.dev's public access tokens).
    pub fn sign_claims<T: Serialize>(&self, claims: &T) -> Result<String, Error> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| Error::internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies a token signed with the server's secret (signature, `exp`, `sub`) and returns
    /// its claims as they are; the caller interprets them.
    pub fn verify_claims<T: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        decode::<T>(token, &self.decoding, &self.validation).map(|d| d.claims)
    }

    pub fn verify(&self, token: &str) -> Result<TokenGrant, Error> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => Error::new(
                        sessiond_core::ErrorKind::Unauthorized,
                        codes::TOKEN_EXPIRED,
                        "the session token has expired; mint a new one",
                    ),
                    _ => Error::new(
                        sessiond_core::ErrorKind::Unauthorized,
                        codes::INVALID_TOKEN,
                        "the session token is not valid (bad signature or malformed)",
                    ),
                }
            })?;
        let account: AccountId = data.claims.sub.parse().map_err(|_| {
            Error::new(
                sessiond_core::ErrorKind::Unauthorized,
                codes::INVALID_TOKEN,
                "the session token's subject is not an account id",
            )
        })?;
        let mut grant = TokenGrant {
            account,
            read: Vec::new(),
            write: Vec::new(),
        };
        for scope in data.claims.scopes {
            let mut parts = scope.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("read"), Some("sessions"), Some(id)) => grant.read.push(id.to_owned()),
                (Some("write"), Some("sessions"), Some(id)) => grant.write.push(id.to_owned()),
                // Scopes this server does not grant anything for are ignored.
                _ => {}
            }
        }
        Ok(grant)
    }
}
