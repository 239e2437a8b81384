//! Integration tests for sessiond-docs, one binary to keep link time down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chunking;
mod common;
mod detect;
mod metadata;
mod parsers;
