//! `/v1/sessions/{session}/channels` over HTTP: append and read, exactly-once by record id, bad
//! input, the `events` channel, long-polling, SSE (catch-up, live, resume, closed, deleted) and a
//! reader that keeps disconnecting while four writers append.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{id_of, path, Api, Resp, TestServer};

// ---------------------------------------------------------------------------------------------
// helpers

fn records_path(session: &str, channel: &str) -> String {
    format!("{}/channels/{channel}/records", path(session))
}

fn channels_path(session: &str) -> String {
    format!("{}/channels", path(session))
}

async fn new_session(api: &Api) -> String {
    id_of(&api.create(json!({})).await)
}

/// POSTs `{"records": records}` to a channel.
async fn append(api: &Api, session: &str, channel: &str, records: Value) -> Resp {
    api.post(
        &records_path(session, channel),
        &json!({ "records": records }),
    )
    .await
}

/// A JSON read with the given query; asserts 200.
async fn read(api: &Api, session: &str, channel: &str, query: &str) -> Value {
    let mut p = records_path(session, channel);
    if !query.is_empty() {
        p.push('?');
        p.push_str(query);
    }
    api.get(&p).await.expect(200)
}

/// The channel's `lastSeq` as a JSON read reports it.
async fn last_seq(api: &Api, session: &str, channel: &str) -> i64 {
    read(api, session, channel, "limit=1").await["lastSeq"]
        .as_i64()
        .expect("lastSeq is an integer")
}

/// Every record of a channel, following `nextAfter`.
async fn read_all(api: &Api, session: &str, channel: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = read(api, session, channel, &format!("after={after}&limit=1000")).await;
        let records = page["records"].as_array().expect("records array").clone();
        if records.is_empty() {
            assert_eq!(page["nextAfter"], after, "{page}");
            return out;
        }
        after = page["nextAfter"].as_i64().expect("nextAfter");
        assert_eq!(records.last().unwrap()["seq"], after);
        out.extend(records);
    }
}

/// The channel list as `(name, lastSeq, recordCount)`.
async fn channel_rows(api: &Api, session: &str) -> Vec<(String, i64, i64)> {
    let list = api.get(&channels_path(session)).await.expect(200);
    list.as_array()
        .unwrap_or_else(|| panic!("channel list is not an array: {list}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["lastSeq"].as_i64().unwrap(),
                c["recordCount"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn seqs(records: &[Value]) -> Vec<i64> {
    records.iter().map(|r| r["seq"].as_i64().unwrap()).collect()
}

/// `[{id, seq, duplicate}]` of an append answer, as tuples.
fn results(body: &Value) -> Vec<(String, i64, bool)> {
    body["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records in {body}"))
        .iter()
        .map(|r| {
            let obj = r.as_object().unwrap();
            assert_eq!(obj.len(), 3, "append result keys: {r}");
            (
                r["id"].as_str().unwrap().to_owned(),
                r["seq"].as_i64().unwrap(),
                r["duplicate"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[track_caller]
fn assert_timestamp(t: &Value) {
    let t = t
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {t}"));
    assert!(
        t.ends_with('Z') && t.len() == 24,
        "not RFC 3339 UTC with ms: {t}"
    );
}

/// Asserts a record has exactly the documented keys.
#[track_caller]
fn assert_record_shape(r: &Value) {
    let mut keys: Vec<&str> = r
        .as_object()
        .unwrap_or_else(|| panic!("record is not an object: {r}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["createdAt", "data", "headers", "id", "seq"],
        "keys of {r}"
    );
    assert!(r["headers"].is_object(), "headers is an object: {r}");
    assert_timestamp(&r["createdAt"]);
}

// ---------------------------------------------------------------------------------------------
// a small SSE client over reqwest

/// One SSE event (comment-only frames are skipped).
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl Frame {
    /// The record of an `event: record` frame, checking that `id:` is its seq.
    #[track_caller]
    fn record(&self) -> Value {
        assert_eq!(
            self.event.as_deref(),
            Some("record"),
            "not a record: {self:?}"
        );
        let r: Value = serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("record data is not JSON ({e}): {self:?}"));
        assert_eq!(
            self.id.as_deref(),
            Some(r["seq"].to_string().as_str()),
            "id: is not the seq: {self:?}"
        );
        r
    }
}

/// How long one frame may take to arrive before a test fails.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

struct Sse {
    what: String,
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Where the unparsed bytes of `buf` start.
    start: usize,
    /// Comment lines seen so far (`: ping`).
    comments: usize,
}

impl Sse {
    /// Opens a stream with `Accept: text/event-stream` (and `Last-Event-ID` when given);
    /// asserts a 200 event stream.
    async fn open(api: &Api, path: &str, last_event_id: Option<&str>) -> Sse {
        let what = format!("SSE {path} (Last-Event-ID {last_event_id:?})");
        let mut rb = api
            .request(Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id);
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        Self::from_response(what, resp).await
    }

    /// Opens a stream with no Accept header (for `?stream=sse`).
    async fn open_plain(api: &Api, path: &str) -> Sse {
        let what = format!("SSE {path}");
        let resp = api
            .request(Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        Self::from_response(what, resp).await
    }

    async fn from_response(what: String, resp: reqwest::Response) -> Sse {
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp.text().await.unwrap_or_default();
            panic!("{what} answered {status}: {text}");
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            ct.starts_with("text/event-stream"),
            "{what}: content-type {ct:?}"
        );
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-cache"),
            "{what}"
        );
        Sse {
            what,
            resp,
            buf: Vec::new(),
            start: 0,
            comments: 0,
        }
    }

    /// The next complete frame already in the buffer.
    fn parse_one(&mut self) -> Option<Frame> {
        loop {
            let rest = &self.buf[self.start..];
            let end = rest.windows(2).position(|w| w == b"\n\n")?;
            let text = String::from_utf8(rest[..end].to_vec())
                .unwrap_or_else(|e| panic!("{}: frame is not UTF-8: {e}", self.what));
            self.start += end + 2;
            let mut frame = Frame {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut has_data = false;
            let mut only_comments = true;
            for line in text.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                only_comments = false;
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "id" => frame.id = Some(value.to_owned()),
                    "event" => frame.event = Some(value.to_owned()),
                    "data" => {
                        if has_data {
                            frame.data.push('\n');
                        }
                        frame.data.push_str(value);
                        has_data = true;
                    }
                    other => panic!("{}: unexpected SSE field {other:?} in {text:?}", self.what),
                }
            }
            if !only_comments {
                return Some(frame);
            }
        }
    }

    /// The next event, or `None` when the stream ended. Panics when nothing arrives in time.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.parse_one() {
                return Some(f);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let chunk = tokio::time::timeout(FRAME_TIMEOUT, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("{}: no event within {FRAME_TIMEOUT:?}", self.what))
                .unwrap_or_else(|e| panic!("{}: reading the stream failed: {e}", self.what));
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => {
                    let rest = &self.buf[self.start..];
                    assert!(
                        rest.iter().all(u8::is_ascii_whitespace),
                        "{}: the stream ended inside a frame: {:?}",
                        self.what,
                        String::from_utf8_lossy(rest)
                    );
                    return None;
                }
            }
        }
    }

    /// The next event, which must exist.
    async fn frame(&mut self) -> Frame {
        match self.next().await {
            Some(f) => f,
            None => panic!("{}: the stream ended early", self.what),
        }
    }

    /// The next `n` events, which must all be records; returns the records.
    async fn records(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.frame().await.record());
        }
        out
    }

    /// Asserts that nothing arrives for `d` (no event; comments are allowed).
    async fn assert_quiet(&mut self, d: Duration) {
        if let Some(f) = self.parse_one() {
            panic!("{}: unexpected event {f:?}", self.what);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return,
                Ok(Ok(Some(bytes))) => {
                    self.buf.extend_from_slice(&bytes);
                    if let Some(f) = self.parse_one() {
                        panic!("{}: unexpected event {f:?}", self.what);
                    }
                }
                Ok(Ok(None)) => panic!("{}: the stream ended", self.what),
                Ok(Err(e)) => panic!("{}: reading the stream failed: {e}", self.what),
            }
        }
    }

    /// Asserts the stream ends (the server closes it) with no further event.
    async fn assert_ends(&mut self) {
        if let Some(f) = self.next().await {
            panic!("{}: expected the end of the stream, got {f:?}", self.what);
        }
    }
}

