//! `sessiond worker`: claims jobs and runs a shell command for each.
//!
//! Each of `--concurrency` slots long-polls `POST /v1/jobs/claim`, runs `sh -c COMMAND` with the
//! job input as JSON on stdin, heartbeats while it runs, and completes the job with the JSON the
//! command printed (exit 0) or fails it with the tail of stderr (any other exit).

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use sessiond_client::{ClaimedJob, Client, ClientError, Job};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::ClientArgs;

/// Long-poll per claim: short enough that a stuck connection is noticed, long enough that an
/// idle worker costs a request every 20 s.
const CLAIM_WAIT_SECS: u64 = 20;
/// The error sent on failure carries this much of the end of stderr.
const STDERR_TAIL_BYTES: usize = 4096;
/// Stdout is the result: beyond this it could not be sent anyway.
const STDOUT_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How much of a non-JSON stdout goes into the error, to show what the command printed.
const STDOUT_SAMPLE_BYTES: usize = 1024;
/// After the command exits, how long its stdout/stderr may stay open (held by a process it
/// left in the background) before that process group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Bound on the report sent for a job killed by a second signal: the worker is exiting.
const KILLED_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Job type to claim (repeatable).
    #[arg(long = "type", value_name = "TYPE", required = true)]
    pub types: Vec<String>,
    /// Shell command run per job with `sh -c`: the job input arrives as JSON on stdin, and
    /// SESSIOND_JOB_ID, SESSIOND_SESSION_ID, SESSIOND_JOB_TYPE, SESSIOND_JOB_ATTEMPT are set.
    /// Exit 0 completes the job with stdout parsed as JSON (empty: null); any other exit fails
    /// it with the end of stderr (retried while attempts remain).
    #[arg(long, value_name = "COMMAND")]
    pub exec: String,
    /// Jobs run at once (one claim loop each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Lease per claim in seconds, renewed every third of it while the command runs.
    #[arg(long = "lease", value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub lease: u64,
    /// Recorded on claimed jobs (default: sessiond-worker-<hostname>-<pid>).
    #[arg(long)]
    pub worker_id: Option<String>,
}

/// State shared by the slots and the signal handler.
struct Ctx {
    client: Client,
    types: Vec<String>,
    exec: String,
    lease: Duration,
    worker_id: String,
    /// First signal: claim no more.
    stop: watch::Sender<bool>,
    /// Second signal: kill the running commands.
    kill: watch::Sender<bool>,
    running: AtomicUsize,
    succeeded: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    /// True while claims fail for lack of a server, so recovery is noted once.
    unreachable: AtomicBool,
    /// When the last "cannot reach" note was printed: N slots failing together print one.
    last_note: Mutex<Option<Instant>>,
}

impl Ctx {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn stopped(&self) {
        // The sender lives in `self`, so this only returns once the value is true.
        let _ = self.stop.subscribe().wait_for(|s| *s).await;
    }

    async fn killed(&self) {
        let _ = self.kill.subscribe().wait_for(|k| *k).await;
    }

    fn note_unreachable(&self, e: &ClientError, delay: Duration) {
        self.unreachable.store(true, Ordering::SeqCst);
        let Ok(mut last) = self.last_note.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        eprintln!(
            "note: cannot claim jobs: {}; retrying in {}",
            short_cause(e),
            secs(delay)
        );
    }

    fn note_reachable(&self) {
        if self.unreachable.swap(false, Ordering::SeqCst) {
            eprintln!("note: reached the server again; claiming jobs");
        }
    }
}

