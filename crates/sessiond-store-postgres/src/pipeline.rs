//! Point reads over a few long-lived connections that every request shares (tokio-postgres).
//!
//! Concurrent queries on one of these connections are pipelined: written back to back and
//! answered in order, so the database takes many of them per wakeup, and no request checks a
//! connection out of the pool (which also costs a second round trip: the pool pings every
//! connection it takes back). Only single statements that need no transaction come here.
//!
//! This path can only make reads cheaper, never fail them: when its connections cannot be
//! opened (the database is down, or the password is only in `~/.pgpass`, which this driver does
//! not read) or one is lost mid-query, the read goes through the pool as before.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond_core::ids::SessionRef;
use sessiond_core::session::Session;
use sessiond_core::AccountId;
use sessiond_store::StoreError;
use sqlx::postgres::PgConnectOptions;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::sessions::{self, Lock, SessionColumns};
use crate::{internal, is_transient};

/// After a failed connect a slot waits this long before trying again (reads use the pool).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many shared connections: one per core keeps every database core busy; more only
/// splits the same pipelines.
fn slot_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

pub(crate) struct Pipeline {
    config: tokio_postgres::Config,
    slots: Vec<Slot>,
    next: AtomicUsize,
    /// Set at shutdown: no connection is opened again.
    closed: AtomicBool,
}

#[derive(Default)]
struct Slot {
    live: Mutex<Option<Arc<Conn>>>,
    /// Held by the one read that reconnects; holds the time of the last failed attempt.
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

struct Conn {
    client: Client,
    /// Its prepared statements no longer match the schema (another node migrated it): the
    /// connection is replaced rather than used again.
    stale: AtomicBool,
    /// [`sessions::get_sql`], at [`Conn::session_index`].
    session: Vec<Statement>,
}

impl Pipeline {
    /// The same database, user and settings as the pool's `options`; connects lazily.
    pub(crate) fn new(url: &str, options: &PgConnectOptions, connect_timeout: Duration) -> Self {
        let mut config = tokio_postgres::Config::new();
        match options.get_socket() {
            #[cfg(unix)]
            Some(dir) => config.host_path(dir),
            _ => config.host(options.get_host()),
        };
        config
            .port(options.get_port())
            .user(options.get_username())
            .application_name(options.get_application_name().unwrap_or("sessiond"))
            .connect_timeout(connect_timeout);
        if let Some(db) = options.get_database() {
            config.dbname(db);
        }
        if let Some(o) = options.get_options() {
            config.options(o);
        }
        // sqlx keeps the password to itself; read it from the URL (or the usual variable). The
        // URL may carry parameters only sqlx knows, which this parser refuses: then its part
        // before the query still has the user's password.
        let base = url.split_once('?').map_or(url, |(base, _)| base);
        let password = [url, base]
            .iter()
            .find_map(|u| u.parse::<tokio_postgres::Config>().ok())
            .and_then(|c| c.get_password().map(<[u8]>::to_vec))
            .or_else(|| std::env::var("PGPASSWORD").ok().map(String::into_bytes));
        if let Some(p) = password {
            config.password(p);
        }
        Self {
            config,
            slots: (0..slot_count()).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// One session of `account` (its `data` left empty unless `with_data`), or `None` when
    /// this path cannot serve the read right now.
    pub(crate) async fn get_session(
        &self,
        account: AccountId,
        r: &SessionRef,
        with_data: bool,
    ) -> Option<Result<Option<Session>, StoreError>> {
        let conn = self.conn().await?;
        let statement = &conn.session[Conn::session_index(r, with_data)];
        let row = match r {
            SessionRef::Id(id) => conn.query(statement, &[&account.0, &id.0]).await,
            SessionRef::External(e) => conn.query(statement, &[&account.0, &e.as_str()]).await,
        }?;
        Some(row.and_then(|row| row.as_ref().map(sessions::session_row).transpose()))
    }

    /// Drops every connection (shutdown).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.slots {
            slot.take();
        }
    }

