//! The closed-loop load engine: one HTTP/1.1 keep-alive connection per worker, each worker sends
//! its next request when the previous answer has arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::report::new_histogram;
use crate::target::Target;

/// Bounds a hung server: the request counts as an error and the connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed connect so a dead server does not turn into a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
/// How much of an error body to keep for the report.
const ERROR_BODY_CHARS: usize = 400;

const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";

/// What each request looks like.
pub enum Workload {
    /// `GET /healthz`.
    Health { uri: Uri },
    /// `POST /v1/sessions`, body from [`create_body`].
    Create { uri: Uri },
    /// `POST /v1/sessions` for the list/memory data set, body from [`seed_body`].
    SeedList { uri: Uri },
    /// `POST /v1/sessions` for the get/patch pool; the new ids are collected.
    SeedPool { uri: Uri },
    /// `GET /v1/sessions/{id}` on random pool members.
    Get { uris: Arc<Vec<Uri>> },
    /// `PATCH /v1/sessions/{id}` on random pool members.
    Patch { uris: Arc<Vec<Uri>> },
    /// Alternating list pages.
    List { uris: [Uri; 2] },
    /// `POST /v1/sessions/{id}/channels/in/records` with `batch` records from
    /// [`append_body`]; worker `w` appends to `uris[w % len]` (one URI = one shared channel).
    Append { uris: Arc<Vec<Uri>>, batch: u32 },
}

impl Workload {
    fn collects_ids(&self) -> bool {
        matches!(self, Workload::SeedPool { .. })
    }

    fn request(
        &self,
        target: &Target,
        seq: u64,
        wid: u64,
        rng: &mut XorShift,
    ) -> Request<Full<Bytes>> {
        let (method, uri, body) = match self {
            Workload::Health { uri } => (Method::GET, uri.clone(), None),
            Workload::Create { uri } => (Method::POST, uri.clone(), Some((JSON, create_body(seq)))),
            Workload::SeedList { uri } => (Method::POST, uri.clone(), Some((JSON, seed_body(seq)))),
            Workload::SeedPool { uri } => (Method::POST, uri.clone(), Some((JSON, pool_body(seq)))),
            Workload::Get { uris } => (Method::GET, pick(uris, rng), None),
            Workload::Patch { uris } => (
                Method::PATCH,
                pick(uris, rng),
                Some((MERGE_PATCH, patch_body(seq))),
            ),
            Workload::List { uris } => (Method::GET, uris[(seq % 2) as usize].clone(), None),
            Workload::Append { uris, batch } => (
                Method::POST,
                by_worker(uris, wid),
                Some((JSON, append_body(seq, *batch))),
            ),
        };
        let (ctype, bytes) = match body {
            Some((ctype, bytes)) => (Some(ctype), bytes),
            None => (None, Bytes::new()),
        };
        // Built by hand rather than via the fallible builder: every part is already validated.
        let mut req = Request::new(Full::new(bytes));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.insert(HOST, target.host_header.clone());
        if let Some(auth) = &target.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if let Some(ctype) = ctype {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        }
        req
    }
}

fn pick(uris: &[Uri], rng: &mut XorShift) -> Uri {
    // Callers guarantee a non-empty pool; the modulo keeps this total anyway.
    let i = (rng.next() % uris.len().max(1) as u64) as usize;
    uris.get(i).cloned().unwrap_or_default()
}

fn by_worker(uris: &[Uri], wid: u64) -> Uri {
    let i = (wid % uris.len().max(1) as u64) as usize;
    uris.get(i).cloned().unwrap_or_default()
}

/// About 100 bytes of filler so that a record is the size of a small real message.
pub const PAD: &str =
    "sessiond-bench-padding-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789-abcdefghijklmnopqrstuvwxyz";

/// `{"records":[{"data":{"n":…,"pad":"…"}}, …]}` with `batch` records numbered from `seq * batch`.
pub fn append_body(seq: u64, batch: u32) -> Bytes {
    let batch = u64::from(batch.max(1));
    let mut s = String::with_capacity(16 + batch as usize * (PAD.len() + 40));
    s.push_str(r#"{"records":["#);
    for j in 0..batch {
        if j > 0 {
            s.push(',');
        }
        let n = seq.wrapping_mul(batch).wrapping_add(j);
        s.push_str(&format!(r#"{{"data":{{"n":{n},"pad":"{PAD}"}}}}"#));
    }
    s.push_str("]}");
    Bytes::from(s)
}

pub fn create_body(i: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"type":"bench","tags":["t{}"],"metadata":{{"k":"v{}"}},"data":{{"n":{i}}}}}"#,
        i % 8,
        i % 4
    ))
}

