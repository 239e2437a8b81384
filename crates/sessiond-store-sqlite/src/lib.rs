//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection and commits whatever requests are waiting
//! together (group commit: one transaction, one fsync, many acknowledgements); each request runs
//! in its own savepoint so one failure never affects its neighbours. Reads go to a small pool of
//! read-only connections on their own threads. WAL mode lets readers run while the writer commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::Connection;
use sessiond_core::account::{Account, ApiKey};
use sessiond_core::channel::{ChannelInfo, NewRecord};
use sessiond_core::chat::{Chat, ChatId, Message, NewMessage};
use sessiond_core::document::{Chunk, Document, DocumentId, SearchHit};
use sessiond_core::event::Event;
use sessiond_core::ids::SessionRef;
use sessiond_core::job::Job;
use sessiond_core::session::{Session, SessionQuery};
use sessiond_core::{AccountId, JobId, KeyId, SessionId, Timestamp};
use sessiond_store::{
    Appended, ChatDelete, ChatUpdate, CreateChat, DocumentCreate, DocumentDescribe,
    DocumentOutcome, DocumentSettle, DocumentUpload, InsertSession, JobCreate, JobUpdate,
    RecordPage, SessionDocuments, SessionGuard, SessionUpdate, Store, StoreError, UpdateJob,
    UpdateSession,
};
use tokio::sync::{mpsc, oneshot};

mod accounts;
mod chats;
mod documents;
mod jobs;
mod records;
mod schema;
mod sessions;

/// How many waiting writes one transaction may carry.
const MAX_BATCH: usize = 512;

type Reply = Box<dyn FnOnce(Option<StoreError>) + Send>;
/// A queued write: given the connection inside an open transaction (or the reason there is
/// none), it runs and returns how to answer once the commit's outcome is known.
type WriteJob = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Reply + Send>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

enum WriteMsg {
    Job(WriteJob),
    Shutdown(oneshot::Sender<()>),
}

enum ReadMsg {
    Job(ReadJob),
    Shutdown,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Number of read connections (and threads).
    pub readers: usize,
    /// `synchronous=FULL` (the default) fsyncs the WAL on every commit; `NORMAL` is only for
    /// benchmarks that want to see the cost of durability.
    pub synchronous_full: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            synchronous_full: true,
        }
    }
}

pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<WriteMsg>,
    readers: flume::Sender<ReadMsg>,
    reader_count: usize,
    /// Read connections used on the caller's own thread for point reads (no thread hand-off).
    inline: Mutex<Vec<Connection>>,
    checkpointer: flume::Sender<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// Past this many WAL frames the writer restarts the WAL itself between two batches (a
/// background checkpoint can never catch up with a writer that never pauses, so the WAL would
/// only grow).
const WAL_RESTART_FRAMES: u64 = 8192;

