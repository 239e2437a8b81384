//! Parsers: bytes of one [`Kind`] → plain text plus the structure metadata needs (headings,
//! OpenAPI operations).

mod docx;
mod html;
mod pdf;
mod structured;
mod text;

use serde::Serialize;

use crate::detect::Kind;
use crate::error::DocError;

pub(crate) use structured::{path_key_lines, Spec, SpecFormat};

/// A heading found while parsing. `offset` is the byte offset of its line in [`Parsed::text`],
/// so chunking can attribute it to the chunks that contain that line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heading {
    pub offset: usize,
    pub level: u8,
    pub text: String,
}

/// The text of a document, ready to chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub text: String,
    /// `text`, `markdown`, `html`, `json`, `yaml`, `openapi`, `pdf`, `docx` or `sql`.
    pub parser: &'static str,
    /// Markdown, HTML and DOCX headings in document order.
    pub headings: Vec<Heading>,
    /// PDF page count.
    pub pages: Option<usize>,
    pub(crate) spec: Option<Spec>,
}

impl Parsed {
    fn plain(text: String, parser: &'static str) -> Self {
        Parsed {
            text,
            parser,
            headings: Vec::new(),
            pages: None,
            spec: None,
        }
    }

    /// OpenAPI operations (path × method) when the document is an OpenAPI/Swagger spec.
    pub fn operation_count(&self) -> Option<usize> {
        self.spec.as_ref().map(Spec::operation_count)
    }
}

/// Parses `bytes` as `kind`.
pub fn parse(kind: Kind, bytes: &[u8]) -> Result<Parsed, DocError> {
    match kind {
        Kind::Text => text::plain(bytes, "text"),
        Kind::Sql => text::plain(bytes, "sql"),
        Kind::Markdown => text::markdown(bytes),
        Kind::Html => html::parse(bytes),
        Kind::Json => structured::json(bytes),
        Kind::Yaml => structured::yaml(bytes),
        Kind::Pdf => pdf::parse(bytes),
        Kind::Docx => docx::parse(bytes),
    }
}

/// Strict UTF-8 (a leading BOM is dropped).
fn utf8(bytes: &[u8]) -> Result<&str, DocError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| DocError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// CRLF and lone CR → LF, so line-based cutting and heading detection see one convention.
fn normalize_newlines(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_owned();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Heading text as a tag: emphasis/code markers dropped, links reduced to their text,
/// whitespace collapsed.
pub(crate) fn clean_heading(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' | '`' => {}
            // "](url)" → drop the url part of a Markdown link.
            ']' if chars.peek() == Some(&'(') => {
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            _ => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A panic payload as text (third-party parsers may panic on hostile input).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("parser panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("parser panicked: {s}")
    } else {
        "parser panicked".to_owned()
    }
}
