//! The vector store behind dense retrieval: one trait, two deployments of Qdrant.
//!
//! - `qdrant-edge` ([`crate::dense::DenseIndex`]): Qdrant's engine in-process, on disk; the
//!   default, so a single binary needs no server.
//! - a Qdrant server over gRPC ([`crate::qdrant_server::QdrantServerIndex`]), for scale-out.
//!
//! Both use one layout: a named dense vector `dense` (384 dimensions, cosine) and a payload
//! with `doc_id`, `chunk_id`, `start`, `end` and `tenant`; point ids are derived from tenant
//! and chunk id. Searches filter by tenant inside the engine.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::fusion::Scored;

/// The name of the dense vector in the collection.
pub const VECTOR_NAME: &str = "dense";

/// The point id of a chunk: the first 8 bytes of sha256(tenant, NUL, chunk id).
pub fn point_id(tenant: &str, chunk_id: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    hasher.update([0]);
    hasher.update(chunk_id.as_bytes());
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// One chunk's vector and payload.
#[derive(Debug, Clone)]
pub struct ChunkPoint {
    pub chunk_id: String,
    pub start: usize,
    pub end: usize,
    pub vector: Vec<f32>,
}

/// Where chunk vectors live.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// `qdrant-edge` or `qdrant`, for logs and `/ready`.
    fn backend(&self) -> &'static str;

    /// Replaces every point of (`tenant`, `doc_id`) with `points`; durable when it returns.
    /// No points is a delete.
    async fn replace_document(
        &self,
        tenant: &str,
        doc_id: &str,
        points: Vec<ChunkPoint>,
    ) -> Result<()>;

    /// The `limit` chunks of `tenant` nearest to `vector`, best first.
    async fn search(&self, tenant: &str, vector: Vec<f32>, limit: usize) -> Result<Vec<Scored>>;

    /// Points stored, all tenants.
    async fn num_chunks(&self) -> Result<usize>;

    /// Points stored for one document.
    async fn count_document(&self, tenant: &str, doc_id: &str) -> Result<usize>;
}

/// Which vector store to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VectorBackend {
    /// qdrant-edge under the index folder.
    #[default]
    Embedded,
    /// A Qdrant server (gRPC URL, e.g. `http://localhost:6334`).
    Qdrant { url: String, collection: String },
}

/// Opens the configured vector store; `edge_dir` is used by the embedded one.
pub async fn open_vector_store(
    backend: &VectorBackend,
    edge_dir: PathBuf,
) -> Result<Arc<dyn VectorStore>> {
    Ok(match backend {
        VectorBackend::Embedded => {
            let index =
                tokio::task::spawn_blocking(move || crate::dense::DenseIndex::open(&edge_dir))
                    .await
                    .map_err(|e| crate::error::RetrievalError::Dense(e.to_string()))??;
            Arc::new(index)
        }
        VectorBackend::Qdrant { url, collection } => {
            Arc::new(crate::qdrant_server::QdrantServerIndex::connect(url, collection).await?)
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::embed::tests::embedder;

    /// A real embedding of git-stash's description.
    pub(crate) fn stash_point() -> ChunkPoint {
        let text = "Stash the changes in a dirty working directory away.";
        ChunkPoint {
            chunk_id: "git-stash.txt#0".into(),
            start: 0,
            end: text.chars().count(),
            vector: embedder().embed(&[text]).unwrap().remove(0),
        }
    }

    /// The behaviour every vector store must have, on real embeddings.
    pub(crate) async fn conformance(store: &dyn VectorStore) {
        let embedder = embedder();
        let texts = [
            (
                "git-stash.txt",
                "Stash the changes in a dirty working directory away.",
            ),
            ("git-clone.txt", "Clone a repository into a new directory."),
        ];
        for tenant in ["acme", "globex"] {
            for (id, text) in texts {
                let vector = embedder.embed(&[text]).unwrap().remove(0);
                let point = ChunkPoint {
                    chunk_id: format!("{id}#0"),
                    start: 0,
                    end: text.chars().count(),
                    vector,
                };
                store
                    .replace_document(tenant, id, vec![point])
                    .await
                    .unwrap();
            }
        }
        let query = embedder
            .embed(&["put my uncommitted edits aside"])
            .unwrap()
            .remove(0);
        let hits = store.search("acme", query.clone(), 5).await.unwrap();
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert_eq!(hits[0].id, "git-stash.txt#0");
        assert!(hits[0].score > hits[1].score);
        assert!(store
            .search("initech", query.clone(), 5)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.num_chunks().await.unwrap(), 4);

        // Replacing with two chunks, then deleting, touches one tenant's document only.
        let two: Vec<ChunkPoint> = (0..2)
            .map(|i| ChunkPoint {
                chunk_id: format!("git-stash.txt#{i}"),
                start: i,
                end: i + 1,
                vector: query.clone(),
            })
            .collect();
        store
            .replace_document("acme", "git-stash.txt", two)
            .await
            .unwrap();
        assert_eq!(store.num_chunks().await.unwrap(), 5);
        assert_eq!(
            store.count_document("acme", "git-stash.txt").await.unwrap(),
            2
        );
        assert_eq!(
            store
                .count_document("globex", "git-stash.txt")
                .await
                .unwrap(),
            1
        );
        store
            .replace_document("acme", "git-stash.txt", vec![])
            .await
            .unwrap();
        assert_eq!(store.num_chunks().await.unwrap(), 3);
        let acme = store.search("acme", query.clone(), 5).await.unwrap();
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].id, "git-clone.txt#0");
        let globex = store.search("globex", query, 5).await.unwrap();
        assert_eq!(globex[0].id, "git-stash.txt#0", "other tenant untouched");
    }

    #[test]
    fn point_ids_are_stable_and_tenant_scoped() {
        assert_eq!(point_id("t", "a.txt#0"), point_id("t", "a.txt#0"));
        assert_ne!(point_id("t", "a.txt#0"), point_id("t", "a.txt#1"));
        assert_ne!(point_id("t", "a.txt#0"), point_id("u", "a.txt#0"));
    }

    /// Runs against a real Qdrant server (`QDRANT_URL`, e.g. `http://localhost:6334`). No
    /// server can be installed on the project's machine, so it is ignored, and counted as
    /// such; `scripts/test.sh` runs it when `QDRANT_URL` is set.
    #[tokio::test]
    #[ignore = "needs a Qdrant server: set QDRANT_URL (scripts/test.sh then runs it)"]
    async fn qdrant_server_passes_the_conformance_test() {
        let url = std::env::var("QDRANT_URL").expect("QDRANT_URL names the Qdrant server");
        let collection = format!("switchyard_test_{}", std::process::id());
        let store = crate::qdrant_server::QdrantServerIndex::connect(&url, &collection)
            .await
            .unwrap();
        conformance(&store).await;
        store.drop_collection().await.unwrap();
    }
}
