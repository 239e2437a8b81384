//! Channel scenarios that are not closed-loop request/response: `fanout` (one producer, many SSE
//! subscribers, delivery latency) and `idle-sse` (server memory per idle subscriber), plus the
//! helpers the append scenarios use (integrity check, CPU meter, fd limit check).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::load;
use crate::report::{mib, new_histogram, ScenarioReport, Summary};
use crate::sse::{SseEvent, SseParser};
use crate::target::{self, Target};

/// Records per request in `append-batch`.
pub const APPEND_BATCH: u32 = 100;
/// The channel producers append to (the one a session token may write, too).
pub const APPEND_CHANNEL: &str = "in";
/// The channel of the `fanout` scenario.
const FANOUT_CHANNEL: &str = "out";
/// A channel nobody appends to, for `idle-sse`.
const IDLE_CHANNEL: &str = "idle";

/// Subscriptions being opened at once (connect + request + response headers); more would only
/// queue in the listen backlog.
const OPEN_PARALLEL: usize = 64;
/// One subscription's connect + response headers.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
/// All subscriptions open, and every subscriber has the warm-up record.
const ALL_OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const WARM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long subscribers may take to catch up after the producer's last record.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// One producer append.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll cadence of the bounded wait loops.
const POLL: Duration = Duration::from_millis(10);
/// Bound on one SSE line or event: records are at most 1 MiB, plus the envelope.
const SSE_LIMIT: usize = 2 << 20;
/// File descriptors the bench needs besides its subscribers (closed-loop workers, setup).
const FD_MARGIN: u64 = 256;

const TARGET_APPEND_RPS: f64 = 10_000.0;
const TARGET_BATCH_RECORDS: f64 = 100_000.0;
const TARGET_FANOUT_P50_MS: f64 = 5.0;
const TARGET_FANOUT_P99_MS: f64 = 20.0;
const TARGET_IDLE_BYTES: f64 = 64.0 * 1024.0;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Starts the process-wide clock that producer timestamps and receive times share.
pub fn init_clock() {
    BASE.get_or_init(Instant::now);
}

/// Microseconds since [`init_clock`] (client and server share the machine, so one monotonic
/// clock in the bench process is exact for send → receive latency).
pub fn now_us() -> u64 {
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Fails with an explanation when the open-files limit is below what `subscribers` need. The
/// started server inherits the same limit and needs as many for its side of the connections.
pub fn check_fd_limit(subscribers: usize) -> Result<()> {
    let need = subscribers as u64 + FD_MARGIN;
    match target::open_files_limit() {
        Some((soft, hard)) if soft < need => {
            let how = if hard >= need {
                format!(
                    "raise it with `ulimit -n {hard}` (the hard limit) before starting the bench"
                )
            } else {
                format!(
                    "the hard limit is {hard}; lower --subscribers or raise the hard limit (as root: `ulimit -Hn {need}`)"
                )
            };
            bail!(
                "{subscribers} subscribers need about {need} open files, but the soft limit (`ulimit -n`) is {soft}; {how}. \
                 The bench does not raise it itself: that needs setrlimit (libc, unsafe), which this workspace forbids"
            )
        }
        _ => Ok(()),
    }
}

/// CPU used by the bench and the server it started between [`CpuMeter::start`] and
/// [`CpuMeter::note`].
pub struct CpuMeter {
    at: Instant,
    client: Option<u64>,
    server: Option<(u32, u64)>,
    machine: Option<u64>,
}

/// CPU use over a window, in percent of one core.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub server: Option<f64>,
    pub client: Option<f64>,
    /// Everything else on the machine: other processes, and interrupt time (loopback traffic
    /// included) that the kernel does not charge to a process.
    pub rest: Option<f64>,
}

impl CpuUse {
    pub fn text(&self) -> String {
        let fmt = |p: Option<f64>| p.map_or_else(|| "n/a".to_string(), |p| format!("{p:.0}%"));
        format!(
            "server {}, bench client {}, rest of the machine {} (other processes, interrupts)",
            fmt(self.server),
            fmt(self.client),
            fmt(self.rest)
        )
    }

    pub fn to_json(self) -> Value {
        json!({
            "server": self.server.map(f64::round),
            "client": self.client.map(f64::round),
            "rest": self.rest.map(f64::round),
        })
    }
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            client: target::cpu_ticks(std::process::id()),
            server: server_pid.and_then(|p| target::cpu_ticks(p).map(|t| (p, t))),
            machine: target::machine_busy_ticks(),
        }
    }

    pub fn usage(&self) -> CpuUse {
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        let pct = |ticks: u64| ticks as f64 / target::USER_HZ / secs * 100.0;
        let client = self
            .client
            .and_then(|t0| Some(target::cpu_ticks(std::process::id())?.saturating_sub(t0)));
        let server = self
            .server
            .and_then(|(pid, t0)| Some(target::cpu_ticks(pid)?.saturating_sub(t0)));
        let machine = self
            .machine
            .and_then(|t0| Some(target::machine_busy_ticks()?.saturating_sub(t0)));
        let rest = machine.map(|m| {
            m.saturating_sub(client.unwrap_or(0))
                .saturating_sub(server.unwrap_or(0))
        });
        CpuUse {
            server: server.map(pct),
            client: client.map(pct),
            rest: rest.map(pct),
        }
    }

    pub fn note(&self, rep: &mut ScenarioReport) {
        let u = self.usage();
        rep.notes.push(format!(
            "CPU over warm-up + measurement (100% = one core): {}",
            u.text()
        ));
        rep.extra.insert("cpuPercent".into(), u.to_json());
    }
}

