//! Documents: multipart and raw uploads, every parser end to end, chunk metadata, reuse,
//! replacement by docId, delete, search (ranking, snippets), `document.*` events, failures, and
//! every bad input refused with nothing stored.

use reqwest::Method;
use serde_json::{json, Value};
use sessiond_server::AppOptions;

use crate::common::{id_of, path, Api, Resp, TestServer};

const GUIDE_MD: &[u8] = include_bytes!("../../../sessiond-docs/tests/fixtures/guide.md");
const PAGE_HTML: &[u8] = include_bytes!("../../../sessiond-docs/tests/fixtures/page.html");
const OPENAPI3: &[u8] = include_bytes!("../../../sessiond-docs/tests/fixtures/openapi3.json");
const SWAGGER2: &[u8] = include_bytes!("../../../sessiond-docs/tests/fixtures/swagger2.yaml");
const SCHEMA_SQL: &[u8] = include_bytes!("../../../sessiond-docs/tests/fixtures/schema.sql");
const SCIM_JSON: &[u8] = include_bytes!("../../../sessiond-docs/tests/fixtures/users.scim.json");

const METADATA_KEYS: &[&str] = &[
    "chunkNumber",
    "tokenCount",
    "charCount",
    "contentType",
    "filename",
    "parser",
    "numEndpoints",
    "category",
    "tags",
];

fn docs_of(session: &str) -> String {
    format!("{}/documents", path(session))
}

fn doc_url(session: &str, doc: &str) -> String {
    format!("{}/documents/{doc}", path(session))
}

fn search_url(session: &str, q: &str) -> String {
    format!(
        "{}/chunks/search?q={}",
        path(session),
        crate::common::encode(q)
    )
}

async fn new_session(api: &Api) -> String {
    id_of(&api.create(json!({})).await)
}

/// A raw-body upload: `query` is appended after `?` as given.
async fn upload_raw(api: &Api, session: &str, ct: &str, query: &str, body: &[u8]) -> Resp {
    let mut p = docs_of(session);
    if !query.is_empty() {
        p.push('?');
        p.push_str(query);
    }
    api.raw(Method::POST, &p, ct, body.to_vec()).await
}

/// A multipart body with text fields and (optionally) a file part named `file_field`.
fn multipart(
    fields: &[(&str, &str)],
    file: Option<(&str, &str, &str, &[u8])>,
) -> (String, Vec<u8>) {
    let boundary = "sessiond-test-boundary-4f2a9c";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((field, filename, ct, bytes)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_multipart(
    api: &Api,
    session: &str,
    fields: &[(&str, &str)],
    file: Option<(&str, &str, &str, &[u8])>,
) -> Resp {
    let (ct, body) = multipart(fields, file);
    api.raw(Method::POST, &docs_of(session), &ct, body).await
}

/// Every record `data` of the session's events channel.
async fn events(api: &Api, session: &str) -> Vec<Value> {
    let page = api
        .get(&format!(
            "{}/channels/events/records?after=0&limit=1000",
            path(session)
        ))
        .await
        .expect(200);
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"].clone())
        .collect()
}

fn types_for(events: &[Value], doc: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["documentId"] == doc)
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows the events channel (long-poll) until `doc` is ready or failed; returns that event.
async fn wait_done(api: &Api, session: &str, doc: &str) -> Value {
    wait_done_after(api, session, doc, 0).await
}

/// The events channel's last seq.
async fn last_seq(api: &Api, session: &str) -> u64 {
    let page = api
        .get(&format!(
            "{}/channels/events/records?after=0&limit=1",
            path(session)
        ))
        .await
        .expect(200);
    page["lastSeq"].as_u64().unwrap()
}

/// Like [`wait_done`], looking only at events after `after` (a re-upload under the same id).
async fn wait_done_after(api: &Api, session: &str, doc: &str, mut after: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let page = api
            .get(&format!(
                "{}/channels/events/records?after={after}&wait=10&limit=1000",
                path(session)
            ))
            .await
            .expect(200);
        for r in page["records"].as_array().unwrap() {
            let d = &r["data"];
            if d["documentId"] == doc
                && matches!(
                    d["type"].as_str(),
                    Some("document.ready" | "document.failed")
                )
            {
                return d.clone();
            }
        }
        after = page["nextAfter"].as_u64().unwrap();
    }
    panic!("document {doc} was not processed within 60 s");
}

/// Uploads (raw), asserts 202, waits until processed; returns the document with chunks.
async fn upload_ready(api: &Api, session: &str, ct: &str, query: &str, body: &[u8]) -> Value {
    let after = last_seq(api, session).await;
    let up = upload_raw(api, session, ct, query, body).await.expect(202);
    let doc = id_of(&up["document"]);
    let done = wait_done_after(api, session, &doc, after).await;
    assert_eq!(done["type"], "document.ready", "{done}");
    api.get(&doc_url(session, &doc)).await.expect(200)
}

#[track_caller]
fn assert_metadata(doc: &Value) {
    let chunks = doc["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty(), "no chunks: {doc}");
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["index"], i as i64);
        let m = c["metadata"].as_object().unwrap();
        for k in METADATA_KEYS {
            assert!(m.contains_key(*k), "metadata lacks {k}: {c}");
        }
        assert_eq!(m["chunkNumber"], (i + 1) as i64);
        assert_eq!(m["tokenCount"], c["tokenCount"]);
        assert_eq!(m["charCount"], c["charCount"]);
        assert_eq!(
            c["charCount"].as_i64().unwrap(),
            c["content"].as_str().unwrap().chars().count() as i64
        );
    }
    assert_eq!(doc["chunkCount"], chunks.len() as i64);
    let tokens: i64 = chunks
        .iter()
        .map(|c| c["tokenCount"].as_i64().unwrap())
        .sum();
    assert!(doc["tokenCount"].as_i64().unwrap() > 0);
    assert!(tokens >= doc["tokenCount"].as_i64().unwrap() || chunks.len() == 1);
}

