//! The storage contract of sessiond: the async [`Store`] trait every backend implements, its error
//! type, and (behind the `testkit` feature) the conformance suite every backend must pass.
//!
//! Backends enforce atomicity and uniqueness; the rules themselves (idempotent create, merge patch,
//! close) are pure functions from `sessiond-core` that the service layer hands to the store as
//! closures, so one rule serves every backend.

use async_trait::async_trait;
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::channel::{AppendResult, ChannelInfo, NewRecord, Record};
use sessiond_core::chat::{Chat, ChatId, Message, NewMessage};
use sessiond_core::document::{Chunk, Document, DocumentId, NewChunk, SearchHit};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::Job;
use sessiond_core::session::{Session, SessionQuery};
use sessiond_core::{AccountId, Error, JobId, KeyId, SessionId, Timestamp};

pub mod hub;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use hub::{Hub, Notifier, Remote, Signal};

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
            StoreError::Unavailable(m) => {
                Error::unavailable(format!("the store is unavailable, retry shortly ({m})"))
            }
            StoreError::Internal(m) => Error::internal(m),
        }
    }
}

/// A change to one session, decided by a rule while the backend holds the row exclusively.
/// It mutates the session in place and returns the events that describe the change; no events
/// means "nothing changed" and the backend writes nothing.
pub type SessionUpdate = Box<dyn FnOnce(&mut Session) -> Result<Vec<Event>, Error> + Send>;

/// A check on the session before records are appended. The append commits only if the session
/// is still as the guard saw it; a backend may run the guard more than once (e.g. on an
/// optimistic path that found the session changed, then again under a lock).
pub type SessionGuard = Box<dyn Fn(&Session) -> Result<(), Error> + Send + Sync>;

/// The outcome of an append: one result per input record, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub session_id: SessionId,
    pub results: Vec<AppendResult>,
    /// The channel's last seq after the append.
    pub last_seq: i64,
}

/// Records after a position, with what a reader needs to know about the stream's end.
#[derive(Debug, Clone)]
pub struct RecordPage {
    pub records: Vec<Record>,
    /// The channel's last seq (0 for a channel never appended to).
    pub last_seq: i64,
    /// The session is closed (or expired): no record will be appended any more.
    pub session_closed: bool,
}

/// Decides a new job while the backend holds its session: given the job as validated, the session,
/// and (when reuse was asked for) the newest reusable earlier job, it settles the job's state,
/// may change the session, and returns the events to record.
pub type JobCreate =
    Box<dyn FnOnce(&mut Job, &mut Session, Option<&Job>) -> Result<Vec<Event>, Error> + Send>;

/// A change to one job (and possibly its session), decided while the backend holds both.
/// No events means nothing changed.
pub type JobUpdate = Box<dyn FnOnce(&mut Job, &mut Session) -> Result<Vec<Event>, Error> + Send>;

/// A change to a chat decided under lock; `None` means unchanged.
pub type ChatUpdate = Box<dyn FnOnce(&mut Chat) -> Result<Option<Event>, Error> + Send>;

/// Decides whether a chat may be deleted, given it and how many chats the session has; returns
/// the events to record.
pub type ChatDelete = Box<dyn FnOnce(&Chat, i64) -> Result<Vec<Event>, Error> + Send>;

#[derive(Debug, Clone, PartialEq)]
pub enum CreateChat {
    Created(Chat),
    /// The session already has a chat with this id.
    Existing(Chat),
    /// The id belongs to a chat of another session.
    IdTaken,
    SessionNotFound,
}

/// What to look for when an upload may reuse an earlier document's chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentReuse {
    /// Only documents that became ready at or after this instant.
    pub since: Timestamp,
    /// Also require the same filename (the midPilot rule).
    pub match_filename: bool,
}

/// How an upload is settled while the backend holds the session: given the new document, its
/// processing job, the session, and the newest reusable ready document of the account (when
/// reuse was asked for), it returns the events to record and, when it decided to reuse, the
/// document whose chunks are copied under the new one.
pub type DocumentCreate = Box<
    dyn FnOnce(
            &mut Document,
            &mut Job,
            &Session,
            Option<&Document>,
        ) -> Result<DocumentDecision, Error>
        + Send,
>;