/// Creates one session (type `bench-pool`) and returns its id.
async fn create_session(target: &Target) -> Result<String> {
    let body = load::call(
        target,
        Method::POST,
        "/v1/sessions",
        Some(Bytes::from_static(br#"{"type":"bench-pool"}"#)),
    )
    .await?;
    load::session_id(&body)
        .ok_or_else(|| anyhow!("create answer without an id: {}", load::snippet(&body)))
}

/// `lastSeq` of `channel` in each session, summed (0 for a channel that does not exist yet).
pub async fn stored_records(target: &Target, sessions: &[String], channel: &str) -> Result<u64> {
    let mut total = 0;
    for id in sessions {
        let body = load::call(
            target,
            Method::GET,
            &format!("/v1/sessions/{id}/channels"),
            None,
        )
        .await?;
        total += channel_last_seq(&body, channel)
            .with_context(|| format!("channel list of {id}: {}", load::snippet(&body)))?;
    }
    Ok(total)
}

fn channel_last_seq(body: &[u8], channel: &str) -> Option<u64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let list = v.as_array()?;
    Some(
        list.iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(channel))
            .and_then(|c| c.get("lastSeq")?.as_u64())
            .unwrap_or(0),
    )
}

/// Notes for an append scenario: records/s, the server's record count against what it
/// acknowledged, and the target. Lost acknowledged records are added to the errors.
pub fn append_notes(
    rep: &mut ScenarioReport,
    batch: u32,
    acked_requests: u64,
    stored: Result<u64>,
    channels: usize,
) {
    let Ok(summary) = &mut rep.result else {
        return;
    };
    let records_per_s = summary.rps * f64::from(batch);
    rep.records_per_s = Some(records_per_s);
    let acked = acked_requests * u64::from(batch);
    match stored {
        Ok(stored) if stored < acked => {
            summary.errors += acked - stored;
            rep.notes.push(format!(
                "INTEGRITY: the server acknowledged {acked} records (warm-up included) but its {channels} channel(s) hold only {stored}: {} acknowledged records are missing",
                acked - stored
            ));
        }
        Ok(stored) => rep.notes.push(format!(
            "integrity: {channels} channel(s) hold {stored} records, {acked} acknowledged (warm-up included){}",
            if stored > acked {
                "; the surplus are appends whose answer was lost (timeouts, transport errors)"
            } else {
                ", all there"
            }
        )),
        Err(e) => rep
            .notes
            .push(format!("integrity not checked: {e:#}")),
    }
    let (what, value, goal) = if batch == 1 {
        ("appends/s", summary.rps, TARGET_APPEND_RPS)
    } else {
        ("records/s", records_per_s, TARGET_BATCH_RECORDS)
    };
    rep.notes.push(format!(
        "{batch} record(s) per request: {records_per_s:.0} records/s; target >= {goal:.0} {what}: {}",
        verdict(value >= goal)
    ));
    rep.extra.insert("recordsPerRequest".into(), json!(batch));
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// Shared between the subscribers of one scenario.
struct Live {
    opened: AtomicUsize,
    failed: AtomicUsize,
    /// Subscribers that have received their first record (the warm-up one).
    warm: AtomicUsize,
    /// Records whose `t` is at least this are measured (`u64::MAX`: none yet).
    record_from_us: AtomicU64,
    delivery: Mutex<Histogram<u64>>,
    /// Connect → response headers.
    subscribe: Mutex<Histogram<u64>>,
}

impl Live {
    fn new() -> Result<Self> {
        Ok(Self {
            opened: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            warm: AtomicUsize::new(0),
            record_from_us: AtomicU64::new(u64::MAX),
            delivery: Mutex::new(new_histogram()?),
            subscribe: Mutex::new(new_histogram()?),
        })
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct SubOut {
    opened: bool,
    /// Record events received (all, warm-up included).
    events: u64,
    last_seq: u64,
    /// Seqs skipped, plus those still missing at the end.
    missing: u64,
    /// A seq at or below one already received.
    duplicates: u64,
    /// Undecodable events, `id:` ≠ `seq`, unexpected event types.
    bad: u64,
    /// The stream ended or failed before the bench stopped it.
    ended_early: bool,
    error: Option<(Instant, String)>,
}

impl SubOut {
    fn fail(&mut self, what: String) {
        if self.error.is_none() {
            self.error = Some((Instant::now(), what));
        }
    }
}

/// Tracks per-subscriber ordering: `Ok(())` for the next seq, else what was wrong.
#[derive(Debug, PartialEq, Eq)]
enum SeqCheck {
    Next,
    /// This many seqs were skipped before this one.
    Gap(u64),
    /// At or below the last one.
    Repeat,
}

fn check_seq(last: u64, seq: u64) -> SeqCheck {
    if seq == last + 1 {
        SeqCheck::Next
    } else if seq > last {
        SeqCheck::Gap(seq - last - 1)
    } else {
        SeqCheck::Repeat
    }
}

/// The parts of a record event the bench needs.
#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    seq: u64,
    /// The producer's send time, when the record carries one.
    t: Option<u64>,
}

/// A record event as the bench's producers write it: `data` an object with an integer `t`.
/// serde skips every other field without building it.
#[derive(serde::Deserialize)]
struct TimedRecord {
    seq: Option<u64>,
    data: Option<TimeField>,
}

#[derive(serde::Deserialize)]
struct TimeField {
    t: Option<u64>,
}

/// Any other record event: only its seq matters.
#[derive(serde::Deserialize)]
struct UntimedRecord {
    seq: Option<u64>,
}

fn decode_record(ev: &SseEvent) -> Result<Delivery, String> {
    let (seq, t) = match serde_json::from_str::<TimedRecord>(&ev.data) {
        Ok(r) => (r.seq, r.data.and_then(|d| d.t)),
        Err(_) => {
            let r: UntimedRecord = serde_json::from_str(&ev.data)
                .map_err(|e| format!("record event data is not JSON ({e}): {}", clip(&ev.data)))?;
            (r.seq, None)
        }
    };
    let seq = seq.ok_or_else(|| format!("record event without a seq: {}", clip(&ev.data)))?;
    match ev.id.as_deref().map(str::parse::<u64>) {
        Some(Ok(id)) if id == seq => {}
        other => {
            return Err(format!(
                "event id {:?} does not match the record's seq {seq}{}",
                ev.id,
                if matches!(other, Some(Err(_))) {
                    " (not a number)"
                } else {
                    ""
                }
            ))
        }
    }
    Ok(Delivery { seq, t })
}

fn clip(s: &str) -> String {
    load::snippet(s.as_bytes())
}

/// Connection and response of one subscription; the connection task ends with the handle.
struct Stream {
    response: Response<Incoming>,
    conn: JoinHandle<()>,
    _sender: SendRequest<Full<Bytes>>,
}

async fn open_stream(target: &Target, uri: Uri) -> Result<Stream> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connect to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = load::request(target, Method::GET, uri, None);
    req.headers_mut()
        .insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    let sent = async {
        sender.ready().await?;
        sender.send_request(req).await
    }
    .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            conn.abort();
            return Err(e.into());
        }
    };
    let status = response.status();
    let ctype = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if status != StatusCode::OK || !ctype.starts_with("text/event-stream") {
        let body = tokio::time::timeout(Duration::from_secs(2), response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        conn.abort();
        bail!(
            "subscribe answered HTTP {status} ({ctype:?}): {}",
            load::snippet(&body)
        );
    }
    Ok(Stream {
        response,
        conn,
        _sender: sender,
    })
}