// ---- binary fixtures built here (like sessiond-docs' tests) ----

fn make_pdf(lines: &[&str]) -> Vec<u8> {
    let mut stream = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
    for l in lines {
        stream.push_str(&format!("({l}) Tj T*\n"));
    }
    stream.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [4 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip of stored (uncompressed) entries.
fn make_zip(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, body) in entries {
        let (name, body) = (name.as_bytes(), body.as_bytes());
        let crc = crc32(body);
        let offset = out.len() as u32;
        let mut header = Vec::new();
        header.extend_from_slice(&[0, 0]); // flags
        header.extend_from_slice(&[0, 0]); // stored
        header.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
        header.extend_from_slice(&crc.to_le_bytes());
        header.extend_from_slice(&(body.len() as u32).to_le_bytes());
        header.extend_from_slice(&(body.len() as u32).to_le_bytes());
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&[0, 0]); // extra
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0]);
        out.extend_from_slice(&header);
        out.extend_from_slice(name);
        out.extend_from_slice(body);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0]);
        central.extend_from_slice(&header);
        central.extend_from_slice(&[0; 10]); // comment, disk, attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

fn make_docx() -> Vec<u8> {
    let types = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
</Types>"#;
    let body = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
<w:body>
  <w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Invoices</w:t></w:r></w:p>
  <w:p><w:r><w:t>Invoices are sent monthly by the zebracorn department.</w:t></w:r></w:p>
  <w:sectPr/>
</w:body>
</w:document>"#;
    make_zip(&[("[Content_Types].xml", types), ("word/document.xml", body)])
}

// ---- tests ----

