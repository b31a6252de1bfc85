//! The verify stage: checks an answer as it streams, before the client sees it. A `rag`
//! answer's `[n]` markers that name no provided source are removed (even split across
//! chunks); a JSON answer's quotes are checked against their sources when it ends; a tool
//! call's constrained output is parsed into an OpenAI call. The result is the pipeline's
//! [`AnswerEvent`] stream, which holds the generation slot.

use std::collections::BTreeSet;

use futures::StreamExt;

use adapters::{EventStream, GenerationEvent};

use crate::config::Route;
use crate::error::ApiError;
use crate::openai::RetrievalInfo;
use crate::pipeline::sources::Citation;
use crate::pipeline::tools::ToolSet;
use crate::pipeline::{AnswerEvent, AnswerStream, Verification};
use crate::state::{AppState, GenerationSlot};

/// How an answer is checked.
#[derive(Debug, Clone)]
pub enum Check {
    /// Passed as generated: `simple`, or a `rag` answer in the client's own `response_format`.
    Plain,
    /// Prose: `[n]` markers filtered as they stream.
    Markers,
    /// The server's JSON answer schema: quotes verified against their source at the end.
    Quotes,
    /// A call of one of these tools, parsed when the output ends; no text is sent.
    ToolCall(ToolSet),
}

/// The answer's events: the engine's text through the check, then the check's result, then
/// `Done`. An engine error ends the stream with that error.
pub fn verify(
    mut events: EventStream,
    check: Check,
    grounding: Option<(Vec<Citation>, RetrievalInfo)>,
    state: AppState,
    slot: GenerationSlot,
) -> AnswerStream {
    Box::pin(async_stream::stream! {
        let _slot = slot;
        let (sources, mut info) = grounding.unwrap_or_default();
        let mut markers = matches!(check, Check::Markers).then(|| MarkerFilter::new(sources.len()));
        // What the end-of-answer checks read: the JSON answer, the tool call.
        let mut whole = String::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(GenerationEvent::Delta(text)) => {
                    let text = match (&check, markers.as_mut()) {
                        (Check::ToolCall(_), _) => {
                            whole.push_str(&text);
                            continue;
                        }
                        (Check::Quotes, _) => {
                            whole.push_str(&text);
                            text
                        }
                        (_, Some(filter)) => filter.push(&text),
                        _ => text,
                    };
                    if !text.is_empty() {
                        yield Ok(AnswerEvent::Text(text));
                    }
                }
                Ok(GenerationEvent::Done { finish_reason, usage }) => {
                    if let Some(filter) = markers.as_mut() {
                        let rest = filter.finish();
                        if !rest.is_empty() {
                            yield Ok(AnswerEvent::Text(rest));
                        }
                        record_markers(&state, filter, &mut info);
                        yield Ok(AnswerEvent::Verified(Verification { retrieval: info.clone(), corrected: None }));
                    }
                    match &check {
                        Check::Quotes => {
                            let checked = verify_quotes(&whole, &sources);
                            record_quotes(&state, &checked, &mut info);
                            yield Ok(AnswerEvent::Verified(Verification {
                                retrieval: info.clone(),
                                corrected: Some(checked.content),
                            }));
                        }
                        // Cut short (max_tokens) before the call was complete: no call (the
                        // partial JSON is not an answer), and the engine's `length`.
                        Check::ToolCall(tools) => {
                            if let Some(call) = tools.parse_call(&whole) {
                                yield Ok(AnswerEvent::ToolCall(call));
                            }
                        }
                        Check::Plain | Check::Markers => {}
                    }
                    yield Ok(AnswerEvent::Done { finish_reason, usage });
                    return;
                }
                Err(err) => {
                    yield Err(ApiError::from(err));
                    return;
                }
            }
        }
        yield Err(ApiError::Engine("the engine ended the stream early".into()));
    })
}

fn record_quotes(state: &AppState, checked: &QuoteCheck, info: &mut RetrievalInfo) {
    if checked.removed > 0 {
        state
            .metrics()
            .citation_quotes_invalid_total
            .with_label_values(&[Route::Rag.as_str()])
            .inc_by(checked.removed as u64);
    }
    info.cited = Some(checked.cited.clone());
    info.invalid_quotes = Some(checked.removed);
}

