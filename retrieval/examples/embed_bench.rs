//! Embedding throughput on the git-docs corpus: batch sizes against the unbatched baseline,
//! measured in the same run.
//!
//! `cargo run -p switchyard-retrieval --example embed_bench -- [CORPUS_DIR] [CHUNKS] [SIZES]`
//! (CORPUS_DIR from `scripts/fetch_corpus.sh`; CHUNKS defaults to 1000; SIZES, the batch sizes
//! compared with the baseline, default to 4,16,64).

use std::path::{Path, PathBuf};
use std::time::Instant;

use switchyard_retrieval::{
    approx_tokens, chunk_document, ChunkerConfig, DocFormat, Embedder, EmbedderConfig,
};

fn texts(dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus folder")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            texts(&path, out);
        } else if path.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(&path).expect("utf-8 text");
            out.push((path.display().to_string(), text));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/corpus/git-docs"));
    let limit: usize = args
        .get(2)
        .map(|n| n.parse().expect("CHUNKS is a number"))
        .unwrap_or(1000);

    let mut docs = Vec::new();
    texts(&corpus, &mut docs);
    let chunks: Vec<String> = docs
        .iter()
        .flat_map(|(id, text)| {
            let format = DocFormat::detect(id, text).unwrap_or(DocFormat::Text);
            chunk_document(id, text, format, ChunkerConfig::default(), &approx_tokens)
        })
        .map(|c| c.text)
        .take(limit)
        .collect();

    let sizes: Vec<usize> = args
        .get(3)
        .map(|s| {
            s.split(',')
                .map(|n| n.parse().expect("SIZES are numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![4, 16, 64]);

    let rate = |batch_size: usize| {
        let mut config = EmbedderConfig::from_models_dir(&root.join("models"));
        config.batch_size = batch_size;
        let embedder = Embedder::load(&config).expect("scripts/fetch_models.py");
        embedder
            .embed(&chunks[..8.min(chunks.len())])
            .expect("warm-up");
        let start = Instant::now();
        // As ingest does: a document's or a corpus's chunks in one call, batched inside.
        embedder.embed(&chunks).expect("embedding");
        chunks.len() as f64 / start.elapsed().as_secs_f64()
    };
    println!(
        "embedding {} chunks of the git docs (all-MiniLM-L6-v2 int8, ONNX Runtime 1.31.1)",
        chunks.len()
    );
    let base = rate(1);
    println!("batch  1 (baseline): {base:8.1} chunks/s");
    for size in sizes {
        let r = rate(size);
        println!(
            "batch {size:>2}:            {r:8.1} chunks/s  x{:.2} vs baseline",
            r / base
        );
    }
}
