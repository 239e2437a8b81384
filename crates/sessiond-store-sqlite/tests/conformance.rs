//! The store conformance suite against the SQLite backend (a fresh database file per test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sessiond_store::Store;
use sessiond_store_sqlite::{SqliteOptions, SqliteStore};

async fn fresh() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("tempdir");
    // The directory must outlive the store; the OS cleans /tmp.
    let path = dir.keep().join("test.db");
    Arc::new(SqliteStore::open(path, SqliteOptions::default()).expect("open"))
}

sessiond_store::conformance_tests!(fresh());
