//! `POST /v1/chat/completions`, plain JSON or Server-Sent Events.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};

use adapters::{collect, EventStream, GenerationEvent};

use crate::error::{ApiError, Result};
use crate::extract::OpenAiJson;
use crate::openai::{ChatCompletionRequest, CompletionMeta, Delta};
use crate::state::{AppState, GenerationSlot};

pub async fn completions(
    State(state): State<AppState>,
    OpenAiJson(request): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response> {
    if request.model != state.config().model_id {
        return Err(ApiError::ModelNotFound(request.model));
    }
    let generation = request.to_generation(state.config())?;
    let backend = state.backend()?;
    let slot = state.admit()?;
    let meta = CompletionMeta::new(&request.model);
    let mut events = backend.generate(generation).await?;

    if request.stream {
        // Wait for the first event before answering 200, so that a request the engine refuses
        // (e.g. a prompt longer than the context) gets its real status, not an SSE error.
        let first = match events.next().await {
            Some(Err(err)) => return Err(err.into()),
            first => first,
        };
        let events: EventStream = Box::pin(futures::stream::iter(first).chain(events));
        let include_usage = request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let sse = Sse::new(sse_events(meta, events, slot, include_usage))
            .keep_alive(KeepAlive::default());
        return Ok(sse.into_response());
    }
    let output = collect(events).await?;
    drop(slot);
    Ok(Json(meta.completion(output.text, output.finish_reason, output.usage)).into_response())
}

fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).expect("serializable"))
}

/// The SSE body: a role chunk, content chunks, a finish chunk, an optional usage chunk, then
/// `[DONE]`. An engine error becomes an OpenAI error event and ends the stream. The generation
/// slot lives inside the stream, so a client that disconnects frees it (and cancels the engine
/// request, whose receiver is dropped with it).
fn sse_events(
    meta: CompletionMeta,
    mut events: EventStream,
    slot: GenerationSlot,
    include_usage: bool,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    async_stream::stream! {
        let _slot = slot;
        yield Ok(json_event(&meta.chunk(Delta { role: Some("assistant".into()), content: Some(String::new()) }, None)));
        while let Some(event) = events.next().await {
            match event {
                Ok(GenerationEvent::Delta(text)) => {
                    yield Ok(json_event(&meta.chunk(Delta { role: None, content: Some(text) }, None)));
                }
                Ok(GenerationEvent::Done { finish_reason, usage }) => {
                    yield Ok(json_event(&meta.chunk(Delta::default(), Some(finish_reason))));
                    if include_usage {
                        yield Ok(json_event(&meta.usage_chunk(usage)));
                    }
                    yield Ok(Event::default().data("[DONE]"));
                    return;
                }
                Err(err) => {
                    yield Ok(json_event(&ApiError::from(err).body()));
                    return;
                }
            }
        }
        yield Ok(json_event(&ApiError::Engine("the engine ended the stream early".into()).body()));
    }
}
