//! Incremental `text/event-stream` parser: bytes in (any chunking), events out.
//!
//! Follows the WHATWG event-stream rules that matter for a client: lines end in LF, CRLF or a
//! lone CR (also when split across chunks); a blank line ends an event; lines starting with `:`
//! are comments; `field: value` loses one leading space of the value; `data` lines are joined
//! with `\n`; a block without `data` dispatches nothing; a leading UTF-8 BOM is skipped. Unlike a
//! browser, `id` is reported per event (`None` when the block had no `id:` line) instead of being
//! carried over, because the bench checks every event's own id.

use std::fmt;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    /// The `event:` field; `None` means the default type (`message`).
    pub event: Option<String>,
    pub data: String,
}

/// Why a stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line, or an event's data, grew past the parser's limit.
    TooLarge { limit: usize },
    /// A line is not UTF-8.
    NotUtf8,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::TooLarge { limit } => {
                write!(f, "event-stream line or event larger than {limit} bytes")
            }
            SseError::NotUtf8 => write!(f, "event-stream line is not UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug)]
pub struct SseParser {
    /// Bytes of an unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    skip_lf: bool,
    /// Still at the very start of the stream (BOM check pending).
    at_start: bool,
    id: Option<String>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// Comment lines seen (heartbeats).
    pub comments: u64,
    limit: usize,
}

impl SseParser {
    /// `limit` bounds one line and one event's data (bytes), so a broken server cannot make the
    /// client buffer without end.
    pub fn new(limit: usize) -> Self {
        Self {
            line: Vec::new(),
            skip_lf: false,
            at_start: true,
            id: None,
            event: None,
            data: String::new(),
            has_data: false,
            comments: 0,
            limit,
        }
    }

    /// Feeds the next chunk; complete events are appended to `out`. After an error the parser
    /// should be dropped (its state is unspecified).
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.at_start {
            // The BOM may itself arrive split; wait until we can decide.
            let have = self.line.len() + chunk.len();
            if have < BOM.len() {
                let mut joined = std::mem::take(&mut self.line);
                joined.extend_from_slice(chunk);
                if BOM.starts_with(&joined) {
                    self.line = joined;
                    return Ok(());
                }
                self.at_start = false;
                return self.push_bytes(&joined, out);
            }
            self.at_start = false;
            if !self.line.is_empty() {
                let mut joined = std::mem::take(&mut self.line);
                joined.extend_from_slice(chunk);
                let rest = joined.strip_prefix(BOM).unwrap_or(&joined).to_vec();
                return self.push_bytes(&rest, out);
            }
            chunk = chunk.strip_prefix(BOM).unwrap_or(chunk);
        }
        self.push_bytes(chunk, out)
    }

    fn push_bytes(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = chunk.split_at(pos);
            let cr = tail.first() == Some(&b'\r');
            let mut rest = tail.get(1..).unwrap_or_default();
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = rest.get(1..).unwrap_or_default(),
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if self.line.is_empty() {
                self.line_done(head, out)?;
            } else {
                self.grow(head)?;
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out)?;
            }
            chunk = rest;
        }
        self.grow(chunk)
    }

    fn grow(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.limit {
            return Err(SseError::TooLarge { limit: self.limit });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.first() == Some(&b':') {
            self.comments += 1;
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.limit {
                    return Err(SseError::TooLarge { limit: self.limit });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "event" => self.event = Some(value.to_string()),
            // `retry` and unknown fields do not concern the bench.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let id = self.id.take();
        let event = self.event.take();
        if !std::mem::take(&mut self.has_data) {
            self.data.clear();
            return;
        }
        out.push(SseEvent {
            id,
            event,
            data: std::mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ev(id: Option<&str>, event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_string),
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).unwrap();
        }
        out
    }

    const SERVER: &str = "id: 1\nevent: record\ndata: {\"seq\":1,\"id\":\"a\",\"data\":{\"t\":5},\"headers\":{},\"createdAt\":\"x\"}\n\n\
                          : ping\n\n\
                          id: 2\nevent: record\ndata: {\"seq\":2}\n\n";

    fn server_events() -> Vec<SseEvent> {
        vec![
            ev(
                Some("1"),
                Some("record"),
                r#"{"seq":1,"id":"a","data":{"t":5},"headers":{},"createdAt":"x"}"#,
            ),
            ev(Some("2"), Some("record"), r#"{"seq":2}"#),
        ]
    }

    #[test]
    fn server_stream_in_one_chunk() {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        p.push(SERVER.as_bytes(), &mut out).unwrap();
        assert_eq!(out, server_events());
        assert_eq!(p.comments, 1);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let bytes = SERVER.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let got = parse_chunks(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(got, server_events(), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let chunks: Vec<&[u8]> = SERVER.as_bytes().chunks(1).collect();
        assert_eq!(parse_chunks(&chunks), server_events());
    }

    #[test]
    fn crlf_and_lone_cr_line_ends() {
        let crlf = SERVER.replace('\n', "\r\n");
        let cr = SERVER.replace('\n', "\r");
        for text in [crlf, cr] {
            let bytes = text.as_bytes();
            for i in 0..=bytes.len() {
                let got = parse_chunks(&[&bytes[..i], &bytes[i..]]);
                assert_eq!(got, server_events(), "split at {i} of {text:?}");
            }
        }
    }

    #[test]
    fn lf_after_a_split_crlf_is_skipped_once() {
        // "data: a\r" | "\n" | "\n": the CRLF ends the data line, the last LF ends the event.
        let got = parse_chunks(&[b"data: a\r", b"\n", b"\n"]);
        assert_eq!(got, vec![ev(None, None, "a")]);
        let got = parse_chunks(&[b"data: a\r", b"", b"\n", b"\r", b"\n"]);
        assert_eq!(got, vec![ev(None, None, "a")]);
    }

    #[test]
    fn incomplete_event_waits_for_blank_line() {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        p.push(b"id: 7\ndata: x\n", &mut out).unwrap();
        assert!(out.is_empty());
        p.push(b"\n", &mut out).unwrap();
        assert_eq!(out, vec![ev(Some("7"), None, "x")]);
    }

    #[test]
    fn field_rules() {
        let got = parse_chunks(&[b"data:no-space\ndata:  two spaces\ndata\n\n\
              : comment only\n\n\
              id: 9\nevent: x\n\n\
              retry: 10\nfoo: bar\ndata: y\n\n\
              id: a\0b\ndata: z\n\n"]);
        assert_eq!(
            got,
            vec![
                ev(None, None, "no-space\n two spaces\n"),
                // The id/event-only block dispatches nothing and does not leak into the next.
                ev(None, None, "y"),
                ev(None, None, "z"),
            ]
        );
    }

    #[test]
    fn bom_is_skipped_even_when_split() {
        let mut text = BOM.to_vec();
        text.extend_from_slice(b"data: a\n\n");
        for i in 0..=text.len() {
            let got = parse_chunks(&[&text[..i], &text[i..]]);
            assert_eq!(got, vec![ev(None, None, "a")], "split at {i}");
        }
        // Only at the very start.
        let mut late = b"data: a\n\n".to_vec();
        late.extend_from_slice(BOM);
        late.extend_from_slice(b"data: b\n\n");
        assert_eq!(parse_chunks(&[&late]).len(), 1);
        // A short first chunk that is not a BOM is not swallowed.
        assert_eq!(
            parse_chunks(&[b"d", b"ata: c\n\n"]),
            vec![ev(None, None, "c")]
        );
    }

    #[test]
    fn limits_and_bad_utf8() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert_eq!(
            p.push(&[b'x'; 17], &mut out),
            Err(SseError::TooLarge { limit: 16 })
        );
        let mut p = SseParser::new(16);
        assert!(p.push(b"data: 0123456789\n", &mut out).is_ok());
        assert_eq!(
            p.push(b"data: 0123456789\n", &mut out),
            Err(SseError::TooLarge { limit: 16 })
        );
        let mut p = SseParser::new(16);
        assert_eq!(p.push(b"data: \xff\n", &mut out), Err(SseError::NotUtf8));
        assert!(out.is_empty());
    }
}