/// Xorshift64: a seeded, dependency-free generator for the random disconnect points.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// append and read

#[tokio::test]
async fn append_and_read_basics() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;

    let r = append(
        &s,
        &id,
        "in",
        json!([
            {"id": "a", "data": {"text": "hello"}, "headers": {"role": "user", "n": 1}},
            {"data": [1, 2, 3]},
            {"id": "c", "data": null},
            {"id": "d", "data": "str", "headers": null},
            {"id": "e", "data": 0.5, "headers": {}},
        ]),
    )
    .await;
    let body = r.expect(201);
    assert_eq!(body["firstSeq"], 1, "{body}");
    assert_eq!(body["lastSeq"], 5, "{body}");
    let res = results(&body);
    assert_eq!(
        res.iter().map(|r| r.1).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "gapless from 1"
    );
    assert!(res.iter().all(|r| !r.2), "nothing is a duplicate: {body}");
    assert_eq!(res[0].0, "a");
    // An absent id is generated (a UUID).
    let generated = res[1].0.clone();
    Uuid::parse_str(&generated).unwrap_or_else(|_| panic!("generated id {generated:?}"));

    let page = read(&s, &id, "in", "").await;
    let keys: Vec<&str> = page
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["records", "lastSeq", "nextAfter"], "{page}");
    assert_eq!(page["lastSeq"], 5);
    assert_eq!(page["nextAfter"], 5);
    let recs = page["records"].as_array().unwrap();
    assert_eq!(seqs(recs), [1, 2, 3, 4, 5]);
    for r in recs {
        assert_record_shape(r);
    }
    assert_eq!(recs[0]["id"], "a");
    assert_eq!(recs[0]["data"], json!({"text": "hello"}));
    assert_eq!(recs[0]["headers"], json!({"role": "user", "n": 1}));
    assert_eq!(recs[1]["id"], generated.as_str());
    assert_eq!(recs[1]["data"], json!([1, 2, 3]));
    assert_eq!(recs[1]["headers"], json!({}), "absent headers are {{}}");
    // `null` data is a value, kept as such.
    assert_eq!(recs[2]["id"], "c");
    assert!(
        recs[2].as_object().unwrap().contains_key("data") && recs[2]["data"].is_null(),
        "{}",
        recs[2]
    );
    assert_eq!(recs[3]["data"], "str");
    assert_eq!(recs[3]["headers"], json!({}), "null headers are {{}}");
    assert_eq!(recs[4]["data"], 0.5);

    // A missing `data` is not `null`: 422, and nothing is appended.
    append(&s, &id, "in", json!([{"id": "f"}]))
        .await
        .expect_error(422, "invalid_field");
    append(
        &s,
        &id,
        "in",
        json!([{"id": "g", "data": 1}, {"headers": {}}]),
    )
    .await
    .expect_error(422, "invalid_field");
    assert_eq!(last_seq(&s, &id, "in").await, 5);

    // A second append continues the sequence.
    let body = append(&s, &id, "in", json!([{"data": 6}, {"data": 7}]))
        .await
        .expect(201);
    assert_eq!(
        (body["firstSeq"].as_i64(), body["lastSeq"].as_i64()),
        (Some(6), Some(7))
    );
    assert_eq!(
        seqs(&read_all(&s, &id, "in").await),
        (1..=7).collect::<Vec<_>>()
    );

    // The session can be addressed by externalId too.
    s.create(json!({"externalId": "ext-chan"})).await;
    append(&s, "ext-chan", "in", json!([{"data": 1}]))
        .await
        .expect(201);
    assert_eq!(last_seq(&s, "ext-chan", "in").await, 1);
}

#[tokio::test]
async fn channels_are_independent() {
    let s = TestServer::start().await;
    let a = new_session(&s).await;
    let b = new_session(&s).await;

    for (session, channel, n) in [
        (&a, "in", 3),
        (&a, "out", 2),
        (&b, "in", 1),
        (&a, "x.y_z-0", 4),
    ] {
        let recs: Vec<Value> = (0..n).map(|i| json!({"id": "same", "data": i})).collect();
        // The same id is a duplicate inside one channel only.
        let body = append(&s, session, channel, Value::Array(recs))
            .await
            .expect(201);
        assert_eq!(body["firstSeq"], 1, "{session}/{channel}: {body}");
        assert_eq!(body["lastSeq"], 1, "{session}/{channel}: {body}");
        let more: Vec<Value> = (0..n).map(|i| json!({"data": i})).collect();
        let body = append(&s, session, channel, Value::Array(more))
            .await
            .expect(201);
        assert_eq!(body["firstSeq"], 2);
        assert_eq!(body["lastSeq"], 1 + n);
    }
    assert_eq!(seqs(&read_all(&s, &a, "in").await), [1, 2, 3, 4]);
    assert_eq!(seqs(&read_all(&s, &a, "out").await), [1, 2, 3]);
    assert_eq!(seqs(&read_all(&s, &b, "in").await), [1, 2]);
    assert_eq!(seqs(&read_all(&s, &a, "x.y_z-0").await), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(&read_all(&s, &b, "out").await), Vec::<i64>::new());
}

