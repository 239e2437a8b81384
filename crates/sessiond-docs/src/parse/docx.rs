//! DOCX → text from `word/document.xml`: one line per paragraph, one line per table row (cells
//! joined with ` | `), `Heading N`/`Title` paragraphs as `#`-prefixed lines. Deleted text
//! (`w:delText`) and `mc:Fallback` duplicates are skipped.

use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{clean_heading, Heading, Parsed};
use crate::error::DocError;

/// A cap on the decompressed main part, so a zip bomb fails instead of exhausting memory.
const MAX_DOCUMENT_XML: u64 = 256 * 1024 * 1024;

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, DocError> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| DocError::malformed("docx", e))?;
    let mut part = archive
        .by_name("word/document.xml")
        .map_err(|_| DocError::malformed("docx", "no word/document.xml in the archive"))?;
    if part.size() > MAX_DOCUMENT_XML {
        return Err(DocError::malformed(
            "docx",
            "word/document.xml is too large",
        ));
    }
    let mut xml = Vec::new();
    part.by_ref()
        .take(MAX_DOCUMENT_XML + 1)
        .read_to_end(&mut xml)
        .map_err(|e| DocError::malformed("docx", e))?;
    if xml.len() as u64 > MAX_DOCUMENT_XML {
        return Err(DocError::malformed(
            "docx",
            "word/document.xml is too large",
        ));
    }
    let xml = String::from_utf8(xml)
        .map_err(|_| DocError::malformed("docx", "word/document.xml is not UTF-8"))?;
    extract(&xml)
}

#[derive(Default)]
struct State {
    out: String,
    headings: Vec<Heading>,
    /// Text of the paragraph being read.
    para: String,
    style: Option<String>,
    in_text: bool,
    /// Depth inside a skipped subtree.
    skip: usize,
    /// Open tables → open rows → cells of the row.
    rows: Vec<Vec<String>>,
    /// Text of the innermost open cell, one entry per open `w:tc`.
    cells: Vec<String>,
}

fn extract(xml: &str) -> Result<Parsed, DocError> {
    let mut reader = Reader::from_str(xml);
    let mut st = State::default();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| DocError::malformed("docx", e))?;
        match event {
            Event::Eof => break,
            Event::Start(e) => {
                if st.skip > 0 {
                    st.skip += 1;
                    continue;
                }
                match e.local_name().as_ref() {
                    "Fallback" | "delText" | "instrText" => st.skip = 1,
                    "p" => {
                        st.para.clear();
                        st.style = None;
                    }
                    "t" => st.in_text = true,
                    "tr" => st.rows.push(Vec::new()),
                    "tc" => st.cells.push(String::new()),
                    "pStyle" => st.style = attr_val(&e),
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if st.skip > 0 {
                    continue;
                }
                match e.local_name().as_ref() {
                    "tab" => st.para.push('\t'),
                    "br" | "cr" => st.para.push('\n'),
                    "pStyle" => st.style = attr_val(&e),
                    // An empty paragraph or cell: nothing to add, but keep rows aligned.
                    "tc" => {
                        if let Some(row) = st.rows.last_mut() {
                            row.push(String::new());
                        }
                    }
                    _ => {}
                }
            }
            Event::End(e) => {
                if st.skip > 0 {
                    st.skip -= 1;
                    continue;
                }
                match e.local_name().as_ref() {
                    "t" => st.in_text = false,
                    "p" => st.end_paragraph(),
                    "tc" => {
                        let cell = st.cells.pop().unwrap_or_default();
                        if let Some(row) = st.rows.last_mut() {
                            row.push(cell);
                        }
                    }
                    "tr" => st.end_row(),
                    _ => {}
                }
            }
            Event::Text(t) if st.in_text && st.skip == 0 => st.para.push_str(&t.xml10_content()),
            Event::CData(t) if st.in_text && st.skip == 0 => {
                st.para.push_str(&t);
            }
            Event::GeneralRef(r) if st.in_text && st.skip == 0 => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    st.para.push(c);
                } else if let Some(c) = predefined_entity(&r) {
                    st.para.push(c);
                }
            }
            _ => {}
        }
    }
    let mut parsed = Parsed::plain(st.out, "docx");
    parsed.headings = st.headings;
    Ok(parsed)
}

impl State {
    fn end_paragraph(&mut self) {
        let para = std::mem::take(&mut self.para);
        if let Some(cell) = self.cells.last_mut() {
            // Paragraphs inside a cell are joined with spaces on the row's line.
            let t = collapse(&para);
            if !t.is_empty() {
                if !cell.is_empty() {
                    cell.push(' ');
                }
                cell.push_str(&t);
            }
            return;
        }
        let level = self.style.as_deref().and_then(heading_level);
        let lines: Vec<&str> = para
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return;
        }
        match level {
            Some(level) => {
                let text = clean_heading(&lines.join(" "));
                if !self.out.is_empty() {
                    self.out.push('\n');
                }
                self.headings.push(Heading {
                    offset: self.out.len(),
                    level,
                    text: text.clone(),
                });
                self.out.push_str(&"#".repeat(usize::from(level)));
                self.out.push(' ');
                self.out.push_str(&text);
                self.out.push('\n');
            }
            None => {
                for line in lines {
                    self.out.push_str(line);
                    self.out.push('\n');
                }
            }
        }
    }

    fn end_row(&mut self) {
        let Some(row) = self.rows.pop() else {
            return;
        };
        if row.iter().all(|c| c.is_empty()) {
            return;
        }
        let line = row.join(" | ");
        if let Some(cell) = self.cells.last_mut() {
            // A nested table's row lands inside the outer cell.
            if !cell.is_empty() {
                cell.push(' ');
            }
            cell.push_str(&line);
        } else {
            self.out.push_str(&line);
            self.out.push('\n');
        }
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Heading1`…`Heading9` (any case) and `Title`.
fn heading_level(style: &str) -> Option<u8> {
    let lower = style.to_ascii_lowercase();
    if lower == "title" {
        return Some(1);
    }
    let n: u8 = lower.strip_prefix("heading")?.trim().parse().ok()?;
    Some(n.clamp(1, 6))
}

fn attr_val(e: &BytesStart<'_>) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == "val")
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}
