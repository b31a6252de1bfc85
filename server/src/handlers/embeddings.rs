//! `POST /v1/embeddings` (OpenAI shape), served by the retrieval embedder, under the
//! generations' admission (`max_in_flight`) and deadline (`request_timeout_secs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use retrieval::{EMBEDDING_DIMS, EMBEDDING_MODEL_ID};

use crate::error::{ApiError, Result};
use crate::extract::OpenAiJson;
use crate::state::AppState;

/// Inputs per request, as OpenAI allows.
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u64>,
}

/// Text inputs: a string or a list of strings (token-id inputs are refused: the ids of
/// another tokenizer would not mean anything here).
fn texts(input: &Value) -> Result<Vec<String>> {
    let refuse = |message: &str| ApiError::invalid(message.to_string(), "input");
    let texts = match input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) if items.is_empty() => return Err(refuse("`input` must not be empty")),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Number(_) | Value::Array(_) => Err(refuse(
                    "token-id inputs are not supported; send text (a string or a list of strings)",
                )),
                _ => Err(refuse("`input` must be a string or a list of strings")),
            })
            .collect::<Result<_>>()?,
        _ => return Err(refuse("`input` must be a string or a list of strings")),
    };
    if texts.len() > MAX_INPUTS {
        return Err(refuse(&format!("at most {MAX_INPUTS} inputs per request")));
    }
    if texts.iter().any(|t| t.is_empty()) {
        return Err(refuse("inputs must not be empty strings"));
    }
    Ok(texts)
}

/// Tells the embedding to stop when the request is dropped (client gone, deadline passed).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub async fn embeddings(
    State(state): State<AppState>,
    OpenAiJson(request): OpenAiJson<EmbeddingRequest>,
) -> Result<Json<Value>> {
    if request.model != EMBEDDING_MODEL_ID {
        return Err(ApiError::ModelNotFound(request.model));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format must be `float` or `base64`, got `{other}`"),
                "encoding_format",
            ))
        }
    };
    if let Some(dimensions) = request.dimensions {
        if dimensions != EMBEDDING_DIMS as u64 {
            return Err(ApiError::invalid(
                format!("{EMBEDDING_MODEL_ID} has {EMBEDDING_DIMS} dimensions; got dimensions={dimensions}"),
                "dimensions",
            ));
        }
    }
    let texts = texts(&request.input)?;
    let embedder = state.embedder()?;
    // Under the same admission as generations, and the same deadline: past it, or when the
    // client goes away, the embedding stops at its next piece instead of running on.
    let slot = state
        .admit()
        .inspect_err(|_| state.metrics().reject("overloaded"))?;
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = cancel.0.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let tokens: usize = texts.iter().map(|t| embedder.count_tokens(t)).sum();
        embedder
            .embed_cancellable(&texts, &flag)
            .map(|v| (v, tokens))
    });
    let secs = state.config().request_timeout_secs;
    let (vectors, tokens) = match tokio::time::timeout(Duration::from_secs(secs), work).await {
        Ok(joined) => joined.map_err(|e| ApiError::Embedder(e.to_string()))??,
        Err(_) => {
            state.metrics().reject("deadline_exceeded");
            return Err(ApiError::DeadlineExceeded { secs });
        }
    };
    drop(cancel);
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": EMBEDDING_MODEL_ID,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}
