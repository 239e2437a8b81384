//! Typed failures. Each has a stable snake_case `code()` that the server puts on the wire.

use std::fmt;

/// The upload's type is not one this crate parses (the server answers 415
/// `unsupported_content_type` when it knows this up front).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The request's content type, parameters stripped and lowercased; `None` when absent or
    /// `application/octet-stream`.
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.content_type, &self.filename) {
            (Some(ct), _) => write!(f, "Unsupported documentation content type {ct}"),
            (None, Some(name)) => write!(
                f,
                "Unsupported documentation content type (unknown type for file {name})"
            ),
            (None, None) => f.write_str("Unsupported documentation content type (unknown)"),
        }
    }
}

impl std::error::Error for Unsupported {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// A text-based format whose bytes are not UTF-8. We refuse rather than decode lossily so a
    /// wrong charset is reported instead of silently producing replacement characters.
    #[error("the document is not valid UTF-8 (first invalid byte at offset {valid_up_to})")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("malformed {parser} document: {message}")]
    Malformed {
        parser: &'static str,
        message: String,
    },
    /// No bytes, or no text left after parsing (e.g. a scanned PDF, HTML with only scripts).
    #[error("the document is empty or has no extractable text")]
    Empty,
    #[error("invalid chunk options: {0}")]
    InvalidOptions(String),
}

impl DocError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DocError::Unsupported(_) => "unsupported_content_type",
            DocError::InvalidUtf8 { .. } => "invalid_utf8",
            DocError::Malformed { .. } => "malformed_document",
            DocError::Empty => "empty_document",
            DocError::InvalidOptions(_) => "invalid_chunk_options",
        }
    }

    pub(crate) fn malformed(parser: &'static str, message: impl fmt::Display) -> Self {
        DocError::Malformed {
            parser,
            message: message.to_string(),
        }
    }
}
