//! Structure-aware chunking with exact source offsets.
//!
//! A document is cut into *units* (paragraphs, or pieces of a paragraph too long for the
//! budget), each a span of the source, grouped by section (headings in Markdown and AsciiDoc,
//! including git's two-line `Title` / `=====` style). Consecutive units of one section are
//! packed into chunks under a token budget; the next chunk repeats the last units of the
//! previous one up to the overlap budget. A chunk is always a verbatim slice of the source:
//! `source.chars().skip(start).take(end - start)` is its text, so a citation can be checked
//! against the original file.

use serde::{Deserialize, Serialize};

/// How to find structure in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocFormat {
    Text,
    Markdown,
    AsciiDoc,
}

impl DocFormat {
    /// From a file name: `.md`/`.markdown` are Markdown, `.adoc`/`.asciidoc` AsciiDoc, and
    /// `.txt` is AsciiDoc when it looks like it (git's documentation is AsciiDoc in `.txt`).
    pub fn detect(file_name: &str, text: &str) -> Option<Self> {
        let lower = file_name.to_ascii_lowercase();
        let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "md" | "markdown" => Some(DocFormat::Markdown),
            "adoc" | "asciidoc" => Some(DocFormat::AsciiDoc),
            "txt" | "text" => Some(if looks_like_asciidoc(text) {
                DocFormat::AsciiDoc
            } else {
                DocFormat::Text
            }),
            _ => None,
        }
    }
}

fn looks_like_asciidoc(text: &str) -> bool {
    let lines: Vec<&str> = text.lines().take(400).collect();
    lines
        .iter()
        .any(|l| l.starts_with("= ") || l.starts_with("== "))
        || lines.windows(2).any(|w| setext_level(w[0], w[1]).is_some())
}

/// Chunk sizes, in tokens of the embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerConfig {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        // all-MiniLM-L6-v2 truncates at 256 word pieces; leave room for the title.
        Self {
            max_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

/// The document a chunk id (`<doc_id>#<n>`) belongs to; an id without `#` is its own.
pub fn document_of(chunk_id: &str) -> &str {
    chunk_id.rsplit_once('#').map_or(chunk_id, |(doc, _)| doc)
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// `<doc_id>#<index>`: stable for a given document text and chunker config.
    pub chunk_id: String,
    pub doc_id: String,
    pub index: usize,
    /// Character (Unicode scalar) offsets into the source, end exclusive.
    pub start: usize,
    pub end: usize,
    /// The section heading the chunk sits under, if any.
    pub section: Option<String>,
    /// The source text between `start` and `end`, verbatim.
    pub text: String,
}

/// A span of the source in bytes, with its token count and section.
#[derive(Debug, Clone)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
    section: usize,
}

/// Token count of a text. The real counter is the embedding model's tokenizer; tests and
/// tools without it use [`approx_tokens`].
pub type CountTokens<'a> = &'a dyn Fn(&str) -> usize;

/// Word pieces of English prose run at about 4 per 3 words.
pub fn approx_tokens(text: &str) -> usize {
    let words = text.split_whitespace().count();
    (words * 4).div_ceil(3)
}

/// A document's display title: the man-page `NAME` line when there is one (git's manual
/// pages: `git-stash - Stash the changes…`), else the first heading, else the file name
/// without folder and extension.
pub fn document_title(doc_id: &str, text: &str, format: DocFormat) -> String {
    let fallback = || {
        let name = doc_id.rsplit('/').next().unwrap_or(doc_id);
        name.rsplit_once('.')
            .map_or(name, |(stem, _)| stem)
            .to_string()
    };
    if format == DocFormat::Text {
        return fallback();
    }
    let lines: Vec<(usize, &str)> = text
        .lines()
        .take(200)
        .map(|l| (0, l.trim_end_matches('\r')))
        .collect();
    let roles = classify(&lines, format);
    let mut first_heading = None;
    let mut in_name = false;
    for (i, role) in roles.iter().enumerate() {
        let line = lines[i].1;
        match role {
            Line::Heading => {
                let title = atx_heading(line, format).unwrap_or(line.trim());
                in_name = title.eq_ignore_ascii_case("NAME");
                if first_heading.is_none() {
                    first_heading = Some(title.to_string());
                }
            }
            Line::Text if in_name => return line.trim().to_string(),
            _ => {}
        }
    }
    first_heading.unwrap_or_else(fallback)
}

