//! `sessiond-bench`: closed-loop load generator for sessiond with a per-scenario latency and
//! throughput report, normalised against the bare-HTTP ceiling measured in the same run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use hyper::Uri;
use serde_json::{json, Map, Value};

mod channels;
mod jobs;
mod load;
mod report;
mod sse;
mod target;

use load::{Bound, Workload};
use report::{mib, ScenarioReport, Summary};
use target::{Server, Target};

/// Progress line cadence while seeding.
const PROGRESS_EVERY: u64 = 100_000;

#[derive(Parser, Debug)]
#[command(
    name = "sessiond-bench",
    version,
    about = "Load generator and benchmark report for sessiond"
)]
struct Args {
    /// Target a running server (loopback only unless --allow-remote).
    #[arg(long, conflicts_with = "server_bin")]
    url: Option<String>,
    /// Server binary to start [default: `sessiond` next to this executable].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra argument for the started `sessiond serve` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true, value_name = "ARG")]
    server_args: Vec<String>,
    /// Log filter (SESSIOND_LOG) for the started server; request logging would be measured too.
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Concurrent workers, one keep-alive connection each.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    duration: f64,
    /// Unmeasured seconds before each scenario's measurement.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    warmup: f64,
    /// Comma-separated scenarios, run in the given order (`channels` =
    /// bare,append,append-shared,append-batch,fanout,idle-sse; `jobs-all` = jobs,jobs-handoff).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bare,create,get,patch,list"
    )]
    scenarios: Vec<Scenario>,
    /// API key or token sent as `Authorization: Bearer`.
    #[arg(long)]
    key: Option<String>,
    /// Sessions in the data set of the `list` and `memory` scenarios.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    seed_sessions: u64,
    /// Sessions created for the `get` and `patch` scenarios.
    #[arg(long, default_value_t = 1_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pool_sessions: u64,
    /// Also print a JSON report after the table.
    #[arg(long)]
    json: bool,
    /// Write the JSON report to FILE instead of stdout (implies --json).
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Client runtime threads: 1 = current-thread runtime, leaving the other core to the server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    client_threads: u16,
    /// Permit a --url whose host is not loopback.
    #[arg(long)]
    allow_remote: bool,
    /// SSE subscribers for `fanout` and `idle-sse`, one connection each.
    #[arg(long, default_value_t = 1_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    subscribers: u32,
    /// `fanout` subscribers connect to this node instead (another node on the same PostgreSQL
    /// database: the producer appends through the main target, so delivery crosses nodes).
    #[arg(long, value_name = "URL")]
    subscribe_url: Option<String>,
    /// Records per second the `fanout` producer appends.
    #[arg(long, default_value_t = 200.0, value_name = "PER_SEC")]
    fanout_rate: f64,
    /// Appends the `fanout` producer may have outstanding, one connection each (1 = a single
    /// sequential producer; more keep the rate when appends are slower than its interval).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    fanout_in_flight: u32,
    /// Sessions the `idle-sse` subscribers are spread over (1 = all on one session's channel).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    idle_sessions: u32,
    /// Job workers of `jobs` and `jobs-handoff`, one connection each.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    workers: u32,
    /// Jobs `jobs` pre-fills and keeps queued ahead of its workers.
    #[arg(long, default_value_t = 2_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    jobs_queued: u64,
    /// Jobs per second the `jobs-handoff` producer creates, one at a time.
    #[arg(long, default_value_t = 100.0, value_name = "PER_SEC")]
    handoff_rate: f64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `GET /healthz`: the HTTP ceiling.
    Bare,
    /// `POST /v1/sessions`.
    Create,
    /// `GET /v1/sessions/{id}` over a pool.
    Get,
    /// `PATCH /v1/sessions/{id}` merge patches over a pool.
    Patch,
    /// List pages over a seeded data set.
    List,
    /// Seed a (large) data set, read the server's RSS, then list on top of it.
    Memory,
    /// Single-record appends, each worker to the `in` channel of its own session.
    Append,
    /// Single-record appends, every worker to the same session's `in` channel.
    AppendShared,
    /// 100-record batches, each worker to its own session's `in` channel.
    AppendBatch,
    /// `--subscribers` SSE subscribers on one channel, one producer at `--fanout-rate`.
    Fanout,
    /// Server memory per idle SSE subscriber.
    IdleSse,
    /// Shorthand for bare,append,append-shared,append-batch,fanout,idle-sse.
    Channels,
    /// `--workers` claim → complete loops against a queue kept full.
    Jobs,
    /// Create-ack → long-poll claim latency, one producer at `--handoff-rate`.
    JobsHandoff,
    /// Shorthand for jobs,jobs-handoff.
    JobsAll,
}