/// Types alternate; the tag follows `i / 2` so that each type carries every tag t0..t7 (with
/// `i % 8`, `bench-a` would only ever get even tags and the `tag=t3` page would be empty).
pub fn seed_body(i: u64) -> Bytes {
    let ty = ["bench-a", "bench-b"][(i % 2) as usize];
    Bytes::from(format!(
        r#"{{"type":"{ty}","tags":["t{}"],"metadata":{{"k":"v{}"}},"data":{{"n":{i}}}}}"#,
        (i / 2) % 8,
        i % 4
    ))
}

fn pool_body(i: u64) -> Bytes {
    Bytes::from(format!(r#"{{"type":"bench-pool","data":{{"n":{i}}}}}"#))
}

fn patch_body(n: u64) -> Bytes {
    Bytes::from(format!(r#"{{"data":{{"n":{n}}}}}"#))
}

/// When the loop stops.
pub enum Bound {
    /// Run until `end`; only requests that start after `record_from` and finish by `end` count.
    Time {
        record_from: Instant,
        end: Instant,
        seq: AtomicU64,
    },
    /// Hand out `total` tickets; used for seeding.
    Count {
        total: u64,
        next: AtomicU64,
        /// Successful requests so far, for progress lines.
        done: AtomicU64,
        errors: AtomicU64,
        /// Errors tolerated before seeding gives up.
        error_budget: u64,
        /// Print a progress line every this many successes (0 = never).
        progress_every: u64,
        started: Instant,
        abort: AtomicBool,
    },
}

impl Bound {
    pub fn time(warmup: Duration, duration: Duration) -> Self {
        let now = Instant::now();
        Bound::Time {
            record_from: now + warmup,
            end: now + warmup + duration,
            seq: AtomicU64::new(0),
        }
    }

    pub fn count(total: u64, first: u64, progress_every: u64) -> Self {
        Bound::Count {
            total: first + total,
            next: AtomicU64::new(first),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_budget: (total / 100).max(100),
            progress_every,
            started: Instant::now(),
            abort: AtomicBool::new(false),
        }
    }

    /// Did seeding stop early because too many requests failed?
    pub fn aborted(&self) -> bool {
        matches!(self, Bound::Count { abort, .. } if abort.load(Ordering::Relaxed))
    }

    /// Successful requests of a count-bounded run.
    pub fn done(&self) -> u64 {
        match self {
            Bound::Count { done, .. } => done.load(Ordering::Relaxed),
            Bound::Time { .. } => 0,
        }
    }

    fn next_ticket(&self) -> Option<u64> {
        match self {
            Bound::Time { end, seq, .. } => {
                (Instant::now() < *end).then(|| seq.fetch_add(1, Ordering::Relaxed))
            }
            Bound::Count {
                total, next, abort, ..
            } => {
                if abort.load(Ordering::Relaxed) {
                    return None;
                }
                let t = next.fetch_add(1, Ordering::Relaxed);
                (t < *total).then_some(t)
            }
        }
    }

    fn counts(&self, start: Instant, finish: Instant) -> bool {
        match self {
            Bound::Time {
                record_from, end, ..
            } => start >= *record_from && finish <= *end,
            Bound::Count { .. } => true,
        }
    }

    fn finished(&self, ok: bool) {
        let Bound::Count {
            done,
            errors,
            error_budget,
            progress_every,
            started,
            abort,
            ..
        } = self
        else {
            return;
        };
        if !ok {
            // A seeding run that mostly fails is pointless; stop instead of grinding through it.
            if errors.fetch_add(1, Ordering::Relaxed) + 1 > *error_budget {
                abort.store(true, Ordering::Relaxed);
            }
            return;
        }
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if *progress_every > 0 && d % progress_every == 0 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  seeded {d} in {secs:.1} s ({:.0}/s)",
                d as f64 / secs.max(1e-9)
            );
        }
    }
}

/// Everything the workers measured, merged.
pub struct Outcome {
    pub hist: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Ids of created sessions (only for [`Workload::SeedPool`]).
    pub ids: Vec<String>,
    pub wall: Duration,
    /// Successful (2xx) answers, warm-up and uncounted ones included: what the server
    /// acknowledged, for integrity checks.
    pub acked: u64,
}

struct WorkerOut {
    hist: Histogram<u64>,
    errors: u64,
    acked: u64,
    first_error: Option<(Instant, String)>,
    ids: Vec<String>,
}

impl WorkerOut {
    fn error(&mut self, counted: bool, what: impl FnOnce() -> String) {
        if counted {
            self.errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some((Instant::now(), what()));
        }
    }
}

pub async fn run(
    target: Arc<Target>,
    workload: Arc<Workload>,
    bound: Arc<Bound>,
    concurrency: usize,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut handles = Vec::with_capacity(concurrency);
    for wid in 0..concurrency {
        let (t, w, b) = (
            Arc::clone(&target),
            Arc::clone(&workload),
            Arc::clone(&bound),
        );
        handles.push(tokio::spawn(worker(t, w, b, wid as u64)));
    }
    let mut hist = new_histogram()?;
    let mut errors = 0;
    let mut first: Option<(Instant, String)> = None;
    let mut ids = Vec::new();
    let mut acked = 0;
    for h in handles {
        let out = h.await.context("load worker panicked")??;
        hist.add(&out.hist).context("merging histograms")?;
        errors += out.errors;
        acked += out.acked;
        ids.extend(out.ids);
        if let Some((at, msg)) = out.first_error {
            if first.as_ref().is_none_or(|(f, _)| at < *f) {
                first = Some((at, msg));
            }
        }
    }
    Ok(Outcome {
        hist,
        errors,
        first_error: first.map(|(_, m)| m),
        ids,
        wall: started.elapsed(),
        acked,
    })
}

async fn worker(
    target: Arc<Target>,
    workload: Arc<Workload>,
    bound: Arc<Bound>,
    wid: u64,
) -> Result<WorkerOut> {
    let mut out = WorkerOut {
        hist: new_histogram()?,
        errors: 0,
        acked: 0,
        first_error: None,
        ids: Vec::new(),
    };
    let mut rng = XorShift::new(wid);
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let collect_ids = workload.collects_ids();

    while let Some(seq) = bound.next_ticket() {
        let sender = match conn.as_mut() {
            Some(s) => s,
            None => match connect(target.addr).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    let now = Instant::now();
                    out.error(bound.counts(now, now), || {
                        format!("connect to {}: {e:#}", target.addr)
                    });
                    bound.finished(false);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let req = workload.request(&target, seq, wid, &mut rng);
        let t0 = Instant::now();
        let res = tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, req)).await;
        let t1 = Instant::now();
        let counted = bound.counts(t0, t1);
        match res {
            Ok(Ok(answer)) => {
                if counted {
                    let micros =
                        u64::try_from(t1.duration_since(t0).as_micros()).unwrap_or(u64::MAX);
                    out.hist.saturating_record(micros.max(1));
                }
                if answer.close {
                    conn = None;
                }
                let ok = answer.status.is_success();
                if ok {
                    out.acked += 1;
                }
                if !ok {
                    out.error(counted, || {
                        format!("HTTP {}: {}", answer.status, snippet(&answer.body))
                    });
                } else if collect_ids {
                    match session_id(&answer.body) {
                        Some(id) => out.ids.push(id),
                        None => out.error(counted, || {
                            format!("create answer without an id: {}", snippet(&answer.body))
                        }),
                    }
                }
                bound.finished(ok);
            }
            Ok(Err(e)) => {
                conn = None;
                out.error(counted, || format!("transport error: {e}"));
                bound.finished(false);
            }
            Err(_) => {
                conn = None;
                out.error(counted, || {
                    format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
                });
                bound.finished(false);
            }
        }
    }
    Ok(out)
}

pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    // Small request/response pairs: Nagle would add delayed-ACK stalls to every exchange.
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends by itself when the sender is dropped or the server closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub close: bool,
}

pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Answer, hyper::Error> {
    sender.ready().await?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let close = res
        .headers()
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    // The body must be drained before the connection can carry the next request.
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        body,
        close,
    })
}

/// A request with the target's `Host` and `Authorization` headers.
pub fn request(
    target: &Target,
    method: Method,
    uri: Uri,
    body: Option<Bytes>,
) -> Request<Full<Bytes>> {
    let has_body = body.is_some();
    let mut req = Request::new(Full::new(body.unwrap_or_default()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(HOST, target.host_header.clone());
    if let Some(auth) = &target.auth {
        headers.insert(AUTHORIZATION, auth.clone());
    }
    if has_body {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    }
    req
}

/// One request on a fresh connection (setup and checks, not measured load); errors on a
/// non-2xx answer with its status and body.
pub async fn call(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<Bytes> {
    let uri = target.uri(path)?;
    let what = format!("{method} {path}");
    let once = async {
        let mut sender = connect(target.addr).await?;
        let answer = exchange(&mut sender, request(target, method, uri, body)).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, once)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
        .with_context(|| what.clone())?;
    if !answer.status.is_success() {
        anyhow::bail!("{what}: HTTP {}: {}", answer.status, snippet(&answer.body));
    }
    Ok(answer.body)
}

pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(ERROR_BODY_CHARS).collect();
    if text.chars().count() > ERROR_BODY_CHARS {
        s.push('…');
    }
    if s.is_empty() {
        s.push_str("(empty body)");
    }
    s
}

pub fn session_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = v.get("id")?.as_str()?;
    // Only real ids go into paths; anything else would make every later request a 404.
    uuid::Uuid::parse_str(id).ok()?;
    Some(id.to_string())
}

/// xorshift64*: cheap per-worker randomness for picking pool members; quality is irrelevant here.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Never zero (a zero state stays zero forever).
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_expected_shape() {
        let v: serde_json::Value = serde_json::from_slice(&create_body(13)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"bench","tags":["t5"],"metadata":{"k":"v1"},"data":{"n":13}})
        );
        let v: serde_json::Value = serde_json::from_slice(&patch_body(7)).unwrap();
        assert_eq!(v, serde_json::json!({"data":{"n":7}}));
        let v: serde_json::Value = serde_json::from_slice(&pool_body(2)).unwrap();
        assert_eq!(v["type"], "bench-pool");
    }

    #[test]
    fn append_bodies() {
        let v: serde_json::Value = serde_json::from_slice(&append_body(5, 1)).unwrap();
        let recs = v["records"].as_array().unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["data"]["n"], 5);
        let pad = recs[0]["data"]["pad"].as_str().unwrap();
        assert!((90..=110).contains(&pad.len()), "{}", pad.len());
        assert_eq!(
            recs[0].as_object().unwrap().len(),
            1,
            "data only: ids are server-made"
        );

        let v: serde_json::Value = serde_json::from_slice(&append_body(3, 100)).unwrap();
        let recs = v["records"].as_array().unwrap();
        assert_eq!(recs.len(), 100);
        assert_eq!(recs[0]["data"]["n"], 300);
        assert_eq!(recs[99]["data"]["n"], 399);
    }

    #[test]
    fn append_goes_to_the_worker_session() {
        let uris: Vec<Uri> = (0..3).map(|i| format!("/{i}").parse().unwrap()).collect();
        assert_eq!(by_worker(&uris, 4).path(), "/1");
        assert_eq!(by_worker(&uris[..1], 4).path(), "/0");
    }

    #[test]
    fn seed_set_gives_each_type_every_tag() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..32 {
            let v: serde_json::Value = serde_json::from_slice(&seed_body(i)).unwrap();
            let ty = v["type"].as_str().unwrap().to_string();
            assert_eq!(ty, ["bench-a", "bench-b"][(i % 2) as usize]);
            seen.insert((ty, v["tags"][0].as_str().unwrap().to_string()));
        }
        assert_eq!(seen.len(), 16);
        assert!(seen.contains(&("bench-a".to_string(), "t3".to_string())));
    }

    #[test]
    fn count_bound_hands_out_exact_tickets() {
        let b = Bound::count(3, 10, 0);
        let got: Vec<_> = std::iter::from_fn(|| b.next_ticket()).collect();
        assert_eq!(got, vec![10, 11, 12]);
    }

    #[test]
    fn time_bound_window() {
        let b = Bound::time(Duration::from_secs(1), Duration::from_secs(1));
        let Bound::Time {
            record_from, end, ..
        } = &b
        else {
            unreachable!()
        };
        assert!(!b.counts(*record_from - Duration::from_millis(1), *record_from));
        assert!(b.counts(*record_from, *end));
        assert!(!b.counts(*record_from, *end + Duration::from_millis(1)));
        assert!(b.next_ticket().is_some());
    }

    #[test]
    fn ids_must_be_uuids() {
        let id = "0b6f1b2e-7c8d-4e5f-9a0b-1c2d3e4f5a6b";
        assert_eq!(
            session_id(format!(r#"{{"id":"{id}"}}"#).as_bytes()),
            Some(id.to_string())
        );
        assert_eq!(session_id(br#"{"id":"nope"}"#), None);
        assert_eq!(session_id(b"not json"), None);
    }

    #[test]
    fn rng_spreads() {
        let mut r = XorShift::new(0);
        let uris: Vec<Uri> = (0..4).map(|i| format!("/{i}").parse().unwrap()).collect();
        let mut hits = [0u32; 4];
        for _ in 0..4000 {
            let u = pick(&uris, &mut r);
            hits[u.path()[1..].parse::<usize>().unwrap()] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
    }
}
