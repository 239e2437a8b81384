use sessiond_docs::{parse, process, ChunkOptions, DocError, Kind};

use crate::common::{fixture, fixture_str, make_docx, make_pdf, make_zip, DOCX_CONTENT_TYPES};

fn heading_texts(p: &sessiond_docs::Parsed) -> Vec<(u8, &str)> {
    p.headings
        .iter()
        .map(|h| (h.level, h.text.as_str()))
        .collect()
}

#[test]
fn text_keeps_content_and_normalises_newlines() {
    let p = parse(Kind::Text, b"\xEF\xBB\xBFone\r\ntwo\rthree\n").unwrap();
    assert_eq!(p.text, "one\ntwo\nthree\n");
    assert_eq!(p.parser, "text");
    assert!(p.headings.is_empty());
}

#[test]
fn invalid_utf8_is_an_error_not_lossy() {
    for kind in [
        Kind::Text,
        Kind::Markdown,
        Kind::Html,
        Kind::Json,
        Kind::Yaml,
        Kind::Sql,
    ] {
        let err = parse(kind, b"ok \xff\xfe").unwrap_err();
        assert_eq!(err, DocError::InvalidUtf8 { valid_up_to: 3 });
        assert_eq!(err.code(), "invalid_utf8");
    }
}

#[test]
fn markdown_headings_skip_fences_and_front_matter() {
    let p = parse(Kind::Markdown, &fixture("guide.md")).unwrap();
    assert_eq!(p.parser, "markdown");
    assert_eq!(
        heading_texts(&p),
        vec![
            (1, "Orders API"),
            (1, "Getting started"),
            (2, "Endpoints"),
            (3, "Errors"),
        ]
    );
    // Offsets point at the heading's line.
    for h in &p.headings {
        let line = p.text[h.offset..].lines().next().unwrap();
        assert!(line.contains(&h.text), "{line:?} {h:?}");
    }
}

#[test]
fn markdown_heading_text_is_cleaned() {
    let p = parse(
        Kind::Markdown,
        b"# The **`orders`** [API](https://x.example/api) #\n#hashtag\n####### seven\n",
    )
    .unwrap();
    assert_eq!(heading_texts(&p), vec![(1, "The orders API")]);
}

#[test]
fn html_keeps_visible_text_only() {
    let p = parse(Kind::Html, &fixture("page.html")).unwrap();
    assert_eq!(p.parser, "html");
    for secret in [
        "SCRIPT-SECRET",
        "MODULE-SECRET",
        "NOSCRIPT-SECRET",
        "TEMPLATE-SECRET",
        "HIDDEN-SECRET",
        "STYLE-SECRET",
        "color: red",
        "Widget API guide", // <title> lives in <head>
    ] {
        assert!(!p.text.contains(secret), "{secret} leaked:\n{}", p.text);
    }
    let lines: Vec<&str> = p.text.lines().collect();
    for expected in [
        "# Widget API",
        "Widgets are small things.",
        "They live in boxes.",
        "## Endpoints",
        "- GET /widgets lists widgets",
        "- POST /widgets creates one",
        "### Limits & quotas",
        "Plan | Requests",
        "Free | 100 / day",
        "line one",
        "  indented line two",
        "Café déjà vu.",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in:\n{}",
            p.text
        );
    }
    assert!(!p.text.contains("\n\n\n"));
    assert!(!p.text.lines().any(|l| l != l.trim_end()));
    assert_eq!(
        heading_texts(&p),
        vec![(1, "Widget API"), (2, "Endpoints"), (3, "Limits & quotas")]
    );
    for h in &p.headings {
        assert!(p.text[h.offset..].starts_with(&format!(
            "{} {}",
            "#".repeat(h.level.into()),
            h.text
        )));
    }
}

