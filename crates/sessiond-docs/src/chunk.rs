//! Token windows over parsed text (cl100k_base).
//!
//! The text is encoded once; windows are cut at token boundaries that are also UTF-8 boundaries,
//! preferring a line end (then a word boundary) in the last 10% of the window. Each window's
//! `token_count` is re-measured on its own text, because BPE at a cut can differ from the
//! tokens of the whole text; a window that re-measures above the limit is shortened.

use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

use crate::error::DocError;

pub const DEFAULT_CHUNK_TOKENS: usize = 10_000;
pub const DEFAULT_OVERLAP_TOKENS: usize = 500;
pub const MIN_CHUNK_TOKENS: usize = 100;
pub const MAX_CHUNK_TOKENS: usize = 100_000;
/// Structured schema uploads stay one chunk up to this many tokens.
pub const SCHEMA_MAX_TOKENS: usize = 100_000;

/// Absent fields deserialize to their defaults; call [`ChunkOptions::validate`] after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChunkOptions {
    /// Window size, `100..=100_000`.
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive windows, `< chunk_tokens`.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
            overlap_tokens: DEFAULT_OVERLAP_TOKENS,
        }
    }
}

impl ChunkOptions {
    pub fn new(chunk_tokens: usize, overlap_tokens: usize) -> Result<Self, DocError> {
        let opts = ChunkOptions {
            chunk_tokens,
            overlap_tokens,
        };
        opts.validate()?;
        Ok(opts)
    }

    pub fn validate(&self) -> Result<(), DocError> {
        if !(MIN_CHUNK_TOKENS..=MAX_CHUNK_TOKENS).contains(&self.chunk_tokens) {
            return Err(DocError::InvalidOptions(format!(
                "chunkTokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}, got {}",
                self.chunk_tokens
            )));
        }
        if self.overlap_tokens >= self.chunk_tokens {
            return Err(DocError::InvalidOptions(format!(
                "overlapTokens must be less than chunkTokens ({}), got {}",
                self.chunk_tokens, self.overlap_tokens
            )));
        }
        Ok(())
    }
}

/// A window of the text: byte range `start..end` and its exact token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
    pub token_count: usize,
}

/// The cl100k_base encoder, built on first use (it takes a noticeable fraction of a second)
/// from the vocabulary embedded in tiktoken-rs — nothing is fetched.
fn bpe() -> &'static CoreBPE {
    tiktoken_rs::cl100k_base_singleton()
}

/// Builds the tokenizer now, e.g. at server start, so the first upload does not pay for it.
pub fn warm_up() {
    let _ = bpe();
}

/// cl100k_base tokens of `text`. Special-token text such as `<|endoftext|>` counts as ordinary
/// text, as it does in chunking.
pub fn count_tokens(text: &str) -> usize {
    let bpe = bpe();
    segments(text).map(|s| bpe.encode_ordinary(s).len()).sum()
}

/// Segment size for encoding. tiktoken-rs's pre-tokenizer (fancy-regex) panics with a stack
/// overflow on whitespace runs near 1 MB, and BPE is quadratic in a piece's length, so text is
/// encoded in segments of about this many bytes.
const SEGMENT_BYTES: usize = 16 * 1024;

fn encode(text: &str) -> Vec<u32> {
    let bpe = bpe();
    let mut out = Vec::with_capacity(text.len() / 4 + 1);
    for seg in segments(text) {
        out.extend(bpe.encode_ordinary(seg));
    }
    out
}

/// Splits `text` where the cl100k pre-tokenizer would split anyway, so the tokens are those
/// of the whole text: after a newline followed by a non-space character, else before a space
/// that follows a non-space character. Only a run of more than half a segment with neither
/// (one enormous "word" or whitespace run) is cut at an arbitrary character boundary, where
/// the count may differ by a token or two from encoding the text unsplit.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= SEGMENT_BYTES {
            return Some(std::mem::take(&mut rest));
        }
        let cut = safe_cut(rest);
        let (seg, tail) = rest.split_at(cut);
        rest = tail;
        Some(seg)
    })
}

fn safe_cut(s: &str) -> usize {
    let b = s.as_bytes();
    let lo = SEGMENT_BYTES / 2;
    let starts_non_space = |p: usize| s[p..].chars().next().is_some_and(|c| !c.is_whitespace());
    // After "\n", before a non-whitespace character.
    for p in (lo..=SEGMENT_BYTES).rev() {
        if b[p - 1] == b'\n' && s.is_char_boundary(p) && starts_non_space(p) {
            return p;
        }
    }
    // Before " " that follows a non-whitespace character.
    for p in (lo..=SEGMENT_BYTES).rev() {
        if b[p] == b' ' && s.is_char_boundary(p) {
            if let Some(prev) = s[..p].chars().next_back() {
                if !prev.is_whitespace() {
                    return p;
                }
            }
        }
    }
    (1..=SEGMENT_BYTES)
        .rev()
        .find(|&p| s.is_char_boundary(p))
        .unwrap_or(s.len())
}

