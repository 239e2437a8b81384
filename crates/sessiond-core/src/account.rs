//! Accounts and API keys.

use crate::{AccountId, KeyId, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: Option<String>,
    pub created_at: Timestamp,
}

/// An API key as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: KeyId,
    pub account_id: AccountId,
    pub name: Option<String>,
    /// The first characters of the secret, to tell keys apart in listings.
    pub prefix: String,
    pub hash: [u8; 32],
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}