/// Checkpoints from its own connection, so that copying pages into the database file (and its
/// fsync) never runs inside a commit that requests are waiting on. PASSIVE never blocks the
/// writer or readers; the WAL restarts from the beginning once it has been fully copied.
fn checkpointer_loop(conn: Connection, stop: flume::Receiver<()>, frames: Arc<AtomicU64>) {
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(flume::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        // (busy, frames in the WAL, frames copied)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(n) => frames.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "background checkpoint failed"),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store is shut down".into())
}

fn configure(conn: &Connection, opts: &SqliteOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if opts.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Point reads on the caller's thread at once (about the number of runtime threads).
const INLINE_READERS: usize = 4;

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(internal)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(internal)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, runs migrations and starts the threads.
    /// The schema version this build migrates to (`PRAGMA user_version`).
    pub fn schema_version() -> i32 {
        schema::latest()
    }

    pub fn open(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        configure(&conn, &opts).map_err(internal)?;
        schema::migrate(&mut conn)?;
        // Commits never checkpoint; the checkpointer thread does (see `checkpointer_loop`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(internal)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(internal)?;
        // The page cache stays at SQLite's 2 MiB: 8 MiB measured no faster here and cost 8 MiB
        // of resident memory (the 1,000,000-session memory target is < 60 MB).

        let mut threads = Vec::new();
        let checkpoint_conn = Connection::open(&path).map_err(internal)?;
        configure(&checkpoint_conn, &opts).map_err(internal)?;
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let frames = Arc::new(AtomicU64::new(0));
        threads.push(
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn({
                    let frames = frames.clone();
                    move || checkpointer_loop(checkpoint_conn, stop_rx, frames)
                })
                .map_err(internal)?,
        );
        let (wtx, wrx) = mpsc::channel::<WriteMsg>(4096);
        threads.push(
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer_loop(conn, wrx, frames))
                .map_err(internal)?,
        );

        let readers = opts.readers.max(1);
        let mut inline = Vec::new();
        for _ in 0..INLINE_READERS {
            inline.push(open_reader(&path)?);
        }
        let (rtx, rrx) = flume::unbounded::<ReadMsg>();
        for i in 0..readers {
            let conn = Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(internal)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(internal)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(internal)?;
            let rx = rrx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sqlite-reader-{i}"))
                    .spawn(move || {
                        while let Ok(ReadMsg::Job(job)) = rx.recv() {
                            job(&conn);
                        }
                    })
                    .map_err(internal)?,
            );
        }
        Ok(Self {
            path,
            writer: wtx,
            readers: rtx,
            reader_count: readers,
            inline: Mutex::new(inline),
            checkpointer: stop_tx,
            threads: Mutex::new(threads),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside the next group-commit transaction; answers after the commit.
    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let result = conn.and_then(|conn| in_savepoint(conn, f));
            Box::new(move |commit_error| {
                let _ = tx.send(match commit_error {
                    Some(e) => Err(e),
                    None => result,
                });
            })
        });
        self.writer
            .send(WriteMsg::Job(job))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Runs a short point read (an index lookup or two) on the calling thread. Handing such a
    /// read to a reader thread and back costs more than the read itself; longer reads (lists,
    /// searches) go through [`SqliteStore::read`] so they never hold up the async runtime.
    async fn read_point<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = self.inline.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match conn {
            Some(conn) => {
                let result = f(&conn);
                self.inline
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                result
            }
            // All in use (more concurrent point reads than runtime threads): use the pool.
            None => self.read(f).await,
        }
    }

    /// Runs `f` on a read connection.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.readers
            .send(ReadMsg::Job(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            })))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// Runs a statement without parameters from the statement cache (these run for every request;
/// `execute_batch` would parse them each time).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs one request in a savepoint: its writes are undone if it fails, its neighbours' are kept.
fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    exec_cached(conn, "SAVEPOINT req").map_err(internal)?;
    // A panic in one request must not take the writer thread (and every later write) with it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Internal("a write panicked".into())));
    let end = match &result {
        Ok(_) => exec_cached(conn, "RELEASE req"),
        Err(_) => {
            exec_cached(conn, "ROLLBACK TO req").and_then(|()| exec_cached(conn, "RELEASE req"))
        }
    };
    match (result, end) {
        (Ok(r), Ok(())) => Ok(r),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(internal(e)),
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<WriteMsg>, wal_frames: Arc<AtomicU64>) {
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    while shutdown.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut jobs = Vec::new();
        match first {
            WriteMsg::Job(j) => jobs.push(j),
            WriteMsg::Shutdown(done) => shutdown = Some(done),
        }
        while shutdown.is_none() && jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(WriteMsg::Job(j)) => jobs.push(j),
                Ok(WriteMsg::Shutdown(done)) => shutdown = Some(done),
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        commit_batch(&conn, jobs);
        if wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
            // Most frames are already copied by the checkpointer: this is the short tail plus
            // the reset.
            match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(1)) {
                Ok(n) => wal_frames.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "WAL restart failed"),
            }
        }
    }
    // Refuse whatever is still queued, then leave a checkpointed database behind.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let WriteMsg::Job(j) = msg {
            drop(j);
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;") {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the write connection failed");
    }
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

