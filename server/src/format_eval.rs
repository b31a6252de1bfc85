//! Measuring JSON `rag` answers: the route's own prompt for a query (the real hybrid
//! retriever and the pipeline's ground stage, [`with_grounding`]), and a [`Tally`] of how many
//! answers parse, match [`answer_schema`] and quote their sources verbatim (the verify stage's
//! [`verify_quotes`]). Used by `switchyard format eval` and `tests/format_adapter.rs`.

use adapters::{collect, Backend, ChatMessage, GenerationRequest, Role, SamplingParams};

use crate::config::AnswerFormat;

use crate::index::Retrieval;
use crate::pipeline::ground::with_grounding;
use crate::pipeline::sources::{
    answer_schema, matches_answer_schema, Citation, ANSWER_JSON_MAX_CHARS,
};
use crate::pipeline::verify::verify_quotes;

/// The rag route's JSON-answer prompt for `question`, and its sources.
pub async fn rag_prompt(
    retrieval: &Retrieval,
    tenant: &str,
    question: &str,
) -> retrieval::Result<(Vec<ChatMessage>, Vec<Citation>)> {
    let result = retrieval.retriever.search(tenant, question).await?;
    let citations = Citation::from_hits(&result.hits);
    let mut generation = GenerationRequest {
        messages: vec![ChatMessage::new(Role::User, question)],
        sampling: SamplingParams::default(),
        json_schema: None,
    };
    with_grounding(&mut generation, &citations, AnswerFormat::Json);
    Ok((generation.messages, citations))
}

/// Counts over one (engine, constraints) configuration.
#[derive(Debug, Default)]
pub struct Tally {
    pub answers: usize,
    pub parsed: usize,
    pub valid: usize,
    pub quotes: usize,
    pub verbatim: usize,
    pub tokens: usize,
}

impl Tally {
    /// Scores one answer to a prompt with these sources.
    pub fn add(&mut self, text: &str, citations: &[Citation], tokens: usize) {
        self.answers += 1;
        self.tokens += tokens;
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
            return;
        };
        self.parsed += 1;
        if !matches_answer_schema(&value, citations.len()) {
            return;
        }
        self.valid += 1;
        let total = value["citations"].as_array().map_or(0, Vec::len);
        let check = verify_quotes(text.trim(), citations);
        self.quotes += total;
        self.verbatim += total - check.removed;
    }

    /// One report line.
    pub fn line(&self, label: &str) -> String {
        let share = |n: usize, of: usize| {
            if of == 0 {
                "-".to_string()
            } else {
                format!("{:5.1} %", 100.0 * n as f64 / of as f64)
            }
        };
        format!(
            "{label:<28} parse {}  schema-valid {}  quotes verbatim {} ({}/{})  mean tokens {:.0}",
            share(self.parsed, self.answers),
            share(self.valid, self.answers),
            share(self.verbatim, self.quotes),
            self.verbatim,
            self.quotes,
            self.tokens as f64 / self.answers.max(1) as f64
        )
    }
}

/// Answers each prompt greedily on `engine`, with the answer schema enforced or not
/// (`max_tokens` is raised to the schema's longest answer when enforced).
pub async fn measure(
    engine: &dyn Backend,
    prompts: &[(Vec<ChatMessage>, Vec<Citation>)],
    constrained: bool,
    max_tokens: usize,
) -> adapters::Result<Tally> {
    let mut tally = Tally::default();
    for (messages, citations) in prompts {
        let request = GenerationRequest {
            messages: messages.clone(),
            sampling: SamplingParams {
                temperature: 0.0,
                // Constrained: room for the longest answer the schema allows, so a valid
                // answer is never cut short.
                max_tokens: if constrained {
                    max_tokens.max(ANSWER_JSON_MAX_CHARS)
                } else {
                    max_tokens
                },
                ..SamplingParams::default()
            },
            json_schema: constrained.then(|| answer_schema(citations.len())),
        };
        let output = collect(engine.generate(request).await?).await?;
        tally.add(&output.text, citations, output.usage.completion_tokens);
    }
    Ok(tally)
}
