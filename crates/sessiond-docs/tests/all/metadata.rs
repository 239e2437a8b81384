use serde_json::json;
use sessiond_docs::{endpoint_lines, process, Category, ChunkOptions};

use crate::common::{fixture, long_prose, make_docx, make_pdf};

fn opts(chunk: usize, overlap: usize) -> ChunkOptions {
    ChunkOptions::new(chunk, overlap).unwrap()
}

#[test]
fn markdown_metadata() {
    let p = process(
        &fixture("guide.md"),
        None,
        Some("guide.md"),
        &ChunkOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (p.parser, p.content_type.as_str()),
        ("markdown", "text/markdown")
    );
    assert_eq!(p.chunks.len(), 1);
    let m = &p.chunks[0].metadata;
    assert_eq!(m.num_endpoints, 3);
    assert_eq!(p.num_endpoints, 3);
    assert_eq!(m.category, Category::ReferenceApi);
    assert_eq!(
        m.tags,
        ["Orders API", "Getting started", "Endpoints", "Errors"]
    );
    assert_eq!(
        serde_json::to_value(m).unwrap(),
        json!({
            "chunkNumber": 1,
            "tokenCount": p.chunks[0].token_count,
            "charCount": p.chunks[0].char_count,
            "contentType": "text/markdown",
            "filename": "guide.md",
            "parser": "markdown",
            "numEndpoints": 3,
            "category": "reference_api",
            "tags": ["Orders API", "Getting started", "Endpoints", "Errors"],
        })
    );
    assert_eq!(
        m.to_snake_case_json(),
        json!({
            "filename": "guide.md",
            "chunk_number": 1,
            "token_count": p.chunks[0].token_count,
            "character_count": p.chunks[0].char_count,
            "num_endpoints": 3,
            "tags": ["Orders API", "Getting started", "Endpoints", "Errors"],
            "category": "reference_api",
            "content_type": "text/markdown",
            "parser": "markdown",
        })
    );
}

#[test]
fn first_prose_chunk_with_headings_is_the_overview() {
    let text = long_prose(600);
    let p = process(text.as_bytes(), Some("text/markdown"), None, &opts(300, 30)).unwrap();
    assert!(p.chunks.len() > 3);
    assert_eq!(p.chunks[0].metadata.category, Category::Overview);
    assert!(p.chunks[1..]
        .iter()
        .all(|c| c.metadata.category == Category::Other));
    // Each chunk's tags are the headings whose line starts inside it.
    for c in &p.chunks {
        let expected: Vec<String> = c
            .content
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(str::to_owned)
            .collect();
        // A chunk may start mid-line; a heading line cut at the front is not the chunk's.
        assert!(
            c.metadata.tags.iter().all(|t| expected.contains(t)),
            "{:?}",
            c.metadata.tags
        );
        assert!(expected.len() - c.metadata.tags.len() <= 1);
    }
    // Plain text has no headings, so no overview and no tags.
    let p = process(text.as_bytes(), Some("text/plain"), None, &opts(300, 30)).unwrap();
    assert!(p
        .chunks
        .iter()
        .all(|c| c.metadata.category == Category::Other && c.metadata.tags.is_empty()));
}

#[test]
fn tags_are_deduplicated_and_bounded() {
    let mut md = String::from("# Intro\n# intro\n# INTRO\n");
    md.push_str(&format!("## {}\n", "x".repeat(200)));
    for i in 0..40 {
        md.push_str(&format!("### Topic {i}\n\ntext\n\n"));
    }
    let p = process(
        md.as_bytes(),
        Some("text/markdown"),
        None,
        &ChunkOptions::default(),
    )
    .unwrap();
    let tags = &p.chunks[0].metadata.tags;
    assert_eq!(tags.len(), 16);
    assert_eq!(tags[0], "Intro");
    assert_eq!(tags[1], "x".repeat(64));
    assert_eq!(tags[2], "Topic 0");
    assert!(tags.iter().all(|t| t.chars().count() <= 64));
}

#[test]
fn openapi3_json_counts_operations_per_chunk() {
    let spec = fixture("openapi3.json");
    let whole = process(
        &spec,
        Some("application/json"),
        Some("pets.json"),
        &ChunkOptions::default(),
    )
    .unwrap();
    assert_eq!((whole.parser, whole.num_endpoints), ("openapi", 5));
    let m = &whole.chunks[0].metadata;
    assert_eq!((m.category, m.num_endpoints), (Category::SpecJson, 5));
    assert_eq!(m.tags, ["pets", "admin", "store"]);

    // Without overlap each path key is in exactly one chunk, so the counts add up.
    let split = process(&spec, Some("application/json"), None, &opts(100, 0)).unwrap();
    assert!(split.chunks.len() >= 3);
    assert_eq!(
        split
            .chunks
            .iter()
            .map(|c| c.metadata.num_endpoints)
            .sum::<usize>(),
        5
    );
    assert!(split
        .chunks
        .iter()
        .all(|c| c.metadata.category == Category::SpecJson));
    for c in &split.chunks {
        let has_key = [
            "\"/pets\":",
            "\"/pets/{petId}\":",
            "\"/stores/{storeId}/inventory\":",
        ]
        .iter()
        .any(|k| c.content.contains(k));
        assert_eq!(has_key, c.metadata.num_endpoints > 0, "{}", c.content);
    }
    let store = split
        .chunks
        .iter()
        .find(|c| c.content.contains("\"/stores/{storeId}/inventory\":"))
        .unwrap();
    assert!(store.metadata.tags.contains(&"store".to_owned()));
}

