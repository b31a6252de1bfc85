//! Errors of the model layer.

/// Result alias for the model layer.
pub type Result<T> = std::result::Result<T, EngineError>;

/// What can go wrong between a request and its tokens.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model files could not be found or loaded.
    #[error("model load failed: {0}")]
    Load(String),
    /// The request is well-formed JSON but the engine refused it (e.g. prompt too long).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt does not fit in the model's context window.
    #[error("{0}")]
    ContextLengthExceeded(String),
    /// The engine failed while generating.
    #[error("generation failed: {0}")]
    Generation(String),
    /// The engine stopped (shutdown, or its worker died).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}