/// One SSE subscriber: opens, then reads until it has the bench's stop seq (`stop` holds
/// `Some(seq)`; `Some(0)` stops it at once), the stream ends, or `hard_end`.
async fn subscriber(
    target: Arc<Target>,
    uri: Uri,
    live: Arc<Live>,
    open_gate: Arc<Semaphore>,
    mut stop: watch::Receiver<Option<u64>>,
    hard_end: Instant,
) -> SubOut {
    let mut out = SubOut::default();
    let opened = {
        let _permit = match open_gate.acquire().await {
            Ok(p) => p,
            Err(_) => {
                live.failed.fetch_add(1, Ordering::Relaxed);
                out.fail("open gate closed".into());
                return out;
            }
        };
        let t0 = Instant::now();
        let r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, open_stream(&target, uri)).await;
        let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        match r {
            Ok(Ok(s)) => {
                locked(&live.subscribe).saturating_record(micros.max(1));
                Ok(s)
            }
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!(
                "no response headers within {} s",
                SUBSCRIBE_TIMEOUT.as_secs()
            )),
        }
    };
    let stream = match opened {
        Ok(s) => s,
        Err(e) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            out.fail(e);
            return out;
        }
    };
    out.opened = true;
    live.opened.fetch_add(1, Ordering::Relaxed);

    let Stream {
        response,
        conn,
        _sender,
    } = stream;
    let mut body = response.into_body();
    let mut parser = SseParser::new(SSE_LIMIT);
    let mut events = Vec::new();
    let mut latencies = Vec::new();
    // One deadline timer for the whole stream (a sleep created per event would cost the
    // client a timer insertion and removal for every delivery).
    let deadline = tokio::time::sleep_until(tokio::time::Instant::from_std(hard_end));
    tokio::pin!(deadline);
    // Likewise one wait for the stop signal, re-armed only when it fires: a `changed()` made
    // per event would register with (and leave) the watch's waiter list for every delivery.
    let stop_changed = |mut rx: watch::Receiver<Option<u64>>| async move {
        let alive = rx.changed().await.is_ok();
        (rx, alive)
    };
    let mut stop_wait = Box::pin(stop_changed(stop.clone()));
    loop {
        let stop_at = *stop.borrow_and_update();
        if stop_at.is_some_and(|s| out.last_seq >= s) {
            break;
        }
        let frame = tokio::select! {
            f = body.frame() => f,
            (rx, alive) = &mut stop_wait => {
                if !alive {
                    break;
                }
                stop_wait = Box::pin(stop_changed(rx));
                continue;
            }
            () = &mut deadline => {
                out.fail(format!("still waiting at the deadline (last seq {})", out.last_seq));
                break;
            }
        };
        let data = match frame {
            None => {
                out.ended_early = true;
                out.fail(format!(
                    "the server ended the stream after seq {}",
                    out.last_seq
                ));
                break;
            }
            Some(Err(e)) => {
                out.ended_early = true;
                out.fail(format!("stream broke after seq {}: {e}", out.last_seq));
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers
            },
        };
        // One receive time for the whole chunk, taken before any parsing.
        let rx = now_us();
        if let Err(e) = parser.push(&data, &mut events) {
            out.ended_early = true;
            out.fail(format!("unparseable event stream: {e}"));
            break;
        }
        let record_from = live.record_from_us.load(Ordering::Relaxed);
        let mut ended = None;
        for ev in events.drain(..) {
            match ev.event.as_deref() {
                Some("record") => {}
                Some(other @ ("closed" | "deleted")) => {
                    ended = Some(other.to_string());
                    break;
                }
                other => {
                    out.bad += 1;
                    out.fail(format!(
                        "unexpected event type {other:?}: {}",
                        clip(&ev.data)
                    ));
                    continue;
                }
            }
            let d = match decode_record(&ev) {
                Ok(d) => d,
                Err(e) => {
                    out.bad += 1;
                    out.fail(e);
                    continue;
                }
            };
            out.events += 1;
            if out.events == 1 {
                live.warm.fetch_add(1, Ordering::Relaxed);
            }
            match check_seq(out.last_seq, d.seq) {
                SeqCheck::Next => {}
                SeqCheck::Gap(n) => {
                    out.missing += n;
                    out.fail(format!(
                        "seq {} follows seq {}: {n} missing",
                        d.seq, out.last_seq
                    ));
                }
                SeqCheck::Repeat => {
                    out.duplicates += 1;
                    out.fail(format!(
                        "seq {} again (or out of order) after seq {}",
                        d.seq, out.last_seq
                    ));
                    continue;
                }
            }
            out.last_seq = d.seq;
            if let Some(t) = d.t.filter(|t| *t >= record_from) {
                latencies.push(rx.saturating_sub(t).max(1));
            }
        }
        if !latencies.is_empty() {
            let mut h = locked(&live.delivery);
            for l in latencies.drain(..) {
                h.saturating_record(l);
            }
        }
        if let Some(what) = ended {
            out.ended_early = true;
            out.fail(format!(
                "server sent event: {what} after seq {}",
                out.last_seq
            ));
            break;
        }
    }
    conn.abort();
    out
}

