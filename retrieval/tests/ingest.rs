//! Ingestion and hybrid search on real indexes (tantivy, qdrant-edge) with the real embedder:
//! skip/replace/delete across both indexes, all-or-nothing writes, crash recovery, tenants,
//! and degraded search when the vector side is lost.
//!
//! The documents are short texts written for these tests.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchyard_retrieval::vectors::ChunkPoint;
use switchyard_retrieval::{
    ChunkerConfig, DegradedCause, DenseIndex, Embedder, EmbedderConfig, HybridRetriever,
    IndexConfig, IndexStore, IngestStatus, Ingestor, NewDocument, RetrievalError, Scored,
    SearchConfig, VectorBackend, VectorStore,
};

const STASH_V1: &str = "git stash\n\nStash the changes in a dirty working directory away. \
Use it to record the current state of the working directory and go back to a clean tree.\n";
const STASH_V2: &str = "git stash\n\nShelve uncommitted edits temporarily, then restore them \
later with pop. Pineapples are not involved.\n";
const CLONE: &str = "git clone\n\nClone a repository into a newly created directory, with \
remote-tracking branches for each branch in the cloned repository.\n";

fn embedder() -> Arc<Embedder> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    Arc::new(
        Embedder::load(&EmbedderConfig::from_models_dir(&models))
            .expect("run scripts/fetch_models.py first"),
    )
}

fn config(dir: &Path) -> IndexConfig {
    IndexConfig {
        dir: dir.to_path_buf(),
        vectors: VectorBackend::Embedded,
        chunker: ChunkerConfig::default(),
    }
}

fn doc(tenant: &str, id: &str, text: &str) -> NewDocument {
    NewDocument {
        tenant: tenant.into(),
        doc_id: id.into(),
        text: text.into(),
        title: None,
        format: None,
    }
}

/// What each retriever alone returns for `query`, as document ids.
async fn docs_found(
    retriever: &HybridRetriever,
    tenant: &str,
    query: &str,
) -> (Vec<String>, Vec<String>) {
    let lists = retriever.ranked_lists(tenant, query, 10).await;
    let docs = |hits: Option<Vec<Scored>>| -> Vec<String> {
        hits.expect("retriever answered")
            .into_iter()
            .map(|h| h.id.rsplit_once('#').unwrap().0.to_string())
            .collect()
    };
    (docs(lists.bm25), docs(lists.dense))
}

async fn open(dir: &Path, embedder: Arc<Embedder>) -> (Ingestor, HybridRetriever) {
    let store = Arc::new(IndexStore::open(&config(dir), embedder).await.unwrap());
    (
        Ingestor::new(store.clone()),
        HybridRetriever::new(store, SearchConfig::default()),
    )
}

