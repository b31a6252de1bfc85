//! The HTTP layer's error type and its one mapping to OpenAI-shaped error responses.
//!
//! Every error the API returns, as JSON or inside an SSE stream, goes through [`ApiError`], so
//! the table in [`ApiError::spec`] is the whole list of status codes, types and codes that
//! clients can see (the README's "Errors" section mirrors it).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use adapters::EngineError;

/// Result alias for the HTTP layer.
pub type Result<T> = std::result::Result<T, ApiError>;

/// An error returned to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("max_tokens is {requested}, above this server's limit of {cap}")]
    MaxTokensExceeded { requested: u64, cap: usize },
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("server is at capacity ({limit} generations in flight); retry later")]
    Overloaded { limit: usize, retry_after_secs: u64 },
    #[error("the API key `{key}` is over its rate limit; retry in {retry_after_secs} s")]
    RateLimited { key: String, retry_after_secs: u64 },
    #[error("the request ran past its deadline of {secs} s and was stopped")]
    DeadlineExceeded { secs: u64 },
    #[error("the model is not loaded yet")]
    NotReady,
    #[error("the model failed to load: {0}")]
    ModelUnavailable(String),
    #[error("{0}")]
    Engine(String),
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    #[error("document `{0}` not found")]
    DocumentNotFound(String),
    #[error("the document index is not available: {0}")]
    IndexUnavailable(String),
    #[error("the index could not be changed, and holds what it held before: {0}")]
    IndexWriteFailed(String),
    #[error("retrieval failed on every retriever: {0}")]
    RetrievalUnavailable(String),
    #[error("the embedder failed: {0}")]
    Embedder(String),
    #[error("the intent router is not available: {0}")]
    RouterUnavailable(String),
    #[error("{0}")]
    InvalidAdapter(String),
    #[error("{0}")]
    AdapterNotFound(String),
    #[error("{0}")]
    GenerationConflict(String),
    #[error("{0}")]
    AdapterLoadInProgress(String),
    #[error("adapters are off on this server (adapters_enabled = false, the registry's folders could not be made, or mistralrs without adapter_base_dir)")]
    AdaptersDisabled,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("the API key `{key}` does not have the `{scope}` scope")]
    Forbidden { key: String, scope: &'static str },
    #[error("the API key `{key}` is bound to another tenant than `{tenant}`")]
    TenantForbidden { key: String, tenant: String },
    #[error("the API key `{key}` is bound to tenant `{tenant}`; adapters are shared by every tenant, so managing them needs an admin key bound to no tenant")]
    GlobalAdminRequired { key: String, tenant: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    CrossSiteRequest(String),
    #[error("the server failed while handling the request: {0}")]
    Internal(String),
}

/// The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: &'static str,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: &'static str) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param),
        }
    }

    /// The error table: HTTP status, OpenAI `type`, and `code` of each error.
    #[rustfmt::skip]
    pub fn spec(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        const INVALID: &str = "invalid_request_error";
        match self {
            InvalidJson(_)            => (StatusCode::BAD_REQUEST, INVALID, "invalid_json"),
            InvalidRequest { .. }     => (StatusCode::BAD_REQUEST, INVALID, "invalid_value"),
            MaxTokensExceeded { .. }  => (StatusCode::BAD_REQUEST, INVALID, "max_tokens_exceeded"),
            ContextLengthExceeded(_)  => (StatusCode::BAD_REQUEST, INVALID, "context_length_exceeded"),
            ModelNotFound(_)          => (StatusCode::NOT_FOUND, INVALID, "model_not_found"),
            NotFound(_)               => (StatusCode::NOT_FOUND, INVALID, "not_found"),
            MethodNotAllowed          => (StatusCode::METHOD_NOT_ALLOWED, INVALID, "method_not_allowed"),
            PayloadTooLarge { .. }    => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, "payload_too_large"),
            Overloaded { .. }         => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "server_overloaded"),
            RateLimited { .. }        => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limit_exceeded"),
            DeadlineExceeded { .. }   => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "deadline_exceeded"),
            NotReady                  => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "model_not_ready"),
            ModelUnavailable(_)       => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "model_unavailable"),
            Engine(_)                 => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "engine_error"),
            InvalidDocument(_)        => (StatusCode::BAD_REQUEST, INVALID, "invalid_document"),
            DocumentNotFound(_)       => (StatusCode::NOT_FOUND, INVALID, "document_not_found"),
            IndexUnavailable(_)       => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "index_unavailable"),
            IndexWriteFailed(_)       => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "index_write_failed"),
            RetrievalUnavailable(_)   => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "retrieval_unavailable"),
            Embedder(_)               => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "embedder_unavailable"),
            RouterUnavailable(_)      => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "router_unavailable"),
            InvalidAdapter(_)         => (StatusCode::BAD_REQUEST, INVALID, "invalid_adapter"),
            AdapterNotFound(_)        => (StatusCode::NOT_FOUND, INVALID, "adapter_not_found"),
            GenerationConflict(_)     => (StatusCode::CONFLICT, INVALID, "generation_conflict"),
            AdapterLoadInProgress(_)  => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "adapter_load_in_progress"),
            AdaptersDisabled          => (StatusCode::NOT_FOUND, INVALID, "adapters_disabled"),
            Unauthorized(_)           => (StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key"),
            Forbidden { .. }          => (StatusCode::FORBIDDEN, "permission_error", "insufficient_scope"),
            TenantForbidden { .. }    => (StatusCode::FORBIDDEN, "permission_error", "tenant_forbidden"),
            GlobalAdminRequired { .. } => (StatusCode::FORBIDDEN, "permission_error", "global_admin_required"),
            UnsupportedMediaType(_)   => (StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID, "unsupported_media_type"),
            CrossSiteRequest(_)       => (StatusCode::FORBIDDEN, "permission_error", "cross_site_request"),
            Internal(_)               => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.spec().0
    }

    /// The JSON body, shared by plain responses and SSE error events.
    pub fn body(&self) -> ErrorBody {
        let (_, kind, code) = self.spec();
        let param = match self {
            ApiError::InvalidRequest { param, .. } => *param,
            ApiError::MaxTokensExceeded { .. } => Some("max_tokens"),
            ApiError::ContextLengthExceeded(_) => Some("messages"),
            ApiError::ModelNotFound(_) => Some("model"),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidRequest(message) => ApiError::InvalidRequest {
                message,
                param: None,
            },
            EngineError::ContextLengthExceeded(message) => ApiError::ContextLengthExceeded(message),
            EngineError::Unavailable(message) | EngineError::Load(message) => {
                ApiError::ModelUnavailable(message)
            }
            EngineError::Generation(message) => ApiError::Engine(message),
        }
    }
}

