//! Following a channel over SSE, resuming by itself across dropped connections and server
//! restarts.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use reqwest::{Method, Response};
use serde_json::{Map, Value};
use url::Url;

use crate::sse::{SseEvent, SseParser};
use crate::{error_chain, Client, ClientError, Record, Result};

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowFrom {
    /// Records with a seq greater than this one (0: from the beginning).
    After(u64),
    /// Only records appended from now on.
    Latest,
}

impl From<u64> for FollowFrom {
    fn from(seq: u64) -> Self {
        FollowFrom::After(seq)
    }
}

impl std::str::FromStr for FollowFrom {
    type Err = String;

    /// A seq, or `latest`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "latest" {
            return Ok(FollowFrom::Latest);
        }
        s.parse().map(FollowFrom::After).map_err(|_| {
            format!("expected a record seq (a non-negative integer) or latest, got {s:?}")
        })
    }
}

/// What a follower yields.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowEvent {
    Record {
        seq: u64,
        id: String,
        data: Value,
        headers: Map<String, Value>,
        created_at: String,
    },
    /// The session was closed and every record has been yielded; the stream ends.
    Closed,
    /// The session was deleted; the stream ends.
    Deleted,
}

impl From<Record> for FollowEvent {
    fn from(r: Record) -> Self {
        FollowEvent::Record {
            seq: r.seq,
            id: r.id,
            data: r.data,
            headers: r.headers,
            created_at: r.created_at,
        }
    }
}

impl FollowEvent {
    /// The record, for a `Record` event.
    pub fn into_record(self) -> Option<Record> {
        match self {
            FollowEvent::Record {
                seq,
                id,
                data,
                headers,
                created_at,
            } => Some(Record {
                seq,
                id,
                data,
                headers,
                created_at,
            }),
            FollowEvent::Closed | FollowEvent::Deleted => None,
        }
    }
}

/// Passed to the `follow_with` callback before each wait to reconnect.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// Why the previous attempt or connection ended.
    pub error: ClientError,
    /// How long the follower waits before the next attempt.
    pub delay: Duration,
    /// Consecutive failed attempts (1 for the first retry after a connection drops).
    pub attempt: u32,
    /// The seq it resumes after (`None` while `Latest` is not yet resolved).
    pub after: Option<u64>,
}

const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The server sends `: ping` every 15 s, so this much silence means the connection is dead
/// (a half-open TCP connection would otherwise hang forever).
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Exponential backoff: 100 ms, 200 ms, … capped at 5 s; reset after a successful connect.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

/// Transport failures, 5xx, 408 and 429 may succeed later; other answers (404 session gone,
/// 401 token expired, …) will not.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) => true,
        ClientError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        ClientError::Decode(_) | ClientError::InvalidUrl(_) => false,
    }
}

/// A live follower of one channel: a `Stream` of events, also usable with [`Follow::next`]
/// without importing `StreamExt`. Yields each record exactly once, in order, and ends after
/// `Closed`, `Deleted` or a final error. Dropping it closes the connection.
pub struct Follow {
    inner: BoxStream<'static, Result<FollowEvent>>,
}

impl Follow {
    pub async fn next(&mut self) -> Option<Result<FollowEvent>> {
        self.inner.next().await
    }
}

impl Stream for Follow {
    type Item = Result<FollowEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow").finish_non_exhaustive()
    }
}

type OnReconnect = Box<dyn FnMut(&Reconnect) + Send>;