#[tokio::test]
async fn multipart_upload_processes_and_lists_gets_with_metadata() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let up = upload_multipart(
        &srv,
        &s,
        &[("chunkTokens", "200"), ("overlapTokens", "20")],
        Some(("file", "guide.md", "text/markdown", GUIDE_MD)),
    )
    .await
    .expect(202);
    let d = &up["document"];
    assert_eq!(d["status"], "processing", "{up}");
    assert_eq!(d["filename"], "guide.md");
    assert_eq!(d["contentType"], "text/markdown");
    assert_eq!(d["sizeBytes"], GUIDE_MD.len() as i64);
    assert_eq!(d["chunkTokens"], 200);
    assert_eq!(d["overlapTokens"], 20);
    assert_eq!(d["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(up["job"]["type"], "document.process");
    assert_eq!(d["jobId"], up["job"]["id"]);
    let doc = id_of(d);

    let done = wait_done(&srv, &s, &doc).await;
    assert_eq!(done["type"], "document.ready", "{done}");
    let got = srv.get(&doc_url(&s, &doc)).await.expect(200);
    assert_eq!(got["status"], "ready");
    assert!(got["error"].is_null());
    assert_metadata(&got);
    let m = &got["chunks"][0]["metadata"];
    assert_eq!(m["parser"], "markdown");
    assert_eq!(m["filename"], "guide.md");
    assert_eq!(m["category"], "reference_api", "{m}");
    assert_eq!(m["numEndpoints"], 3, "{m}");
    assert!(
        m["tags"].as_array().unwrap().contains(&json!("Orders API")),
        "{m}"
    );

    let list = srv.get(&docs_of(&s)).await.expect(200);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], doc.as_str());
    assert_eq!(rows[0]["status"], "ready");
    assert!(rows[0].get("chunks").is_none(), "list rows carry no chunks");
    // The job succeeded and the events record the life of the document.
    let job = srv
        .get(&format!("/v1/jobs/{}", id_of(&up["job"])))
        .await
        .expect(200);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["reusedFrom"].is_null());
    let ev = events(&srv, &s).await;
    assert_eq!(
        types_for(&ev, &doc),
        ["document.uploaded", "document.ready"]
    );
    let ready = ev.iter().find(|e| e["type"] == "document.ready").unwrap();
    assert_eq!(ready["chunkCount"], got["chunkCount"]);
    assert!(ev
        .iter()
        .any(|e| e["type"] == "job.succeeded" && e["jobId"] == up["job"]["id"]));
    // By externalId too.
    let named = srv.create(json!({"externalId": "docs-ext"})).await;
    upload_ready(
        &srv,
        "docs-ext",
        "text/plain",
        "filename=a.txt",
        b"hello there",
    )
    .await;
    let list = srv.get(&docs_of(&id_of(&named))).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_parser_end_to_end() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let pdf = make_pdf(&["Quarterly report about pelicans", "Second line"]);
    let docx = make_docx();
    let cases: Vec<(&str, &str, Vec<u8>, &str, &str)> = vec![
        (
            "text/plain",
            "notes.txt",
            b"plain words here\nline two".to_vec(),
            "text",
            "plain words",
        ),
        (
            "text/markdown",
            "guide.md",
            GUIDE_MD.to_vec(),
            "markdown",
            "Orders API",
        ),
        ("text/html", "page.html", PAGE_HTML.to_vec(), "html", ""),
        (
            "application/json",
            "data.json",
            br#"{"b":1,"a":[true,null]}"#.to_vec(),
            "json",
            "\"b\": 1",
        ),
        (
            "application/yaml",
            "conf.yaml",
            b"name: demo\nitems:\n  - one\n".to_vec(),
            "yaml",
            "name: demo",
        ),
        (
            "application/json",
            "pets.json",
            OPENAPI3.to_vec(),
            "openapi",
            "",
        ),
        (
            "application/octet-stream",
            "users.yaml",
            SWAGGER2.to_vec(),
            "openapi",
            "",
        ),
        ("application/pdf", "report.pdf", pdf, "pdf", "pelicans"),
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "billing.docx",
            docx,
            "docx",
            "zebracorn",
        ),
        (
            "application/sql",
            "schema.sql",
            SCHEMA_SQL.to_vec(),
            "sql",
            "",
        ),
    ];
    for (ct, name, bytes, parser, needle) in cases {
        let got = upload_ready(&srv, &s, ct, &format!("filename={name}"), &bytes).await;
        assert_metadata(&got);
        let m = &got["chunks"][0]["metadata"];
        assert_eq!(m["parser"], parser, "{name}: {m}");
        assert_eq!(m["filename"], name);
        let all: String = got["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["content"].as_str().unwrap())
            .collect();
        assert!(all.contains(needle), "{name}: {needle:?} not in {all:?}");
        match name {
            "pets.json" => {
                assert_eq!(m["category"], "spec_json");
                assert_eq!(m["numEndpoints"], 5, "{m}");
            }
            "users.yaml" => {
                assert_eq!(m["category"], "spec_yaml");
                assert_eq!(m["numEndpoints"], 5, "{m}");
            }
            "schema.sql" => assert_eq!(m["category"], "schema"),
            "page.html" => assert!(!all.contains("<script"), "{all}"),
            _ => {}
        }
    }
    // OpenAPI split into small chunks without overlap: the counts add up to the operations.
    let split = upload_ready(
        &srv,
        &s,
        "application/json",
        "filename=pets.json&chunkTokens=100&overlapTokens=0",
        OPENAPI3,
    )
    .await;
    let chunks = split["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 3, "{split}");
    let total: i64 = chunks
        .iter()
        .map(|c| c["metadata"]["numEndpoints"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 5);
    // A structured schema stays one chunk even with small windows.
    let scim = upload_ready(
        &srv,
        &s,
        "application/scim+json",
        "filename=users.scim.json&chunkTokens=100&overlapTokens=0",
        SCIM_JSON,
    )
    .await;
    assert_eq!(scim["chunkCount"], 1, "{scim}");
    assert_eq!(scim["chunks"][0]["metadata"]["category"], "schema");
}

#[tokio::test]
async fn bad_inputs_are_refused_and_store_nothing() {
    let srv = TestServer::start_with(AppOptions {
        max_upload_bytes: 1024,
        ..AppOptions::default()
    })
    .await;
    let s = new_session(&srv).await;
    let other = new_session(&srv).await;
    let before_events = events(&srv, &s).await.len();
    let text = b"some text".as_slice();
    upload_raw(&srv, &s, "text/plain", "filename=e.txt", b"")
        .await
        .expect_error(422, "empty_document");
    upload_multipart(&srv, &s, &[], Some(("file", "e.txt", "text/plain", b"")))
        .await
        .expect_error(422, "empty_document");
    for q in [
        "chunkTokens=99",
        "chunkTokens=100001",
        "chunkTokens=200&overlapTokens=200",
        "overlapTokens=-1",
        "chunkTokens=100",
    ] {
        // chunkTokens=100 alone: the default overlap shrinks below the window, so it is fine;
        // asserted separately below.
        if q == "chunkTokens=100" {
            continue;
        }
        upload_raw(&srv, &s, "text/plain", q, text)
            .await
            .expect_error(422, "invalid_field");
    }
    upload_multipart(
        &srv,
        &s,
        &[("chunkTokens", "5")],
        Some(("file", "a.txt", "text/plain", text)),
    )
    .await
    .expect_error(422, "invalid_field");
    upload_raw(&srv, &s, "text/plain", "chunkTokens=abc", text)
        .await
        .expect_error(400, "invalid_query");
    upload_raw(&srv, &s, "text/plain", "bogus=1", text)
        .await
        .expect_error(400, "invalid_query");
    upload_raw(&srv, &s, "text/plain", "docId=not-a-uuid", text)
        .await
        .expect_error(400, "invalid_query");
    upload_raw(&srv, &s, "text/plain", "reuse=maybe", text)
        .await
        .expect_error(400, "invalid_query");
    upload_raw(&srv, &s, "image/png", "filename=x.png", b"\x89PNG....")
        .await
        .expect_error(415, "unsupported_content_type");
    upload_raw(&srv, &s, "text/plain", "filename=big.txt", &[b'a'; 2048])
        .await
        .expect_error(413, "payload_too_large");
    upload_multipart(
        &srv,
        &s,
        &[],
        Some(("file", "big.txt", "text/plain", &[b'a'; 2048])),
    )
    .await
    .expect_error(413, "payload_too_large");
    upload_multipart(&srv, &s, &[("chunkTokens", "500")], None)
        .await
        .expect_error(422, "invalid_field");
    upload_multipart(
        &srv,
        &s,
        &[],
        Some(("attachment", "a.txt", "text/plain", text)),
    )
    .await
    .expect_error(422, "invalid_field");
    upload_raw(
        &srv,
        "00000000-0000-4000-8000-000000000000",
        "text/plain",
        "",
        text,
    )
    .await
    .expect_error(404, "session_not_found");
    // A docId that belongs to another session.
    let theirs = upload_ready(&srv, &other, "text/plain", "filename=o.txt", b"other words").await;
    upload_raw(
        &srv,
        &s,
        "text/plain",
        &format!("docId={}", id_of(&theirs)),
        text,
    )
    .await
    .expect_error(409, "document_exists");

    // Nothing of any of that was stored.
    let list = srv.get(&docs_of(&s)).await.expect(200);
    assert_eq!(list, json!([]));
    let ev = events(&srv, &s).await;
    assert_eq!(ev.len(), before_events, "{ev:?}");
    let jobs = srv.get(&format!("{}/jobs", path(&s))).await.expect(200);
    assert_eq!(jobs, json!([]));

    // The default overlap shrinks with a small window.
    let small = upload_raw(&srv, &s, "text/plain", "chunkTokens=100", text)
        .await
        .expect(202);
    assert_eq!(small["document"]["overlapTokens"], 50);

    // A closed session takes no upload.
    srv.post(&format!("{}/close", path(&s)), &json!({}))
        .await
        .expect(200);
    let n = srv
        .get(&docs_of(&s))
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .len();
    upload_raw(&srv, &s, "text/plain", "filename=c.txt", text)
        .await
        .expect_error(409, "session_closed");
    assert_eq!(
        srv.get(&docs_of(&s))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        n
    );

    // Unknown documents and sessions on the other routes.
    let missing = "00000000-0000-4000-8000-000000000001";
    srv.get(&doc_url(&s, missing))
        .await
        .expect_error(404, "document_not_found");
    srv.get(&doc_url(&s, "nope"))
        .await
        .expect_error(404, "document_not_found");
    srv.delete(&doc_url(&s, missing))
        .await
        .expect_error(404, "document_not_found");
    srv.get(&docs_of("no-such-session"))
        .await
        .expect_error(404, "session_not_found");
    srv.get(&search_url("no-such-session", "x"))
        .await
        .expect_error(404, "session_not_found");
    // Another session's document is not reachable through this one.
    srv.get(&doc_url(&s, &id_of(&theirs)))
        .await
        .expect_error(404, "document_not_found");
}

#[tokio::test]
async fn search_bad_queries() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let base = format!("{}/chunks/search", path(&s));
    for q in [
        String::new(),
        "?q=".to_owned(),
        "?q=%20%20".to_owned(),
        "?q=a&limit=0".to_owned(),
        "?q=a&limit=101".to_owned(),
        "?q=a&bogus=1".to_owned(),
        format!("?q={}", "a".repeat(513)),
    ] {
        srv.get(&format!("{base}{q}"))
            .await
            .expect_error(400, "invalid_query");
    }
    assert_eq!(
        srv.get(&format!("{base}?q=nothing")).await.expect(200),
        json!([])
    );
}

#[tokio::test]
async fn reuse_copies_chunks_unless_settings_differ_or_reuse_is_off() {
    let srv = TestServer::start().await;
    let s1 = new_session(&srv).await;
    let s2 = new_session(&srv).await;
    let first = upload_ready(&srv, &s1, "text/markdown", "filename=guide.md", GUIDE_MD).await;
    let first_job = first["jobId"].as_str().unwrap().to_owned();

    // Same bytes and settings, another session of the account: reused at once.
    let up = upload_raw(&srv, &s2, "text/markdown", "filename=copy.md", GUIDE_MD)
        .await
        .expect(202);
    assert_eq!(up["document"]["status"], "ready", "{up}");
    assert_eq!(up["job"]["status"], "succeeded");
    assert_eq!(up["job"]["reusedFrom"], first_job.as_str());
    assert_eq!(up["job"]["result"]["reusedDocumentId"], first["id"]);
    assert_eq!(up["job"]["attempts"], 0, "no processing ran: {up}");
    let doc = id_of(&up["document"]);
    let copy = srv.get(&doc_url(&s2, &doc)).await.expect(200);
    let contents = |d: &Value| -> Vec<Value> {
        d["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| json!([c["index"], c["content"], c["tokenCount"], c["charCount"]]))
            .collect()
    };
    assert_eq!(contents(&copy), contents(&first));
    assert_eq!(copy["chunkCount"], first["chunkCount"]);
    assert_eq!(copy["tokenCount"], first["tokenCount"]);
    // New chunk ids under the new document.
    assert_ne!(copy["chunks"][0]["id"], first["chunks"][0]["id"]);
    let ev = events(&srv, &s2).await;
    assert_eq!(
        types_for(&ev, &doc),
        ["document.uploaded", "document.reused"]
    );
    assert!(ev
        .iter()
        .any(|e| e["type"] == "job.succeeded" && e["detail"]["reusedFrom"] == first_job.as_str()));
    assert!(!ev
        .iter()
        .any(|e| e["type"] == "job.started" || e["type"] == "job.progress"));

    // Different chunk settings: processed again.
    let up = upload_raw(
        &srv,
        &s2,
        "text/markdown",
        "filename=guide.md&chunkTokens=300",
        GUIDE_MD,
    )
    .await
    .expect(202);
    assert_eq!(up["document"]["status"], "processing");
    assert_eq!(up["job"]["status"], "queued");
    assert!(up["job"]["reusedFrom"].is_null());
    let done = wait_done(&srv, &s2, &id_of(&up["document"])).await;
    assert_eq!(done["type"], "document.ready");

    // reuse=false: processed again.
    let up = upload_raw(
        &srv,
        &s2,
        "text/markdown",
        "filename=guide.md&reuse=false",
        GUIDE_MD,
    )
    .await
    .expect(202);
    assert_eq!(up["document"]["status"], "processing");
    assert!(up["job"]["reusedFrom"].is_null());
    let done = wait_done(&srv, &s2, &id_of(&up["document"])).await;
    assert_eq!(done["type"], "document.ready");
    let job = srv
        .get(&format!("/v1/jobs/{}", id_of(&up["job"])))
        .await
        .expect(200);
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_i64()),
        (Some("succeeded"), Some(1))
    );

    // A failed document is never a source of reuse.
    let bad = b"caf\xe9 au lait";
    let f1 = upload_raw(&srv, &s1, "text/plain", "filename=bad.txt", bad)
        .await
        .expect(202);
    wait_done(&srv, &s1, &id_of(&f1["document"])).await;
    let f2 = upload_raw(&srv, &s1, "text/plain", "filename=bad.txt", bad)
        .await
        .expect(202);
    assert_eq!(f2["document"]["status"], "processing", "{f2}");
}

