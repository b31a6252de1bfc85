//! The dense side of hybrid retrieval: chunk vectors in Qdrant's in-process engine
//! (`qdrant-edge`), persistent on disk.
//!
//! Collection layout (the same as on a Qdrant server): one named dense vector `dense`
//! (384 dimensions, cosine) and a payload with `doc_id`, `chunk_id`, `start`, `end`, `tenant`.
//! Point ids are derived from tenant and chunk id, so re-ingesting a chunk overwrites it.
//!
//! Durability: qdrant-edge 0.7.2 writes a WAL but never replays it on open, so a write is
//! durable only once the shard is flushed; every change here ends with a flush. `flush`
//! panics if another write holds the shard's locks, so writes and flushes are serialised by
//! our own lock.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use async_trait::async_trait;
use qdrant_edge::external::serde_json::json;
use qdrant_edge::{
    Condition, CountRequest, Distance, EdgeConfig, EdgeShard, EdgeVectorParams, FieldCondition,
    Filter, JsonPath, Match, NamedQuery, PointId, PointInsertOperations, PointOperations,
    PointStruct, QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, VectorInternal, Vectors,
    WithPayloadInterface, WithVector,
};

use crate::embed::EMBEDDING_DIMS;
use crate::error::{Result, RetrievalError};
use crate::fusion::Scored;
use crate::vectors::{point_id, ChunkPoint, VectorStore, VECTOR_NAME};

fn dense_error(what: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::Dense(what.to_string())
}

fn field_equals(key: &str, value: &str) -> Condition {
    let path: JsonPath = key.parse().expect("static field names are valid paths");
    Condition::Field(FieldCondition::new_match(
        path,
        Match::from(value.to_string()),
    ))
}

fn document_filter(tenant: &str, doc_id: &str) -> Filter {
    Filter {
        must: Some(vec![
            field_equals("tenant", tenant),
            field_equals("doc_id", doc_id),
        ]),
        ..Filter::default()
    }
}

struct Shard {
    shard: EdgeShard,
    writes: Mutex<()>,
}

/// Chunk vectors of every document, in an on-disk qdrant-edge shard. Cloning shares it.
#[derive(Clone)]
pub struct DenseIndex {
    inner: Arc<Shard>,
}

impl DenseIndex {
    /// Opens the shard in `dir`, creating it when the folder holds none.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = EdgeConfig::builder()
            .vector(
                VECTOR_NAME,
                EdgeVectorParams::builder(EMBEDDING_DIMS, Distance::Cosine).build(),
            )
            .build();
        let shard = EdgeShard::load(dir, Some(config)).map_err(dense_error)?;
        Ok(Self {
            inner: Arc::new(Shard {
                shard,
                writes: Mutex::new(()),
            }),
        })
    }

    fn replace_blocking(&self, tenant: &str, doc_id: &str, points: Vec<ChunkPoint>) -> Result<()> {
        let points: Vec<_> = points
            .into_iter()
            .map(|p| {
                PointStruct::new(
                    PointId::NumId(point_id(tenant, &p.chunk_id)),
                    Vectors::new_named([(VECTOR_NAME, p.vector)]),
                    json!({
                        "doc_id": doc_id,
                        "chunk_id": p.chunk_id,
                        "start": p.start,
                        "end": p.end,
                        "tenant": tenant,
                    }),
                )
                .into()
            })
            .collect();
        let shard = &self.inner.shard;
        let _guard = self.inner.writes.lock();
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(document_filter(tenant, doc_id)),
            ))
            .map_err(dense_error)?;
        if !points.is_empty() {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(dense_error)?;
        }
        shard.flush();
        Ok(())
    }

    fn search_blocking(&self, tenant: &str, vector: Vec<f32>, limit: usize) -> Result<Vec<Scored>> {
        let hits = self
            .inner
            .shard
            .query(QueryRequest {
                prefetches: vec![],
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                    query: VectorInternal::Dense(vector),
                    using: Some(VECTOR_NAME.to_string()),
                }))),
                filter: Some(Filter::new_must(field_equals("tenant", tenant))),
                score_threshold: None,
                limit: limit.max(1),
                offset: 0,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(true),
            })
            .map_err(dense_error)?;
        Ok(hits
            .into_iter()
            .filter_map(|hit| {
                let payload = hit.payload?;
                let chunk_id = payload.0.get("chunk_id")?.as_str()?.to_string();
                Some(Scored::new(chunk_id, hit.score))
            })
            .collect())
    }

    fn count(&self, filter: Option<Filter>) -> Result<usize> {
        self.inner
            .shard
            .count(CountRequest {
                filter,
                exact: true,
            })
            .map_err(dense_error)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(DenseIndex) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let index = self.clone();
        tokio::task::spawn_blocking(move || work(index))
            .await
            .map_err(dense_error)?
    }
}

#[async_trait]
impl VectorStore for DenseIndex {
    fn backend(&self) -> &'static str {
        "qdrant-edge"
    }

    async fn replace_document(
        &self,
        tenant: &str,
        doc_id: &str,
        points: Vec<ChunkPoint>,
    ) -> Result<()> {
        let (tenant, doc_id) = (tenant.to_string(), doc_id.to_string());
        self.blocking(move |index| index.replace_blocking(&tenant, &doc_id, points))
            .await
    }

    async fn search(&self, tenant: &str, vector: Vec<f32>, limit: usize) -> Result<Vec<Scored>> {
        let tenant = tenant.to_string();
        self.blocking(move |index| index.search_blocking(&tenant, vector, limit))
            .await
    }

    async fn num_chunks(&self) -> Result<usize> {
        self.blocking(|index| index.count(None)).await
    }

    async fn count_document(&self, tenant: &str, doc_id: &str) -> Result<usize> {
        let filter = document_filter(tenant, doc_id);
        self.blocking(move |index| index.count(Some(filter))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::tests::{conformance, stash_point};

    #[tokio::test]
    async fn edge_store_passes_the_vector_store_conformance_test() {
        let dir = tempfile::tempdir().unwrap();
        conformance(&DenseIndex::open(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn flushed_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let point = stash_point();
        let vector = point.vector.clone();
        {
            let index = DenseIndex::open(dir.path()).unwrap();
            index
                .replace_document("acme", "git-stash.txt", vec![point])
                .await
                .unwrap();
        }
        let index = DenseIndex::open(dir.path()).unwrap();
        assert_eq!(index.num_chunks().await.unwrap(), 1);
        let hits = index.search("acme", vector, 3).await.unwrap();
        assert_eq!(hits[0].id, "git-stash.txt#0");
    }
}
