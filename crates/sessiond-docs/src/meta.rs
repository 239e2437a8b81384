//! Deterministic per-chunk metadata: endpoints, category, tags.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::parse::{Heading, Parsed, Spec, SpecFormat};

pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// An OpenAPI/Swagger document in JSON.
    SpecJson,
    /// An OpenAPI/Swagger document in YAML.
    SpecYaml,
    /// Prose or text that lists endpoints (`GET /users/{id}` lines).
    ReferenceApi,
    /// The first chunk of prose that has headings.
    Overview,
    /// A structured schema upload (SCIM/JSON Schema types, SQL).
    Schema,
    Other,
}

impl Category {
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::SpecJson => "spec_json",
            Category::SpecYaml => "spec_yaml",
            Category::ReferenceApi => "reference_api",
            Category::Overview => "overview",
            Category::Schema => "schema",
            Category::Other => "other",
        }
    }
}

/// Metadata stored with each chunk (camelCase on the native API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkMetadata {
    /// 1-based position of the chunk in its document.
    pub chunk_number: usize,
    pub token_count: usize,
    /// Unicode scalar values (not bytes).
    pub char_count: usize,
    pub content_type: String,
    pub filename: Option<String>,
    pub parser: String,
    pub num_endpoints: usize,
    pub category: Category,
    pub tags: Vec<String>,
}

impl ChunkMetadata {
    /// The same metadata with the snake_case keys of the Midpilot compat surface
    /// (`character_count` for `charCount`).
    pub fn to_snake_case_json(&self) -> Value {
        json!({
            "filename": self.filename,
            "chunk_number": self.chunk_number,
            "token_count": self.token_count,
            "character_count": self.char_count,
            "num_endpoints": self.num_endpoints,
            "tags": self.tags,
            "category": self.category.as_str(),
            "content_type": self.content_type,
            "parser": self.parser,
        })
    }
}

/// Precomputed document-level facts, so each chunk is a range lookup.
pub(crate) struct DocFacts<'a> {
    parsed: &'a Parsed,
    /// For specs: `(offset of a path key line, path index)` in text order.
    key_lines: Vec<(usize, usize)>,
    structured_schema: bool,
}

/// Per-chunk results.
pub(crate) struct ChunkFacts {
    pub(crate) num_endpoints: usize,
    pub(crate) category: Category,
    pub(crate) tags: Vec<String>,
}

impl<'a> DocFacts<'a> {
    pub(crate) fn new(parsed: &'a Parsed, structured_schema: bool) -> Self {
        let key_lines = parsed
            .spec
            .as_ref()
            .map(|spec| crate::parse::path_key_lines(spec, &parsed.text))
            .unwrap_or_default();
        DocFacts {
            parsed,
            key_lines,
            structured_schema,
        }
    }

    /// Endpoints of the whole document: all operations of a spec, else method-and-path lines.
    pub(crate) fn total_endpoints(&self) -> usize {
        match &self.parsed.spec {
            Some(spec) => spec.operation_count(),
            None => endpoint_lines(&self.parsed.text),
        }
    }

    /// Facts for the chunk covering bytes `start..end`, at 0-based `index`.
    pub(crate) fn chunk(&self, index: usize, start: usize, end: usize) -> ChunkFacts {
        let text = &self.parsed.text[start..end];
        let mut tags = Tags::default();
        let (num_endpoints, category) = match &self.parsed.spec {
            Some(spec) => {
                let n = self.spec_chunk(spec, start, end, &mut tags);
                let cat = match spec.format {
                    SpecFormat::Json => Category::SpecJson,
                    SpecFormat::Yaml => Category::SpecYaml,
                };
                (n, cat)
            }
            None => {
                let headings = in_range(&self.parsed.headings, start, end);
                for h in headings {
                    tags.add(&h.text);
                }
                let n = endpoint_lines(text);
                let cat = if self.structured_schema {
                    Category::Schema
                } else if n > 0 {
                    Category::ReferenceApi
                } else if index == 0 && !headings.is_empty() {
                    Category::Overview
                } else {
                    Category::Other
                };
                (n, cat)
            }
        };
        ChunkFacts {
            num_endpoints,
            category,
            tags: tags.0,
        }
    }

    /// Operations of every path whose key line starts inside the chunk; their tags.
    fn spec_chunk(&self, spec: &Spec, start: usize, end: usize, tags: &mut Tags) -> usize {
        let from = self.key_lines.partition_point(|&(at, _)| at < start);
        let mut seen = vec![false; spec.paths.len()];
        let mut n = 0;
        for &(at, i) in &self.key_lines[from..] {
            if at >= end {
                break;
            }
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            n += spec.paths[i].operations;
            for t in &spec.paths[i].tags {
                tags.add(t);
            }
        }
        n
    }
}

fn in_range(headings: &[Heading], start: usize, end: usize) -> &[Heading] {
    let lo = headings.partition_point(|h| h.offset < start);
    let hi = headings.partition_point(|h| h.offset < end);
    &headings[lo..hi.max(lo)]
}

/// Deduplicated (case-insensitively), at most [`MAX_TAGS`], each at most [`MAX_TAG_CHARS`].
#[derive(Default)]
struct Tags(Vec<String>);

impl Tags {
    fn add(&mut self, raw: &str) {
        if self.0.len() >= MAX_TAGS {
            return;
        }
        let tag: String = raw.trim().chars().take(MAX_TAG_CHARS).collect();
        let tag = tag.trim_end().to_owned();
        if tag.is_empty() || self.0.iter().any(|t| t.eq_ignore_ascii_case(&tag)) {
            return;
        }
        self.0.push(tag);
    }
}

const HTTP_METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT",
];

/// Lines that name an HTTP method followed by a path or URL, e.g. `GET /users/{id}`,
/// `- **POST** /orders`, `` `DELETE https://api.example.com/x` ``.
pub fn endpoint_lines(text: &str) -> usize {
    text.lines().filter(|l| is_endpoint_line(l)).count()
}

fn is_endpoint_line(line: &str) -> bool {
    let body = line.trim_start_matches(|c: char| {
        c.is_whitespace() || matches!(c, '-' | '*' | '+' | '>' | '|' | '#' | '`' | '_' | '[' | '(')
    });
    let Some(method) = HTTP_METHODS.iter().find(|m| body.starts_with(*m)) else {
        return false;
    };
    let rest = &body[method.len()..];
    // The method must end there ("GETTING" is not GET), then optional markup, then the path.
    let rest = rest.trim_start_matches(['*', '`', '_', ']', ')']);
    if !rest.starts_with([' ', '\t']) {
        return false;
    }
    let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '`' || c == '|');
    rest.starts_with('/') || rest.starts_with("http://") || rest.starts_with("https://")
}
