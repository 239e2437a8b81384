//! Versioned migrations, tracked in `PRAGMA user_version`.

use rusqlite::Connection;
use sessiond_store::StoreError;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_jobs.sql"),
    include_str!("../migrations/0003_documents.sql"),
    include_str!("../migrations/0004_chats.sql"),
    include_str!("../migrations/0005_key_seals.sql"),
];

/// The schema version this build migrates to.
pub fn latest() -> i32 {
    MIGRATIONS.len() as i32
}

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let err = |e: rusqlite::Error| StoreError::Internal(format!("migration failed: {e}"));
    let current: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(err)?
        .try_into()
        .unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database is at schema version {current}, newer than this sessiond ({}); upgrade sessiond",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}
