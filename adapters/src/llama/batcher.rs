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
//!
//! LoRA adapters are loaded into the model here, on the thread that owns the context, and
//! applied per step: llama.cpp applies one adapter set to a whole batch, so the sequences are
//! grouped by their adapter (none is a group too) and the groups take turns of `TURN_STEPS`
//! steps each, so no group starves another. A switch makes llama.cpp reserve its compute
//! graph again (about one step's time here), hence turns of several steps rather than one.
//! An adapter is freed once the last handle on it (the registry's and each sequence's) is
//! gone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::mem::ManuallyDrop;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::sequence::{Output, Step};
use crate::{EngineError, GenerationEvent, Result, SamplingParams};

/// Tokens decoded in one step (llama.cpp's `n_batch`).
const BATCH_TOKENS: usize = 512;
/// Most prompt tokens prefilled in a step while other sequences are decoding.
const PREFILL_CHUNK: usize = 128;
/// Steps an adapter group decodes before the next group's turn.
const TURN_STEPS: usize = 4;

/// A tokenized request on its way to the loop.
pub struct Job {
    pub prompt: Vec<LlamaToken>,
    /// Positions the sequence may fill: prompt + `max_tokens`, capped by its window.
    pub span: usize,
    pub sampling: SamplingParams,
    /// GBNF grammar the output must follow (from a JSON schema).
    pub grammar: Option<String>,
    /// The LoRA adapter this sequence decodes with; none for the base.
    pub adapter: Option<Arc<LoraHandle>>,
    pub events: UnboundedSender<Result<GenerationEvent>>,
    /// Told when the job gets a sequence (dropped unsent if it never does).
    pub admitted: oneshot::Sender<()>,
}

/// What the loop is asked to do.
pub enum Command {
    Generate(Job),
    /// Load the GGUF LoRA at `path` into the model; the reply is its handle, which frees it
    /// through `commands` when dropped (also when the caller stopped waiting for it).
    LoadAdapter {
        path: PathBuf,
        commands: std_mpsc::Sender<Command>,
        reply: oneshot::Sender<Result<LoraHandle>>,
    },
    /// The last handle on an adapter is gone: free it.
    FreeAdapter(u64),
}

/// A loaded LoRA adapter. Dropping the last clone frees it in the loop, after every
/// sequence decoding with it has ended (each holds a clone).
pub struct LoraHandle {
    id: u64,
    commands: std_mpsc::Sender<Command>,
}

impl Drop for LoraHandle {
    fn drop(&mut self) {
        // A stopped loop has nothing left to free.
        let _ = self.commands.send(Command::FreeAdapter(self.id));
    }
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
    adapter: Option<Arc<LoraHandle>>,
}

impl Sequence {
    /// The adapter group it decodes in.
    fn group(&self) -> Option<u64> {
        self.adapter.as_ref().map(|a| a.id)
    }
}

/// Starts the loop's thread; returns once its context exists (or failed to).
pub fn start(
    model: Arc<LlamaModel>,
    backend: &'static LlamaBackend,
    settings: BatchSettings,
) -> Result<std_mpsc::Sender<Command>> {
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
    /// Free sequence ids, lowest first (see `step` for why).
    free_ids: BinaryHeap<Reverse<i32>>,
    /// A second handle on the model for `lora_adapter_init`, the one call the bindings take
    /// `&mut` for (it adds the adapter to the model's set). Never dropped: dropping it would
    /// free the model. Only this thread loads and frees adapters, and only this thread's
    /// context reads the model's adapter set, so the mutation races nothing.
    model_for_adapters: ManuallyDrop<LlamaModel>,
    adapters: HashMap<u64, LlamaLoraAdapter>,
    next_adapter: u64,
    /// The adapter the context applies now.
    applied: Option<u64>,
    /// Steps left in the applied group's turn.
    turn_left: usize,
}

impl<'m> Batcher<'m> {
    fn new(model: &'m LlamaModel, context: LlamaContext<'m>, settings: BatchSettings) -> Self {
        Self {
            model,
            context,
            batch: LlamaBatch::new(BATCH_TOKENS, 1),
            waiting: VecDeque::new(),
            running: Vec::new(),
            free_ids: (0..settings.max_sequences as i32).map(Reverse).collect(),
            // SAFETY: `LlamaModel` is `#[repr(transparent)]` over its `llama_model` pointer;
            // the copy shares that pointer and, in `ManuallyDrop`, never frees it. The model
            // outlives the loop (the loop borrows it).
            model_for_adapters: ManuallyDrop::new(unsafe { std::ptr::read(model) }),
            adapters: HashMap::new(),
            next_adapter: 0,
            applied: None,
            turn_left: 0,
        }
    }

