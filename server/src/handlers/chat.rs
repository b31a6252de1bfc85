//! `POST /v1/chat/completions`, plain JSON or Server-Sent Events, on the `simple` route
//! (generate) or the `rag` route (retrieve, put the sources in the prompt, generate, check the
//! answer's citation markers).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};

use adapters::{collect, EventStream, GenerationEvent, GenerationRequest};

use crate::config::Route;
use crate::error::{ApiError, Result};
use crate::extract::OpenAiJson;
use crate::openai::{ChatCompletionRequest, CompletionMeta, Delta, RetrievalInfo};
use crate::rag::{search_query, with_sources, Citation, MarkerFilter};
use crate::state::{AppState, GenerationSlot};

/// Response header naming the route that answered.
pub const ROUTE_HEADER: &str = "x-switchyard-route";

/// What the `rag` route found before generating.
struct Grounding {
    citations: Vec<Citation>,
    info: RetrievalInfo,
}

pub async fn completions(
    State(state): State<AppState>,
    OpenAiJson(request): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response> {
    if request.model != state.config().model_id {
        return Err(ApiError::ModelNotFound(request.model));
    }
    let mut generation = request.to_generation(state.config())?;
    let route = request
        .route
        .unwrap_or(if state.config().retrieval_enabled {
            state.config().default_route
        } else {
            Route::Simple
        });
    let backend = state.backend()?;
    let slot = state.admit()?;
    state
        .metrics()
        .route_total
        .with_label_values(&[route.as_str()])
        .inc();
    let grounding = match route {
        Route::Simple => None,
        Route::Rag => Some(ground(&state, &mut generation).await?),
    };
    let meta = CompletionMeta::new(&request.model);
    let mut events = backend.generate(generation).await?;

    let response = if request.stream {
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
        let stream = SseAnswer {
            meta,
            route,
            grounding,
            include_usage,
            state: state.clone(),
        };
        Sse::new(stream.events(events, slot))
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        let output = collect(events).await?;
        drop(slot);
        let mut completion = meta.completion(String::new(), output.finish_reason, output.usage);
        let text = match grounding {
            Some(Grounding {
                citations,
                mut info,
            }) => {
                let mut filter = MarkerFilter::new(citations.len());
                let mut text = filter.push(&output.text);
                text.push_str(&filter.finish());
                record_markers(&state, &filter, &mut info);
                completion.citations = Some(citations);
                completion.retrieval = Some(info);
                text
            }
            None => output.text,
        };
        completion.choices[0].message.content = Some(text);
        completion.route = Some(route.as_str().to_string());
        Json(completion).into_response()
    };
    Ok(with_route_header(response, route))
}

fn with_route_header(mut response: Response, route: Route) -> Response {
    response
        .headers_mut()
        .insert(ROUTE_HEADER, HeaderValue::from_static(route.as_str()));
    response
}

/// Retrieves sources for the last user message and puts them in the prompt.
async fn ground(state: &AppState, generation: &mut GenerationRequest) -> Result<Grounding> {
    let retrieval = state.retrieval()?;
    let query = search_query(&generation.messages)
        .ok_or_else(|| {
            ApiError::invalid(
                "the rag route needs a non-empty user message to search for",
                "messages",
            )
        })?
        .to_string();
    let tenant = state.config().default_tenant.clone();
    let result = match retrieval.retriever.search(&tenant, &query).await {
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
    let messages = std::mem::take(&mut generation.messages);
    generation.messages = with_sources(messages, &citations);
    Ok(Grounding {
        citations,
        info: RetrievalInfo {
            degraded: !result.degraded.is_empty(),
            degraded_causes: result
                .degraded
                .iter()
                .map(|d| d.cause.as_str().to_string())
                .collect(),
            cited: None,
            invalid_markers_removed: None,
        },
    })
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

fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).expect("serializable"))
}

/// Everything a streamed answer needs besides the engine's events.
struct SseAnswer {
    meta: CompletionMeta,
    route: Route,
    grounding: Option<Grounding>,
    include_usage: bool,
    state: AppState,
}

impl SseAnswer {
    /// The SSE body: a role chunk (with the route and, on `rag`, the citations), content
    /// chunks, a finish chunk (with the cited sources on `rag`), an optional usage chunk,
    /// then `[DONE]`. An engine error becomes an OpenAI error event and ends the stream. The
    /// generation slot lives inside the stream, so a client that disconnects frees it (and
    /// cancels the engine request, whose receiver is dropped with it).
    fn events(
        self,
        mut events: EventStream,
        slot: GenerationSlot,
    ) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
        let SseAnswer {
            meta,
            route,
            grounding,
            include_usage,
            state,
        } = self;
        async_stream::stream! {
            let _slot = slot;
            let (citations, mut info) = match grounding {
                Some(g) => (Some(g.citations), Some(g.info)),
                None => (None, None),
            };
            let mut filter = citations.as_ref().map(|c| MarkerFilter::new(c.len()));
            let mut first = meta.chunk(Delta { role: Some("assistant".into()), content: Some(String::new()) }, None);
            first.route = Some(route.as_str().to_string());
            first.citations = citations;
            first.retrieval = info.clone();
            yield Ok(json_event(&first));
            while let Some(event) = events.next().await {
                match event {
                    Ok(GenerationEvent::Delta(text)) => {
                        let text = match filter.as_mut() {
                            Some(filter) => filter.push(&text),
                            None => text,
                        };
                        if !text.is_empty() {
                            yield Ok(json_event(&meta.chunk(Delta { role: None, content: Some(text) }, None)));
                        }
                    }
                    Ok(GenerationEvent::Done { finish_reason, usage }) => {
                        let mut last = meta.chunk(Delta::default(), Some(finish_reason));
                        if let (Some(filter), Some(info)) = (filter.as_mut(), info.as_mut()) {
                            let rest = filter.finish();
                            if !rest.is_empty() {
                                yield Ok(json_event(&meta.chunk(Delta { role: None, content: Some(rest) }, None)));
                            }
                            record_markers(&state, filter, info);
                            last.retrieval = Some(info.clone());
                        }
                        yield Ok(json_event(&last));
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
}
