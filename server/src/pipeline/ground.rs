//! The ground stage of the `rag` route: searches the tenant's documents with the last user
//! message (the hybrid retriever), puts the hits into the prompt as numbered sources
//! (`sources.rs`) and says how the answer will be verified.

use adapters::GenerationRequest;

use crate::config::{AnswerFormat, Config, Route};
use crate::error::{ApiError, Result};
use crate::openai::RetrievalInfo;
use crate::pipeline::sources::{
    answer_schema, search_query, with_json_instructions, with_sources, Citation,
    ANSWER_JSON_MAX_CHARS,
};
use crate::pipeline::verify::Check;
use crate::state::AppState;

/// What the `rag` route found before generating.
pub struct Grounding {
    pub citations: Vec<Citation>,
    pub info: RetrievalInfo,
    /// How the answer's references are checked.
    pub check: Check,
}

/// Retrieves sources for the last user message and puts them in the prompt.
pub async fn ground(
    state: &AppState,
    tenant: &str,
    generation: &mut GenerationRequest,
) -> Result<Grounding> {
    let retrieval = state.retrieval()?;
    let query = search_query(&generation.messages)
        .ok_or_else(|| {
            ApiError::invalid(
                "the rag route needs a non-empty user message to search for",
                "messages",
            )
        })?
        .to_string();
    let result = match retrieval.retriever.search(tenant, &query).await {
        Ok(result) => result,
        Err(err) => {
            state
                .metrics()
                .retrieval_failures_total
                .with_label_values(&[Route::Rag.as_str()])
                .inc();
            return Err(err.into());
        }
    };
    state.metrics().observe_search(Route::Rag.as_str(), &result);
    if !result.degraded.is_empty() {
        tracing::warn!(causes = ?result.degraded, "retrieval degraded: serving one retriever's results");
    }
    let citations = Citation::from_hits(&result.hits);
    let check = with_grounding(generation, &citations, state.config().rag_answer_format);
    Ok(Grounding {
        check,
        citations,
        info: RetrievalInfo {
            degraded: !result.degraded.is_empty(),
            degraded_causes: result
                .degraded
                .iter()
                .map(|d| d.cause.as_str().to_string())
                .collect(),
            ..RetrievalInfo::default()
        },
    })
}

/// Puts the sources into the generation's prompt and, for JSON answers, the answer schema;
/// returns how the answer is checked. A client's own `response_format` is left alone.
pub fn with_grounding(
    generation: &mut GenerationRequest,
    citations: &[Citation],
    format: AnswerFormat,
) -> Check {
    generation.messages = with_sources(std::mem::take(&mut generation.messages), citations);
    if generation.json_schema.is_some() {
        Check::Plain
    } else if format == AnswerFormat::Json {
        generation.json_schema = Some(answer_schema(citations.len()));
        generation.messages = with_json_instructions(std::mem::take(&mut generation.messages));
        Check::Quotes
    } else {
        Check::Markers
    }
}

/// Gives a JSON answer room for the longest answer its schema allows, so that it is not cut
/// short before it closes.
pub fn leave_room_for_the_answer_schema(config: &Config, generation: &mut GenerationRequest) {
    generation.sampling.max_tokens = generation
        .sampling
        .max_tokens
        .max(ANSWER_JSON_MAX_CHARS.min(config.max_tokens_cap));
}
