use sessiond_docs::{
    count_tokens, process, process_with_progress, windows, ChunkOptions, DocError, Progress, Stage,
    Window,
};

use crate::common::long_prose;

fn opts(chunk: usize, overlap: usize) -> ChunkOptions {
    ChunkOptions::new(chunk, overlap).unwrap()
}

/// The invariants every split must hold.
fn check_windows(text: &str, ws: &[Window], o: &ChunkOptions) {
    assert!(!ws.is_empty());
    assert_eq!(ws[0].start, 0);
    assert_eq!(ws.last().unwrap().end, text.len());
    for w in ws {
        assert!(w.start < w.end);
        let slice = &text[w.start..w.end];
        assert_eq!(w.token_count, count_tokens(slice), "exact count");
        assert!(
            w.token_count <= o.chunk_tokens,
            "{} > {}",
            w.token_count,
            o.chunk_tokens
        );
    }
    for pair in ws.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Progress, and no gap: every byte (so every token) is in some chunk.
        assert!(b.start > a.start);
        assert!(b.start <= a.end, "gap between {a:?} and {b:?}");
        let shared = count_tokens(&text[b.start..a.end]);
        let slack = o.overlap_tokens / 10 + 3;
        assert!(
            shared + 2 >= o.overlap_tokens && shared <= o.overlap_tokens + slack,
            "overlap {shared} vs {}",
            o.overlap_tokens
        );
        // Windows are not cut much short of the limit.
        assert!(
            a.token_count * 10 >= o.chunk_tokens * 8,
            "short window {a:?}"
        );
    }
}

#[test]
fn options_are_validated() {
    assert_eq!(ChunkOptions::default(), opts(10_000, 500));
    for (c, o) in [(99, 0), (100_001, 0), (1000, 1000), (1000, 1001), (0, 0)] {
        let err = ChunkOptions::new(c, o).unwrap_err();
        assert_eq!(err.code(), "invalid_chunk_options");
        assert!(matches!(err, DocError::InvalidOptions(_)));
    }
    ChunkOptions::new(100, 99).unwrap();
    ChunkOptions::new(100_000, 0).unwrap();
    let bad = ChunkOptions {
        chunk_tokens: 50,
        overlap_tokens: 0,
    };
    assert!(process(b"hi", Some("text/plain"), None, &bad).is_err());
    assert!(windows("hi", &bad).is_err());
}

#[test]
fn token_counts_are_cl100k() {
    assert_eq!(count_tokens(""), 0);
    assert_eq!(count_tokens("hello world"), 2);
    // Special-token text is ordinary text.
    assert!(count_tokens("<|endoftext|>") > 1);
    // Segmented encoding (used for long inputs) agrees with encoding the text whole.
    let text =
        long_prose(3000) + &"word ".repeat(20_000) + "漢字かな交じり文\n".repeat(3000).as_str();
    assert!(text.len() > 200_000);
    let whole = tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(&text)
        .len();
    assert_eq!(count_tokens(&text), whole);
}

#[test]
fn short_text_is_one_window() {
    let text = "just a few words\n";
    let ws = windows(text, &ChunkOptions::default()).unwrap();
    assert_eq!(
        ws,
        vec![Window {
            start: 0,
            end: text.len(),
            token_count: count_tokens(text)
        }]
    );
    assert!(windows("", &ChunkOptions::default()).unwrap().is_empty());
}

