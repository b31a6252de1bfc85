//! `POST /v1/chat/completions`, plain JSON or Server-Sent Events. Each request takes a route
//! (see `choose_route`): `simple` (generate), `rag` (retrieve, put the sources in the prompt,
//! generate, check the answer's citation markers) or `tool` (a schema-constrained call of one
//! of the request's tools).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use adapters::{collect, EventStream, GenerationEvent, GenerationRequest, Role};

use crate::auth::{resolve_tenant, Caller};
use crate::config::{AnswerFormat, Route, ToolSelection};
use crate::error::{ApiError, Result};
use crate::extract::OpenAiJson;
use crate::metrics::Metrics;
use crate::observe::stage;
use crate::openai::{
    ChatCompletionRequest, CompletionMeta, Delta, RetrievalInfo, RoutingInfo, ToolCallDelta,
};
use crate::rag::{
    answer_schema, search_query, verify_quotes, with_json_instructions, with_sources, Citation,
    MarkerFilter, QuoteCheck, ANSWER_JSON_MAX_CHARS,
};
use crate::routing::classify;
use crate::state::{AppState, GenerationSlot};
use crate::tools::{tool_set, ToolMode, ToolSet};

/// Response header naming the route that answered.
pub const ROUTE_HEADER: &str = "x-switchyard-route";
/// Response header naming the adapter generation that produced the answer.
pub const ADAPTER_HEADER: &str = "x-switchyard-adapter";
/// Response header with the route's confidence (1 when not chosen by the router).
pub const CONFIDENCE_HEADER: &str = "x-switchyard-route-confidence";

/// What the `rag` route found before generating.
struct Grounding {
    citations: Vec<Citation>,
    info: RetrievalInfo,
    /// How the answer's references are checked.
    check: AnswerCheck,
}

