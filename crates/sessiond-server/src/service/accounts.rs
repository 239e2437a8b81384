use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
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
    sealer: Arc<KeySealer>,
}

/// Seals API key secrets (AES-256-GCM) so the server can get a secret back: trigger.dev clients
/// sign public tokens with their secret key, and the server verifies those signatures. The key
/// is derived from the server's token secret, so every node of a cluster can unseal.
pub struct KeySealer {
    cipher: Aes256Gcm,
}

/// Domain separation: the token secret signs JWTs; this derivation only seals key secrets.
const SEAL_LABEL: &[u8] = b"sessiond/api-key-seal/v1\0";
const NONCE_BYTES: usize = 12;

impl KeySealer {
    pub fn new(token_secret: &[u8]) -> Self {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, SEAL_LABEL);
        sha2::Digest::update(&mut h, token_secret);
        let key: [u8; 32] = sha2::Digest::finalize(h).into();
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// `nonce (12 bytes) || ciphertext with tag`.
    pub fn seal(&self, secret: &str) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), secret.as_bytes())
            .map_err(|_| Error::internal("cannot seal a key secret"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The secret, or `None` when the seal was made under another token secret (or is damaged).
    pub fn unseal(&self, sealed: &[u8]) -> Option<String> {
        if sealed.len() <= NONCE_BYTES {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_BYTES);
        let pt = self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()?;
        String::from_utf8(pt).ok()
    }
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
    pub fn new(store: Arc<dyn Store>, sealer: KeySealer) -> Self {
        Self {
            store,
            sealer: Arc::new(sealer),
        }
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
        // The key works without its seal; only tokens the client signs with it need the seal.
        match self.sealer.seal(&secret) {
            Ok(sealed) => {
                if let Err(e) = self.store.store_key_seal(key.id, sealed).await {
                    tracing::warn!(key = %key.id, error = %e, "cannot store the key's seal; tokens signed with it will not verify");
                }
            }
            Err(e) => tracing::warn!(key = %key.id, error = %e, "cannot seal the key"),
        }
        Ok(IssuedKey { key, secret })
    }

    /// The secrets of the account's live keys (those that could be unsealed), oldest first.
    pub async fn key_secrets(&self, account: AccountId) -> Result<Vec<String>, Error> {
        Ok(self
            .store
            .key_seals(account)
            .await?
            .iter()
            .filter_map(|s| self.sealer.unseal(s))
            .collect())
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
