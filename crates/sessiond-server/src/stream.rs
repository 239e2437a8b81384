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
use sessiond_store::{Hub, Remote, Store};
use tokio_util::sync::CancellationToken;

/// How often a live reader re-reads storage whatever the signals say (unless another reader of
/// the channel on this node did so within the period; see `Subscription::checked_within`).
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
    /// The follower as a stream, polled by the connection that writes the response: no task of
    /// its own and no channel between it and the writer, which matters when one append wakes a
    /// thousand subscribers. It ends when the stream is over (closed, deleted, idle, server
    /// shutting down); dropping it stops it.
    pub fn stream(self) -> impl futures::Stream<Item = Item> + Send + 'static {
        async_stream::stream! {
            let mut sub = self.hub.subscribe(self.session);
            let mut cursor = self.after;
            let mut last_record = tokio::time::Instant::now();
            // The first pass and every safety poll read storage; signals try memory first.
            let mut from_storage = true;
            // One timer for the life of the follower: a sleep created per wake-up would cost a
            // timer insertion and removal for every record delivered to every subscriber. Its
            // first tick is at a random point within one period, so that subscribers that
            // connected together (after a restart, say) do not all poll in the same instant.
            let first = SAFETY_POLL.mul_f64(1.0 - rand::random::<f64>());
            let mut safety_poll =
                tokio::time::interval_at(tokio::time::Instant::now() + first, SAFETY_POLL);
            safety_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Registered once too: a `cancelled()` made per wake-up would lock the server-wide
            // token's waiter list twice per record for every subscriber.
            let shutdown = self.shutdown.clone().cancelled_owned();
            tokio::pin!(shutdown);
            loop {
                let mut closed = false;
                if !from_storage {
                    match sub.fetch(&self.channel, cursor) {
                        Fetch::Records(records) => {
                            if let Some(last) = records.last() {
                                cursor = last.seq;
                                last_record = tokio::time::Instant::now();
                            }
                            yield Item::Records(records);
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
                                // Tell this node's other readers too: they may be skipping
                                // their own safety polls on the strength of this one.
                                self.hub.apply_remote(Remote::Deleted { session: self.session });
                                yield Item::Deleted;
                                return;
                            }
                            Err(e) => {
                                // Keep the stream open through a store outage; retry shortly.
                                tracing::warn!(error = %e, session = %self.session, "stream read failed; retrying");
                                break;
                            }
                        };
                        closed = page.session_closed;
                        if closed && !sub.peek().closed {
                            // Storage knows of a close the hub was not told of (a signal lost
                            // between nodes, or an expiry): wake this node's other readers.
                            self.hub.apply_remote(Remote::Closed { session: self.session });
                        }
                        let full = page.records.len() == PAGE;
                        let records: Vec<Arc<Record>> =
                            page.records.into_iter().map(Arc::new).collect();
                        if let Some(last) = records.last() {
                            cursor = last.seq;
                            last_record = tokio::time::Instant::now();
                        }
                        if !full && cursor >= page.last_seq {
                            // What this reader read may be news to the hub; other readers of
                            // the channel then take it from memory.
                            sub.observe_records(&self.channel, page.last_seq, changes, &records);
                        }
                        if !records.is_empty() {
                            yield Item::Records(records);
                        }
                        if !full {
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
                    yield Item::Closed;
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
                    // Another reader of this node may have just read storage for the channel.
                    _ = safety_poll.tick() => {
                        from_storage = !sub.checked_within(&self.channel, SAFETY_POLL);
                    }
                    _ = idle => return,
                    () = &mut shutdown => return,
                }
            }
        }
    }
}

/// An SSE response made of already rendered frames, with a `: ping` comment every `heartbeat`
/// until `frames` ends. Unlike a keep-alive that restarts its timer after every event, the
/// heartbeat ticks on a fixed schedule, so a busy stream costs no timer work per event.
pub fn sse_response<S>(frames: S, heartbeat: Duration) -> axum::response::Response
where
    S: futures::Stream<Item = bytes::Bytes> + Send + 'static,
{
    use axum::http::header;
    use futures::StreamExt;

    let start = tokio::time::Instant::now() + heartbeat;
    let mut ticks = tokio::time::interval_at(start, heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pings = tokio_stream::wrappers::IntervalStream::new(ticks)
        .map(|_| Some(bytes::Bytes::from_static(b": ping\n\n")));
    // `None` marks the end of the frames, which ends the response (the pings never end).
    let frames = frames
        .map(Some)
        .chain(futures::stream::once(async { None }));
    let body = futures::stream::select(frames, pings)
        .take_while(|f| std::future::ready(f.is_some()))
        .filter_map(std::future::ready)
        .map(Ok::<_, std::convert::Infallible>);
    let mut resp = axum::response::Response::new(axum::body::Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    resp
}

/// Appends one SSE event to `out`. Line breaks in `data` (raw JSON may hold some between
/// tokens) start a new `data:` line, as the SSE format requires; a client joins them back.
pub fn push_sse_event(out: &mut Vec<u8>, id: Option<i64>, event: &str, data: &[u8]) {
    use std::io::Write;
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    let mut open_line = true;
    for piece in data.split_inclusive(|&b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(piece);
        open_line = !matches!(piece.last(), Some(b'\n' | b'\r'));
    }
    if !open_line || data.is_empty() {
        // Empty data, or data ending in a line break: its last (empty) line.
        out.extend_from_slice(b"data: ");
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::push_sse_event;

    fn event(data: &str) -> String {
        let mut out = Vec::new();
        push_sse_event(&mut out, Some(7), "record", data.as_bytes());
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn sse_events_split_data_on_line_breaks() {
        assert_eq!(event("{}"), "id: 7\nevent: record\ndata: {}\n\n");
        assert_eq!(event(""), "id: 7\nevent: record\ndata: \n\n");
        assert_eq!(
            event("{\r\"a\":  \n\r1}"),
            "id: 7\nevent: record\ndata: {\rdata: \"a\":  \ndata: \rdata: 1}\n\n"
        );
        assert_eq!(event("1\n"), "id: 7\nevent: record\ndata: 1\ndata: \n\n");
    }
}
