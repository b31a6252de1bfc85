//! Errors of the router layer.

/// Result alias for the router layer.
pub type Result<T> = std::result::Result<T, RouterError>;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("training data: {0}")]
    Data(String),
    #[error("router file {path}: {reason}")]
    Artifact { path: String, reason: String },
    #[error(
        "the router was trained on embedding model {trained} but the server runs {running}; \
         retrain it with `switchyard router train`"
    )]
    EmbeddingMismatch { trained: String, running: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
