//! HTML → visible text. Headings become `#`-prefixed lines (by level), block elements line
//! breaks, table cells ` | `-joined, list items `- ` lines; whitespace outside `<pre>` is
//! collapsed. Script, style, noscript, template, head and hidden elements are dropped.

use ego_tree::iter::Edge;
use scraper::node::Element;
use scraper::{Html, Node};

use super::{clean_heading, utf8, Heading, Parsed};
use crate::error::DocError;

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, DocError> {
    let source = utf8(bytes)?;
    let doc = Html::parse_document(source);
    let mut b = Builder::default();
    // Depth inside a dropped subtree (0 = emitting).
    let mut skip = 0usize;
    let mut pre = 0usize;
    // Table cells seen in each open row; inside a cell, block breaks become spaces.
    let mut rows: Vec<usize> = Vec::new();
    let mut cell = 0usize;

    // `traverse` is iterative, so deeply nested markup cannot overflow the stack.
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(el) => {
                    if skip > 0 {
                        skip += 1;
                        continue;
                    }
                    if is_dropped(el) {
                        skip = 1;
                        continue;
                    }
                    let name = el.name();
                    match name {
                        "br" if cell > 0 => b.space(),
                        "br" => b.break_line(false),
                        "hr" => b.break_line(true),
                        "pre" => {
                            b.break_line(true);
                            pre += 1;
                        }
                        "tr" => {
                            b.break_line(false);
                            rows.push(0);
                        }
                        "td" | "th" => {
                            if let Some(n) = rows.last_mut() {
                                if *n > 0 {
                                    b.raw(" | ");
                                }
                                *n += 1;
                            }
                            cell += 1;
                        }
                        "li" if cell == 0 => {
                            b.break_line(false);
                            b.bullet = true;
                        }
                        _ => {
                            if let Some(level) = heading_level(name) {
                                if cell == 0 {
                                    b.start_heading(level);
                                }
                            } else if cell > 0 && is_block(name).is_some() {
                                b.space();
                            } else if let Some(blank) = is_block(name) {
                                b.break_line(blank);
                            }
                        }
                    }
                }
                Node::Text(t) if skip == 0 => b.text(t, pre > 0),
                _ => {}
            },
            Edge::Close(node) => {
                let Node::Element(el) = node.value() else {
                    continue;
                };
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let name = el.name();
                match name {
                    "pre" => {
                        pre = pre.saturating_sub(1);
                        b.end_pre();
                    }
                    "tr" => {
                        rows.pop();
                        b.break_line(false);
                    }
                    "td" | "th" => {
                        cell = cell.saturating_sub(1);
                        b.space();
                    }
                    "li" if cell == 0 => {
                        b.bullet = false;
                        b.break_line(false);
                    }
                    _ => {
                        if heading_level(name).is_some() && cell == 0 {
                            b.end_heading();
                        } else if cell > 0 && is_block(name).is_some() {
                            b.space();
                        } else if let Some(blank) = is_block(name) {
                            b.break_line(blank);
                        }
                    }
                }
            }
        }
    }
    b.break_line(false);
    let mut parsed = Parsed::plain(b.out, "html");
    parsed.headings = b.headings;
    Ok(parsed)
}

fn is_dropped(el: &Element) -> bool {
    if matches!(
        el.name(),
        "head"
            | "script"
            | "style"
            | "noscript"
            | "template"
            | "iframe"
            | "object"
            | "embed"
            | "canvas"
            | "svg"
    ) {
        return true;
    }
    if el.attr("hidden").is_some() || el.attr("aria-hidden") == Some("true") {
        return true;
    }
    el.attr("style").is_some_and(|s| {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        s.contains("display:none") || s.contains("visibility:hidden")
    })
}

fn heading_level(name: &str) -> Option<u8> {
    Some(match name {
        "h1" => 1,
        "h2" => 2,
        "h3" => 3,
        "h4" => 4,
        "h5" => 5,
        "h6" => 6,
        _ => return None,
    })
}

/// Block elements; `Some(true)` for those separated by a blank line.
fn is_block(name: &str) -> Option<bool> {
    Some(match name {
        "p" | "table" | "blockquote" | "ul" | "ol" | "dl" | "section" | "article" | "header"
        | "footer" | "figure" | "main" | "nav" | "aside" | "form" | "fieldset" | "details" => true,
        "div" | "address" | "dd" | "dt" | "dialog" | "figcaption" | "hgroup" | "summary"
        | "caption" | "thead" | "tbody" | "tfoot" | "center" | "legend" | "option" | "menu"
        | "body" | "html" => false,
        _ => return None,
    })
}

#[derive(Default)]
struct Builder {
    out: String,
    line: String,
    pending_space: bool,
    blank_before: bool,
    /// A list item opened: its first text gets a `- ` prefix.
    bullet: bool,
    /// Level and byte length of the `## ` prefix of the heading being built.
    heading: Option<(u8, usize)>,
    headings: Vec<Heading>,
}

impl Builder {
    fn text(&mut self, s: &str, pre: bool) {
        if pre {
            for (i, part) in s.split('\n').enumerate() {
                if i > 0 {
                    self.flush_pre_line();
                }
                self.line.push_str(part);
            }
            return;
        }
        let mut words = s.split_whitespace().peekable();
        if s.starts_with(char::is_whitespace) {
            self.pending_space = true;
        }
        while let Some(w) = words.next() {
            if self.pending_space && !self.line.is_empty() && !self.line.ends_with(' ') {
                self.line.push(' ');
            }
            self.pending_space = false;
            if self.bullet && self.line.is_empty() {
                self.line.push_str("- ");
                self.bullet = false;
            }
            self.line.push_str(w);
            if words.peek().is_some() {
                self.pending_space = true;
            }
        }
        if s.ends_with(char::is_whitespace) {
            self.pending_space = true;
        }
    }

    fn raw(&mut self, s: &str) {
        self.line.push_str(s);
        self.pending_space = false;
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn start_heading(&mut self, level: u8) {
        self.break_line(true);
        let prefix = "#".repeat(usize::from(level)) + " ";
        self.heading = Some((level, prefix.len()));
        self.line.push_str(&prefix);
    }

    fn end_heading(&mut self) {
        self.break_line(true);
    }

    fn break_line(&mut self, blank: bool) {
        let line = std::mem::take(&mut self.line);
        let heading = self.heading.take();
        self.pending_space = false;
        let mut body = line.trim();
        let mut heading_text = None;
        if let Some((level, prefix)) = heading {
            let text = line.get(prefix..).map(str::trim).unwrap_or("");
            let cleaned = clean_heading(text);
            if cleaned.is_empty() {
                body = "";
            } else {
                heading_text = Some((level, cleaned));
            }
        }
        if !body.is_empty() {
            if self.blank_before && !self.out.is_empty() {
                self.out.push('\n');
            }
            if let Some((level, text)) = heading_text {
                self.headings.push(Heading {
                    offset: self.out.len(),
                    level,
                    text,
                });
            }
            self.out.push_str(body);
            self.out.push('\n');
            self.blank_before = false;
        }
        self.blank_before |= blank;
    }

    fn end_pre(&mut self) {
        if !self.line.trim().is_empty() {
            self.flush_pre_line();
        }
        self.line.clear();
        self.break_line(true);
    }

    /// Inside `<pre>`: keep the line as is, including blank ones.
    fn flush_pre_line(&mut self) {
        if self.blank_before && !self.out.is_empty() {
            self.out.push('\n');
            self.blank_before = false;
        }
        let line = std::mem::take(&mut self.line);
        self.out.push_str(line.trim_end());
        self.out.push('\n');
    }
}
