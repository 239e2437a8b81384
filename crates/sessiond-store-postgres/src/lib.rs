//! The PostgreSQL backend: the distributed engine behind several stateless sessiond nodes.
//!
//! Every [`Store`] method is one transaction (or one self-committing statement) on a connection
//! from a pool. Rows a rule decides on are locked (`SELECT … FOR UPDATE`) before the rule's
//! closure runs; the one exception, appends of server-generated ids, runs the guard on an
//! unlocked read and writes only if the locked row is still the one it saw. Appends lock their
//! channel row, which serialises seq assignment per channel; claims use `FOR UPDATE SKIP
//! LOCKED`, so each queued job goes to exactly one claimer across nodes.
//!
//! Cluster fan-out: the store installs itself as the Hub's [`Notifier`]; signals the service
//! publishes after a commit are sent as `NOTIFY` on the pool, outside any data transaction (a
//! NOTIFY inside one takes a global lock at commit). One `LISTEN` task per store feeds other
//! nodes' signals into the Hub and, after a lost connection is re-established, wakes every
//! local reader to re-read from its cursor.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::channel::{ChannelInfo, NewRecord};
use sessiond_core::chat::{Chat, ChatId, Message, NewMessage};
use sessiond_core::document::{Chunk, Document, DocumentId, SearchHit};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::Job;
use sessiond_core::session::{Session, SessionQuery};
use sessiond_core::{AccountId, Error, JobId, KeyId, SessionId, Timestamp};
use sessiond_store::{
    Appended, ChatDelete, ChatUpdate, CreateChat, DocumentCreate, DocumentDescribe,
    DocumentOutcome, DocumentSettle, DocumentUpload, Hub, InsertSession, JobCreate, JobUpdate,
    RecordPage, SessionDocuments, SessionGuard, SessionUpdate, Store, StoreError, UpdateJob,
    UpdateSession,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod accounts;
mod chats;
mod documents;
mod jobs;
mod notify;
mod pipeline;
mod records;
mod schema;
mod sessions;
#[cfg(feature = "testkit")]
pub mod testkit;

/// A pooled connection idle for this long is pinged before it is handed out.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(5);

/// The NOTIFY channel nodes share unless configured otherwise.
pub const DEFAULT_CHANNEL: &str = "sessiond";

#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the data pool (the LISTEN connection is extra).
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
    /// The NOTIFY/LISTEN channel; nodes of one cluster must agree on it.
    pub channel: String,
}

/// The default pool: 4 connections per CPU core, from 4 to 32. More connections than the
/// database's cores can run only add contention (measured in docs/BENCHMARKS.md).
pub fn default_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores.saturating_mul(4)).map_or(32, |n| n.clamp(4, 32))
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: default_pool_size(),
            acquire_timeout: Duration::from_secs(5),
            channel: DEFAULT_CHANNEL.to_owned(),
        }
    }
}

pub struct PgStore {
    pool: PgPool,
    /// Shared pipelined connections for point reads; the pool serves what they cannot.
    pipeline: pipeline::Pipeline,
    listen_pool: PgPool,
    description: String,
    node: String,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// A test database to drop at shutdown: `(server URL, database URL)`.
    #[cfg(feature = "testkit")]
    throwaway: Mutex<Option<(String, String)>>,
}

pub(crate) fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// SQLSTATEs that mean "the database cannot serve this right now; retry": connection
/// exceptions (class 08), shutdown and start-up, too many connections, serialization failures
/// and deadlocks, lock timeouts, read-only replicas after a failover.
pub(crate) fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "53400" | "40001" | "40P01" | "55P03" | "25006"
        )
}

/// Maps a driver error: anything about reaching the database is `Unavailable` (the server
/// answers 503), the rest `Internal`.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(d) if d.code().is_some_and(|c| is_transient(&c)) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

pub(crate) const UNIQUE_VIOLATION: &str = "23505";
pub(crate) const FOREIGN_KEY_VIOLATION: &str = "23503";