/// What `channels` stands for.
const CHANNEL_SCENARIOS: [Scenario; 6] = [
    Scenario::Bare,
    Scenario::Append,
    Scenario::AppendShared,
    Scenario::AppendBatch,
    Scenario::Fanout,
    Scenario::IdleSse,
];

/// The scenario list with shorthands expanded, in order.
fn expand(list: &[Scenario]) -> Vec<Scenario> {
    list.iter()
        .flat_map(|&s| match s {
            Scenario::Channels => CHANNEL_SCENARIOS.to_vec(),
            Scenario::JobsAll => vec![Scenario::Jobs, Scenario::JobsHandoff],
            other => vec![other],
        })
        .collect()
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Bare => "bare",
            Scenario::Create => "create",
            Scenario::Get => "get",
            Scenario::Patch => "patch",
            Scenario::List => "list",
            Scenario::Memory => "memory",
            Scenario::Append => "append",
            Scenario::AppendShared => "append-shared",
            Scenario::AppendBatch => "append-batch",
            Scenario::Fanout => "fanout",
            Scenario::IdleSse => "idle-sse",
            Scenario::Channels => "channels",
            Scenario::Jobs => "jobs",
            Scenario::JobsHandoff => "jobs-handoff",
            Scenario::JobsAll => "jobs-all",
        }
    }
}

fn main() -> ExitCode {
    channels::init_clock();
    let args = Args::parse();
    let built = if args.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.client_threads))
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Ctx {
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    seed_sessions: u64,
    pool_sessions: u64,
    target: Arc<Target>,
    server: Option<Server>,
    /// Session URIs for get/patch, created on first need and shared by both.
    pool: Option<Arc<Vec<Uri>>>,
    /// Seed tickets handed out so far for the list/memory data set (so `memory` after `list`
    /// only adds what is missing).
    seeded: u64,
    subscribers: usize,
    /// Where `fanout` subscribers connect (the main target unless --subscribe-url).
    subscribe: Option<Arc<Target>>,
    fanout_rate: f64,
    fanout_in_flight: usize,
    idle_sessions: u64,
    workers: usize,
    jobs_queued: u64,
    handoff_rate: f64,
}