pub async fn run_worker(args: &ClientArgs, w: WorkerArgs) -> Result<()> {
    let client = args.client()?;
    // Registered before anything runs: from here on SIGTERM/SIGINT no longer end the process.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let ctx = Arc::new(Ctx {
        client,
        types: w.types,
        exec: w.exec,
        lease: Duration::from_secs(w.lease),
        worker_id: w.worker_id.unwrap_or_else(default_worker_id),
        stop: watch::channel(false).0,
        kill: watch::channel(false).0,
        running: AtomicUsize::new(0),
        succeeded: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        unreachable: AtomicBool::new(false),
        last_note: Mutex::new(None),
    });
    eprintln!(
        "worker {}: claiming {} from {} ({} at once, lease {}s)",
        ctx.worker_id,
        ctx.types.join(", "),
        args.url,
        w.concurrency,
        w.lease
    );

    let signals = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let name = next_signal(&mut term, &mut int).await;
            match ctx.running.load(Ordering::SeqCst) {
                0 => eprintln!("{name}: claiming no more jobs; none running"),
                n => eprintln!(
                    "{name}: claiming no more jobs; waiting for {n} running job(s) to finish \
                     (signal again to kill them)"
                ),
            }
            ctx.stop.send_replace(true);
            let name = next_signal(&mut term, &mut int).await;
            let running = ctx.running.load(Ordering::SeqCst);
            eprintln!("{name} again: killing {running} running command(s)");
            ctx.kill.send_replace(true);
        })
    };

    let slots: Vec<JoinHandle<Result<()>>> = (0..w.concurrency)
        .map(|_| tokio::spawn(slot(ctx.clone())))
        .collect();
    let mut first_error: Option<anyhow::Error> = None;
    for s in slots {
        let result = match s.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("a worker slot crashed: {e}")),
        };
        if let Err(e) = result {
            // The other slots stop claiming and finish what they run.
            ctx.stop.send_replace(true);
            first_error.get_or_insert(e);
        }
    }
    signals.abort();
    let (ok, failed, dropped) = (
        ctx.succeeded.load(Ordering::SeqCst),
        ctx.failed.load(Ordering::SeqCst),
        ctx.dropped.load(Ordering::SeqCst),
    );
    eprintln!(
        "worker {} stopped: {ok} succeeded, {failed} failed, {dropped} dropped",
        ctx.worker_id
    );
    if let Some(e) = first_error {
        return Err(e);
    }
    if *ctx.kill.borrow() {
        bail!("stopped by a second signal; running commands were killed");
    }
    Ok(())
}

async fn next_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("sessiond-worker-{host}-{}", std::process::id())
}

/// One claim loop: claim, run, report, until stopped.
async fn slot(ctx: Arc<Ctx>) -> Result<()> {
    let mut backoff = BACKOFF_MIN;
    while !ctx.stopping() {
        let claim = ctx.client.claim_job(
            &ctx.types,
            Some(ctx.lease.as_secs()),
            CLAIM_WAIT_SECS,
            Some(&ctx.worker_id),
        );
        // Dropping the claim aborts its request. Should the server have leased a job in that
        // instant, the lease expires and the job is queued again.
        let got = tokio::select! {
            r = claim => r,
            () = ctx.stopped() => return Ok(()),
        };
        match got {
            Ok(Some(job)) => {
                backoff = BACKOFF_MIN;
                ctx.note_reachable();
                ctx.running.fetch_add(1, Ordering::SeqCst);
                run_job(&ctx, job).await;
                ctx.running.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(None) => {
                backoff = BACKOFF_MIN;
                ctx.note_reachable();
            }
            Err(e) if retryable(&e) => {
                ctx.note_unreachable(&e, backoff);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = ctx.stopped() => return Ok(()),
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            // A bad key or a refused type list will not get better by retrying.
            Err(e) => return Err(e).context("cannot claim jobs"),
        }
    }
    Ok(())
}

/// Worth retrying: no answer, or an answer that says "later".
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) | ClientError::Decode(_) => true,
        ClientError::Api { status, .. } => *status >= 500 || matches!(status, 408 | 429),
        ClientError::InvalidUrl(_) => false,
    }
}

/// What running the command came to.
enum Outcome {
    Exited {
        status: ExitStatus,
        stdout: Captured,
        stderr_tail: Vec<u8>,
    },
    /// The command could not be started, or its output not collected.
    Broken(String),
    /// A heartbeat said the job is no longer ours (cancelled, expired, re-leased).
    LeaseLost(String),
    /// A second signal.
    Killed,
}