fn record_markers(state: &AppState, filter: &MarkerFilter, info: &mut RetrievalInfo) {
    if filter.removed() > 0 {
        state
            .metrics()
            .citation_markers_removed_total
            .with_label_values(&[Route::Rag.as_str()])
            .inc_by(filter.removed() as u64);
    }
    info.cited = Some(filter.cited());
    info.invalid_markers_removed = Some(filter.removed());
}

/// `text` with every run of whitespace made one space (how quotes are compared to sources).
pub fn normalize_ws(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The outcome of checking a JSON answer's quotes against its sources.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteCheck {
    /// The answer with only verified citations (re-serialised), or the original text when it
    /// did not parse.
    pub content: String,
    /// Source numbers with at least one verified quote.
    pub cited: Vec<usize>,
    /// Citations removed: unknown source, or a quote not found in it.
    pub removed: usize,
    pub parsed: bool,
}

/// Keeps the citations whose quote is in the cited source (verbatim up to whitespace).
pub fn verify_quotes(content: &str, citations: &[Citation]) -> QuoteCheck {
    let Ok(mut answer) = serde_json::from_str::<serde_json::Value>(content) else {
        return QuoteCheck {
            content: content.to_string(),
            cited: Vec::new(),
            removed: 0,
            parsed: false,
        };
    };
    let mut cited = BTreeSet::new();
    let mut removed = 0;
    if let Some(list) = answer.get_mut("citations").and_then(|c| c.as_array_mut()) {
        list.retain(|item| {
            let index = item.get("index").and_then(|i| i.as_u64()).unwrap_or(0) as usize;
            let quote = item.get("quote").and_then(|q| q.as_str()).unwrap_or("");
            let source = citations.iter().find(|c| c.index == index);
            let ok = match source {
                Some(source) => {
                    let quote = normalize_ws(quote);
                    !quote.is_empty() && normalize_ws(&source.text).contains(&quote)
                }
                None => false,
            };
            if ok {
                cited.insert(index);
            } else {
                removed += 1;
            }
            ok
        });
    }
    QuoteCheck {
        content: answer.to_string(),
        cited: cited.into_iter().collect(),
        removed,
        parsed: true,
    }
}

/// Longest bracketed text still considered a possible marker (`[1, 2, 3]`).
const MAX_MARKER_CHARS: usize = 24;

/// Filters `[n]` / `[n, m]` citation markers in streamed text: markers whose numbers are all
/// provided sources pass; numbers of no source are removed (a marker left empty disappears).
/// Bracketed text that is not a list of numbers (`[--force]`) passes untouched.
#[derive(Debug)]
pub struct MarkerFilter {
    sources: usize,
    pending: String,
    cited: BTreeSet<usize>,
    removed: usize,
}

impl MarkerFilter {
    pub fn new(sources: usize) -> Self {
        Self {
            sources,
            pending: String::new(),
            cited: BTreeSet::new(),
            removed: 0,
        }
    }

