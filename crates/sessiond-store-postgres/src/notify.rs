//! Cluster fan-out: this node's signals go out as `NOTIFY` after the commit (never inside a data
//! transaction), and one `LISTEN` task per node feeds other nodes' signals into the local Hub.
//!
//! Payloads are compact JSON, `{"n": node, "s": [entry, …]}`, each under 8000 bytes:
//! `["a", session, channel, last_seq]` appended, `["c", session, channel]` channel changed,
//! `["g", session]` changed, `["x", session]` closed, `["d", session]` deleted, `["j"]` job
//! queued, `["w"]` wake everything (signals were lost on the sending side).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sessiond_core::{SessionId, Timestamp};
use sessiond_store::{Hub, Notifier, Remote};
use sqlx::postgres::{PgListener, PgNotification};
use sqlx::PgPool;
use tokio::sync::{watch, Notify};

use crate::{db_err, records};

/// Payloads stay below PostgreSQL's 8000-byte NOTIFY limit with room to spare.
const MAX_PAYLOAD: usize = 7000;
/// Past this many distinct pending signals, they are replaced by one "wake everything".
const MAX_PENDING: usize = 10_000;
/// How often an idle listener checks that its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Appended(SessionId, String),
    ChannelChanged(SessionId, String),
    Changed(SessionId),
    Closed(SessionId),
    Deleted(SessionId),
    JobQueued,
}

#[derive(Default)]
struct Pending {
    items: Vec<Remote>,
    index: HashMap<Key, usize>,
    wake_all: bool,
}

impl Pending {
    fn push(&mut self, signal: Remote) {
        if self.wake_all {
            return;
        }
        let key = match &signal {
            Remote::Appended {
                session, channel, ..
            } => Key::Appended(*session, channel.clone()),
            Remote::ChannelChanged { session, channel } => {
                Key::ChannelChanged(*session, channel.clone())
            }
            Remote::Changed { session } => Key::Changed(*session),
            Remote::Closed { session } => Key::Closed(*session),
            Remote::Deleted { session } => Key::Deleted(*session),
            Remote::JobQueued => Key::JobQueued,
        };
        match self.index.get(&key) {
            Some(&i) => {
                // Coalesce: of several appends to one channel only the newest head matters.
                if let (
                    Some(Remote::Appended { last_seq: old, .. }),
                    Remote::Appended { last_seq: new, .. },
                ) = (self.items.get_mut(i), &signal)
                {
                    *old = (*old).max(*new);
                }
            }
            None => {
                if self.items.len() >= MAX_PENDING {
                    self.items.clear();
                    self.index.clear();
                    self.wake_all = true;
                    return;
                }
                self.index.insert(key, self.items.len());
                self.items.push(signal);
            }
        }
    }

    fn take(&mut self) -> (Vec<Remote>, bool) {
        self.index.clear();
        (
            std::mem::take(&mut self.items),
            std::mem::take(&mut self.wake_all),
        )
    }
}

/// The [`Notifier`] installed in the Hub: queues signals for the sender task, never blocks.
pub(crate) struct Outbox {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Outbox {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        })
    }

    fn take(&self) -> (Vec<Remote>, bool) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn requeue_wake_all(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.items.clear();
        p.index.clear();
        p.wake_all = true;
    }
}

impl Notifier for Outbox {
    fn notify(&self, signal: Remote) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(signal);
        self.wake.notify_one();
    }
}

fn entry(signal: &Remote) -> Value {
    match signal {
        Remote::Appended {
            session,
            channel,
            last_seq,
        } => json!(["a", session.to_string(), channel, last_seq]),
        Remote::ChannelChanged { session, channel } => {
            json!(["c", session.to_string(), channel])
        }
        Remote::Changed { session } => json!(["g", session.to_string()]),
        Remote::Closed { session } => json!(["x", session.to_string()]),
        Remote::Deleted { session } => json!(["d", session.to_string()]),
        Remote::JobQueued => json!(["j"]),
    }
}

/// Packs signals into as few payloads as fit under [`MAX_PAYLOAD`] bytes.
pub(crate) fn encode(node: &str, signals: &[Remote], wake_all: bool) -> Vec<String> {
    let head = format!("{{\"n\":{},\"s\":[", Value::from(node));
    let mut out = Vec::new();
    let mut current = head.clone();
    let mut count = 0usize;
    let entries = wake_all
        .then(|| json!(["w"]).to_string())
        .into_iter()
        .chain(signals.iter().map(|s| entry(s).to_string()));
    for e in entries {
        if count > 0 && current.len() + e.len() + 3 > MAX_PAYLOAD {
            current.push_str("]}");
            out.push(std::mem::replace(&mut current, head.clone()));
            count = 0;
        }
        if count > 0 {
            current.push(',');
        }
        current.push_str(&e);
        count += 1;
    }
    if count > 0 {
        current.push_str("]}");
        out.push(current);
    }
    out
}