/// Runs a rule's closure; a panic in it fails the request instead of the task.
pub(crate) fn run_rule<R>(f: impl FnOnce() -> Result<R, Error>) -> Result<R, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(StoreError::Rejected),
        Err(_) => Err(StoreError::Internal("a store closure panicked".into())),
    }
}

pub(crate) type Tx = Transaction<'static, Postgres>;

/// Commits on success, rolls back on failure.
async fn finish<R>(
    tx: Transaction<'_, Postgres>,
    result: Result<R, StoreError>,
) -> Result<R, StoreError> {
    match result {
        Ok(r) => {
            tx.commit().await.map_err(db_err)?;
            Ok(r)
        }
        Err(e) => {
            if let Err(re) = tx.rollback().await {
                tracing::debug!(error = %re, "rollback failed");
            }
            Err(e)
        }
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))
}

/// `host:port/db` (or the socket path), never the password.
fn describe_options(o: &PgConnectOptions) -> String {
    let place = match o.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    format!(
        "postgres {place}/{}",
        o.get_database().unwrap_or(o.get_username())
    )
}

async fn open_pool(
    options: PgConnectOptions,
    max: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(acquire_timeout)
        // The pool's own check pings every connection it hands out: one more round trip per
        // request. A connection in use is known to be alive (sqlx also pings it when it comes
        // back), so only one that sat idle for a while is checked first.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_CHECK_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| match db_err(e) {
            StoreError::Internal(m) => StoreError::Unavailable(m),
            other => other,
        })
}

fn with_app_name(o: PgConnectOptions, name: &str) -> PgConnectOptions {
    if o.get_application_name().is_some() {
        o
    } else {
        o.application_name(name)
    }
}

