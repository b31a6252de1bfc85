//! The decode loop: one thread owns the llama.cpp context and, at every step, decodes one
//! token for each running sequence plus a chunk of the prompts still being prefilled, in a
//! single batch. A new request joins at the next step; a finished or abandoned one leaves
//! and its KV cells are freed at once.
//!
//! Each sequence has a KV cache of its own (llama.cpp's per-sequence streams, not one unified
//! cache): a sequence's attention then runs over its own cells only, as when it runs alone,
//! so greedy answers do not change with what else is in the batch, and a running sequence
//! never finds its cache taken by another. Requests wait in arrival order for a free
//! sequence. While sequences are decoding, a prompt is prefilled at most `PREFILL_CHUNK`
//! tokens per step, so a long prompt delays the running streams by one chunk's compute per
//! step rather than by its whole prefill.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use super::sequence::{Output, Step};
use crate::{EngineError, GenerationEvent, Result, SamplingParams};

/// Tokens decoded in one step (llama.cpp's `n_batch`).
const BATCH_TOKENS: usize = 512;
/// Most prompt tokens prefilled in a step while other sequences are decoding.
const PREFILL_CHUNK: usize = 128;

/// A tokenized request on its way to the loop.
pub struct Job {
    pub prompt: Vec<LlamaToken>,
    /// Positions the sequence may fill: prompt + `max_tokens`, capped by its window.
    pub span: usize,
    pub sampling: SamplingParams,
    /// GBNF grammar the output must follow (from a JSON schema).
    pub grammar: Option<String>,
    pub events: UnboundedSender<Result<GenerationEvent>>,
}

/// How the loop's context is sized.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub max_sequences: usize,
    /// Each sequence's window (its own KV cache), in tokens.
    pub context_tokens: usize,
    pub threads: usize,
}

/// A sequence in the context.
struct Sequence {
    /// llama.cpp sequence id, also its slot.
    id: i32,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Position of the next token to decode.
    pos: i32,
    span: usize,
    /// Sampled and not yet decoded.
    next: Option<LlamaToken>,
    /// Index of this sequence's logits in the batch just decoded.
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    output: Output,
}

