//! Which parser an upload goes to: the request's content type, else the file suffix, else a
//! look at the first bytes.

use serde::{Deserialize, Serialize};

use crate::error::Unsupported;

/// The format family of an upload. OpenAPI/Swagger is not a kind: it is recognised after a
/// JSON or YAML parse (see [`crate::Parsed::parser`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Text,
    Markdown,
    Html,
    Json,
    Yaml,
    Pdf,
    Docx,
    Sql,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Markdown => "markdown",
            Kind::Html => "html",
            Kind::Json => "json",
            Kind::Yaml => "yaml",
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Sql => "sql",
        }
    }

    /// The content type reported when the kind was found from a suffix or the bytes.
    pub fn canonical_content_type(&self) -> &'static str {
        match self {
            Kind::Text => "text/plain",
            Kind::Markdown => "text/markdown",
            Kind::Html => "text/html",
            Kind::Json => "application/json",
            Kind::Yaml => "application/yaml",
            Kind::Pdf => "application/pdf",
            Kind::Docx => DOCX,
            Kind::Sql => "application/sql",
        }
    }
}

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// The outcome of detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub kind: Kind,
    /// The request's type (lowercased, parameters stripped) when it was usable, else the
    /// kind's canonical type (or `text/csv` for `.csv`).
    pub content_type: String,
    /// Structured schema uploads stay one chunk up to [`crate::SCHEMA_MAX_TOKENS`].
    pub structured_schema: bool,
}

/// Detects the kind of an upload. See [`resolve`] for the rules.
pub fn detect(
    content_type: Option<&str>,
    filename: Option<&str>,
    bytes_prefix: &[u8],
) -> Result<Kind, Unsupported> {
    resolve(content_type, filename, bytes_prefix).map(|d| d.kind)
}

/// Resolves kind and content type. An explicit request type wins (an unsupported one fails
/// even when the suffix is known, because the client said what it sent); a missing type or
/// `application/octet-stream` falls back to the suffix, then to sniffing `bytes_prefix`
/// (PDF magic, a DOCX zip, HTML/JSON openings, else UTF-8-looking bytes as text).
pub fn resolve(
    content_type: Option<&str>,
    filename: Option<&str>,
    bytes_prefix: &[u8],
) -> Result<Detected, Unsupported> {
    let requested = content_type.map(essence).filter(|ct| {
        !ct.is_empty() && ct != "application/octet-stream" && ct != "binary/octet-stream"
    });
    if let Some(ct) = requested {
        return match kind_of_type(&ct) {
            Some(kind) => Ok(Detected {
                kind,
                structured_schema: is_structured_schema(&ct),
                content_type: ct,
            }),
            None => Err(Unsupported {
                content_type: Some(ct),
                filename: filename.map(str::to_owned),
            }),
        };
    }
    let from_suffix = filename.and_then(suffix).and_then(|ext| {
        let kind = kind_of_suffix(&ext)?;
        let ct = if ext == "csv" {
            "text/csv"
        } else if ext == "xhtml" {
            "application/xhtml+xml"
        } else {
            kind.canonical_content_type()
        };
        Some((kind, ct))
    });
    let (kind, ct) = match from_suffix {
        Some(found) => found,
        None => match sniff(bytes_prefix) {
            Some(kind) => (kind, kind.canonical_content_type()),
            None => {
                return Err(Unsupported {
                    content_type: None,
                    filename: filename.map(str::to_owned),
                })
            }
        },
    };
    Ok(Detected {
        kind,
        structured_schema: is_structured_schema(ct),
        content_type: ct.to_owned(),
    })
}

/// `Text/HTML; charset=utf-8` → `text/html`.
fn essence(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn kind_of_type(ct: &str) -> Option<Kind> {
    Some(match ct {
        // text/csv is not in the design's list, but .csv is read as text, so the type is too.
        "text/plain" | "text/csv" => Kind::Text,
        "text/markdown" | "text/x-markdown" => Kind::Markdown,
        "text/html" | "application/xhtml+xml" => Kind::Html,
        "application/json" => Kind::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Kind::Yaml,
        "application/pdf" => Kind::Pdf,
        DOCX => Kind::Docx,
        "application/sql" | "application/x-sql" | "text/sql" => Kind::Sql,
        _ if ct.contains('/') && ct.ends_with("+json") => Kind::Json,
        // Symmetry with +json (e.g. application/vnd.oai.openapi+yaml).
        _ if ct.contains('/') && ct.ends_with("+yaml") => Kind::Yaml,
        _ => return None,
    })
}

/// SQL, and `+json` types that name a schema (`application/scim+json`,
/// `application/schema+json`, `application/vnd.foo.schema+json`). Other `+json` types
/// (`problem+json`, `ld+json`, …) are ordinary JSON.
pub fn is_structured_schema(content_type: &str) -> bool {
    let ct = essence(content_type);
    if matches!(
        ct.as_str(),
        "application/sql" | "application/x-sql" | "text/sql"
    ) {
        return true;
    }
    match ct.strip_suffix("+json") {
        Some(base) => {
            let subtype = base.rsplit('/').next().unwrap_or("");
            subtype.contains("scim") || subtype.contains("schema")
        }
        None => false,
    }
}

/// The lowercased extension of the last path component (`/` or `\` separated).
fn suffix(filename: &str) -> Option<String> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let (_, ext) = base.rsplit_once('.')?;
    Some(ext.to_ascii_lowercase())
}

fn kind_of_suffix(ext: &str) -> Option<Kind> {
    Some(match ext {
        "txt" | "text" | "log" | "csv" => Kind::Text,
        "md" | "markdown" => Kind::Markdown,
        "html" | "htm" | "xhtml" => Kind::Html,
        "json" => Kind::Json,
        "yaml" | "yml" => Kind::Yaml,
        "pdf" => Kind::Pdf,
        "docx" => Kind::Docx,
        "sql" => Kind::Sql,
        _ => return None,
    })
}

fn sniff(prefix: &[u8]) -> Option<Kind> {
    if prefix.starts_with(b"%PDF-") {
        return Some(Kind::Pdf);
    }
    if prefix.starts_with(b"PK\x03\x04") {
        // Only a zip that shows a Word part early on; xlsx/pptx and plain zips are refused.
        return contains(prefix, b"word/").then_some(Kind::Docx);
    }
    if !looks_like_text(prefix) {
        return None;
    }
    let start = trim_ascii_start(prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix));
    let lower: Vec<u8> = start
        .iter()
        .take(16)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    if lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") {
        return Some(Kind::Html);
    }
    if start.starts_with(b"{") {
        return Some(Kind::Json);
    }
    Some(Kind::Text)
}

/// No NUL bytes and valid UTF-8, except a character cut off by the end of the prefix.
fn looks_like_text(prefix: &[u8]) -> bool {
    if prefix.contains(&0) {
        return false;
    }
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
