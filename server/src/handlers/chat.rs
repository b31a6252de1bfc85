//! `POST /v1/chat/completions`, plain JSON or Server-Sent Events: turns the OpenAI request into
//! a [`PipelineRequest`], runs it through the [`Pipeline`] under the request's deadline, and
//! turns the answer's events into one JSON completion or SSE chunks, the same way for every
//! route.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use adapters::Role;

use crate::auth::{resolve_tenant, Caller};
use crate::config::Route;
use crate::error::{ApiError, Result};
use crate::extract::OpenAiJson;
use crate::openai::{ChatCompletion, ChatCompletionRequest, CompletionMeta, Delta, ToolCallDelta};
use crate::pipeline::tools::tool_set;
use crate::pipeline::{Answer, AnswerEvent, Pipeline, PipelineRequest};
use crate::state::AppState;

/// Response header naming the route that answered.
pub const ROUTE_HEADER: &str = "x-switchyard-route";
/// Response header naming the adapter generation that produced the answer.
pub const ADAPTER_HEADER: &str = "x-switchyard-adapter";
/// Response header with the route's confidence (1 when not chosen by the router).
pub const CONFIDENCE_HEADER: &str = "x-switchyard-route-confidence";

pub async fn completions(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    OpenAiJson(request): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response> {
    // The deadline covers routing, retrieval and generation; dropping `answer` at the deadline
    // frees the slot and cancels the engine request. A stream checks it in `detach`.
    let secs = state.config().request_timeout_secs;
    let deadline = Instant::now() + Duration::from_secs(secs);
    match tokio::time::timeout_at(deadline, answer(state.clone(), caller, request, deadline)).await
    {
        Ok(result) => result,
        Err(_) => {
            state.metrics().reject("deadline_exceeded");
            Err(ApiError::DeadlineExceeded { secs })
        }
    }
}

async fn answer(
    state: AppState,
    caller: Option<axum::Extension<Caller>>,
    request: ChatCompletionRequest,
    deadline: Instant,
) -> Result<Response> {
    let config = state.config();
    let asked = PipelineRequest {
        model: request.model.clone(),
        // Retrieval searches the key's tenant (the default one for keys bound to none).
        tenant: resolve_tenant(caller.as_deref(), None, &config.default_tenant)?,
        generation: request.to_generation(config)?,
        route: request.route,
        follows_tool_result: request
            .messages
            .last()
            .is_some_and(|m| m.role == Role::Tool),
        tools: tool_set(&request)?,
        max_tokens_given: request.requested_max_tokens().is_some(),
    };
    let answer = Pipeline::new(state.clone()).answer(asked).await?;
    let (route, confidence) = (answer.route, answer.routing.confidence);
    let served_by = answer.served_by.clone();
    let mut meta = CompletionMeta::new(&request.model);
    meta.adapter = Some(served_by.clone());
    let response = if request.stream {
        let include_usage = request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        let events = sse_events(answer, meta, include_usage);
        Sse::new(detach(events, deadline, state.clone()))
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        Json(completion(answer, &meta).await?).into_response()
    };
    Ok(with_headers(response, route, confidence, &served_by))
}

/// The answer read to its end as one completion. On `tool` the content is null: the call is
/// in `tool_calls`, or, cut short before the call was complete, absent with the engine's
/// `length` (the partial JSON is not an answer).
async fn completion(answer: Answer, meta: &CompletionMeta) -> Result<ChatCompletion> {
    let route = answer.route;
    let routing = answer.routing.clone();
    let citations = answer
        .grounding
        .as_ref()
        .map(|(sources, _)| sources.clone());
    let answered = answer.collect().await?;
    let mut completion = meta.completion(answered.text, answered.finish_reason, answered.usage);
    let choice = &mut completion.choices[0];
    if route == Route::Tool {
        choice.message.content = None;
        if let Some(call) = answered.tool_call {
            choice.message.tool_calls = Some(vec![call]);
            choice.finish_reason = "tool_calls".into();
        }
    }
    completion.ext.citations = citations;
    completion.ext.retrieval = answered.retrieval;
    completion.ext.route = Some(route.as_str().to_string());
    completion.ext.routing = Some(routing);
    Ok(completion)
}

/// The SSE body: a role chunk (with the route, the adapter and, on `rag`, the citations),
/// content or tool-call chunks, a finish chunk (with the verification on `rag`), an optional
/// usage chunk, then `[DONE]`. An error becomes an OpenAI error event and ends the stream.
/// The answer (and with it the generation slot) lives inside the stream, so a client that
/// disconnects frees the slot and cancels the engine request.
fn sse_events(
    answer: Answer,
    meta: CompletionMeta,
    include_usage: bool,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let Answer {
        route,
        routing,
        served_by,
        grounding,
        mut events,
        ..
    } = answer;
    async_stream::stream! {
        let (citations, retrieval) = grounding.map_or((None, None), |(c, info)| (Some(c), Some(info)));
        let role = Delta {
            role: Some("assistant".into()),
            content: (route != Route::Tool).then(String::new),
            tool_calls: None,
        };
        let mut first = meta.chunk(role, None);
        first.ext.route = Some(routing.route.clone());
        first.ext.routing = Some(routing);
        first.ext.adapter = Some(served_by);
        first.ext.citations = citations;
        first.ext.retrieval = retrieval;
        yield Ok(json_event(&first));
        let (mut verified, mut called) = (None, false);
        while let Some(event) = events.next().await {
            match event {
                Ok(AnswerEvent::Text(text)) => {
                    yield Ok(json_event(&meta.chunk(Delta { content: Some(text), ..Delta::default() }, None)));
                }
                Ok(AnswerEvent::ToolCall(call)) => {
                    called = true;
                    let delta = Delta { tool_calls: Some(vec![ToolCallDelta { index: 0, call }]), ..Delta::default() };
                    yield Ok(json_event(&meta.chunk(delta, None)));
                }
                Ok(AnswerEvent::Verified(verification)) => verified = Some(verification.retrieval),
                Ok(AnswerEvent::Done { finish_reason, usage }) => {
                    let mut last = meta.chunk(Delta::default(), Some(finish_reason));
                    if called {
                        last.choices[0].finish_reason = Some("tool_calls".into());
                    }
                    last.ext.retrieval = verified.take();
                    yield Ok(json_event(&last));
                    if include_usage {
                        yield Ok(json_event(&meta.usage_chunk(usage)));
                    }
                    yield Ok(Event::default().data("[DONE]"));
                    return;
                }
                Err(err) => {
                    yield Ok(json_event(&err.body()));
                    return;
                }
            }
        }
    }
}

/// The route and its confidence, and which weights answered: `base`, or `<adapter
/// name>@<generation>`.
fn with_headers(
    mut response: Response,
    route: Route,
    confidence: f32,
    served_by: &str,
) -> Response {
    let headers = response.headers_mut();
    headers.insert(ROUTE_HEADER, HeaderValue::from_static(route.as_str()));
    if let Ok(value) = HeaderValue::from_str(&format!("{confidence:.4}")) {
        headers.insert(CONFIDENCE_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(served_by) {
        headers.insert(ADAPTER_HEADER, value);
    }
    response
}

fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).expect("serializable"))
}

/// Runs a streamed answer in its own task, so that the generation goes at the engine's pace
/// whatever the client's: its events wait in a queue (at most `max_tokens` of them) and the
/// slot is freed when the generation ends, not when a slow reader gets to the end. The task
/// stops at the deadline, with a `deadline_exceeded` error event, or as soon as the client goes
/// away (the engine request is cancelled either way).
fn detach(
    answer: impl Stream<Item = std::result::Result<Event, Infallible>> + Send + 'static,
    deadline: Instant,
    state: AppState,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut answer = std::pin::pin!(answer);
        loop {
            tokio::select! {
                event = answer.next() => {
                    let Some(event) = event else { return };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    state.metrics().reject("deadline_exceeded");
                    let secs = state.config().request_timeout_secs;
                    let _ = tx.send(Ok(json_event(&ApiError::DeadlineExceeded { secs }.body())));
                    return;
                }
                () = tx.closed() => return,
            }
        }
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
}
