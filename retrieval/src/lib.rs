//! Switchyard's hybrid retrieval: documents in, cited chunks out.
//!
//! Data flows `ingest` (validation, content hash) → `chunk` (documents → chunks with exact
//! source offsets) → `embed` (fastembed, all-MiniLM-L6-v2) → `vectors` (Qdrant: in-process
//! `dense`, or a server through `qdrant_server`) and `bm25` (tantivy), with `catalog` keeping
//! both consistent and `store` tying them to one folder → `hybrid` (both retrievers under
//! deadlines; a query's embedding goes through the trained `query_adapter` when there is one)
//! → `fusion` (RRF, weighted RRF, DBSF). `eval` scores the retrievers on a graded query set.

pub mod bm25;
pub mod catalog;
pub mod chunk;
pub mod dense;
pub mod embed;
mod error;
pub mod eval;
pub mod fusion;
pub mod hybrid;
pub mod ingest;
pub mod qdrant_server;
pub mod query_adapter;
pub mod store;
pub mod vectors;

pub use bm25::Bm25Index;
pub use chunk::{approx_tokens, chunk_document, document_title, Chunk, ChunkerConfig, DocFormat};
pub use dense::DenseIndex;
pub use embed::{Embedder, EmbedderConfig, EMBEDDING_DIMS, EMBEDDING_MODEL_ID};
pub use error::{Result, RetrievalError};
pub use fusion::{fuse, FusionMethod, Scored};
pub use hybrid::{Degradation, DegradedCause, Hit, HybridRetriever, SearchConfig, SearchResult};
pub use ingest::{DocumentInfo, IngestReport, IngestStatus, Ingestor, NewDocument};
pub use query_adapter::{AdapterTrainConfig, QueryAdapter};
pub use store::{ChunkRecord, DocumentCounts, IndexConfig, IndexStats, IndexStore};
pub use vectors::{VectorBackend, VectorStore};
