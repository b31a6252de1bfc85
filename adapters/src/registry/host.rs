//! Where an adapter generation is served: the registry validates adapters and keeps their
//! generations; an [`AdapterHost`] turns a validated adapter into files in the generation's
//! folder (`prepare`) and those files into a [`Backend`] that answers as the adapter (`serve`).
//!
//! Two hosts: the llama.cpp engine's (`llama::LlamaAdapterHost`) writes a GGUF LoRA and
//! applies it at runtime to the one served model (a few MB per generation); with the
//! `mistralrs` feature, `mistral::MergedHost` merges the adapter into a copy of a safetensors
//! base and loads it as its own mistral.rs engine (a full model per generation).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::backend::Backend;
use crate::error::Result;
use crate::lora::LoraAdapter;

/// Weight shapes of a base, by HF tensor name (`[out, in]`).
pub type BaseShapes = HashMap<String, Vec<usize>>;

/// Serves adapter generations for one base model.
#[async_trait::async_trait]
pub trait AdapterHost: Send + Sync + 'static {
    /// The base's weight shapes, to validate adapters against; waits while the base loads.
    async fn shapes(&self) -> Result<Arc<BaseShapes>>;

    /// Writes what `serve` needs for `adapter` into the empty folder `dir` (blocking work:
    /// the registry runs it off the async runtime).
    fn prepare(&self, adapter: &LoraAdapter, dir: &Path) -> Result<()>;

    /// The generation in `dir` (written by `prepare`, now or before a restart) as a backend
    /// named `name`. Dropping every clone of it frees what it holds.
    async fn serve(&self, dir: &Path, name: &str) -> Result<Arc<dyn Backend>>;
}