/// Starts the loop's thread; returns once its context exists (or failed to).
pub fn start(
    model: Arc<LlamaModel>,
    backend: &'static LlamaBackend,
    settings: BatchSettings,
) -> Result<std_mpsc::Sender<Job>> {
    let (jobs_tx, jobs_rx) = std_mpsc::channel();
    let (ready_tx, ready_rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("llama-decode".into())
        .spawn(move || {
            let params = context_params(settings);
            match model.new_context(backend, params) {
                Ok(context) => {
                    let _ = ready_tx.send(Ok(()));
                    Batcher::new(&model, context, settings).run(jobs_rx);
                }
                Err(e) => {
                    let _ =
                        ready_tx.send(Err(EngineError::Load(format!("llama.cpp context: {e}"))));
                }
            }
        })
        .map_err(|e| EngineError::Load(format!("decode thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| EngineError::Load("the decode thread ended while starting".into()))??;
    Ok(jobs_tx)
}

fn context_params(settings: BatchSettings) -> LlamaContextParams {
    let threads = i32::try_from(settings.threads).unwrap_or(i32::MAX);
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(
            (settings.context_tokens * settings.max_sequences) as u32,
        ))
        .with_n_batch(BATCH_TOKENS as u32)
        .with_n_ubatch(BATCH_TOKENS as u32)
        .with_n_seq_max(settings.max_sequences as u32)
        // A cache per sequence (see the module doc).
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
}

struct Batcher<'m> {
    model: &'m LlamaModel,
    context: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    waiting: VecDeque<Job>,
    running: Vec<Sequence>,
    free_ids: Vec<i32>,
}

impl<'m> Batcher<'m> {
    fn new(model: &'m LlamaModel, context: LlamaContext<'m>, settings: BatchSettings) -> Self {
        Self {
            model,
            context,
            batch: LlamaBatch::new(BATCH_TOKENS, 1),
            waiting: VecDeque::new(),
            running: Vec::new(),
            free_ids: (0..settings.max_sequences as i32).rev().collect(),
        }
    }

    /// Steps until every sender is gone and no sequence is left.
    fn run(mut self, jobs: std_mpsc::Receiver<Job>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = jobs.try_recv() {
                self.waiting.push_back(job);
            }
            self.drop_abandoned();
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    /// Sequences whose client went away leave now, freeing their cells.
    fn drop_abandoned(&mut self) {
        self.waiting.retain(|job| !job.events.is_closed());
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].output.is_closed() {
                self.release(i);
            } else {
                i += 1;
            }
        }
    }

    /// Moves waiting jobs in, in order, while a sequence is free.
    fn admit(&mut self) {
        while !self.free_ids.is_empty() {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let sampler = match build_sampler(self.model, &job.sampling, job.grammar.as_deref()) {
                Ok(sampler) => sampler,
                Err(e) => {
                    let _ = job.events.send(Err(e));
                    continue;
                }
            };
            let id = self.free_ids.pop().expect("checked above");
            let output = Output::new(
                job.events,
                job.sampling.stop,
                job.grammar.is_some(),
                job.prompt.len(),
                job.sampling.max_tokens,
            );
            self.running.push(Sequence {
                id,
                prompt: job.prompt,
                prefilled: 0,
                pos: 0,
                span: job.span,
                next: None,
                logits_at: None,
                sampler,
                output,
            });
        }
    }

    /// One batch: a token per decoding sequence, then prompt chunks in the room left.
    fn step(&mut self) {
        self.batch.clear();
        let mut decoding = 0;
        for seq in &mut self.running {
            seq.logits_at = None;
            if let Some(token) = seq.next.take() {
                seq.logits_at = Some(self.batch.n_tokens());
                self.batch
                    .add(token, seq.pos, &[seq.id], true)
                    .expect("a decode token per sequence fits the batch");
                seq.pos += 1;
                decoding += 1;
            }
        }
        let mut room = BATCH_TOKENS - decoding;
        if decoding > 0 {
            room = room.min(PREFILL_CHUNK);
        }
        for seq in &mut self.running {
            let remaining = seq.prompt.len() - seq.prefilled;
            if remaining == 0 || room == 0 {
                continue;
            }
            let take = remaining.min(room);
            for k in 0..take {
                let last = seq.prefilled + k + 1 == seq.prompt.len();
                if last {
                    seq.logits_at = Some(self.batch.n_tokens());
                }
                self.batch
                    .add(seq.prompt[seq.prefilled + k], seq.pos, &[seq.id], last)
                    .expect("room is within the batch");
                seq.pos += 1;
            }
            seq.prefilled += take;
            room -= take;
        }
        if let Err(e) = self.context.decode(&mut self.batch) {
            // Nothing in the batch can be trusted now: fail its sequences, keep serving.
            for i in (0..self.running.len()).rev() {
                self.running[i]
                    .output
                    .fail(EngineError::Generation(format!("llama.cpp decode: {e}")));
                self.release(i);
            }
            return;
        }
        self.sample();
    }

    /// Samples a token for every sequence that has logits in this batch.
    fn sample(&mut self) {
        let vocab = self.model.vocab();
        let mut i = 0;
        while i < self.running.len() {
            let seq = &mut self.running[i];
            let Some(at) = seq.logits_at else {
                i += 1;
                continue;
            };
            let token = seq.sampler.sample(&self.context, at);
            let bytes = (!vocab.is_eog(token)).then(|| vocab.token_to_piece(token, false, None));
            // Room for the next token within its span (and so its window).
            let room = (seq.pos as usize) < seq.span;
            match seq.output.token(bytes.as_deref(), room) {
                Step::Continue => {
                    seq.next = Some(token);
                    i += 1;
                }
                Step::Finished => self.release(i),
            }
        }
    }

    /// Removes running sequence `i` and frees its cells and id.
    fn release(&mut self, i: usize) {
        let seq = self.running.swap_remove(i);
        let _ = self
            .context
            .clear_kv_cache_seq(Some(seq.id as u32), None, None);
        self.free_ids.push(seq.id);
    }
}

/// Greedy at temperature 0; otherwise top-p, temperature and a seeded draw. A grammar, when
/// given, masks every token it does not allow before the others see the logits.
fn build_sampler(
    model: &LlamaModel,
    sampling: &SamplingParams,
    grammar: Option<&str>,
) -> Result<LlamaSampler> {
    let mut chain = Vec::new();
    if let Some(grammar) = grammar {
        chain.push(
            LlamaSampler::grammar(model, grammar, "root")
                .map_err(|e| EngineError::InvalidRequest(format!("grammar: {e}")))?,
        );
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if let Some(top_p) = sampling.top_p {
            chain.push(LlamaSampler::top_p(top_p as f32, 1));
        }
        chain.push(LlamaSampler::temp(sampling.temperature as f32));
        // llama.cpp draws a random seed for LLAMA_DEFAULT_SEED (u32::MAX).
        let seed = sampling
            .seed
            .map_or(u32::MAX, |s| (s % u64::from(u32::MAX)) as u32);
        chain.push(LlamaSampler::dist(seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}