struct Follower {
    client: Client,
    session: String,
    channel: String,
    url: Result<Url>,
    /// The last seq yielded (or the start position); `None` until `Latest` is resolved.
    pos: Option<u64>,
    /// True once a connection has been made, so later ones resume with `Last-Event-ID`.
    resumed: bool,
    resp: Option<Response>,
    parser: SseParser,
    queue: VecDeque<FollowEvent>,
    backoff: Backoff,
    attempt: u32,
    on_reconnect: OnReconnect,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<FollowEvent>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                match &ev {
                    FollowEvent::Record { seq, .. } => self.pos = Some(*seq),
                    FollowEvent::Closed | FollowEvent::Deleted => {
                        self.done = true;
                        self.queue.clear();
                        self.resp = None;
                    }
                }
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            let step = if self.resp.is_some() {
                self.read().await
            } else {
                self.connect().await
            };
            if let Err(error) = step {
                // Whatever the dead connection left half-parsed is sent again after resuming.
                self.resp = None;
                self.parser = SseParser::new();
                if !retryable(&error) {
                    self.done = true;
                    return Some(Err(error));
                }
                self.attempt += 1;
                let delay = self.backoff.next_delay();
                (self.on_reconnect)(&Reconnect {
                    error,
                    delay,
                    attempt: self.attempt,
                    after: self.pos,
                });
                tokio::time::sleep(delay).await;
            }
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let mut url = self.url.clone()?;
        let pos = match self.pos {
            Some(p) => p,
            None => {
                // Resolved once, to a seq, so that a reconnect never skips what was appended
                // while the connection was down.
                let page = self
                    .client
                    .read_page(&self.session, &self.channel, "latest", Some(1), None)
                    .await?;
                self.pos = Some(page.last_seq);
                page.last_seq
            }
        };
        url.query_pairs_mut().append_pair("after", &pos.to_string());
        let mut req = self
            .client
            .request(Method::GET, url.clone())
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if self.resumed {
            req = req.header("last-event-id", pos.to_string());
        }
        let resp = self.client.send(req, &url).await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(ClientError::Decode(format!(
                "expected an event stream from {url}, got content type {content_type:?}"
            )));
        }
        self.resp = Some(resp);
        self.resumed = true;
        self.backoff.reset();
        self.attempt = 0;
        Ok(())
    }

    async fn read(&mut self) -> Result<()> {
        let Some(resp) = self.resp.as_mut() else {
            return Ok(());
        };
        let chunk = match tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()).await {
            Err(_) => {
                return Err(ClientError::Transport(format!(
                    "no data on the event stream for {} s",
                    IDLE_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => {
                return Err(ClientError::Transport(format!(
                    "reading the event stream: {}",
                    error_chain(&e.without_url())
                )))
            }
            Ok(Ok(None)) => {
                return Err(ClientError::Transport(
                    "the event stream ended before the session closed".into(),
                ))
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        let events = self.parser.feed(&chunk).map_err(ClientError::Decode)?;
        for ev in events {
            self.handle(ev)?;
        }
        Ok(())
    }

    fn handle(&mut self, ev: SseEvent) -> Result<()> {
        match ev.event.as_str() {
            "record" => {
                let record: Record = serde_json::from_str(&ev.data).map_err(|e| {
                    ClientError::Decode(format!("a record event is not a record: {e}"))
                })?;
                // The server resumes after `Last-Event-ID`, so this only guards exactly-once
                // against a misbehaving server or proxy.
                let high = self
                    .queue
                    .iter()
                    .rev()
                    .find_map(|e| match e {
                        FollowEvent::Record { seq, .. } => Some(*seq),
                        _ => None,
                    })
                    .or(self.pos)
                    .unwrap_or(0);
                if record.seq > high {
                    self.queue.push_back(record.into());
                }
            }
            "closed" => self.queue.push_back(FollowEvent::Closed),
            "deleted" => self.queue.push_back(FollowEvent::Deleted),
            // Unknown event types are for newer clients.
            _ => {}
        }
        Ok(())
    }
}

impl Client {
    /// Follows a channel live over SSE. See [`Client::follow_with`].
    pub fn follow(&self, session: &str, channel: &str, from: impl Into<FollowFrom>) -> Follow {
        self.follow_with(session, channel, from, |_| {})
    }

    /// Follows a channel live over SSE, calling `on_reconnect` before each wait to reconnect.
    ///
    /// On a transport error, a 5xx or the stream ending without `closed`/`deleted`, it
    /// reconnects with exponential backoff (100 ms doubling to 5 s, reset after a successful
    /// connect), resuming with `Last-Event-ID` after the last record it yielded. Any other error
    /// answer (404, 401, …) is yielded once and ends the stream.
    pub fn follow_with(
        &self,
        session: &str,
        channel: &str,
        from: impl Into<FollowFrom>,
        on_reconnect: impl FnMut(&Reconnect) + Send + 'static,
    ) -> Follow {
        let follower = Follower {
            client: self.clone(),
            session: session.to_owned(),
            channel: channel.to_owned(),
            url: self.url(&["v1", "sessions", session, "channels", channel, "records"]),
            pos: match from.into() {
                FollowFrom::After(n) => Some(n),
                FollowFrom::Latest => None,
            },
            resumed: false,
            resp: None,
            parser: SseParser::new(),
            queue: VecDeque::new(),
            backoff: Backoff::new(),
            attempt: 0,
            on_reconnect: Box::new(on_reconnect),
            done: false,
        };
        let inner = futures::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        })
        .boxed();
        Follow { inner }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_INITIAL);
    }

    #[test]
    fn classifies_errors() {
        let api = |status| ClientError::Api {
            status,
            code: "x".into(),
            message: "x".into(),
        };
        assert!(retryable(&ClientError::Transport("refused".into())));
        assert!(retryable(&api(503)));
        assert!(retryable(&api(429)));
        assert!(!retryable(&api(404)));
        assert!(!retryable(&api(401)));
        assert!(!retryable(&ClientError::Decode("x".into())));
    }

    #[test]
    fn parses_the_start() {
        assert_eq!("latest".parse(), Ok(FollowFrom::Latest));
        assert_eq!("7".parse(), Ok(FollowFrom::After(7)));
        assert!("-1".parse::<FollowFrom>().is_err());
    }

    /// Reads one request head; returns it lowercased.
    async fn read_head(sock: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if sock.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).to_ascii_lowercase()
    }

    fn record(seq: u64) -> String {
        format!(
            "id: {seq}\r\nevent: record\r\ndata: {{\"seq\":{seq},\"id\":\"r{seq}\",\"data\":{{\"n\":{seq}}},\
             \"headers\":{{}},\"createdAt\":\"2024-01-01T00:00:00Z\"}}\r\n\r\n"
        )
    }

    const SSE_HEAD: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

    /// A scripted server: each connection gets the next answer; returns the request heads.
    async fn scripted(answers: Vec<String>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut heads = Vec::new();
            for answer in answers {
                let (mut sock, _) = listener.accept().await.unwrap();
                heads.push(read_head(&mut sock).await);
                sock.write_all(answer.as_bytes()).await.unwrap();
                sock.shutdown().await.unwrap();
            }
            heads
        });
        (url, task)
    }

    async fn collect(mut f: Follow) -> Vec<Result<FollowEvent>> {
        let mut out = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(20), f.next())
            .await
            .expect("follower stalled")
        {
            out.push(item);
        }
        out
    }

    fn seqs(items: &[Result<FollowEvent>]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(FollowEvent::Record { seq, .. }) => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn resumes_after_eof_and_5xx_without_duplicates() {
        let (url, server) = scripted(vec![
            // Drops mid-event: record 3 is incomplete, so it must come again.
            format!(
                "{SSE_HEAD}: ping\r\n\r\n{}{}id: 3\r\nevent: rec",
                record(1),
                record(2)
            ),
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .into(),
            // A server that replays an old record is ignored for it.
            format!(
                "{SSE_HEAD}{}{}{}event: closed\r\ndata: {{}}\r\n\r\n",
                record(2),
                record(3),
                record(4)
            ),
        ])
        .await;
        let notes = Arc::new(Mutex::new(Vec::new()));
        let seen = notes.clone();
        let client = Client::new(&url, None).unwrap();
        let f = client.follow_with("s", "in", 0, move |r| {
            seen.lock().unwrap().push((r.attempt, r.delay, r.after));
        });
        let items = collect(f).await;
        assert_eq!(seqs(&items), [1, 2, 3, 4]);
        assert!(matches!(items.last(), Some(Ok(FollowEvent::Closed))));
        let heads = server.await.unwrap();
        assert!(
            heads[0].contains("/v1/sessions/s/channels/in/records?after=0 "),
            "{}",
            heads[0]
        );
        assert!(heads[0].contains("accept: text/event-stream"));
        assert!(!heads[0].contains("last-event-id"));
        assert!(heads[1].contains("last-event-id: 2\r\n"), "{}", heads[1]);
        assert!(heads[2].contains("last-event-id: 2\r\n"), "{}", heads[2]);
        let ms = Duration::from_millis;
        assert_eq!(
            *notes.lock().unwrap(),
            [(1, ms(100), Some(2)), (2, ms(200), Some(2))]
        );
    }

    #[tokio::test]
    async fn a_4xx_ends_the_stream() {
        let body = r#"{"error":{"code":"session_not_found","message":"gone"}}"#;
        let (url, _server) = scripted(vec![format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )])
        .await;
        let client = Client::new(&url, None).unwrap();
        let items = collect(client.follow("s", "in", 0)).await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].as_ref().unwrap_err().code(),
            Some("session_not_found")
        );
    }

    #[tokio::test]
    async fn latest_is_resolved_to_a_seq_first() {
        let page = r#"{"records":[],"lastSeq":7,"nextAfter":7}"#;
        let (url, server) = scripted(vec![
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            ),
            format!("{SSE_HEAD}{}event: deleted\r\ndata: {{}}\r\n\r\n", record(8)),
        ])
        .await;
        let client = Client::new(&url, None).unwrap();
        let items = collect(client.follow("s", "in", FollowFrom::Latest)).await;
        assert_eq!(seqs(&items), [8]);
        assert!(matches!(items.last(), Some(Ok(FollowEvent::Deleted))));
        let heads = server.await.unwrap();
        assert!(heads[0].contains("after=latest"), "{}", heads[0]);
        assert!(!heads[0].contains("text/event-stream"));
        assert!(heads[1].contains("?after=7 "), "{}", heads[1]);
    }
}
