//! The route stage: pinned by the caller, implied by a tool result or `tool_choice`, chosen by
//! the trained router (its fallback route when it abstains or is too slow), else the
//! configured default (also when the router failed to load: `decided_by:
//! "router_unavailable"`, counted as a fallback); then checked against what the request and this server can serve.

use std::time::Duration;

use crate::config::{Config, Route};
use crate::error::{ApiError, Result};
use crate::openai::RoutingInfo;
use crate::pipeline::sources::search_query;
use crate::pipeline::tools::{ToolMode, ToolSet};
use crate::pipeline::PipelineRequest;
use crate::routing::classify;
use crate::state::AppState;

/// The route taken and how it was chosen.
#[derive(Debug, Clone)]
pub struct Routed {
    pub route: Route,
    pub info: RoutingInfo,
}

/// A decision before it is checked: route, confidence, who decided, what the router predicted.
struct Decision {
    route: Route,
    confidence: f32,
    decided_by: &'static str,
    predicted: Option<String>,
}

impl Decision {
    fn by(route: Route, decided_by: &'static str) -> Self {
        Self {
            route,
            confidence: 1.0,
            decided_by,
            predicted: None,
        }
    }
}

/// Picks the route. A `tool` route without usable tools becomes `simple`, and the answer says
/// why; a route this server does not serve is never taken.
pub async fn decide(state: &AppState, request: &PipelineRequest) -> Result<Routed> {
    let config = state.config();
    let messages = &request.generation.messages;
    // A router that failed to load (see `/ready`) leaves routing to the default route.
    let (router, router_failed) = match state.router() {
        Ok(router) => (router, false),
        Err(_) => (None, true),
    };
    let default_route = default_route(config);
    let decision = if let Some(route) = request.route {
        if !config.routes.contains(&route) {
            return Err(ApiError::invalid(
                format!("route `{}` is not served here", route.as_str()),
                "route",
            ));
        }
        Decision::by(route, "client")
    } else if request.follows_tool_result {
        Decision::by(Route::Simple, "tool_result")
    } else if matches!(request.tools.mode, ToolMode::Required | ToolMode::Named(_)) {
        Decision::by(Route::Tool, "tool_choice")
    } else if let (Some((embedder, router)), Some(query)) = (router, search_query(messages)) {
        let fallback = config.router_fallback_route;
        let query = query.to_string();
        let classified = tokio::task::spawn_blocking(move || {
            classify(&embedder, &router, &query, fallback.as_str())
        });
        // Past its deadline the fallback route answers; the classification still finishes
        // (one short embedding, ahead of any bulk one), so nothing piles up.
        let budget = Duration::from_millis(config.router_timeout_ms);
        match tokio::time::timeout(budget, classified).await {
            Err(_) => {
                state
                    .metrics()
                    .route_fallbacks_total
                    .with_label_values(&["router_timeout"])
                    .inc();
                Decision {
                    confidence: 0.0,
                    ..Decision::by(fallback, "router_timeout")
                }
            }
            Ok(joined) => {
                let (decision, took) = joined.map_err(|e| ApiError::Embedder(e.to_string()))??;
                let metrics = state.metrics();
                metrics
                    .router_classification_seconds
                    .with_label_values::<&str>(&[])
                    .observe(took.as_secs_f64());
                metrics
                    .router_confidence
                    .with_label_values(&[decision.predicted.as_str()])
                    .observe(decision.confidence as f64);
                if decision.abstained {
                    metrics
                        .router_abstentions_total
                        .with_label_values(&[decision.predicted.as_str()])
                        .inc();
                }
                Decision {
                    route: Route::from_label(&decision.route).unwrap_or(fallback),
                    confidence: decision.confidence,
                    decided_by: if decision.abstained {
                        "router_abstained"
                    } else {
                        "router"
                    },
                    predicted: Some(decision.predicted),
                }
            }
        }
    } else if router_failed {
        state
            .metrics()
            .route_fallbacks_total
            .with_label_values(&["router_unavailable"])
            .inc();
        Decision::by(default_route, "router_unavailable")
    } else {
        Decision::by(default_route, "default")
    };
    checked(state, &request.tools, decision)
}

/// `default_route`, or `simple` where retrieval is off.
fn default_route(config: &Config) -> Route {
    if config.retrieval_enabled {
        config.default_route
    } else {
        Route::Simple
    }
}

/// A decided route, checked against what the request and this server can serve.
fn checked(state: &AppState, tools: &ToolSet, decision: Decision) -> Result<Routed> {
    let config = state.config();
    let Decision {
        mut route,
        confidence,
        decided_by,
        predicted,
    } = decision;
    let mut fallback_reason = None;
    if route == Route::Tool && tools.mode == ToolMode::Off {
        let (reason, why) = if tools.tools.is_empty() {
            ("no_tools", "the request has no tools")
        } else {
            ("tool_choice_none", "tool_choice is none")
        };
        state
            .metrics()
            .route_fallbacks_total
            .with_label_values(&[reason])
            .inc();
        fallback_reason = Some(format!("the route was tool but {why}; answered on simple"));
        route = Route::Simple;
    }
    // Without retrieval the router's `rag` cannot be grounded: `simple` answers, and says so. A
    // client that pins `rag` gets the index's own error.
    if route == Route::Rag && !config.retrieval_enabled && decided_by != "client" {
        state
            .metrics()
            .route_fallbacks_total
            .with_label_values(&["retrieval_disabled"])
            .inc();
        fallback_reason =
            Some("the route was rag but retrieval is off here; answered on simple".to_string());
        route = Route::Simple;
    }
    // A route this server does not serve is never taken: forced by tool_choice it is the
    // client's error; decided any other way, the default route answers, and says so.
    if !config.routes.contains(&route) {
        if decided_by == "tool_choice" {
            return Err(ApiError::invalid(
                format!(
                    "tool_choice asks for a tool call, but the `tool` route is not served here (routes: {})",
                    config.routes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                ),
                "tool_choice",
            ));
        }
        state
            .metrics()
            .route_fallbacks_total
            .with_label_values(&["route_not_served"])
            .inc();
        let default = default_route(config);
        fallback_reason = Some(format!(
            "the route was {} but it is not served here; answered on {}",
            route.as_str(),
            default.as_str()
        ));
        route = default;
    }
    Ok(Routed {
        route,
        info: RoutingInfo {
            route: route.as_str().to_string(),
            confidence,
            decided_by: decided_by.to_string(),
            predicted,
            fallback_reason,
        },
    })
}