#[test]
fn swagger2_yaml_counts_operations() {
    let spec = fixture("swagger2.yaml");
    let p = process(&spec, None, Some("users.yaml"), &ChunkOptions::default()).unwrap();
    assert_eq!(
        (p.parser, p.content_type.as_str(), p.num_endpoints),
        ("openapi", "application/yaml", 5)
    );
    let m = &p.chunks[0].metadata;
    assert_eq!((m.category, m.num_endpoints), (Category::SpecYaml, 5));
    assert_eq!(m.tags, ["users", "admin"]);

    let split = process(&spec, None, Some("users.yaml"), &opts(100, 0)).unwrap();
    assert!(split.chunks.len() >= 2);
    assert_eq!(
        split
            .chunks
            .iter()
            .map(|c| c.metadata.num_endpoints)
            .sum::<usize>(),
        5
    );
    assert!(split
        .chunks
        .iter()
        .all(|c| c.metadata.category == Category::SpecYaml));
}

#[test]
fn schema_uploads_are_categorised_as_schema() {
    let p = process(
        &fixture("users.scim.json"),
        Some("application/scim+json"),
        None,
        &ChunkOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (p.parser, p.content_type.as_str()),
        ("json", "application/scim+json")
    );
    assert_eq!(p.chunks[0].metadata.category, Category::Schema);
    let p = process(
        &fixture("schema.sql"),
        None,
        Some("schema.sql"),
        &ChunkOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (p.parser, p.chunks[0].metadata.category),
        ("sql", Category::Schema)
    );
    let p = process(
        &fixture("users.scim.json"),
        None,
        Some("users.json"),
        &ChunkOptions::default(),
    )
    .unwrap();
    assert_eq!(p.chunks[0].metadata.category, Category::Other);
}

#[test]
fn html_pdf_docx_metadata() {
    let p = process(
        &fixture("page.html"),
        Some("text/html; charset=utf-8"),
        Some("page.html"),
        &ChunkOptions::default(),
    )
    .unwrap();
    let m = &p.chunks[0].metadata;
    assert_eq!(
        (m.parser.as_str(), m.content_type.as_str()),
        ("html", "text/html")
    );
    assert_eq!((m.num_endpoints, m.category), (2, Category::ReferenceApi));
    assert_eq!(m.tags, ["Widget API", "Endpoints", "Limits & quotas"]);

    let pdf = make_pdf(&[&["Intro text"], &["POST /payments creates a payment"]]);
    let p = process(&pdf, None, Some("r.pdf"), &ChunkOptions::default()).unwrap();
    let m = &p.chunks[0].metadata;
    assert_eq!(
        (m.parser.as_str(), m.num_endpoints, m.category),
        ("pdf", 1, Category::ReferenceApi)
    );

    let p = process(
        &make_docx(),
        None,
        Some("billing.docx"),
        &ChunkOptions::default(),
    )
    .unwrap();
    let m = &p.chunks[0].metadata;
    assert_eq!((m.parser.as_str(), m.num_endpoints), ("docx", 1));
    assert_eq!(m.tags, ["Billing Guide", "Invoices", "Refunds"]);
    assert_eq!(m.filename.as_deref(), Some("billing.docx"));
}

#[test]
fn overview_needs_headings_and_no_endpoints() {
    let p = process(
        b"# Welcome\n\nSome prose.\n",
        Some("text/markdown"),
        None,
        &ChunkOptions::default(),
    )
    .unwrap();
    assert_eq!(p.chunks[0].metadata.category, Category::Overview);
    let p = process(
        b"Some prose.\n",
        Some("text/markdown"),
        None,
        &ChunkOptions::default(),
    )
    .unwrap();
    assert_eq!(p.chunks[0].metadata.category, Category::Other);
    assert_eq!(p.chunks[0].metadata.filename, None);
}

#[test]
fn endpoint_line_rules() {
    for line in [
        "GET /users/{id}",
        "  POST /orders",
        "- `DELETE /orders/{id}` cancels",
        "* **PATCH** /things",
        "| PUT | /x |",
        "### HEAD /health",
        "OPTIONS https://api.example.com/v1",
        "GET\t/tabbed",
    ] {
        assert_eq!(endpoint_lines(line), 1, "{line:?}");
    }
    for line in [
        "GETTING /started",
        "get /lowercase",
        "GET users",
        "We GET /x in prose",
        "POST",
        "curl -X GET https://x",
    ] {
        assert_eq!(endpoint_lines(line), 0, "{line:?}");
    }
    assert_eq!(endpoint_lines("GET /a\nPOST /b\nnope\n"), 2);
}
