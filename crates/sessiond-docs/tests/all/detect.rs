use sessiond_docs::{detect, is_structured_schema, resolve, Kind};

#[test]
fn request_content_type_wins_and_parameters_are_ignored() {
    assert_eq!(
        detect(Some("Text/HTML; charset=UTF-8"), Some("notes.md"), b"").unwrap(),
        Kind::Html
    );
    assert_eq!(
        detect(Some("application/json"), None, b"").unwrap(),
        Kind::Json
    );
    let d = resolve(Some("text/markdown; charset=utf-8"), None, b"").unwrap();
    assert_eq!(d.content_type, "text/markdown");
}

#[test]
fn every_listed_type_is_supported() {
    let cases = [
        ("text/plain", Kind::Text),
        ("text/csv", Kind::Text),
        ("text/markdown", Kind::Markdown),
        ("text/x-markdown", Kind::Markdown),
        ("text/html", Kind::Html),
        ("application/xhtml+xml", Kind::Html),
        ("application/json", Kind::Json),
        ("application/scim+json", Kind::Json),
        ("application/problem+json", Kind::Json),
        ("application/yaml", Kind::Yaml),
        ("application/x-yaml", Kind::Yaml),
        ("text/yaml", Kind::Yaml),
        ("text/x-yaml", Kind::Yaml),
        ("application/pdf", Kind::Pdf),
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Kind::Docx,
        ),
        ("application/sql", Kind::Sql),
        ("application/x-sql", Kind::Sql),
        ("text/sql", Kind::Sql),
    ];
    for (ct, kind) in cases {
        assert_eq!(detect(Some(ct), None, b"").unwrap(), kind, "{ct}");
    }
}

#[test]
fn unknown_request_types_are_unsupported_even_with_a_known_suffix() {
    for ct in [
        "image/png",
        "application/zip",
        "text/rtf",
        "application/msword",
    ] {
        let err = detect(Some(ct), Some("readme.md"), b"# hi").unwrap_err();
        assert_eq!(err.content_type.as_deref(), Some(ct));
        assert!(err.to_string().contains(ct));
    }
}

#[test]
fn octet_stream_and_missing_types_fall_back_to_the_suffix() {
    let cases = [
        ("a.txt", Kind::Text, "text/plain"),
        ("a.text", Kind::Text, "text/plain"),
        ("server.log", Kind::Text, "text/plain"),
        ("rows.csv", Kind::Text, "text/csv"),
        ("README.md", Kind::Markdown, "text/markdown"),
        ("notes.markdown", Kind::Markdown, "text/markdown"),
        ("index.html", Kind::Html, "text/html"),
        ("index.HTM", Kind::Html, "text/html"),
        ("spec.json", Kind::Json, "application/json"),
        ("dir/spec.YAML", Kind::Yaml, "application/yaml"),
        ("C:\\docs\\spec.yml", Kind::Yaml, "application/yaml"),
        ("paper.pdf", Kind::Pdf, "application/pdf"),
        (
            "letter.docx",
            Kind::Docx,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("schema.sql", Kind::Sql, "application/sql"),
    ];
    for (name, kind, ct) in cases {
        for req in [None, Some("application/octet-stream"), Some("")] {
            let d = resolve(req, Some(name), b"").unwrap();
            assert_eq!(
                (d.kind, d.content_type.as_str()),
                (kind, ct),
                "{name} {req:?}"
            );
        }
    }
    assert!(
        resolve(None, Some("schema.sql"), b"")
            .unwrap()
            .structured_schema
    );
}

#[test]
fn without_type_or_known_suffix_the_bytes_decide() {
    assert_eq!(detect(None, None, b"%PDF-1.7\n...").unwrap(), Kind::Pdf);
    assert_eq!(
        detect(None, Some("x.bin"), b"PK\x03\x04....word/document.xml").unwrap(),
        Kind::Docx
    );
    assert!(detect(None, None, b"PK\x03\x04....xl/workbook.xml").is_err());
    assert_eq!(
        detect(None, None, b"  <!DOCTYPE html><html>").unwrap(),
        Kind::Html
    );
    assert_eq!(detect(None, None, b"\n{\"a\": 1}").unwrap(), Kind::Json);
    assert_eq!(
        detect(None, Some("main.rs"), b"fn main() {}").unwrap(),
        Kind::Text
    );
    // A multi-byte character cut by the end of the prefix is still text.
    assert_eq!(
        detect(None, None, "caf\u{e9}".as_bytes()[..4].as_ref()).unwrap(),
        Kind::Text
    );
    // Binary: NUL bytes or invalid UTF-8.
    assert!(detect(None, Some("logo.png"), b"\x89PNG\r\n\x1a\n\0\0").is_err());
    assert!(detect(None, None, b"\xff\xfe\xfd text").is_err());
}

#[test]
fn structured_schema_types() {
    for ct in [
        "application/scim+json",
        "application/schema+json",
        "application/vnd.acme.schema+json; charset=utf-8",
        "application/sql",
        "application/x-sql",
        "TEXT/SQL",
    ] {
        assert!(is_structured_schema(ct), "{ct}");
    }
    for ct in [
        "application/json",
        "application/problem+json",
        "application/ld+json",
        "text/plain",
    ] {
        assert!(!is_structured_schema(ct), "{ct}");
    }
}
