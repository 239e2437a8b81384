//! The in-process fan-out of "something changed" signals to live readers (SSE streams and
//! long-polls). A signal carries no data: a woken reader reads from the store from its own
//! cursor, so storage stays the one source of truth and a missed or merged signal can only delay
//! a record, never lose or duplicate it. Backends that span nodes (PostgreSQL) feed the same hub
//! from their notification listener.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sessiond_core::SessionId;
use tokio::sync::watch;

/// What readers of one session can observe. `changes` increases on every signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signal {
    pub changes: u64,
    pub closed: bool,
    pub deleted: bool,
}

#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<SessionId, watch::Sender<Signal>>>,
}

/// A live reader's handle on one session's signals. Dropping it releases the hub's entry once
/// no other reader of the session remains.
pub struct Subscription {
    hub: Arc<Hub>,
    session: SessionId,
    rx: watch::Receiver<Signal>,
}

impl Subscription {
    /// Waits until something changes after the last observed signal; returns the new signal.
    pub async fn changed(&mut self) -> Signal {
        if self.rx.changed().await.is_err() {
            // The sender lives in the hub as long as a subscription does; treat as deleted.
            return Signal {
                deleted: true,
                ..*self.rx.borrow()
            };
        }
        *self.rx.borrow_and_update()
    }

    /// The latest signal, marking it seen.
    pub fn current(&mut self) -> Signal {
        *self.rx.borrow_and_update()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut sessions = self.hub.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = sessions.get(&self.session) {
            // Our own receiver is still alive while we run, hence 1.
            if tx.receiver_count() <= 1 {
                sessions.remove(&self.session);
            }
        }
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Subscribes to a session's signals. Subscribe before reading the backlog, so that an
    /// append committed between the read and the wait still wakes the reader.
    pub fn subscribe(self: &Arc<Self>, session: SessionId) -> Subscription {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let rx = sessions
            .entry(session)
            .or_insert_with(|| watch::channel(Signal::default()).0)
            .subscribe();
        Subscription {
            hub: self.clone(),
            session,
            rx,
        }
    }

    fn signal(&self, session: SessionId, f: impl FnOnce(&mut Signal)) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = sessions.get(&session) {
            tx.send_modify(|s| {
                s.changes += 1;
                f(s);
            });
        }
    }

    /// Records were appended to a channel of the session (or the session changed).
    pub fn changed(&self, session: SessionId) {
        self.signal(session, |_| {});
    }

    pub fn closed(&self, session: SessionId) {
        self.signal(session, |s| s.closed = true);
    }

    pub fn deleted(&self, session: SessionId) {
        self.signal(session, |s| s.deleted = true);
    }

    /// Wakes every reader (a lost notification connection was re-established: anything may have
    /// been missed, so everyone re-reads from its cursor).
    pub fn wake_all(&self) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for tx in sessions.values() {
            tx.send_modify(|s| s.changes += 1);
        }
    }

    /// Number of sessions with live readers (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_reach_subscribers_and_entries_are_released() {
        let hub = Hub::new();
        let s = SessionId::random();
        let mut a = hub.subscribe(s);
        let mut b = hub.subscribe(s);
        hub.changed(s);
        assert_eq!(a.changed().await.changes, 1);
        hub.closed(s);
        let sig = a.changed().await;
        assert!(sig.closed && !sig.deleted);
        // b saw neither yet: one wake-up carries the latest state.
        assert_eq!(
            b.changed().await,
            Signal {
                changes: 2,
                closed: true,
                deleted: false
            }
        );
        drop(a);
        assert_eq!(hub.session_count(), 1);
        drop(b);
        assert_eq!(hub.session_count(), 0);
        // Signals for sessions without readers are dropped.
        hub.changed(s);
        assert_eq!(hub.session_count(), 0);
    }
}