/// An upload to store: the document, its bytes, its processing job, and what reuse may match.
pub struct DocumentUpload {
    pub document: Document,
    pub content: Vec<u8>,
    pub job: Job,
    pub reuse: Option<DocumentReuse>,
}

pub struct DocumentDecision {
    pub events: Vec<Event>,
    pub copy_chunks_from: Option<DocumentId>,
}

/// Settles a processed document and its job (see [`Store::finish_document`]).
pub type DocumentSettle =
    Box<dyn FnOnce(&mut Document, &mut Job, &mut Session) -> Result<Vec<Event>, Error> + Send>;

/// The events describing a deleted document.
pub type DocumentDescribe = Box<dyn FnOnce(&Document) -> Vec<Event> + Send>;

/// Keeps something in the session derived from its documents, in the same transaction as a
/// document change: the backend calls it after the change (chunks written, copied or deleted)
/// with the session and its ready documents, ordered as [`Store::list_documents`] orders them,
/// each with its chunks in order. It mutates the session in place and returns the events that
/// describe the change; no events means nothing changed. An error rolls the whole document
/// operation back.
pub type SessionDocuments =
    Box<dyn FnOnce(&mut Session, &[(Document, Vec<Chunk>)]) -> Result<Vec<Event>, Error> + Send>;

/// The end of a document's processing, written in one transaction with its job's transition.
pub enum DocumentOutcome {
    Ready(Vec<NewChunk>),
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a return value, moved once
pub enum UpdateJob {
    NotFound,
    Unchanged(Job),
    /// The job after the change, and its session (changed or not).
    Updated(Job, Session),
}

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
    /// Stores the sealed (encrypted) secret of a key, replacing any earlier seal of it. Surfaces
    /// that verify tokens a client signed with its own secret (trigger.dev) unseal it.
    async fn store_key_seal(&self, key: KeyId, sealed: Vec<u8>) -> Result<(), StoreError>;
    /// The seals of the account's live (not revoked) keys, oldest key first.
    async fn key_seals(&self, account: AccountId) -> Result<Vec<Vec<u8>>, StoreError>;

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
    /// The account that owns the session with this id, whatever the caller's account. For
    /// surfaces that tell "not found" from "not yours" (a 403 instead of a 404).
    async fn session_owner(&self, session: SessionId) -> Result<Option<AccountId>, StoreError>;
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

    /// Appends records to a channel of the session, all or nothing, after `guard` accepted the
    /// session. A record whose id the channel already holds is not appended again: its
    /// original seq is reported with `duplicate`. `None` when the session does not exist.
    async fn append_records(
        &self,
        account: AccountId,
        session: &SessionRef,
        channel: &str,
        records: Vec<NewRecord>,
        guard: SessionGuard,
        now: Timestamp,
    ) -> Result<Option<Appended>, StoreError>;
    /// Up to `limit` records with seq > `after`, in order. `None` when the session is gone.
    /// The caller has already checked that the session belongs to its account.
    async fn read_records(
        &self,
        session: SessionId,
        channel: &str,
        after: i64,
        limit: usize,
        now: Timestamp,
    ) -> Result<Option<RecordPage>, StoreError>;
    /// The session's channels, by name.
    async fn list_channels(&self, session: SessionId) -> Result<Vec<ChannelInfo>, StoreError>;