/// How a `rag` answer's references are checked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AnswerCheck {
    /// Prose: `[n]` markers filtered as they stream.
    Markers,
    /// The server's JSON answer schema: quotes verified against their source.
    Quotes,
    /// The client's own `response_format`: its JSON is left alone.
    None,
}

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
    // Retrieval searches the key's tenant (the default one for keys bound to none).
    let tenant = resolve_tenant(caller.as_deref(), None, &state.config().default_tenant)?;
    let started = std::time::Instant::now();
    // `model` is the base, or an adapter name: its active generation serves the whole request
    // (the Arc is the lease; a swap during the request does not affect it).
    let adapter = if request.model == state.config().model_id {
        None
    } else {
        Some(
            state
                .adapters()
                .ok()
                .and_then(|registry| registry.engine(&request.model))
                .ok_or_else(|| ApiError::ModelNotFound(request.model.clone()))?,
        )
    };
    let mut generation = request.to_generation(state.config())?;
    let tools = tool_set(&request)?;
    if adapter.is_none() {
        // Fail fast (503) while the base model loads, before routing work.
        state.backend()?;
    }
    let slot = state
        .admit()
        .inspect_err(|_| state.metrics().reject("overloaded"))?;
    let (route, routing) =
        stage("route", choose_route(&state, &request, &generation, &tools)).await?;
    // The adapter named in `model`, else the route's default adapter when it is loaded, else
    // the base.
    let route_default = || {
        let name = state.config().route_adapters.get(route.as_str())?;
        let (engine, generation) = state.adapters().ok()?.engine(name)?;
        Some((engine, format!("{name}@{generation}")))
    };
    let (backend, served_by) = match adapter {
        Some((engine, generation)) => (engine, format!("{}@{generation}", request.model)),
        None => match route_default() {
            Some(chosen) => chosen,
            None => (state.backend()?, "base".to_string()),
        },
    };
    state
        .metrics()
        .route_total
        .with_label_values(&[route.as_str(), routing.decided_by.as_str()])
        .inc();
    let mut meta = CompletionMeta::new(&request.model);
    meta.adapter = Some(served_by.clone());
    let confidence = routing.confidence;
    if route == Route::Tool {
        let mut tools = tools;
        if tools.mode == ToolMode::Auto || tools.mode == ToolMode::Required {
            if let Some(name) = select_tool(&state, &tools, &generation).await? {
                tools.pick(&name);
            }
        }
        let generation = tool_generation(generation, &tools);
        let events = instrument(
            start_generation(&state, backend.as_ref(), generation).await?,
            &state,
            route,
            started,
        );
        let response = tool_answer(events, &tools, &request, meta, routing, slot).await?;
        return Ok(with_adapter_header(
            with_route_header(response, route, confidence),
            &served_by,
        ));
    }
    let grounding = match route {
        Route::Rag => Some(stage("retrieve", ground(&state, &tenant, &mut generation)).await?),
        _ => None,
    };
    // A JSON answer left to the default length gets room for the longest answer its schema
    // allows, so that it is not cut short before it closes.
    if grounding
        .as_ref()
        .is_some_and(|g| g.check == AnswerCheck::Quotes)
        && request.requested_max_tokens().is_none()
    {
        generation.sampling.max_tokens = generation
            .sampling
            .max_tokens
            .max(ANSWER_JSON_MAX_CHARS.min(state.config().max_tokens_cap));
    }
    let mut events = instrument(
        start_generation(&state, backend.as_ref(), generation).await?,
        &state,
        route,
        started,
    );

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
            adapter: served_by.clone(),
            routing,
            grounding,
            include_usage,
            state: state.clone(),
        };
        Sse::new(detach(stream.events(events, slot), deadline, state.clone()))
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
                check,
            }) => {
                let text = match check {
                    AnswerCheck::Markers => {
                        let mut filter = MarkerFilter::new(citations.len());
                        let mut text = filter.push(&output.text);
                        text.push_str(&filter.finish());
                        record_markers(&state, &filter, &mut info);
                        text
                    }
                    AnswerCheck::Quotes => {
                        let checked = verify_quotes(&output.text, &citations);
                        record_quotes(&state, &checked, &mut info);
                        checked.content
                    }
                    AnswerCheck::None => output.text,
                };
                completion.ext.citations = Some(citations);
                completion.ext.retrieval = Some(info);
                text
            }
            None => output.text,
        };
        completion.choices[0].message.content = Some(text);
        completion.ext.route = Some(route.as_str().to_string());
        completion.ext.routing = Some(routing);
        Json(completion).into_response()
    };
    Ok(with_adapter_header(
        with_route_header(response, route, confidence),
        &served_by,
    ))
}

/// Says which weights answered: `base`, or `<adapter name>@<generation>`.
fn with_adapter_header(mut response: Response, served_by: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(served_by) {
        response.headers_mut().insert(ADAPTER_HEADER, value);
    }
    response
}

