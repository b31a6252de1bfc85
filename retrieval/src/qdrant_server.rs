//! The scale-out vector store: a Qdrant server over gRPC (`qdrant-client`), with the same
//! collection layout as the embedded engine.
//!
//! Writes wait for the server to apply them (`wait: true`), so an acknowledged ingest is in
//! the server's WAL. The collection and its keyword indexes on `doc_id` and `tenant` are
//! created when missing: at connect, or at the first write when the server was down at
//! connect. A server that is down never stops Switchyard from starting; searches then fail
//! and hybrid retrieval serves BM25 results marked degraded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::value::Kind;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, NamedVectors, PointStruct, Query,
    QueryPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};

use crate::embed::EMBEDDING_DIMS;
use crate::error::{Result, RetrievalError};
use crate::fusion::Scored;
use crate::vectors::{point_id, ChunkPoint, VectorStore, VECTOR_NAME};

fn server_error(what: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::Dense(format!("Qdrant server: {what}"))
}

fn tenant_filter(tenant: &str) -> Condition {
    Condition::matches("tenant", tenant.to_string())
}

/// A collection on a Qdrant server.
pub struct QdrantServerIndex {
    client: Qdrant,
    collection: String,
    collection_ready: AtomicBool,
}

impl QdrantServerIndex {
    /// Connects to `url` (gRPC, e.g. `http://localhost:6334`) and creates `collection` when it
    /// does not exist.
    pub async fn connect(url: &str, collection: &str) -> Result<Self> {
        let client = Qdrant::from_url(url)
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .skip_compatibility_check()
            .build()
            .map_err(server_error)?;
        let index = Self {
            client,
            collection: collection.to_string(),
            collection_ready: AtomicBool::new(false),
        };
        if let Err(err) = index.ensure_collection().await {
            tracing::warn!(url, error = %err, "Qdrant server not reachable at start; vector search is degraded until it is");
        }
        Ok(index)
    }

    async fn ensure_collection(&self) -> Result<()> {
        if self.collection_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(server_error)?;
        if exists {
            self.collection_ready.store(true, Ordering::Release);
            return Ok(());
        }
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            VECTOR_NAME,
            VectorParamsBuilder::new(EMBEDDING_DIMS as u64, Distance::Cosine),
        );
        self.client
            .create_collection(
                CreateCollectionBuilder::new(&self.collection).vectors_config(vectors),
            )
            .await
            .map_err(server_error)?;
        for field in ["doc_id", "tenant"] {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &self.collection,
                        field,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(server_error)?;
        }
        self.collection_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn count(&self, filter: Option<Filter>) -> Result<usize> {
        let mut request = CountPointsBuilder::new(&self.collection).exact(true);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let response = self.client.count(request).await.map_err(server_error)?;
        Ok(response.result.map(|r| r.count as usize).unwrap_or(0))
    }

    /// Deletes the collection (tests clean up with it).
    pub async fn drop_collection(&self) -> Result<()> {
        self.client
            .delete_collection(&self.collection)
            .await
            .map_err(server_error)?;
        Ok(())
    }
}

#[async_trait]
impl VectorStore for QdrantServerIndex {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    async fn replace_document(
        &self,
        tenant: &str,
        doc_id: &str,
        points: Vec<ChunkPoint>,
    ) -> Result<()> {
        self.ensure_collection().await?;
        let document = Filter::must([
            tenant_filter(tenant),
            Condition::matches("doc_id", doc_id.to_string()),
        ]);
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(document)
                    .wait(true),
            )
            .await
            .map_err(server_error)?;
        if points.is_empty() {
            return Ok(());
        }
        let points = points
            .into_iter()
            .map(|p| {
                let payload = Payload::try_from(serde_json::json!({
                    "doc_id": doc_id,
                    "chunk_id": p.chunk_id,
                    "start": p.start,
                    "end": p.end,
                    "tenant": tenant,
                }))
                .expect("a JSON object is a payload");
                PointStruct::new(
                    point_id(tenant, &p.chunk_id),
                    NamedVectors::default().add_vector(VECTOR_NAME, p.vector),
                    payload,
                )
            })
            .collect::<Vec<_>>();
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(server_error)?;
        Ok(())
    }

    async fn search(&self, tenant: &str, vector: Vec<f32>, limit: usize) -> Result<Vec<Scored>> {
        let response = self
            .client
            .query(
                QueryPointsBuilder::new(&self.collection)
                    .query(Query::new_nearest(vector))
                    .using(VECTOR_NAME)
                    .filter(Filter::must([tenant_filter(tenant)]))
                    .limit(limit.max(1) as u64)
                    .with_payload(true),
            )
            .await
            .map_err(server_error)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(
                |point| match point.payload.get("chunk_id")?.kind.as_ref()? {
                    Kind::StringValue(id) => Some(Scored::new(id.clone(), point.score)),
                    _ => None,
                },
            )
            .collect())
    }

    async fn num_chunks(&self) -> Result<usize> {
        self.count(None).await
    }

    async fn count_document(&self, tenant: &str, doc_id: &str) -> Result<usize> {
        self.count(Some(Filter::must([
            tenant_filter(tenant),
            Condition::matches("doc_id", doc_id.to_string()),
        ])))
        .await
    }
}
