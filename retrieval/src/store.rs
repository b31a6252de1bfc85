//! The index folder as one unit: catalog + sources, the BM25 index, the vector store and the
//! embedder, kept consistent with each other.
//!
//! Layout under the index folder: `catalog.redb` (entries, sources, chunk texts), `bm25/`
//! (tantivy) and `vectors/` (qdrant-edge; unused with a Qdrant server). Opening the folder recovers any
//! change a crash cut short (see [`crate::catalog`]): the previous version of that document
//! is written back to both indexes, or the document is removed when it had none.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::bm25::Bm25Index;
use crate::catalog::{Catalog, CatalogEntry, ChunkSpan, DocumentVersion, EntryState};
use crate::chunk::{chunk_document, Chunk, ChunkerConfig, DocFormat};
use crate::embed::Embedder;
use crate::error::{Result, RetrievalError};
use crate::vectors::{open_vector_store, ChunkPoint, VectorBackend, VectorStore};

/// Where the index lives and how documents are cut.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    pub dir: PathBuf,
    pub vectors: VectorBackend,
    pub chunker: ChunkerConfig,
}

/// A document version ready to be written: its catalog record, chunks and vectors.
/// The text embedded for a chunk: the title goes in front so a chunk deep in a page still
/// says what page it is.
pub fn embedding_input(title: &str, chunk_text: &str) -> String {
    format!("{title}\n{chunk_text}")
}

pub(crate) struct Prepared {
    pub version: DocumentVersion,
    pub chunks: Vec<Chunk>,
    pub vectors: Vec<Vec<f32>>,
}

/// A chunk found by id, with the exact text its offsets select in the stored source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRecord {
    pub chunk_id: String,
    pub doc_id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// One document's chunk count in each part of the index; equal when consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DocumentCounts {
    /// Chunks of the acknowledged version (0 when there is none).
    pub catalog: usize,
    pub bm25: usize,
    pub vectors: usize,
}

/// Documents and chunks in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexStats {
    /// Acknowledged documents.
    pub documents: usize,
    /// Their chunks.
    pub chunks: usize,
    /// Documents whose change is being written to the indexes, or whose rollback failed
    /// and waits for a retry (a count that stays above 0 needs an operator).
    pub pending: usize,
}

/// The opened index folder.
pub struct IndexStore {
    pub(crate) catalog: Catalog,
    pub(crate) bm25: Arc<Bm25Index>,
    pub(crate) vectors: Arc<dyn VectorStore>,
    pub(crate) embedder: Arc<Embedder>,
    pub(crate) chunker: ChunkerConfig,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RetrievalError::Io(std::io::Error::other(e.to_string())))?
}

