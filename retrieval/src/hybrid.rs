//! Hybrid search: BM25 and dense retrieval run side by side, each under a deadline, then
//! fused. When one side fails or times out, the other's results are served and the result
//! says which side was lost and why; only when both fail is it an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chunk::document_of;
use crate::error::{Result, RetrievalError};
use crate::fusion::{fuse, FusionMethod, Scored};
use crate::query_adapter::QueryAdapter;
use crate::store::{ChunkRecord, IndexStore};

/// How to search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Chunks each retriever returns before fusion.
    pub candidates: usize,
    /// Chunks returned after fusion.
    pub top_k: usize,
    /// At most this many of the `top_k` chunks come from one document (0: no limit), so that
    /// one long page does not fill every source the model is given.
    pub max_chunks_per_document: usize,
    pub fusion: FusionMethod,
    /// Deadline of each stage (embedding, BM25, vector search).
    pub stage_timeout: Duration,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            candidates: 50,
            top_k: 4,
            max_chunks_per_document: 0,
            fusion: FusionMethod::default(),
            stage_timeout: Duration::from_secs(2),
        }
    }
}

/// The first `top_k` chunks of a fused ranking, taking at most `per_document` from one
/// document (0: no limit); a chunk passed over for its document's cap leaves room for the
/// next document's.
pub fn select_sources(fused: Vec<Scored>, top_k: usize, per_document: usize) -> Vec<Scored> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    fused
        .into_iter()
        .filter(|hit| {
            if per_document == 0 {
                return true;
            }
            let count = taken.entry(document_of(&hit.id).to_string()).or_default();
            *count += 1;
            *count <= per_document
        })
        .take(top_k)
        .collect()
}

/// Why a retriever's results are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradedCause {
    EmbedderError,
    EmbedderTimeout,
    VectorError,
    VectorTimeout,
    Bm25Error,
    Bm25Timeout,
}

impl DegradedCause {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DegradedCause::EmbedderError => "embedder_error",
            DegradedCause::EmbedderTimeout => "embedder_timeout",
            DegradedCause::VectorError => "vector_error",
            DegradedCause::VectorTimeout => "vector_timeout",
            DegradedCause::Bm25Error => "bm25_error",
            DegradedCause::Bm25Timeout => "bm25_timeout",
        }
    }
}

/// One lost retriever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Degradation {
    pub cause: DegradedCause,
    pub message: String,
}

/// Time spent per stage; `None` when the stage did not run to the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimings {
    pub embed: Option<Duration>,
    pub bm25: Option<Duration>,
    pub vector: Option<Duration>,
    pub fusion: Duration,
}

/// Both retrievers' ranked chunk lists for one query (before fusion).
#[derive(Debug, Clone)]
pub struct RankedLists {
    pub bm25: Option<Vec<Scored>>,
    pub dense: Option<Vec<Scored>>,
    pub degraded: Vec<Degradation>,
    pub timings: StageTimings,
}

/// A fused hit with its chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub score: f32,
    #[serde(flatten)]
    pub chunk: ChunkRecord,
}

/// The answer to a search.
#[derive(Debug, Clone)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    pub degraded: Vec<Degradation>,
    pub timings: StageTimings,
}

/// Searches an [`IndexStore`] with BM25 and dense retrieval and fuses the two.
pub struct HybridRetriever {
    store: Arc<IndexStore>,
    config: SearchConfig,
    query_adapter: Option<Arc<QueryAdapter>>,
}

async fn timed<T>(
    deadline: Duration,
    work: impl std::future::Future<Output = Result<T>>,
) -> (std::result::Result<T, (bool, String)>, Duration) {
    let started = Instant::now();
    let out = match tokio::time::timeout(deadline, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err((false, err.to_string())),
        Err(_) => Err((
            true,
            format!("no answer within {} ms", deadline.as_millis()),
        )),
    };
    (out, started.elapsed())
}

impl HybridRetriever {
    pub fn new(store: Arc<IndexStore>, config: SearchConfig) -> Self {
        Self {
            store,
            config,
            query_adapter: None,
        }
    }

    /// Dense search maps each query's embedding through `adapter` first.
    pub fn with_query_adapter(mut self, adapter: Arc<QueryAdapter>) -> Self {
        self.query_adapter = Some(adapter);
        self
    }

    pub fn query_adapter(&self) -> Option<&Arc<QueryAdapter>> {
        self.query_adapter.as_ref()
    }

    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<IndexStore> {
        &self.store
    }

