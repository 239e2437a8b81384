//! Integration tests of the native API: a real server on a loopback port over a fresh store per
//! test, driven over HTTP. One test binary for the crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// This binary runs on SQLite unless `SESSIOND_TEST_BACKEND=postgres` (see `api_postgres`).
pub const FORCE_POSTGRES: bool = false;

mod accounts;
mod channels;
mod common;
mod concurrency;
mod documents;
mod jobs;
mod midpilot;
mod ops;
mod recoupable;
mod sessions;
mod tokens;
mod trigger;
