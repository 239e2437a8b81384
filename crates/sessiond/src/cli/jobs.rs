//! `sessiond jobs list|get|cancel|create`: a session's jobs.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use comfy_table::{presets, Table};
use serde_json::{Map, Value};
use sessiond_client::{CreateJob, Job};

use super::{json_object, output, ClientArgs};

const NONE: &str = "-";

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// List a session's jobs, oldest first.
    List {
        /// Session id or externalId.
        session: String,
    },
    /// Show one job.
    Get {
        /// Job id.
        id: String,
    },
    /// Cancel a queued or running job (a finished job is shown unchanged).
    Cancel {
        /// Job id.
        id: String,
    },
    /// Create a job on a session (an earlier identical success is reused unless --no-reuse).
    Create(Box<CreateJobArgs>),
}

#[derive(Args, Debug)]
pub struct CreateJobArgs {
    /// Session id or externalId.
    pub session: String,
    /// Job type, e.g. `scrape` (what workers claim).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// Input as a JSON object (default `{}`).
    #[arg(long, value_name = "JSON", value_parser = json_object)]
    pub input: Option<Map<String, Value>>,
    /// Top-level key of the session's data that receives the result on success.
    #[arg(long, value_name = "KEY")]
    pub output_key: Option<String>,
    /// Always run, even if the same type and input succeeded recently.
    #[arg(long)]
    pub no_reuse: bool,
    /// Attempts before the job fails for good (1–100; the server default is 3).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i64>,
}

pub async fn run_jobs(args: &ClientArgs, cmd: JobsCmd) -> Result<()> {
    let client = args.client()?;
    match cmd {
        JobsCmd::List { session } => {
            let jobs = client
                .list_jobs(&session)
                .await
                .with_context(|| format!("cannot list the jobs of session {session}"))?;
            if args.json {
                return output::print_json(serde_json::to_value(&jobs)?);
            }
            output::emit(&jobs_table(&jobs))
        }
        JobsCmd::Get { id } => {
            let job = client
                .get_job(&id)
                .await
                .with_context(|| format!("cannot get job {id}"))?;
            print_job(args, &job)
        }
        JobsCmd::Cancel { id } => {
            let job = client
                .cancel_job(&id)
                .await
                .with_context(|| format!("cannot cancel job {id}"))?;
            // An already-cancelled job looks the same as a fresh cancel; a success or failure
            // that stays is worth pointing out.
            if matches!(job.status.as_str(), "succeeded" | "failed") {
                eprintln!(
                    "note: job {id} had already finished ({}); nothing changed",
                    job.status
                );
            }
            print_job(args, &job)
        }
        JobsCmd::Create(c) => {
            let body = CreateJob {
                kind: c.kind,
                input: c.input,
                reuse: c.no_reuse.then_some(false),
                output_key: c.output_key,
                max_attempts: c.max_attempts,
            };
            let job = client
                .create_job(&c.session, &body)
                .await
                .with_context(|| format!("cannot create a job on session {}", c.session))?;
            if let Some(from) = &job.reused_from {
                eprintln!("note: reused the result of job {from} (use --no-reuse to run it again)");
            }
            print_job(args, &job)
        }
    }
}

fn print_job(args: &ClientArgs, job: &Job) -> Result<()> {
    if args.json {
        return output::print_json(serde_json::to_value(job)?);
    }
    output::emit(&job_table(job))
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| NONE.to_owned())
}

/// Pretty JSON, or `-` for null/absent.
fn pretty(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => NONE.to_owned(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

fn attempts(j: &Job) -> String {
    format!("{}/{}", j.attempts, j.max_attempts)
}

fn jobs_table(jobs: &[Job]) -> String {
    if jobs.is_empty() {
        return "no jobs".to_owned();
    }
    let mut t = table();
    t.set_header(vec![
        "id",
        "type",
        "status",
        "attempts",
        "outputKey",
        "createdAt",
        "finishedAt",
    ]);
    for j in jobs {
        t.add_row(vec![
            j.id.clone(),
            j.kind.clone(),
            j.status.clone(),
            attempts(j),
            opt(&j.output_key),
            j.created_at.clone(),
            opt(&j.finished_at),
        ]);
    }
    t.to_string()
}

fn job_table(j: &Job) -> String {
    let mut t = table();
    let rows = [
        ("id", j.id.clone()),
        ("sessionId", j.session_id.clone()),
        ("type", j.kind.clone()),
        ("status", j.status.clone()),
        ("attempts", attempts(j)),
        ("input", pretty(&Some(j.input.clone()))),
        ("result", pretty(&j.result)),
        ("error", pretty(&j.error)),
        ("progress", pretty(&j.progress)),
        ("outputKey", opt(&j.output_key)),
        ("reusedFrom", opt(&j.reused_from)),
        ("leaseExpiresAt", opt(&j.lease_expires_at)),
        ("createdAt", j.created_at.clone()),
        ("startedAt", opt(&j.started_at)),
        ("finishedAt", opt(&j.finished_at)),
        ("updatedAt", j.updated_at.clone()),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    t.to_string()
}