    /// Steps until every sender is gone and no sequence is left.
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match commands.recv() {
                    Ok(command) => self.handle(command),
                    Err(_) => return,
                }
            }
            while let Ok(command) = commands.try_recv() {
                self.handle(command);
            }
            self.drop_abandoned();
            self.admit();
            if !self.running.is_empty() {
                self.step();
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Generate(job) => self.waiting.push_back(job),
            Command::LoadAdapter {
                path,
                commands,
                reply,
            } => {
                let loaded = self
                    .model_for_adapters
                    .lora_adapter_init(&path)
                    .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())));
                let outcome = loaded.map(|adapter| {
                    let id = self.next_adapter;
                    self.next_adapter += 1;
                    self.adapters.insert(id, adapter);
                    LoraHandle { id, commands }
                });
                // A caller that gave up drops the handle, unsent or unread: it frees the
                // adapter at the next step.
                let _ = reply.send(outcome);
            }
            Command::FreeAdapter(id) => self.free_adapter(id),
        }
    }

    fn free_adapter(&mut self, id: u64) {
        if self.applied == Some(id) {
            if let Some(adapter) = self.adapters.get_mut(&id) {
                let _ = self.context.lora_adapter_remove(adapter);
            }
            self.applied = None;
        }
        if let Some(adapter) = self.adapters.remove(&id) {
            // SAFETY: `LlamaLoraAdapter` is `#[repr(transparent)]` over its non-null
            // `llama_adapter_lora` pointer and has no `Drop`; the context no longer applies
            // it and no sequence uses it (each holds a handle).
            unsafe {
                let raw: NonNull<llama_cpp_sys_2::llama_adapter_lora> =
                    std::mem::transmute(adapter);
                llama_cpp_sys_2::llama_adapter_lora_free(raw.as_ptr());
            }
            tracing::debug!(adapter = id, "LoRA adapter freed");
        }
    }

    /// The group that decodes this step: the applied one while its turn lasts and it has
    /// running sequences, else the next group with running sequences (round robin).
    fn next_group(&mut self) -> Option<u64> {
        let mut groups: Vec<Option<u64>> = self.running.iter().map(Sequence::group).collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.len() == 1 {
            return groups[0];
        }
        if self.turn_left > 0 && groups.contains(&self.applied) {
            self.turn_left -= 1;
            return self.applied;
        }
        self.turn_left = TURN_STEPS - 1;
        groups
            .iter()
            .copied()
            .find(|g| *g > self.applied)
            .unwrap_or(groups[0])
    }

    /// Makes the context apply `group`'s adapter (or none).
    fn apply(&mut self, group: Option<u64>) -> std::result::Result<(), String> {
        if self.applied == group {
            return Ok(());
        }
        let outcome = match (group, self.applied) {
            (Some(id), _) => {
                let adapter = self.adapters.get_mut(&id).ok_or("adapter not loaded")?;
                self.context
                    .lora_adapter_set(adapter, 1.0)
                    .map_err(|e| e.to_string())
            }
            (None, Some(applied)) => {
                let adapter = self
                    .adapters
                    .get_mut(&applied)
                    .ok_or("adapter not loaded")?;
                self.context
                    .lora_adapter_remove(adapter)
                    .map_err(|e| e.to_string())
            }
            (None, None) => Ok(()),
        };
        outcome.map(|()| self.applied = group)
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
            let Reverse(id) = self.free_ids.pop().expect("checked above");
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
                adapter: job.adapter,
            });
            // The caller stopped waiting: its stream is closed, and the next step frees it.
            let _ = job.admitted.send(());
        }
    }

    /// One batch of one adapter group: a token per decoding sequence, then prompt chunks in
    /// the room left.
    fn step(&mut self) {
        let group = self.next_group();
        if let Err(e) = self.apply(group) {
            for i in (0..self.running.len()).rev() {
                if self.running[i].group() == group {
                    self.running[i].output.fail(EngineError::Generation(format!(
                        "applying the adapter: {e}"
                    )));
                    self.release(i);
                }
            }
            return;
        }
        // Sequences of any group waiting for their next token bound the prefill too.
        let streams_running = self.running.iter().any(|s| s.next.is_some());
        // With a cache per sequence, llama.cpp splits a batch into one compute per run of
        // consecutive sequence ids, in batch order (`split_equal`, sequential): ids handed
        // out lowest first and a batch in id order make that one compute, not one per
        // sequence.
        self.running.sort_unstable_by_key(|s| s.id);
        self.batch.clear();
        let mut decoding = 0;
        for seq in &mut self.running {
            seq.logits_at = None;
            if seq.group() != group {
                continue;
            }
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
        if streams_running {
            room = room.min(PREFILL_CHUNK);
        }
        for seq in &mut self.running {
            let remaining = seq.prompt.len() - seq.prefilled;
            if remaining == 0 || room == 0 || seq.group() != group {
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
                if self.running[i].group() != group {
                    continue;
                }
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
        self.free_ids.push(Reverse(seq.id));
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