/// Windows over `text` (see the module docs). Empty text → no windows.
pub fn windows(text: &str, opts: &ChunkOptions) -> Result<Vec<Window>, DocError> {
    opts.validate()?;
    Ok(windows_with(text, opts, false, &mut |_, _| {})?.0)
}

/// `keep_whole`: structured schema — one window while the text fits [`SCHEMA_MAX_TOKENS`].
/// `progress(fraction of bytes covered, windows so far)`. Also returns the text's token count.
pub(crate) fn windows_with(
    text: &str,
    opts: &ChunkOptions,
    keep_whole: bool,
    progress: &mut dyn FnMut(f64, usize),
) -> Result<(Vec<Window>, usize), DocError> {
    let bpe = bpe();
    let tokens = encode(text);
    let n = tokens.len();
    if n == 0 {
        return Ok((Vec::new(), 0));
    }
    if n <= opts.chunk_tokens || (keep_whole && n <= SCHEMA_MAX_TOKENS) {
        progress(1.0, 1);
        let whole = Window {
            start: 0,
            end: text.len(),
            token_count: n,
        };
        return Ok((vec![whole], n));
    }

    // offs[i] = byte offset where token i starts; offs[n] = text.len().
    let mut offs = Vec::with_capacity(n + 1);
    let mut pos = 0usize;
    offs.push(0);
    for t in &tokens {
        let len = bpe
            .decode_bytes(std::slice::from_ref(t))
            .map(|b| b.len())
            .map_err(|e| DocError::malformed("tokenizer", format!("{e:?}")))?;
        pos += len;
        offs.push(pos);
    }
    if pos != text.len() {
        return Err(DocError::malformed(
            "tokenizer",
            "token bytes do not add up to the text",
        ));
    }

    let cuts = Cuts { text, offs: &offs };
    let chunk = opts.chunk_tokens;
    let overlap = opts.overlap_tokens;
    let total = text.len() as f64;
    let mut out = Vec::new();
    let mut start = 0usize;
    loop {
        let hard_end = (start + chunk).min(n);
        let mut end = if hard_end == n {
            n
        } else {
            cuts.pick_end(start, hard_end)
        };
        let mut count = count_tokens(cuts.slice(start, end));
        // Rare: the window re-encodes to more tokens than allowed; step back a boundary.
        while count > chunk {
            match (start + 1..end).rev().find(|&i| cuts.ok(i)) {
                Some(e) => end = e,
                None => break,
            }
            count = count_tokens(cuts.slice(start, end));
        }
        out.push(Window {
            start: offs[start],
            end: offs[end],
            token_count: count,
        });
        progress(offs[end] as f64 / total, out.len());
        if end == n {
            break;
        }
        start = cuts.next_start(start, end, overlap);
    }
    Ok((out, n))
}

struct Cuts<'a> {
    text: &'a str,
    offs: &'a [usize],
}

impl Cuts<'_> {
    fn slice(&self, start: usize, end: usize) -> &str {
        &self.text[self.offs[start]..self.offs[end]]
    }

    /// Token boundary `i` is also a UTF-8 boundary (a character may span tokens).
    fn ok(&self, i: usize) -> bool {
        self.text.is_char_boundary(self.offs[i])
    }

    fn byte_before(&self, i: usize) -> Option<u8> {
        let at = self.offs[i];
        (at > 0).then(|| self.text.as_bytes()[at - 1])
    }

    fn line(&self, i: usize) -> bool {
        self.ok(i) && self.byte_before(i) == Some(b'\n')
    }

    fn word(&self, i: usize) -> bool {
        self.ok(i)
            && (self.byte_before(i).is_some_and(|b| b.is_ascii_whitespace())
                || self
                    .text
                    .as_bytes()
                    .get(self.offs[i])
                    .is_some_and(|b| b.is_ascii_whitespace()))
    }

    /// Where a window from `start` (at most `hard_end`) ends.
    fn pick_end(&self, start: usize, hard_end: usize) -> usize {
        let slack = ((hard_end - start) / 10).max(1);
        let lo = hard_end.saturating_sub(slack).max(start + 1);
        (lo..=hard_end)
            .rev()
            .find(|&i| self.line(i))
            .or_else(|| (lo..=hard_end).rev().find(|&i| self.word(i)))
            .or_else(|| (start + 1..=hard_end).rev().find(|&i| self.ok(i)))
            .or_else(|| (hard_end + 1..self.offs.len()).find(|&i| self.ok(i)))
            .unwrap_or(self.offs.len() - 1)
    }

    /// The next window starts `overlap` tokens before `end`, moved back (by at most 10% of the
    /// overlap) to a line or word start; always after `start` and not after `end`.
    fn next_start(&self, start: usize, end: usize, overlap: usize) -> usize {
        let target = end.saturating_sub(overlap).max(start + 1);
        let slack = overlap / 10;
        let lo = target.saturating_sub(slack).max(start + 1);
        (lo..=target)
            .rev()
            .find(|&i| self.line(i))
            .or_else(|| (lo..=target).rev().find(|&i| self.word(i)))
            .or_else(|| (start + 1..=target).rev().find(|&i| self.ok(i)))
            .or_else(|| (target..=end).find(|&i| self.ok(i)))
            .unwrap_or(end)
    }
}