enum Captured {
    Bytes(Vec<u8>),
    TooLarge,
}

/// What to tell the server.
enum Report {
    Complete(Value),
    Fail(Value),
}

async fn run_job(ctx: &Ctx, claimed: ClaimedJob) {
    let started = Instant::now();
    let job = &claimed.job;
    eprintln!(
        "job {} ({}, session {}): claimed, attempt {}/{}",
        job.id, job.kind, job.session_id, job.attempts, job.max_attempts
    );
    let outcome = execute(ctx, &claimed).await;
    let took = secs(started.elapsed());
    let report = match outcome {
        Outcome::LeaseLost(why) => {
            ctx.dropped.fetch_add(1, Ordering::SeqCst);
            eprintln!(
                "job {} ({}): dropped after {took}: {why}; command killed",
                job.id, job.kind
            );
            return;
        }
        Outcome::Killed => {
            let error = json!({ "message": "the worker was stopped before the command finished" });
            let sent = tokio::time::timeout(
                KILLED_REPORT_TIMEOUT,
                ctx.client
                    .fail_job(&job.id, &claimed.lease_id, &error, Some(true)),
            )
            .await;
            let after = match sent {
                Ok(Ok(j)) => format!(" ({})", fate(&j)),
                _ => " (not reported; the lease will expire)".to_owned(),
            };
            ctx.failed.fetch_add(1, Ordering::SeqCst);
            eprintln!("job {} ({}): killed after {took}{after}", job.id, job.kind);
            return;
        }
        Outcome::Broken(message) => Report::Fail(json!({ "message": message })),
        Outcome::Exited {
            status,
            stdout,
            stderr_tail,
        } => judge(status, stdout, &stderr_tail),
    };
    finish(ctx, &claimed, report, &took).await;
}