/// Splits `text` into chunks.
pub fn chunk_document(
    doc_id: &str,
    text: &str,
    format: DocFormat,
    config: ChunkerConfig,
    count: CountTokens<'_>,
) -> Vec<Chunk> {
    let max = config.max_tokens.max(1);
    let overlap = config.overlap_tokens.min(max / 2);
    let (sections, units) = split_units(text, format, max, count);

    let mut chunks = Vec::new();
    let mut first = 0;
    while first < units.len() {
        // Grow the chunk while it stays in one section and under budget.
        let section = units[first].section;
        let mut last = first;
        let mut tokens = units[first].tokens;
        while last + 1 < units.len()
            && units[last + 1].section == section
            && tokens + units[last + 1].tokens <= max
        {
            last += 1;
            tokens += units[last].tokens;
        }
        let (start, end) = (units[first].start, units[last].end);
        chunks.push((start, end, sections[section].clone()));
        if last + 1 >= units.len() {
            break;
        }
        // Start the next chunk with the tail of this one, within the overlap budget.
        let mut next = last + 1;
        if units[next].section == section {
            // Carry no more than leaves room for the next unit, so every chunk brings new text
            // (else a chunk could be the previous one's tail alone: a duplicate).
            let room = overlap.min(max.saturating_sub(units[last + 1].tokens));
            let mut carried = 0;
            while next - 1 > first && carried + units[next - 1].tokens <= room {
                next -= 1;
                carried += units[next].tokens;
            }
        }
        first = next;
    }

    let char_offsets = CharOffsets::new(text);
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, (start, end, section))| Chunk {
            chunk_id: format!("{doc_id}#{index}"),
            doc_id: doc_id.to_string(),
            index,
            start: char_offsets.of(start),
            end: char_offsets.of(end),
            section,
            text: text[start..end].to_string(),
        })
        .collect()
}

/// Byte → character offset conversion.
struct CharOffsets {
    /// Byte offset of every char boundary, in order, plus the text length.
    boundaries: Vec<usize>,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let mut boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        boundaries.push(text.len());
        Self { boundaries }
    }

    fn of(&self, byte: usize) -> usize {
        self.boundaries
            .binary_search(&byte)
            .expect("offsets are char boundaries")
    }
}

/// A heading level from a two-line (setext) heading: a title line underlined with one of
/// `= - ~ ^ +` to within two characters of its length.
fn setext_level(title: &str, underline: &str) -> Option<usize> {
    let title = title.trim_end();
    let underline = underline.trim_end();
    let marker = underline.chars().next()?;
    let level = "=-~^+".find(marker)?;
    let title_len = title.chars().count();
    let line_len = underline.chars().count();
    let plain = !title.is_empty()
        && title.chars().next().is_some_and(|c| c.is_alphanumeric())
        && underline.chars().all(|c| c == marker)
        && line_len >= 2
        && title_len.abs_diff(line_len) <= 2;
    plain.then_some(level)
}

/// One line's structural role.
enum Line {
    Blank,
    Heading,
    /// The underline of a two-line heading: part of the heading, not of any paragraph.
    Underline,
    Text,
}

fn classify(lines: &[(usize, &str)], format: DocFormat) -> Vec<Line> {
    let mut out = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].1;
        if line.trim().is_empty() {
            out.push(Line::Blank);
        } else if format != DocFormat::Text && atx_heading(line, format).is_some() {
            out.push(Line::Heading);
        } else if format == DocFormat::AsciiDoc
            && i + 1 < lines.len()
            && setext_level(line, lines[i + 1].1).is_some()
        {
            out.push(Line::Heading);
            out.push(Line::Underline);
            i += 1;
        } else {
            out.push(Line::Text);
        }
        i += 1;
    }
    out
}

/// `# Title` in Markdown, `= Title` in AsciiDoc.
fn atx_heading(line: &str, format: DocFormat) -> Option<&str> {
    let marker = match format {
        DocFormat::Markdown => '#',
        DocFormat::AsciiDoc => '=',
        DocFormat::Text => return None,
    };
    let rest = line.trim_start_matches(marker);
    let level = line.len() - rest.len();
    ((1..=6).contains(&level) && rest.starts_with(' ') && !rest.trim().is_empty())
        .then(|| rest.trim())
}

