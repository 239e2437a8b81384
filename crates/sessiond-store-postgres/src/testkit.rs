//! Throw-away databases for tests (behind the `testkit` feature).
//!
//! Most tests get a schema of their own, `sessiond_t_<unix seconds>_<random>`, in the database
//! named by a base URL (CI sets `SESSIOND_TEST_DATABASE_URL`), reached through a URL that sets
//! `search_path` to it: creating and dropping a schema is cheap, while `DROP DATABASE` forces a
//! checkpoint. Tests that look at the whole database (its LISTEN connections, its restarts) get
//! a database of their own instead. Schemas and databases of earlier runs older than an hour are
//! dropped the first time a process asks for one, which keeps their number bounded even when
//! tests never clean up after themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use sessiond_store::{Hub, StoreError};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::{db_err, PgOptions, PgStore};

/// The environment variable naming the server tests run against.
pub const TEST_DATABASE_URL_VAR: &str = "SESSIOND_TEST_DATABASE_URL";

const PREFIX: &str = "sessiond_t_";
const MAX_AGE_SECS: u64 = 3600;

static CLEANED: AtomicBool = AtomicBool::new(false);

/// The base URL from the environment, or `None` (with a note on stderr) when it is unset.
pub fn test_database_url() -> Option<String> {
    match std::env::var(TEST_DATABASE_URL_VAR) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            eprintln!(
                "note: {TEST_DATABASE_URL_VAR} is unset; skipping a PostgreSQL test \
                 (e.g. {TEST_DATABASE_URL_VAR}=postgres://postgres@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `url` with its database name replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn admin(url: &str) -> Result<PgConnection, StoreError> {
    PgConnection::connect(url).await.map_err(db_err)
}

/// Drops test schemas and databases older than an hour (once per process).
async fn cleanup(conn: &mut PgConnection) {
    if CLEANED.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = now_secs();
    let stale = |name: &str| {
        name.strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|born| now.saturating_sub(born) > MAX_AGE_SECS)
    };
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in schemas.iter().filter(|n| stale(n)) {
        let _ = drop_schema(conn, name).await;
    }
    let databases: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in databases.iter().filter(|n| stale(n)) {
        let _ = drop_named(conn, name).await;
    }
}

fn fresh_name() -> String {
    format!(
        "{PREFIX}{}_{}",
        now_secs(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The URL parameter that points a connection at a test schema.
const SEARCH_PATH_PARAM: &str = "options=-c%20search_path%3D";

/// `url` with connections' `search_path` set to `schema`.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{SEARCH_PATH_PARAM}{schema}")
}

/// The test schema a URL made by [`with_search_path`] points at.
fn test_schema(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once(SEARCH_PATH_PARAM)?;
    let name = rest.split('&').next()?;
    name.starts_with(PREFIX).then_some(name)
}

async fn drop_schema(conn: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
    )))
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(db_err)
}

/// Creates an empty schema in the database of `base_url`; returns a URL whose connections use
/// it (and only it).
pub async fn fresh_schema(base_url: &str) -> Result<String, StoreError> {
    let mut conn = admin(base_url).await?;
    cleanup(&mut conn).await;
    let name = fresh_name();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
        .execute(&mut conn)
        .await
        .map_err(db_err)?;
    let _ = conn.close().await;
    Ok(with_search_path(base_url, &name))
}

async fn drop_named(conn: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(db_err)
}

/// Creates an empty database on the server of `base_url`; returns its URL.
pub async fn fresh_database(base_url: &str) -> Result<String, StoreError> {
    let mut conn = admin(base_url).await?;
    cleanup(&mut conn).await;
    let name = fresh_name();
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .map_err(db_err)?;
    let _ = conn.close().await;
    Ok(with_database(base_url, &name))
}

/// Drops a database made by [`fresh_database`] (disconnecting its sessions) or a schema made
/// by [`fresh_schema`], given its URL.
pub async fn drop_database(base_url: &str, url: &str) -> Result<(), StoreError> {
    if let Some(schema) = test_schema(url) {
        let mut conn = admin(base_url).await?;
        let r = drop_schema(&mut conn, schema).await;
        let _ = conn.close().await;
        return r;
    }
    let name = url
        .split('?')
        .next()
        .and_then(|b| b.rsplit('/').next())
        .filter(|n| n.starts_with(PREFIX))
        .ok_or_else(|| StoreError::Internal(format!("not a test database: {url}")))?
        .to_owned();
    let mut conn = admin(base_url).await?;
    let r = drop_named(&mut conn, &name).await;
    let _ = conn.close().await;
    r
}

/// A store on a fresh schema of its own, which its `shutdown()` drops again.
pub async fn fresh_store(
    base_url: &str,
    opts: PgOptions,
    hub: Arc<Hub>,
) -> Result<PgStore, StoreError> {
    let url = fresh_schema(base_url).await?;
    let store = PgStore::connect(&url, opts, hub).await?;
    *store.throwaway.lock().unwrap_or_else(|p| p.into_inner()) = Some((base_url.to_owned(), url));
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
