//! Switchyard's hybrid retrieval: ingestion, dense (Qdrant) and BM25 (tantivy) search, fusion.
//!
//! Empty until retrieval lands (issue 3); the crate exists so the dependency map
//! (server → retrieval) is in place from the start.