#[tokio::test]
async fn unchanged_is_skipped_changed_is_replaced_deleted_is_gone_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = embedder();
    let (ingestor, retriever) = open(dir.path(), embedder.clone()).await;

    let first = ingestor
        .upsert(doc("t", "git-stash.txt", STASH_V1))
        .await
        .unwrap();
    assert_eq!(first.status, IngestStatus::Created);
    ingestor
        .upsert(doc("t", "git-clone.txt", CLONE))
        .await
        .unwrap();
    let again = ingestor
        .upsert(doc("t", "git-stash.txt", STASH_V1))
        .await
        .unwrap();
    assert_eq!(again.status, IngestStatus::Unchanged);
    assert_eq!(again.sha256, first.sha256);

    let (bm25, dense) = docs_found(&retriever, "t", "dirty working directory").await;
    assert_eq!(bm25[0], "git-stash.txt");
    assert_eq!(dense[0], "git-stash.txt");

    // A changed text replaces the chunks in both indexes.
    let updated = ingestor
        .upsert(doc("t", "git-stash.txt", STASH_V2))
        .await
        .unwrap();
    assert_eq!(updated.status, IngestStatus::Updated);
    let (bm25, _) = docs_found(&retriever, "t", "pineapples").await;
    assert_eq!(bm25, ["git-stash.txt"]);
    let (bm25, _) = docs_found(&retriever, "t", "dirty").await;
    assert!(bm25.is_empty(), "old text gone from BM25: {bm25:?}");
    assert_eq!(retriever.store().stats().documents, 2);

    // Citations slice the stored source exactly.
    let result = retriever.search("t", "shelve my edits").await.unwrap();
    let hit = &result.hits[0];
    assert_eq!(hit.chunk.doc_id, "git-stash.txt");
    let sliced: String = STASH_V2
        .chars()
        .skip(hit.chunk.start)
        .take(hit.chunk.end - hit.chunk.start)
        .collect();
    assert_eq!(sliced, hit.chunk.text);
    assert!(result.degraded.is_empty());

    // Delete removes it from BM25, the vector store and the catalog.
    let deleted = ingestor.delete("t", "git-stash.txt").await.unwrap();
    assert_eq!(deleted.id, "git-stash.txt");
    let (bm25, dense) = docs_found(&retriever, "t", "shelve stash pineapples").await;
    assert!(!bm25.contains(&"git-stash.txt".to_string()), "{bm25:?}");
    assert_eq!(
        dense,
        ["git-clone.txt"],
        "only the other document's vectors are left"
    );
    assert_eq!(
        ingestor
            .list(None)
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["git-clone.txt"]
    );
    assert!(matches!(
        ingestor.delete("t", "git-stash.txt").await,
        Err(RetrievalError::DocumentNotFound { .. })
    ));
}

#[tokio::test]
async fn tenants_see_only_their_own_documents() {
    let dir = tempfile::tempdir().unwrap();
    let (ingestor, retriever) = open(dir.path(), embedder()).await;
    ingestor
        .upsert(doc("acme", "guide.txt", STASH_V1))
        .await
        .unwrap();
    ingestor
        .upsert(doc("globex", "guide.txt", CLONE))
        .await
        .unwrap();
    let acme = retriever
        .search("acme", "clone a repository")
        .await
        .unwrap();
    assert!(
        acme.hits.iter().all(|h| h.chunk.text.contains("Stash")),
        "{:?}",
        acme.hits
    );
    let globex = retriever
        .search("globex", "stash dirty directory")
        .await
        .unwrap();
    assert!(globex.hits.iter().all(|h| h.chunk.text.contains("Clone")));
    assert!(retriever
        .search("initech", "stash")
        .await
        .unwrap()
        .hits
        .is_empty());
    // Deleting one tenant's document leaves the other's with the same id.
    ingestor.delete("acme", "guide.txt").await.unwrap();
    assert_eq!(ingestor.list(Some("globex")).len(), 1);
    assert!(retriever
        .search("acme", "stash")
        .await
        .unwrap()
        .hits
        .is_empty());
}

#[tokio::test]
async fn bad_documents_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ingestor, _) = open(dir.path(), embedder()).await;
    for (tenant, id, text) in [
        ("t", "", "text"),
        ("t", "a#b.txt", "text"),
        ("t", "a\u{0}.txt", "text"),
        ("t", "a.txt", "   \n"),
        ("bad tenant", "a.txt", "text"),
    ] {
        let err = ingestor.upsert(doc(tenant, id, text)).await.unwrap_err();
        assert!(matches!(err, RetrievalError::InvalidDocument(_)), "{err}");
    }
    assert!(ingestor.list(None).is_empty());
}

/// A real vector store that, when armed, fails after writing (mode 1), never answers after
/// writing (mode 2: the write is cut short, as by a crash), or fails searches (mode 3).
struct Faulty {
    inner: DenseIndex,
    mode: AtomicU8,
}