impl PgStore {
    /// Connects, runs pending migrations, installs this store as `hub`'s notifier and starts
    /// the LISTEN task that feeds other nodes' signals into `hub`. A hub takes one notifier:
    /// give each store its own hub (one per node). Fails with `Unavailable` when the database
    /// cannot be reached.
    pub async fn connect(url: &str, opts: PgOptions, hub: Arc<Hub>) -> Result<PgStore, StoreError> {
        let options = parse_url(url)?;
        let description = describe_options(&options);
        let pipeline = pipeline::Pipeline::new(
            url,
            &with_app_name(options.clone(), "sessiond-reads"),
            opts.acquire_timeout,
        );
        let pool = open_pool(
            with_app_name(options.clone(), "sessiond"),
            opts.max_connections,
            opts.acquire_timeout,
        )
        .await?;
        schema::migrate(&pool).await?;
        // The LISTEN connection lives in a pool of its own: it never takes a data connection,
        // and the pool re-opens it after a loss.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(with_app_name(options, "sessiond-listener"));
        let listener = notify::listen(&listen_pool, &opts.channel)
            .await
            .map_err(db_err)?;

        let node = uuid::Uuid::new_v4().simple().to_string();
        let (stop, stop_rx) = watch::channel(false);
        let outbox = notify::Outbox::new();
        hub.set_notifier(outbox.clone());
        let tasks = vec![
            tokio::spawn(notify::sender_task(
                outbox,
                pool.clone(),
                opts.channel.clone(),
                node.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(notify::listener_task(
                hub,
                pool.clone(),
                listen_pool.clone(),
                opts.channel,
                node.clone(),
                Some(listener),
                stop_rx,
            )),
        ];
        Ok(PgStore {
            pool,
            pipeline,
            listen_pool,
            description,
            node,
            stop,
            tasks: Mutex::new(tasks),
            #[cfg(feature = "testkit")]
            throwaway: Mutex::new(None),
        })
    }

    /// Runs pending migrations and returns (for `sessiond migrate`).
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let pool = open_pool(
            with_app_name(parse_url(url)?, "sessiond-migrate"),
            1,
            Duration::from_secs(10),
        )
        .await?;
        let result = schema::migrate(&pool).await;
        pool.close().await;
        result
    }

    /// The schema version this build migrates to.
    pub fn schema_version() -> i32 {
        schema::latest()
    }

    /// This node's id as it appears in NOTIFY payloads.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        self.pool.begin().await.map_err(db_err)
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, StoreError> {
        self.pool.acquire().await.map_err(db_err)
    }
}

#[async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| match db_err(e) {
                StoreError::Internal(m) => StoreError::Unavailable(m),
                other => other,
            })
    }

    async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            // The sender flushes what is queued; don't wait forever on a dead database.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.pipeline.close();
        self.listen_pool.close().await;
        self.pool.close().await;
        #[cfg(feature = "testkit")]
        {
            let throwaway = self
                .throwaway
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some((base, url)) = throwaway {
                // Dropping a database waits for its last connections to go; under load that can
                // take seconds, so it must not hold up shutdown. Leftovers are swept later.
                tokio::spawn(async move {
                    if let Err(e) = testkit::drop_database(&base, &url).await {
                        tracing::warn!(error = %e, "cannot drop the test database");
                    }
                });
            }
        }
    }

    async fn ensure_account(&self, account: Account) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        accounts::ensure(&mut c, &account).await
    }

    async fn create_account(&self, account: Account) -> Result<Account, StoreError> {
        let mut c = self.conn().await?;
        accounts::create(&mut c, account).await
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let mut c = self.conn().await?;
        accounts::get(&mut c, id).await
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError> {
        let mut tx = self.begin().await?;
        let r = accounts::create_key(&mut tx, key).await;
        finish(tx, r).await
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        let mut c = self.conn().await?;
        accounts::find_key(&mut c, &hash).await
    }

    async fn revoke_api_key(&self, id: KeyId, at: Timestamp) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        accounts::revoke_key(&mut c, id, at).await
    }

    async fn store_key_seal(&self, key: KeyId, sealed: Vec<u8>) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        accounts::store_seal(&mut c, key, &sealed).await
    }

    async fn key_seals(&self, account: AccountId) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut c = self.conn().await?;
        accounts::seals(&mut c, account).await
    }

    async fn insert_session(
        &self,
        session: Session,
        event: Event,
    ) -> Result<InsertSession, StoreError> {
        // One statement, atomic on its own: no transaction round trips.
        let mut c = self.conn().await?;
        sessions::insert(&mut c, session, event).await
    }

    async fn get_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<Session>, StoreError> {
        if let Some(read) = self.pipeline.get_session(account, session, true).await {
            return read;
        }
        let mut c = self.conn().await?;
        sessions::get(&mut c, account, session, true, sessions::Lock::None).await
    }

    async fn session_owner(&self, session: SessionId) -> Result<Option<AccountId>, StoreError> {
        let mut c = self.conn().await?;
        sessions::owner(&mut c, session).await
    }

    async fn update_session(
        &self,
        account: AccountId,
        session: &SessionRef,
        update: SessionUpdate,
    ) -> Result<UpdateSession, StoreError> {
        let mut tx = self.begin().await?;
        let r = sessions::update(&mut tx, account, session, update).await;
        finish(tx, r).await
    }

    async fn delete_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<SessionId>, StoreError> {
        let mut tx = self.begin().await?;
        let r = sessions::delete(&mut tx, account, session).await;
        finish(tx, r).await
    }

    async fn list_sessions(
        &self,
        account: AccountId,
        query: &SessionQuery,
        include_data: bool,
    ) -> Result<Vec<Session>, StoreError> {
        let mut c = self.conn().await?;
        sessions::list(&mut c, account, query, include_data).await
    }

    async fn append_records(
        &self,
        account: AccountId,
        session: &SessionRef,
        channel: &str,
        records: Vec<NewRecord>,
        guard: SessionGuard,
        now: Timestamp,
    ) -> Result<Option<Appended>, StoreError> {
        // Batches of server-generated ids first try one self-committing statement that
        // re-checks the session it was guarded on; the read it is guarded on needs no pool
        // connection.
        let fresh = !records.is_empty() && records.iter().all(|r| r.fresh);
        let mut c = if fresh {
            let read = match self.pipeline.get_session(account, session, false).await {
                Some(read) => read?.map(|s| (s, None)),
                None => {
                    let mut c = self.conn().await?;
                    sessions::get(&mut c, account, session, false, sessions::Lock::None)
                        .await?
                        .map(|s| (s, Some(c)))
                }
            };
            let Some((seen, c)) = read else {
                return Ok(None);
            };
            run_rule(|| guard(&seen))?;
            let mut c = match c {
                Some(c) => c,
                None => self.conn().await?,
            };
            if let Some(done) = records::append_fresh(&mut c, &seen, channel, &records, now).await?
            {
                return Ok(Some(done));
            }
            c
        } else {
            self.conn().await?
        };
        let mut tx = sqlx::Connection::begin(&mut *c).await.map_err(db_err)?;
        let r =
            records::append_guarded(&mut tx, account, session, channel, records, guard, now).await;
        finish(tx, r).await
    }

    async fn read_records(
        &self,
        session: SessionId,
        channel: &str,
        after: i64,
        limit: usize,
        now: Timestamp,
    ) -> Result<Option<RecordPage>, StoreError> {
        let mut c = self.conn().await?;
        records::read(&mut c, session, channel, after, limit, now).await
    }

    async fn list_channels(&self, session: SessionId) -> Result<Vec<ChannelInfo>, StoreError> {
        let mut c = self.conn().await?;
        records::list_channels(&mut c, session).await
    }

    async fn create_job(
        &self,
        account: AccountId,
        session: &SessionRef,
        job: Job,
        reuse_since: Option<Timestamp>,
        decide: JobCreate,
    ) -> Result<Option<(Job, Session)>, StoreError> {
        let mut tx = self.begin().await?;
        let r = jobs::create(&mut tx, account, session, job, reuse_since, decide).await;
        finish(tx, r).await
    }

    async fn get_job(&self, account: AccountId, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut c = self.conn().await?;
        jobs::get(&mut c, account, id, false).await
    }

    async fn list_jobs(&self, session: SessionId) -> Result<Vec<Job>, StoreError> {
        let mut c = self.conn().await?;
        jobs::list(&mut c, session).await
    }

    async fn update_job(
        &self,
        account: AccountId,
        id: JobId,
        update: JobUpdate,
    ) -> Result<UpdateJob, StoreError> {
        let mut tx = self.begin().await?;
        let r = jobs::update(&mut tx, account, id, update).await;
        finish(tx, r).await
    }

    async fn claim_job(
        &self,
        account: Option<AccountId>,
        types: &[String],
        claim: JobUpdate,
    ) -> Result<Option<(Job, Session)>, StoreError> {
        if types.is_empty() {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        let r = jobs::claim(&mut tx, account, types, claim, Timestamp::now()).await;
        finish(tx, r).await
    }

    async fn expired_leases(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(AccountId, JobId)>, StoreError> {
        let mut c = self.conn().await?;
        jobs::expired(&mut c, now, limit).await
    }

    async fn create_document(
        &self,
        account: AccountId,
        session: &SessionRef,
        upload: DocumentUpload,
        decide: DocumentCreate,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError> {
        let mut tx = self.begin().await?;
        let r = documents::create(&mut tx, account, session, upload, decide, docs).await;
        finish(tx, r).await
    }

    async fn get_document(
        &self,
        session: SessionId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        let mut c = self.conn().await?;
        documents::get(&mut c, session, id).await
    }

    async fn find_document(
        &self,
        account: AccountId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        let mut c = self.conn().await?;
        documents::find(&mut c, account, id).await
    }

    async fn list_documents(&self, session: SessionId) -> Result<Vec<Document>, StoreError> {
        let mut c = self.conn().await?;
        documents::list(&mut c, session).await
    }

    async fn document_content(&self, id: DocumentId) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.conn().await?;
        documents::content(&mut c, id).await
    }

    async fn list_chunks(&self, id: DocumentId) -> Result<Vec<Chunk>, StoreError> {
        let mut c = self.conn().await?;
        documents::list_chunks(&mut c, id).await
    }

    async fn finish_document(
        &self,
        account: AccountId,
        id: DocumentId,
        outcome: DocumentOutcome,
        settle: DocumentSettle,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError> {
        let mut tx = self.begin().await?;
        let r = documents::finish(&mut tx, account, id, outcome, settle, docs).await;
        finish(tx, r).await
    }

    async fn delete_document(
        &self,
        session: SessionId,
        id: DocumentId,
        describe: DocumentDescribe,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, i64)>, StoreError> {
        let mut tx = self.begin().await?;
        let r = documents::delete(&mut tx, session, id, describe, docs).await;
        finish(tx, r).await
    }

    async fn search_chunks(
        &self,
        session: SessionId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let mut c = self.conn().await?;
        documents::search(&mut c, session, query, limit).await
    }

    async fn insert_session_with_chat(
        &self,
        session: Session,
        event: Event,
        chat: Chat,
    ) -> Result<InsertSession, StoreError> {
        let mut tx = self.begin().await?;
        let r = chats::insert_session_with_chat(&mut tx, session, event, chat).await;
        finish(tx, r).await
    }

    async fn create_chat(
        &self,
        account: AccountId,
        session: &SessionRef,
        chat: Chat,
        guard: SessionGuard,
    ) -> Result<CreateChat, StoreError> {
        let mut tx = self.begin().await?;
        let r = chats::create(&mut tx, account, session, chat, guard).await;
        finish(tx, r).await
    }

    async fn list_chats(
        &self,
        session: SessionId,
        reader: AccountId,
    ) -> Result<Vec<(Chat, Option<Timestamp>)>, StoreError> {
        let mut c = self.conn().await?;
        chats::list(&mut c, session, reader).await
    }

    async fn get_chat(&self, session: SessionId, chat: ChatId) -> Result<Option<Chat>, StoreError> {
        let mut c = self.conn().await?;
        chats::get(&mut c, session, chat).await
    }

    async fn update_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        update: ChatUpdate,
    ) -> Result<Option<Chat>, StoreError> {
        let mut tx = self.begin().await?;
        let r = chats::update(&mut tx, session, chat, update).await;
        finish(tx, r).await
    }

    async fn delete_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        decide: ChatDelete,
    ) -> Result<Option<Chat>, StoreError> {
        let mut tx = self.begin().await?;
        let r = chats::delete(&mut tx, session, chat, decide).await;
        finish(tx, r).await
    }

    async fn append_message(
        &self,
        session: SessionId,
        chat: ChatId,
        message: NewMessage,
        now: Timestamp,
    ) -> Result<Option<(Message, bool)>, StoreError> {
        let mut tx = self.begin().await?;
        let r = chats::append_message(&mut tx, session, chat, message, now).await;
        finish(tx, r).await
    }

    async fn list_messages(&self, chat: ChatId) -> Result<Vec<Message>, StoreError> {
        let mut c = self.conn().await?;
        chats::list_messages(&mut c, chat).await
    }

    async fn mark_chat_read(
        &self,
        session: SessionId,
        chat: ChatId,
        reader: AccountId,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        chats::mark_read(&mut c, session, chat, reader, at).await
    }
}

/// A `usize` limit as a SQL `LIMIT`.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn describe_hides_the_password() {
        let o = parse_url("postgres://u:secret@db.example:6543/prod?sslmode=disable").unwrap();
        assert_eq!(describe_options(&o), "postgres db.example:6543/prod");
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient("08006"));
        assert!(is_transient("57P01"));
        assert!(is_transient("40P01"));
        assert!(!is_transient("23505"));
    }
}