/// Picks the route: pinned by the client, implied by `tool_choice` or a tool result, chosen
/// by the trained router (or its fallback when it abstains), else the configured default. A
/// `tool` route without usable tools becomes `simple`, and the response says why.
async fn choose_route(
    state: &AppState,
    request: &ChatCompletionRequest,
    generation: &GenerationRequest,
    tools: &ToolSet,
) -> Result<(Route, RoutingInfo)> {
    let config = state.config();
    let decided = |route: Route, decided_by: &str| (route, 1.0f32, decided_by.to_string(), None);
    let last_is_tool_result = request
        .messages
        .last()
        .is_some_and(|m| m.role == Role::Tool);
    let router = state.retrieval().ok().and_then(|r| {
        r.router
            .clone()
            .map(|router| (r.embedder().clone(), router))
    });
    let decision = if let Some(route) = request.route {
        if !config.routes.contains(&route) {
            return Err(ApiError::invalid(
                format!("route `{}` is not served here", route.as_str()),
                "route",
            ));
        }
        decided(route, "client")
    } else if last_is_tool_result {
        decided(Route::Simple, "tool_result")
    } else if matches!(tools.mode, ToolMode::Required | ToolMode::Named(_)) {
        decided(Route::Tool, "tool_choice")
    } else if let (Some((embedder, router)), Some(query)) =
        (router, search_query(&generation.messages))
    {
        let fallback = config.router_fallback_route;
        let query = query.to_string();
        let classified = tokio::task::spawn_blocking(move || {
            classify(&embedder, &router, &query, fallback.as_str())
        });
        // Past its deadline the fallback route answers; the classification still finishes
        // (one short embedding, ahead of any bulk one), so nothing piles up.
        let budget = Duration::from_millis(config.router_timeout_ms);
        let Ok(joined) = tokio::time::timeout(budget, classified).await else {
            state
                .metrics()
                .route_fallbacks_total
                .with_label_values(&["router_timeout"])
                .inc();
            return finish_route(
                state,
                tools,
                (fallback, 0.0, "router_timeout".to_string(), None),
            );
        };
        let (decision, took) = joined.map_err(|e| ApiError::Embedder(e.to_string()))??;
        let metrics = state.metrics();
        metrics
            .router_classification_seconds
            .with_label_values::<&str>(&[])
            .observe(took.as_secs_f64());
        metrics
            .router_confidence
            .with_label_values(&[decision.predicted.as_str()])
            .observe(decision.confidence as f64);
        if decision.abstained {
            metrics
                .router_abstentions_total
                .with_label_values(&[decision.predicted.as_str()])
                .inc();
        }
        let route = Route::from_label(&decision.route).unwrap_or(fallback);
        let by = if decision.abstained {
            "router_abstained"
        } else {
            "router"
        };
        (
            route,
            decision.confidence,
            by.to_string(),
            Some(decision.predicted),
        )
    } else if config.retrieval_enabled {
        decided(config.default_route, "default")
    } else {
        decided(Route::Simple, "default")
    };
    finish_route(state, tools, decision)
}

/// A decided route, checked against what the request and this server can serve.
fn finish_route(
    state: &AppState,
    tools: &ToolSet,
    (mut route, confidence, decided_by, predicted): (Route, f32, String, Option<String>),
) -> Result<(Route, RoutingInfo)> {
    let config = state.config();
    let mut fallback_reason = None;
    if route == Route::Tool && tools.mode == ToolMode::Off {
        let reason = if tools.tools.is_empty() {
            "no_tools"
        } else {
            "tool_choice_none"
        };
        state
            .metrics()
            .route_fallbacks_total
            .with_label_values(&[reason])
            .inc();
        fallback_reason = Some(if tools.tools.is_empty() {
            "the route was tool but the request has no tools; answered on simple".to_string()
        } else {
            "the route was tool but tool_choice is none; answered on simple".to_string()
        });
        route = Route::Simple;
    }
    // A route this server does not serve is never taken: forced by tool_choice it is the
    // client's error; decided any other way, the default route answers, and says so.
    if !config.routes.contains(&route) {
        if decided_by == "tool_choice" {
            return Err(ApiError::invalid(
                format!(
                    "tool_choice asks for a tool call, but the `tool` route is not served here (routes: {})",
                    config.routes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ),
                "tool_choice",
            ));
        }
        state
            .metrics()
            .route_fallbacks_total
            .with_label_values(&["route_not_served"])
            .inc();
        fallback_reason = Some(format!(
            "the route was {} but it is not served here; answered on {}",
            route.as_str(),
            config.default_route.as_str()
        ));
        route = config.default_route;
    }
    Ok((
        route,
        RoutingInfo {
            route: route.as_str().to_string(),
            confidence,
            decided_by,
            predicted,
            fallback_reason,
        },
    ))
}

