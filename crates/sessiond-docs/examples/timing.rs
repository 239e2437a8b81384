//! Times the tokenizer build and chunking of ~1 MB inputs:
//! `cargo run --release -p sessiond-docs --example timing`.

use std::time::Instant;

use sessiond_docs::{process, ChunkOptions};

fn markdown(target: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < target {
        i += 1;
        s.push_str(&format!(
            "## Section {i}\n\nThe service exposes `GET /v1/items/{i}` and returns JSON. "
        ));
        s.push_str("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.\n\n");
        s.push_str("- first item with some words\n- second item, 42 numbers 3.14159\n\n```rust\nfn main() { println!(\"hi\"); }\n```\n\n");
    }
    s
}

fn time(label: &str, bytes: &[u8], ct: &str) {
    let t = Instant::now();
    match process(bytes, Some(ct), None, &ChunkOptions::default()) {
        Ok(p) => println!(
            "{label}: {} bytes, {} tokens, {} chunks in {:?}",
            bytes.len(),
            p.token_count,
            p.chunks.len(),
            t.elapsed()
        ),
        Err(e) => println!("{label}: error {e} in {:?}", t.elapsed()),
    }
}

fn main() {
    let t = Instant::now();
    sessiond_docs::warm_up();
    println!("tokenizer build: {:?}", t.elapsed());
    let md = markdown(1 << 20);
    time("markdown 1 MB", md.as_bytes(), "text/markdown");
    time("markdown 1 MB again", md.as_bytes(), "text/markdown");
    let html: String = md
        .split("\n\n")
        .map(|p| format!("<p>{p}</p>\n<script>var x = 1;</script>\n"))
        .collect();
    time("html ~1.5 MB", html.as_bytes(), "text/html");
    let json = serde_json::to_string(
        &md.lines()
            .map(|l| serde_json::json!({"line": l, "n": l.len()}))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    time("json ~1.5 MB", json.as_bytes(), "application/json");
    // html5ever's scope checks are quadratic in nesting depth.
    let deep = format!("{}deep{}", "<div>".repeat(20_000), "</div>".repeat(20_000));
    time("html 20k nested divs", deep.as_bytes(), "text/html");
    time(
        "one word 1 MB",
        "a".repeat(1 << 20).as_bytes(),
        "text/plain",
    );
    time("digits 1 MB", "7".repeat(1 << 20).as_bytes(), "text/plain");
    // 8 characters of 3 bytes each.
    time(
        "cjk 1 MB",
        "漢字かな交じり文".repeat((1 << 20) / 24).as_bytes(),
        "text/plain",
    );
    time(
        "emoji 1 MB",
        "👩‍👩‍👧‍👦".repeat((1 << 20) / 25).as_bytes(),
        "text/plain",
    );
    // A whitespace run this long makes the pre-tokenizer overflow unless text is segmented.
    time(
        "spaces then x 1 MB",
        (" ".repeat(1 << 20) + "x").as_bytes(),
        "text/plain",
    );
}