fn commit_batch(conn: &Connection, jobs: Vec<WriteJob>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "cannot begin a transaction");
        let err = StoreError::Unavailable(format!("cannot begin a transaction: {e}"));
        for job in jobs {
            job(Err(err.clone()))(None);
        }
        return;
    }
    let replies: Vec<Reply> = jobs.into_iter().map(|job| job(Ok(conn))).collect();
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for reply in replies {
                reply(None);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch = replies.len(), "group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            let err = StoreError::Unavailable(format!("commit failed: {e}"));
            for reply in replies {
                reply(Some(err.clone()));
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
        .await
    }

    async fn shutdown(&self) {
        // Stop background checkpoints first: the writer ends with a full one of its own.
        let _ = self.checkpointer.try_send(());
        // Later point reads fall through to the (closed) pool and fail as unavailable.
        self.inline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let (tx, rx) = oneshot::channel();
        if self.writer.send(WriteMsg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        for _ in 0..self.reader_count {
            let _ = self.readers.send(ReadMsg::Shutdown);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    async fn ensure_account(&self, account: Account) -> Result<(), StoreError> {
        self.write(move |c| accounts::ensure(c, &account)).await
    }

    async fn create_account(&self, account: Account) -> Result<Account, StoreError> {
        self.write(move |c| accounts::create(c, account)).await
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        self.read(move |c| accounts::get(c, id)).await
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError> {
        self.write(move |c| accounts::create_key(c, key)).await
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> Result<Option<ApiKey>, StoreError> {
        self.read_point(move |c| accounts::find_key(c, &hash)).await
    }

    async fn revoke_api_key(&self, id: KeyId, at: Timestamp) -> Result<bool, StoreError> {
        self.write(move |c| accounts::revoke_key(c, id, at)).await
    }

    async fn store_key_seal(&self, key: KeyId, sealed: Vec<u8>) -> Result<(), StoreError> {
        self.write(move |c| accounts::store_seal(c, key, &sealed))
            .await
    }

    async fn key_seals(&self, account: AccountId) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(move |c| accounts::seals(c, account)).await
    }

    async fn insert_session(
        &self,
        session: Session,
        event: Event,
    ) -> Result<InsertSession, StoreError> {
        self.write(move |c| sessions::insert(c, session, event))
            .await
    }

    async fn get_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<Session>, StoreError> {
        let session = session.clone();
        self.read_point(move |c| sessions::get(c, account, &session, true))
            .await
    }

    async fn session_owner(&self, session: SessionId) -> Result<Option<AccountId>, StoreError> {
        self.read(move |c| sessions::owner(c, session)).await
    }

    async fn update_session(
        &self,
        account: AccountId,
        session: &SessionRef,
        update: SessionUpdate,
    ) -> Result<UpdateSession, StoreError> {
        let session = session.clone();
        self.write(move |c| sessions::update(c, account, &session, update))
            .await
    }

    async fn delete_session(
        &self,
        account: AccountId,
        session: &SessionRef,
    ) -> Result<Option<SessionId>, StoreError> {
        let session = session.clone();
        self.write(move |c| sessions::delete(c, account, &session))
            .await
    }

    async fn list_sessions(
        &self,
        account: AccountId,
        query: &SessionQuery,
        include_data: bool,
    ) -> Result<Vec<Session>, StoreError> {
        let query = query.clone();
        self.read(move |c| sessions::list(c, account, &query, include_data))
            .await
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
        let session = session.clone();
        let channel = channel.to_owned();
        self.write(move |c| {
            records::append_guarded(c, account, &session, &channel, records, guard, now)
        })
        .await
    }

    async fn read_records(
        &self,
        session: SessionId,
        channel: &str,
        after: i64,
        limit: usize,
        now: Timestamp,
    ) -> Result<Option<RecordPage>, StoreError> {
        let channel = channel.to_owned();
        self.read_point(move |c| records::read(c, session, &channel, after, limit, now))
            .await
    }

    async fn list_channels(&self, session: SessionId) -> Result<Vec<ChannelInfo>, StoreError> {
        self.read(move |c| records::list_channels(c, session)).await
    }

    async fn create_job(
        &self,
        account: AccountId,
        session: &SessionRef,
        job: Job,
        reuse_since: Option<Timestamp>,
        decide: JobCreate,
    ) -> Result<Option<(Job, Session)>, StoreError> {
        let session = session.clone();
        self.write(move |c| jobs::create(c, account, &session, job, reuse_since, decide))
            .await
    }

    async fn get_job(&self, account: AccountId, id: JobId) -> Result<Option<Job>, StoreError> {
        self.read_point(move |c| jobs::get(c, account, id)).await
    }

    async fn list_jobs(&self, session: SessionId) -> Result<Vec<Job>, StoreError> {
        self.read(move |c| jobs::list(c, session)).await
    }

    async fn update_job(
        &self,
        account: AccountId,
        id: JobId,
        update: JobUpdate,
    ) -> Result<UpdateJob, StoreError> {
        self.write(move |c| jobs::update(c, account, id, update))
            .await
    }

    async fn claim_job(
        &self,
        account: Option<AccountId>,
        types: &[String],
        claim: JobUpdate,
    ) -> Result<Option<(Job, Session)>, StoreError> {
        let types = types.to_vec();
        self.write(move |c| jobs::claim(c, account, &types, claim))
            .await
    }

    async fn expired_leases(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(AccountId, JobId)>, StoreError> {
        self.read(move |c| jobs::expired(c, now, limit)).await
    }

    async fn create_document(
        &self,
        account: AccountId,
        session: &SessionRef,
        upload: DocumentUpload,
        decide: DocumentCreate,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError> {
        let session = session.clone();
        self.write(move |c| documents::create(c, account, &session, upload, decide, docs))
            .await
    }

    async fn get_document(
        &self,
        session: SessionId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        self.read(move |c| documents::get(c, session, id)).await
    }

    async fn find_document(
        &self,
        account: AccountId,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        self.read(move |c| documents::find(c, account, id)).await
    }

    async fn list_documents(&self, session: SessionId) -> Result<Vec<Document>, StoreError> {
        self.read(move |c| documents::list(c, session)).await
    }

    async fn document_content(&self, id: DocumentId) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |c| documents::content(c, id)).await
    }

    async fn list_chunks(&self, id: DocumentId) -> Result<Vec<Chunk>, StoreError> {
        self.read(move |c| documents::list_chunks(c, id)).await
    }

    async fn finish_document(
        &self,
        account: AccountId,
        id: DocumentId,
        outcome: DocumentOutcome,
        settle: DocumentSettle,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, Job)>, StoreError> {
        self.write(move |c| documents::finish(c, account, id, outcome, settle, docs))
            .await
    }

    async fn delete_document(
        &self,
        session: SessionId,
        id: DocumentId,
        describe: DocumentDescribe,
        docs: Option<SessionDocuments>,
    ) -> Result<Option<(Document, i64)>, StoreError> {
        self.write(move |c| documents::delete(c, session, id, describe, docs))
            .await
    }

    async fn search_chunks(
        &self,
        session: SessionId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let query = query.to_owned();
        self.read(move |c| documents::search(c, session, &query, limit))
            .await
    }

    async fn insert_session_with_chat(
        &self,
        session: Session,
        event: Event,
        chat: Chat,
    ) -> Result<InsertSession, StoreError> {
        self.write(move |c| chats::insert_session_with_chat(c, session, event, chat))
            .await
    }

    async fn create_chat(
        &self,
        account: AccountId,
        session: &SessionRef,
        chat: Chat,
        guard: SessionGuard,
    ) -> Result<CreateChat, StoreError> {
        let session = session.clone();
        self.write(move |c| chats::create(c, account, &session, chat, guard))
            .await
    }

    async fn list_chats(
        &self,
        session: SessionId,
        reader: AccountId,
    ) -> Result<Vec<(Chat, Option<Timestamp>)>, StoreError> {
        self.read(move |c| chats::list(c, session, reader)).await
    }

    async fn get_chat(&self, session: SessionId, chat: ChatId) -> Result<Option<Chat>, StoreError> {
        self.read(move |c| chats::get(c, session, chat)).await
    }

    async fn update_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        update: ChatUpdate,
    ) -> Result<Option<Chat>, StoreError> {
        self.write(move |c| chats::update(c, session, chat, update))
            .await
    }

    async fn delete_chat(
        &self,
        session: SessionId,
        chat: ChatId,
        decide: ChatDelete,
    ) -> Result<Option<Chat>, StoreError> {
        self.write(move |c| chats::delete(c, session, chat, decide))
            .await
    }

    async fn append_message(
        &self,
        session: SessionId,
        chat: ChatId,
        message: NewMessage,
        now: Timestamp,
    ) -> Result<Option<(Message, bool)>, StoreError> {
        self.write(move |c| chats::append_message(c, session, chat, message, now))
            .await
    }

    async fn list_messages(&self, chat: ChatId) -> Result<Vec<Message>, StoreError> {
        self.read(move |c| chats::list_messages(c, chat)).await
    }

    async fn mark_chat_read(
        &self,
        session: SessionId,
        chat: ChatId,
        reader: AccountId,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(move |c| chats::mark_read(c, session, chat, reader, at))
            .await
    }
}
