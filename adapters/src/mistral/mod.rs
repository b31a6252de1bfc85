//! [`Backend`] on mistral.rs: a local GGUF model, loaded with no hub access, served by a pool
//! of engine instances that each decode one sequence at a time.
//!
//! Why one sequence per instance: mistral.rs 0.8.1's CPU attention kernel for single-token
//! decode steps (`flash_attn_cpu_single_q`) indexes its scratch buffers by head only, not by
//! batch item, so when two sequences decode in the same batch each gets the attention output
//! of the last one: answers cross over between concurrent requests. `with_max_num_seqs(1)`
//! alone does not prevent it (the scheduler still admits same-length prompts together), so
//! each instance is leased to one request at a time. Parallelism comes from `instances`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use mistralrs::{
    GgufModelBuilder, Model, ModelDType, RequestBuilder, Response, StopTokens, TextMessageRole,
    TextModelBuilder, TokenSource,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;

mod counter;
mod merged;
mod seeded;

pub use merged::MergedHost;

use crate::json_end::JsonEnd;
use crate::stop::StopFilter;
use crate::{
    Backend, EngineError, EventStream, FinishReason, GenerationEvent, GenerationRequest, Result,
    Role, Usage,
};
use counter::TokenCounter;
use seeded::SeededSampler;

/// What to load and how many copies.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A GGUF file (tokenizer and chat template are read from its metadata).
    pub model_path: PathBuf,
    /// The id clients use in `model`.
    pub model_id: String,
    /// Independent engine instances; each runs one generation at a time.
    pub instances: usize,
}

/// Instances not currently leased, and a permit count equal to their number.
struct Pool {
    idle: Mutex<Vec<Arc<Model>>>,
    available: Arc<Semaphore>,
}

/// Exclusive use of one instance for one generation; returns it to the pool when dropped.
struct Lease {
    model: Option<Arc<Model>>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(model) = self.model.take() {
            self.pool.idle.lock().push(model);
        }
        // The permit is released after this, so a waiter always finds an idle instance.
    }
}

impl Pool {
    async fn lease(self: &Arc<Self>) -> Result<Lease> {
        let permit = self
            .available
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EngineError::Unavailable("engine pool closed".into()))?;
        let model = self.idle.lock().pop();
        Ok(Lease {
            model: Some(model.expect("a permit guarantees an idle instance")),
            pool: self.clone(),
            _permit: permit,
        })
    }
}

/// mistral.rs behind the [`Backend`] trait.
pub struct MistralRsBackend {
    model_id: String,
    pool: Arc<Pool>,
}

impl MistralRsBackend {
    /// One instance of the model at `model_path` as a shared [`Backend`] named `model_id`
    /// (benchmarks and evaluations that compare engines side by side).
    pub async fn load_shared(
        model_path: std::path::PathBuf,
        model_id: &str,
    ) -> Result<Arc<dyn Backend>> {
        let engine = Self::load(EngineConfig {
            model_path,
            model_id: model_id.to_string(),
            instances: 1,
        })
        .await?;
        Ok(Arc::new(engine))
    }

    /// Loads `instances` copies of the model: a GGUF file, or a Hugging Face-layout folder
    /// (safetensors + config.json + tokenizer.json, e.g. `convert::convert_gguf`'s output).
    /// Only local files are read: the model path exists, so mistral.rs resolves every file
    /// locally, and no token source is consulted.
    pub async fn load(config: EngineConfig) -> Result<Self> {
        let path = config
            .model_path
            .canonicalize()
            .map_err(|e| EngineError::Load(format!("{}: {e}", config.model_path.display())))?;
        let mut models = Vec::with_capacity(config.instances.max(1));
        for _ in 0..config.instances.max(1) {
            let model = if path.is_dir() {
                load_safetensors(&path).await?
            } else {
                load_gguf(&path).await?
            };
            models.push(Arc::new(model));
        }
        let count = models.len();
        Ok(Self {
            model_id: config.model_id,
            pool: Arc::new(Pool {
                idle: Mutex::new(models),
                available: Arc::new(Semaphore::new(count)),
            }),
        })
    }
}