/// Spawns `uris.len()` subscribers and waits (bounded) until each has its response headers or
/// failed. Returns the handles and the time that took.
async fn open_all(
    target: &Arc<Target>,
    uris: Vec<Uri>,
    live: &Arc<Live>,
    stop: &watch::Receiver<Option<u64>>,
    hard_end: Instant,
) -> (Vec<JoinHandle<SubOut>>, Duration) {
    let n = uris.len();
    let gate = Arc::new(Semaphore::new(OPEN_PARALLEL));
    let started = Instant::now();
    let handles = uris
        .into_iter()
        .map(|uri| {
            tokio::spawn(subscriber(
                Arc::clone(target),
                uri,
                Arc::clone(live),
                Arc::clone(&gate),
                stop.clone(),
                hard_end,
            ))
        })
        .collect();
    let deadline = started + ALL_OPEN_TIMEOUT;
    let mut last_progress = Instant::now();
    loop {
        let done = live.opened.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed);
        if done >= n || Instant::now() >= deadline {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  {} of {n} subscribers open ({} failed)",
                live.opened.load(Ordering::Relaxed),
                live.failed.load(Ordering::Relaxed)
            );
            last_progress = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    (handles, started.elapsed())
}

/// Waits (bounded) until `counter` reaches `want`.
async fn wait_for(counter: &AtomicUsize, want: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if counter.load(Ordering::Relaxed) >= want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Merged subscriber results.
#[derive(Debug, Default)]
struct Merged {
    opened: u64,
    failed_open: u64,
    ended_early: u64,
    events: u64,
    missing: u64,
    duplicates: u64,
    bad: u64,
    /// Subscribers that got every record up to the stop seq.
    complete: u64,
    first_error: Option<(Instant, String)>,
}

/// `stop_seq`: the last record every subscriber should have; what an opened subscriber lacks
/// of it counts as missing.
async fn join_all(handles: Vec<JoinHandle<SubOut>>, stop_seq: u64) -> Merged {
    let mut m = Merged::default();
    for h in handles {
        let out = match h.await {
            Ok(o) => o,
            Err(e) => SubOut {
                error: Some((Instant::now(), format!("subscriber task failed: {e}"))),
                ..SubOut::default()
            },
        };
        if out.opened {
            m.opened += 1;
            let tail = stop_seq.saturating_sub(out.last_seq);
            if tail == 0 && out.missing == 0 {
                m.complete += 1;
            }
            m.missing += tail;
        } else {
            m.failed_open += 1;
        }
        m.ended_early += u64::from(out.ended_early);
        m.events += out.events;
        m.missing += out.missing;
        m.duplicates += out.duplicates;
        m.bad += out.bad;
        if let Some((at, msg)) = out.error {
            if m.first_error.as_ref().is_none_or(|(f, _)| at < *f) {
                m.first_error = Some((at, msg));
            }
        }
    }
    m
}

/// Settings of the `fanout` scenario.
pub struct FanoutConfig {
    pub subscribers: usize,
    pub rate: f64,
    /// Appends the producer may have outstanding.
    pub in_flight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub server_pid: Option<u32>,
}

/// The producer side of `fanout`.
struct Produced {
    /// Acknowledged appends, and those of them sent in the measured window.
    acked: u64,
    measured: u64,
    errors: u64,
    /// The highest seq the server acknowledged.
    last_seq: u64,
    first_error: Option<String>,
    /// Append latency of the measured records.
    append: Histogram<u64>,
    /// How late measured records went out against their schedule.
    lag: Histogram<u64>,
    wall: Duration,
}

impl Produced {
    fn new() -> Result<Self> {
        Ok(Self {
            acked: 0,
            measured: 0,
            errors: 0,
            last_seq: 0,
            first_error: None,
            append: new_histogram()?,
            lag: new_histogram()?,
            wall: Duration::ZERO,
        })
    }
}

async fn append_one(
    target: &Target,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    uri: &Uri,
    body: Bytes,
) -> Result<u64> {
    let sender = match conn {
        Some(s) => s,
        None => conn.insert(load::connect(target.addr).await?),
    };
    let req = load::request(target, Method::POST, uri.clone(), Some(body));
    let answer = match tokio::time::timeout(APPEND_TIMEOUT, load::exchange(sender, req)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            *conn = None;
            return Err(e.into());
        }
        Err(_) => {
            *conn = None;
            bail!("no answer within {} s", APPEND_TIMEOUT.as_secs());
        }
    };
    if answer.close {
        *conn = None;
    }
    if !answer.status.is_success() {
        bail!("HTTP {}: {}", answer.status, load::snippet(&answer.body));
    }
    let v: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        anyhow!(
            "append answer is not JSON ({e}): {}",
            load::snippet(&answer.body)
        )
    })?;
    v.get("lastSeq").and_then(Value::as_u64).ok_or_else(|| {
        anyhow!(
            "append answer without lastSeq: {}",
            load::snippet(&answer.body)
        )
    })
}

