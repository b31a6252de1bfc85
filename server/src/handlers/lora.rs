//! The adapter admin API, vLLM-compatible where vLLM has the call:
//! `POST /v1/load_lora_adapter {lora_name, lora_path}`, `POST /v1/unload_lora_adapter
//! {lora_name}`, `GET /v1/lora_adapters`, and `POST /v1/lora_adapters/{name}/activate
//! {generation, expected_generation?}` (rollback / roll forward, compare-and-set: 409 when the
//! active generation is not the expected one).
//!
//! Adapters are shared by every tenant (a request names one in `model`, whatever its tenant),
//! so changing them is a global operation: a key bound to a tenant may list them, but load,
//! unload and activate need an admin key bound to no tenant (403 `global_admin_required`).

use std::path::PathBuf;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use adapters::RegistryError;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::extract::OpenAiJson;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    pub lora_name: String,
    pub lora_path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnloadRequest {
    pub lora_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub generation: String,
    #[serde(default)]
    pub expected_generation: Option<String>,
}

/// Counts an adapter operation by outcome.
fn record<T>(state: &AppState, operation: &str, result: &std::result::Result<T, RegistryError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(RegistryError::Invalid(_)) => "refused",
        Err(RegistryError::Conflict { .. }) => "conflict",
        Err(RegistryError::Busy) => "busy",
        Err(RegistryError::NotFound(_) | RegistryError::UnknownGeneration { .. }) => "not_found",
        Err(RegistryError::Engine(_)) => "error",
    };
    state
        .metrics()
        .adapter_operations_total
        .with_label_values(&[operation, outcome])
        .inc();
}

/// Refuses a caller whose key is bound to a tenant (auth off: no caller, allowed).
fn require_global(caller: Option<Extension<Caller>>) -> Result<()> {
    match caller.and_then(|Extension(c)| c.tenant.map(|t| (c.key_name, t))) {
        Some((key, tenant)) => Err(ApiError::GlobalAdminRequired { key, tenant }),
        None => Ok(()),
    }
}

pub async fn load(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    OpenAiJson(body): OpenAiJson<LoadRequest>,
) -> Result<Json<Value>> {
    require_global(caller)?;
    let registry = state.adapters()?.clone();
    let result = registry.load(&body.lora_name, &body.lora_path).await;
    record(&state, "load", &result);
    let info = result?;
    tracing::info!(
        adapter = body.lora_name,
        generation = info.generation,
        "adapter loaded and active"
    );
    Ok(Json(
        json!({"lora_name": body.lora_name, "active_generation": info.generation, "generation": info}),
    ))
}

/// At start: brings back the saved active set (what was active when the server last stopped,
/// even by kill -9), then loads the `startup_adapters` whose names it did not bring back (a
/// generation activated at runtime outlives a restart), one after another, each counted and
/// logged like an API load; a failure leaves the others to load.
pub async fn restore_adapters(state: AppState) {
    let Ok(registry) = state.adapters().cloned() else {
        return;
    };
    let mut recovered = std::collections::HashSet::new();
    for (name, outcome) in registry.recover().await {
        record(&state, "recover", &outcome);
        match outcome {
            Ok(info) => {
                tracing::info!(
                    adapter = name,
                    generation = info.generation,
                    "adapter recovered from the saved active set"
                );
                recovered.insert(name);
            }
            Err(err) => tracing::error!(
                adapter = name,
                error = %err,
                "saved active adapter could not be recovered"
            ),
        }
    }
    for (name, path) in &state.config().startup_adapters {
        if recovered.contains(name) {
            continue;
        }
        let result = registry.load(name, path).await;
        record(&state, "load", &result);
        match result {
            Ok(info) => tracing::info!(
                adapter = name,
                generation = info.generation,
                "startup adapter loaded and active"
            ),
            Err(err) => tracing::error!(
                adapter = name,
                path = %path.display(),
                error = %err,
                "startup adapter failed to load"
            ),
        }
    }
}

pub async fn unload(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    OpenAiJson(body): OpenAiJson<UnloadRequest>,
) -> Result<Json<Value>> {
    require_global(caller)?;
    let result = state.adapters()?.unload(&body.lora_name);
    record(&state, "unload", &result);
    result?;
    Ok(Json(json!({"lora_name": body.lora_name, "unloaded": true})))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(
        json!({"object": "list", "data": state.adapters()?.list()}),
    ))
}

pub async fn activate(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    name: std::result::Result<Path<String>, PathRejection>,
    OpenAiJson(body): OpenAiJson<ActivateRequest>,
) -> Result<Json<Value>> {
    require_global(caller)?;
    let Path(name) = name.map_err(|e| ApiError::invalid(e.body_text(), "name"))?;
    let result =
        state
            .adapters()?
            .activate(&name, &body.generation, body.expected_generation.as_deref());
    record(&state, "activate", &result);
    let info = result?;
    Ok(Json(
        json!({"lora_name": name, "active_generation": info.generation, "generation": info}),
    ))
}
