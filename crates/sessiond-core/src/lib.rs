//! Domain types and pure rules of sessiond. No I/O, no HTTP, no SQL.

pub mod account;
pub mod agent;
pub mod channel;
pub mod chat;
pub mod cursor;
pub mod document;
pub mod error;
pub mod event;
pub mod ids;
pub mod job;
pub mod limits;
pub mod merge_patch;
pub mod session;
pub mod time;

pub use error::{Error, ErrorKind};
pub use ids::{AccountId, KeyId, SessionId};
pub use job::JobId;
pub use time::Timestamp;
