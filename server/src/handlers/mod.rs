//! HTTP handlers, one file per endpoint family.

pub mod chat;
pub mod documents;
pub mod embeddings;
pub mod health;
pub mod lora;
pub mod metrics;
pub mod models;
pub mod openapi;
