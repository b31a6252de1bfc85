//! [`Backend`] on llama.cpp (the `llama-cpp-2` crate): one decode loop that batches every
//! running sequence into each step (continuous batching).
//!
//! A request is rendered with the GGUF's own chat template (`template.rs`), tokenized, and
//! handed to the loop (`batcher.rs`), which owns the llama.cpp context on its own thread. It
//! joins at the next step, its prompt prefilled in chunks beside the running sequences'
//! decode tokens, and each sequence samples with its own sampler, stop strings and
//! `max_tokens` (`sequence.rs`). Dropping the event stream (client gone) frees the sequence's
//! KV cache at the next step. LoRA adapters are applied at runtime to this one model
//! (`lora.rs`): a request served by an adapter joins its group in the same loop.

mod batcher;
mod lora;
mod sequence;
mod template;
mod utf8;
mod weights;

use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{Backend, EngineError, EventStream, GenerationRequest, Result};
use batcher::{BatchSettings, Command, Job, LoraHandle};
use template::ChatTemplate;

pub use lora::LlamaAdapterHost;
pub use weights::WeightFormat;

/// What to load and how much to batch.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// A GGUF file (tokenizer and chat template are read from its metadata).
    pub model_path: PathBuf,
    /// The id clients use in `model`.
    pub model_id: String,
    /// Sequences decoded together in one step; more wait for a free one.
    pub max_sequences: usize,
    /// Each sequence's window in tokens (prompt + answer), its own KV cache; capped by the
    /// model's trained context.
    pub context_tokens: usize,
    /// CPU threads for decoding (0: all cores).
    pub threads: usize,
    /// The format the weights are served in (re-encoded at load unless `AsShipped`).
    pub weights: WeightFormat,
}

impl LlamaConfig {
    /// The defaults for `model_path`: 8 sequences of 2,048 tokens each, Q8_0 weights.
    pub fn new(model_path: PathBuf, model_id: &str) -> Self {
        Self {
            model_path,
            model_id: model_id.to_string(),
            max_sequences: 8,
            context_tokens: 2048,
            threads: 0,
            weights: WeightFormat::Q8_0,
        }
    }
}

/// llama.cpp behind the [`Backend`] trait.
pub struct LlamaCppBackend {
    model_id: String,
    model_path: PathBuf,
    model: Arc<LlamaModel>,
    template: ChatTemplate,
    /// The BOS token's text when the vocabulary asks for a BOS, else `None`.
    bos_text: Option<Vec<u8>>,
    /// Longest sequence (prompt + answer) one request may have.
    max_sequence_tokens: usize,
    commands: std_mpsc::Sender<Command>,
}

/// llama.cpp's process-wide state, initialised once (a second `init` is an error).
fn llama_backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp's own log lines go to tracing, where the server's log filter applies.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load(format!("llama.cpp backend: {e}")))
}