/// With `tool_selection = "embedding"` and several tools, the tool whose name and description
/// are nearest to the last user message (cosine of MiniLM embeddings). Small models pick the
/// wrong one of several tools (SmolLM2-135M called `get_time` for a weather question), while
/// they fill the arguments of a given tool well.
async fn select_tool(
    state: &AppState,
    tools: &ToolSet,
    generation: &GenerationRequest,
) -> Result<Option<String>> {
    if state.config().tool_selection != ToolSelection::Embedding || tools.tools.len() < 2 {
        return Ok(None);
    }
    let (Ok(retrieval), Some(query)) = (state.retrieval(), search_query(&generation.messages))
    else {
        return Ok(None);
    };
    let embedder = retrieval.embedder().clone();
    let candidates = tools.tool_texts();
    let query = query.to_string();
    let best = tokio::task::spawn_blocking(move || -> retrieval::Result<Option<String>> {
        let mut texts = vec![query];
        texts.extend(candidates.iter().map(|(_, text)| text.clone()));
        let vectors = embedder.embed(&texts)?;
        let score = |v: &[f32]| -> f32 { v.iter().zip(&vectors[0]).map(|(a, b)| a * b).sum() };
        Ok(candidates
            .iter()
            .zip(&vectors[1..])
            .max_by(|a, b| score(a.1).total_cmp(&score(b.1)))
            .map(|((name, _), _)| name.clone()))
    })
    .await
    .map_err(|e| ApiError::Embedder(e.to_string()))??;
    Ok(best)
}

/// The `tool` route: the output is constrained to a call of one of the request's tools and
/// returned as OpenAI `tool_calls` (one JSON answer or a short SSE stream). Tool calls are
/// decoded greedily: a sampled token could still match the schema, but greedy gives the
/// model's best arguments.
async fn tool_answer(
    events: EventStream,
    tools: &ToolSet,
    request: &ChatCompletionRequest,
    meta: CompletionMeta,
    routing: RoutingInfo,
    slot: GenerationSlot,
) -> Result<Response> {
    let output = collect(events).await?;
    drop(slot);
    let call = tools.parse_call(&output.text);
    let mut completion = meta.completion(String::new(), output.finish_reason, output.usage);
    completion.ext.route = Some(Route::Tool.as_str().to_string());
    completion.ext.routing = Some(routing.clone());
    match &call {
        Some(call) => {
            completion.choices[0].message.content = None;
            completion.choices[0].message.tool_calls = Some(vec![call.clone()]);
            completion.choices[0].finish_reason = "tool_calls".into();
        }
        // Cut short (max_tokens) before the call was complete: no call and no content (the
        // partial JSON is not an answer), with the engine's `length`.
        None => completion.choices[0].message.content = None,
    }
    if !request.stream {
        return Ok(Json(completion).into_response());
    }
    let mut chunks = Vec::new();
    let mut first = meta.chunk(
        Delta {
            role: Some("assistant".into()),
            content: None,
            tool_calls: None,
        },
        None,
    );
    first.ext.route = completion.ext.route.clone();
    first.ext.routing = Some(routing);
    first.ext.adapter = meta.adapter.clone();
    chunks.push(json_event(&first));
    let finish = match call {
        Some(call) => {
            chunks.push(json_event(&meta.chunk(
                Delta {
                    tool_calls: Some(vec![ToolCallDelta { index: 0, call }]),
                    ..Delta::default()
                },
                None,
            )));
            "tool_calls".to_string()
        }
        None => completion.choices[0].finish_reason.clone(),
    };
    let mut last = meta.chunk(Delta::default(), None);
    last.choices[0].finish_reason = Some(finish);
    chunks.push(json_event(&last));
    if request
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage)
    {
        chunks.push(json_event(&meta.usage_chunk(output.usage)));
    }
    chunks.push(Event::default().data("[DONE]"));
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    Ok(Sse::new(stream).into_response())
}

/// The generation that asks for one call of the chosen tools, constrained to their schema.
fn tool_generation(mut generation: GenerationRequest, tools: &ToolSet) -> GenerationRequest {
    generation.messages = tools.with_tool_prompt(std::mem::take(&mut generation.messages));
    generation.json_schema = Some(tools.output_schema());
    generation.sampling.temperature = 0.0;
    generation.sampling.seed = None;
    generation.sampling.stop.clear();
    generation
}

/// Starts a generation; it counts as waiting until an engine instance takes it.
async fn start_generation(
    state: &AppState,
    backend: &dyn adapters::Backend,
    generation: GenerationRequest,
) -> Result<EventStream> {
    let _waiting = Metrics::track(&state.metrics().requests_waiting);
    Ok(backend.generate(generation).await?)
}