/// What a payload from another node asks of the local Hub.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    Signal(Remote),
    WakeAll,
}

/// Decodes a payload; `None` for this node's own (or unreadable) payloads.
pub(crate) fn decode(own_node: &str, payload: &str) -> Option<Vec<Incoming>> {
    let v: Value = serde_json::from_str(payload).ok()?;
    if v.get("n")?.as_str()? == own_node {
        return None;
    }
    let mut out = Vec::new();
    for e in v.get("s")?.as_array()? {
        let Some(parts) = e.as_array() else { continue };
        let tag = parts.first().and_then(Value::as_str);
        let session = || {
            parts
                .get(1)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<SessionId>().ok())
        };
        let channel = || parts.get(2).and_then(Value::as_str).map(str::to_owned);
        let signal = match tag {
            Some("a") => match (session(), channel(), parts.get(3).and_then(Value::as_i64)) {
                (Some(session), Some(channel), Some(last_seq)) => Remote::Appended {
                    session,
                    channel,
                    last_seq,
                },
                _ => continue,
            },
            Some("c") => match (session(), channel()) {
                (Some(session), Some(channel)) => Remote::ChannelChanged { session, channel },
                _ => continue,
            },
            Some("g") => match session() {
                Some(session) => Remote::Changed { session },
                None => continue,
            },
            Some("x") => match session() {
                Some(session) => Remote::Closed { session },
                None => continue,
            },
            Some("d") => match session() {
                Some(session) => Remote::Deleted { session },
                None => continue,
            },
            Some("j") => Remote::JobQueued,
            Some("w") => {
                out.push(Incoming::WakeAll);
                continue;
            }
            // A newer node's signal this one does not know: waking everyone is always safe.
            _ => {
                out.push(Incoming::WakeAll);
                continue;
            }
        };
        out.push(Incoming::Signal(signal));
    }
    Some(out)
}

fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

/// Whether the store is shutting down (or was dropped without a shutdown).
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Sends queued signals, coalescing whatever accumulated while the previous send ran. On a
/// failed send the lost signals become one "wake everything", retried until it goes through.
/// At shutdown it sends what is queued once more and ends.
pub(crate) async fn sender_task(
    outbox: Arc<Outbox>,
    pool: PgPool,
    channel: String,
    node: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if !stopping(&stop) {
            tokio::select! {
                _ = outbox.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
        let last = stopping(&stop);
        let (signals, wake_all) = outbox.take();
        let mut failed = false;
        for payload in encode(&node, &signals, wake_all) {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(&payload)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "NOTIFY failed; other nodes will be told to re-read");
                failed = true;
                break;
            }
        }
        if last {
            return;
        }
        if failed {
            outbox.requeue_wake_all();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = next_backoff(backoff);
            outbox.wake.notify_one();
        } else {
            backoff = BACKOFF_MIN;
        }
    }
}

/// Opens a listening connection.
pub(crate) async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is reported (and re-established) by `listener_task`, which must know.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(channel).await?;
    Ok(listener)
}

/// Another node's records are read once per channel here, for every local reader, when this
/// node is at most this many records behind; a longer gap is left to the readers' own paging.
const FILL_MAX: i64 = 256;

fn apply(hub: &Arc<Hub>, data: &PgPool, node: &str, n: &PgNotification) {
    let Some(items) = decode(node, n.payload()) else {
        return;
    };
    for item in items {
        match item {
            Incoming::Signal(Remote::Appended {
                session,
                channel,
                last_seq,
            }) => match hub.remote_gap(session, &channel, last_seq, FILL_MAX) {
                Some(head) => {
                    tokio::spawn(fill(
                        hub.clone(),
                        data.clone(),
                        session,
                        channel,
                        head,
                        last_seq,
                    ));
                }
                None => hub.apply_remote(Remote::Appended {
                    session,
                    channel,
                    last_seq,
                }),
            },
            Incoming::Signal(s) => hub.apply_remote(s),
            Incoming::WakeAll => hub.wake_all(),
        }
    }
}