#[tokio::test]
async fn reads_page_with_after_limit_and_next_after() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    let recs: Vec<Value> = (1..=25)
        .map(|i| json!({"id": format!("r{i}"), "data": i}))
        .collect();
    append(&s, &id, "in", Value::Array(recs)).await.expect(201);

    let page = read(&s, &id, "in", "limit=10").await;
    assert_eq!(
        seqs(page["records"].as_array().unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(page["nextAfter"], 10);
    assert_eq!(page["lastSeq"], 25);
    let page = read(&s, &id, "in", "after=10&limit=10").await;
    assert_eq!(
        seqs(page["records"].as_array().unwrap()),
        (11..=20).collect::<Vec<_>>()
    );
    let page = read(&s, &id, "in", "after=20&limit=10").await;
    assert_eq!(
        seqs(page["records"].as_array().unwrap()),
        (21..=25).collect::<Vec<_>>()
    );
    assert_eq!(page["nextAfter"], 25);
    // Past the end: empty, nextAfter stays where it was.
    let page = read(&s, &id, "in", "after=25").await;
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["nextAfter"], 25);
    assert_eq!(page["lastSeq"], 25);
    let page = read(&s, &id, "in", "after=1000").await;
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["nextAfter"], 1000);
    // `after=latest` without wait: nothing, and nextAfter is the head.
    let page = read(&s, &id, "in", "after=latest").await;
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["nextAfter"], 25);
    assert_eq!(page["lastSeq"], 25);
    // Default limit 100, limits 1 and 1000 accepted.
    let many: Vec<Value> = (0..200).map(|i| json!({"data": i})).collect();
    append(&s, &id, "in", Value::Array(many)).await.expect(201);
    assert_eq!(
        read(&s, &id, "in", "").await["records"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    assert_eq!(
        read(&s, &id, "in", "limit=1").await["records"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        read(&s, &id, "in", "limit=1000").await["records"]
            .as_array()
            .unwrap()
            .len(),
        225
    );
    assert_eq!(
        read(&s, &id, "in", "wait=0").await["records"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
}

// ---------------------------------------------------------------------------------------------
// exactly once

#[tokio::test]
async fn a_retried_batch_appends_once() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(&s, &id, "in", json!([{"id": "first", "data": 0}]))
        .await
        .expect(201);
    let batch = json!([
        {"id": "a", "data": 1},
        {"id": "b", "data": 2, "headers": {"h": "x"}},
        {"id": "c", "data": 3},
    ]);
    let first = append(&s, &id, "in", batch.clone()).await.expect(201);
    assert_eq!(
        results(&first),
        [
            ("a".into(), 2, false),
            ("b".into(), 3, false),
            ("c".into(), 4, false)
        ]
    );
    assert_eq!(
        (first["firstSeq"].as_i64(), first["lastSeq"].as_i64()),
        (Some(2), Some(4))
    );

    let r = append(&s, &id, "in", batch.clone()).await;
    let again = r.expect(200);
    assert_eq!(
        results(&again),
        [
            ("a".into(), 2, true),
            ("b".into(), 3, true),
            ("c".into(), 4, true)
        ]
    );
    assert_eq!(
        (again["firstSeq"].as_i64(), again["lastSeq"].as_i64()),
        (Some(2), Some(4))
    );
    // Duplicates with different data still keep the original record.
    let changed = json!([{"id": "b", "data": "changed"}]);
    let dup = append(&s, &id, "in", changed).await.expect(200);
    assert_eq!(results(&dup), [("b".into(), 3, true)]);
    assert_eq!(
        (dup["firstSeq"].as_i64(), dup["lastSeq"].as_i64()),
        (Some(3), Some(3))
    );

    let all = read_all(&s, &id, "in").await;
    assert_eq!(seqs(&all), [1, 2, 3, 4]);
    assert_eq!(all[2]["data"], 2);
    assert_eq!(all[2]["headers"], json!({"h": "x"}));
    assert_eq!(channel_rows(&s, &id).await[1], ("in".into(), 4, 4));
}

#[tokio::test]
async fn an_id_repeated_in_one_batch_is_appended_once() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    let body = append(
        &s,
        &id,
        "in",
        json!([
            {"id": "a", "data": "first a"},
            {"id": "b", "data": "b"},
            {"id": "a", "data": "second a"},
            {"id": "a", "data": "third a"},
        ]),
    )
    .await
    .expect(201);
    assert_eq!(
        results(&body),
        [
            ("a".into(), 1, false),
            ("b".into(), 2, false),
            ("a".into(), 1, true),
            ("a".into(), 1, true),
        ]
    );
    assert_eq!(
        (body["firstSeq"].as_i64(), body["lastSeq"].as_i64()),
        (Some(1), Some(2))
    );
    let all = read_all(&s, &id, "in").await;
    assert_eq!(seqs(&all), [1, 2]);
    assert_eq!(all[0]["data"], "first a", "the first occurrence wins");
}

#[tokio::test]
async fn a_batch_of_old_and_new_ids_appends_the_new_ones() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(
        &s,
        &id,
        "out",
        json!([{"id": "a", "data": 1}, {"id": "b", "data": 2}]),
    )
    .await
    .expect(201);
    let body = append(
        &s,
        &id,
        "out",
        json!([
            {"id": "c", "data": 3},
            {"id": "b", "data": "again"},
            {"id": "d", "data": 4},
            {"id": "a", "data": "again"},
        ]),
    )
    .await
    .expect(201);
    assert_eq!(
        results(&body),
        [
            ("c".into(), 3, false),
            ("b".into(), 2, true),
            ("d".into(), 4, false),
            ("a".into(), 1, true),
        ]
    );
    // The lowest and highest seq among the batch's records.
    assert_eq!(
        (body["firstSeq"].as_i64(), body["lastSeq"].as_i64()),
        (Some(1), Some(4))
    );
    let all = read_all(&s, &id, "out").await;
    assert_eq!(seqs(&all), [1, 2, 3, 4]);
    let ids: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(all[1]["data"], 2);
    assert_eq!(channel_rows(&s, &id).await[1], ("out".into(), 4, 4));
}

// ---------------------------------------------------------------------------------------------
// bad input

#[tokio::test]
async fn bad_appends_are_refused_and_append_nothing() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(
        &s,
        &id,
        "in",
        json!([{"id": "x", "data": 1}, {"id": "y", "data": 2}]),
    )
    .await
    .expect(201);
    let before = channel_rows(&s, &id).await;
    let p = records_path(&id, "in");

    let long_id = "i".repeat(257);
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"data": i})).collect();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("empty batch", json!({"records": []}), 422, "invalid_field"),
        (
            "1001 records",
            json!({"records": too_many}),
            422,
            "invalid_field",
        ),
        (
            "missing data",
            json!({"records": [{"id": "n1"}]}),
            422,
            "invalid_field",
        ),
        (
            "missing data after a good record",
            json!({"records": [{"id": "n1", "data": 1}, {"id": "n2"}]}),
            422,
            "invalid_field",
        ),
        (
            "empty id",
            json!({"records": [{"id": "", "data": 1}]}),
            422,
            "invalid_field",
        ),
        (
            "257-char id",
            json!({"records": [{"id": long_id, "data": 1}]}),
            422,
            "invalid_field",
        ),
        (
            "control char in id",
            json!({"records": [{"id": "a\nb", "data": 1}]}),
            422,
            "invalid_field",
        ),
        (
            "bad id after good records",
            json!({"records": [{"id": "n1", "data": 1}, {"id": "", "data": 2}]}),
            422,
            "invalid_field",
        ),
        (
            "headers not an object",
            json!({"records": [{"data": 1, "headers": [1]}]}),
            422,
            "invalid_field",
        ),
        (
            "id not a string",
            json!({"records": [{"id": 5, "data": 1}]}),
            422,
            "invalid_body",
        ),
        (
            "unknown record field",
            json!({"records": [{"data": 1, "dta": 2}]}),
            422,
            "invalid_body",
        ),
        (
            "unknown top-level field",
            json!({"records": [{"data": 1}], "extra": true}),
            422,
            "invalid_body",
        ),
        ("records missing", json!({}), 422, "invalid_body"),
        (
            "records not an array",
            json!({"records": {"data": 1}}),
            422,
            "invalid_body",
        ),
    ];
    for (what, body, status, code) in &cases {
        let r = s.post(&p, body).await;
        assert_eq!(r.status, *status, "{what}: {}", r.text);
        r.expect_error(*status, code);
        assert_eq!(
            channel_rows(&s, &id).await,
            before,
            "{what} appended something"
        );
    }
    // A 256-character id is fine (the limit is inclusive); then it is a duplicate.
    let max_id = "m".repeat(256);
    append(&s, &id, "in", json!([{"id": max_id, "data": 1}]))
        .await
        .expect(201);
    append(&s, &id, "in", json!([{"id": max_id, "data": 1}]))
        .await
        .expect(200);
    append(&s, &id, "in", json!([]))
        .await
        .expect_error(422, "invalid_field");
    let exactly_1000: Vec<Value> = (0..1000).map(|i| json!({"data": i})).collect();
    append(&s, &id, "scratch", Value::Array(exactly_1000))
        .await
        .expect(201);
    let before = channel_rows(&s, &id).await;

    // Syntax errors and media types.
    s.raw(Method::POST, &p, "application/json", "{\"records\": [")
        .await
        .expect_error(400, "invalid_json");
    s.raw(Method::POST, &p, "application/json", "")
        .await
        .expect_error(400, "invalid_json");
    s.raw(
        Method::POST,
        &p,
        "text/plain",
        r#"{"records":[{"data":1}]}"#,
    )
    .await
    .expect_error(415, "unsupported_media_type");

    // Channel names.
    let x65 = "x".repeat(65);
    for bad in [
        "In",
        "-a",
        ".a",
        "_a",
        "a%20b",
        "%C3%A9",
        x65.as_str(),
        "a%2Fb",
    ] {
        let r = s
            .post(
                &format!("{}/channels/{bad}/records", path(&id)),
                &json!({"records": [{"data": 1}]}),
            )
            .await;
        r.expect_error(400, "invalid_channel");
        let r = s
            .get(&format!("{}/channels/{bad}/records", path(&id)))
            .await;
        r.expect_error(400, "invalid_channel");
    }
    // `events` is written by the server only.
    append(&s, &id, "events", json!([{"data": 1}]))
        .await
        .expect_error(403, "channel_read_only");
    // Unknown session.
    let missing = Uuid::new_v4().to_string();
    append(&s, &missing, "in", json!([{"data": 1}]))
        .await
        .expect_error(404, "session_not_found");
    append(&s, "no-such-external-id", "in", json!([{"data": 1}]))
        .await
        .expect_error(404, "session_not_found");

    assert_eq!(
        channel_rows(&s, &id).await,
        before,
        "something was appended"
    );
    s.get(&path(&missing))
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test]
async fn oversized_appends_are_413_and_append_nothing() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(&s, &id, "in", json!([{"data": "seed"}]))
        .await
        .expect(201);
    let before = channel_rows(&s, &id).await;

    // One record over 1 MiB (data and headers together, as JSON).
    let mib = 1024 * 1024;
    let big = "x".repeat(mib);
    append(&s, &id, "in", json!([{"data": big}]))
        .await
        .expect_error(413, "record_too_large");
    let half = "y".repeat(mib / 2 + 10);
    append(
        &s,
        &id,
        "in",
        json!([{"data": half, "headers": {"h": half}}]),
    )
    .await
    .expect_error(413, "record_too_large");
    // Just under the record limit is fine ("..." plus two quotes is the JSON size).
    let fits = "z".repeat(mib - 2 - 2);
    let body = append(&s, &id, "in", json!([{"data": fits}]))
        .await
        .expect(201);
    assert_eq!(body["lastSeq"], 2);
    let before_big = channel_rows(&s, &id).await;
    assert_ne!(before_big, before);

    // A batch over 8 MiB whose records each fit, with the body under the route's body limit
    // (the batch check) and over it (the body limit): both payload_too_large.
    let rec = "p".repeat(950_000);
    let nine: Vec<Value> = (0..9).map(|_| json!({"data": rec})).collect();
    append(&s, &id, "in", Value::Array(nine))
        .await
        .expect_error(413, "payload_too_large");
    let rec = "q".repeat(1_000_000);
    let twelve: Vec<Value> = (0..12).map(|_| json!({"data": rec})).collect();
    append(&s, &id, "in", Value::Array(twelve))
        .await
        .expect_error(413, "payload_too_large");
    assert_eq!(
        channel_rows(&s, &id).await,
        before_big,
        "something was appended"
    );
    assert_eq!(last_seq(&s, &id, "in").await, 2);
}

