//! Opens the document index (embedder, BM25, vector store, catalog) from the server's
//! configuration; shared by `serve`, `ingest` and `eval`. The router is not part of it
//! (`routing.rs`): it shares the embedder, not the index's fate.

use std::sync::Arc;
use std::time::Duration;

use retrieval::{
    ChunkerConfig, Embedder, EmbedderConfig, HybridRetriever, IndexConfig, IndexStore, Ingestor,
    QueryAdapter, SearchConfig, VectorBackend,
};

use crate::config::{Config, VectorStoreKind};
use retrieval::RetrievalError;

/// The opened index: its write side and its search side.
pub struct Retrieval {
    pub ingestor: Arc<Ingestor>,
    pub retriever: Arc<HybridRetriever>,
}

impl Retrieval {
    pub fn store(&self) -> &Arc<IndexStore> {
        self.retriever.store()
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        self.store().embedder()
    }
}

/// The search settings of a configuration.
pub fn search_config(config: &Config) -> SearchConfig {
    SearchConfig {
        candidates: config.retrieval_candidates,
        top_k: config.rag_top_k,
        max_chunks_per_document: config.rag_max_chunks_per_document,
        fusion: config.fusion_method(),
        stage_timeout: Duration::from_millis(config.retrieval_timeout_ms),
    }
}

/// Loads the embedding model (`models_dir`), off the async threads.
pub async fn load_embedder(config: &Config) -> retrieval::Result<Embedder> {
    let embedder_config = EmbedderConfig::from_models_dir(&config.models_dir);
    tokio::task::spawn_blocking(move || Embedder::load(&embedder_config))
        .await
        .map_err(|e| RetrievalError::Embedder(e.to_string()))?
}

/// Opens the index folder with this embedder (recovering writes a crash cut short).
pub async fn open_index(config: &Config, embedder: Arc<Embedder>) -> retrieval::Result<Retrieval> {
    let index_config = IndexConfig {
        dir: config.index_dir.clone(),
        vectors: match config.vector_store {
            VectorStoreKind::Embedded => VectorBackend::Embedded,
            VectorStoreKind::Qdrant => VectorBackend::Qdrant {
                url: config.qdrant_url.clone(),
                collection: config.qdrant_collection.clone(),
            },
        },
        chunker: ChunkerConfig::default(),
    };
    let store = Arc::new(IndexStore::open(&index_config, embedder).await?);
    let mut retriever = HybridRetriever::new(store.clone(), search_config(config));
    if let Some(adapter) = load_query_adapter(config, store.embedder())? {
        retriever = retriever.with_query_adapter(Arc::new(adapter));
    }
    Ok(Retrieval {
        ingestor: Arc::new(Ingestor::new(store)),
        retriever: Arc::new(retriever),
    })
}

/// The configured query adapter: none when off or when `query_adapter_dir` holds none; an
/// error when the one there was trained for another embedding model (or is unreadable).
pub fn load_query_adapter(
    config: &Config,
    embedder: &Embedder,
) -> retrieval::Result<Option<QueryAdapter>> {
    let dir = &config.query_adapter_dir;
    if !config.query_adapter_enabled {
        return Ok(None);
    }
    if !dir.join(retrieval::query_adapter::META_FILE).exists() {
        tracing::info!(query_adapter_dir = %dir.display(), "no query adapter: dense search embeds queries as they are");
        return Ok(None);
    }
    let adapter = QueryAdapter::load(dir, embedder.model_sha256(), retrieval::EMBEDDING_DIMS)?;
    tracing::info!(query_adapter_dir = %dir.display(), loss_after = adapter.meta().loss_after, "query adapter loaded");
    Ok(Some(adapter))
}

/// Loads the embedder and opens the index folder (the CLI commands' way in).
pub async fn open_retrieval(config: &Config) -> retrieval::Result<Retrieval> {
    let embedder = Arc::new(load_embedder(config).await?);
    open_index(config, embedder).await
}
