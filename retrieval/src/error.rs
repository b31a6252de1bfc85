//! Errors of the retrieval layer.

/// Result alias for the retrieval layer.
pub type Result<T> = std::result::Result<T, RetrievalError>;

#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    #[error("BM25 index: {0}")]
    Bm25(#[from] tantivy::TantivyError),
    #[error("BM25 index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("embedder: {0}")]
    Embedder(String),
    #[error("vector index: {0}")]
    Dense(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("index at {path} is in use by another process (a running server?)")]
    IndexLocked { path: String },
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    #[error("document {doc_id} not found")]
    DocumentNotFound { doc_id: String },
    #[error("invalid query set: {0}")]
    InvalidQuerySet(String),
    #[error("no retriever answered: {0}")]
    Unavailable(String),
    #[error("catalog store: {0}")]
    Catalog(String),
    #[error("index at {path} has another layout ({reason}); re-ingest into a new folder")]
    IncompatibleIndex { path: String, reason: String },
    #[error("query adapter at {path}: {reason}")]
    QueryAdapter { path: String, reason: String },
}