/// Exit 0 with JSON (or nothing) on stdout completes; everything else fails.
fn judge(status: ExitStatus, stdout: Captured, stderr_tail: &[u8]) -> Report {
    let stderr = tail_text(stderr_tail);
    if !status.success() {
        let message = match (stderr.is_empty(), status.code(), status.signal()) {
            (false, _, _) => stderr,
            (true, Some(code), _) => format!("the command exited with code {code} (no stderr)"),
            (true, None, Some(sig)) => format!("the command was killed by signal {sig}"),
            (true, None, None) => format!("the command ended with {status}"),
        };
        let mut error = json!({ "message": message, "exitCode": status.code() });
        if let Some(sig) = status.signal() {
            error["signal"] = sig.into();
        }
        return Report::Fail(error);
    }
    let bytes = match stdout {
        Captured::Bytes(b) => b,
        Captured::TooLarge => {
            return Report::Fail(json!({
                "message": format!("stdout is larger than {} MiB", STDOUT_MAX_BYTES >> 20),
                "exitCode": 0,
            }))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Report::Complete(Value::Null);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Report::Complete(v),
        Err(e) => {
            let sample = &bytes[..bytes.len().min(STDOUT_SAMPLE_BYTES)];
            Report::Fail(json!({
                "message": format!("stdout is not JSON: {e}"),
                "exitCode": 0,
                "stdout": String::from_utf8_lossy(sample),
            }))
        }
    }
}

/// The end of stderr as text: cut at a character boundary, trailing newlines dropped.
fn tail_text(tail: &[u8]) -> String {
    let start = tail.len().saturating_sub(STDERR_TAIL_BYTES);
    let mut t = &tail[start..];
    // Skip UTF-8 continuation bytes of a character cut by the window.
    while let [b, rest @ ..] = t {
        if b & 0xC0 != 0x80 {
            break;
        }
        t = rest;
    }
    String::from_utf8_lossy(t).trim_end().to_owned()
}

/// Sends the outcome, retrying while the server is unreachable and the lease can still be live.
async fn finish(ctx: &Ctx, claimed: &ClaimedJob, report: Report, took: &str) {
    let job = &claimed.job;
    let deadline = Instant::now() + ctx.lease;
    let mut backoff = BACKOFF_MIN;
    let mut report = report;
    loop {
        let sent = match &report {
            Report::Complete(result) => {
                ctx.client
                    .complete_job(&job.id, &claimed.lease_id, result)
                    .await
            }
            Report::Fail(error) => {
                ctx.client
                    .fail_job(&job.id, &claimed.lease_id, error, Some(true))
                    .await
            }
        };
        match sent {
            Ok(after) => {
                match &report {
                    Report::Complete(_) => {
                        ctx.succeeded.fetch_add(1, Ordering::SeqCst);
                        eprintln!("job {} ({}): succeeded in {took}", job.id, job.kind);
                    }
                    Report::Fail(error) => {
                        ctx.failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!(
                            "job {} ({}): failed in {took}: {} ({})",
                            job.id,
                            job.kind,
                            one_line(error),
                            fate(&after)
                        );
                    }
                }
                return;
            }
            Err(e) if e.is_lease_lost() => {
                ctx.dropped.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "job {} ({}): finished in {took} but the lease was lost (cancelled or \
                     expired); outcome dropped",
                    job.id, job.kind
                );
                return;
            }
            Err(e) if retryable(&e) && Instant::now() + backoff < deadline => {
                eprintln!(
                    "note: cannot report job {}: {}; retrying in {}",
                    job.id,
                    short_cause(&e),
                    secs(backoff)
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = ctx.killed() => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            // The server refused the result itself (too large, say): fail the attempt with why.
            Err(e) if matches!(report, Report::Complete(_)) && !retryable(&e) => {
                report = Report::Fail(json!({
                    "message": format!("the server refused the result: {e}"),
                    "exitCode": 0,
                }));
            }
            Err(e) => {
                ctx.dropped.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "job {} ({}): finished in {took} but could not be reported: {e}",
                    job.id, job.kind
                );
                return;
            }
        }
    }
}

/// The job's state after a failed attempt, as the log shows it.
fn fate(job: &Job) -> String {
    match job.status.as_str() {
        "queued" => format!(
            "queued again, attempt {}/{}",
            job.attempts, job.max_attempts
        ),
        "failed" => format!("final, attempt {}/{}", job.attempts, job.max_attempts),
        other => other.to_owned(),
    }
}

/// An error object's message, on one bounded line for the log.
fn one_line(error: &Value) -> String {
    let text = error["message"]
        .as_str()
        .map_or_else(|| error.to_string(), str::to_owned);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    };
    match error["exitCode"].as_i64() {
        Some(code) if code != 0 => format!("exit code {code}: {line}"),
        _ => line,
    }
}

