//! The documents admin API: upsert, list, get and delete documents of the index.
//!
//! `POST /v1/documents` `{id, text, title?, format?, tenant?}` adds or replaces a document
//! (201 when created, 200 when updated or unchanged); `GET /v1/documents` lists documents
//! with their chunk counts; `GET`/`DELETE /v1/documents/{id}` read or remove one (ids may
//! contain `/`). A key bound to a tenant acts in that tenant only; otherwise `?tenant=` (or
//! the body's `tenant`) selects one, and the default tenant is used without it.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use retrieval::{DocFormat, IngestStatus, NewDocument};

use crate::auth::{resolve_tenant, Caller};
use crate::error::{ApiError, Result};
use crate::extract::OpenAiJson;
use crate::state::AppState;

/// `POST /v1/documents` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertDocument {
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub format: Option<DocFormat>,
    #[serde(default)]
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The request's tenant: the key's own when it is bound to one, else `?tenant=`, else the
/// default.
fn tenant(
    state: &AppState,
    caller: Option<&Caller>,
    query: std::result::Result<Query<TenantQuery>, QueryRejection>,
) -> Result<String> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text(), "tenant"))?;
    let tenant = resolve_tenant(caller, query.tenant, &state.config().default_tenant)?;
    retrieval::ingest::validate_tenant(&tenant).map_err(ApiError::from)?;
    Ok(tenant)
}

fn doc_id(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::invalid(e.body_text(), "id"))
}

fn record(state: &AppState, operation: &str, outcome: &str) {
    state
        .metrics()
        .ingest_total
        .with_label_values(&[operation, outcome])
        .inc();
}

pub async fn upsert(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    OpenAiJson(body): OpenAiJson<UpsertDocument>,
) -> Result<Response> {
    let retrieval = state.retrieval()?;
    let tenant = resolve_tenant(
        caller.as_deref(),
        body.tenant,
        &state.config().default_tenant,
    )?;
    let result = retrieval
        .ingestor
        .upsert(NewDocument {
            tenant,
            doc_id: body.id,
            text: body.text,
            title: body.title,
            format: body.format,
        })
        .await;
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            record(&state, "upsert", "error");
            return Err(err.into());
        }
    };
    let (status, outcome) = match report.status {
        IngestStatus::Created => (StatusCode::CREATED, "created"),
        IngestStatus::Updated => (StatusCode::OK, "updated"),
        IngestStatus::Unchanged => (StatusCode::OK, "unchanged"),
    };
    record(&state, "upsert", outcome);
    state.metrics().set_index_stats(retrieval.store().stats());
    Ok((status, Json(report)).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    query: std::result::Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>> {
    let retrieval = state.retrieval()?;
    let tenant = tenant(&state, caller.as_deref(), query)?;
    let documents = retrieval.ingestor.list(Some(&tenant));
    Ok(Json(json!({"object": "list", "data": documents})))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response> {
    let retrieval = state.retrieval()?;
    let (id, tenant) = (doc_id(path)?, tenant(&state, caller.as_deref(), query)?);
    let info = retrieval
        .ingestor
        .get(&tenant, &id)
        .ok_or(ApiError::DocumentNotFound(id))?;
    Ok(Json(info).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    path: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>> {
    let retrieval = state.retrieval()?;
    let (id, tenant) = (doc_id(path)?, tenant(&state, caller.as_deref(), query)?);
    match retrieval.ingestor.delete(&tenant, &id).await {
        Ok(info) => {
            record(&state, "delete", "deleted");
            state.metrics().set_index_stats(retrieval.store().stats());
            Ok(Json(
                json!({"tenant": info.tenant, "id": info.id, "object": "document", "deleted": true, "chunks": info.chunks}),
            ))
        }
        Err(err) => {
            record(&state, "delete", "error");
            Err(err.into())
        }
    }
}
