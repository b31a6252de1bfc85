//! Switchyard's HTTP server: the OpenAI-compatible API over the model layer.
//!
//! Data flows `app` (routes; `cross_site` refuses writes other sites send) → `extract` (JSON
//! body) → `handlers` → `openai` (wire types and checks) → `pipeline` (route, ground, generate,
//! verify: the combined pattern) → `adapters::Backend` (the engine); `index` opens the
//! retrieval crate's index and `routing` the trained router that the pipeline uses. Failures
//! on the way are `error::ApiError`, and `metrics` counts what happened.

pub mod app;
pub mod auth;
pub mod config;
pub mod cross_site;
pub mod error;
pub mod evaluation;
pub mod extract;
pub mod format_eval;
pub mod handlers;
pub mod index;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod openai;
pub mod pipeline;
pub mod rate_limit;
pub mod routing;
pub mod state;

pub use app::{load_engine, router, Server};
pub use config::{Config, ConfigArgs, EngineKind, LogFormat};
pub use error::{ApiError, Result};