/// Runs the command for one job, heartbeating until it exits.
async fn execute(ctx: &Ctx, claimed: &ClaimedJob) -> Outcome {
    let job = &claimed.job;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&ctx.exec)
        .env("SESSIOND_JOB_ID", &job.id)
        .env("SESSIOND_SESSION_ID", &job.session_id)
        .env("SESSIOND_JOB_TYPE", &job.kind)
        .env("SESSIOND_JOB_ATTEMPT", job.attempts.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: Ctrl-C in a terminal reaches only the worker, which lets the
        // command finish; and a kill reaches what the command started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Broken(format!("cannot run sh -c: {e}")),
    };
    let input = match serde_json::to_vec(&job.input) {
        Ok(mut v) => {
            v.push(b'\n');
            v
        }
        Err(e) => return Outcome::Broken(format!("cannot render the input: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that ignores stdin closes the pipe early; that is its business.
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Outcome::Broken("the command's output pipes are missing".into());
    };
    let stdout = tokio::spawn(read_capped(stdout));
    let stderr = tokio::spawn(read_tail(stderr));

    let (lost_tx, mut lost_rx) = oneshot::channel::<String>();
    let heartbeats = tokio::spawn(heartbeat(
        ctx.client.clone(),
        job.id.clone(),
        claimed.lease_id.clone(),
        ctx.lease / 3,
        lost_tx,
    ));
    let ended = tokio::select! {
        s = child.wait() => Ok(s),
        Ok(why) = &mut lost_rx => Err(Outcome::LeaseLost(why)),
        () = ctx.killed() => Err(Outcome::Killed),
    };
    heartbeats.abort();
    let status = match ended {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Outcome::Broken(format!("cannot wait for the command: {e}")),
        Err(outcome) => {
            kill_group(&mut child).await;
            return outcome;
        }
    };
    let (stdout, stderr) = match collect(&mut child, stdout, stderr).await {
        Ok(pair) => pair,
        Err(message) => return Outcome::Broken(message),
    };
    Outcome::Exited {
        status,
        stdout,
        stderr_tail: stderr,
    }
}

/// Waits for both pipe readers; a pipe held open by a leftover background process gets its
/// process group killed after a grace period.
async fn collect(
    child: &mut Child,
    stdout: JoinHandle<std::io::Result<Captured>>,
    stderr: JoinHandle<std::io::Result<Vec<u8>>>,
) -> Result<(Captured, Vec<u8>), String> {
    let both = async { (stdout.await, stderr.await) };
    tokio::pin!(both);
    let joined = match tokio::time::timeout(PIPE_GRACE, &mut both).await {
        Ok(j) => j,
        Err(_) => {
            kill_group(child).await;
            match tokio::time::timeout(PIPE_GRACE, &mut both).await {
                Ok(j) => j,
                Err(_) => {
                    return Err("the command exited but a process it started outside its \
                                process group keeps stdout or stderr open"
                        .into())
                }
            }
        }
    };
    match joined {
        (Ok(Ok(out)), Ok(Ok(err))) => Ok((out, err)),
        (Ok(Err(e)), _) | (_, Ok(Err(e))) => Err(format!("cannot read the command's output: {e}")),
        (Err(e), _) | (_, Err(e)) => Err(format!("cannot read the command's output: {e}")),
    }
}

/// Extends the lease every `every` until lost; transient errors are noted and retried at the
/// next beat (a lease spans three beats).
async fn heartbeat(
    client: Client,
    id: String,
    lease_id: String,
    every: Duration,
    lost: oneshot::Sender<String>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        match client.heartbeat_job(&id, &lease_id, None).await {
            Ok(_) => {}
            Err(e) if e.is_lease_lost() || !retryable(&e) => {
                let _ = lost.send(format!("heartbeat refused: {e}"));
                return;
            }
            Err(e) => eprintln!(
                "note: heartbeat for job {id} failed: {}; retrying in {}",
                short_cause(&e),
                secs(every)
            ),
        }
    }
}

