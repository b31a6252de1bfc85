//! Per-request observability: a request id (the client's `x-request-id`, or a new one) on a
//! tracing span around the whole request and echoed in the response, stage spans with their
//! durations, and HTTP metrics by matched endpoint (never the raw path: ids in paths would
//! explode label cardinality).

use std::future::Future;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied request id kept; longer or non-visible-ASCII ids are replaced.
const MAX_REQUEST_ID: usize = 128;

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, endpoint = %endpoint);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let class = format!("{}xx", status.as_u16() / 100);
    let metrics = state.metrics();
    metrics
        .http_requests_total
        .with_label_values(&[endpoint.as_str(), method.as_str(), class.as_str()])
        .inc();
    metrics
        .http_request_duration_seconds
        .with_label_values(&[endpoint.as_str()])
        .observe(started.elapsed().as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Runs one stage of a request (`route`, `retrieve`) in its own span, a child of the request's,
/// and logs its duration when it ends. (`generate` outlives the handler when streamed: its
/// span is opened and closed by the chat handler's event stream.)
pub async fn stage<F: Future>(name: &'static str, work: F) -> F::Output {
    let span = tracing::info_span!("stage", stage = name);
    let started = Instant::now();
    let output = work.instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "stage done"
        )
    });
    output
}
