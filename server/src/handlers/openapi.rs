//! `GET /openapi.json`: the API's OpenAPI 3 document (`server/openapi.json`, written by hand
//! from the handlers and `error.rs`'s table). CI runs schemathesis against the live server with
//! it (`tests/contract.rs`), so a response that drifts from it fails the build.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_with_every_error_code() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/health",
            "/ready",
            "/metrics",
            "/openapi.json",
            "/v1/models",
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/documents",
            "/v1/load_lora_adapter",
            "/v1/unload_lora_adapter",
            "/v1/lora_adapters",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        // Every code of the error table is documented.
        for code in [
            "invalid_json",
            "rate_limit_exceeded",
            "deadline_exceeded",
            "server_overloaded",
            "invalid_api_key",
            "insufficient_scope",
            "tenant_forbidden",
        ] {
            assert!(OPENAPI_JSON.contains(code), "{code} missing");
        }
    }
}