#[async_trait]
impl VectorStore for Faulty {
    fn backend(&self) -> &'static str {
        "faulty"
    }
    async fn replace_document(
        &self,
        tenant: &str,
        doc_id: &str,
        points: Vec<ChunkPoint>,
    ) -> switchyard_retrieval::Result<()> {
        self.inner.replace_document(tenant, doc_id, points).await?;
        match self.mode.swap(0, Ordering::SeqCst) {
            1 => Err(RetrievalError::Dense("injected failure".into())),
            2 => std::future::pending().await,
            _ => Ok(()),
        }
    }
    async fn search(
        &self,
        tenant: &str,
        vector: Vec<f32>,
        limit: usize,
    ) -> switchyard_retrieval::Result<Vec<Scored>> {
        if self.mode.load(Ordering::SeqCst) == 3 {
            return Err(RetrievalError::Dense("injected search failure".into()));
        }
        self.inner.search(tenant, vector, limit).await
    }
    async fn num_chunks(&self) -> switchyard_retrieval::Result<usize> {
        self.inner.num_chunks().await
    }
    async fn count_document(
        &self,
        tenant: &str,
        doc_id: &str,
    ) -> switchyard_retrieval::Result<usize> {
        self.inner.count_document(tenant, doc_id).await
    }
}

#[tokio::test]
async fn a_failed_write_leaves_the_previous_version_in_both_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = embedder();
    let faulty = Arc::new(Faulty {
        inner: DenseIndex::open(&dir.path().join("vectors")).unwrap(),
        mode: AtomicU8::new(0),
    });
    let store = Arc::new(
        IndexStore::open_with_vectors(&config(dir.path()), embedder, faulty.clone())
            .await
            .unwrap(),
    );
    let ingestor = Ingestor::new(store.clone());
    let retriever = HybridRetriever::new(store.clone(), SearchConfig::default());
    ingestor
        .upsert(doc("t", "git-stash.txt", STASH_V1))
        .await
        .unwrap();

    faulty.mode.store(1, Ordering::SeqCst);
    let err = ingestor
        .upsert(doc("t", "git-stash.txt", STASH_V2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    // v1 is what both indexes and the catalog hold.
    let (bm25, dense) = docs_found(&retriever, "t", "dirty working directory").await;
    assert_eq!(bm25, ["git-stash.txt"]);
    assert_eq!(dense, ["git-stash.txt"]);
    let (bm25, _) = docs_found(&retriever, "t", "pineapples").await;
    assert!(bm25.is_empty());
    let hit = &retriever.search("t", "shelve edits").await.unwrap().hits[0];
    assert!(
        hit.chunk.text.contains("dirty working directory"),
        "{hit:?}"
    );
    assert_eq!(
        ingestor.get("t", "git-stash.txt").unwrap().sha256,
        switchyard_retrieval::catalog::content_hash(STASH_V1)
    );

    // A failed first ingest leaves no trace.
    faulty.mode.store(1, Ordering::SeqCst);
    ingestor
        .upsert(doc("t", "git-clone.txt", CLONE))
        .await
        .unwrap_err();
    assert!(ingestor.get("t", "git-clone.txt").is_none());
    let (bm25, dense) = docs_found(&retriever, "t", "clone a repository").await;
    assert!(!bm25.contains(&"git-clone.txt".to_string()));
    assert!(!dense.contains(&"git-clone.txt".to_string()));
}

#[tokio::test]
async fn a_write_cut_short_is_undone_when_the_index_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = embedder();
    {
        let faulty = Arc::new(Faulty {
            inner: DenseIndex::open(&dir.path().join("vectors")).unwrap(),
            mode: AtomicU8::new(0),
        });
        let store = Arc::new(
            IndexStore::open_with_vectors(&config(dir.path()), embedder.clone(), faulty.clone())
                .await
                .unwrap(),
        );
        let ingestor = Ingestor::new(store);
        ingestor
            .upsert(doc("t", "git-stash.txt", STASH_V1))
            .await
            .unwrap();
        // v2's vectors are written, then the upsert stops mid-way: no rollback runs.
        faulty.mode.store(2, Ordering::SeqCst);
        let cut = tokio::time::timeout(
            Duration::from_secs(20),
            ingestor.upsert(doc("t", "git-stash.txt", STASH_V2)),
        )
        .await;
        assert!(cut.is_err(), "the write was cut short");
    }
    // Reopened: recovery puts v1 back in the vector store (which held v2).
    let (ingestor, retriever) = open(dir.path(), embedder).await;
    let info = ingestor.get("t", "git-stash.txt").unwrap();
    assert_eq!(
        info.sha256,
        switchyard_retrieval::catalog::content_hash(STASH_V1)
    );
    let result = retriever.search("t", "pineapples shelve").await.unwrap();
    assert!(
        result
            .hits
            .iter()
            .all(|h| !h.chunk.text.contains("Pineapples")),
        "{:?}",
        result.hits
    );
    let (_, dense) = docs_found(&retriever, "t", "dirty working directory").await;
    assert_eq!(dense, ["git-stash.txt"]);
}

