//! The storage contract of sessiond: the async [`Store`] trait every backend implements, its error
//! type, and (behind the `testkit` feature) the conformance suite every backend must pass.
//!
//! Backends enforce atomicity and uniqueness; the rules themselves (idempotent create, merge patch,
//! close) are pure functions from `sessiond-core` that the service layer hands to the store as
//! closures, so one rule serves every backend.

use async_trait::async_trait;
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::session::{Session, SessionQuery};
use sessiond_core::{AccountId, Error, KeyId, SessionId, Timestamp};

#[cfg(feature = "testkit")]
pub mod testkit;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A rule said no (a closure handed to the store returned an error, or a uniqueness rule the
    /// backend enforces was hit); the message is meant for the caller.
    #[error(transparent)]
    Rejected(#[from] Error),
    /// The backend cannot be reached (database down, pool exhausted, store shut down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data. Logged; the caller sees a generic 500.
    #[error("store failure: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(e) => e,
            StoreError::Unavailable(m) => Error::unavailable(format!(
                "the store is unavailable, retry shortly ({m})"
            )),
            StoreError::Internal(m) => Error::internal(m),
        }
    }
}

/// A change to one session, decided by a rule while the backend holds the row exclusively.
/// It mutates the session in place and returns the events that describe the change; no events
/// means "nothing changed" and the backend writes nothing.
pub type SessionUpdate = Box<dyn FnOnce(&mut Session) -> Result<Vec<Event>, Error> + Send>;

#[derive(Debug, Clone, PartialEq)]
pub enum InsertSession {
    Inserted(Session),
    /// A session with this id already exists (in any account).
    IdTaken,
    /// The account already has a session with this externalId; here it is.
    ExternalIdTaken(Session),
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpdateSession {
    NotFound,
    Unchanged(Session),
    Updated(Session),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short description for the start-up banner, e.g. `sqlite ./sessiond-data/sessiond.db`.
    fn describe(&self) -> String;
    /// Succeeds when the store answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Finishes pending writes and closes connections. Later calls fail with `Unavailable`.
    async fn shutdown(&self);

    /// Creates the account unless it exists (used for the open-mode default account).
    async fn ensure_account(&self, account: Account) -> Result<(), StoreError>;
    /// Creates an account; an existing id is rejected with `account_exists`.
    async fn create_account(&self, account: Account) -> Result<Account, StoreError>;
    async fn get_account(&self, id: AccountId) -> Result<Option<Account>, StoreError>;
    /// Stores a key; an unknown account is rejected with `account_not_found`, a secret that is
    /// already registered with `key_exists`.
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError>;
    /// The live (not revoked) key with this secret hash.
    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError>;
    /// Marks a key revoked; `false` when no live key has this id.
    async fn revoke_api_key(&self, id: KeyId, at: Timestamp) -> Result<bool, StoreError>;

    /// Inserts a new session and appends `event` to its `events` channel, atomically.
    async fn insert_session(
        &self,
        session: Session,
        event: Event,
    ) -> Result<InsertSession, StoreError>;
    async fn get_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<Session>, StoreError>;
    /// Runs `update` on the current row while holding it exclusively, then writes the row and
    /// appends the returned events to the `events` channel, in one transaction.
    async fn update_session(
        &self,
        account: AccountId,
        session: &SessionRef,
        update: SessionUpdate,
    ) -> Result<UpdateSession, StoreError>;
    /// Deletes the session and everything under it; the id of what was deleted.
    async fn delete_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<SessionId>, StoreError>;
    /// Up to `query.limit` sessions in `createdAt desc, id desc` order. `data` is left empty
    /// unless `include_data`.
    async fn list_sessions(
        &self,
        account: AccountId,
        query: &SessionQuery,
        include_data: bool,
    ) -> Result<Vec<Session>, StoreError>;
}