/// Records time to first token, inter-token gaps and token counts as events pass, and logs the
/// `generate` stage (in the request's span, though a stream is polled after the handler
/// returned) when the generation ends.
fn instrument(
    events: EventStream,
    state: &AppState,
    route: Route,
    started: std::time::Instant,
) -> EventStream {
    let state = state.clone();
    let span = tracing::info_span!("stage", stage = "generate");
    let generation_started = std::time::Instant::now();
    let mut last: Option<std::time::Instant> = None;
    let mut first_token_ms = None;
    Box::pin(events.map(move |event| {
        let metrics = state.metrics();
        let label = [route.as_str()];
        match &event {
            Ok(GenerationEvent::Delta(_)) => {
                let now = std::time::Instant::now();
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

fn with_route_header(mut response: Response, route: Route, confidence: f32) -> Response {
    let headers = response.headers_mut();
    headers.insert(ROUTE_HEADER, HeaderValue::from_static(route.as_str()));
    if let Ok(value) = HeaderValue::from_str(&format!("{confidence:.4}")) {
        headers.insert(CONFIDENCE_HEADER, value);
    }
    response
}

/// Retrieves sources for the last user message and puts them in the prompt.
async fn ground(
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
    let messages = std::mem::take(&mut generation.messages);
    generation.messages = with_sources(messages, &citations);
    let check = if generation.json_schema.is_some() {
        AnswerCheck::None
    } else if state.config().rag_answer_format == AnswerFormat::Json {
        generation.json_schema = Some(answer_schema(citations.len()));
        generation.messages = with_json_instructions(std::mem::take(&mut generation.messages));
        AnswerCheck::Quotes
    } else {
        AnswerCheck::Markers
    };
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
            cited: None,
            invalid_markers_removed: None,
            invalid_quotes: None,
        },
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

/// Everything a streamed answer needs besides the engine's events.
struct SseAnswer {
    meta: CompletionMeta,
    adapter: String,
    routing: RoutingInfo,
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
            adapter,
            routing,
            grounding,
            include_usage,
            state,
        } = self;
        async_stream::stream! {
            let _slot = slot;
            let (citations, mut info, check) = match grounding {
                Some(g) => (Some(g.citations), Some(g.info), g.check),
                None => (None, None, AnswerCheck::None),
            };
            let sources = citations.clone().unwrap_or_default();
            let mut filter = (check == AnswerCheck::Markers).then(|| MarkerFilter::new(sources.len()));
            let mut streamed = String::new();
            let mut first = meta.chunk(Delta { role: Some("assistant".into()), content: Some(String::new()), tool_calls: None }, None);
            first.ext.route = Some(routing.route.clone());
            first.ext.routing = Some(routing);
            first.ext.adapter = Some(adapter);
            first.ext.citations = citations;
            first.ext.retrieval = info.clone();
            yield Ok(json_event(&first));
            while let Some(event) = events.next().await {
                match event {
                    Ok(GenerationEvent::Delta(text)) => {
                        if check == AnswerCheck::Quotes {
                            streamed.push_str(&text);
                        }
                        let text = match filter.as_mut() {
                            Some(filter) => filter.push(&text),
                            None => text,
                        };
                        if !text.is_empty() {
                            yield Ok(json_event(&meta.chunk(Delta { role: None, content: Some(text), tool_calls: None }, None)));
                        }
                    }
                    Ok(GenerationEvent::Done { finish_reason, usage }) => {
                        let mut last = meta.chunk(Delta::default(), Some(finish_reason));
                        if let (Some(filter), Some(info)) = (filter.as_mut(), info.as_mut()) {
                            let rest = filter.finish();
                            if !rest.is_empty() {
                                yield Ok(json_event(&meta.chunk(Delta { role: None, content: Some(rest), tool_calls: None }, None)));
                            }
                            record_markers(&state, filter, info);
                            last.ext.retrieval = Some(info.clone());
                        }
                        if let (AnswerCheck::Quotes, Some(info)) = (check, info.as_mut()) {
                            // The text is sent: invalid quotes are flagged, not removed.
                            record_quotes(&state, &verify_quotes(&streamed, &sources), info);
                            last.ext.retrieval = Some(info.clone());
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
