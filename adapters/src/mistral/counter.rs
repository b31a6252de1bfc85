//! Token counts that do not depend on mistral.rs's last streamed chunk.
//!
//! mistral.rs 0.8.1 sends the final chunk (finish reason and usage) only if the last token's
//! text is complete UTF-8; when a sequence ends on a partial multi-byte character (a byte
//! token, common with sampled output), the stream just closes. This pass-through logits
//! processor sees every decode step, so the backend can still say how many tokens were
//! generated, and from how long a prompt, and finish the response properly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mistralrs::{CustomLogitsProcessor, Tensor};

#[derive(Debug, Default)]
struct Counts {
    steps: AtomicUsize,
    prompt_tokens: AtomicUsize,
}

/// Counts decode steps; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct TokenCounter(Arc<Counts>);

impl TokenCounter {
    /// Tokens sampled so far.
    pub fn completion_tokens(&self) -> usize {
        self.0.steps.load(Ordering::Relaxed)
    }

    /// Prompt length, known after the first step.
    pub fn prompt_tokens(&self) -> usize {
        self.0.prompt_tokens.load(Ordering::Relaxed)
    }
}

impl CustomLogitsProcessor for TokenCounter {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        // `context` is the prompt plus the tokens generated before this step.
        if self.0.steps.fetch_add(1, Ordering::Relaxed) == 0 {
            self.0.prompt_tokens.store(context.len(), Ordering::Relaxed);
        }
        Ok(logits.clone())
    }
}
