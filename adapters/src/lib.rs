//! Switchyard's model layer: the [`Backend`] trait that the HTTP server talks to, its two
//! engines (`LlamaCppBackend`; `MistralRsBackend` with the `mistralrs` feature) that run a
//! local model with no hub access, and LoRA adapters: validation, the [`AdapterRegistry`] of generations and the
//! [`AdapterHost`]s that serve them.
//!
//! The server never sees engine types: requests come in as [`GenerationRequest`] and
//! results go out as a stream of [`GenerationEvent`]s, so the engine can be swapped or wrapped
//! (serialization, adapters, instances) without touching HTTP code.

pub mod active_set;
mod backend;
pub mod convert;
#[cfg(feature = "mistralrs")]
mod counter;
mod error;
mod host;
mod json_end;
mod llama;
pub mod lora;
pub mod lora_gguf;
#[cfg(feature = "mistralrs")]
mod merged;
#[cfg(feature = "mistralrs")]
mod mistral;
mod registry;
#[cfg(feature = "mistralrs")]
mod seeded;
mod stop;
pub mod synthetic;
mod types;

pub use backend::{collect, Backend, EventStream};
pub use error::{EngineError, Result};
pub use host::{AdapterHost, BaseShapes};
pub use llama::{LlamaAdapterHost, LlamaConfig, LlamaCppBackend, WeightFormat};
#[cfg(feature = "mistralrs")]
pub use merged::MergedHost;
#[cfg(feature = "mistralrs")]
pub use mistral::{EngineConfig, MistralRsBackend};
pub use registry::{AdapterInfo, AdapterRegistry, GenerationInfo, RegistryConfig, RegistryError};
pub use types::{
    ChatMessage, FinishReason, GenerationEvent, GenerationOutput, GenerationRequest, Role,
    SamplingParams, Usage,
};