#[tokio::test]
async fn a_lost_vector_store_degrades_to_bm25_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = embedder();
    // Refused connections: a port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, cause) in [
        (closed, DegradedCause::VectorError),
        (silent_port, DegradedCause::VectorTimeout),
    ] {
        let sub = dir.path().join(port.to_string());
        let config = IndexConfig {
            dir: sub.clone(),
            vectors: VectorBackend::Qdrant {
                url: format!("http://127.0.0.1:{port}"),
                collection: "docs".into(),
            },
            chunker: ChunkerConfig::default(),
        };
        let store = Arc::new(IndexStore::open(&config, embedder.clone()).await.unwrap());
        let retriever = HybridRetriever::new(
            store.clone(),
            SearchConfig {
                stage_timeout: Duration::from_millis(1500),
                ..SearchConfig::default()
            },
        );
        let lists = retriever
            .ranked_lists("t", "dirty working directory", 5)
            .await;
        assert!(lists.dense.is_none());
        assert_eq!(lists.degraded.len(), 1, "{:?}", lists.degraded);
        assert_eq!(lists.degraded[0].cause, cause, "{:?}", lists.degraded);
        assert_eq!(lists.bm25, Some(vec![]), "BM25 still answers");
        // An ingest with the vector store down fails and leaves no trace in BM25.
        let ingestor = Ingestor::new(store.clone());
        ingestor
            .upsert(doc("t", "git-stash.txt", STASH_V1))
            .await
            .unwrap_err();
        assert!(ingestor.list(None).is_empty());
        let bm25_after = retriever.ranked_lists("t", "dirty", 5).await.bm25.unwrap();
        assert!(bm25_after.is_empty(), "{bm25_after:?}");
    }
    drop(silent);
}

#[tokio::test]
async fn search_serves_bm25_hits_marked_degraded_when_vector_search_fails() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty {
        inner: DenseIndex::open(&dir.path().join("vectors")).unwrap(),
        mode: AtomicU8::new(0),
    });
    let store = Arc::new(
        IndexStore::open_with_vectors(&config(dir.path()), embedder(), faulty.clone())
            .await
            .unwrap(),
    );
    let ingestor = Ingestor::new(store.clone());
    ingestor
        .upsert(doc("t", "git-stash.txt", STASH_V1))
        .await
        .unwrap();
    ingestor
        .upsert(doc("t", "git-clone.txt", CLONE))
        .await
        .unwrap();
    let retriever = HybridRetriever::new(store, SearchConfig::default());
    faulty.mode.store(3, Ordering::SeqCst);
    let result = retriever
        .search("t", "dirty working directory")
        .await
        .unwrap();
    assert_eq!(result.hits[0].chunk.doc_id, "git-stash.txt");
    assert_eq!(result.degraded.len(), 1);
    assert_eq!(result.degraded[0].cause, DegradedCause::VectorError);
    assert!(result.timings.bm25.is_some() && result.timings.vector.is_none());
}
