//! LoRA adapters on the llama.cpp engine, unmerged: each generation is a GGUF LoRA file
//! (`lora_gguf.rs`) loaded into the one served model and applied by the decode loop to the
//! sequences that name it, beside the base's own requests. A generation costs its factors'
//! memory, not a model copy.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::batcher::LoraHandle;
use super::LlamaCppBackend;
use crate::convert::{read_gguf_base, GgufBase};
use crate::lora::gguf::{write_lora_gguf, LORA_GGUF_FILE};
use crate::lora::LoraAdapter;
use crate::registry::{AdapterHost, BaseShapes};
use crate::{Backend, EngineError, EventStream, GenerationRequest, Result};

/// The engine adapters apply to, once loaded, with what the adapter files need of its GGUF.
#[derive(Clone)]
struct Attached {
    engine: Arc<LlamaCppBackend>,
    base: Arc<GgufBase>,
    shapes: Arc<BaseShapes>,
}

/// `None` while the engine loads; its failure otherwise.
type Slot = Option<std::result::Result<Attached, String>>;

/// The [`AdapterHost`] of the llama.cpp engine. It exists before the engine has loaded (the
/// server binds first): calls wait until [`attach`](Self::attach) or [`fail`](Self::fail).
pub struct LlamaAdapterHost {
    slot: watch::Sender<Slot>,
}

impl Default for LlamaAdapterHost {
    fn default() -> Self {
        Self::new()
    }
}

impl LlamaAdapterHost {
    pub fn new() -> Self {
        Self {
            slot: watch::Sender::new(None),
        }
    }

    /// The engine is loaded: adapters apply to it from now on.
    pub fn attach(&self, engine: Arc<LlamaCppBackend>) -> Result<()> {
        let base = read_gguf_base(engine.model_path())?;
        let shapes = Arc::new(base.shapes.clone());
        self.slot.send_replace(Some(Ok(Attached {
            engine,
            base: Arc::new(base),
            shapes,
        })));
        Ok(())
    }

    /// The engine failed to load: adapter calls fail with `reason`.
    pub fn fail(&self, reason: String) {
        self.slot.send_replace(Some(Err(reason)));
    }

    async fn attached(&self) -> Result<Attached> {
        let mut slot = self.slot.subscribe();
        let ready = slot
            .wait_for(Option::is_some)
            .await
            .map_err(|_| EngineError::Unavailable("the engine is gone".into()))?;
        match ready.as_ref().expect("waited for Some") {
            Ok(attached) => Ok(attached.clone()),
            Err(reason) => Err(EngineError::Unavailable(format!(
                "the model failed to load: {reason}"
            ))),
        }
    }

    fn attached_now(&self) -> Result<Attached> {
        match self.slot.borrow().as_ref() {
            Some(Ok(attached)) => Ok(attached.clone()),
            _ => Err(EngineError::Unavailable("the model is not loaded".into())),
        }
    }
}

#[async_trait::async_trait]
impl AdapterHost for LlamaAdapterHost {
    async fn shapes(&self) -> Result<Arc<BaseShapes>> {
        Ok(self.attached().await?.shapes)
    }

    fn prepare(&self, adapter: &LoraAdapter, dir: &Path) -> Result<()> {
        // `shapes` came first, so the engine is attached.
        let attached = self.attached_now()?;
        write_lora_gguf(adapter, &attached.base, &dir.join(LORA_GGUF_FILE))
    }

    async fn serve(&self, dir: &Path, name: &str) -> Result<Arc<dyn Backend>> {
        let attached = self.attached().await?;
        let lora = attached
            .engine
            .load_adapter(&dir.join(LORA_GGUF_FILE))
            .await?;
        Ok(Arc::new(AdapterBackend {
            name: name.to_string(),
            engine: attached.engine,
            lora,
        }))
    }
}

/// One adapter generation on the shared engine: requests decode with its LoRA applied.
struct AdapterBackend {
    name: String,
    engine: Arc<LlamaCppBackend>,
    lora: Arc<LoraHandle>,
}

#[async_trait::async_trait]
impl Backend for AdapterBackend {
    fn model_id(&self) -> &str {
        &self.name
    }

    async fn generate(&self, request: GenerationRequest) -> Result<EventStream> {
        self.engine.submit(request, Some(self.lora.clone())).await
    }
}
