//! An incremental `text/event-stream` parser following the WHATWG "event stream interpretation"
//! rules: lines end in CRLF, LF or CR (a CRLF may be split across chunks), `:` lines are
//! comments, `data` lines accumulate joined by `\n`, one space after the colon is dropped, and a
//! blank line dispatches the event.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// `message` when the event had no `event:` field.
    pub event: String,
    pub data: String,
    /// The last event id seen on this stream (it persists across events, as in browsers).
    pub id: Option<String>,
}

/// Bounds memory when a server (or something in between) sends a line or event without end.
pub(crate) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The incomplete line carried over from the previous chunk.
    partial: Vec<u8>,
    /// The previous chunk ended in CR: an LF starting the next one belongs to the same line end.
    skip_lf: bool,
    started: bool,
    event: String,
    data: String,
    id: Option<String>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds the next chunk of the body; returns the events it completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            let line = if self.partial.is_empty() {
                self.line(&chunk[..end], &mut out)
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..end]);
                self.line(&line, &mut out)
            };
            line?;
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            chunk = &chunk[next..];
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() > MAX_EVENT_BYTES {
            return Err(format!(
                "an event-stream line is longer than {MAX_EVENT_BYTES} bytes"
            ));
        }
        Ok(out)
    }

    fn line(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        let text = String::from_utf8_lossy(bytes);
        let mut line: &str = &text;
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(format!(
                        "an event-stream event is larger than {MAX_EVENT_BYTES} bytes"
                    ));
                }
            }
            // Per the spec an id containing NUL is ignored.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` and unknown fields: our reconnect policy is the client's own.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        // The spec drops events without data; a named one (`closed`) is kept anyway, so that a
        // terminal event is never missed because a proxy or server left its data out.
        if data.is_empty() && event.is_empty() {
            return;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.id.clone(),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        }
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.feed(c).unwrap()).collect()
    }

    const STREAM: &str = "\u{feff}: ping\n\nid: 1\nevent: record\ndata: {\"a\":\ndata:1}\n\n\
                          data:  two spaces\n\nevent: closed\n\nid\ndata\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            ev("record", "{\"a\":\n1}", Some("1")),
            ev("message", " two spaces", Some("1")),
            ev("closed", "", Some("1")),
            ev("message", "", Some("")),
        ]
    }

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        assert_eq!(parse_all(&[STREAM.as_bytes()]), expected());
    }

    #[test]
    fn any_line_ending_and_any_split() {
        for ending in ["\r\n", "\r"] {
            let text = STREAM.replace('\n', ending);
            let bytes = text.as_bytes();
            assert_eq!(parse_all(&[bytes]), expected(), "{ending:?}");
            // Every split point, including between CR and LF and inside the BOM.
            for i in 0..bytes.len() {
                assert_eq!(
                    parse_all(&[&bytes[..i], &bytes[i..]]),
                    expected(),
                    "{ending:?} split at {i}"
                );
            }
            // One byte at a time.
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(parse_all(&singles), expected(), "{ending:?} bytewise");
        }
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        let mut p = SseParser::new();
        assert!(p
            .feed(b"id: 3\nevent: record\ndata: x\n")
            .unwrap()
            .is_empty());
        assert_eq!(p.feed(b"\n").unwrap(), vec![ev("record", "x", Some("3"))]);
    }

    #[test]
    fn bounds_a_line_without_end() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(p.feed(&big).is_err());
    }
}
