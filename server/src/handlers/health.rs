//! `GET /health` (the process is up) and `GET /ready` (the model, the document index when
//! retrieval is enabled and the router when one is configured are loaded and serving).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::Result;
use crate::state::AppState;

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 503 with the reason while the model, index or router loads, or after one failed to load.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>> {
    let backend = state.backend()?;
    let index = match state.index_readiness() {
        None => json!({"enabled": false}),
        Some(readiness) => {
            readiness?;
            let retrieval = state.retrieval()?;
            let stats = retrieval.store().stats();
            json!({
                "enabled": true,
                "vector_store": retrieval.store().vector_backend(),
                "documents": stats.documents,
                "chunks": stats.chunks,
            })
        }
    };
    let router = match state.router_readiness()? {
        Some(router) => json!({"enabled": true, "routes": router.meta.routes}),
        None => json!({"enabled": false}),
    };
    Ok(Json(
        json!({"status": "ready", "model": backend.model_id(), "index": index, "router": router}),
    ))
}