/// Paragraph units (split further when over budget) and the list of section titles.
fn split_units(
    text: &str,
    format: DocFormat,
    max: usize,
    count: CountTokens<'_>,
) -> (Vec<Option<String>>, Vec<Unit>) {
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        lines.push((offset, line.trim_end_matches(['\n', '\r'])));
        offset += line.len();
    }
    let roles = classify(&lines, format);

    let mut sections: Vec<Option<String>> = vec![None];
    let mut units = Vec::new();
    let mut paragraph: Option<(usize, usize)> = None;
    let flush = |paragraph: &mut Option<(usize, usize)>, section: usize, units: &mut Vec<Unit>| {
        if let Some((start, end)) = paragraph.take() {
            push_paragraph(text, start, end, section, max, count, units);
        }
    };
    for (i, role) in roles.iter().enumerate() {
        let (start, line) = lines[i];
        let end = start + line.len();
        match role {
            Line::Blank => flush(&mut paragraph, sections.len() - 1, &mut units),
            Line::Underline => {}
            Line::Heading => {
                flush(&mut paragraph, sections.len() - 1, &mut units);
                let title = atx_heading(line, format).unwrap_or(line.trim());
                sections.push(Some(title.to_string()));
                // The heading opens its section's first unit, so chunks carry their title.
                let heading_end = match roles.get(i + 1) {
                    Some(Line::Underline) => lines[i + 1].0 + lines[i + 1].1.len(),
                    _ => end,
                };
                paragraph = Some((start, heading_end));
            }
            Line::Text => {
                paragraph = Some(match paragraph {
                    Some((s, _)) => (s, end),
                    None => (start, end),
                });
            }
        }
    }
    flush(&mut paragraph, sections.len() - 1, &mut units);
    (sections, units)
}

/// Adds a paragraph as one unit, or as word-boundary pieces when it is over budget.
fn push_paragraph(
    text: &str,
    start: usize,
    end: usize,
    section: usize,
    max: usize,
    count: CountTokens<'_>,
    units: &mut Vec<Unit>,
) {
    let tokens = count(&text[start..end]);
    if tokens <= max {
        units.push(Unit {
            start,
            end,
            tokens,
            section,
        });
        return;
    }
    // Greedy pieces that end at word ends; a single word longer than the budget stands alone.
    let bytes = text.as_bytes();
    let mut piece_start = start;
    let mut last_fit: Option<usize> = None;
    let mut i = start;
    while i <= end {
        let word_ends = i > piece_start
            && !bytes[i - 1].is_ascii_whitespace()
            && (i == end || bytes[i].is_ascii_whitespace());
        if word_ends {
            if count(&text[piece_start..i]) <= max {
                last_fit = Some(i);
            } else {
                let cut = last_fit.unwrap_or(i);
                units.push(Unit {
                    start: piece_start,
                    end: cut,
                    tokens: count(&text[piece_start..cut]),
                    section,
                });
                piece_start = skip_space(text, cut, end);
                last_fit = None;
                i = piece_start;
                continue;
            }
        }
        i += 1;
    }
    if piece_start < end {
        units.push(Unit {
            start: piece_start,
            end,
            tokens: count(&text[piece_start..end]),
            section,
        });
    }
}

