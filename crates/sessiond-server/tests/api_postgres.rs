//! The native API integration tests (`tests/api/`) again, on PostgreSQL: a fresh database per
//! test server on the server `SESSIOND_TEST_DATABASE_URL` names. Without that variable (when
//! this crate is built: see `build.rs`) the binary holds one test that prints a note.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// `tests/api/common.rs` reads this: every server in this binary runs on PostgreSQL.
pub const FORCE_POSTGRES: bool = true;

#[cfg(sessiond_test_postgres)]
#[path = "api/accounts.rs"]
mod accounts;
#[cfg(sessiond_test_postgres)]
#[path = "api/channels.rs"]
mod channels;
#[cfg(sessiond_test_postgres)]
#[path = "api/common.rs"]
mod common;
#[cfg(sessiond_test_postgres)]
#[path = "api/concurrency.rs"]
mod concurrency;
#[cfg(sessiond_test_postgres)]
#[path = "api/documents.rs"]
mod documents;
#[cfg(sessiond_test_postgres)]
#[path = "api/jobs.rs"]
mod jobs;
#[cfg(sessiond_test_postgres)]
#[path = "api/midpilot.rs"]
mod midpilot;
#[cfg(sessiond_test_postgres)]
#[path = "api/ops.rs"]
mod ops;
#[cfg(sessiond_test_postgres)]
#[path = "api/recoupable.rs"]
mod recoupable;
#[cfg(sessiond_test_postgres)]
#[path = "api/sessions.rs"]
mod sessions;
#[cfg(sessiond_test_postgres)]
#[path = "api/tokens.rs"]
mod tokens;
#[cfg(sessiond_test_postgres)]
#[path = "api/trigger.rs"]
mod trigger;

#[cfg(not(sessiond_test_postgres))]
#[test]
fn skipped_without_a_database_url() {
    eprintln!(
        "note: SESSIOND_TEST_DATABASE_URL was unset when this crate was built; the API suite \
         did not run on PostgreSQL (e.g. SESSIOND_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test)"
    );
}
