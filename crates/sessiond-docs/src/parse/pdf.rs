//! PDF → text, one `--- page N ---` marker line before each page (1-based).

use super::{panic_message, Parsed};
use crate::error::DocError;

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, DocError> {
    // pdf-extract still panics on some malformed files; a bad upload must fail its job, not
    // take the worker down.
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
        .map_err(|p| DocError::malformed("pdf", panic_message(p)))?
        .map_err(|e| DocError::malformed("pdf", e))?;
    let mut text = String::new();
    let mut any_text = false;
    for (i, page) in pages.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!("--- page {} ---\n", i + 1));
        let body = tidy(page);
        if !body.is_empty() {
            any_text = true;
            text.push_str(&body);
            text.push('\n');
        }
    }
    if !any_text {
        // No pages, or only images (a scan): nothing to chunk.
        return Err(DocError::Empty);
    }
    let mut parsed = Parsed::plain(text, "pdf");
    parsed.pages = Some(pages.len());
    Ok(parsed)
}

/// Trailing spaces dropped, runs of blank lines collapsed to one, ends trimmed.
fn tidy(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut blank = false;
    for line in page.replace("\r\n", "\n").replace('\r', "\n").lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}
