//! Browser requests from other sites: refused on every call that changes something or costs
//! compute, and CORS answered only for the origins an operator allows.
//!
//! A page the user visits can make the browser send requests to `127.0.0.1:8080`. Programs
//! (OpenAI clients, curl) send no `Origin` and no `Sec-Fetch-Site`; browsers send both on a
//! cross-origin POST. So a write (any method but GET, HEAD, OPTIONS) that carries
//! `Sec-Fetch-Site: cross-site`, or an `Origin` not in `cors_allowed_origins`, is answered
//! 403 `cross_site_request` before it reaches a handler. With auth on, a page has no key to
//! send anyway; with the local demo's auth off, this is what keeps a page from adding
//! documents or loading adapters. (JSON endpoints also refuse bodies not declared
//! `application/json`: `extract.rs`.)

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::state::AppState;

/// Middleware: refuses writes a browser sent from a site not allowed.
pub async fn refuse_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return Ok(next.run(request).await);
    }
    let headers = request.headers();
    let allowed = &state.config().cors_allowed_origins;
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !allowed.iter().any(|a| a == origin) {
            state.metrics().reject("cross_site");
            return Err(ApiError::CrossSiteRequest(format!(
                "a browser sent this request from `{origin}`, which is not in cors_allowed_origins"
            )));
        }
    } else if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        state.metrics().reject("cross_site");
        return Err(ApiError::CrossSiteRequest(
            "a browser sent this request from another site (Sec-Fetch-Site: cross-site)".into(),
        ));
    }
    Ok(next.run(request).await)
}

/// CORS for `cors_allowed_origins`; `None` (no CORS headers, preflights refused) when empty.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("x-api-key"),
            ]),
    )
}
