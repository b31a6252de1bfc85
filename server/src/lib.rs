//! Switchyard's HTTP server: the OpenAI-compatible API over the model layer.
//!
//! Data flows `app` (routes) → `extract` (JSON body) → `handlers` → `openai` (wire types and
//! checks) → `adapters::Backend` (the engine); failures on the way are `error::ApiError`.

pub mod app;
pub mod config;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod openai;
pub mod state;

pub use app::{load_engine, router, Server};
pub use config::{Config, ConfigArgs, LogFormat};
pub use error::{ApiError, Result};
