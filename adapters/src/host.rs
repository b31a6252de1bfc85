//! Where an adapter generation is served: the registry validates adapters and keeps their
//! generations; an [`AdapterHost`] turns a validated adapter into files in the generation's
//! folder (`prepare`) and those files into a [`Backend`] that answers as the adapter (`serve`).
//!
//! Two hosts: [`MergedHost`] merges the adapter into a copy of a safetensors base and loads
//! it as its own mistral.rs engine (a full model per generation); the llama.cpp engine's host
//! (`llama::LlamaAdapterHost`) writes a GGUF LoRA and applies it at runtime to the one served
//! model (a few MB per generation).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::Backend;
use crate::error::Result;
use crate::lora::{base_shapes, merge_into, LoraAdapter};
use crate::mistral::{EngineConfig, MistralRsBackend};

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

/// Merges each generation into a safetensors copy of the base and serves it with its own
/// mistral.rs engine.
pub struct MergedHost {
    base_dir: PathBuf,
    shapes: Arc<BaseShapes>,
}

impl MergedHost {
    /// A host over the safetensors base in `base_dir` (`switchyard convert`'s output).
    pub fn open(base_dir: &Path) -> Result<Self> {
        Ok(Self {
            base_dir: base_dir.to_path_buf(),
            shapes: Arc::new(base_shapes(base_dir)?),
        })
    }
}

#[async_trait::async_trait]
impl AdapterHost for MergedHost {
    async fn shapes(&self) -> Result<Arc<BaseShapes>> {
        Ok(self.shapes.clone())
    }

    fn prepare(&self, adapter: &LoraAdapter, dir: &Path) -> Result<()> {
        merge_into(&self.base_dir, adapter, dir)
    }

    async fn serve(&self, dir: &Path, name: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(
            MistralRsBackend::load(EngineConfig {
                model_path: dir.to_path_buf(),
                model_id: name.to_string(),
                instances: 1,
            })
            .await?,
        ))
    }
}
