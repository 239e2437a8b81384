//! Versioned migrations, tracked in `sessiond_migrations`.
//!
//! Each migration runs in its own transaction that first takes a transaction-scoped advisory
//! lock, so several nodes starting at once apply every migration exactly once, in order: the
//! others wait on the lock and then find it applied.

use sessiond_store::StoreError;
use sqlx::PgPool;

use crate::db_err;

/// `(version, name, sql)`, in order. Never edit an applied migration: add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "jobs", include_str!("../migrations/0002_jobs.sql")),
    (
        3,
        "documents",
        include_str!("../migrations/0003_documents.sql"),
    ),
    (4, "chats", include_str!("../migrations/0004_chats.sql")),
    (
        5,
        "key_seals",
        include_str!("../migrations/0005_key_seals.sql"),
    ),
];

/// The advisory lock key every node takes while migrating ("sessiond" in ASCII).
const LOCK_KEY: i64 = 0x7365_7373_696f_6e64;

/// The schema version this build expects.
pub fn latest() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Applies every pending migration. Fails when the database is newer than this build.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let err = |e: sqlx::Error| match db_err(e) {
        StoreError::Internal(m) => StoreError::Internal(format!("migration failed: {m}")),
        other => other,
    };
    loop {
        let mut tx = pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS sessiond_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                applied_at  bigint NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        let current: i32 =
            sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM sessiond_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
        if current > latest() {
            return Err(StoreError::Internal(format!(
                "the database is at schema version {current}, newer than this sessiond ({}); upgrade sessiond",
                latest()
            )));
        }
        let Some(&(version, name, sql)) = MIGRATIONS.iter().find(|m| m.0 > current) else {
            tx.commit().await.map_err(err)?;
            return Ok(());
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(err)?;
        sqlx::query(
            "INSERT INTO sessiond_migrations (version, name, applied_at)
             VALUES ($1, $2, (extract(epoch from clock_timestamp()) * 1000)::bigint)",
        )
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        tracing::info!(version, name, "applied migration");
    }
}
