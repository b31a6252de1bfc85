//! Search latency while an ingest runs, against the same searches on the idle index measured
//! in the same run (the baseline).
//!
//! `cargo run -p switchyard-retrieval --example search_during_ingest -- [CORPUS_DIR] [PRELOAD] [INGEST]`
//!
//! The git-docs corpus (`scripts/fetch_corpus.sh`): its first PRELOAD documents (default 120,
//! by name) are indexed first; then a fixed set of git questions is searched over and over,
//! once with nothing else running (idle) and once while the next INGEST documents (default
//! 40) are upserted one after another (during). Printed: p50/p95 of the whole search and of
//! hit resolution (looking each fused hit up in the catalog and slicing its text, the part
//! that shares state with the writer), each with the ratio during/idle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_retrieval::{
    ChunkerConfig, Embedder, EmbedderConfig, HybridRetriever, IndexConfig, IndexStore, Ingestor,
    NewDocument, SearchConfig, VectorBackend,
};

const QUESTIONS: [&str; 8] = [
    "How do I undo my last commit?",
    "stash changes before switching branches",
    "what does git rebase --onto do",
    "delete a remote branch",
    "show the history of one file",
    "configure my user name and email",
    "resolve a merge conflict",
    "cherry-pick a commit from another branch",
];

fn documents(dir: &Path) -> Vec<(String, String)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let id = p.file_name().unwrap().to_string_lossy().into_owned();
            (id, std::fs::read_to_string(&p).expect("utf-8 text"))
        })
        .collect()
}

/// Per search: the whole search and its hit resolution.
struct Sample {
    total: Duration,
    resolve: Duration,
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, samples: &[Sample], baseline: Option<&[Sample]>) {
    let stat = |samples: &[Sample], pick: fn(&Sample) -> Duration, p: f64| {
        let mut values: Vec<Duration> = samples.iter().map(pick).collect();
        percentile(&mut values, p)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut line = format!("{name:<7} {:>5} searches", samples.len());
    for (label, pick) in [
        ("search", (|s: &Sample| s.total) as fn(&Sample) -> Duration),
        ("hit resolution", |s: &Sample| s.resolve),
    ] {
        for p in [0.5, 0.95] {
            let value = stat(samples, pick, p);
            line += &format!("  {label} p{:.0} {:8.2} ms", p * 100.0, ms(value));
            if let Some(base) = baseline {
                line += &format!(" (x{:.2})", ms(value) / ms(stat(base, pick, p)).max(1e-6));
            }
        }
    }
    println!("{line}");
}

async fn search_once(retriever: &HybridRetriever) -> Vec<Sample> {
    let mut samples = Vec::new();
    for question in QUESTIONS {
        let started = Instant::now();
        let result = retriever.search("default", question).await.expect("search");
        assert!(!result.hits.is_empty(), "no hit for {question:?}");
        samples.push(Sample {
            total: started.elapsed(),
            resolve: result.timings.fusion,
        });
    }
    samples
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/corpus/git-docs"));
    let number = |i: usize, default: usize| {
        args.get(i)
            .map(|n| n.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (preload, ingest) = (number(2, 120), number(3, 40));
    let docs = documents(&corpus);
    assert!(
        docs.len() >= preload + ingest,
        "the corpus has {} documents",
        docs.len()
    );

    let embedder =
        Arc::new(Embedder::load(&EmbedderConfig::from_models_dir(&root.join("models"))).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = IndexConfig {
        dir: dir.path().to_path_buf(),
        vectors: VectorBackend::Embedded,
        chunker: ChunkerConfig::default(),
    };
    let store = Arc::new(IndexStore::open(&config, embedder).await.unwrap());
    let ingestor = Arc::new(Ingestor::new(store.clone()));
    let upsert = |ingestor: Arc<Ingestor>, (id, text): (String, String)| async move {
        ingestor
            .upsert(NewDocument {
                tenant: "default".into(),
                doc_id: id,
                text,
                title: None,
                format: None,
            })
            .await
            .expect("upsert");
    };
    let started = Instant::now();
    for doc in docs[..preload].iter().cloned() {
        upsert(ingestor.clone(), doc).await;
    }
    let stats = store.stats();
    println!(
        "preloaded {} documents, {} chunks in {:.1} s",
        stats.documents,
        stats.chunks,
        started.elapsed().as_secs_f64()
    );
    let retriever = HybridRetriever::new(store.clone(), SearchConfig::default());
    search_once(&retriever).await; // warm-up

    // Idle: as many rounds as the ingest below is expected to allow, at least 5.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.extend(search_once(&retriever).await);
    }

    let done = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (ingestor, done) = (ingestor.clone(), done.clone());
        let batch: Vec<(String, String)> = docs[preload..preload + ingest].to_vec();
        async move {
            let started = Instant::now();
            for doc in batch {
                upsert(ingestor.clone(), doc).await;
            }
            done.store(true, Ordering::SeqCst);
            started.elapsed()
        }
    });
    let mut during = Vec::new();
    while !done.load(Ordering::SeqCst) {
        during.extend(search_once(&retriever).await);
    }
    let ingest_time = writer.await.unwrap();
    println!(
        "ingested {ingest} more documents in {:.1} s while searching",
        ingest_time.as_secs_f64()
    );
    report("idle", &idle, None);
    report("during", &during, Some(&idle));
}