#[test]
fn windows_overlap_and_cut_at_line_ends() {
    let long = long_prose(2000);
    let short = long_prose(200);
    for o in [opts(200, 20), opts(500, 100), opts(1000, 0), opts(150, 149)] {
        // Near-total overlap advances a token or so per window: keep that text short.
        let text = if o.overlap_tokens > 100 {
            &short
        } else {
            &long
        };
        let ws = windows(text, &o).unwrap();
        assert!(ws.len() > 3, "{o:?}");
        for w in &ws[..ws.len() - 1] {
            if o.chunk_tokens >= 500 {
                // Lines are under 50 tokens, so the last 10% of a window always has a line end.
                assert!(text[..w.end].ends_with('\n'), "cut mid-line at {}", w.end);
            } else {
                let b = text.as_bytes();
                assert!(
                    b[w.end - 1].is_ascii_whitespace() || b[w.end] == b' ',
                    "cut in a word"
                );
            }
        }
        if o.overlap_tokens == 0 {
            for pair in ws.windows(2) {
                assert_eq!(pair[1].start, pair[0].end);
            }
        } else if o.overlap_tokens < o.chunk_tokens / 2 {
            check_windows(text, &ws, &o);
        } else {
            // Huge overlap: still no gaps, exact counts, progress.
            for pair in ws.windows(2) {
                assert!(pair[1].start > pair[0].start && pair[1].start <= pair[0].end);
            }
        }
        for w in &ws {
            assert_eq!(w.token_count, count_tokens(&text[w.start..w.end]));
            assert!(w.token_count <= o.chunk_tokens);
        }
    }
}

#[test]
fn one_long_line_is_cut_between_words() {
    let text = "lorem ipsum dolor sit amet consectetur ".repeat(400);
    let o = opts(300, 30);
    let ws = windows(&text, &o).unwrap();
    check_windows(&text, &ws, &o);
    for w in &ws[..ws.len() - 1] {
        let before = text.as_bytes()[w.end - 1];
        let after = text.as_bytes()[w.end];
        assert!(
            before == b' ' || after == b' ',
            "cut inside a word at {}",
            w.end
        );
    }
}

#[test]
fn multibyte_text_is_cut_on_character_boundaries() {
    // CJK and emoji whose characters span several tokens.
    let text = "漢字かな交じり文、絵文字👩‍👩‍👧‍👦も。".repeat(600);
    let o = opts(200, 20);
    let ws = windows(&text, &o).unwrap();
    check_windows(&text, &ws, &o);
}

#[test]
fn pathological_runs_do_not_panic() {
    // A whitespace run this long overflows the tokenizer's regex if encoded in one piece.
    let text = " ".repeat(1 << 20) + "x";
    let p = process(
        text.as_bytes(),
        Some("text/plain"),
        None,
        &ChunkOptions::default(),
    )
    .unwrap();
    assert!(p.token_count > 0);
    let word = "a".repeat(300_000);
    let ws = windows(&word, &opts(1000, 100)).unwrap();
    assert_eq!(ws.last().unwrap().end, word.len());
}

#[test]
fn chunks_are_the_windows() {
    let text = long_prose(800);
    let o = opts(300, 50);
    let p = process(text.as_bytes(), Some("text/plain"), Some("prose.txt"), &o).unwrap();
    let ws = windows(&text, &o).unwrap();
    assert_eq!(p.chunks.len(), ws.len());
    assert_eq!(p.token_count, count_tokens(&text));
    for (i, (c, w)) in p.chunks.iter().zip(&ws).enumerate() {
        assert_eq!(c.index, i);
        assert_eq!(c.content, &text[w.start..w.end]);
        assert_eq!(c.token_count, w.token_count);
        assert_eq!(c.char_count, c.content.chars().count());
        assert_eq!(c.metadata.chunk_number, i + 1);
        assert_eq!(c.metadata.token_count, c.token_count);
        assert_eq!(c.metadata.char_count, c.char_count);
    }
}

