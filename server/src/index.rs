//! Opens the document index (embedder, BM25, vector store, catalog) from the server's
//! configuration; shared by `serve`, `ingest` and `eval`.

use std::sync::Arc;
use std::time::Duration;

use retrieval::{
    ChunkerConfig, Embedder, EmbedderConfig, HybridRetriever, IndexConfig, IndexStore, Ingestor,
    SearchConfig, VectorBackend,
};

use crate::config::{Config, VectorStoreKind};
use crate::routing::{load_router, SharedRouter};
use retrieval::RetrievalError;

/// The opened index: its write side and its search side.
pub struct Retrieval {
    pub ingestor: Arc<Ingestor>,
    pub retriever: Arc<HybridRetriever>,
    /// The trained router, when routing is enabled and one is in `router_dir`.
    pub router: Option<SharedRouter>,
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
        fusion: config.fusion_method(),
        stage_timeout: Duration::from_millis(config.retrieval_timeout_ms),
    }
}

/// Loads the embedder and opens the index folder (recovering writes a crash cut short).
pub async fn open_retrieval(config: &Config) -> retrieval::Result<Retrieval> {
    let embedder_config = EmbedderConfig::from_models_dir(&config.models_dir);
    let embedder = tokio::task::spawn_blocking(move || Embedder::load(&embedder_config))
        .await
        .map_err(|e| retrieval::RetrievalError::Embedder(e.to_string()))??;
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
    let router = if config.router_enabled {
        match load_router(&config.router_dir, &embedder) {
            Ok(Some(router)) => {
                let served: Vec<&str> = config.routes.iter().map(|r| r.as_str()).collect();
                if let Some(label) = router
                    .meta
                    .routes
                    .iter()
                    .find(|r| !served.contains(&r.as_str()))
                {
                    return Err(RetrievalError::Router(format!(
                        "the router in {} predicts `{label}`, which is not in this server's routes {served:?}",
                        config.router_dir.display()
                    )));
                }
                Some(Arc::new(router))
            }
            Ok(None) => {
                tracing::warn!(
                    dir = %config.router_dir.display(),
                    "no trained router there: requests take `default_route` (train one with `switchyard router train`)"
                );
                None
            }
            Err(err) => return Err(RetrievalError::Router(err.to_string())),
        }
    } else {
        None
    };
    let store = Arc::new(IndexStore::open(&index_config, Arc::new(embedder)).await?);
    Ok(Retrieval {
        ingestor: Arc::new(Ingestor::new(store.clone())),
        retriever: Arc::new(HybridRetriever::new(store, search_config(config))),
        router,
    })
}