/// Returns whether every scenario ran.
async fn run(args: Args) -> Result<bool> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be > 0");
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        bail!("--warmup must be >= 0");
    }
    if !(args.fanout_rate.is_finite() && args.fanout_rate > 0.0 && args.fanout_rate <= 1e6) {
        bail!("--fanout-rate must be > 0 and <= 1000000");
    }
    if !(args.handoff_rate.is_finite() && args.handoff_rate > 0.0 && args.handoff_rate <= 1e5) {
        bail!("--handoff-rate must be > 0 and <= 100000");
    }
    let argv: Vec<String> = std::env::args().collect();
    let command = report::command_line(&argv);
    let scenarios = expand(&args.scenarios);

    let (server, target) = match &args.url {
        Some(url) => {
            let parts = target::parse_url(url, args.allow_remote)?;
            let addr = target::resolve(&parts, args.allow_remote).await?;
            let t = Target::new(addr, &parts.authority, parts.prefix, args.key.as_deref())?;
            (None, t)
        }
        None => {
            let bin = match &args.server_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe()
                    .context("cannot locate this executable")?
                    .with_file_name("sessiond"),
            };
            let server = Server::start(&bin, &args.server_args, &args.server_log).await?;
            let t = Target::new(
                server.addr,
                &server.addr.to_string(),
                String::new(),
                args.key.as_deref(),
            )?;
            (Some(server), t)
        }
    };

    let subscribe = match &args.subscribe_url {
        Some(url) => {
            let parts = target::parse_url(url, args.allow_remote)?;
            let addr = target::resolve(&parts, args.allow_remote).await?;
            Some(Arc::new(Target::new(
                addr,
                &parts.authority,
                parts.prefix,
                args.key.as_deref(),
            )?))
        }
        None => None,
    };

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let server_json = match &server {
        Some(s) => json!({
            "startedByBench": true,
            "version": s.version,
            "pid": s.pid,
            "url": target.display,
        }),
        None => {
            json!({ "startedByBench": false, "version": null, "pid": null, "url": target.display })
        }
    };
    let scenario_names: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();

    println!("sessiond-bench {}", env!("CARGO_PKG_VERSION"));
    println!("command:  {command}");
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into());
    println!(
        "machine:  nproc {nproc}; load average {loadavg} at start; client {} ({} thread{})",
        if args.client_threads == 1 {
            "current-thread runtime"
        } else {
            "multi-thread runtime"
        },
        args.client_threads,
        if args.client_threads == 1 { "" } else { "s" }
    );
    match &server {
        Some(s) => println!(
            "server:   {} (started by the bench, pid {}, data dir {}) at {}",
            s.version.as_deref().unwrap_or("version unknown"),
            s.pid,
            s.data_dir()
                .map_or_else(|| "-".into(), |d| d.display().to_string()),
            target.display
        ),
        None => println!("server:   {} (external)", target.display),
    }
    println!(
        "load:     concurrency {}, job workers {}, warmup {} s + {} s measured per scenario; scenarios {}",
        args.concurrency,
        args.workers,
        args.warmup,
        args.duration,
        scenario_names.join(",")
    );
    println!();

    let mut ctx = Ctx {
        concurrency: args.concurrency as usize,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        seed_sessions: args.seed_sessions,
        pool_sessions: args.pool_sessions,
        target: Arc::new(target),
        server,
        pool: None,
        seeded: 0,
        subscribers: args.subscribers as usize,
        subscribe,
        fanout_rate: args.fanout_rate,
        fanout_in_flight: args.fanout_in_flight as usize,
        idle_sessions: u64::from(args.idle_sessions),
        workers: args.workers as usize,
        jobs_queued: args.jobs_queued,
        handoff_rate: args.handoff_rate,
    };

    let mut reports = Vec::new();
    let mut server_gone: Option<String> = None;
    for &sc in &scenarios {
        if let Some(why) = &server_gone {
            reports.push(ScenarioReport::failed(
                sc.name(),
                ctx.concurrency,
                why.clone(),
            ));
            continue;
        }
        eprintln!("== {} ==", sc.name());
        let rep = match run_scenario(&mut ctx, sc).await {
            Ok(r) => r,
            Err(e) => ScenarioReport::failed(sc.name(), ctx.concurrency, format!("{e:#}")),
        };
        if let Err(why) = &rep.result {
            eprintln!("  failed: {why}");
        }
        if let Some(e) = &rep.first_error {
            eprintln!("  first error: {e}");
        }
        reports.push(rep);
        if let Some(status) = ctx.server.as_mut().and_then(Server::exited) {
            let why = format!("server exited ({status})");
            eprintln!("  {why}");
            server_gone = Some(why);
        }
    }
    report::apply_vs_bare(&mut reports);

    println!("{}", report::render(&reports));

    if args.json || args.json_out.is_some() {
        let doc = json!({
            "tool": "sessiond-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "command": command,
            "machine": { "nproc": nproc, "clientThreads": args.client_threads },
            "server": server_json,
            "config": {
                "concurrency": args.concurrency,
                "durationSecs": args.duration,
                "warmupSecs": args.warmup,
                "scenarios": scenario_names,
                "seedSessions": args.seed_sessions,
                "poolSessions": args.pool_sessions,
                "subscribers": args.subscribers,
                "fanoutRate": args.fanout_rate,
                "fanoutInFlight": args.fanout_in_flight,
                "idleSessions": args.idle_sessions,
                "workers": args.workers,
                "jobsQueued": args.jobs_queued,
                "handoffRate": args.handoff_rate,
            },
            "scenarios": reports.iter().map(ScenarioReport::to_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc)?;
        match &args.json_out {
            Some(path) => std::fs::write(path, text + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => println!("{text}"),
        }
    }

    if let Some(server) = ctx.server.take() {
        server.shutdown().await?;
    }
    Ok(reports.iter().all(|r| r.result.is_ok()))
}

async fn run_scenario(ctx: &mut Ctx, sc: Scenario) -> Result<ScenarioReport> {
    let t = Arc::clone(&ctx.target);
    match sc {
        Scenario::Bare => {
            measure(
                ctx,
                sc,
                Workload::Health {
                    uri: t.uri("/healthz")?,
                },
            )
            .await
        }
        Scenario::Create => {
            measure(
                ctx,
                sc,
                Workload::Create {
                    uri: t.uri("/v1/sessions")?,
                },
            )
            .await
        }
        Scenario::Get => {
            let uris = ensure_pool(ctx).await?;
            measure(ctx, sc, Workload::Get { uris }).await
        }
        Scenario::Patch => {
            let uris = ensure_pool(ctx).await?;
            measure(ctx, sc, Workload::Patch { uris }).await
        }
        Scenario::List => {
            let seed = seed_to(ctx, ctx.seed_sessions).await?;
            let mut rep = measure(ctx, sc, list_workload(&t)?).await?;
            if let Some(seed) = seed {
                rep.notes.push(seed.note());
                rep.extra.insert("seed".into(), seed.to_json());
            }
            Ok(rep)
        }
        Scenario::Memory => memory(ctx).await,
        Scenario::Append => append(ctx, sc, ctx.concurrency as u64, 1).await,
        Scenario::AppendShared => append(ctx, sc, 1, 1).await,
        Scenario::AppendBatch => {
            append(ctx, sc, ctx.concurrency as u64, channels::APPEND_BATCH).await
        }
        Scenario::Fanout => {
            channels::fanout(
                t.clone(),
                ctx.subscribe.clone().unwrap_or(t),
                channels::FanoutConfig {
                    subscribers: ctx.subscribers,
                    rate: ctx.fanout_rate,
                    in_flight: ctx.fanout_in_flight,
                    warmup: ctx.warmup,
                    duration: ctx.duration,
                    server_pid: ctx.server.as_ref().map(|s| s.pid),
                },
            )
            .await
        }
        Scenario::IdleSse => {
            channels::check_fd_limit(ctx.subscribers)?;
            let sessions = create_sessions(ctx, ctx.idle_sessions, "idle-sse").await?;
            channels::idle_sse(
                t,
                channels::IdleConfig {
                    subscribers: ctx.subscribers,
                    sessions,
                    settle: ctx.warmup.max(Duration::from_millis(500)),
                    duration: ctx.duration,
                    server_pid: ctx.server.as_ref().map(|s| s.pid),
                },
            )
            .await
        }
        Scenario::Jobs => {
            let sessions = create_sessions(ctx, jobs::JOB_SESSIONS, "jobs").await?;
            jobs::jobs(
                t,
                &sessions,
                jobs::JobsConfig {
                    workers: ctx.workers,
                    queued: ctx.jobs_queued,
                    warmup: ctx.warmup,
                    duration: ctx.duration,
                    server_pid: ctx.server.as_ref().map(|s| s.pid),
                },
            )
            .await
        }
        Scenario::JobsHandoff => {
            let sessions = create_sessions(ctx, 1, "jobs-handoff").await?;
            let session = sessions
                .first()
                .context("no session for jobs-handoff")?
                .clone();
            jobs::handoff(
                t,
                &session,
                jobs::HandoffConfig {
                    workers: ctx.workers,
                    rate: ctx.handoff_rate,
                    warmup: ctx.warmup,
                    duration: ctx.duration,
                    server_pid: ctx.server.as_ref().map(|s| s.pid),
                },
            )
            .await
        }
        Scenario::Channels | Scenario::JobsAll => {
            bail!(
                "`{}` is a shorthand and is expanded before running",
                sc.name()
            )
        }
    }
}

/// `append`, `append-shared`, `append-batch`: closed-loop appends of `batch` records to the `in`
/// channel of `sessions` fresh sessions (worker w → session w % sessions).
async fn append(ctx: &mut Ctx, sc: Scenario, sessions: u64, batch: u32) -> Result<ScenarioReport> {
    let ids = create_sessions(ctx, sessions, sc.name()).await?;
    let uris = ids
        .iter()
        .map(|id| {
            ctx.target.uri(&format!(
                "/v1/sessions/{id}/channels/{}/records",
                channels::APPEND_CHANNEL
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let cpu = channels::CpuMeter::start(ctx.server.as_ref().map(|s| s.pid));
    let (mut rep, acked) = measure_acked(
        ctx,
        sc,
        Workload::Append {
            uris: Arc::new(uris),
            batch,
        },
    )
    .await?;
    cpu.note(&mut rep);
    let stored = channels::stored_records(&ctx.target, &ids, channels::APPEND_CHANNEL).await;
    channels::append_notes(&mut rep, batch, acked, stored, ids.len());
    Ok(rep)
}

fn list_workload(t: &Target) -> Result<Workload> {
    Ok(Workload::List {
        uris: [
            t.uri("/v1/sessions?type=bench-a&limit=20")?,
            t.uri("/v1/sessions?type=bench-a&limit=20&tag=t3")?,
        ],
    })
}

/// Runs `workload` closed-loop for warm-up + duration and summarises the measured part.
async fn measure(ctx: &Ctx, sc: Scenario, workload: Workload) -> Result<ScenarioReport> {
    Ok(measure_acked(ctx, sc, workload).await?.0)
}

/// [`measure`], plus how many requests the server acknowledged in all (warm-up included).
async fn measure_acked(
    ctx: &Ctx,
    sc: Scenario,
    workload: Workload,
) -> Result<(ScenarioReport, u64)> {
    let bound = Arc::new(Bound::time(ctx.warmup, ctx.duration));
    let out = load::run(
        Arc::clone(&ctx.target),
        Arc::new(workload),
        bound,
        ctx.concurrency,
    )
    .await?;
    let summary = Summary::from_histogram(&out.hist, out.errors, ctx.duration);
    eprintln!(
        "  {} requests, {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
        summary.requests, summary.rps, summary.p50_ms, summary.p99_ms, summary.errors
    );
    let rep = ScenarioReport {
        name: sc.name().to_string(),
        concurrency: ctx.concurrency,
        result: Ok(summary),
        records_per_s: None,
        compare_to_bare: true,
        vs_bare: None,
        first_error: out.first_error,
        notes: Vec::new(),
        extra: Map::new(),
    };
    Ok((rep, out.acked))
}

/// Creates `n` sessions (type `bench-pool`) for `what` and returns their ids; fails unless
/// every one was created.
async fn create_sessions(ctx: &Ctx, n: u64, what: &str) -> Result<Vec<String>> {
    eprintln!("  creating {n} session(s) for {what}");
    let uri = ctx.target.uri("/v1/sessions")?;
    let bound = Arc::new(Bound::count(n, 0, 0));
    let out = load::run(
        Arc::clone(&ctx.target),
        Arc::new(Workload::SeedPool { uri }),
        Arc::clone(&bound),
        ctx.concurrency
            .min(usize::try_from(n).unwrap_or(usize::MAX))
            .max(1),
    )
    .await?;
    if out.ids.len() as u64 != n || bound.aborted() {
        bail!(
            "creating the sessions for {what} failed ({} of {n} created, {} errors; first: {})",
            out.ids.len(),
            out.errors,
            out.first_error.as_deref().unwrap_or("-")
        );
    }
    if n > 100 {
        eprintln!(
            "  created {} in {:.1} s ({} errors)",
            out.ids.len(),
            out.wall.as_secs_f64(),
            out.errors
        );
    }
    Ok(out.ids)
}

async fn ensure_pool(ctx: &mut Ctx) -> Result<Arc<Vec<Uri>>> {
    if let Some(p) = &ctx.pool {
        return Ok(Arc::clone(p));
    }
    let ids = create_sessions(ctx, ctx.pool_sessions, "get/patch").await?;
    let uris = ids
        .iter()
        .map(|id| ctx.target.uri(&format!("/v1/sessions/{id}")))
        .collect::<Result<Vec<_>>>()?;
    let pool = Arc::new(uris);
    ctx.pool = Some(Arc::clone(&pool));
    Ok(pool)
}

/// What one seeding pass did.
struct SeedInfo {
    added: u64,
    total: u64,
    secs: f64,
    errors: u64,
    p99_ms: f64,
}

impl SeedInfo {
    fn rate(&self) -> f64 {
        self.added as f64 / self.secs.max(1e-9)
    }

    fn note(&self) -> String {
        format!(
            "seeded {} sessions (data set {}) in {:.1} s ({:.0}/s, create p99 {:.3} ms, {} errors)",
            self.added,
            self.total,
            self.secs,
            self.rate(),
            self.p99_ms,
            self.errors
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "added": self.added,
            "dataSet": self.total,
            "seconds": (self.secs * 1000.0).round() / 1000.0,
            "rate": self.rate().round(),
            "createP99Ms": self.p99_ms,
            "errors": self.errors,
        })
    }
}

/// Grows the list data set to `n` sessions; `None` when it is already that big.
async fn seed_to(ctx: &mut Ctx, n: u64) -> Result<Option<SeedInfo>> {
    if ctx.seeded >= n {
        return Ok(None);
    }
    let missing = n - ctx.seeded;
    eprintln!("  seeding {missing} sessions (types bench-a/bench-b, tags t0..t7)");
    let bound = Arc::new(Bound::count(missing, ctx.seeded, PROGRESS_EVERY));
    let out = load::run(
        Arc::clone(&ctx.target),
        Arc::new(Workload::SeedList {
            uri: ctx.target.uri("/v1/sessions")?,
        }),
        Arc::clone(&bound),
        ctx.concurrency,
    )
    .await?;
    ctx.seeded = n;
    let info = SeedInfo {
        added: bound.done(),
        total: n,
        secs: out.wall.as_secs_f64(),
        errors: out.errors,
        p99_ms: Summary::from_histogram(&out.hist, 0, out.wall).p99_ms,
    };
    if bound.aborted() {
        bail!(
            "seeding gave up after {} errors; first: {}",
            out.errors,
            out.first_error.as_deref().unwrap_or("-")
        );
    }
    eprintln!("  {}", info.note());
    Ok(Some(info))
}

async fn memory(ctx: &mut Ctx) -> Result<ScenarioReport> {
    let pid = ctx.server.as_ref().map(|s| s.pid);
    let before = pid.map(target::read_memory).transpose()?;
    let seed = seed_to(ctx, ctx.seed_sessions).await?;
    let after = pid.map(target::read_memory).transpose()?;
    if let Some(m) = after {
        eprintln!("  server RSS {} (peak {})", mib(m.rss_kib), mib(m.hwm_kib));
    }
    let mut rep = measure(ctx, Scenario::Memory, list_workload(&ctx.target)?).await?;

    if let Some(seed) = &seed {
        rep.notes.push(seed.note());
        rep.extra.insert("seed".into(), seed.to_json());
    }
    match (before, after) {
        (Some(b), Some(a)) => {
            let per_session = seed
                .as_ref()
                .filter(|s| s.added > 0)
                .map(|s| a.rss_kib.saturating_sub(b.rss_kib) as f64 * 1024.0 / s.added as f64);
            rep.notes.push(format!(
                "server RSS {} before seeding, {} with a data set of {} sessions{}, peak {}",
                mib(b.rss_kib),
                mib(a.rss_kib),
                ctx.seed_sessions,
                per_session.map_or_else(String::new, |p| format!(" (~{p:.0} B per added session)")),
                mib(a.hwm_kib)
            ));
            rep.extra.insert(
                "memory".into(),
                json!({
                    "rssBeforeKib": b.rss_kib,
                    "rssAfterKib": a.rss_kib,
                    "hwmKib": a.hwm_kib,
                    "dataSet": ctx.seed_sessions,
                    "bytesPerAddedSession": per_session.map(f64::round),
                }),
            );
        }
        _ => rep
            .notes
            .push("server RSS not measured (only for a server the bench started)".to_string()),
    }
    if let Some(dir) = ctx.server.as_ref().and_then(Server::data_dir) {
        let bytes = target::dir_bytes(&dir);
        rep.notes
            .push(format!("data dir on disk: {}", mib(bytes / 1024)));
        rep.extra.insert("dataDirBytes".into(), json!(bytes));
    }
    if let Ok(s) = &rep.result {
        rep.notes
            .push(format!("list p99 on that data set: {:.3} ms", s.p99_ms));
    }
    Ok(rep)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults() {
        let a = Args::try_parse_from(["sessiond-bench"]).unwrap();
        assert_eq!(
            a.scenarios,
            vec![
                Scenario::Bare,
                Scenario::Create,
                Scenario::Get,
                Scenario::Patch,
                Scenario::List
            ]
        );
        assert_eq!((a.concurrency, a.duration, a.warmup), (64, 10.0, 2.0));
        assert_eq!((a.seed_sessions, a.client_threads), (10_000, 1));
        assert_eq!(
            (a.subscribers, a.fanout_rate, a.idle_sessions),
            (1000, 200.0, 1)
        );
    }

    #[test]
    fn channels_shorthand_expands_in_place() {
        let a = Args::try_parse_from(["b", "--scenarios", "channels"]).unwrap();
        assert_eq!(
            expand(&a.scenarios)
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>(),
            vec![
                "bare",
                "append",
                "append-shared",
                "append-batch",
                "fanout",
                "idle-sse"
            ]
        );
        let a = Args::try_parse_from([
            "b",
            "--scenarios",
            "create,channels,idle-sse",
            "--subscribers",
            "10",
            "--idle-sessions",
            "10",
        ])
        .unwrap();
        let names: Vec<_> = expand(&a.scenarios).iter().map(|s| s.name()).collect();
        assert_eq!(names.first(), Some(&"create"));
        assert_eq!(names.len(), 8);
        assert_eq!(names.last(), Some(&"idle-sse"));
        assert!(Args::try_parse_from(["b", "--subscribers", "0"]).is_err());
    }

    #[test]
    fn jobs_all_shorthand_and_defaults() {
        let a = Args::try_parse_from(["b", "--scenarios", "bare,jobs-all"]).unwrap();
        let names: Vec<_> = expand(&a.scenarios).iter().map(|s| s.name()).collect();
        assert_eq!(names, vec!["bare", "jobs", "jobs-handoff"]);
        assert_eq!(
            (a.workers, a.jobs_queued, a.handoff_rate),
            (16, 2_000, 100.0)
        );
        assert!(Args::try_parse_from(["b", "--workers", "0"]).is_err());
        let a =
            Args::try_parse_from(["b", "--scenarios", "jobs-handoff", "--workers", "4"]).unwrap();
        assert_eq!((a.scenarios[0], a.workers), (Scenario::JobsHandoff, 4));
    }

    #[test]
    fn cli_scenarios_and_conflicts() {
        let a = Args::try_parse_from([
            "b",
            "--scenarios",
            "memory,bare",
            "--seed-sessions",
            "1000000",
        ])
        .unwrap();
        assert_eq!(a.scenarios, vec![Scenario::Memory, Scenario::Bare]);
        assert!(Args::try_parse_from(["b", "--scenarios", "nope"]).is_err());
        assert!(
            Args::try_parse_from(["b", "--url", "http://127.0.0.1:1", "--server-bin", "x"])
                .is_err()
        );
        assert!(Args::try_parse_from(["b", "--concurrency", "0"]).is_err());
        let a =
            Args::try_parse_from(["b", "--server-arg", "--auth", "--server-arg", "off"]).unwrap();
        assert_eq!(a.server_args, vec!["--auth", "off"]);
    }
}
