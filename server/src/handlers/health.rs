//! `GET /health` (the process is up) and `GET /ready` (the model is loaded and serving).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::Result;
use crate::state::AppState;

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 503 with the reason while the model loads or after it failed to load.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>> {
    let backend = state.backend()?;
    Ok(Json(
        json!({"status": "ready", "model": backend.model_id()}),
    ))
}