    /// The next live connection, round robin. A lost one is reopened by the first read that
    /// finds it gone (unless that failed within [`RETRY_AFTER`]); reads arriving meanwhile use
    /// the pool rather than wait for the connect.
    async fn conn(&self) -> Option<Arc<Conn>> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(conn) = slot.current() {
            return Some(conn);
        }
        let Ok(mut last_failure) = slot.connecting.try_lock() else {
            return None;
        };
        if let Some(conn) = slot.current() {
            return Some(conn); // another request reconnected it meanwhile
        }
        if self.closed.load(Ordering::Acquire)
            || last_failure.is_some_and(|at| at.elapsed() < RETRY_AFTER)
        {
            return None;
        }
        match Conn::open(&self.config).await {
            Ok(_) if self.closed.load(Ordering::Acquire) => None,
            Ok(conn) => {
                let conn = Arc::new(conn);
                *slot.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                if last_failure.take().is_some() {
                    tracing::info!("point-read connection open again");
                }
                Some(conn)
            }
            Err(e) => {
                // Said once per outage, not once per retry.
                if last_failure.is_none() {
                    tracing::warn!(error = %e, "cannot open a point-read connection; reads use the pool until it opens");
                }
                *last_failure = Some(Instant::now());
                None
            }
        }
    }
}

impl Slot {
    fn current(&self) -> Option<Arc<Conn>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match &*live {
            Some(conn) if !conn.client.is_closed() && !conn.stale.load(Ordering::Relaxed) => {
                Some(conn.clone())
            }
            Some(_) => {
                *live = None;
                None
            }
            None => None,
        }
    }

    fn take(&self) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Conn {
    async fn open(config: &tokio_postgres::Config) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        // Drives the socket; ends when the client is dropped or the connection is lost.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "point-read connection ended");
            }
        });
        let mut session = Vec::with_capacity(4);
        for by_external in [false, true] {
            for with_data in [false, true] {
                let sql = sessions::get_sql(by_external, with_data, Lock::None);
                session.push(client.prepare(&sql).await?);
            }
        }
        Ok(Conn {
            client,
            stale: AtomicBool::new(false),
            session,
        })
    }

    fn session_index(r: &SessionRef, with_data: bool) -> usize {
        2 * usize::from(matches!(r, SessionRef::External(_))) + usize::from(with_data)
    }

    /// At most one row; `None` when the connection is lost or the database cannot serve it
    /// on this connection right now (the caller uses the pool, which maps such errors itself).
    async fn query(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Option<Result<Option<Row>, StoreError>> {
        match self.client.query_opt(statement, params).await {
            Ok(row) => Some(Ok(row)),
            Err(e) => match e.code() {
                // "cached plan must not change result type": re-prepare on a new connection.
                Some(code) if *code == SqlState::FEATURE_NOT_SUPPORTED => {
                    self.stale.store(true, Ordering::Relaxed);
                    None
                }
                // The server's own message: this driver's `Display` says only "db error".
                Some(code) if !is_transient(code.code()) => Some(Err(internal(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), ToString::to_string),
                ))),
                _ => {
                    tracing::debug!(error = %e, "point read failed; using the pool");
                    None
                }
            },
        }
    }
}

impl SessionColumns for Row {
    fn uuid(&self, i: usize) -> Result<uuid::Uuid, StoreError> {
        self.try_get(i).map_err(internal)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.try_get(i).map_err(internal)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.try_get(i).map_err(internal)
    }
    fn texts(&self, i: usize) -> Result<Vec<String>, StoreError> {
        self.try_get(i).map_err(internal)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.try_get(i).map_err(internal)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(i).map_err(internal)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::str::FromStr;

    use tokio_postgres::config::Host;

    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        let options = PgConnectOptions::from_str(url).unwrap();
        Pipeline::new(url, &options, Duration::from_secs(1)).config
    }

    #[test]
    fn takes_the_pool_settings_and_the_password_even_past_parameters_only_sqlx_knows() {
        let c = config(
            "postgres://app:s%40cret@db.internal:6543/sessions?statement-cache-capacity=10\
             &options=-c%20search_path%3Dt1",
        );
        assert_eq!(c.get_password(), Some(&b"s@cret"[..]));
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_dbname(), Some("sessions"));
        assert_eq!(c.get_hosts(), [Host::Tcp("db.internal".into())]);
        assert_eq!(c.get_ports(), [6543]);
        assert_eq!(c.get_options(), Some("-c search_path=t1"));
    }

    #[test]
    fn a_socket_url_connects_over_the_socket() {
        let c = config("postgres://postgres@localhost/db?host=/var/run/postgresql");
        assert_eq!(c.get_hosts(), [Host::Unix("/var/run/postgresql".into())]);
        assert_eq!(c.get_user(), Some("postgres"));
    }
}