impl LlamaCppBackend {
    /// Loads the model and starts its decode loop.
    pub async fn load(config: LlamaConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::load_blocking(config))
            .await
            .map_err(|e| EngineError::Load(format!("model loader: {e}")))?
    }

    /// One engine at `model_path` as a shared [`Backend`] named `model_id`.
    pub async fn load_shared(model_path: PathBuf, model_id: &str) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(
            Self::load(LlamaConfig::new(model_path, model_id)).await?,
        ))
    }

    fn load_blocking(config: LlamaConfig) -> Result<Self> {
        let backend = llama_backend()?;
        let path = &config.model_path;
        if !path.is_file() {
            return Err(EngineError::Load(format!(
                "{} is not a GGUF file",
                path.display()
            )));
        }
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let started = std::time::Instant::now();
        let reencoded = weights::reencode(path, config.weights, threads)?;
        let served = reencoded
            .as_ref()
            .map_or(path.as_path(), |r| r.path.as_path());
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers());
        let model = LlamaModel::load_from_file(backend, served, &params)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        // Loaded: the re-encoded file is not needed any more.
        drop(reencoded);
        let template = load_template(&model)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        let vocab = model.vocab();
        let bos_text = vocab
            .should_add_bos()
            .then(|| special_text(&model, vocab.bos()));
        let model = Arc::new(model);
        let settings = BatchSettings {
            max_sequences: config.max_sequences.max(1),
            context_tokens: config
                .context_tokens
                .clamp(64, model.n_ctx_train().max(64) as usize),
            threads,
        };
        let max_sequence_tokens = settings.context_tokens;
        let commands = batcher::start(model.clone(), backend, settings)?;
        tracing::info!(
            model = %path.display(),
            sequences = settings.max_sequences,
            context_tokens = settings.context_tokens,
            threads,
            weights = config.weights.as_str(),
            load_secs = started.elapsed().as_secs_f64(),
            cpu = %system_info(),
            "llama.cpp engine ready"
        );
        Ok(Self {
            model_id: config.model_id,
            model_path: config.model_path.clone(),
            model,
            template,
            bos_text,
            max_sequence_tokens,
            commands,
        })
    }

    /// The GGUF file this engine serves.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Loads the GGUF LoRA file at `path` into the served model.
    async fn load_adapter(&self, path: &Path) -> Result<Arc<LoraHandle>> {
        let (reply, loaded) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::LoadAdapter {
                path: path.to_path_buf(),
                commands: self.commands.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        Ok(Arc::new(loaded.await.map_err(|_| stopped())??))
    }

    /// Renders, tokenizes and queues `request`, decoded with `adapter` when one is given;
    /// returns once the request has a sequence (it waits in order while all are taken), so
    /// the caller's wait for the engine ends when decoding can begin.
    async fn submit(
        &self,
        request: GenerationRequest,
        adapter: Option<Arc<LoraHandle>>,
    ) -> Result<EventStream> {
        let prompt = self.template.render(&request.messages)?;
        let vocab = self.model.vocab();
        // The template writes the special tokens it wants as text; a BOS is added only where
        // the vocabulary asks for one and the template did not already write it.
        let add_bos = self
            .bos_text
            .as_ref()
            .is_some_and(|bos| !prompt.as_bytes().starts_with(bos));
        let tokens = vocab.tokenize(prompt.as_bytes(), add_bos, true);
        if tokens.len() >= self.max_sequence_tokens {
            return Err(EngineError::ContextLengthExceeded(format!(
                "the prompt is {} tokens; this model serves at most {} per sequence",
                tokens.len(),
                self.max_sequence_tokens - 1
            )));
        }
        let grammar = match &request.json_schema {
            Some(schema) => Some(compact_json_grammar(
                &llama_cpp_2::json_schema_to_grammar(&schema.to_string())
                    .map_err(|e| EngineError::InvalidRequest(format!("json schema: {e}")))?,
            )),
            None => None,
        };
        let (events, rx) = mpsc::unbounded_channel();
        let (admitted, on_admitted) = tokio::sync::oneshot::channel();
        let span = (tokens.len() + request.sampling.max_tokens).min(self.max_sequence_tokens);
        self.commands
            .send(Command::Generate(Job {
                prompt: tokens,
                span,
                sampling: request.sampling,
                grammar,
                adapter,
                events,
                admitted,
            }))
            .map_err(|_| stopped())?;
        // Not admitted means refused: the refusal is in the stream.
        let _ = on_admitted.await;
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}

/// The grammar with llama.cpp's optional whitespace between JSON tokens removed: output is
/// compact JSON. With whitespace allowed (up to two newlines and 20 spaces at every token
/// boundary) a small model spends its tokens on layout, and with the Q8_0 weights
/// SmolLM2-135M ran a tool call to `max_tokens` without closing it.
fn compact_json_grammar(grammar: &str) -> String {
    grammar
        .lines()
        .map(|line| {
            if line.starts_with("space ::=") {
                "space ::= \"\""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn stopped() -> EngineError {
    EngineError::Unavailable("the decode loop has stopped".into())
}

/// The instruction sets and backends ggml was built with (`AVX2 = 1 | ...`): a build that
/// reached no CPU features (SSE2 only) shows here first.
fn system_info() -> String {
    // SAFETY: llama.cpp returns a pointer to a static, NUL-terminated string.
    let info = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
    info.to_string_lossy().trim().to_string()
}

/// Every layer on the GPU when built with `cuda`; none otherwise.
fn gpu_layers() -> u32 {
    if cfg!(feature = "cuda") {
        u32::MAX
    } else {
        0
    }
}

/// A special token's text; empty for a token the vocabulary does not have (llama.cpp's -1),
/// which `token_to_piece` must never see.
fn special_text(model: &LlamaModel, token: llama_cpp_2::token::LlamaToken) -> Vec<u8> {
    if token.0 < 0 {
        return Vec::new();
    }
    model.vocab().token_to_piece(token, true, None)
}

fn load_template(model: &LlamaModel) -> Result<ChatTemplate> {
    let source = model
        .meta_val_str("tokenizer.chat_template")
        .map_err(|e| EngineError::Load(format!("no chat template in the GGUF metadata: {e}")))?;
    let vocab = model.vocab();
    let text = |token| String::from_utf8_lossy(&special_text(model, token)).into_owned();
    ChatTemplate::new(&source, &text(vocab.bos()), &text(vocab.eos()))
}

#[async_trait::async_trait]
impl Backend for LlamaCppBackend {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    async fn generate(&self, request: GenerationRequest) -> Result<EventStream> {
        self.submit(request, None).await
    }
}
