//! The small trait between HTTP and inference.

use std::pin::Pin;

use futures::{Stream, StreamExt};

use crate::{EngineError, GenerationEvent, GenerationOutput, GenerationRequest, Result};

/// A stream of generation events. Dropping it cancels the generation.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<GenerationEvent>> + Send>>;

/// A text-generation engine.
///
/// There is one generation method, streaming; non-streamed responses are [`collect`]ed from it,
/// so both HTTP modes run exactly the same engine path.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The id clients use in `model`.
    fn model_id(&self) -> &str;

    /// Starts a generation. Events arrive in order and end with [`GenerationEvent::Done`]
    /// or an error.
    async fn generate(&self, request: GenerationRequest) -> Result<EventStream>;
}

/// Runs a stream to its end and gathers the text.
pub async fn collect(mut stream: EventStream) -> Result<GenerationOutput> {
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        match event? {
            GenerationEvent::Delta(delta) => text.push_str(&delta),
            GenerationEvent::Done {
                finish_reason,
                usage,
            } => {
                return Ok(GenerationOutput {
                    text,
                    finish_reason,
                    usage,
                })
            }
        }
    }
    Err(EngineError::Generation(
        "the engine ended the stream without finishing".into(),
    ))
}