    /// Creates a job on the session, as `decide` settles it. With `reuse_since`, the newest
    /// succeeded job of the account with the same type and input hash that finished at or
    /// after that instant is offered to `decide`. `None` when the session does not exist.
    async fn create_job(
        &self,
        account: AccountId,
        session: &SessionRef,
        job: Job,
        reuse_since: Option<Timestamp>,
        decide: JobCreate,
    ) -> Result<Option<(Job, Session)>, StoreError>;
    async fn get_job(&self, account: AccountId, id: JobId) -> Result<Option<Job>, StoreError>;
    /// The session's jobs, oldest first.
    async fn list_jobs(&self, session: SessionId) -> Result<Vec<Job>, StoreError>;
    /// Applies `update` to the job and its session atomically.
    async fn update_job(
        &self,
        account: AccountId,
        id: JobId,
        update: JobUpdate,
    ) -> Result<UpdateJob, StoreError>;
    /// Takes the oldest queued job of one of `types` (in an active session of the account, or of
    /// any account when `None`: the server's own processors) and applies `claim` to it. Each
    /// queued job is handed to exactly one caller.
    async fn claim_job(
        &self,
        account: Option<AccountId>,
        types: &[String],
        claim: JobUpdate,
    ) -> Result<Option<(Job, Session)>, StoreError>;
    /// Stores an uploaded document, its bytes and its processing job, as `decide` settles them.
    /// A document with the same id in the same session is replaced; in another session it is
    /// rejected with `document_exists`. `documents`, when given, runs last in the transaction
    /// (see [`SessionDocuments`]). `None` when the session does not exist.
    async fn create_document(
        &self,
        account: AccountId,
        session: &SessionRef,
        upload: DocumentUpload,
        decide: DocumentCreate,
        documents: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError>;
    async fn get_document(
        &self,
        session: SessionId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError>;
    /// A document by id within the account (for the processing worker).
    async fn find_document(
        &self,
        account: AccountId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError>;
    /// The session's documents, oldest first.
    async fn list_documents(&self, session: SessionId) -> Result<Vec<Document>, StoreError>;
    async fn document_content(&self, id: DocumentId) -> Result<Option<Vec<u8>>, StoreError>;
    /// The document's chunks in order.
    async fn list_chunks(&self, id: DocumentId) -> Result<Vec<Chunk>, StoreError>;
    /// Writes the outcome of processing: the chunks (when ready), the document's new state as
    /// `settle` decides it, and its job's transition, atomically. `settle` receives the document
    /// (already updated with counts and status) and its job; `documents`, when given, runs after
    /// it in the same transaction (see [`SessionDocuments`]). `None` when the document is gone.
    async fn finish_document(
        &self,
        account: AccountId,
        id: DocumentId,
        outcome: DocumentOutcome,
        settle: DocumentSettle,
        documents: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError>;
    /// Deletes a document and its chunks, recording the events `describe` returns for it, in
    /// one transaction, which also runs `documents` when given (see [`SessionDocuments`]); the
    /// deleted document and its number of chunks, or `None`.
    async fn delete_document(
        &self,
        session: SessionId,
        id: DocumentId,
        describe: DocumentDescribe,
        documents: Option<SessionDocuments>,
    ) -> Result<Option<(Document, i64)>, StoreError>;
    /// Full-text search over the session's chunks, best first.
    async fn search_chunks(
        &self,
        session: SessionId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SearchHit>, StoreError>;

    /// Inserts a session together with its first chat (and both events), atomically.
    async fn insert_session_with_chat(
        &self,
        session: Session,
        event: Event,
        chat: Chat,
    ) -> Result<InsertSession, StoreError>;
    /// Creates a chat in the session (which `guard` accepts), recording `chat.created`.
    async fn create_chat(
        &self,
        account: AccountId,
        session: &SessionRef,
        chat: Chat,
        guard: SessionGuard,
    ) -> Result<CreateChat, StoreError>;
    /// The session's chats, oldest first, each with `reader`'s read mark.
    async fn list_chats(
        &self,
        session: SessionId,
        reader: AccountId,
    ) -> Result<Vec<(Chat, Option<Timestamp>)>, StoreError>;
    async fn get_chat(&self, session: SessionId, chat: ChatId) -> Result<Option<Chat>, StoreError>;
    async fn update_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        update: ChatUpdate,
    ) -> Result<Option<Chat>, StoreError>;
    /// Deletes the chat and its messages if `decide` allows; the deleted chat, or `None`.
    async fn delete_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        decide: ChatDelete,
    ) -> Result<Option<Chat>, StoreError>;
    /// Appends a message, exactly once by its id (a repeated id returns the stored message with
    /// `true`). `None` when the chat does not exist in the session.
    async fn append_message(
        &self,
        session: SessionId,
        chat: ChatId,
        message: NewMessage,
        now: Timestamp,
    ) -> Result<Option<(Message, bool)>, StoreError>;
    /// The chat's messages in order.
    async fn list_messages(&self, chat: ChatId) -> Result<Vec<Message>, StoreError>;
    /// Records that `reader` has read the chat up to `at`; `false` when the chat is unknown.
    async fn mark_chat_read(
        &self,
        session: SessionId,
        chat: ChatId,
        reader: AccountId,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Running jobs whose lease ended before `now`, across accounts.
    async fn expired_leases(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(AccountId, JobId)>, StoreError>;
}
