//! Integration tests of the native API: a real server on a loopback port over a fresh store per
//! test, driven over HTTP. One test binary for the crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod channels;
mod common;
mod concurrency;
mod jobs;
mod ops;
mod recoupable;
mod sessions;
mod tokens;
mod trigger;
