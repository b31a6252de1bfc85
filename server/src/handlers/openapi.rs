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
        // The codes the document allows are exactly the error table's.
        let documented: std::collections::BTreeSet<&str> = doc["components"]["schemas"]["Error"]
            ["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let table: std::collections::BTreeSet<&str> = crate::error::one_of_each()
            .iter()
            .map(|e| e.spec().2)
            .collect();
        assert_eq!(
            documented, table,
            "the OpenAPI error codes and the error table differ"
        );
        // Each error's status is a response some operation documents with its code
        // (404 `not_found` and 405 are the router's own, for paths and methods not served).
        let text = |v: &serde_json::Value| v.to_string();
        for error in crate::error::one_of_each() {
            let (status, _, code) = error.spec();
            if matches!(code, "not_found" | "method_not_allowed") {
                continue;
            }
            let status = status.as_str().to_string();
            let described = doc["paths"].as_object().unwrap().values().any(|ops| {
                ops.as_object().unwrap().values().any(|op| {
                    let response = &op["responses"][&status];
                    let resolved = match response["$ref"].as_str() {
                        Some(r) => &doc["components"]["responses"][r.rsplit('/').next().unwrap()],
                        None => response,
                    };
                    text(&resolved["description"]).contains(&format!("`{code}`"))
                })
            });
            assert!(described, "no {status} response describes `{code}`");
        }
    }
}
