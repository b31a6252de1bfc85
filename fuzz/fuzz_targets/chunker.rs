//! Fuzzes the retrieval chunker (`retrieval/src/chunk.rs`, compiled in as is: the retrieval
//! crate's own dependencies are far too heavy to instrument).
//!
//! Input layout: byte 0 picks the format, byte 1 the token budget, byte 2 the overlap, byte 3
//! the token counter and the file name given to `DocFormat::detect`; the rest is the document,
//! decoded as lossy UTF-8. Seeds in `fuzz/seeds/chunker` carry such a 4-byte header.
//!
//! Checked, as the module doc promises: every chunk's text is the verbatim char slice
//! `start..end` of the source; offsets are in bounds and ordered; no chunk is empty; chunk ids
//! and indexes are consecutive. `document_title` and `DocFormat::detect` must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../retrieval/src/chunk.rs"]
mod chunk;

use chunk::{approx_tokens, chunk_document, document_title, ChunkerConfig, DocFormat};

const FILE_NAMES: [&str; 8] = [
    "doc.md",
    "Doc.MARKDOWN",
    "git-stash.txt",
    "notes.text",
    "guide.adoc",
    "guide.asciidoc",
    "README",
    "dir.d/archive.tar.gz",
];

/// Chars per token, rounded up: a counter far finer than `approx_tokens`, so that small
/// budgets split paragraphs inside words' neighbourhoods.
fn chars_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// One token per non-whitespace char: paragraphs blow the budget all the time.
fn dense_tokens(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let format = match data[0] % 3 {
        0 => DocFormat::Text,
        1 => DocFormat::Markdown,
        _ => DocFormat::AsciiDoc,
    };
    // 0..=255 tokens (0 exercises the `max(1)` floor); overlap up to and past the budget
    // (the chunker caps it at half).
    let max_tokens = data[1] as usize;
    let overlap_tokens = data[2] as usize;
    let config = ChunkerConfig {
        max_tokens,
        overlap_tokens,
    };
    let counter: &dyn Fn(&str) -> usize = match data[3] % 3 {
        0 => &approx_tokens,
        1 => &chars_tokens,
        _ => &dense_tokens,
    };
    let file_name = FILE_NAMES[(data[3] / 3) as usize % FILE_NAMES.len()];
    let text = String::from_utf8_lossy(&data[4..]);
    let text: &str = &text;

    // Detection: the documented extension table.
    let detected = DocFormat::detect(file_name, text);
    let ext = file_name
        .to_ascii_lowercase()
        .rsplit_once('.')
        .map(|(_, e)| e.to_string())
        .unwrap_or_default();
    match ext.as_str() {
        "md" | "markdown" => assert_eq!(detected, Some(DocFormat::Markdown)),
        "adoc" | "asciidoc" => assert_eq!(detected, Some(DocFormat::AsciiDoc)),
        "txt" | "text" => assert!(matches!(
            detected,
            Some(DocFormat::Text | DocFormat::AsciiDoc)
        )),
        _ => assert_eq!(detected, None),
    }

    let title = document_title(file_name, text, format);
    if format == DocFormat::Text {
        // Text documents are titled by their file name without folder and extension.
        assert!(!title.contains('/'), "title {title:?}");
    }

    let chunks = chunk_document(file_name, text, format, config, counter);
    let chars: Vec<char> = text.chars().collect();
    let mut previous: Option<(usize, usize)> = None;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i);
        assert_eq!(c.doc_id, file_name);
        assert_eq!(c.chunk_id, format!("{file_name}#{i}"));
        assert!(c.start < c.end, "empty chunk {i}: {}..{}", c.start, c.end);
        assert!(!c.text.is_empty(), "empty text in chunk {i}");
        assert!(
            c.end <= chars.len(),
            "chunk {i} ends at {} past the text's {} chars",
            c.end,
            chars.len()
        );
        let slice: String = chars[c.start..c.end].iter().collect();
        assert_eq!(c.text, slice, "chunk {i} is not the source slice {}..{}", c.start, c.end);
        // The documented way to check a citation.
        let documented: String = text.chars().skip(c.start).take(c.end - c.start).collect();
        assert_eq!(c.text, documented);
        // Ordered, and each chunk brings new text: it starts after the previous one and ends
        // after it (see fuzz/README.md for the duplicate chunks this found).
        if let Some((start, end)) = previous {
            assert!(
                c.start > start && c.end > end,
                "chunk {i} at {}..{} is not after chunk {} at {start}..{end}",
                c.start,
                c.end,
                i - 1
            );
        }
        previous = Some((c.start, c.end));
    }
    // Non-blank text yields at least one chunk.
    if !text.trim().is_empty() {
        assert!(!chunks.is_empty(), "no chunk for non-blank text");
    }
});
