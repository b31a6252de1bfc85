//! `GET /metrics`: Prometheus text format.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::AppState;

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Admitted generations are either waiting for an engine instance or running on one.
    let metrics = state.metrics();
    let waiting = metrics.requests_waiting.get();
    metrics
        .requests_running
        .set((state.in_flight() as i64 - waiting).max(0));
    if let Ok(retrieval) = state.retrieval() {
        metrics.set_index_stats(retrieval.store().stats());
    }
    if let Ok(registry) = state.adapters() {
        state.metrics().set_adapters(&registry.list());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    )
}
