//! Rendering of API objects as tables (default) or JSON (`--json`).

use std::io::Write;

use anyhow::{Context, Result};
use comfy_table::{presets, Table};
use serde_json::{Map, Value};
use sessiond_client::{Account, ApiKey, ChannelInfo, Record, Session, SessionToken};

const NONE: &str = "-";

/// Takes a `Value` (callers use `serde_json::to_value`) so this crate needs no direct serde dep.
pub fn print_json(value: Value) -> Result<()> {
    let text = serde_json::to_string_pretty(&value).context("cannot render JSON")?;
    emit(&text)
}

/// Writes one line to stdout. A closed pipe (`sessiond … | head`) is not an error, where
/// `println!` would panic.
pub fn emit(text: &str) -> Result<()> {
    emit_open(text).map(|_| ())
}

/// Like `emit`, flushed at once (for live output); false when stdout is a closed pipe, so a
/// long-running command can stop.
pub fn emit_open(text: &str) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| NONE.to_owned())
}

fn compact(m: &Map<String, Value>) -> String {
    if m.is_empty() {
        return NONE.to_owned();
    }
    serde_json::to_string(m).unwrap_or_default()
}

fn key_value_table(rows: Vec<(&str, String)>) -> Table {
    let mut t = table();
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    t
}

pub fn sessions_table(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return "no sessions".to_owned();
    }
    let mut t = table();
    t.set_header(vec![
        "id",
        "externalId",
        "type",
        "title",
        "status",
        "version",
        "createdAt",
    ]);
    for s in sessions {
        t.add_row(vec![
            s.id.clone(),
            opt(&s.external_id),
            opt(&s.kind),
            opt(&s.title),
            s.status.clone(),
            s.version.to_string(),
            s.created_at.clone(),
        ]);
    }
    t.to_string()
}

pub fn session_table(s: &Session) -> String {
    let tags = if s.tags.is_empty() {
        NONE.to_owned()
    } else {
        s.tags.join(", ")
    };
    let data = match &s.data {
        None => NONE.to_owned(),
        Some(d) if d.is_empty() => "{}".to_owned(),
        Some(d) => serde_json::to_string_pretty(d).unwrap_or_default(),
    };
    key_value_table(vec![
        ("id", s.id.clone()),
        ("externalId", opt(&s.external_id)),
        ("type", opt(&s.kind)),
        ("title", opt(&s.title)),
        ("status", s.status.clone()),
        ("version", s.version.to_string()),
        ("tags", tags),
        ("metadata", compact(&s.metadata)),
        ("data", data),
        ("createdAt", s.created_at.clone()),
        ("updatedAt", s.updated_at.clone()),
        ("expiresAt", opt(&s.expires_at)),
        ("closedAt", opt(&s.closed_at)),
        ("closedReason", opt(&s.closed_reason)),
    ])
    .to_string()
}

pub fn account_table(a: &Account) -> String {
    key_value_table(vec![
        ("id", a.id.clone()),
        ("name", opt(&a.name)),
        ("createdAt", a.created_at.clone()),
    ])
    .to_string()
}

pub fn key_table(k: &ApiKey) -> String {
    key_value_table(vec![
        ("id", k.id.clone()),
        ("accountId", k.account_id.clone()),
        ("name", opt(&k.name)),
        ("prefix", k.prefix.clone()),
        ("createdAt", k.created_at.clone()),
    ])
    .to_string()
}

/// `seq  createdAt  <data as compact JSON>`: one line per record for `tail`.
pub fn record_line(r: &Record) -> String {
    let data = serde_json::to_string(&r.data).unwrap_or_default();
    format!("{}  {}  {data}", r.seq, r.created_at)
}

pub fn channels_table(channels: &[ChannelInfo]) -> String {
    if channels.is_empty() {
        return "no channels".to_owned();
    }
    let mut t = table();
    t.set_header(vec!["name", "lastSeq", "recordCount", "updatedAt"]);
    for c in channels {
        t.add_row(vec![
            c.name.clone(),
            c.last_seq.to_string(),
            c.record_count.to_string(),
            c.updated_at.clone(),
        ]);
    }
    t.to_string()
}

pub fn token_table(t: &SessionToken) -> String {
    key_value_table(vec![
        ("expiresAt", t.expires_at.clone()),
        ("scopes", t.scopes.join(", ")),
    ])
    .to_string()
}
