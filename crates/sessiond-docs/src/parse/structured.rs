//! JSON and YAML, pretty-printed in their own syntax (JSON with 2-space indent, YAML as block
//! YAML, key order kept), and OpenAPI 3 / Swagger 2 recognised in either.

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use super::{utf8, Parsed};
use crate::error::DocError;

/// HTTP methods that make an operation under a path item (OpenAPI 2 and 3).
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpecFormat {
    Json,
    Yaml,
}

/// What metadata needs of an OpenAPI/Swagger document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    pub(crate) format: SpecFormat,
    pub(crate) paths: Vec<SpecPath>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpecPath {
    pub(crate) key: String,
    pub(crate) operations: usize,
    /// Operation tags in document order, deduplicated.
    pub(crate) tags: Vec<String>,
}

impl Spec {
    pub(crate) fn operation_count(&self) -> usize {
        self.paths.iter().map(|p| p.operations).sum()
    }
}

pub(super) fn json(bytes: &[u8]) -> Result<Parsed, DocError> {
    let source = utf8(bytes)?;
    // serde_json's recursion limit (128) turns hostile nesting into an error, not a crash.
    let value: Json = serde_json::from_str(source).map_err(|e| DocError::malformed("json", e))?;
    let mut text =
        serde_json::to_string_pretty(&value).map_err(|e| DocError::malformed("json", e))?;
    text.push('\n');
    let spec = spec_of(&value, SpecFormat::Json);
    Ok(finish(text, "json", spec))
}

pub(super) fn yaml(bytes: &[u8]) -> Result<Parsed, DocError> {
    let source = utf8(bytes)?;
    let mut docs = Vec::new();
    // Multi-document streams (`---`) are kept as separate documents.
    for doc in serde_yaml_ng::Deserializer::from_str(source) {
        docs.push(Yaml::deserialize(doc).map_err(|e| DocError::malformed("yaml", e))?);
    }
    let mut text = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        let s = serde_yaml_ng::to_string(doc).map_err(|e| DocError::malformed("yaml", e))?;
        text.push_str(&s);
        if !s.ends_with('\n') {
            text.push('\n');
        }
    }
    let spec = match docs.as_slice() {
        [only] => spec_of(&yaml_to_json(only), SpecFormat::Yaml),
        _ => None,
    };
    Ok(finish(text, "yaml", spec))
}

fn finish(text: String, parser: &'static str, spec: Option<Spec>) -> Parsed {
    let parser = if spec.is_some() { "openapi" } else { parser };
    let mut parsed = Parsed::plain(text, parser);
    parsed.spec = spec;
    parsed
}

/// Top-level `openapi: 3.x` or `swagger: "2.0"` (YAML may give either as a number).
fn spec_of(value: &Json, format: SpecFormat) -> Option<Spec> {
    let obj = value.as_object()?;
    let version = |key: &str| {
        obj.get(key).and_then(|v| match v {
            Json::String(s) => Some(s.trim().to_owned()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let is_spec = version("openapi").is_some_and(|v| v.starts_with("3."))
        || version("swagger").is_some_and(|v| v == "2.0" || v == "2");
    if !is_spec {
        return None;
    }
    let mut paths = Vec::new();
    if let Some(items) = obj.get("paths").and_then(Json::as_object) {
        for (key, item) in items {
            let Some(item) = item.as_object() else {
                continue;
            };
            let mut operations = 0;
            let mut tags: Vec<String> = Vec::new();
            for method in METHODS {
                let Some(op) = item.get(method).and_then(Json::as_object) else {
                    continue;
                };
                operations += 1;
                for tag in op
                    .get("tags")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Json::as_str)
                {
                    if !tags.iter().any(|t| t == tag) {
                        tags.push(tag.to_owned());
                    }
                }
            }
            paths.push(SpecPath {
                key: key.clone(),
                operations,
                tags,
            });
        }
    }
    Some(Spec { format, paths })
}

/// Enough of YAML as JSON to read a spec: non-string keys become their text (`200:` → "200"),
/// tags are dropped.
fn yaml_to_json(v: &Yaml) -> Json {
    match v {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number)
            }
        }
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Mapping(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (yaml_key(k), yaml_to_json(v)))
                .collect(),
        ),
        Yaml::Tagged(t) => yaml_to_json(&t.value),
    }
}

fn yaml_key(k: &Yaml) -> String {
    match k {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => "null".to_owned(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

/// Where path keys sit in the pretty-printed text: `(byte offset of the line, index into
/// spec.paths)`, in text order. A key line is `"<path>": {` (JSON) or `<path>:` / `'<path>':`
/// / `"<path>":` (YAML).
pub(crate) fn path_key_lines(spec: &Spec, text: &str) -> Vec<(usize, usize)> {
    let index: std::collections::HashMap<&str, usize> = spec
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.key.as_str(), i))
        .collect();
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let body = line.trim_start();
        let key = match body.as_bytes().first() {
            Some(b'"') => json_quoted_key(body),
            Some(b'\'') => yaml_single_quoted_key(body),
            Some(b'/') => body
                .trim_end()
                .strip_suffix(':')
                .map(str::to_owned)
                .or_else(|| body.split_once(": ").map(|(k, _)| k.to_owned())),
            _ => None,
        };
        if let Some(i) = key.as_deref().and_then(|k| index.get(k)) {
            out.push((at, *i));
        }
    }
    out
}

/// `"..."` followed by `:` → the unescaped key.
fn json_quoted_key(body: &str) -> Option<String> {
    let bytes = body.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => {
                let rest = body.get(i + 1..)?;
                if !rest.trim_start().starts_with(':') {
                    return None;
                }
                return serde_json::from_str::<String>(body.get(..=i)?).ok();
            }
            _ => i += 1,
        }
    }
    None
}

fn yaml_single_quoted_key(body: &str) -> Option<String> {
    let inner = body.get(1..)?;
    let mut key = String::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|(_, c)| *c) == Some('\'') {
                chars.next();
                key.push('\'');
                continue;
            }
            return inner[i + 1..].trim_start().starts_with(':').then_some(key);
        }
        key.push(c);
    }
    None
}
