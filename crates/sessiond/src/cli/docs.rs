//! `sessiond docs upload|list|get|delete|search`: a session's documents.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use comfy_table::{presets, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sessiond_client::{Client, Document, DocumentWithChunks, SearchHit, UploadOptions};

use super::{output, ClientArgs};

const NONE: &str = "-";
/// Processing progress is shown in thousandths.
const PROCESSING_STEPS: u64 = 1000;

#[derive(Subcommand, Debug)]
pub enum DocsCmd {
    /// Upload files, with a progress bar each, and wait until they are processed.
    Upload(Box<UploadArgs>),
    /// List a session's documents, oldest first.
    List {
        /// Session id or externalId.
        session: String,
    },
    /// Show a document and its chunks.
    Get {
        /// Session id or externalId.
        session: String,
        /// Document id.
        doc: String,
    },
    /// Delete a document and its chunks.
    Delete {
        /// Session id or externalId.
        session: String,
        /// Document id.
        doc: String,
    },
    /// Full-text search over a session's chunks (every word must appear), best first.
    Search {
        /// Session id or externalId.
        session: String,
        /// The words to search for.
        query: String,
        /// At most this many hits (1–100; the server default is 10).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

#[derive(Args, Debug)]
pub struct UploadArgs {
    /// Session id or externalId.
    pub session: String,
    /// Files to upload, one document each.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Tokens per chunk (100–100,000; the server default is 10,000).
    #[arg(long, value_name = "N")]
    pub chunk_tokens: Option<i64>,
    /// Tokens shared by consecutive chunks (below --chunk-tokens; the server default is 500).
    #[arg(long, value_name = "N")]
    pub overlap_tokens: Option<i64>,
    /// The document id (re-uploading under it replaces the document); one file only.
    #[arg(long, value_name = "ID")]
    pub doc_id: Option<String>,
    /// Process the bytes again even when the same file was processed with the same settings.
    #[arg(long)]
    pub no_reuse: bool,
    /// Return once the files are stored, without waiting for processing.
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn run_docs(args: &ClientArgs, cmd: DocsCmd) -> Result<()> {
    let client = args.client()?;
    match cmd {
        DocsCmd::Upload(u) => upload(args, &client, *u).await,
        DocsCmd::List { session } => {
            let docs = client
                .list_documents(&session)
                .await
                .with_context(|| format!("cannot list the documents of session {session}"))?;
            if args.json {
                return output::print_json(serde_json::to_value(&docs)?);
            }
            output::emit(&docs_table(&docs))
        }
        DocsCmd::Get { session, doc } => {
            let d = client
                .get_document(&session, &doc)
                .await
                .with_context(|| format!("cannot get document {doc} of session {session}"))?;
            if args.json {
                return output::print_json(serde_json::to_value(&d)?);
            }
            output::emit(&doc_table(&d))
        }
        DocsCmd::Delete { session, doc } => {
            client
                .delete_document(&session, &doc)
                .await
                .with_context(|| format!("cannot delete document {doc} of session {session}"))?;
            if args.json {
                return output::print_json(serde_json::json!({ "deleted": doc }));
            }
            output::emit(&format!("deleted document {doc}"))
        }
        DocsCmd::Search {
            session,
            query,
            limit,
        } => {
            let hits = client
                .search_chunks(&session, &query, limit)
                .await
                .with_context(|| format!("cannot search the chunks of session {session}"))?;
            if args.json {
                return output::print_json(serde_json::to_value(&hits)?);
            }
            output::emit(&hits_table(&hits))
        }
    }
}

async fn upload(args: &ClientArgs, client: &Client, u: UploadArgs) -> Result<()> {
    if u.doc_id.is_some() && u.files.len() > 1 {
        bail!("--doc-id names one document: give a single file");
    }
    let mut done = Vec::new();
    let mut failed = 0usize;
    for file in &u.files {
        let doc = upload_one(client, &u, file).await?;
        if doc.status == "failed" {
            failed += 1;
        }
        done.push(doc);
    }
    if args.json {
        output::print_json(serde_json::to_value(&done)?)?;
    } else {
        output::emit(&docs_table(&done))?;
    }
    if failed > 0 {
        bail!("{failed} of {} documents failed to process", done.len());
    }
    Ok(())
}

async fn upload_one(client: &Client, u: &UploadArgs, file: &PathBuf) -> Result<Document> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string());
    let len = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    // Where the events channel stands now: processing events come after it.
    let after = client
        .list_channels(&u.session)
        .await
        .with_context(|| format!("cannot read session {}", u.session))?
        .into_iter()
        .find(|c| c.name == "events")
        .map(|c| c.last_seq)
        .unwrap_or(0);
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:.bold} {msg:>10} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name.clone());
    bar.set_message("uploading");
    let progress_bar = bar.clone();
    let opts = UploadOptions {
        doc_id: u.doc_id.clone(),
        filename: Some(name.clone()),
        content_type: None,
        chunk_tokens: u.chunk_tokens,
        overlap_tokens: u.overlap_tokens,
        reuse: u.no_reuse.then_some(false),
    };
    let uploaded = client
        .upload_document(
            &u.session,
            file,
            &opts,
            Some(Arc::new(move |sent| progress_bar.set_position(sent))),
        )
        .await
        .with_context(|| format!("cannot upload {}", file.display()));
    let uploaded = match uploaded {
        Ok(up) => up,
        Err(e) => {
            bar.abandon_with_message("failed");
            return Err(e);
        }
    };
    let doc = uploaded.document;
    if doc.is_finished() || u.no_wait {
        let msg = if doc.status == "ready" {
            "reused"
        } else {
            doc.status.as_str()
        };
        bar.finish_with_message(msg.to_owned());
        return Ok(doc);
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix:.bold} {msg:>10} [{bar:30}] {percent}%")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_length(PROCESSING_STEPS);
    bar.set_position(0);
    bar.set_message("processing");
    bar.enable_steady_tick(Duration::from_millis(200));
    let status = wait_processed(client, &u.session, &doc.id, &uploaded.job.id, after, &bar).await;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            bar.abandon_with_message("unknown");
            return Err(e);
        }
    };
    if status == "ready" {
        bar.set_position(PROCESSING_STEPS);
        bar.finish_with_message("ready");
    } else {
        bar.abandon_with_message(status);
    }
    client
        .get_document(&u.session, &doc.id)
        .await
        .map(|d| d.document)
        .with_context(|| format!("cannot read document {}", doc.id))
}