/// Builds a model with the settings every instance shares: no token source (nothing is
/// fetched), one sequence at a time (see the module doc), no prefix cache, and the CPU unless
/// built with `cuda`. A macro because mistral.rs's GGUF and safetensors builders share no
/// trait.
macro_rules! build_instance {
    ($builder:expr, $path:expr) => {{
        let builder = $builder
            .with_token_source(TokenSource::None)
            .with_max_num_seqs(1)
            .with_prefix_cache_n(None);
        #[cfg(not(feature = "cuda"))]
        let builder = builder.with_force_cpu();
        builder
            .build()
            .await
            .map_err(|e| EngineError::Load(format!("{}: {e:#}", $path.display())))
    }};
}

async fn load_gguf(path: &Path) -> Result<Model> {
    let (dir, file) = split_model_path(path)?;
    build_instance!(GgufModelBuilder::new(dir, vec![file]), path)
}

async fn load_safetensors(dir: &Path) -> Result<Model> {
    if !dir.join("config.json").is_file() {
        return Err(EngineError::Load(format!(
            "{} has no config.json (a model folder needs safetensors, config.json, tokenizer.json)",
            dir.display()
        )));
    }
    build_instance!(
        TextModelBuilder::new(dir.display().to_string()).with_dtype(ModelDType::F32),
        dir
    )
}

fn split_model_path(path: &Path) -> Result<(String, String)> {
    let not_a_file = || EngineError::Load(format!("{} is not a GGUF file", path.display()));
    if !path.is_file() {
        return Err(not_a_file());
    }
    let dir = path.parent().ok_or_else(not_a_file)?;
    let file = path.file_name().ok_or_else(not_a_file)?;
    Ok((
        dir.display().to_string(),
        file.to_string_lossy().into_owned(),
    ))
}

fn build_request(request: &GenerationRequest, counter: &TokenCounter) -> RequestBuilder {
    let mut builder = RequestBuilder::new().add_logits_processor(Arc::new(counter.clone()));
    for message in &request.messages {
        let role = match message.role {
            Role::System => TextMessageRole::System,
            Role::User => TextMessageRole::User,
            Role::Assistant => TextMessageRole::Assistant,
            Role::Tool => TextMessageRole::Tool,
        };
        builder = builder.add_message(role, &message.content);
    }
    let sampling = &request.sampling;
    // `neutral`, not the builder's default, which pins top_k = 1 (always greedy).
    let mut params = mistralrs::SamplingParams::neutral();
    params.temperature = Some(sampling.temperature);
    params.top_p = sampling.top_p;
    params.max_len = Some(sampling.max_tokens);
    if !sampling.stop.is_empty() {
        params.stop_toks = Some(StopTokens::Seqs(sampling.stop.clone()));
    }
    if let (Some(seed), true) = (sampling.seed, sampling.temperature > 0.0) {
        builder = builder.add_logits_processor(Arc::new(SeededSampler::new(
            seed,
            sampling.temperature,
            sampling.top_p,
        )));
    }
    if let Some(schema) = &request.json_schema {
        builder = builder.set_constraint(mistralrs::Constraint::JsonSchema(schema.clone()));
    }
    builder.set_sampling(params)
}

fn usage_of(usage: Option<&mistralrs::Usage>) -> Usage {
    usage
        .map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        })
        .unwrap_or_default()
}

/// mistral.rs reports an over-long prompt only as text; give it its own error so clients get
/// OpenAI's `context_length_exceeded`.
fn validation_error(message: String) -> EngineError {
    if message.contains("Prompt sequence length is greater than") {
        EngineError::ContextLengthExceeded(message)
    } else {
        EngineError::InvalidRequest(message)
    }
}