#[test]
fn structured_schema_stays_one_chunk_up_to_the_limit() {
    let mut sql = String::new();
    let mut i = 0;
    while count_tokens(&sql) < 30_000 {
        for _ in 0..50 {
            i += 1;
            sql.push_str(&format!(
                "CREATE TABLE t{i} (\n  id uuid PRIMARY KEY,\n  name text NOT NULL\n);\n\n"
            ));
        }
    }
    let o = opts(1000, 100);
    for ct in ["application/sql", "text/sql", "application/x-sql"] {
        let p = process(sql.as_bytes(), Some(ct), Some("schema.sql"), &o).unwrap();
        assert_eq!(p.chunks.len(), 1, "{ct}");
        assert_eq!(p.chunks[0].content, sql);
        assert_eq!(p.chunks[0].token_count, count_tokens(&sql));
        assert_eq!(p.chunks[0].metadata.category.as_str(), "schema");
    }
    // The same text as plain text is windowed normally.
    let plain = process(sql.as_bytes(), Some("text/plain"), None, &o).unwrap();
    assert!(plain.chunks.len() > 30);

    let scim = format!(
        "{{\"schemas\": [\"urn:ietf:params:scim:schemas:core:2.0:Schema\"], \"attributes\": [{}]}}",
        (0..3000)
            .map(|i| format!("{{\"name\": \"attr{i}\", \"type\": \"string\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let p = process(scim.as_bytes(), Some("application/scim+json"), None, &o).unwrap();
    assert!(p.token_count > 10_000);
    assert_eq!(p.chunks.len(), 1);
    let p = process(scim.as_bytes(), Some("application/json"), None, &o).unwrap();
    assert!(p.chunks.len() > 10);
}

#[test]
fn structured_schema_beyond_the_limit_falls_back_to_windows() {
    let line = "INSERT INTO t VALUES (1, 'alpha'), (2, 'bravo'), (3, 'charlie');\n";
    let reps = 100_001 / count_tokens(line) + 1;
    let sql = line.repeat(reps);
    assert!(count_tokens(&sql) > 100_000);
    let p = process(
        sql.as_bytes(),
        Some("application/sql"),
        None,
        &ChunkOptions::default(),
    )
    .unwrap();
    assert!(p.chunks.len() >= 10);
    assert!(p.chunks.iter().all(|c| c.token_count <= 10_000));
}

#[test]
fn output_is_deterministic() {
    let text = long_prose(1500);
    let o = opts(400, 40);
    let a = serde_json::to_string(
        &process(text.as_bytes(), Some("text/markdown"), Some("a.md"), &o).unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        let b = serde_json::to_string(
            &process(text.as_bytes(), Some("text/markdown"), Some("a.md"), &o).unwrap(),
        )
        .unwrap();
        assert_eq!(a, b);
    }
    let spec = crate::common::fixture("openapi3.json");
    let a = serde_json::to_string(&process(&spec, None, Some("s.json"), &opts(100, 10)).unwrap())
        .unwrap();
    let b = serde_json::to_string(&process(&spec, None, Some("s.json"), &opts(100, 10)).unwrap())
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn progress_reports_stages_in_order() {
    let text = long_prose(1000);
    let mut seen: Vec<Progress> = Vec::new();
    let p = process_with_progress(
        text.as_bytes(),
        Some("text/plain"),
        None,
        &opts(300, 30),
        &mut |pr| seen.push(pr),
    )
    .unwrap();
    assert_eq!(seen[0].stage, Stage::Parsing);
    assert_eq!(seen[0].fraction, 0.0);
    assert_eq!((seen[1].stage, seen[1].fraction), (Stage::Parsing, 1.0));
    assert_eq!((seen[2].stage, seen[2].fraction), (Stage::Chunking, 0.0));
    let chunking: Vec<&Progress> = seen.iter().filter(|p| p.stage == Stage::Chunking).collect();
    assert!(chunking.windows(2).all(|w| w[0].fraction <= w[1].fraction));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.stage, last.fraction, last.chunks),
        (Stage::Chunking, 1.0, p.chunks.len())
    );
    assert_eq!(
        serde_json::to_value(last).unwrap(),
        serde_json::json!({"stage": "chunking", "fraction": 1.0, "chunks": p.chunks.len()})
    );
}

#[test]
fn options_deserialize_with_defaults() {
    let o: ChunkOptions = serde_json::from_value(serde_json::json!({"chunkTokens": 2000})).unwrap();
    assert_eq!(o, opts(2000, 500));
    let o: ChunkOptions = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(o, ChunkOptions::default());
}
