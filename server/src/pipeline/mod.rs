//! The combined pattern, one request at a time: **route** (`route.rs`: pinned, implied by the
//! request, or the trained router), then on `rag` **ground** (`ground.rs`: hybrid retrieval,
//! the hits put into the prompt as numbered sources, `sources.rs`) or on `tool` the tool call
//! prompt and schema (`tools.rs`), **generate** (`generate.rs`: the weights that answer, the
//! engine's event stream, timed), and **verify** (`verify.rs`: citation markers, quotes, the
//! tool call) as the text streams.
//!
//! [`Pipeline::answer`] does everything up to the engine's first event, so a request that
//! cannot be served fails with its own status; what follows is one stream of
//! [`AnswerEvent`]s, which the HTTP handler turns into one JSON completion or SSE chunks, and
//! the evaluations collect the same way.

pub mod generate;
pub mod ground;
pub mod route;
pub mod sources;
pub mod tools;
pub mod verify;

use std::pin::Pin;

use futures::{Stream, StreamExt};

use adapters::{FinishReason, GenerationRequest, Usage};

use crate::config::Route;
use crate::error::{ApiError, Result};
use crate::observe::stage;
use crate::openai::{RetrievalInfo, RoutingInfo, ToolCall};
use crate::state::AppState;
use ground::Grounding;
use sources::Citation;
use tools::ToolSet;
use verify::Check;

/// What a caller asks, already checked against the server's limits.
#[derive(Debug, Clone)]
pub struct PipelineRequest {
    /// The base model's id, or an adapter's name: its active generation answers.
    pub model: String,
    /// Whose documents a `rag` answer is grounded in.
    pub tenant: String,
    /// Messages, sampling and the client's own JSON schema (`response_format`).
    pub generation: GenerationRequest,
    /// The route the caller pinned.
    pub route: Option<Route>,
    /// The last message is a tool's result (the engine's messages show it as quoted data):
    /// it is answered on `simple`.
    pub follows_tool_result: bool,
    pub tools: ToolSet,
    /// The caller gave `max_tokens`; a JSON answer left to the default gets room for the
    /// longest answer its schema allows.
    pub max_tokens_given: bool,
}

/// What [`Pipeline::answer`] decided before generating, and the answer's events.
pub struct Answer {
    pub route: Route,
    pub routing: RoutingInfo,
    /// The weights that answer: `base`, or `<adapter name>@<generation>`.
    pub served_by: String,
    /// On `rag`: the sources given to the model, and how retrieval went.
    pub grounding: Option<(Vec<Citation>, RetrievalInfo)>,
    /// Holds the generation slot: dropping it frees the slot and cancels the engine request.
    pub events: AnswerStream,
    pub timings: StageTimings,
}

/// How long the stages before the answer's first event took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageTimings {
    pub route: std::time::Duration,
    /// On `rag`: retrieval and the prompt (the tool prompt on `tool`).
    pub ground: Option<std::time::Duration>,
    /// From the request to the engine's first event (time to first token, or to the first
    /// event of a tool call).
    pub first_event: std::time::Duration,
}

pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<AnswerEvent>> + Send>>;

/// One step of an answer, in the order they come.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    /// Answer text, already verified (markers naming no source removed).
    Text(String),
    /// The `tool` route's call, parsed from the constrained output when it ended.
    ToolCall(ToolCall),
    /// The `rag` answer's check: what it cites, what was removed.
    Verified(Verification),
    /// The end; nothing follows.
    Done {
        finish_reason: FinishReason,
        usage: Usage,
    },
}

/// A `rag` answer's verification result.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    pub retrieval: RetrievalInfo,
    /// A JSON answer with its unverified quotes removed. Text already streamed is not taken
    /// back: a stream sends the answer as generated, with the count flagged.
    pub corrected: Option<String>,
}

/// An answer read to its end.
#[derive(Debug, Clone)]
pub struct CollectedAnswer {
    /// The verified text (a corrected JSON answer in place of the generated one).
    pub text: String,
    pub tool_call: Option<ToolCall>,
    pub retrieval: Option<RetrievalInfo>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

impl Answer {
    /// Reads every event; the generation slot is freed when this returns.
    pub async fn collect(self) -> Result<CollectedAnswer> {
        let mut events = self.events;
        let (mut text, mut tool_call, mut verification) = (String::new(), None, None);
        while let Some(event) = events.next().await {
            match event? {
                AnswerEvent::Text(delta) => text.push_str(&delta),
                AnswerEvent::ToolCall(call) => tool_call = Some(call),
                AnswerEvent::Verified(verified) => verification = Some(verified),
                AnswerEvent::Done {
                    finish_reason,
                    usage,
                } => {
                    let retrieval = match verification {
                        Some(Verification {
                            retrieval,
                            corrected,
                        }) => {
                            if let Some(corrected) = corrected {
                                text = corrected;
                            }
                            Some(retrieval)
                        }
                        None => self.grounding.map(|(_, info)| info),
                    };
                    return Ok(CollectedAnswer {
                        text,
                        tool_call,
                        retrieval,
                        finish_reason,
                        usage,
                    });
                }
            }
        }
        Err(ApiError::Engine(
            "the answer ended before it was done".into(),
        ))
    }
}

/// The request pipeline over a server's state (engine, index, router, adapters, metrics).
#[derive(Clone)]
pub struct Pipeline {
    state: AppState,
}

impl Pipeline {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Routes, grounds, starts generating, and returns once the engine's first event is in:
    /// every refusal up to there (unknown model, 503 while loading, 429 when full, a route not
    /// served, an empty query, a prompt over the context window) is an error here.
    pub async fn answer(&self, request: PipelineRequest) -> Result<Answer> {
        let state = &self.state;
        let started = std::time::Instant::now();
        let adapter = generate::requested_adapter(state, &request.model)?;
        if adapter.is_none() {
            // Fail fast (503) while the base model loads, before routing work.
            state.backend()?;
        }
        let slot = state
            .admit()
            .inspect_err(|_| state.metrics().reject("overloaded"))?;
        let routed = stage("route", route::decide(state, &request)).await?;
        let routed_at = started.elapsed();
        let route = routed.route;
        let weights = generate::weights(state, adapter, route)?;
        state
            .metrics()
            .route_total
            .with_label_values(&[route.as_str(), routed.info.decided_by.as_str()])
            .inc();

        let PipelineRequest {
            tenant,
            mut generation,
            tools,
            max_tokens_given,
            ..
        } = request;
        let grounding_started = std::time::Instant::now();
        let (check, grounding) = match route {
            Route::Tool => {
                let tools = tools::prepare(state, tools, &mut generation).await?;
                (Check::ToolCall(tools), None)
            }
            Route::Rag => {
                let Grounding {
                    citations,
                    info,
                    check,
                } = stage("retrieve", ground::ground(state, &tenant, &mut generation)).await?;
                if matches!(check, Check::Quotes) && !max_tokens_given {
                    ground::leave_room_for_the_answer_schema(state.config(), &mut generation);
                }
                (check, Some((citations, info)))
            }
            Route::Simple => (Check::Plain, None),
        };
        let ground = (route != Route::Simple).then(|| grounding_started.elapsed());
        let events = generate::start(state, &weights, generation, route, started).await?;
        let events = verify::verify(events, check, grounding.clone(), state.clone(), slot);
        Ok(Answer {
            route,
            routing: routed.info,
            served_by: weights.served_by,
            grounding,
            events,
            timings: StageTimings {
                route: routed_at,
                ground,
                first_event: started.elapsed(),
            },
        })
    }
}