/// Kills the command and everything in its process group, and reaps it.
async fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id() {
        // No safe signal API in std; `kill` reaches the whole group (the pgid is the pid).
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Reads to the end, keeping at most `STDOUT_MAX_BYTES` (the rest is drained so the command
/// never blocks on a full pipe).
async fn read_capped(mut pipe: impl AsyncRead + Unpin) -> std::io::Result<Captured> {
    let mut kept = Vec::new();
    let mut too_large = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if !too_large && kept.len() + n <= STDOUT_MAX_BYTES {
            kept.extend_from_slice(&buf[..n]);
        } else {
            too_large = true;
            kept = Vec::new();
        }
    }
    Ok(if too_large {
        Captured::TooLarge
    } else {
        Captured::Bytes(kept)
    })
}

/// Reads to the end, keeping only the last `STDERR_TAIL_BYTES` (plus one partial character).
async fn read_tail(mut pipe: impl AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(tail);
        }
        tail.extend_from_slice(&buf[..n]);
        // Trim in bulk rather than per read; a few bytes extra keep a cut character whole.
        if tail.len() > 4 * STDERR_TAIL_BYTES {
            let cut = tail.len() - STDERR_TAIL_BYTES - 4;
            tail.drain(..cut);
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)"): the URL and the generic hint
/// would repeat on every retry.
fn short_cause(e: &ClientError) -> String {
    match e {
        ClientError::Transport(m) => m.rsplit(": ").next().unwrap_or(m).to_owned(),
        e => e.to_string(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn fail_of(r: Report) -> Value {
        match r {
            Report::Fail(v) => v,
            Report::Complete(v) => panic!("completed with {v}"),
        }
    }

    #[test]
    fn judges_the_exit() {
        let ok = |out: &str| match judge(exit(0), Captured::Bytes(out.into()), b"") {
            Report::Complete(v) => v,
            Report::Fail(e) => panic!("failed: {e}"),
        };
        assert_eq!(ok(""), Value::Null);
        assert_eq!(ok(" \n"), Value::Null);
        assert_eq!(ok("{\"a\":1}\n"), json!({"a": 1}));
        assert_eq!(ok("3"), json!(3));

        let e = fail_of(judge(exit(0), Captured::Bytes(b"hello".to_vec()), b""));
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("stdout is not JSON: "),
            "{e}"
        );
        assert_eq!(e["stdout"], "hello");
        let e = fail_of(judge(exit(0), Captured::TooLarge, b""));
        assert!(e["message"].as_str().unwrap().contains("larger"), "{e}");

        let e = fail_of(judge(exit(3), Captured::Bytes(vec![]), b"boom\n"));
        assert_eq!(e, json!({"message": "boom", "exitCode": 3}));
        let e = fail_of(judge(exit(2), Captured::Bytes(vec![]), b""));
        assert_eq!(e["message"], "the command exited with code 2 (no stderr)");
        let e = fail_of(judge(ExitStatus::from_raw(9), Captured::Bytes(vec![]), b""));
        assert_eq!(e["exitCode"], Value::Null);
        assert_eq!(e["signal"], 9);
    }

    #[test]
    fn keeps_the_end_of_stderr() {
        let mut long = "x".repeat(10_000).into_bytes();
        long.extend_from_slice("é end\n".as_bytes());
        let t = tail_text(&long);
        assert!(t.ends_with("é end"), "{t}");
        assert!(t.len() <= STDERR_TAIL_BYTES);
        // A window starting inside "é" skips its continuation byte rather than mangling it.
        let bytes = "aé".repeat(3000).into_bytes();
        let t = tail_text(&bytes);
        assert!(!t.contains('\u{FFFD}'), "{t}");
    }

    #[tokio::test]
    async fn reads_bounded() {
        let big = vec![b'a'; STDOUT_MAX_BYTES + 1];
        assert!(matches!(
            read_capped(&big[..]).await.unwrap(),
            Captured::TooLarge
        ));
        let Captured::Bytes(b) = read_capped(&b"ok"[..]).await.unwrap() else {
            panic!("too large")
        };
        assert_eq!(b, b"ok");
        let data = vec![b'e'; 100_000];
        let tail = read_tail(&data[..]).await.unwrap();
        assert!(tail.len() >= STDERR_TAIL_BYTES && tail.len() <= 4 * STDERR_TAIL_BYTES);
    }

    #[test]
    fn classifies_errors() {
        let api = |status| ClientError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
        };
        assert!(retryable(&ClientError::Transport("x".into())));
        assert!(retryable(&api(503)));
        assert!(retryable(&api(429)));
        assert!(!retryable(&api(401)));
        assert!(!retryable(&api(422)));
        assert_eq!(
            short_cause(&ClientError::Transport(
                "cannot reach u: a: Connection refused".into()
            )),
            "Connection refused"
        );
        assert_eq!(
            one_line(&json!({"message": "a\nb", "exitCode": 3})),
            "exit code 3: a b"
        );
        assert_eq!(one_line(&json!({"message": "x", "exitCode": 0})), "x");
    }
}
