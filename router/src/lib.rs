//! Switchyard's intent router: a trained classifier that sends each query to a route
//! (`simple`, `rag`, `tool` by default).
//!
//! Data flows `dataset` (labelled queries, stratified split) → the caller embeds the queries
//! (the same MiniLM model as retrieval; this crate takes vectors, so it depends on no model)
//! → `lexical` (hashed word and trigram features put beside the embedding) → `classifier`
//! (multinomial logistic regression trained here, per-route thresholds,
//! abstention) → `artifact` (safetensors weights + JSON metadata naming the embedding model)
//! → `evaluate` (accuracy, per-route precision/recall/F1, confusion matrix), with `baseline`
//! (nearest neighbours over the training utterances, semantic-router's method) measured on
//! the same split.

pub mod artifact;
pub mod baseline;
pub mod classifier;
pub mod dataset;
mod error;
pub mod evaluate;
pub mod lexical;

pub use artifact::{EmbeddingModelRef, ExtraData, RouterMeta, TrainingInfo};
pub use baseline::NearestNeighbours;
pub use classifier::{Decision, IntentClassifier, TrainConfig};
pub use dataset::{load_examples, stratified_split, Example};
pub use error::{Result, RouterError};
pub use evaluate::{evaluate, Evaluation};
pub use lexical::{lexical_features, router_input};