#[test]
fn html_deep_nesting_does_not_overflow() {
    // Deep enough to overflow a recursive walk; html5ever itself is quadratic in depth, so not
    // deeper (see README).
    let html = format!("{}deep{}", "<div>".repeat(5_000), "</div>".repeat(5_000));
    let p = parse(Kind::Html, html.as_bytes()).unwrap();
    assert_eq!(p.text.trim(), "deep");
}

#[test]
fn json_is_pretty_printed_with_two_spaces_in_key_order() {
    let p = parse(Kind::Json, br#"{"b":1,"a":{"c":[1,2]}}"#).unwrap();
    assert_eq!(p.parser, "json");
    assert_eq!(
        p.text,
        "{\n  \"b\": 1,\n  \"a\": {\n    \"c\": [\n      1,\n      2\n    ]\n  }\n}\n"
    );
    let err = parse(Kind::Json, b"{\"a\": ").unwrap_err();
    assert!(
        matches!(err, DocError::Malformed { parser: "json", .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), "malformed_document");
    // Hostile nesting is an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse(Kind::Json, deep.as_bytes()).is_err());
}

#[test]
fn yaml_is_re_serialised_as_block_yaml() {
    let p = parse(Kind::Yaml, b"b: {x: 1, y: [a, b]}\na: 'two'\n").unwrap();
    assert_eq!(p.parser, "yaml");
    assert_eq!(p.text, "b:\n  x: 1\n  y:\n  - a\n  - b\na: two\n");
    let multi = parse(Kind::Yaml, b"a: 1\n---\nb: 2\n").unwrap();
    assert_eq!(multi.text, "a: 1\n---\nb: 2\n");
    let err = parse(Kind::Yaml, b"a: [1, 2\n").unwrap_err();
    assert!(
        matches!(err, DocError::Malformed { parser: "yaml", .. }),
        "{err:?}"
    );
    // Alias expansion bombs are refused by the parser's repetition limit.
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    assert!(parse(Kind::Yaml, bomb.as_bytes()).is_err());
}

#[test]
fn openapi3_json_is_recognised_with_operations() {
    let p = parse(Kind::Json, &fixture("openapi3.json")).unwrap();
    assert_eq!(p.parser, "openapi");
    assert_eq!(p.operation_count(), Some(5));
    assert!(p.text.starts_with("{\n  \"openapi\": \"3.0.3\","));
}

#[test]
fn swagger2_yaml_is_recognised_with_operations() {
    let p = parse(Kind::Yaml, &fixture("swagger2.yaml")).unwrap();
    assert_eq!(p.parser, "openapi");
    // GET+POST /users, GET+PUT+PATCH /users/{id}; `x-internal` is not an operation.
    assert_eq!(p.operation_count(), Some(5));
    assert!(p.text.starts_with("swagger: '2.0'\n"));
}

#[test]
fn openapi_version_may_be_a_yaml_number_and_other_documents_are_not_specs() {
    let p = parse(Kind::Yaml, b"openapi: 3.1\npaths:\n  /a:\n    get: {}\n").unwrap();
    assert_eq!((p.parser, p.operation_count()), ("openapi", Some(1)));
    for doc in [
        &b"openapi: 2.0\npaths: {}\n"[..],
        b"swagger: '1.2'\n",
        b"name: openapi\n",
        b"- openapi: 3.0.0\n",
    ] {
        let p = parse(Kind::Yaml, doc).unwrap();
        assert_eq!((p.parser, p.operation_count()), ("yaml", None));
    }
}

#[test]
fn pdf_text_has_a_marker_per_page() {
    let pdf = make_pdf(&[
        &["Quarterly report", "Revenue grew (a lot)."],
        &["Second page text"],
    ]);
    let p = parse(Kind::Pdf, &pdf).unwrap();
    assert_eq!(p.parser, "pdf");
    assert_eq!(p.pages, Some(2));
    let one = p.text.find("--- page 1 ---").unwrap();
    let two = p.text.find("--- page 2 ---").unwrap();
    assert!(one < two);
    let first = &p.text[one..two];
    assert!(first.contains("Quarterly report"), "{}", p.text);
    assert!(first.contains("Revenue grew (a lot)."), "{}", p.text);
    assert!(p.text[two..].contains("Second page text"), "{}", p.text);
}

#[test]
fn malformed_pdf_is_an_error_not_a_panic() {
    for bytes in [
        &b"%PDF-1.4\nthis is not really a pdf"[..],
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF",
        b"",
    ] {
        let err = parse(Kind::Pdf, bytes).unwrap_err();
        assert!(
            matches!(err, DocError::Malformed { parser: "pdf", .. } | DocError::Empty),
            "{err:?}"
        );
    }
}

#[test]
fn pdf_without_text_is_empty() {
    let pdf = make_pdf(&[&[]]);
    assert_eq!(parse(Kind::Pdf, &pdf).unwrap_err(), DocError::Empty);
}

#[test]
fn docx_paragraphs_headings_and_table_rows() {
    let p = parse(Kind::Docx, &make_docx()).unwrap();
    assert_eq!(p.parser, "docx");
    assert_eq!(
        p.text,
        "# Billing Guide\n\
         \n# Invoices\n\
         Invoices are sent monthly.\n\
         Col A\tCol B\n\
         First line\n\
         Second line\n\
         Terms & conditions\n\
         Shape text\n\
         Plan | Price | Notes\n\
         Pro | $10 | Billed yearly\n\
         \n## Refunds\n\
         GET /refunds/{id} returns a refund.\n"
    );
    assert_eq!(
        heading_texts(&p),
        vec![(1, "Billing Guide"), (1, "Invoices"), (2, "Refunds")]
    );
}

#[test]
fn broken_docx_is_malformed() {
    let not_zip = parse(Kind::Docx, b"PK\x03\x04 not really").unwrap_err();
    assert!(
        matches!(not_zip, DocError::Malformed { parser: "docx", .. }),
        "{not_zip:?}"
    );
    let no_body = make_zip(&[("[Content_Types].xml", DOCX_CONTENT_TYPES)]);
    let err = parse(Kind::Docx, &no_body).unwrap_err();
    assert!(err.to_string().contains("word/document.xml"), "{err}");
    let bad_xml = make_zip(&[("word/document.xml", "<w:document><w:body></w:p>")]);
    assert!(matches!(
        parse(Kind::Docx, &bad_xml).unwrap_err(),
        DocError::Malformed { parser: "docx", .. }
    ));
}

#[test]
fn sql_is_text_with_its_own_parser_name() {
    let p = parse(Kind::Sql, &fixture("schema.sql")).unwrap();
    assert_eq!(p.parser, "sql");
    assert_eq!(p.text, fixture_str("schema.sql"));
}

#[test]
fn empty_inputs() {
    let opts = ChunkOptions::default();
    for (bytes, ct) in [
        (&b""[..], Some("text/plain")),
        (b"", None),
        (b"   \n\t\n", Some("text/plain")),
        (
            b"<html><head><title>t</title></head><body><script>x()</script></body></html>",
            Some("text/html"),
        ),
        (b"", Some("application/pdf")),
    ] {
        let err = process(bytes, ct, Some("f"), &opts).unwrap_err();
        assert_eq!(err, DocError::Empty, "{ct:?} {bytes:?}");
        assert_eq!(err.code(), "empty_document");
    }
}

#[test]
fn unsupported_types_fail_before_parsing() {
    let err = process(
        b"\x89PNG",
        Some("image/png"),
        Some("a.png"),
        &ChunkOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, DocError::Unsupported(_)));
    assert_eq!(err.code(), "unsupported_content_type");
    assert_eq!(
        err.to_string(),
        "Unsupported documentation content type image/png"
    );
    // Even when empty: the type is known to be unsupported up front.
    let err = process(b"", Some("image/png"), None, &ChunkOptions::default()).unwrap_err();
    assert_eq!(err.code(), "unsupported_content_type");
}
