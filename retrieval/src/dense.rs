//! The dense side of hybrid retrieval: chunk vectors in Qdrant's in-process engine
//! (`qdrant-edge`), persistent on disk.
//!
//! Collection layout (the same as on a Qdrant server): one named dense vector `dense`
//! (384 dimensions, cosine) and a payload with `doc_id`, `chunk_id`, `start`, `end`, `tenant`.
//! Point ids are derived from chunk ids, so re-ingesting a chunk overwrites it.
//!
//! Durability: qdrant-edge 0.7.2 writes a WAL but never replays it on open, so a write is
//! durable only once the shard is flushed; every change here ends with a flush. `flush`
//! panics if another write holds the shard's locks, so writes and flushes are serialised by
//! our own lock.

use std::path::Path;
use std::sync::Mutex;

use qdrant_edge::external::serde_json::json;
use qdrant_edge::{
    Condition, CountRequest, Distance, EdgeConfig, EdgeShard, EdgeVectorParams, FieldCondition,
    Filter, JsonPath, Match, NamedQuery, PointId, PointInsertOperations, PointOperations,
    PointStruct, QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, VectorInternal, Vectors,
    WithPayloadInterface, WithVector,
};
use sha2::{Digest, Sha256};

use crate::chunk::Chunk;
use crate::embed::EMBEDDING_DIMS;
use crate::error::{Result, RetrievalError};
use crate::fusion::Scored;

const VECTOR_NAME: &str = "dense";

fn dense_error(what: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::Dense(what.to_string())
}

/// The point id of a chunk: the first 8 bytes of sha256(chunk id).
pub fn point_id(chunk_id: &str) -> u64 {
    let digest = Sha256::digest(chunk_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn field_equals(key: &str, value: &str) -> Filter {
    let path: JsonPath = key.parse().expect("static field names are valid paths");
    Filter::new_must(Condition::Field(FieldCondition::new_match(
        path,
        Match::from(value.to_string()),
    )))
}

/// Chunk vectors of every document, in an on-disk qdrant-edge shard.
pub struct DenseIndex {
    shard: EdgeShard,
    writes: Mutex<()>,
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
            shard,
            writes: Mutex::new(()),
        })
    }

    /// Replaces every chunk of `doc_id` with `chunks` (one vector each), then flushes.
    pub fn replace_document(
        &self,
        tenant: &str,
        doc_id: &str,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        if chunks.len() != vectors.len() {
            return Err(dense_error(format!(
                "{} chunks but {} vectors",
                chunks.len(),
                vectors.len()
            )));
        }
        let points: Vec<_> = chunks
            .iter()
            .zip(vectors)
            .map(|(chunk, vector)| {
                PointStruct::new(
                    PointId::NumId(point_id(&chunk.chunk_id)),
                    Vectors::new_named([(VECTOR_NAME, vector.clone())]),
                    json!({
                        "doc_id": doc_id,
                        "chunk_id": chunk.chunk_id,
                        "start": chunk.start,
                        "end": chunk.end,
                        "tenant": tenant,
                    }),
                )
                .into()
            })
            .collect();
        let _guard = self.writes.lock().expect("dense write lock");
        self.shard
            .update(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(field_equals("doc_id", doc_id)),
            ))
            .map_err(dense_error)?;
        if !points.is_empty() {
            self.shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(dense_error)?;
        }
        self.shard.flush();
        Ok(())
    }

    /// Removes every chunk of `doc_id`, then flushes.
    pub fn delete_document(&self, doc_id: &str) -> Result<()> {
        // Replacing with no chunks is a delete; the tenant goes only into new points' payload.
        self.replace_document("", doc_id, &[], &[])
    }

    /// Chunks stored (all tenants).
    pub fn num_chunks(&self) -> Result<usize> {
        self.shard
            .count(CountRequest {
                filter: None,
                exact: true,
            })
            .map_err(dense_error)
    }

    /// The `limit` chunks of `tenant` nearest to `vector`, best first, by chunk id.
    pub fn search(&self, tenant: &str, vector: &[f32], limit: usize) -> Result<Vec<Scored>> {
        let hits = self
            .shard
            .query(QueryRequest {
                prefetches: vec![],
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                    query: VectorInternal::Dense(vector.to_vec()),
                    using: Some(VECTOR_NAME.to_string()),
                }))),
                filter: Some(field_equals("tenant", tenant)),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::plain_chunks as chunks_of;
    use crate::embed::tests::embedder;

    #[test]
    fn nearest_chunks_by_tenant_replace_delete_and_reopen() {
        let embedder = embedder();
        let dir = tempfile::tempdir().unwrap();
        let docs = [
            (
                "git-stash.txt",
                "Stash the changes in a dirty working directory away.",
            ),
            ("git-clone.txt", "Clone a repository into a new directory."),
        ];
        {
            let index = DenseIndex::open(dir.path()).unwrap();
            for (id, text) in docs {
                let chunks = chunks_of(id, text);
                let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
                let vectors = embedder.embed(&texts).unwrap();
                index
                    .replace_document("acme", id, &chunks, &vectors)
                    .unwrap();
            }
            let query = embedder.embed(&["put my uncommitted edits aside"]).unwrap();
            let hits = index.search("acme", &query[0], 2).unwrap();
            assert_eq!(hits[0].id, "git-stash.txt#0");
            assert!(
                index.search("globex", &query[0], 2).unwrap().is_empty(),
                "tenant filter"
            );
            assert_eq!(index.num_chunks().unwrap(), 2);
        }
        // Reopened: flushed writes are there; deletes remove a document's points.
        let index = DenseIndex::open(dir.path()).unwrap();
        assert_eq!(index.num_chunks().unwrap(), 2);
        index.delete_document("git-stash.txt").unwrap();
        assert_eq!(index.num_chunks().unwrap(), 1);
        let query = embedder.embed(&["put my uncommitted edits aside"]).unwrap();
        assert_eq!(
            index.search("acme", &query[0], 2).unwrap()[0].id,
            "git-clone.txt#0"
        );
    }

    #[test]
    fn point_ids_are_stable() {
        assert_eq!(point_id("a.txt#0"), point_id("a.txt#0"));
        assert_ne!(point_id("a.txt#0"), point_id("a.txt#1"));
    }
}
