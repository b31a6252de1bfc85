//! The generate stage: which weights answer (the adapter named in `model`, else the route's
//! default adapter while it is loaded, else the base), and the engine's event stream, timed:
//! time to first token, inter-token gaps and token counts, and the `generate` stage logged
//! when the generation ends.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use adapters::{Backend, EventStream, GenerationEvent, GenerationRequest};

use crate::config::Route;
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;
use crate::state::AppState;

/// The engine that answers and what the response calls it.
pub struct Weights {
    pub backend: Arc<dyn Backend>,
    /// `base`, or `<adapter name>@<generation>`.
    pub served_by: String,
}

/// The active generation of the adapter `model` names, or `None` when it names the base; 404
/// for any other name. The Arc is the lease: a swap during the request does not affect it.
pub fn requested_adapter(state: &AppState, model: &str) -> Result<Option<Weights>> {
    if model == state.config().model_id {
        return Ok(None);
    }
    let (backend, generation) = state
        .adapters()
        .ok()
        .and_then(|registry| registry.engine(model))
        .ok_or_else(|| ApiError::ModelNotFound(model.to_string()))?;
    Ok(Some(Weights {
        backend,
        served_by: format!("{model}@{generation}"),
    }))
}

/// The requested adapter, else the route's default adapter when it is loaded, else the base.
pub fn weights(state: &AppState, requested: Option<Weights>, route: Route) -> Result<Weights> {
    if let Some(weights) = requested {
        return Ok(weights);
    }
    let route_default = || {
        let name = state.config().route_adapters.get(route.as_str())?;
        let (backend, generation) = state.adapters().ok()?.engine(name)?;
        Some(Weights {
            backend,
            served_by: format!("{name}@{generation}"),
        })
    };
    match route_default() {
        Some(weights) => Ok(weights),
        None => Ok(Weights {
            backend: state.backend()?,
            served_by: "base".to_string(),
        }),
    }
}

/// Starts the generation and waits for its first event, so that a request the engine refuses
/// (a prompt over the context window) fails with its own status. It counts as waiting until
/// an engine instance or a sequence of the decode loop takes it.
pub async fn start(
    state: &AppState,
    weights: &Weights,
    generation: GenerationRequest,
    route: Route,
    started: Instant,
) -> Result<EventStream> {
    let events = {
        let _waiting = Metrics::track(&state.metrics().requests_waiting);
        weights.backend.generate(generation).await?
    };
    let mut events = instrument(events, state, route, started);
    let first = match events.next().await {
        Some(Err(err)) => return Err(err.into()),
        first => first,
    };
    Ok(Box::pin(futures::stream::iter(first).chain(events)))
}

/// Records time to first token (from `started`, the request's arrival), inter-token gaps and
/// token counts as events pass, and logs the `generate` stage (in the request's span, though a
/// stream is polled after the handler returned) when the generation ends.
fn instrument(
    events: EventStream,
    state: &AppState,
    route: Route,
    started: Instant,
) -> EventStream {
    let state = state.clone();
    let span = tracing::info_span!("stage", stage = "generate");
    let generation_started = Instant::now();
    let mut last: Option<Instant> = None;
    let mut first_token_ms = None;
    Box::pin(events.map(move |event| {
        let metrics = state.metrics();
        let label = [route.as_str()];
        match &event {
            Ok(GenerationEvent::Delta(_)) => {
                let now = Instant::now();
                match last {
                    None => {
                        let ttft = (now - started).as_secs_f64();
                        first_token_ms = Some(ttft * 1e3);
                        metrics
                            .time_to_first_token_seconds
                            .with_label_values(&label)
                            .observe(ttft)
                    }
                    Some(previous) => metrics
                        .inter_token_latency_seconds
                        .with_label_values(&label)
                        .observe((now - previous).as_secs_f64()),
                }
                last = Some(now);
            }
            Ok(GenerationEvent::Done {
                usage,
                finish_reason,
            }) => {
                span.in_scope(|| {
                    tracing::info!(
                        elapsed_ms = generation_started.elapsed().as_secs_f64() * 1e3,
                        ttft_ms = first_token_ms,
                        prompt_tokens = usage.prompt_tokens,
                        completion_tokens = usage.completion_tokens,
                        finish_reason = ?finish_reason,
                        "stage done"
                    )
                });
                metrics
                    .prompt_tokens_total
                    .with_label_values(&label)
                    .inc_by(usage.prompt_tokens as u64);
                metrics
                    .completion_tokens_total
                    .with_label_values(&label)
                    .inc_by(usage.completion_tokens as u64);
            }
            Err(_) => {}
        }
        event
    }))
}
