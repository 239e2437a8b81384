use std::sync::Arc;

use rand::RngCore;
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::error::codes;
use sessiond_core::limits::*;
use sessiond_core::{AccountId, Error, KeyId, Timestamp};
use sessiond_store::Store;
use tracing::instrument;

use crate::auth::hash_secret;

#[derive(Clone)]
pub struct AccountService {
    store: Arc<dyn Store>,
}

/// A key as created: the secret is returned once and never stored.
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

fn check_name(name: Option<String>, what: &str, max: usize) -> Result<Option<String>, Error> {
    match name {
        Some(n) if n.trim().is_empty() || n.chars().count() > max => Err(Error::invalid_field(
            format!("{what} must be 1 to {max} characters"),
        )),
        other => Ok(other),
    }
}

/// A new random secret: `sk_` and 48 hex digits (192 bits).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("sk_{}", hex::encode(bytes))
}

impl AccountService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Makes sure the open-mode default account exists.
    pub async fn ensure_default(&self) -> Result<(), Error> {
        Ok(self
            .store
            .ensure_account(Account {
                id: AccountId::DEFAULT,
                name: Some("default".into()),
                created_at: Timestamp::now(),
            })
            .await?)
    }

    #[instrument(skip_all)]
    pub async fn create(
        &self,
        id: Option<AccountId>,
        name: Option<String>,
    ) -> Result<Account, Error> {
        let name = check_name(name, "name", ACCOUNT_NAME_MAX_CHARS)?;
        Ok(self
            .store
            .create_account(Account {
                id: id.unwrap_or_else(AccountId::random),
                name,
                created_at: Timestamp::now(),
            })
            .await?)
    }

    /// Issues a key for the account: a generated secret, or `secret` when the caller registers
    /// one it already has (for example a client's existing key).
    #[instrument(skip_all, fields(account = %account))]
    pub async fn create_key(
        &self,
        account: AccountId,
        name: Option<String>,
        secret: Option<String>,
    ) -> Result<IssuedKey, Error> {
        let name = check_name(name, "name", KEY_NAME_MAX_CHARS)?;
        let secret = match secret {
            None => generate_secret(),
            Some(s) => {
                let n = s.chars().count();
                if !(KEY_SECRET_MIN_CHARS..=KEY_SECRET_MAX_CHARS).contains(&n)
                    || s.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(Error::invalid_field(format!(
                        "key must be {KEY_SECRET_MIN_CHARS} to {KEY_SECRET_MAX_CHARS} characters without spaces"
                    )));
                }
                s
            }
        };
        let key = ApiKey {
            id: KeyId::random(),
            account_id: account,
            name,
            prefix: secret.chars().take(10).collect(),
            hash: hash_secret(&secret),
            created_at: Timestamp::now(),
            revoked_at: None,
        };
        let key = self.store.create_api_key(key).await?;
        Ok(IssuedKey { key, secret })
    }

    #[instrument(skip_all, fields(key = %id))]
    pub async fn revoke_key(&self, id: KeyId) -> Result<(), Error> {
        if self.store.revoke_api_key(id, Timestamp::now()).await? {
            Ok(())
        } else {
            Err(Error::not_found(
                codes::KEY_NOT_FOUND,
                format!("Key {id} not found (or already revoked)"),
            ))
        }
    }
}
