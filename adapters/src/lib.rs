//! Switchyard's model layer: the [`Backend`] trait that the HTTP server talks to, its two
//! engines (`llama/`: [`LlamaCppBackend`]; `mistral/`: `MistralRsBackend` with the
//! `mistralrs` feature) that run a local model with no hub access, and LoRA adapters:
//! conversion of the base (`convert`), validation and merging (`lora`), the GGUF LoRA writer
//! (`lora::gguf`), and the [`AdapterRegistry`] of generations with the [`AdapterHost`]s that
//! serve them (`registry/`).
//!
//! The server never sees engine types: requests come in as [`GenerationRequest`] and
//! results go out as a stream of [`GenerationEvent`]s, so the engine can be swapped or wrapped
//! (serialization, adapters, instances) without touching HTTP code.

// The interface the server talks to, engine-neutral.
mod backend;
mod error;
mod types;

// The two engines, and the output handling both share (stop strings, the end of a JSON value).
mod json_end;
mod llama;
#[cfg(feature = "mistralrs")]
mod mistral;
mod stop;

// LoRA adapters: conversion of the GGUF base, PEFT validation and merging, GGUF LoRA writing,
// and the registry of generations with the hosts that serve them.
pub mod convert;
pub mod lora;
mod registry;

/// Synthetic PEFT adapters for tests and the adapter benchmark; not part of the API (the
/// `fixtures` feature).
#[cfg(feature = "fixtures")]
pub mod fixtures;

pub use backend::{collect, Backend, EventStream};
pub use error::{EngineError, Result};
pub use llama::{LlamaAdapterHost, LlamaConfig, LlamaCppBackend, WeightFormat};
#[cfg(feature = "mistralrs")]
pub use mistral::{EngineConfig, MergedHost, MistralRsBackend};
pub use registry::{
    AdapterHost, AdapterInfo, AdapterRegistry, BaseShapes, GenerationInfo, RegistryConfig,
    RegistryError,
};
pub use types::{
    ChatMessage, FinishReason, GenerationEvent, GenerationOutput, GenerationRequest, Role,
    SamplingParams, Usage,
};