impl IndexStore {
    /// Opens (or creates) the index folder and recovers changes cut short by a crash.
    pub async fn open(config: &IndexConfig, embedder: Arc<Embedder>) -> Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let vectors = open_vector_store(&config.vectors, config.dir.join("vectors")).await?;
        Self::open_with_vectors(config, embedder, vectors).await
    }

    /// [`IndexStore::open`] with a vector store opened by the caller.
    pub async fn open_with_vectors(
        config: &IndexConfig,
        embedder: Arc<Embedder>,
        vectors: Arc<dyn VectorStore>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let catalog = Catalog::open(&config.dir)?;
        let bm25_dir = config.dir.join("bm25");
        let bm25 = blocking(move || Bm25Index::open(&bm25_dir)).await?;
        let store = Self {
            catalog,
            bm25: Arc::new(bm25),
            vectors,
            embedder,
            chunker: config.chunker,
        };
        let recovered = store.recover().await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "index: put back documents whose change a crash cut short"
            );
        }
        Ok(store)
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    pub fn vector_backend(&self) -> &'static str {
        self.vectors.backend()
    }

    /// How many chunks of a document each part of the index holds (a consistency check).
    pub async fn document_counts(&self, tenant: &str, doc_id: &str) -> Result<DocumentCounts> {
        let catalog = self
            .catalog
            .get(tenant, doc_id)
            .and_then(|e| e.acknowledged().map(|v| v.chunks.len()))
            .unwrap_or(0);
        let bm25 = self.bm25.count_document(tenant, doc_id)?;
        let vectors = self.vectors.count_document(tenant, doc_id).await?;
        Ok(DocumentCounts {
            catalog,
            bm25,
            vectors,
        })
    }

    /// Points in the vector store (all tenants).
    pub async fn vectors_num_chunks(&self) -> Result<usize> {
        self.vectors.num_chunks().await
    }

    /// Documents and chunks acknowledged.
    pub fn stats(&self) -> IndexStats {
        let mut stats = IndexStats {
            documents: 0,
            chunks: 0,
            pending: 0,
        };
        for entry in self.catalog.entries() {
            if matches!(entry.state, EntryState::Pending { .. }) {
                stats.pending += 1;
            }
            if let Some(version) = entry.acknowledged() {
                stats.documents += 1;
                stats.chunks += version.chunks.len();
            }
        }
        stats
    }

    /// Puts back every pending entry's previous version; returns how many it put back. One
    /// that cannot be put back now (a Qdrant server down) stays pending and is retried on the
    /// next write of that document or the next open; it is never listed or cited meanwhile.
    async fn recover(&self) -> Result<usize> {
        let pending = self.catalog.pending();
        let mut recovered = 0;
        for entry in &pending {
            let EntryState::Pending { previous, .. } = &entry.state else {
                continue;
            };
            match self
                .restore(&entry.tenant, &entry.doc_id, previous.clone())
                .await
            {
                Ok(()) => recovered += 1,
                Err(err) => tracing::error!(
                    tenant = entry.tenant,
                    doc_id = entry.doc_id,
                    error = %err,
                    "index: cannot put back a document a crash cut short; will retry"
                ),
            }
        }
        Ok(recovered)
    }

    /// Chunks and embeds a document version (nothing is written).
    pub(crate) async fn prepare(
        &self,
        doc_id: &str,
        text: &str,
        title: String,
        format: DocFormat,
        chunker: ChunkerConfig,
    ) -> Result<Prepared> {
        let embedder = self.embedder.clone();
        let (doc_id, text) = (doc_id.to_string(), text.to_string());
        blocking(move || {
            let count = |t: &str| embedder.count_tokens(t);
            let chunks = chunk_document(&doc_id, &text, format, chunker, &count);
            let inputs: Vec<String> = chunks
                .iter()
                .map(|c| embedding_input(&title, &c.text))
                .collect();
            let vectors = embedder.embed(&inputs)?;
            let version = DocumentVersion {
                title,
                format,
                sha256: crate::catalog::content_hash(&text),
                bytes: text.len(),
                chunker,
                chunks: chunks
                    .iter()
                    .map(|c| ChunkSpan {
                        start: c.start,
                        end: c.end,
                        section: c.section.clone(),
                    })
                    .collect(),
                indexed_at: now_secs(),
            };
            Ok(Prepared {
                version,
                chunks,
                vectors,
            })
        })
        .await
    }

    /// Writes a prepared version to both indexes (vectors first, then BM25), or with `None`
    /// removes the document from both. Each index is durable when its step returns.
    pub(crate) async fn apply(
        &self,
        tenant: &str,
        doc_id: &str,
        prepared: Option<&Prepared>,
    ) -> Result<()> {
        let points = prepared
            .map(|p| {
                p.chunks
                    .iter()
                    .zip(&p.vectors)
                    .map(|(chunk, vector)| ChunkPoint {
                        chunk_id: chunk.chunk_id.clone(),
                        start: chunk.start,
                        end: chunk.end,
                        vector: vector.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.vectors
            .replace_document(tenant, doc_id, points)
            .await?;
        let bm25 = self.bm25.clone();
        let (tenant, doc_id) = (tenant.to_string(), doc_id.to_string());
        let title_and_chunks = prepared.map(|p| (p.version.title.clone(), p.chunks.clone()));
        blocking(move || match title_and_chunks {
            Some((title, chunks)) => bm25.replace_document(&tenant, &doc_id, &title, &chunks),
            None => bm25.delete_document(&tenant, &doc_id),
        })
        .await
    }

    /// Makes both indexes and the catalog hold `previous` again (or no document), after a
    /// change failed or was cut short. The source of `previous` is in the source store.
    pub(crate) async fn restore(
        &self,
        tenant: &str,
        doc_id: &str,
        previous: Option<DocumentVersion>,
    ) -> Result<()> {
        match previous {
            Some(version) => {
                let text = self.catalog.source(&version.sha256)?;
                let prepared = self
                    .prepare(
                        doc_id,
                        &text,
                        version.title.clone(),
                        version.format,
                        version.chunker,
                    )
                    .await?;
                self.apply(tenant, doc_id, Some(&prepared)).await?;
                let entry = CatalogEntry {
                    tenant: tenant.to_string(),
                    doc_id: doc_id.to_string(),
                    current: DocumentVersion {
                        indexed_at: version.indexed_at,
                        ..prepared.version
                    },
                    state: EntryState::Committed,
                };
                self.catalog.put(tenant, doc_id, Some(entry), Some(&text))
            }
            None => {
                self.apply(tenant, doc_id, None).await?;
                self.catalog.put(tenant, doc_id, None, None)
            }
        }
    }

    /// Every acknowledged chunk of `tenant` with its text, documents in id order.
    pub fn chunk_records(&self, tenant: &str) -> Vec<ChunkRecord> {
        let mut records = Vec::new();
        for entry in self.catalog.entries() {
            let Some(version) = entry.acknowledged().filter(|_| entry.tenant == tenant) else {
                continue;
            };
            for i in 0..version.chunks.len() {
                records.extend(self.chunk(tenant, &format!("{}#{i}", entry.doc_id)));
            }
        }
        records
    }

    /// The chunk `chunk_id` of `tenant`, with its exact text (one small read of the catalog
    /// store, not the whole source).
    pub fn chunk(&self, tenant: &str, chunk_id: &str) -> Option<ChunkRecord> {
        let (doc_id, index) = chunk_id.rsplit_once('#')?;
        let index: usize = index.parse().ok()?;
        let entry = self.catalog.get(tenant, doc_id)?;
        let version = entry.acknowledged()?;
        let span = version.chunks.get(index)?;
        let text = match self.catalog.chunk_text(&version.sha256, span) {
            Ok(text) => text?,
            Err(err) => {
                tracing::error!(tenant, chunk_id, error = %err, "index: cannot read a chunk's text");
                return None;
            }
        };
        Some(ChunkRecord {
            chunk_id: chunk_id.to_string(),
            doc_id: doc_id.to_string(),
            title: version.title.clone(),
            section: span.section.clone(),
            start: span.start,
            end: span.end,
            text,
        })
    }
}
