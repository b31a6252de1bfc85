//! The mistral.rs engine's [`AdapterHost`]: each generation merged into a safetensors copy
//! of the base and served by its own engine instance (mistral.rs 0.8.1 cannot apply an
//! adapter at runtime).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{EngineConfig, MistralRsBackend};
use crate::backend::Backend;
use crate::error::Result;
use crate::lora::{base_shapes, merge_into, LoraAdapter};
use crate::registry::{AdapterHost, BaseShapes};

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