impl From<retrieval::RetrievalError> for ApiError {
    fn from(err: retrieval::RetrievalError) -> Self {
        use retrieval::RetrievalError as E;
        match err {
            E::InvalidDocument(message) => ApiError::InvalidDocument(message),
            E::DocumentNotFound { doc_id } => ApiError::DocumentNotFound(doc_id),
            E::Unavailable(message) => ApiError::RetrievalUnavailable(message),
            E::Embedder(message) => ApiError::Embedder(message),
            E::IndexLocked { .. } | E::IncompatibleIndex { .. } | E::QueryAdapter { .. } => {
                ApiError::IndexUnavailable(err.to_string())
            }
            // A write that failed part-way: the ingest rolled back.
            other => ApiError::IndexWriteFailed(other.to_string()),
        }
    }
}

impl From<adapters::RegistryError> for ApiError {
    fn from(err: adapters::RegistryError) -> Self {
        use adapters::RegistryError as E;
        let message = err.to_string();
        match err {
            E::Invalid(_) => ApiError::InvalidAdapter(message),
            E::NotFound(_) | E::UnknownGeneration { .. } => ApiError::AdapterNotFound(message),
            E::Conflict { .. } => ApiError::GenerationConflict(message),
            E::Busy => ApiError::AdapterLoadInProgress(message),
            E::Engine(_) => ApiError::Engine(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            // Expected while loading; readiness probes would flood the log.
            ApiError::NotReady => {}
            ApiError::ModelUnavailable(_) => tracing::warn!(error = %self, "request refused"),
            _ if self.status().is_server_error() => {
                tracing::error!(error = %self, "request failed")
            }
            _ => {}
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Overloaded {
            retry_after_secs, ..
        }
        | ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if let ApiError::AdapterLoadInProgress(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
        }
        response
    }
}

/// One error of every kind, for checks against the table (the OpenAPI document, the README).
/// The `match` has no wildcard, so a new variant does not compile until it is listed here.
#[cfg(test)]
pub(crate) fn one_of_each() -> Vec<ApiError> {
    use ApiError::*;
    let s = String::new;
    let all = vec![
        InvalidJson(s()),
        InvalidRequest {
            message: s(),
            param: None,
        },
        MaxTokensExceeded {
            requested: 0,
            cap: 0,
        },
        ContextLengthExceeded(s()),
        ModelNotFound(s()),
        PayloadTooLarge { limit: 0 },
        NotFound(s()),
        MethodNotAllowed,
        Overloaded {
            limit: 0,
            retry_after_secs: 0,
        },
        RateLimited {
            key: s(),
            retry_after_secs: 0,
        },
        DeadlineExceeded { secs: 0 },
        NotReady,
        ModelUnavailable(s()),
        Engine(s()),
        InvalidDocument(s()),
        DocumentNotFound(s()),
        IndexUnavailable(s()),
        IndexWriteFailed(s()),
        RetrievalUnavailable(s()),
        Embedder(s()),
        RouterUnavailable(s()),
        InvalidAdapter(s()),
        AdapterNotFound(s()),
        GenerationConflict(s()),
        AdapterLoadInProgress(s()),
        AdaptersDisabled,
        Unauthorized(""),
        Forbidden {
            key: s(),
            scope: "",
        },
        TenantForbidden {
            key: s(),
            tenant: s(),
        },
        GlobalAdminRequired {
            key: s(),
            tenant: s(),
        },
        UnsupportedMediaType(s()),
        CrossSiteRequest(s()),
        Internal(s()),
    ];
    for error in &all {
        match error {
            InvalidJson(_)
            | InvalidRequest { .. }
            | MaxTokensExceeded { .. }
            | ContextLengthExceeded(_)
            | ModelNotFound(_)
            | PayloadTooLarge { .. }
            | NotFound(_)
            | MethodNotAllowed
            | Overloaded { .. }
            | RateLimited { .. }
            | DeadlineExceeded { .. }
            | NotReady
            | ModelUnavailable(_)
            | Engine(_)
            | InvalidDocument(_)
            | DocumentNotFound(_)
            | IndexUnavailable(_)
            | IndexWriteFailed(_)
            | RetrievalUnavailable(_)
            | Embedder(_)
            | RouterUnavailable(_)
            | InvalidAdapter(_)
            | AdapterNotFound(_)
            | GenerationConflict(_)
            | AdapterLoadInProgress(_)
            | AdaptersDisabled
            | Unauthorized(_)
            | Forbidden { .. }
            | TenantForbidden { .. }
            | GlobalAdminRequired { .. }
            | UnsupportedMediaType(_)
            | CrossSiteRequest(_)
            | Internal(_) => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's error table lists every code with its status and type.
    #[test]
    fn the_readme_error_table_is_the_table() {
        let readme = include_str!("../../README.md");
        for error in one_of_each() {
            let (status, kind, code) = error.spec();
            let row = format!("| `{code}` | {} | `{kind}` |", status.as_u16());
            assert!(readme.contains(&row), "README lacks the row {row}");
        }
    }

    #[test]
    fn every_variant_has_its_own_code() {
        let all = one_of_each();
        let mut codes: Vec<_> = all.iter().map(|e| e.spec().2).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "two variants share a code");
    }

    #[test]
    fn overload_carries_retry_after_and_openai_shape() {
        let response = ApiError::Overloaded {
            limit: 2,
            retry_after_secs: 1,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn body_has_message_type_code() {
        let body = serde_json::to_value(ApiError::ModelNotFound("x".into()).body()).unwrap();
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        assert!(body["error"]["message"].as_str().unwrap().contains("`x`"));
    }
}
