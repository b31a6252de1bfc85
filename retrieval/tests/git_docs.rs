//! Chunking and BM25 on the real sample corpus: git's documentation (Debian's `git-doc`),
//! from `../shared/corpus/git-docs` or `scripts/fetch_corpus.sh`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use switchyard_retrieval::{
    approx_tokens, chunk_document, Bm25Index, Chunk, ChunkerConfig, DocFormat, Embedder,
    EmbedderConfig, HybridRetriever, IndexConfig, IndexStore, Ingestor, NewDocument, SearchConfig,
    VectorBackend,
};

fn corpus_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let candidates = [
        std::env::var_os("SWITCHYARD_CORPUS_DIR").map(PathBuf::from),
        Some(root.join("../shared/corpus/git-docs")),
        Some(root.join("data/corpus/git-docs")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("git-add.txt").is_file())
        .expect("git-docs corpus missing: run scripts/fetch_corpus.sh (the test command does)")
}

/// Every `.txt` file as (doc id = path relative to the corpus, text).
fn documents() -> Vec<(String, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "txt") {
                let id = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((id, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let dir = corpus_dir();
    let mut docs = Vec::new();
    walk(&dir, &dir, &mut docs);
    docs.sort();
    docs
}

fn chunk_all(docs: &[(String, String)]) -> Vec<(String, Vec<Chunk>)> {
    docs.iter()
        .map(|(id, text)| {
            let format = DocFormat::detect(id, text).expect("txt is a known format");
            (
                id.clone(),
                chunk_document(id, text, format, ChunkerConfig::default(), &approx_tokens),
            )
        })
        .collect()
}

#[test]
fn every_chunk_slices_its_source_exactly_and_fits_the_budget() {
    let docs = documents();
    assert_eq!(docs.len(), 292, "the git-doc package has 292 .txt files");
    let chunked = chunk_all(&docs);
    let mut ids = HashSet::new();
    let mut total = 0;
    for ((_, text), (_, chunks)) in docs.iter().zip(&chunked) {
        let chars: Vec<char> = text.chars().collect();
        for chunk in chunks {
            let slice: String = chars[chunk.start..chunk.end].iter().collect();
            assert_eq!(slice, chunk.text, "{}", chunk.chunk_id);
            assert!(!chunk.text.trim().is_empty(), "{}", chunk.chunk_id);
            let words = chunk.text.split_whitespace().count();
            assert!(
                approx_tokens(&chunk.text) <= ChunkerConfig::default().max_tokens || words == 1,
                "{} is over budget ({} tokens): {:?}",
                chunk.chunk_id,
                approx_tokens(&chunk.text),
                chunk.text
            );
            assert!(
                ids.insert(chunk.chunk_id.clone()),
                "duplicate id {}",
                chunk.chunk_id
            );
        }
        total += chunks.len();
    }
    assert!(
        total > 2000,
        "git's docs make thousands of chunks, got {total}"
    );
    // Sections are found: git-add.txt has NAME, SYNOPSIS, DESCRIPTION, OPTIONS...
    let add = &chunked
        .iter()
        .find(|(id, _)| id == "git-add.txt")
        .unwrap()
        .1;
    let sections: HashSet<_> = add.iter().filter_map(|c| c.section.as_deref()).collect();
    for s in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"] {
        assert!(sections.contains(s), "{s} missing from {sections:?}");
    }
}

#[test]
fn bm25_finds_the_right_manual_pages() {
    let docs = documents();
    let chunked = chunk_all(&docs);
    let dir = tempfile::tempdir().unwrap();
    let index = Bm25Index::open(dir.path()).unwrap();
    for (id, chunks) in &chunked {
        let title = id.trim_end_matches(".txt");
        index
            .replace_document("default", id, title, chunks)
            .unwrap();
    }
    let total: usize = chunked.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(index.num_chunks(), total as u64);
    for (query, expected) in [
        ("stash away my uncommitted changes", "git-stash.txt"),
        (
            "cherry pick a commit from another branch",
            "git-cherry-pick.txt",
        ),
        (
            "binary search for the commit that introduced a bug",
            "git-bisect.txt",
        ),
        (
            "remove untracked files from the working tree",
            "git-clean.txt",
        ),
    ] {
        let hits = index.search("default", query, 5).unwrap();
        let docs: Vec<&str> = hits
            .iter()
            .map(|h| h.id.split('#').next().unwrap())
            .collect();
        assert!(docs.contains(&expected), "{query:?}: {docs:?}");
    }
}

/// Dense retrieval finds what BM25 cannot match by words, and RRF keeps both kinds of hit.
#[tokio::test]
async fn hybrid_retrieval_over_a_slice_of_the_corpus_cites_exact_text() {
    let wanted = [
        "git-stash.txt",
        "git-bisect.txt",
        "git-clean.txt",
        "git-cherry-pick.txt",
        "git-revert.txt",
        "git-blame.txt",
        "git-tag.txt",
        "git-worktree.txt",
    ];
    let docs: Vec<_> = documents()
        .into_iter()
        .filter(|(id, _)| wanted.contains(&id.as_str()))
        .collect();
    assert_eq!(docs.len(), wanted.len());
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let embedder = Arc::new(
        Embedder::load(&EmbedderConfig::from_models_dir(&models)).expect("scripts/fetch_models.py"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = IndexConfig {
        dir: dir.path().to_path_buf(),
        vectors: VectorBackend::Embedded,
        chunker: ChunkerConfig::default(),
    };
    let store = Arc::new(IndexStore::open(&config, embedder).await.unwrap());
    let ingestor = Ingestor::new(store.clone());
    for (id, text) in &docs {
        let report = ingestor
            .upsert(NewDocument {
                tenant: "default".into(),
                doc_id: id.clone(),
                text: text.clone(),
                title: None,
                format: None,
            })
            .await
            .unwrap();
        assert!(report.chunks > 0);
    }
    let listed = ingestor.list(None);
    assert_eq!(listed.len(), wanted.len());
    let stash = listed.iter().find(|d| d.id == "git-stash.txt").unwrap();
    assert!(stash.title.starts_with("git-stash - "), "{}", stash.title);
    assert_eq!(
        store.vectors_num_chunks().await.unwrap(),
        store.stats().chunks
    );

    let retriever = HybridRetriever::new(store, SearchConfig::default());
    // Phrased without the manual's words ("stash", "bisect").
    for (query, expected) in [
        (
            "put my half-done edits aside so I can switch tasks",
            "git-stash.txt",
        ),
        (
            "find which change broke the build by halving the history",
            "git-bisect.txt",
        ),
        ("who last modified each line of a file", "git-blame.txt"),
    ] {
        let result = retriever.search("default", query).await.unwrap();
        assert!(result.degraded.is_empty());
        let found: Vec<&str> = result
            .hits
            .iter()
            .map(|h| h.chunk.doc_id.as_str())
            .collect();
        assert!(found.contains(&expected), "{query:?}: {found:?}");
        // Every hit's offsets slice its text out of the original file.
        for hit in &result.hits {
            let source = &docs
                .iter()
                .find(|(id, _)| *id == hit.chunk.doc_id)
                .unwrap()
                .1;
            let sliced: String = source
                .chars()
                .skip(hit.chunk.start)
                .take(hit.chunk.end - hit.chunk.start)
                .collect();
            assert_eq!(sliced, hit.chunk.text, "{}", hit.chunk.chunk_id);
        }
    }
}

/// The eval pipeline on a slice of the corpus: the first dev-set queries whose judged pages are
/// small, over those pages plus distractors. Scores must be sane and hybrid must find most
/// relevant pages (a broken retriever or metric drops it far below).
#[tokio::test]
async fn retrieval_eval_runs_on_a_slice_of_the_corpus() {
    use switchyard_retrieval::eval::{evaluate, load_queries, Method};
    use switchyard_retrieval::FusionMethod;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let all = documents();
    let size = |id: &str| {
        all.iter()
            .find(|(d, _)| d == id)
            .map_or(usize::MAX, |(_, t)| t.len())
    };
    let queries: Vec<_> = load_queries(&root.join("eval/git-docs-dev.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|q| q.relevant.keys().all(|id| size(id) < 20_000))
        .take(12)
        .collect();
    assert_eq!(queries.len(), 12);
    let mut wanted: HashSet<String> = queries
        .iter()
        .flat_map(|q| q.relevant.keys().cloned())
        .collect();
    wanted.extend(
        all.iter()
            .filter(|(id, text)| id.starts_with("git-") && text.len() < 8_000)
            .take(15)
            .map(|(id, _)| id.clone()),
    );

    let models = root.join("../models");
    let embedder = Arc::new(
        Embedder::load(&EmbedderConfig::from_models_dir(&models)).expect("scripts/fetch_models.py"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = IndexConfig {
        dir: dir.path().to_path_buf(),
        vectors: VectorBackend::Embedded,
        chunker: ChunkerConfig::default(),
    };
    let store = Arc::new(IndexStore::open(&config, embedder).await.unwrap());
    let ingestor = Ingestor::new(store.clone());
    for (id, text) in all.iter().filter(|(id, _)| wanted.contains(id)) {
        ingestor
            .upsert(NewDocument {
                tenant: "default".into(),
                doc_id: id.clone(),
                text: text.clone(),
                title: None,
                format: None,
            })
            .await
            .unwrap();
    }
    let retriever = HybridRetriever::new(store, SearchConfig::default());
    let methods = [
        Method::Bm25,
        Method::Dense,
        Method::Fused(FusionMethod::Rrf { k: 60.0 }),
    ];
    let report = evaluate(&retriever, "default", &queries, &methods, 50, 4).await;
    assert_eq!(report.queries, 12);
    assert_eq!(report.degraded, 0);
    assert_eq!(report.scores.len(), 3);
    for row in &report.scores {
        for value in [row.ndcg, row.recall, row.mrr, row.answer_in_top_k] {
            assert!((0.0..=1.0).contains(&value), "{row:?}");
        }
    }
    let rrf = &report.scores[2];
    assert!(rrf.recall > 0.6 && rrf.ndcg > 0.4, "{:?}", report.scores);
    for (stage, p) in &report.latency {
        assert!(p.p50 <= p.p95, "{stage}");
    }
}