/// Drives one generation on a leased instance, forwarding events until the client goes away.
async fn run_generation(
    lease: Lease,
    builder: RequestBuilder,
    counter: TokenCounter,
    max_tokens: usize,
    stops: Vec<String>,
    json: bool,
    events: mpsc::UnboundedSender<Result<GenerationEvent>>,
) {
    let model = lease.model.clone().expect("a lease holds a model");
    let mut json_end = json.then(JsonEnd::default);
    let mut stream = match model.stream_chat_request(builder).await {
        Ok(stream) => stream,
        Err(err) => {
            let _ = events.send(Err(EngineError::Generation(err.to_string())));
            return;
        }
    };
    let mut filter = StopFilter::new(stops);
    // Leaving this loop drops `stream`, whose closed receiver makes the engine cancel the
    // sequence at its next token; then the lease returns the instance.
    while let Some(response) = stream.next().await {
        let chunk = match response {
            Response::Chunk(chunk) => chunk,
            Response::ValidationError(err) => {
                let _ = events.send(Err(validation_error(err.to_string())));
                return;
            }
            Response::InternalError(err) => {
                let _ = events.send(Err(EngineError::Generation(err.to_string())));
                return;
            }
            Response::ModelError(message, _) => {
                let _ = events.send(Err(EngineError::Generation(message)));
                return;
            }
            _ => continue,
        };
        let Some(choice) = chunk.choices.first() else {
            continue;
        };
        if let Some(text) = &choice.delta.content {
            let mut released = filter.push(text);
            let json_done = match json_end.as_mut().and_then(|end| end.push(&released)) {
                Some(end) => {
                    released.truncate(end);
                    true
                }
                None => false,
            };
            if !released.is_empty() && events.send(Ok(GenerationEvent::Delta(released))).is_err() {
                return;
            }
            if json_done {
                // The constrained value is complete: stop here (dropping the stream cancels
                // the sequence) rather than decode to max_tokens.
                let usage = Usage {
                    prompt_tokens: counter.prompt_tokens(),
                    completion_tokens: counter.completion_tokens(),
                };
                let _ = events.send(Ok(GenerationEvent::Done {
                    finish_reason: FinishReason::Stop,
                    usage,
                }));
                return;
            }
        }
        if let Some(reason) = &choice.finish_reason {
            let engine_reason = match reason.as_str() {
                "stop" => FinishReason::Stop,
                "length" => FinishReason::Length,
                _ if filter.stopped() => FinishReason::Stop,
                other => {
                    let _ = events.send(Err(EngineError::Generation(format!(
                        "generation ended with `{other}`"
                    ))));
                    return;
                }
            };
            send_done(
                &mut filter,
                &events,
                engine_reason,
                usage_of(chunk.usage.as_ref()),
            );
            return;
        }
    }
    // The engine ended the sequence without its final chunk (see `counter.rs`): finish from
    // our own counts. Only `max_tokens` or an end-of-sequence token can end it here.
    if counter.completion_tokens() == 0 {
        let _ = events.send(Err(EngineError::Generation(
            "the engine closed the stream before generating".into(),
        )));
        return;
    }
    let engine_reason = if counter.completion_tokens() >= max_tokens {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    let usage = Usage {
        prompt_tokens: counter.prompt_tokens(),
        completion_tokens: counter.completion_tokens(),
    };
    send_done(&mut filter, &events, engine_reason, usage);
}

/// Releases the text the stop filter still holds and ends the stream; a stop string the
/// filter found overrides the engine's reason.
fn send_done(
    filter: &mut StopFilter,
    events: &mpsc::UnboundedSender<Result<GenerationEvent>>,
    engine_reason: FinishReason,
    usage: Usage,
) {
    let rest = filter.finish();
    if !rest.is_empty() && events.send(Ok(GenerationEvent::Delta(rest))).is_err() {
        return;
    }
    let finish_reason = if filter.stopped() {
        FinishReason::Stop
    } else {
        engine_reason
    };
    let _ = events.send(Ok(GenerationEvent::Done {
        finish_reason,
        usage,
    }));
}

#[async_trait::async_trait]
impl Backend for MistralRsBackend {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    async fn generate(&self, request: GenerationRequest) -> Result<EventStream> {
        let lease = self.pool.lease().await?;
        let counter = TokenCounter::default();
        let builder = build_request(&request, &counter);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_generation(
            lease,
            builder,
            counter,
            request.sampling.max_tokens,
            request.sampling.stop,
            request.json_schema.is_some(),
            tx,
        ));
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}