    /// Feeds streamed text; returns the text that can be shown now.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if self.pending.is_empty() {
                if c == '[' {
                    self.pending.push(c);
                } else {
                    out.push(c);
                }
                continue;
            }
            match c {
                ']' => {
                    self.pending.push(c);
                    let marker = std::mem::take(&mut self.pending);
                    out.push_str(&self.resolve(&marker));
                }
                '[' => {
                    out.push_str(&std::mem::take(&mut self.pending));
                    self.pending.push(c);
                }
                c if c.is_ascii_digit() || c == ',' || c == ' ' => {
                    self.pending.push(c);
                    if self.pending.chars().count() > MAX_MARKER_CHARS {
                        out.push_str(&std::mem::take(&mut self.pending));
                    }
                }
                c => {
                    out.push_str(&std::mem::take(&mut self.pending));
                    out.push(c);
                }
            }
        }
        out
    }

    /// The text held back at the end of the stream.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Sources the answer cited, by number.
    pub fn cited(&self) -> Vec<usize> {
        self.cited.iter().copied().collect()
    }

    /// Marker numbers removed because they named no source.
    pub fn removed(&self) -> usize {
        self.removed
    }

    /// `[…]` with only digits, commas and spaces inside.
    fn resolve(&mut self, marker: &str) -> String {
        let inner = &marker[1..marker.len() - 1];
        let numbers: Vec<&str> = inner.split(',').map(str::trim).collect();
        if numbers.iter().any(|n| n.is_empty()) {
            // `[]`, `[ ]`, `[1,]`: not a marker.
            return marker.to_string();
        }
        let mut kept = Vec::new();
        for n in numbers {
            match n.parse::<usize>() {
                Ok(i) if (1..=self.sources).contains(&i) => {
                    self.cited.insert(i);
                    kept.push(i.to_string());
                }
                _ => self.removed += 1,
            }
        }
        if kept.is_empty() {
            String::new()
        } else {
            format!("[{}]", kept.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sources::answer_schema;

    fn filter_all(sources: usize, pieces: &[&str]) -> (String, MarkerFilter) {
        let mut filter = MarkerFilter::new(sources);
        let mut out = String::new();
        for piece in pieces {
            out.push_str(&filter.push(piece));
        }
        out.push_str(&filter.finish());
        (out, filter)
    }

    #[test]
    fn valid_markers_pass_and_are_recorded() {
        let (out, f) = filter_all(3, &["Use git stash [1]", " or commit [2, 3]."]);
        assert_eq!(out, "Use git stash [1] or commit [2, 3].");
        assert_eq!(f.cited(), [1, 2, 3]);
        assert_eq!(f.removed(), 0);
    }

    #[test]
    fn markers_of_missing_sources_are_removed_even_split_across_chunks() {
        let (out, f) = filter_all(2, &["See [", "7", "] and [2", ",9]", " and [0]."]);
        assert_eq!(out, "See  and [2] and .");
        assert_eq!(f.cited(), [2]);
        assert_eq!(f.removed(), 3);
    }

    #[test]
    fn brackets_that_are_not_markers_pass_untouched() {
        let text = "Run git push [--force] [<remote>] or a[i] or [] or [1,] or [[1]] or [12345678901234567890123456]";
        let (out, f) = filter_all(1, &[text]);
        assert_eq!(out, text);
        assert_eq!(f.cited(), [1], "the inner [1] of [[1]] is a marker");
    }

    #[test]
    fn an_unclosed_bracket_at_the_end_is_flushed() {
        let (out, _) = filter_all(2, &["trailing [1"]);
        assert_eq!(out, "trailing [1");
    }

    fn source(index: usize, text: &str) -> Citation {
        Citation {
            index,
            doc_id: "d.txt".into(),
            chunk_id: format!("d.txt#{index}"),
            title: "d".into(),
            section: None,
            start: 0,
            end: text.chars().count(),
            text: text.into(),
            score: 0.1,
        }
    }

    #[test]
    fn quotes_are_kept_only_when_found_in_their_source() {
        let sources = [
            source(
                1,
                "Use git stash to record the current state\nof the working directory.",
            ),
            source(2, "git bisect finds the commit that introduced a bug."),
        ];
        let answer = r#"{"answer": "Stash it.", "citations": [
            {"index": 1, "quote": "record the current state of the  working directory"},
            {"index": 2, "quote": "git stash"},
            {"index": 3, "quote": "anything"},
            {"index": 2, "quote": "finds the commit"}]}"#;
        let check = verify_quotes(answer, &sources);
        assert!(check.parsed);
        assert_eq!(check.cited, [1, 2]);
        assert_eq!(check.removed, 2);
        let kept: serde_json::Value = serde_json::from_str(&check.content).unwrap();
        assert_eq!(kept["citations"].as_array().unwrap().len(), 2);
        assert_eq!(kept["answer"], "Stash it.");
        let cut = verify_quotes(r#"{"answer": "Sta"#, &sources);
        assert!(!cut.parsed);
        assert_eq!(cut.content, r#"{"answer": "Sta"#);
        assert_eq!(
            answer_schema(2)["properties"]["citations"]["items"]["properties"]["index"]["enum"],
            serde_json::json!([1, 2])
        );
    }
}