#[tokio::test]
async fn reupload_with_same_doc_id_replaces() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let id = "5a0c8e3e-2f1b-4b7a-9a51-3f0c4d2e1b10";
    let v1 = upload_ready(
        &srv,
        &s,
        "text/plain",
        &format!("filename=a.txt&docId={id}"),
        b"first version mentions aardvark",
    )
    .await;
    assert_eq!(v1["id"], id);
    let v2 = upload_ready(
        &srv,
        &s,
        "text/plain",
        &format!("filename=b.txt&docId={id}"),
        b"second version mentions badger",
    )
    .await;
    assert_eq!(v2["id"], id);
    assert_eq!(v2["filename"], "b.txt");
    let all: String = v2["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect();
    assert!(all.contains("badger") && !all.contains("aardvark"), "{all}");
    let list = srv.get(&docs_of(&s)).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let hits = srv.get(&search_url(&s, "aardvark")).await.expect(200);
    assert_eq!(hits, json!([]), "the old chunks are gone");
    let hits = srv.get(&search_url(&s, "badger")).await.expect(200);
    assert_eq!(hits.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn delete_removes_document_and_chunks() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let d = upload_ready(
        &srv,
        &s,
        "text/plain",
        "filename=w.txt",
        b"the wombat sleeps",
    )
    .await;
    let doc = id_of(&d);
    assert_eq!(
        srv.get(&search_url(&s, "wombat"))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    srv.delete(&doc_url(&s, &doc)).await.expect(204);
    srv.get(&doc_url(&s, &doc))
        .await
        .expect_error(404, "document_not_found");
    assert_eq!(srv.get(&docs_of(&s)).await.expect(200), json!([]));
    assert_eq!(
        srv.get(&search_url(&s, "wombat")).await.expect(200),
        json!([])
    );
    srv.delete(&doc_url(&s, &doc))
        .await
        .expect_error(404, "document_not_found");
    let ev = events(&srv, &s).await;
    assert_eq!(
        types_for(&ev, &doc),
        ["document.uploaded", "document.ready", "document.deleted"]
    );
    // Deleting the session takes its documents along.
    let d = upload_ready(&srv, &s, "text/plain", "filename=x.txt", b"xylophone").await;
    srv.delete(&path(&s)).await.expect(204);
    srv.get(&doc_url(&s, &id_of(&d)))
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test]
async fn search_ranks_and_marks_snippets() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let few = upload_ready(
        &srv,
        &s,
        "text/plain",
        "filename=few.txt",
        b"A single mention of the quokka among many other animals such as cats dogs horses.",
    )
    .await;
    let many = upload_ready(
        &srv,
        &s,
        "text/plain",
        "filename=many.txt",
        b"quokka quokka quokka: the quokka is a small marsupial; every quokka smiles.",
    )
    .await;
    upload_ready(
        &srv,
        &s,
        "text/plain",
        "filename=none.txt",
        b"nothing relevant here",
    )
    .await;
    let hits = srv.get(&search_url(&s, "quokka")).await.expect(200);
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(
        hits[0]["documentId"], many["id"],
        "more matches rank first: {hits:?}"
    );
    assert_eq!(hits[1]["documentId"], few["id"]);
    assert!(hits[0]["score"].as_f64().unwrap() >= hits[1]["score"].as_f64().unwrap());
    for h in hits {
        assert!(h["snippet"].as_str().unwrap().contains("«quokka»"), "{h}");
        assert!(h["chunkId"].is_string());
        assert_eq!(h["index"], 0);
    }
    // Every word is required.
    let both = srv
        .get(&search_url(&s, "quokka marsupial"))
        .await
        .expect(200);
    assert_eq!(both.as_array().unwrap().len(), 1);
    assert_eq!(both[0]["documentId"], many["id"]);
    // limit
    let one = srv
        .get(&format!("{}&limit=1", search_url(&s, "quokka")))
        .await
        .expect(200);
    assert_eq!(one.as_array().unwrap().len(), 1);
    // Search syntax characters are words, not operators (no 500).
    let odd = srv.get(&search_url(&s, "quokka\" OR (NEAR* -x")).await;
    assert_eq!(odd.status, 200, "{}", odd.text);
    // Other sessions' chunks are not searched.
    let t = new_session(&srv).await;
    assert_eq!(
        srv.get(&search_url(&t, "quokka")).await.expect(200),
        json!([])
    );
}

#[tokio::test]
async fn a_failing_document_is_failed_with_its_code() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let up = upload_raw(&srv, &s, "text/plain", "filename=latin1.txt", b"caf\xe9")
        .await
        .expect(202);
    let doc = id_of(&up["document"]);
    let done = wait_done(&srv, &s, &doc).await;
    assert_eq!(done["type"], "document.failed", "{done}");
    assert_eq!(done["error"]["code"], "invalid_utf8", "{done}");
    let got = srv.get(&doc_url(&s, &doc)).await.expect(200);
    assert_eq!(got["status"], "failed");
    assert_eq!(got["error"]["code"], "invalid_utf8");
    assert!(got["error"]["message"].is_string());
    assert_eq!(got["chunks"], json!([]));
    assert_eq!(got["chunkCount"], 0);
    let job = srv
        .get(&format!("/v1/jobs/{}", id_of(&up["job"])))
        .await
        .expect(200);
    assert_eq!(job["status"], "failed", "{job}");
    let ev = events(&srv, &s).await;
    assert_eq!(
        types_for(&ev, &doc),
        ["document.uploaded", "document.failed"]
    );
    // Bytes that no detector recognises (no usable type, no known suffix) are refused up front.
    upload_raw(
        &srv,
        &s,
        "application/octet-stream",
        "filename=blob.bin",
        b"\x00\x01\x02\xff\xfe",
    )
    .await
    .expect_error(415, "unsupported_content_type");
    assert_eq!(
        srv.get(&docs_of(&s))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn session_tokens_read_documents_but_cannot_change_them() {
    let srv = TestServer::start().await;
    let s = new_session(&srv).await;
    let d = upload_ready(
        &srv,
        &s,
        "text/plain",
        "filename=t.txt",
        b"token readable text",
    )
    .await;
    let tok = srv
        .post(
            &format!("{}/tokens", path(&s)),
            &json!({"scopes": ["read", "write"]}),
        )
        .await
        .expect(201);
    let api = srv.bearer(tok["token"].as_str().unwrap());
    api.get(&docs_of(&s)).await.expect(200);
    api.get(&doc_url(&s, &id_of(&d))).await.expect(200);
    api.get(&search_url(&s, "readable")).await.expect(200);
    let up = upload_raw(&api, &s, "text/plain", "filename=u.txt", b"nope").await;
    assert_eq!(up.status, 403, "{}", up.text);
    let del = api.delete(&doc_url(&s, &id_of(&d))).await;
    assert_eq!(del.status, 403, "{}", del.text);
    assert_eq!(
        srv.get(&docs_of(&s))
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