/// Follows the session's events channel from `after` until the document is ready or failed,
/// moving the bar on the job's progress events. Returns the final status.
async fn wait_processed(
    client: &Client,
    session: &str,
    doc: &str,
    job: &str,
    mut after: u64,
    bar: &ProgressBar,
) -> Result<String> {
    loop {
        let page = client
            .read_records(session, "events", after, Some(1000), Some(10))
            .await
            .with_context(|| format!("cannot follow the events of session {session}"))?;
        for r in &page.records {
            let d = &r.data;
            let kind = d["type"].as_str().unwrap_or("");
            if d["documentId"].as_str() == Some(doc) {
                match kind {
                    "document.ready" => return Ok("ready".to_owned()),
                    "document.failed" => {
                        let code = d["error"]["code"].as_str().unwrap_or("failed");
                        return Ok(format!("failed: {code}"));
                    }
                    "document.deleted" => return Ok("deleted".to_owned()),
                    _ => {}
                }
            }
            if kind == "job.progress" && d["jobId"].as_str() == Some(job) {
                if let Some(f) = d["progress"]["fraction"].as_f64() {
                    bar.set_position((f.clamp(0.0, 1.0) * PROCESSING_STEPS as f64) as u64);
                }
            }
        }
        after = page.next_after.max(after);
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

fn error_code(v: &Option<Value>) -> String {
    match v {
        Some(e) if !e.is_null() => e["code"].as_str().unwrap_or("error").to_owned(),
        _ => NONE.to_owned(),
    }
}

fn docs_table(docs: &[Document]) -> String {
    if docs.is_empty() {
        return "no documents".to_owned();
    }
    let mut t = table();
    t.set_header(vec![
        "id",
        "filename",
        "contentType",
        "sizeBytes",
        "status",
        "error",
        "chunks",
        "tokens",
        "createdAt",
    ]);
    for d in docs {
        t.add_row(vec![
            d.id.clone(),
            opt(&d.filename),
            opt(&d.content_type),
            d.size_bytes.to_string(),
            d.status.clone(),
            error_code(&d.error),
            d.chunk_count.to_string(),
            d.token_count.to_string(),
            d.created_at.clone(),
        ]);
    }
    t.to_string()
}

fn doc_table(d: &DocumentWithChunks) -> String {
    let doc = &d.document;
    let mut t = table();
    let rows = [
        ("id", doc.id.clone()),
        ("sessionId", doc.session_id.clone()),
        ("filename", opt(&doc.filename)),
        ("contentType", opt(&doc.content_type)),
        ("sizeBytes", doc.size_bytes.to_string()),
        ("sha256", doc.sha256.clone()),
        ("status", doc.status.clone()),
        (
            "error",
            match &doc.error {
                Some(e) if !e.is_null() => e.to_string(),
                _ => NONE.to_owned(),
            },
        ),
        ("chunkCount", doc.chunk_count.to_string()),
        ("tokenCount", doc.token_count.to_string()),
        ("chunkTokens", doc.chunk_tokens.to_string()),
        ("overlapTokens", doc.overlap_tokens.to_string()),
        ("jobId", opt(&doc.job_id)),
        ("createdAt", doc.created_at.clone()),
        ("updatedAt", doc.updated_at.clone()),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    let mut out = t.to_string();
    if !d.chunks.is_empty() {
        let mut c = table();
        c.set_header(vec!["index", "tokens", "chars", "category", "preview"]);
        for ch in &d.chunks {
            c.add_row(vec![
                ch.index.to_string(),
                ch.token_count.to_string(),
                ch.char_count.to_string(),
                ch.metadata["category"].as_str().unwrap_or(NONE).to_owned(),
                preview(&ch.content, 60),
            ]);
        }
        out.push('\n');
        out.push_str(&c.to_string());
    }
    out
}

/// The first `n` characters on one line.
fn preview(s: &str, n: usize) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

fn hits_table(hits: &[SearchHit]) -> String {
    if hits.is_empty() {
        return "no matches".to_owned();
    }
    let mut t = table();
    t.set_header(vec!["score", "documentId", "index", "snippet"]);
    for h in hits {
        t.add_row(vec![
            format!("{:.3}", h.score),
            h.document_id.clone(),
            h.index.to_string(),
            h.snippet.clone(),
        ]);
    }
    t.to_string()
}
