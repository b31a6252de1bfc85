//! Switchyard's hybrid retrieval: chunking, BM25 (tantivy), and rank fusion.
//!
//! Data flows `chunk` (documents → chunks with exact source offsets) → `bm25` (persistent
//! tantivy index, tenant-filtered search) → `fusion` (RRF, weighted RRF, DBSF). The dense side
//! (fastembed + Qdrant), ingestion and citations land with the rest of issue 3.

pub mod bm25;
pub mod chunk;
mod error;
pub mod fusion;

pub use bm25::Bm25Index;
pub use chunk::{approx_tokens, chunk_document, Chunk, ChunkerConfig, DocFormat};
pub use error::{Result, RetrievalError};
pub use fusion::{fuse, FusionMethod, Scored};
