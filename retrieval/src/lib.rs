//! Switchyard's hybrid retrieval: chunking, BM25 (tantivy), and rank fusion.
//!
//! Data flows `chunk` (documents → chunks with exact source offsets) → `embed` (fastembed,
//! all-MiniLM-L6-v2) → `dense` (qdrant-edge) and `bm25` (tantivy), both persistent and
//! tenant-filtered → `fusion` (RRF, weighted RRF, DBSF). Ingestion, the Qdrant server backend
//! and citations land with the rest of issue 3.

pub mod bm25;
pub mod chunk;
pub mod dense;
pub mod embed;
mod error;
pub mod fusion;

pub use bm25::Bm25Index;
pub use chunk::{approx_tokens, chunk_document, Chunk, ChunkerConfig, DocFormat};
pub use dense::DenseIndex;
pub use embed::{Embedder, EmbedderConfig, EMBEDDING_DIMS};
pub use error::{Result, RetrievalError};
pub use fusion::{fuse, FusionMethod, Scored};