#[tokio::test]
async fn bad_reads_are_refused() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(&s, &id, "in", json!([{"data": 1}]))
        .await
        .expect(201);
    let p = records_path(&id, "in");
    for q in [
        "after=abc",
        "after=-1",
        "after=1.5",
        "after=",
        "after=LATEST",
        "wait=61",
        "wait=-1",
        "wait=abc",
        "wait=1.5",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "stream=json",
        "bogus=1",
    ] {
        s.get(&format!("{p}?{q}"))
            .await
            .expect_error(400, "invalid_query");
        // Also on the SSE form.
        let r = s
            .send(Method::GET, &format!("{p}?{q}"), |rb| {
                rb.header("accept", "text/event-stream")
            })
            .await;
        r.expect_error(400, "invalid_query");
    }
    for bad in ["abc", "-1", "1.5", "1,2"] {
        let r = s
            .send(Method::GET, &p, |rb| {
                rb.header("accept", "text/event-stream")
                    .header("last-event-id", bad)
            })
            .await;
        r.expect_error(400, "invalid_header");
    }
    let missing = Uuid::new_v4().to_string();
    s.get(&records_path(&missing, "in"))
        .await
        .expect_error(404, "session_not_found");
    s.get(&channels_path(&missing))
        .await
        .expect_error(404, "session_not_found");
    let r = s
        .send(Method::GET, &records_path(&missing, "in"), |rb| {
            rb.header("accept", "text/event-stream")
        })
        .await;
    r.expect_error(404, "session_not_found");
    // Boundaries that are fine.
    read(&s, &id, "in", "wait=0&limit=1000&after=0").await;
}