fn skip_space(text: &str, mut at: usize, end: usize) -> usize {
    while at < end && text.as_bytes()[at].is_ascii_whitespace() {
        at += 1;
    }
    at
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Plain-text chunks with default sizes, for other modules' tests.
    pub(crate) fn plain_chunks(doc_id: &str, text: &str) -> Vec<Chunk> {
        chunk_document(
            doc_id,
            text,
            DocFormat::Text,
            ChunkerConfig::default(),
            &approx_tokens,
        )
    }

    #[test]
    fn titles_come_from_name_line_heading_or_file_name() {
        let man = "git-stash(1)\n============\n\nNAME\n----\ngit-stash - Stash the changes away\n";
        assert_eq!(
            document_title("git-stash.txt", man, DocFormat::AsciiDoc),
            "git-stash - Stash the changes away"
        );
        assert_eq!(
            document_title(
                "a/guide.md",
                "intro\n\n# The Guide\n\ntext",
                DocFormat::Markdown
            ),
            "The Guide"
        );
        assert_eq!(
            document_title("notes/todo.txt", "just text", DocFormat::Text),
            "todo"
        );
    }

    fn chunks(text: &str, format: DocFormat, max: usize, overlap: usize) -> Vec<Chunk> {
        chunk_document(
            "doc.txt",
            text,
            format,
            ChunkerConfig {
                max_tokens: max,
                overlap_tokens: overlap,
            },
            &|t: &str| t.split_whitespace().count(),
        )
    }

    fn slice(text: &str, c: &Chunk) -> String {
        text.chars().skip(c.start).take(c.end - c.start).collect()
    }

    /// Found by `fuzz/` (chunker target, `fuzz/findings/`): a short paragraph between two long
    /// ones used to come back alone as a chunk made only of the previous chunk's tail.
    #[test]
    fn every_chunk_brings_text_the_previous_one_did_not_have() {
        let para = |word: &str, n: usize| vec![word; n].join(" ");
        let text = format!(
            "{}\n\n{}\n\n{}\n",
            para("alpha", 112),
            para("beta", 22),
            para("gamma", 135)
        );
        for (max, overlap) in [(200, 40), (150, 60), (2, 2), (30, 10)] {
            let out = chunks(&text, DocFormat::Text, max, overlap);
            for pair in out.windows(2) {
                assert!(
                    pair[1].end > pair[0].end,
                    "max {max} overlap {overlap}: chunk at {}..{} adds nothing after {}..{}",
                    pair[1].start,
                    pair[1].end,
                    pair[0].start,
                    pair[0].end
                );
            }
        }
    }

    #[test]
    fn offsets_slice_the_exact_text_even_with_multibyte_chars() {
        let text =
            "Ünïcode títle\n=============\n\nfirst para with é and ü\n\nsecond – para here\n";
        let out = chunks(text, DocFormat::AsciiDoc, 4, 0);
        assert!(out.len() >= 2);
        for c in &out {
            assert_eq!(slice(text, c), c.text);
        }
    }

    #[test]
    fn asciidoc_setext_headings_start_sections() {
        let text = "git-add(1)\n==========\n\nNAME\n----\ngit-add - Add file contents\n\nSYNOPSIS\n--------\ngit add [--verbose]\n";
        let out = chunks(text, DocFormat::AsciiDoc, 100, 0);
        let sections: Vec<_> = out.iter().map(|c| c.section.clone().unwrap()).collect();
        assert_eq!(sections, ["git-add(1)", "NAME", "SYNOPSIS"]);
        assert!(
            out[1].text.starts_with("NAME\n----\ngit-add"),
            "{:?}",
            out[1].text
        );
    }

    #[test]
    fn markdown_headings_and_budget_with_overlap() {
        let text =
            "# Title\n\none two three\n\nfour five six\n\nseven eight nine\n\n## Next\n\nten\n";
        let out = chunks(text, DocFormat::Markdown, 8, 3);
        // Title section: "# Title"(2) + 3 + 3 = 8 fits, then the last paragraph with overlap.
        assert_eq!(out[0].text, "# Title\n\none two three\n\nfour five six");
        assert_eq!(
            out[1].text, "four five six\n\nseven eight nine",
            "overlap repeats a unit"
        );
        assert_eq!(out[2].section.as_deref(), Some("Next"));
        let ids: Vec<_> = out.iter().map(|c| c.chunk_id.as_str()).collect();
        assert_eq!(ids, ["doc.txt#0", "doc.txt#1", "doc.txt#2"]);
    }

    #[test]
    fn long_paragraphs_split_at_words_within_budget() {
        let text: String = (0..50).map(|i| format!("w{i} ")).collect();
        let out = chunks(&text, DocFormat::Text, 10, 0);
        assert_eq!(out.len(), 5);
        for c in &out {
            assert!(c.text.split_whitespace().count() <= 10);
            assert_eq!(slice(&text, c), c.text);
        }
        let words: Vec<String> = out
            .iter()
            .flat_map(|c| {
                c.text
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(words.len(), 50, "no word lost or repeated without overlap");
    }

    #[test]
    fn a_paragraph_pushed_over_budget_by_its_last_word_is_split() {
        let text = "one two three four five six seven eight nine ten eleven";
        let out = chunks(text, DocFormat::Text, 10, 0);
        let sizes: Vec<usize> = out
            .iter()
            .map(|c| c.text.split_whitespace().count())
            .collect();
        assert_eq!(sizes, [10, 1]);
        assert_eq!(out[1].text, "eleven");
    }

    #[test]
    fn detection_by_extension_and_content() {
        assert_eq!(DocFormat::detect("a.md", ""), Some(DocFormat::Markdown));
        assert_eq!(
            DocFormat::detect("a.txt", "Title\n=====\n"),
            Some(DocFormat::AsciiDoc)
        );
        assert_eq!(
            DocFormat::detect("a.txt", "just words\n"),
            Some(DocFormat::Text)
        );
        assert_eq!(DocFormat::detect("a.png", ""), None);
    }

    #[test]
    fn same_input_same_chunks() {
        let text = "a b c\n\nd e f\n\ng h i\n";
        assert_eq!(
            chunks(text, DocFormat::Text, 4, 2),
            chunks(text, DocFormat::Text, 4, 2)
        );
    }
}
