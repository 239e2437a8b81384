//! Following a channel live, shared by every surface's SSE endpoint.
//!
//! The follower subscribes to the hub, then reads from the store from its cursor, sends what it
//! found, and waits for the next signal (or the safety poll, which covers a notification lost
//! between nodes). Storage is the source of truth, so catch-up and live delivery can neither
//! skip nor repeat a record.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::channel::Record;
use sessiond_core::{SessionId, Timestamp};
use sessiond_store::hub::Fetch;
use sessiond_store::{Hub, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a live reader re-reads even without a signal.
pub const SAFETY_POLL: Duration = Duration::from_secs(5);
/// Records per store read while catching up.
const PAGE: usize = 500;

/// What a follower yields.
#[derive(Debug)]
pub enum Item {
    Records(Vec<Arc<Record>>),
    /// The session is closed and every record has been delivered.
    Closed,
    /// The session was deleted.
    Deleted,
}

pub struct Follow {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    pub session: SessionId,
    pub channel: String,
    pub after: i64,
    /// End with [`Item::Closed`] once the session is closed (the native API does; some compat
    /// surfaces keep reading).
    pub end_on_close: bool,
    /// End after this long without a new record (compat surfaces' `Timeout-Seconds`).
    pub idle_timeout: Option<Duration>,
}

impl Follow {
    /// Starts the follower; items arrive on the returned receiver, which ends when the stream is
    /// over (closed, deleted, idle, server shutting down). Dropping the receiver stops it.
    pub fn spawn(self) -> mpsc::Receiver<Item> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.run(tx));
        rx
    }

    async fn run(self, tx: mpsc::Sender<Item>) {
        let mut sub = self.hub.subscribe(self.session);
        let mut cursor = self.after;
        let mut last_record = tokio::time::Instant::now();
        // The first pass and every safety poll read storage; signals try memory first.
        let mut from_storage = true;
        loop {
            let mut closed = false;
            if !from_storage {
                match sub.fetch(&self.channel, cursor) {
                    Fetch::Records(records) => {
                        if let Some(last) = records.last() {
                            cursor = last.seq;
                            last_record = tokio::time::Instant::now();
                        }
                        if tx.send(Item::Records(records)).await.is_err() {
                            return;
                        }
                    }
                    Fetch::UpToDate => {}
                    Fetch::Storage => from_storage = true,
                }
                closed = sub.current().closed;
            }
            if from_storage {
                loop {
                    let changes = sub.changes();
                    let page = match self
                        .store
                        .read_records(self.session, &self.channel, cursor, PAGE, Timestamp::now())
                        .await
                    {
                        Ok(Some(p)) => p,
                        Ok(None) => {
                            let _ = tx.send(Item::Deleted).await;
                            return;
                        }
                        Err(e) => {
                            // Keep the stream open through a store outage; retry shortly.
                            tracing::warn!(error = %e, session = %self.session, "stream read failed; retrying");
                            break;
                        }
                    };
                    closed = page.session_closed;
                    let full = page.records.len() == PAGE;
                    if let Some(last) = page.records.last() {
                        cursor = last.seq;
                        last_record = tokio::time::Instant::now();
                        let records = page.records.into_iter().map(Arc::new).collect();
                        if tx.send(Item::Records(records)).await.is_err() {
                            return;
                        }
                    }
                    if !full {
                        if cursor >= page.last_seq {
                            sub.observe_head(&self.channel, page.last_seq, changes);
                        }
                        break;
                    }
                }
            }
            if closed && self.end_on_close {
                // Closing happens after the last append; make sure storage has been read since.
                if !from_storage {
                    from_storage = true;
                    continue;
                }
                let _ = tx.send(Item::Closed).await;
                return;
            }
            let idle = async {
                match self.idle_timeout {
                    Some(t) => tokio::time::sleep_until(last_record + t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                sig = sub.changed() => {
                    from_storage = sig.deleted;
                }
                _ = tokio::time::sleep(SAFETY_POLL) => from_storage = true,
                _ = idle => return,
                _ = tx.closed() => return,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