// ---------------------------------------------------------------------------------------------
// the session and its events channel

#[tokio::test]
async fn appends_do_not_change_the_session_version() {
    let s = TestServer::start().await;
    let created = s.create(json!({"title": "t"})).await;
    let id = id_of(&created);
    for ch in ["in", "out", "other"] {
        append(&s, &id, ch, json!([{"data": 1}, {"data": 2}]))
            .await
            .expect(201);
    }
    let r = s.get(&path(&id)).await;
    let now = r.expect(200);
    assert_eq!(r.etag(), "\"1\"");
    assert_eq!(now["version"], 1);
    assert_eq!(now["updatedAt"], created["updatedAt"]);
    assert_eq!(now, created);
    // Nor do they write events.
    assert_eq!(read_all(&s, &id, "events").await.len(), 1);
    // A patch still bumps it by one.
    let patched = s
        .patch(&path(&id), &json!({"title": "u"}))
        .await
        .expect(200);
    assert_eq!(patched["version"], 2);
    append(&s, &id, "in", json!([{"data": 3}]))
        .await
        .expect(201);
    assert_eq!(s.session(&id).await["version"], 2);
}

#[tokio::test]
async fn the_events_channel_records_the_session_history() {
    let s = TestServer::start().await;
    let id = id_of(
        &s.create(json!({"title": "a", "data": {"k": 0, "old": 1}}))
            .await,
    );
    append(&s, &id, "in", json!([{"data": 1}]))
        .await
        .expect(201);
    s.patch(
        &path(&id),
        &json!({"title": "b", "data": {"k": 1, "old": null}}),
    )
    .await
    .expect(200);
    // An empty patch changes nothing and records nothing.
    s.patch(&path(&id), &json!({})).await.expect(200);
    s.post(&format!("{}/close", path(&id)), &json!({"reason": "done"}))
        .await
        .expect(200);
    // Closing again is idempotent and records nothing.
    s.post(&format!("{}/close", path(&id)), &json!({}))
        .await
        .expect(200);

    let events = read_all(&s, &id, "events").await;
    assert_eq!(seqs(&events), [1, 2, 3], "{events:#?}");
    for e in &events {
        assert_record_shape(e);
    }
    let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(
        *data[0],
        json!({"type": "session.created", "sessionId": id, "version": 1})
    );
    assert_eq!(
        *data[1],
        json!({
            "type": "session.patched",
            "sessionId": id,
            "patch": {"title": "b", "data": {"k": 1, "old": null}},
            "version": 2,
        })
    );
    assert_eq!(
        *data[2],
        json!({"type": "session.closed", "sessionId": id, "reason": "done", "version": 3})
    );
    assert_eq!(s.session(&id).await["version"], 3);

    // A close without reason records `reason: null`.
    let other = new_session(&s).await;
    s.post(&format!("{}/close", path(&other)), &json!({}))
        .await
        .expect(200);
    let events = read_all(&s, &other, "events").await;
    assert_eq!(
        events[1]["data"],
        json!({"type": "session.closed", "sessionId": other, "reason": null, "version": 2})
    );
}

#[tokio::test]
async fn a_closed_session_takes_no_appends_and_reads_keep_working() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(
        &s,
        &id,
        "in",
        json!([{"id": "a", "data": 1}, {"id": "b", "data": 2}]),
    )
    .await
    .expect(201);
    s.post(&format!("{}/close", path(&id)), &json!({}))
        .await
        .expect(200);
    let before = channel_rows(&s, &id).await;
    append(&s, &id, "in", json!([{"id": "c", "data": 3}]))
        .await
        .expect_error(409, "session_closed");
    append(&s, &id, "new-channel", json!([{"data": 3}]))
        .await
        .expect_error(409, "session_closed");
    // Even a pure retry of what is already there is refused once closed.
    append(&s, &id, "in", json!([{"id": "a", "data": 1}]))
        .await
        .expect_error(409, "session_closed");
    assert_eq!(channel_rows(&s, &id).await, before);

    assert_eq!(seqs(&read_all(&s, &id, "in").await), [1, 2]);
    assert_eq!(read_all(&s, &id, "events").await.len(), 2);
    // A long-poll on a closed session does not wait.
    let t = Instant::now();
    let page = read(&s, &id, "in", "after=2&wait=5").await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["lastSeq"], 2);
}

// ---------------------------------------------------------------------------------------------
// long-poll

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_a_record_arrives() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(&s, &id, "in", json!([{"data": "old"}]))
        .await
        .expect(201);
    let writer = {
        let api = s.api.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            append(&api, &id, "in", json!([{"id": "live", "data": "new"}]))
                .await
                .expect(201);
        })
    };
    let t = Instant::now();
    let page = read(&s, &id, "in", "after=1&wait=5").await;
    let took = t.elapsed();
    writer.await.unwrap();
    assert!(
        took >= Duration::from_millis(250),
        "returned before the append: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "returned late ({took:?}), not when the record arrived"
    );
    let recs = page["records"].as_array().unwrap();
    assert_eq!(seqs(recs), [2], "{page}");
    assert_eq!(recs[0]["id"], "live");
    assert_eq!(recs[0]["data"], "new");
    assert_eq!(page["nextAfter"], 2);

    // With records already there, a wait returns at once.
    let t = Instant::now();
    let page = read(&s, &id, "in", "after=0&wait=5").await;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(seqs(page["records"].as_array().unwrap()), [1, 2]);
}