/// Appends `{"t": now_us()}` records on a fixed schedule of `rate` per second until `end`:
/// record k is due at `start + k / rate`. Up to `in_flight` appends are outstanding (one
/// connection each; 1 = a plain sequential producer). A record that is due while every
/// connection is busy goes out late (its lag is recorded), and nothing is sent after `end`, so
/// the window stays what was asked and a slow server shows as a lower achieved rate.
async fn produce(
    target: &Arc<Target>,
    uri: &Uri,
    rate: f64,
    in_flight: usize,
    record_from_us: u64,
    end: Instant,
) -> Result<Produced> {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let lanes = (0..in_flight.max(1)).map(|_| {
        let (target, uri, next) = (Arc::clone(target), uri.clone(), Arc::clone(&next));
        tokio::spawn(async move {
            let mut p = Produced::new()?;
            let mut conn = None;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let at = start + interval.mul_f64(k as f64);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let t = now_us();
                let measured = t >= record_from_us;
                let lag = u64::try_from(sent.duration_since(at).as_micros()).unwrap_or(u64::MAX);
                if measured {
                    p.lag.saturating_record(lag.max(1));
                }
                let body = Bytes::from(format!(r#"{{"records":[{{"data":{{"t":{t}}}}}]}}"#));
                match append_one(&target, &mut conn, &uri, body).await {
                    Ok(seq) => {
                        p.acked += 1;
                        p.last_seq = p.last_seq.max(seq);
                        if measured {
                            p.measured += 1;
                            let micros =
                                u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                            p.append.saturating_record(micros.max(1));
                        }
                    }
                    Err(e) => {
                        p.errors += 1;
                        if p.first_error.is_none() {
                            p.first_error = Some(format!("append: {e:#}"));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            anyhow::Ok(p)
        })
    });
    let lanes: Vec<_> = lanes.collect();
    let mut total = Produced::new()?;
    for lane in lanes {
        let p = lane.await.context("producer task panicked")??;
        total.acked += p.acked;
        total.measured += p.measured;
        total.errors += p.errors;
        total.last_seq = total.last_seq.max(p.last_seq);
        total.append.add(&p.append).context("merging histograms")?;
        total.lag.add(&p.lag).context("merging histograms")?;
        if total.first_error.is_none() {
            total.first_error = p.first_error;
        }
    }
    total.wall = start.elapsed();
    Ok(total)
}

/// Makes a row-less report for a streaming scenario.
fn streaming_report(name: &str, concurrency: usize, summary: Summary) -> ScenarioReport {
    ScenarioReport {
        name: name.to_string(),
        concurrency,
        result: Ok(summary),
        records_per_s: None,
        compare_to_bare: false,
        vs_bare: None,
        first_error: None,
        notes: Vec::new(),
        extra: Map::new(),
    }
}

/// `fanout`: N SSE subscribers on one channel, one producer at a steady rate, delivery latency.
/// The subscribers read from `sub_target`: the same node as `target`, or another node sharing
/// its database (cross-node delivery).
pub async fn fanout(
    target: Arc<Target>,
    sub_target: Arc<Target>,
    cfg: FanoutConfig,
) -> Result<ScenarioReport> {
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        bail!("--fanout-rate must be > 0");
    }
    check_fd_limit(cfg.subscribers)?;
    let n = cfg.subscribers;
    let session = create_session(&target).await?;
    let path = format!("/v1/sessions/{session}/channels/{FANOUT_CHANNEL}/records");
    let append_uri = target.uri(&path)?;
    // From the beginning, so that a record appended while a stream is being set up is replayed
    // rather than lost: every subscriber must see every record.
    let sub_uri = sub_target.uri(&format!("{path}?after=0"))?;
    let live = Arc::new(Live::new()?);
    let (stop_tx, stop_rx) = watch::channel(None);
    // Every wait below is bounded; this is the backstop for the subscribers themselves.
    let hard_end = Instant::now()
        + ALL_OPEN_TIMEOUT
        + WARM_TIMEOUT
        + cfg.warmup
        + cfg.duration
        + DRAIN_GRACE
        + Duration::from_secs(5);
    let rss_before = cfg.server_pid.and_then(|p| target::read_memory(p).ok());

    eprintln!("  opening {n} SSE subscribers on one channel");
    let (handles, open_wall) =
        open_all(&sub_target, vec![sub_uri; n], &live, &stop_rx, hard_end).await;
    let opened = live.opened.load(Ordering::Relaxed);
    if opened < n {
        let _ = stop_tx.send(Some(0));
        let m = join_all(handles, 0).await;
        bail!(
            "only {opened} of {n} subscribers got response headers within {} s; first error: {}",
            ALL_OPEN_TIMEOUT.as_secs(),
            m.first_error.map_or_else(|| "-".into(), |(_, e)| e)
        );
    }
    eprintln!(
        "  {opened} open in {:.2} s; appending the warm-up record",
        open_wall.as_secs_f64()
    );

    let mut producer_conn = None;
    let warm_seq = append_one(
        &target,
        &mut producer_conn,
        &append_uri,
        Bytes::from_static(br#"{"records":[{"data":{"warmup":true}}]}"#),
    )
    .await
    .context("warm-up append")?;
    drop(producer_conn);
    let all_warm = wait_for(&live.warm, opened, WARM_TIMEOUT).await;
    let warm = live.warm.load(Ordering::Relaxed);
    if !all_warm {
        eprintln!(
            "  only {warm} of {opened} subscribers received the warm-up record within {} s; going on",
            WARM_TIMEOUT.as_secs()
        );
    }
    let rss_live = cfg.server_pid.and_then(|p| target::read_memory(p).ok());

    eprintln!(
        "  producing {} records/s for {} s warm-up + {} s",
        cfg.rate,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64()
    );
    let cpu = CpuMeter::start(cfg.server_pid);
    let record_from = now_us() + u64::try_from(cfg.warmup.as_micros()).unwrap_or(u64::MAX);
    live.record_from_us.store(record_from, Ordering::Relaxed);
    let end = Instant::now() + cfg.warmup + cfg.duration;
    let produced = produce(
        &target,
        &append_uri,
        cfg.rate,
        cfg.in_flight,
        record_from,
        end,
    )
    .await?;
    let stop_seq = produced.last_seq.max(warm_seq);
    let _ = stop_tx.send(Some(stop_seq));
    let drain_started = Instant::now();
    // Subscribers stop by themselves at `stop_seq`; the grace bounds the stragglers, which are
    // then stopped (`Some(0)`: every subscriber is at or past 0) and counted with what they have.
    let drain_deadline = drain_started + DRAIN_GRACE;
    while !handles.iter().all(JoinHandle::is_finished) && Instant::now() < drain_deadline {
        tokio::time::sleep(POLL).await;
    }
    let drain = drain_started.elapsed();
    let _ = stop_tx.send(Some(0));
    let m = join_all(handles, stop_seq).await;
    let cpu_use = cpu.usage();

    let delivery = locked(&live.delivery).clone();
    let expected = m.opened * produced.measured;
    let delivered = delivery.len();
    let errors = m.missing + m.duplicates + m.bad + m.failed_open + m.ended_early + produced.errors;
    let summary = Summary::from_histogram(&delivery, errors, cfg.duration);
    let mut rep = streaming_report("fanout", n, summary.clone());
    rep.records_per_s = Some(produced.measured as f64 / cfg.duration.as_secs_f64().max(1e-9));
    rep.first_error = m
        .first_error
        .map(|(_, e)| e)
        .or(produced.first_error.clone());
    let append = Summary::from_histogram(&produced.append, produced.errors, cfg.duration);
    let lag = Summary::from_histogram(&produced.lag, 0, cfg.duration);
    let interval_ms = 1000.0 / cfg.rate;
    let late = produced
        .lag
        .count_between((interval_ms * 1000.0) as u64 + 1, produced.lag.high());

    rep.notes.push(format!(
        "requests = deliveries (record events received; latency = receive − producer send time); {delivered} measured deliveries of {expected} expected ({m_opened} subscribers × {} measured records)",
        produced.measured,
        m_opened = m.opened
    ));
    rep.notes.push(format!(
        "producer: {} records acknowledged in {:.2} s ({} in the measured window: {:.0}/s of {} asked; up to {} append(s) in flight), append p50 {:.3} ms p99 {:.3} ms max {:.3} ms, {} errors",
        produced.acked,
        produced.wall.as_secs_f64(),
        produced.measured,
        rep.records_per_s.unwrap_or(0.0),
        cfg.rate,
        cfg.in_flight,
        append.p50_ms,
        append.p99_ms,
        append.max_ms,
        produced.errors
    ));
    rep.notes.push(format!(
        "producer send lag behind schedule: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {late} measured records went out more than one interval ({interval_ms:.1} ms) late",
        lag.p50_ms, lag.p99_ms, lag.max_ms
    ));
    rep.notes.push(format!(
        "subscribers: {} opened in {:.2} s, {} received the warm-up record, {} received every record up to seq {stop_seq} (drain {:.2} s); missing {}, duplicate/out-of-order {}, bad events {}, streams ended early {}",
        m.opened,
        open_wall.as_secs_f64(),
        warm,
        m.complete,
        drain.as_secs_f64(),
        m.missing,
        m.duplicates,
        m.bad,
        m.ended_early
    ));
    if delivered != expected {
        rep.notes.push(format!(
            "DELIVERY COUNT: {delivered} measured deliveries, expected {expected} ({})",
            if delivered < expected {
                "missing"
            } else {
                "too many"
            }
        ));
    }
    if let (Some(b), Some(l)) = (rss_before, rss_live) {
        rep.notes.push(format!(
            "server RSS {} before subscribing, {} with {} live subscribers",
            mib(b.rss_kib),
            mib(l.rss_kib),
            m.opened
        ));
    }
    rep.notes.push(format!(
        "CPU over production + drain (100% = one core): {}",
        cpu_use.text()
    ));
    let achieved = rep.records_per_s.unwrap_or(0.0);
    let met = summary.p50_ms < TARGET_FANOUT_P50_MS
        && summary.p99_ms < TARGET_FANOUT_P99_MS
        && delivered > 0
        && delivered == expected
        && achieved >= 0.95 * cfg.rate;
    rep.notes.push(format!(
        "target p50 < {TARGET_FANOUT_P50_MS} ms, p99 < {TARGET_FANOUT_P99_MS} ms with {n} subscribers at {} records/s (>= 95% of it achieved), every delivery made: {}",
        cfg.rate,
        verdict(met)
    ));
    rep.extra.insert(
        "fanout".into(),
        json!({
            "subscribers": n,
            "opened": m.opened,
            "rate": cfg.rate,
            "inFlight": cfg.in_flight,
            "recordsAcked": produced.acked,
            "recordsMeasured": produced.measured,
            "deliveries": delivered,
            "expectedDeliveries": expected,
            "missing": m.missing,
            "duplicates": m.duplicates,
            "badEvents": m.bad,
            "endedEarly": m.ended_early,
            "completeSubscribers": m.complete,
            "appendP50Ms": append.p50_ms,
            "appendP99Ms": append.p99_ms,
            "sendLagP99Ms": lag.p99_ms,
            "lateSends": late,
            "producerErrors": produced.errors,
            "cpuPercent": cpu_use.to_json(),
            "rssBeforeKib": rss_before.map(|m| m.rss_kib),
            "rssLiveKib": rss_live.map(|m| m.rss_kib),
        }),
    );
    Ok(rep)
}

/// Settings of the `idle-sse` scenario.
pub struct IdleConfig {
    pub subscribers: usize,
    /// Sessions the subscribers are spread over (round robin).
    pub sessions: Vec<String>,
    pub settle: Duration,
    pub duration: Duration,
    pub server_pid: Option<u32>,
}

/// `idle-sse`: server memory per idle SSE subscriber.
pub async fn idle_sse(target: Arc<Target>, cfg: IdleConfig) -> Result<ScenarioReport> {
    check_fd_limit(cfg.subscribers)?;
    if cfg.sessions.is_empty() {
        bail!("no sessions to subscribe to");
    }
    let n = cfg.subscribers;
    let uris = (0..n)
        .map(|i| {
            let id = &cfg.sessions[i % cfg.sessions.len()];
            target.uri(&format!(
                "/v1/sessions/{id}/channels/{IDLE_CHANNEL}/records?after=latest"
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // Let the allocator settle after the session setup before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cfg.server_pid.map(target::read_memory).transpose()?;

    let live = Arc::new(Live::new()?);
    let (stop_tx, stop_rx) = watch::channel(None);
    let hard_end =
        Instant::now() + ALL_OPEN_TIMEOUT + cfg.settle + cfg.duration + Duration::from_secs(10);
    eprintln!(
        "  opening {n} idle SSE subscribers over {} session(s)",
        cfg.sessions.len()
    );
    let (handles, open_wall) = open_all(&target, uris, &live, &stop_rx, hard_end).await;
    let opened = live.opened.load(Ordering::Relaxed);
    eprintln!(
        "  {opened} open in {:.2} s ({} failed); holding for {:.1} s + {:.1} s",
        open_wall.as_secs_f64(),
        live.failed.load(Ordering::Relaxed),
        cfg.settle.as_secs_f64(),
        cfg.duration.as_secs_f64()
    );
    tokio::time::sleep(cfg.settle).await;
    let after_open = cfg.server_pid.map(target::read_memory).transpose()?;
    tokio::time::sleep(cfg.duration).await;
    let at_end = cfg.server_pid.map(target::read_memory).transpose()?;
    let _ = stop_tx.send(Some(0));
    let m = join_all(handles, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = cfg.server_pid.map(target::read_memory).transpose()?;

    let subscribe = locked(&live.subscribe).clone();
    let errors = m.failed_open + m.ended_early + m.bad + m.duplicates;
    let mut summary = Summary::from_histogram(&subscribe, errors, open_wall);
    summary.requests = m.opened;
    let mut rep = streaming_report("idle-sse", n, summary);
    rep.first_error = m.first_error.map(|(_, e)| e);
    rep.notes.push(format!(
        "requests = subscriptions opened (latency = connect → response headers, {OPEN_PARALLEL} opening at a time); {} failed, {} streams ended early, {} unexpected events",
        m.failed_open, m.ended_early, m.events + m.bad
    ));
    let mut mem = Map::new();
    mem.insert("sessions".into(), json!(cfg.sessions.len()));
    mem.insert("subscribers".into(), json!(m.opened));
    match (before, after_open, at_end) {
        (Some(b), Some(a), Some(e)) => {
            let peak = a.rss_kib.max(e.rss_kib);
            let per = (m.opened > 0)
                .then(|| peak.saturating_sub(b.rss_kib) as f64 * 1024.0 / m.opened as f64);
            rep.notes.push(format!(
                "server RSS {} before, {} with {} idle subscribers over {} session(s), {} after {:.1} s more{}",
                mib(b.rss_kib),
                mib(a.rss_kib),
                m.opened,
                cfg.sessions.len(),
                mib(e.rss_kib),
                cfg.duration.as_secs_f64(),
                after_close.map_or_else(String::new, |c| format!(", {} 1 s after closing them", mib(c.rss_kib)))
            ));
            if let Some(per) = per {
                rep.notes.push(format!(
                    "{:.1} KiB per idle subscriber; target < {:.0} KiB: {}",
                    per / 1024.0,
                    TARGET_IDLE_BYTES / 1024.0,
                    verdict(per < TARGET_IDLE_BYTES)
                ));
            }
            mem.insert("rssBeforeKib".into(), json!(b.rss_kib));
            mem.insert("rssOpenKib".into(), json!(a.rss_kib));
            mem.insert("rssEndKib".into(), json!(e.rss_kib));
            mem.insert(
                "rssAfterCloseKib".into(),
                json!(after_close.map(|c| c.rss_kib)),
            );
            mem.insert("bytesPerSubscriber".into(), json!(per.map(f64::round)));
        }
        _ => rep
            .notes
            .push("server RSS not measured (only for a server the bench started)".to_string()),
    }
    rep.extra.insert("idle".into(), Value::Object(mem));
    Ok(rep)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record_event(id: &str, data: &str) -> SseEvent {
        SseEvent {
            id: Some(id.to_string()),
            event: Some("record".into()),
            data: data.to_string(),
        }
    }

    #[test]
    fn seq_checks() {
        assert_eq!(check_seq(0, 1), SeqCheck::Next);
        assert_eq!(check_seq(4, 5), SeqCheck::Next);
        assert_eq!(check_seq(4, 8), SeqCheck::Gap(3));
        assert_eq!(check_seq(4, 4), SeqCheck::Repeat);
        assert_eq!(check_seq(4, 2), SeqCheck::Repeat);
    }

    #[test]
    fn decodes_server_records() {
        let ev = record_event(
            "12",
            r#"{"seq":12,"id":"r1","data":{"t":987},"headers":{},"createdAt":"2026-01-01T00:00:00Z"}"#,
        );
        assert_eq!(
            decode_record(&ev),
            Ok(Delivery {
                seq: 12,
                t: Some(987)
            })
        );
        let warm = record_event("1", r#"{"seq":1,"data":{"warmup":true}}"#);
        assert_eq!(decode_record(&warm), Ok(Delivery { seq: 1, t: None }));
        assert!(decode_record(&record_event("2", r#"{"seq":3}"#)).is_err());
        assert!(decode_record(&record_event("x", r#"{"seq":3}"#)).is_err());
        assert!(decode_record(&record_event("3", "not json")).is_err());
        assert!(decode_record(&record_event("3", r#"{"data":{}}"#)).is_err());
        let no_id = SseEvent {
            id: None,
            ..record_event("1", r#"{"seq":1}"#)
        };
        assert!(decode_record(&no_id).is_err());
    }

    #[test]
    fn channel_list_last_seq() {
        let body =
            br#"[{"name":"events","lastSeq":3},{"name":"in","lastSeq":42,"recordCount":42}]"#;
        assert_eq!(channel_last_seq(body, "in"), Some(42));
        assert_eq!(channel_last_seq(body, "out"), Some(0));
        assert_eq!(channel_last_seq(b"{}", "in"), None);
    }

    fn ok_report() -> ScenarioReport {
        streaming_report(
            "append",
            64,
            Summary {
                requests: 1000,
                rps: 200.0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 3.0,
                errors: 0,
            },
        )
    }

    #[test]
    fn append_integrity_notes() {
        let mut r = ok_report();
        append_notes(&mut r, 100, 50, Ok(5000), 64);
        assert_eq!(r.records_per_s, Some(20_000.0));
        assert!(
            r.notes[0].contains("hold 5000 records, 5000 acknowledged"),
            "{:?}",
            r.notes
        );
        assert!(r.notes[1].contains("NOT met"), "{:?}", r.notes);

        let mut r = ok_report();
        append_notes(&mut r, 1, 50, Ok(45), 1);
        assert_eq!(r.result.as_ref().unwrap().errors, 5);
        assert!(r.notes[0].starts_with("INTEGRITY"), "{:?}", r.notes);

        let mut r = ok_report();
        append_notes(&mut r, 1, 50, Err(anyhow!("boom")), 1);
        assert!(r.notes[0].contains("not checked: boom"));
    }

    #[test]
    fn clock_is_monotonic_micros() {
        init_clock();
        let a = now_us();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now_us() >= a + 2000);
    }

    #[test]
    fn fd_check_passes_for_small_counts() {
        assert!(check_fd_limit(1).is_ok());
        let err = check_fd_limit(usize::MAX / 2).unwrap_err().to_string();
        assert!(err.contains("ulimit"), "{err}");
    }
}
