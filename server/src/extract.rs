//! A JSON body extractor whose rejections are OpenAI-shaped errors.
//!
//! axum's own `Json` answers bad bodies with plain text; clients of an OpenAI-compatible API
//! expect `{"error": {...}}` with 400 for bad JSON and 413 for a body over the limit.
//!
//! The body must be declared `application/json` (415 otherwise): a web page can POST
//! `text/plain` to any address, loopback included, without the browser asking the server
//! first (a CORS "simple" request), while `application/json` needs a preflight that this
//! server only answers for `cors_allowed_origins`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

pub struct OpenAiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: state.config().max_body_bytes,
                }
            } else {
                ApiError::InvalidJson(format!("could not read the request body: {rejection}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(OpenAiJson)
            .map_err(|err| ApiError::InvalidJson(format!("invalid JSON body: {err}")))
    }
}

/// `application/json` or a `+json` type, any parameters (`; charset=utf-8`) aside.
fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(if declared.is_empty() {
        "the body has no Content-Type: send `Content-Type: application/json`".to_string()
    } else {
        format!("the body is declared `{declared}`: send `Content-Type: application/json`")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_json_content_types_are_accepted() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(require_json_content_type(&with(Some(ok))).is_ok(), "{ok}");
        }
        for refused in [
            None,
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            let err = require_json_content_type(&with(refused)).unwrap_err();
            assert_eq!(
                err.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{refused:?}"
            );
        }
    }
}