#[tokio::test]
async fn a_long_poll_on_an_idle_channel_returns_empty_after_the_wait() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(&s, &id, "in", json!([{"data": 1}]))
        .await
        .expect(201);
    // Activity on another channel does not end it.
    let t = Instant::now();
    let poll = {
        let api = s.api.clone();
        let id = id.clone();
        tokio::spawn(async move { read(&api, &id, "in", "after=1&wait=1").await })
    };
    append(&s, &id, "out", json!([{"data": 1}]))
        .await
        .expect(201);
    let page = poll.await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "returned late: {took:?}");
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["lastSeq"], 1);
    assert_eq!(page["nextAfter"], 1);

    // On a never-appended channel too.
    let t = Instant::now();
    let page = read(&s, &id, "never", "wait=1").await;
    assert!(t.elapsed() >= Duration::from_millis(950));
    assert_eq!(page, json!({"records": [], "lastSeq": 0, "nextAfter": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_after_latest_returns_only_new_records() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(
        &s,
        &id,
        "in",
        json!([{"data": 1}, {"data": 2}, {"data": 3}]),
    )
    .await
    .expect(201);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Keep appending (one record every 200 ms) until the poll answered, so the test does not
    // depend on when the server took its `latest`.
    let writer = {
        let api = s.api.clone();
        let id = id.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) && n < 50 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                n += 1;
                append(
                    &api,
                    &id,
                    "in",
                    json!([{"id": format!("new-{n}"), "data": n}]),
                )
                .await
                .expect(201);
            }
        })
    };
    let t = Instant::now();
    let page = read(&s, &id, "in", "after=latest&wait=10").await;
    let took = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    let recs = page["records"].as_array().unwrap();
    assert!(!recs.is_empty(), "no new record within {took:?}: {page}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        recs.iter().all(|r| r["seq"].as_i64().unwrap() > 3),
        "old records came back: {page}"
    );
    assert_eq!(recs[0]["seq"], 4, "{page}");
    assert_eq!(recs[0]["id"], "new-1");
}

// ---------------------------------------------------------------------------------------------
// SSE

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_catches_up_then_follows_live() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(
        &s,
        &id,
        "in",
        json!([{"id": "a", "data": {"n": 1}, "headers": {"h": 1}}, {"id": "b", "data": null}, {"id": "c", "data": "three"}]),
    )
    .await
    .expect(201);
    let stored = read_all(&s, &id, "in").await;

    let mut sse = Sse::open(&s, &records_path(&id, "in"), None).await;
    let caught_up = sse.records(3).await;
    assert_eq!(caught_up, stored, "SSE records are the JSON read's records");
    sse.assert_quiet(Duration::from_millis(300)).await;

    // Live: appended after the stream caught up.
    append(
        &s,
        &id,
        "in",
        json!([{"id": "d", "data": 4}, {"id": "e", "data": 5}]),
    )
    .await
    .expect(201);
    let live = sse.records(2).await;
    assert_eq!(seqs(&live), [4, 5]);
    assert_eq!(live[0]["id"], "d");
    for r in &live {
        assert_record_shape(r);
    }
    // A duplicate append delivers nothing; other channels deliver nothing.
    append(&s, &id, "in", json!([{"id": "d", "data": 4}]))
        .await
        .expect(200);
    append(&s, &id, "out", json!([{"data": "elsewhere"}]))
        .await
        .expect(201);
    sse.assert_quiet(Duration::from_millis(500)).await;
    append(&s, &id, "in", json!([{"id": "f", "data": 6}]))
        .await
        .expect(201);
    assert_eq!(seqs(&sse.records(1).await), [6]);
    let all = read_all(&s, &id, "in").await;
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5, 6]);

    // `?stream=sse` without an Accept header is the same stream.
    let mut plain = Sse::open_plain(&s, &format!("{}?stream=sse", records_path(&id, "in"))).await;
    assert_eq!(plain.records(6).await, all);

    // The events channel streams live too.
    let mut events = Sse::open(&s, &records_path(&id, "events"), None).await;
    assert_eq!(
        events.frame().await.record()["data"]["type"],
        "session.created"
    );
    s.patch(&path(&id), &json!({"title": "live"}))
        .await
        .expect(200);
    let ev = events.frame().await.record();
    assert_eq!(ev["seq"], 2);
    assert_eq!(ev["data"]["type"], "session.patched");
    assert_eq!(ev["data"]["patch"], json!({"title": "live"}));
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_which_wins_over_after() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    let recs: Vec<Value> = (1..=10)
        .map(|i| json!({"id": format!("r{i}"), "data": i}))
        .collect();
    append(&s, &id, "in", Value::Array(recs)).await.expect(201);
    let p = records_path(&id, "in");

    let mut sse = Sse::open(&s, &p, Some("4")).await;
    assert_eq!(seqs(&sse.records(6).await), [5, 6, 7, 8, 9, 10]);
    sse.assert_quiet(Duration::from_millis(200)).await;

    let mut sse = Sse::open(&s, &format!("{p}?after=2"), None).await;
    assert_eq!(seqs(&sse.records(8).await), (3..=10).collect::<Vec<_>>());

    // The header wins over the query, in both directions.
    let mut sse = Sse::open(&s, &format!("{p}?after=2"), Some("8")).await;
    assert_eq!(seqs(&sse.records(2).await), [9, 10]);
    let mut sse = Sse::open(&s, &format!("{p}?after=9"), Some("0")).await;
    assert_eq!(seqs(&sse.records(10).await), (1..=10).collect::<Vec<_>>());
    let mut sse = Sse::open(&s, &format!("{p}?after=latest"), Some("7")).await;
    assert_eq!(seqs(&sse.records(3).await), [8, 9, 10]);

    // Resuming at the head waits for new records; past the head too.
    let mut at_head = Sse::open(&s, &p, Some("10")).await;
    let mut past = Sse::open(&s, &p, Some("11")).await;
    at_head.assert_quiet(Duration::from_millis(200)).await;
    append(&s, &id, "in", json!([{"data": 11}, {"data": 12}]))
        .await
        .expect(201);
    assert_eq!(seqs(&at_head.records(2).await), [11, 12]);
    assert_eq!(seqs(&past.records(1).await), [12]);
}