    /// Runs both retrievers for `query` in `tenant`, `candidates` chunks each.
    pub async fn ranked_lists(&self, tenant: &str, query: &str, candidates: usize) -> RankedLists {
        let deadline = self.config.stage_timeout;
        let bm25 = {
            let index = self.store.bm25.clone();
            let (tenant, query) = (tenant.to_string(), query.to_string());
            timed(deadline, async move {
                tokio::task::spawn_blocking(move || index.search(&tenant, &query, candidates))
                    .await
                    .map_err(|e| RetrievalError::Unavailable(e.to_string()))?
            })
        };
        let dense = async {
            let embedder = self.store.embedder.clone();
            let adapter = self.query_adapter.clone();
            let text = query.to_string();
            let (vector, embed_time) = timed(deadline, async move {
                tokio::task::spawn_blocking(move || {
                    let vectors = embedder.embed(&[text])?;
                    Ok(match adapter {
                        Some(adapter) => vectors.iter().map(|v| adapter.apply(v)).collect(),
                        None => vectors,
                    })
                })
                .await
                .map_err(|e| RetrievalError::Unavailable(e.to_string()))?
            })
            .await;
            let vector = match vector {
                Ok(mut vectors) => vectors.remove(0),
                Err((timeout, message)) => {
                    let cause = if timeout {
                        DegradedCause::EmbedderTimeout
                    } else {
                        DegradedCause::EmbedderError
                    };
                    return (Err(Degradation { cause, message }), None, None);
                }
            };
            let (hits, search_time) = timed(
                deadline,
                self.store.vectors.search(tenant, vector, candidates),
            )
            .await;
            match hits {
                Ok(hits) => (Ok(hits), Some(embed_time), Some(search_time)),
                Err((timeout, message)) => {
                    let cause = if timeout {
                        DegradedCause::VectorTimeout
                    } else {
                        DegradedCause::VectorError
                    };
                    (Err(Degradation { cause, message }), Some(embed_time), None)
                }
            }
        };
        let ((bm25, bm25_time), (dense, embed_time, vector_time)) = tokio::join!(bm25, dense);
        let mut degraded = Vec::new();
        let bm25 = match bm25 {
            Ok(hits) => Some(hits),
            Err((timeout, message)) => {
                let cause = if timeout {
                    DegradedCause::Bm25Timeout
                } else {
                    DegradedCause::Bm25Error
                };
                degraded.push(Degradation { cause, message });
                None
            }
        };
        let bm25_ok = bm25.is_some();
        let dense = match dense {
            Ok(hits) => Some(hits),
            Err(degradation) => {
                degraded.push(degradation);
                None
            }
        };
        RankedLists {
            bm25,
            dense,
            degraded,
            timings: StageTimings {
                embed: embed_time,
                bm25: bm25_ok.then_some(bm25_time),
                vector: vector_time,
                fusion: Duration::ZERO,
            },
        }
    }

    /// The best `top_k` chunks for `query` in `tenant`, fused with the configured method.
    pub async fn search(&self, tenant: &str, query: &str) -> Result<SearchResult> {
        let lists = self
            .ranked_lists(tenant, query, self.config.candidates)
            .await;
        if lists.bm25.is_none() && lists.dense.is_none() {
            let causes: Vec<String> = lists.degraded.iter().map(|d| d.message.clone()).collect();
            return Err(RetrievalError::Unavailable(causes.join("; ")));
        }
        let started = Instant::now();
        let available: Vec<Vec<Scored>> = [lists.bm25, lists.dense].into_iter().flatten().collect();
        let fused = fuse(&available, &self.config.fusion, self.config.candidates);
        let hits = select_sources(
            fused,
            self.config.top_k,
            self.config.max_chunks_per_document,
        )
        .into_iter()
        .filter_map(|scored| {
            Some(Hit {
                score: scored.score,
                chunk: self.store.chunk(tenant, &scored.id)?,
            })
        })
        .collect();
        let mut timings = lists.timings;
        timings.fusion = started.elapsed();
        Ok(SearchResult {
            hits,
            degraded: lists.degraded,
            timings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_take_at_most_the_cap_from_one_document() {
        let fused: Vec<Scored> = ["a#0", "a#1", "b#0", "a#2", "c#3", "b#1", "d#0"]
            .iter()
            .enumerate()
            .map(|(i, id)| Scored::new(*id, 1.0 - i as f32 * 0.1))
            .collect();
        let ids = |cap| -> Vec<String> {
            select_sources(fused.clone(), 4, cap)
                .into_iter()
                .map(|s| s.id)
                .collect()
        };
        assert_eq!(ids(0), ["a#0", "a#1", "b#0", "a#2"]);
        assert_eq!(ids(1), ["a#0", "b#0", "c#3", "d#0"]);
        assert_eq!(ids(2), ["a#0", "a#1", "b#0", "c#3"]);
    }
}
