//! Document parsing and chunking for sessiond: bytes in, chunks out.
//!
//! No I/O, no async, no network: the server hands over an upload's bytes, content type and
//! filename and gets back token-bounded chunks with deterministic metadata. The same input
//! always yields byte-identical output.
//!
//! ```
//! let out = sessiond_docs::process(
//!     b"# Users\n\nGET /users/{id}\n",
//!     Some("text/markdown"),
//!     Some("api.md"),
//!     &sessiond_docs::ChunkOptions::default(),
//! )
//! .unwrap();
//! assert_eq!(out.chunks.len(), 1);
//! assert_eq!(out.chunks[0].metadata.num_endpoints, 1);
//! ```

mod chunk;
mod detect;
mod error;
mod meta;
mod parse;

use serde::Serialize;

pub use chunk::{
    count_tokens, warm_up, windows, ChunkOptions, Window, DEFAULT_CHUNK_TOKENS,
    DEFAULT_OVERLAP_TOKENS, MAX_CHUNK_TOKENS, MIN_CHUNK_TOKENS, SCHEMA_MAX_TOKENS,
};
pub use detect::{detect, is_structured_schema, resolve, Detected, Kind};
pub use error::{DocError, Unsupported};
pub use meta::{endpoint_lines, Category, ChunkMetadata, MAX_TAGS, MAX_TAG_CHARS};
pub use parse::{parse, Heading, Parsed};

/// How many leading bytes detection looks at.
const SNIFF_BYTES: usize = 8 * 1024;

/// One chunk of a processed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    /// 0-based (the metadata's `chunkNumber` is `index + 1`).
    pub index: usize,
    pub content: String,
    pub token_count: usize,
    pub char_count: usize,
    pub metadata: ChunkMetadata,
}

/// A processed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Processed {
    pub kind: Kind,
    /// `text`, `markdown`, `html`, `json`, `yaml`, `openapi`, `pdf`, `docx` or `sql`.
    pub parser: &'static str,
    /// The resolved content type (see [`resolve`]).
    pub content_type: String,
    pub chunks: Vec<Chunk>,
    /// Tokens of the whole parsed text (less than the sum over chunks, which overlap).
    pub token_count: usize,
    /// Endpoints of the whole document: OpenAPI operations, else method-and-path lines.
    pub num_endpoints: usize,
}

/// Processing stage, for job progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Parsing,
    Chunking,
}

/// A progress report: `fraction` (0.0–1.0) of the current stage, and chunks cut so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub stage: Stage,
    pub fraction: f64,
    pub chunks: usize,
}

/// Detects, parses and chunks one upload.
pub fn process(
    bytes: &[u8],
    content_type: Option<&str>,
    filename: Option<&str>,
    opts: &ChunkOptions,
) -> Result<Processed, DocError> {
    process_with_progress(bytes, content_type, filename, opts, &mut |_| {})
}

/// [`process`], reporting progress: `parsing` 0 and 1, then `chunking` from 0 to 1 as chunks
/// are cut.
pub fn process_with_progress(
    bytes: &[u8],
    content_type: Option<&str>,
    filename: Option<&str>,
    opts: &ChunkOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Processed, DocError> {
    opts.validate()?;
    let detected = resolve(
        content_type,
        filename,
        &bytes[..bytes.len().min(SNIFF_BYTES)],
    )?;
    if bytes.is_empty() {
        return Err(DocError::Empty);
    }
    progress(Progress {
        stage: Stage::Parsing,
        fraction: 0.0,
        chunks: 0,
    });
    let parsed = parse(detected.kind, bytes)?;
    if parsed.text.trim().is_empty() {
        return Err(DocError::Empty);
    }
    progress(Progress {
        stage: Stage::Parsing,
        fraction: 1.0,
        chunks: 0,
    });
    progress(Progress {
        stage: Stage::Chunking,
        fraction: 0.0,
        chunks: 0,
    });
    let (windows, token_count) = chunk::windows_with(
        &parsed.text,
        opts,
        detected.structured_schema,
        &mut |fraction, chunks| {
            progress(Progress {
                stage: Stage::Chunking,
                fraction,
                chunks,
            })
        },
    )?;
    let facts = meta::DocFacts::new(&parsed, detected.structured_schema);
    let chunks = windows
        .iter()
        .enumerate()
        .map(|(index, w)| {
            let content = parsed.text[w.start..w.end].to_owned();
            let char_count = content.chars().count();
            let f = facts.chunk(index, w.start, w.end);
            Chunk {
                index,
                token_count: w.token_count,
                char_count,
                metadata: ChunkMetadata {
                    chunk_number: index + 1,
                    token_count: w.token_count,
                    char_count,
                    content_type: detected.content_type.clone(),
                    filename: filename.map(str::to_owned),
                    parser: parsed.parser.to_owned(),
                    num_endpoints: f.num_endpoints,
                    category: f.category,
                    tags: f.tags,
                },
                content,
            }
        })
        .collect();
    Ok(Processed {
        kind: detected.kind,
        parser: parsed.parser,
        content_type: detected.content_type,
        token_count,
        num_endpoints: facts.total_endpoints(),
        chunks,
    })
}
