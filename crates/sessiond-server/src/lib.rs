//! The sessiond HTTP server: the native `/v1` API, authentication, the service layer that holds
//! the rules, OpenAPI and telemetry. No SQL lives here: storage goes through `sessiond_store::Store`.

pub mod api;
pub mod app;
pub mod auth;
pub mod compat;
pub mod config;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod service;
pub mod stream;
pub mod telemetry;

pub use app::{serve, App, AppOptions};
