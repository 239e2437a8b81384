//! `sessiond tail|append|channels|tokens`: channel records and session tokens.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sessiond_client::{
    AppendResult, Client, ClientError, FollowEvent, FollowFrom, Reconnect, Record,
};
use tokio::sync::mpsc;

use super::{output, ClientArgs};

/// Records per append request from stdin (the server accepts 1,000).
const STDIN_BATCH_RECORDS: usize = 500;
/// Bytes of JSON lines per append request: well under the server's 8 MiB batch limit.
const STDIN_BATCH_BYTES: usize = 6 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Session id or externalId.
    pub session: String,
    /// The channel to follow.
    #[arg(long, default_value = "events")]
    pub channel: String,
    /// Start after this seq; `latest` shows only records appended from now on.
    #[arg(long, value_name = "SEQ|latest", default_value = "0")]
    pub after: FollowFrom,
}

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Session id or externalId.
    pub session: String,
    /// Channel name (created on first append).
    pub channel: String,
    /// The record's data as JSON, or `-` to read JSON lines from stdin (one record's data per
    /// line, blank lines skipped). With --json, `-` prints the array of server answers.
    #[arg(value_name = "JSON|-", default_value = "-")]
    pub data: String,
    /// Record id: appending the same id again does nothing (exactly-once producers).
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Args, Debug)]
pub struct ChannelsArgs {
    /// Session id or externalId.
    pub session: String,
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// Mint a token scoped to one session (for browsers and agents).
    Create {
        /// Session id or externalId.
        session: String,
        /// `read` (the session and its channels) and/or `write` (append to `in`); repeatable.
        /// Default: read.
        #[arg(long = "scope", value_name = "SCOPE", value_parser = ["read", "write"])]
        scopes: Vec<String>,
        /// Lifetime in seconds (server default 3600, at most 86400).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
}

pub async fn run_tail(args: &ClientArgs, t: TailArgs) -> Result<()> {
    let client = args.client()?;
    let mut follow = client.follow_with(&t.session, &t.channel, t.after, note_reconnect);
    while let Some(item) = follow.next().await {
        let event = item.with_context(|| {
            format!(
                "cannot follow channel {} of session {}",
                t.channel, t.session
            )
        })?;
        let record = match event {
            FollowEvent::Closed => {
                eprintln!("note: session {} is closed; no more records", t.session);
                return Ok(());
            }
            FollowEvent::Deleted => bail!("session {} was deleted", t.session),
            FollowEvent::Record {
                seq,
                id,
                data,
                headers,
                created_at,
            } => Record {
                seq,
                id,
                data,
                headers,
                created_at,
            },
        };
        let line = if args.json {
            serde_json::to_string(&record)?
        } else {
            output::record_line(&record)
        };
        // Nobody reads any more (`sessiond tail … | head`): stop quietly.
        if !output::emit_open(&line)? {
            return Ok(());
        }
    }
    // The follower ends only after closed, deleted or an error, all handled above.
    bail!("the event stream ended unexpectedly")
}

fn note_reconnect(r: &Reconnect) {
    // The innermost cause ("Connection refused (os error 111)") keeps the note short; the URL
    // and the generic "is the server running" hint would repeat on every attempt.
    let why = match &r.error {
        ClientError::Transport(m) => m.rsplit(": ").next().unwrap_or(m).to_owned(),
        e => e.to_string(),
    };
    let resume = match r.after {
        Some(seq) => format!(" (after seq {seq})"),
        None => String::new(),
    };
    eprintln!(
        "note: {why}; reconnecting in {} ms{resume}",
        r.delay.as_millis()
    );
}

pub async fn run_append(args: &ClientArgs, a: AppendArgs) -> Result<()> {
    let client = args.client()?;
    if a.data == "-" {
        if a.id.is_some() {
            bail!("--id works with a single JSON record only, not with - (stdin)");
        }
        return append_stdin(args, &client, &a).await;
    }
    let data: Value = serde_json::from_str(&a.data)
        .context("the JSON argument is not valid JSON (use - to read JSON lines from stdin)")?;
    let mut record = json!({ "data": data });
    if let Some(id) = &a.id {
        record["id"] = json!(id);
    }
    let result = client
        .append_records(&a.session, &a.channel, &[record])
        .await
        .with_context(|| {
            format!(
                "cannot append to channel {} of session {}",
                a.channel, a.session
            )
        })?;
    if args.json {
        return output::print_json(serde_json::to_value(&result)?);
    }
    match result.records.first() {
        Some(r) if r.duplicate => output::emit(&format!(
            "record {} was already appended (seq {}); nothing appended",
            r.id, r.seq
        )),
        _ => output::emit(&appended_summary(1, result.first_seq, result.last_seq)),
    }
}

/// One stdin line: its 1-based number and text.
type Line = (usize, std::io::Result<String>);

async fn append_stdin(args: &ClientArgs, client: &Client, a: &AppendArgs) -> Result<()> {
    // A thread reads ahead so that each request carries whatever is already available (up to
    // a batch), without waiting for a full batch when the producer is slow.
    let (tx, mut rx) = mpsc::channel::<Line>(2 * STDIN_BATCH_RECORDS);
    std::thread::spawn(move || {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let failed = line.is_err();
            if tx.blocking_send((i + 1, line)).is_err() || failed {
                break;
            }
        }
    });
    let mut answers: Vec<AppendResult> = Vec::new();
    let mut appended = 0usize;
    let mut range: Option<(u64, u64)> = None;
    let mut pending = rx.recv().await;
    while pending.is_some() {
        let mut batch: Vec<Value> = Vec::new();
        let mut bytes = 0usize;
        let mut lines = (0usize, 0usize);
        let mut bad: Option<anyhow::Error> = None;
        while let Some((n, line)) = pending.take() {
            match parse_line(n, line) {
                Ok(None) => {}
                Ok(Some((data, len))) => {
                    if batch.is_empty() {
                        lines.0 = n;
                    }
                    lines.1 = n;
                    bytes += len;
                    batch.push(json!({ "data": data }));
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
            if batch.len() >= STDIN_BATCH_RECORDS || bytes >= STDIN_BATCH_BYTES {
                break;
            }
            // Only what is already read: a slow producer's lines go out without delay.
            pending = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            let result = client
                .append_records(&a.session, &a.channel, &batch)
                .await
                .with_context(|| {
                    format!(
                        "cannot append lines {}..{} of stdin to channel {} of session {}; {}",
                        lines.0,
                        lines.1,
                        a.channel,
                        a.session,
                        so_far(appended, range, "them")
                    )
                })?;
            appended += result.appended();
            range = Some((
                range.map_or(result.first_seq, |(from, _)| from),
                result.last_seq,
            ));
            answers.push(result);
        }
        if let Some(e) = bad {
            bail!("{e:#}; {}", so_far(appended, range, "it"));
        }
        if pending.is_none() {
            pending = rx.recv().await;
        }
    }
    if args.json {
        return output::print_json(serde_json::to_value(&answers)?);
    }
    match range {
        Some((from, to)) => output::emit(&appended_summary(appended, from, to)),
        None => output::emit("appended 0 records (stdin had no JSON lines)"),
    }
}

/// A line's data and size, `None` for a blank line.
fn parse_line(n: usize, line: std::io::Result<String>) -> Result<Option<(Value, usize)>> {
    let line = line.with_context(|| format!("cannot read line {n} of stdin"))?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let data = serde_json::from_str(&line)
        .with_context(|| format!("line {n} of stdin is not valid JSON"))?;
    Ok(Some((data, line.len())))
}

/// What an error says was appended before the failing line(s), so the user can resume.
fn so_far(appended: usize, range: Option<(u64, u64)>, before: &str) -> String {
    match range {
        Some((from, to)) => format!(
            "appended the {} before {before} (seq {from}..{to}), nothing after",
            plural(appended, "record")
        ),
        None => "nothing was appended".to_owned(),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn appended_summary(n: usize, first: u64, last: u64) -> String {
    if first == last {
        format!("appended {} (seq {first})", plural(n, "record"))
    } else {
        format!("appended {} (seq {first}..{last})", plural(n, "record"))
    }
}

pub async fn run_channels(args: &ClientArgs, c: ChannelsArgs) -> Result<()> {
    let client = args.client()?;
    let channels = client
        .list_channels(&c.session)
        .await
        .with_context(|| format!("cannot list the channels of session {}", c.session))?;
    if args.json {
        return output::print_json(serde_json::to_value(&channels)?);
    }
    output::emit(&output::channels_table(&channels))
}

pub async fn run_tokens(args: &ClientArgs, cmd: TokensCmd) -> Result<()> {
    let client = args.client()?;
    match cmd {
        TokensCmd::Create {
            session,
            scopes,
            ttl,
        } => {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let token = client
                .mint_token(&session, &scopes, ttl)
                .await
                .with_context(|| format!("cannot create a token for session {session}"))?;
            if args.json {
                return output::print_json(serde_json::to_value(&token)?);
            }
            output::emit(&output::token_table(&token))?;
            // On its own line, so that it is easy to copy.
            output::emit(&format!("\nToken:\n{}", token.token))
        }
    }
}
