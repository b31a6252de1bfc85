//! Fuzzes chat-request parsing and the `/v1/chat/completions` handler.
//!
//! The input is a request body. Directly: it is parsed as `ChatCompletionRequest` and, when it
//! parses, `to_generation(&Config::default())` and `tool_set` run (they may refuse it, never
//! panic). Through the in-process axum router (`switchyard_server::router`, retrieval off, an
//! echo engine in place of the model): the same bytes are POSTed to /v1/chat/completions, the
//! whole response body (JSON or SSE) is read, and
//! - the status is never a 5xx other than 503;
//! - a body that does not parse is a 400; a request whose checks fail gets their error's status;
//! - a request that passes them is answered 200 (503 when it pins the `rag` route, whose index
//!   is off here);
//! - a 200 JSON answer parses as a `ChatCompletion`.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

use adapters::{
    Backend, EventStream, FinishReason, GenerationEvent, GenerationRequest, Usage,
};
use switchyard_adapters as adapters;
use switchyard_server::config::Route;
use switchyard_server::openai::{ChatCompletion, ChatCompletionRequest};
use switchyard_server::state::AppState;
use switchyard_server::tools::tool_set;
use switchyard_server::{router, Config};

/// An engine that answers with the last message's text, in a few deltas: the fuzzer controls
/// the "model output" (tool calls, citation markers) through the request.
struct Echo;

#[async_trait::async_trait]
impl Backend for Echo {
    fn model_id(&self) -> &str {
        "echo"
    }

    async fn generate(&self, request: GenerationRequest) -> adapters::Result<EventStream> {
        let text = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let mut events = Vec::new();
        let mut piece = String::new();
        let mut completion_tokens = 0;
        for c in text.chars() {
            piece.push(c);
            if piece.len() >= 7 {
                events.push(Ok(GenerationEvent::Delta(std::mem::take(&mut piece))));
                completion_tokens += 1;
            }
            if completion_tokens >= request.sampling.max_tokens {
                break;
            }
        }
        let finish_reason = if completion_tokens >= request.sampling.max_tokens {
            FinishReason::Length
        } else {
            if !piece.is_empty() {
                events.push(Ok(GenerationEvent::Delta(piece)));
                completion_tokens += 1;
            }
            FinishReason::Stop
        };
        events.push(Ok(GenerationEvent::Done {
            finish_reason,
            usage: Usage {
                prompt_tokens: request.messages.len(),
                completion_tokens,
            },
        }));
        Ok(futures::stream::iter(events).boxed())
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    config: Config,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let config = Config {
            retrieval_enabled: false,
            ..Config::default()
        };
        let state = AppState::new(config.clone());
        state.set_ready(Arc::new(Echo));
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            app: router(state),
            config,
        }
    })
}

/// The status the handler must answer with, from the public checks.
fn expected(config: &Config, body: &[u8]) -> StatusCode {
    let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(body) else {
        return StatusCode::BAD_REQUEST;
    };
    // The engine-independent checks must never panic, with the stock configuration too.
    let _ = request.to_generation(&Config::default());
    let _ = tool_set(&request);

    if request.model != config.model_id {
        return StatusCode::NOT_FOUND;
    }
    if let Err(err) = request.to_generation(config) {
        return err.status();
    }
    if let Err(err) = tool_set(&request) {
        return err.status();
    }
    if request.route == Some(Route::Rag) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let want = expected(&h.config, data);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(data.to_vec()))
        .expect("request");
    let app = h.app.clone();
    let (status, sse, body) = h.runtime.block_on(async move {
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, sse, body)
    });
    let shown = String::from_utf8_lossy(&body);
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "status {status}: {shown}"
    );
    assert_eq!(status, want, "body: {shown}");
    if status == StatusCode::OK && !sse {
        serde_json::from_slice::<ChatCompletion>(&body)
            .unwrap_or_else(|e| panic!("200 answer is not a ChatCompletion ({e}): {shown}"));
    }
});
