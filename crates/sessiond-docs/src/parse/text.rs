//! UTF-8 text, SQL and Markdown: the text is kept as written (newlines normalised); Markdown
//! additionally yields its headings.

use super::{clean_heading, normalize_newlines, utf8, Heading, Parsed};
use crate::error::DocError;

pub(super) fn plain(bytes: &[u8], parser: &'static str) -> Result<Parsed, DocError> {
    Ok(Parsed::plain(normalize_newlines(utf8(bytes)?), parser))
}

pub(super) fn markdown(bytes: &[u8]) -> Result<Parsed, DocError> {
    let text = normalize_newlines(utf8(bytes)?);
    let headings = markdown_headings(&text);
    let mut parsed = Parsed::plain(text, "markdown");
    parsed.headings = headings;
    Ok(parsed)
}

/// ATX (`## Title`) and setext (`Title` over `===`/`---`) headings outside code fences and
/// front matter.
pub(crate) fn markdown_headings(text: &str) -> Vec<Heading> {
    let mut out = Vec::new();
    let mut fence: Option<(u8, usize)> = None;
    // The previous line, if it could be a setext heading's text: (offset, text).
    let mut para: Option<(usize, &str)> = None;
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();

    // YAML front matter: `---` on the first line up to the next `---`/`...` line.
    if text.starts_with("---\n") {
        if let Some(first) = lines.next() {
            offset += first.len();
        }
        for line in lines.by_ref() {
            offset += line.len();
            let t = line.trim_end();
            if t == "---" || t == "..." {
                break;
            }
        }
    }

    for raw in lines {
        let line_offset = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = line.trim_start_matches(' ');

        if let Some((ch, len)) = fence {
            let run = body.bytes().take_while(|&b| b == ch).count();
            if indent < 4 && run >= len && body[run..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if indent < 4 {
            if let Some(ch) = body.bytes().next().filter(|&b| b == b'`' || b == b'~') {
                let run = body.bytes().take_while(|&b| b == ch).count();
                if run >= 3 {
                    fence = Some((ch, run));
                    para = None;
                    continue;
                }
            }
        }
        if indent < 4 {
            if let Some(h) = atx(body) {
                let text = clean_heading(h.1);
                if !text.is_empty() {
                    out.push(Heading {
                        offset: line_offset,
                        level: h.0,
                        text,
                    });
                }
                para = None;
                continue;
            }
            if let Some((p_off, p_text)) = para {
                let t = body.trim_end();
                let level = if !t.is_empty() && t.bytes().all(|b| b == b'=') {
                    Some(1)
                } else if t.len() >= 2 && t.bytes().all(|b| b == b'-') {
                    Some(2)
                } else {
                    None
                };
                if let Some(level) = level {
                    let text = clean_heading(p_text);
                    if !text.is_empty() {
                        out.push(Heading {
                            offset: p_off,
                            level,
                            text,
                        });
                    }
                    para = None;
                    continue;
                }
            }
        }
        para = if body.trim().is_empty() || indent >= 4 || !could_be_setext_text(body) {
            None
        } else {
            Some((line_offset, body.trim()))
        };
    }
    out
}

/// `#`–`######` then a space (or nothing): level and text without closing `#`s.
fn atx(body: &str) -> Option<(u8, &str)> {
    let hashes = body.bytes().take_while(|&b| b == b'#').count();
    if hashes == 0 || hashes > 6 {
        return None;
    }
    let rest = &body[hashes..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let mut text = rest.trim();
    let closing = text.trim_end_matches('#');
    if closing.is_empty() || closing.ends_with(' ') || closing.ends_with('\t') {
        text = closing.trim_end();
    }
    Some((hashes as u8, text))
}

/// List items, quotes and table rows are not setext heading text.
fn could_be_setext_text(body: &str) -> bool {
    let t = body.trim_start();
    !(t.starts_with("- ")
        || t.starts_with("* ")
        || t.starts_with("+ ")
        || t.starts_with('>')
        || t.starts_with('|')
        || t.starts_with('<'))
}