#[tokio::test]
async fn sse_after_latest_delivers_only_new_records() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(
        &s,
        &id,
        "in",
        json!([{"data": 1}, {"data": 2}, {"data": 3}]),
    )
    .await
    .expect(201);
    let mut sse = Sse::open(
        &s,
        &format!("{}?after=latest", records_path(&id, "in")),
        None,
    )
    .await;
    sse.assert_quiet(Duration::from_millis(300)).await;
    append(&s, &id, "in", json!([{"id": "n", "data": 4}]))
        .await
        .expect(201);
    let r = sse.records(1).await;
    assert_eq!(seqs(&r), [4]);
    assert_eq!(r[0]["id"], "n");

    // On a never-appended channel `latest` is 0.
    let mut sse = Sse::open(
        &s,
        &format!("{}?after=latest", records_path(&id, "fresh")),
        None,
    )
    .await;
    append(&s, &id, "fresh", json!([{"data": 1}]))
        .await
        .expect(201);
    assert_eq!(seqs(&sse.records(1).await), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_ends_with_closed_after_the_last_record() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(&s, &id, "in", json!([{"data": 1}, {"data": 2}]))
        .await
        .expect(201);
    let mut sse = Sse::open(&s, &records_path(&id, "in"), None).await;
    let mut events = Sse::open(&s, &records_path(&id, "events"), None).await;
    assert_eq!(seqs(&sse.records(2).await), [1, 2]);
    assert_eq!(seqs(&events.records(1).await), [1]);
    append(&s, &id, "in", json!([{"data": 3}]))
        .await
        .expect(201);
    s.post(&format!("{}/close", path(&id)), &json!({"reason": "bye"}))
        .await
        .expect(200);
    // Every record, then `closed`, then the end of the stream.
    assert_eq!(seqs(&sse.records(1).await), [3]);
    let f = sse.frame().await;
    assert_eq!(f.event.as_deref(), Some("closed"), "{f:?}");
    sse.assert_ends().await;
    // The events stream delivers session.closed before it ends.
    let ev = events.frame().await.record();
    assert_eq!(ev["data"]["type"], "session.closed");
    assert_eq!(ev["data"]["reason"], "bye");
    let f = events.frame().await;
    assert_eq!(f.event.as_deref(), Some("closed"), "{f:?}");
    events.assert_ends().await;

    // Opened on a closed session: the remaining records, then closed.
    let mut sse = Sse::open(&s, &records_path(&id, "in"), Some("1")).await;
    assert_eq!(seqs(&sse.records(2).await), [2, 3]);
    assert_eq!(sse.frame().await.event.as_deref(), Some("closed"));
    sse.assert_ends().await;
    // At the head of a closed session (and on a never-appended channel): closed at once.
    let mut sse = Sse::open(
        &s,
        &format!("{}?after=latest", records_path(&id, "in")),
        None,
    )
    .await;
    assert_eq!(sse.frame().await.event.as_deref(), Some("closed"));
    sse.assert_ends().await;
    let mut sse = Sse::open(&s, &records_path(&id, "never"), None).await;
    assert_eq!(sse.frame().await.event.as_deref(), Some("closed"));
    sse.assert_ends().await;
}