/// Reads another node's records after `head` and hands them to the hub's readers; if that
/// fails, the readers are sent to storage as for any other remote append.
async fn fill(
    hub: Arc<Hub>,
    pool: PgPool,
    session: SessionId,
    channel: String,
    head: i64,
    last_seq: i64,
) {
    let read = async {
        let mut c = pool.acquire().await.map_err(db_err)?;
        let limit = usize::try_from(FILL_MAX).unwrap_or(1);
        records::read(&mut c, session, &channel, head, limit, Timestamp::now()).await
    };
    match read.await {
        Ok(Some(page)) if !page.records.is_empty() => {
            let records = page.records.into_iter().map(Arc::new).collect();
            hub.remote_records(session, &channel, records);
        }
        _ => hub.apply_remote(Remote::Appended {
            session,
            channel,
            last_seq,
        }),
    }
}

/// Feeds other nodes' signals into the Hub. When the connection is lost it reconnects with
/// backoff and then wakes every local reader: notifications sent meanwhile are gone, so each
/// reader re-reads from its cursor.
pub(crate) async fn listener_task(
    hub: Arc<Hub>,
    data: PgPool,
    pool: PgPool,
    channel: String,
    node: String,
    mut listener: Option<PgListener>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if stopping(&stop) {
            return;
        }
        let mut l = match listener.take() {
            Some(l) => l,
            None => match listen(&pool, &channel).await {
                Ok(l) => {
                    tracing::info!("LISTEN connection re-established; waking every reader");
                    hub.wake_all();
                    backoff = BACKOFF_MIN;
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot re-establish LISTEN");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = next_backoff(backoff);
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                got = l.try_recv() => match got {
                    Ok(Some(n)) => apply(&hub, &data, &node, &n),
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed");
                        break;
                    }
                },
                _ = tokio::time::sleep(PING_EVERY) => {
                    // Re-issuing LISTEN is a no-op that proves the connection alive (and keeps
                    // it recognisable in pg_stat_activity).
                    let sql = format!("LISTEN \"{}\"", channel.replace('"', "\"\""));
                    let ping = tokio::time::timeout(
                        PING_TIMEOUT,
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut l),
                    )
                    .await;
                    if !matches!(ping, Ok(Ok(_))) {
                        tracing::warn!("LISTEN connection is not answering");
                        break;
                    }
                }
            }
        }
        drop(l);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pending_signals_coalesce_and_overflow_to_wake_all() {
        let s = SessionId::random();
        let mut p = Pending::default();
        for seq in [3, 7, 5] {
            p.push(Remote::Appended {
                session: s,
                channel: "in".into(),
                last_seq: seq,
            });
        }
        p.push(Remote::JobQueued);
        p.push(Remote::JobQueued);
        p.push(Remote::Closed { session: s });
        let (items, wake) = p.take();
        assert!(!wake);
        assert_eq!(
            items,
            vec![
                Remote::Appended {
                    session: s,
                    channel: "in".into(),
                    last_seq: 7
                },
                Remote::JobQueued,
                Remote::Closed { session: s },
            ]
        );
        for _ in 0..=MAX_PENDING {
            p.push(Remote::Changed {
                session: SessionId::random(),
            });
        }
        let (items, wake) = p.take();
        assert!(wake && items.is_empty());
        assert!(p.take().0.is_empty());
    }

    #[test]
    fn payloads_round_trip_split_under_the_limit_and_skip_our_own() {
        let signals: Vec<Remote> = (0..500)
            .flat_map(|i| {
                let session = SessionId::random();
                [
                    Remote::Appended {
                        session,
                        channel: format!("ch-{i}"),
                        last_seq: i,
                    },
                    Remote::ChannelChanged {
                        session,
                        channel: "events".into(),
                    },
                    Remote::Changed { session },
                    Remote::Closed { session },
                    Remote::Deleted { session },
                    Remote::JobQueued,
                ]
            })
            .collect();
        let payloads = encode("node-a", &signals, true);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000, "{}", p.len());
            assert!(decode("node-a", p).is_none(), "our own");
            back.extend(decode("node-b", p).unwrap());
        }
        assert_eq!(back[0], Incoming::WakeAll);
        let signals_back: Vec<Remote> = back
            .into_iter()
            .skip(1)
            .map(|i| match i {
                Incoming::Signal(s) => s,
                Incoming::WakeAll => panic!("one wake-all only"),
            })
            .collect();
        assert_eq!(signals_back, signals);
        assert!(encode("n", &[], false).is_empty());
        assert_eq!(
            decode("x", r#"{"n":"y","s":[["zz"],["j"]]}"#).unwrap(),
            vec![Incoming::WakeAll, Incoming::Signal(Remote::JobQueued)]
        );
    }
}