/// Nothing signals an expiry: live readers learn of it from storage, within a safety-poll
/// period (5 s), and one reader's finding reaches the others on the same node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_ends_with_closed_when_the_session_expires() {
    let s = TestServer::start().await;
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let id = id_of(
        &s.create(
            json!({"expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
        )
        .await,
    );
    append(&s, &id, "in", json!([{"data": 1}]))
        .await
        .expect(201);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut sse = Sse::open(&s, &records_path(&id, "in"), None).await;
        assert_eq!(seqs(&sse.records(1).await), [1]);
        streams.push(sse);
    }
    for sse in &mut streams {
        let f = sse.frame().await;
        assert_eq!(f.event.as_deref(), Some("closed"), "{f:?}");
        sse.assert_ends().await;
    }
    assert!(chrono::Utc::now() >= expires);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_ends_with_deleted_when_the_session_is_deleted() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    append(&s, &id, "in", json!([{"data": 1}]))
        .await
        .expect(201);
    let mut sse = Sse::open(&s, &records_path(&id, "in"), None).await;
    let mut idle = Sse::open(&s, &records_path(&id, "never"), None).await;
    assert_eq!(seqs(&sse.records(1).await), [1]);
    idle.assert_quiet(Duration::from_millis(100)).await;
    s.delete(&path(&id)).await.expect(204);
    let f = sse.frame().await;
    assert_eq!(f.event.as_deref(), Some("deleted"), "{f:?}");
    sse.assert_ends().await;
    let f = idle.frame().await;
    assert_eq!(f.event.as_deref(), Some("deleted"), "{f:?}");
    idle.assert_ends().await;
    // And a long-poll waiting on it ends with 404.
    let id = new_session(&s).await;
    let poll = {
        let api = s.api.clone();
        let p = format!("{}?wait=10", records_path(&id, "in"));
        tokio::spawn(async move {
            let t = Instant::now();
            (api.get(&p).await, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.delete(&path(&id)).await.expect(204);
    let (r, took) = poll.await.unwrap();
    r.expect_error(404, "session_not_found");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn a_never_appended_channel_reads_empty() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    let page = read(&s, &id, "never", "").await;
    assert_eq!(page, json!({"records": [], "lastSeq": 0, "nextAfter": 0}));
    let page = read(&s, &id, "never", "after=5").await;
    assert_eq!(page, json!({"records": [], "lastSeq": 0, "nextAfter": 5}));
    let page = read(&s, &id, "never", "after=latest").await;
    assert_eq!(page, json!({"records": [], "lastSeq": 0, "nextAfter": 0}));
    // Reading does not create it.
    let rows = channel_rows(&s, &id).await;
    assert_eq!(rows, [("events".into(), 1, 1)]);
    // SSE on it waits, then delivers the first append.
    let mut sse = Sse::open(&s, &records_path(&id, "never"), None).await;
    sse.assert_quiet(Duration::from_millis(200)).await;
    append(&s, &id, "never", json!([{"data": "first"}]))
        .await
        .expect(201);
    let r = sse.records(1).await;
    assert_eq!(seqs(&r), [1]);
    assert_eq!(r[0]["data"], "first");
}

/// Four writers append 5,000 records each while one SSE reader keeps dropping its connection
/// at random points and resuming with `Last-Event-ID`: it must see seq 1..=20,000 exactly once,
/// in order, and each seq must carry the record its writer was told it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sse_reader_that_keeps_reconnecting_misses_nothing_under_concurrent_writers() {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 5_000;
    const BATCH: usize = 50;
    const TOTAL: i64 = (WRITERS * PER_WRITER) as i64;
    let seed: u64 = std::env::var("SESSIOND_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_0FC4_A22E_1100);
    eprintln!("resume test seed: {seed} (set SESSIOND_TEST_SEED to replay)");

    let s = TestServer::start().await;
    let id = new_session(&s).await;
    let p = records_path(&id, "in");

    let run = async {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS + 1));
        let writing = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(WRITERS));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let api = s.api.clone();
            let id = id.clone();
            let start = start.clone();
            let writing = writing.clone();
            writers.push(tokio::spawn(async move {
                start.wait().await;
                let mut acked: Vec<(i64, String)> = Vec::with_capacity(PER_WRITER);
                for b in 0..PER_WRITER / BATCH {
                    let recs: Vec<Value> = (0..BATCH)
                        .map(|i| {
                            let n = b * BATCH + i;
                            json!({"id": format!("w{w}-{n:05}"), "data": {"w": w, "n": n}})
                        })
                        .collect();
                    let body = append(&api, &id, "in", Value::Array(recs))
                        .await
                        .expect(201);
                    let res = results(&body);
                    assert_eq!(res.len(), BATCH);
                    let first = body["firstSeq"].as_i64().unwrap();
                    for (i, (rid, seq, dup)) in res.into_iter().enumerate() {
                        assert!(!dup, "{rid} reported duplicate");
                        assert_eq!(seq, first + i as i64, "a batch commits contiguously");
                        acked.push((seq, rid));
                    }
                    assert_eq!(body["lastSeq"].as_i64().unwrap(), first + BATCH as i64 - 1);
                }
                writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                acked
            }));
        }

        let reader = {
            let api = s.api.clone();
            let p = p.clone();
            let start = start.clone();
            let writing = writing.clone();
            tokio::spawn(async move {
                let mut rng = XorShift(seed | 1);
                start.wait().await;
                let mut seen: Vec<(i64, String)> = Vec::with_capacity(TOTAL as usize);
                let mut last = 0i64;
                let mut connections = 0usize;
                // Connections opened while at least one writer was still appending.
                let mut during_writes = 0usize;
                while last < TOTAL {
                    connections += 1;
                    if writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                        during_writes += 1;
                    }
                    let header = (last > 0).then(|| last.to_string());
                    // Now and then an `?after=` that the header must override.
                    let url = if last > 0 && rng.below(4) == 0 {
                        format!("{p}?after={}", rng.below(last as u64))
                    } else {
                        p.clone()
                    };
                    let mut sse = Sse::open(&api, &url, header.as_deref()).await;
                    // Read a random number of events (sometimes none), then drop the connection.
                    let budget = match rng.below(10) {
                        0 => 0,
                        1..=6 => rng.below(300) + 1,
                        _ => rng.below(3_000) + 1,
                    };
                    let mut got = 0;
                    while got < budget && last < TOTAL {
                        let f = sse.frame().await;
                        let r = f.record();
                        let seq = r["seq"].as_i64().unwrap();
                        assert_eq!(
                            seq,
                            last + 1,
                            "connection {connections} (resumed after {header:?}) delivered {seq} after {last}"
                        );
                        let rid = r["id"].as_str().unwrap().to_owned();
                        let (w, n) = rid[1..].split_once('-').unwrap();
                        assert_eq!(
                            r["data"],
                            json!({"w": w.parse::<usize>().unwrap(), "n": n.parse::<usize>().unwrap()}),
                            "{r}"
                        );
                        seen.push((seq, rid));
                        last = seq;
                        got += 1;
                    }
                    drop(sse);
                }
                (seen, connections, during_writes)
            })
        };

        let mut acked = BTreeMap::new();
        for w in writers {
            for (seq, rid) in w.await.unwrap() {
                assert!(
                    acked.insert(seq, rid).is_none(),
                    "seq {seq} acknowledged twice"
                );
            }
        }
        let (seen, connections, during_writes) = reader.await.unwrap();
        (acked, seen, connections, during_writes)
    };
    let (acked, seen, connections, during_writes) =
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the resume test did not finish within 120 s");

    eprintln!(
        "reader used {connections} connections for {TOTAL} records, {during_writes} of them while writers were appending"
    );
    assert!(
        connections >= 10 && during_writes >= 2,
        "too few reconnections ({connections}, {during_writes} during the writes) to prove anything"
    );
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>(),
        "the writers' acknowledged seqs are not 1..={TOTAL}"
    );
    assert_eq!(seen.len(), TOTAL as usize);
    for (seq, rid) in &seen {
        assert_eq!(acked.get(seq), Some(rid), "seq {seq}");
    }
    let ids: HashSet<&String> = seen.iter().map(|(_, r)| r).collect();
    assert_eq!(ids.len(), TOTAL as usize, "an id was delivered twice");
    // Each writer's records are in its own order.
    for w in 0..WRITERS {
        let prefix = format!("w{w}-");
        let mine: Vec<&String> = seen
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.starts_with(&prefix))
            .collect();
        assert_eq!(mine.len(), PER_WRITER);
        assert!(
            mine.windows(2).all(|p| p[0] < p[1]),
            "writer {w} out of order"
        );
    }
    assert_eq!(last_seq(&s, &id, "in").await, TOTAL);
}

// ---------------------------------------------------------------------------------------------
// the channel list

#[tokio::test]
async fn the_channel_list_reports_each_channel() {
    let s = TestServer::start().await;
    let id = new_session(&s).await;
    let list = s.get(&channels_path(&id)).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1, "only events: {list}");

    append(&s, &id, "zeta", json!([{"data": 1}]))
        .await
        .expect(201);
    append(
        &s,
        &id,
        "alpha",
        json!([{"id": "a", "data": 1}, {"id": "b", "data": 2}]),
    )
    .await
    .expect(201);
    append(
        &s,
        &id,
        "alpha",
        json!([{"id": "a", "data": 1}, {"id": "c", "data": 3}]),
    )
    .await
    .expect(201);
    append(
        &s,
        &id,
        "in",
        json!([{"data": 1}, {"data": 2}, {"data": 3}]),
    )
    .await
    .expect(201);
    append(&s, &id, "out.v2", json!([{"data": 1}]))
        .await
        .expect(201);
    append(&s, &id, "9lives", json!([{"data": 1}]))
        .await
        .expect(201);
    s.patch(&path(&id), &json!({"title": "x"}))
        .await
        .expect(200);

    let list = s.get(&channels_path(&id)).await.expect(200);
    let rows = list.as_array().unwrap();
    for c in rows {
        let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["lastSeq", "name", "recordCount", "updatedAt"], "{c}");
        assert_timestamp(&c["updatedAt"]);
    }
    assert_eq!(
        channel_rows(&s, &id).await,
        [
            ("9lives".into(), 1, 1),
            ("alpha".into(), 3, 3),
            ("events".into(), 2, 2),
            ("in".into(), 3, 3),
            ("out.v2".into(), 1, 1),
            ("zeta".into(), 1, 1),
        ]
    );
    // updatedAt is the time of the last append.
    let alpha = &rows[1];
    let last = read_all(&s, &id, "alpha").await;
    assert_eq!(alpha["updatedAt"], last[2]["createdAt"]);
    // By externalId too.
    s.create(json!({"externalId": "chan-list"})).await;
    let rows = channel_rows(&s, "chan-list").await;
    assert_eq!(rows, [("events".into(), 1, 1)]);
}
