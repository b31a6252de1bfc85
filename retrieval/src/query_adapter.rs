//! The query adapter: a learned linear map applied to a query's embedding before dense search
//! (`q' = q + A q`), so MiniLM, frozen, is adapted to the corpus without re-embedding it.
//!
//! It is trained contrastively (InfoNCE over every chunk of the index, temperature `τ`, L2 on
//! `A`, Adam) on two kinds of (query, chunk) pairs: synthetic ones made from the chunks
//! themselves (a section heading asks for its section's chunks; a definition-list term, or
//! the first words of its description, asks for the chunk defining it), which cover every
//! page, and hand-written training questions (retrieval query files; every chunk of a
//! grade-2 page is a positive), repeated so that they weigh as much as the synthetic ones.
//! Chunk vectors stay as ingested: only queries move.
//!
//! On disk: `query-adapter.safetensors` (tensor `a`, [dims × dims] f32) and
//! `query-adapter.json` (the embedding model it was trained for, the training files' sha256,
//! the recipe). Loading refuses an adapter trained for another embedding model.

use std::collections::BTreeMap;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RetrievalError};
use crate::store::ChunkRecord;

/// Version of the files' layout.
pub const FORMAT_VERSION: u32 = 1;
pub const WEIGHTS_FILE: &str = "query-adapter.safetensors";
pub const META_FILE: &str = "query-adapter.json";

/// Sections every man page has: their heading says nothing about the chunk.
const GENERIC_SECTIONS: &[&str] = &[
    "OPTIONS",
    "DESCRIPTION",
    "EXAMPLES",
    "SYNOPSIS",
    "GIT",
    "NAME",
    "COMMANDS",
    "SEE ALSO",
    "CONFIGURATION",
    "OUTPUT",
    "DISCUSSION",
    "NOTES",
    "BUGS",
    "ENVIRONMENT",
    "FILES",
    "EXIT STATUS",
];

/// How an adapter is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterTrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f32,
    /// L2 penalty on `A` (keeps the map near the identity).
    pub l2: f32,
    pub temperature: f32,
    /// Each hand-written question is trained on this many times per synthetic pair.
    pub question_repeat: usize,
    pub seed: u64,
}

impl Default for AdapterTrainConfig {
    /// The recipe measured in the README (Evaluation): 600 steps of 512.
    fn default() -> Self {
        Self {
            steps: 600,
            batch: 512,
            learning_rate: 1e-3,
            l2: 0.1,
            temperature: 0.05,
            question_repeat: 20,
            seed: 0,
        }
    }
}

/// A file of training questions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionFile {
    pub file: String,
    pub sha256: String,
    pub questions: usize,
}

/// `query-adapter.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterMeta {
    pub format_version: u32,
    pub embedding_model_sha256: String,
    pub dims: usize,
    pub chunks: usize,
    pub synthetic_pairs: usize,
    pub question_files: Vec<QuestionFile>,
    pub config: AdapterTrainConfig,
    /// Mean InfoNCE loss over the training pairs before and after training.
    pub loss_before: f32,
    pub loss_after: f32,
    /// sha256 of `query-adapter.safetensors`, checked at load (set by `save`).
    #[serde(default)]
    pub weights_sha256: String,
}

/// A loaded adapter.
#[derive(Debug, Clone)]
pub struct QueryAdapter {
    /// `A`, row-major [dims × dims].
    matrix: Vec<f32>,
    meta: AdapterMeta,
}

/// A training query and the indexes (into the chunk matrix) of the chunks that answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingPair {
    pub query: String,
    pub positives: Vec<usize>,
}

fn adapter_error(path: &Path, reason: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::QueryAdapter {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl QueryAdapter {
    pub fn meta(&self) -> &AdapterMeta {
        &self.meta
    }

    /// `q + A q`, unit length (the vector store compares by cosine either way).
    pub fn apply(&self, query: &[f32]) -> Vec<f32> {
        let dims = self.meta.dims;
        let mut out: Vec<f32> = (0..dims)
            .map(|i| {
                let row = &self.matrix[i * dims..(i + 1) * dims];
                query[i] + row.iter().zip(query).map(|(a, q)| a * q).sum::<f32>()
            })
            .collect();
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            out.iter_mut().for_each(|v| *v /= norm);
        }
        out
    }

    /// Writes both files into `dir` (created if needed), each replaced atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let dims = self.meta.dims;
        let bytes: Vec<u8> = self.matrix.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![dims, dims], &bytes)
            .map_err(|e| adapter_error(dir, e))?;
        let weights =
            safetensors::serialize([("a", view)], None).map_err(|e| adapter_error(dir, e))?;
        let meta = AdapterMeta {
            weights_sha256: sha256_hex(&weights),
            ..self.meta.clone()
        };
        let meta = serde_json::to_vec_pretty(&meta).expect("meta serialises");
        for (name, bytes) in [(WEIGHTS_FILE, weights), (META_FILE, meta)] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, dir.join(name))?;
        }
        Ok(())
    }

    /// Loads the adapter in `dir`, refusing one trained for another embedding model than the
    /// one running (`embedding_model_sha256`, `dims`).
    pub fn load(dir: &Path, embedding_model_sha256: &str, dims: usize) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let meta: AdapterMeta = serde_json::from_slice(&std::fs::read(&meta_path)?)
            .map_err(|e| adapter_error(&meta_path, e))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(adapter_error(
                &meta_path,
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    meta.format_version
                ),
            ));
        }
        if meta.embedding_model_sha256 != embedding_model_sha256 || meta.dims != dims {
            return Err(adapter_error(
                &meta_path,
                format!(
                    "trained for the embedding model {} ({} dims), the index uses {embedding_model_sha256} ({dims} dims); train it again",
                    meta.embedding_model_sha256, meta.dims
                ),
            ));
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path)?;
        if sha256_hex(&bytes) != meta.weights_sha256 {
            return Err(adapter_error(
                &weights_path,
                format!(
                    "sha256 is not the {} its {META_FILE} records",
                    meta.weights_sha256
                ),
            ));
        }
        let tensors =
            SafeTensors::deserialize(&bytes).map_err(|e| adapter_error(&weights_path, e))?;
        let view = tensors
            .tensor("a")
            .map_err(|e| adapter_error(&weights_path, e))?;
        if view.dtype() != Dtype::F32 || view.shape() != [dims, dims] {
            return Err(adapter_error(
                &weights_path,
                format!(
                    "tensor `a` is {:?} {:?}, expected F32 [{dims}, {dims}]",
                    view.dtype(),
                    view.shape()
                ),
            ));
        }
        let matrix: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        if matrix.iter().any(|v| !v.is_finite()) {
            return Err(adapter_error(&weights_path, "NaN or infinite values"));
        }
        Ok(Self { matrix, meta })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    crate::catalog::hex(&sha2::Sha256::digest(bytes))
}

/// The first sentence of `text` (through the first `.`, `!` or `?` followed by a space).
fn first_sentence(text: &str) -> &str {
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_some_and(|n| *n == b' ') {
            return &text[..=i];
        }
    }
    text
}

/// Definition-list entries of an AsciiDoc chunk: (`term`, its description's first paragraph
/// with whitespace collapsed).
fn definitions(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_end();
        let Some(term) = trimmed.strip_suffix("::") else {
            continue;
        };
        if term.is_empty() || line.starts_with(char::is_whitespace) {
            continue;
        }
        let paragraph: Vec<&str> = lines[i + 1..]
            .iter()
            .skip_while(|l| l.is_empty())
            .take_while(|l| !l.trim().is_empty())
            .copied()
            .collect();
        let description = paragraph
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !description.is_empty() && !description.ends_with("::") {
            out.push((term.to_string(), description));
        }
    }
    out
}

/// Synthetic (query, chunks) pairs made from the chunks' own headings and definition lists;
/// the same query from several chunks is one pair with all of them as positives.
pub fn synthetic_pairs(chunks: &[ChunkRecord]) -> Vec<TrainingPair> {
    let mut queries: Vec<String> = Vec::new();
    let mut positives: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut add = |queries: &mut Vec<String>, query: String, chunk: usize| {
        let entry = positives.entry(query.clone()).or_default();
        if entry.is_empty() {
            queries.push(query);
        }
        if !entry.contains(&chunk) {
            entry.push(chunk);
        }
    };
    for (index, chunk) in chunks.iter().enumerate() {
        if let Some(section) = &chunk.section {
            let heading: String = section
                .chars()
                .filter(|c| !matches!(c, '=' | '`' | '\'' | '"'))
                .collect();
            let heading = heading.trim();
            let generic = GENERIC_SECTIONS
                .iter()
                .any(|g| g.eq_ignore_ascii_case(heading));
            if heading.chars().count() > 6 && !generic {
                // Alternately the heading as it stands and as a question.
                let query = if queries.len().is_multiple_of(2) {
                    heading.to_string()
                } else {
                    format!("how does {} work", heading.to_lowercase())
                };
                add(&mut queries, query, index);
            }
        }
        let command = chunk
            .title
            .split(" - ")
            .next()
            .and_then(|name| name.strip_prefix("git-"))
            .map(|rest| format!("git {rest}"));
        for (term, description) in definitions(&chunk.text) {
            let sentence = first_sentence(&description);
            let words: Vec<&str> = sentence.trim_end_matches('.').split_whitespace().collect();
            let query = if words.len() >= 5 && queries.len().is_multiple_of(2) {
                words[..words.len().min(12)].join(" ").to_lowercase()
            } else {
                let name: String = term
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .split('=')
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !matches!(c, '`' | '\''))
                    .collect();
                match &command {
                    Some(command) => format!("what does {} do in {command}", name.trim()),
                    None => format!("what does {} do", name.trim()),
                }
            };
            add(&mut queries, query, index);
        }
    }
    queries
        .into_iter()
        .map(|query| {
            let positives = positives.remove(&query).unwrap_or_default();
            TrainingPair { query, positives }
        })
        .collect()
}

/// A matrix operand: its values and the strides of its rows and columns.
struct Operand<'a>(&'a [f32], usize, usize);

/// `c = alpha · a · b + beta · c` with `a` [m × k], `b` [k × n] and `c` row-major [m × n].
fn gemm(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: &mut [f32],
) {
    let last = |o: &Operand, rows: usize, cols: usize| (rows - 1) * o.1 + (cols - 1) * o.2;
    assert!(m > 0 && k > 0 && n > 0);
    assert!(last(&a, m, k) < a.0.len() && last(&b, k, n) < b.0.len() && m * n <= c.len());
    // SAFETY: the asserts keep every index the strides reach inside the slices.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.0.as_ptr(),
            a.1 as isize,
            a.2 as isize,
            b.0.as_ptr(),
            b.1 as isize,
            b.2 as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// One pass of a batch: its mean loss, and with `gradient` the gradient with respect to the
/// adapted queries, [batch × dims].
fn batch_loss(
    adapted: &[f32],
    positives: &[&[usize]],
    chunk_vectors: &[f32],
    dims: usize,
    temperature: f32,
    gradient: Option<&mut Vec<f32>>,
) -> f32 {
    let (batch, chunks) = (positives.len(), chunk_vectors.len() / dims);
    let mut scores = vec![0.0f32; batch * chunks];
    // adapted · Cᵀ
    let (queries, vectors) = (Operand(adapted, dims, 1), Operand(chunk_vectors, 1, dims));
    gemm(
        (batch, dims, chunks),
        1.0,
        queries,
        vectors,
        0.0,
        &mut scores,
    );
    let mut loss = 0.0;
    // Each row becomes (softmax over all chunks) − (softmax over the positives).
    for (row, positive) in scores.chunks_exact_mut(chunks).zip(positives) {
        let max = row.iter().fold(f32::MIN, |m, s| m.max(*s / temperature));
        let mut total = 0.0f32;
        for s in row.iter_mut() {
            *s = (*s / temperature - max).exp();
            total += *s;
        }
        let positive_total: f32 = positive.iter().map(|&j| row[j]).sum();
        loss += (total.ln() - positive_total.max(f32::MIN_POSITIVE).ln()) / batch as f32;
        let positive_weights: Vec<f32> =
            positive.iter().map(|&j| row[j] / positive_total).collect();
        row.iter_mut().for_each(|s| *s /= total);
        for (&j, w) in positive.iter().zip(positive_weights) {
            row[j] -= w;
        }
    }
    if let Some(gradient) = gradient {
        gradient.resize(batch * dims, 0.0);
        // (P_all − P_positive) · C / τ / batch
        let (weights, vectors) = (Operand(&scores, chunks, 1), Operand(chunk_vectors, dims, 1));
        let scale = 1.0 / (temperature * batch as f32);
        gemm(
            (batch, chunks, dims),
            scale,
            weights,
            vectors,
            0.0,
            gradient,
        );
    }
    loss
}

/// `x + x · Aᵀ` for a batch `x` [batch × dims].
fn adapt_batch(x: &[f32], a: &[f32], dims: usize) -> Vec<f32> {
    let batch = x.len() / dims;
    let mut out = vec![0.0; x.len()];
    gemm(
        (batch, dims, dims),
        1.0,
        Operand(x, dims, 1),
        Operand(a, 1, dims),
        0.0,
        &mut out,
    );
    out.iter_mut().zip(x).for_each(|(o, v)| *o += v);
    out
}

/// Mean loss of the pairs under `a` (in batches, no gradient).
fn mean_loss(
    queries: &[f32],
    positives: &[&[usize]],
    chunk_vectors: &[f32],
    a: &[f32],
    dims: usize,
    config: &AdapterTrainConfig,
) -> f32 {
    let mut total = 0.0;
    for (start, batch) in positives.chunks(config.batch.max(1)).enumerate() {
        let begin = start * config.batch.max(1) * dims;
        let x = &queries[begin..begin + batch.len() * dims];
        let adapted = adapt_batch(x, a, dims);
        total += batch_loss(
            &adapted,
            batch,
            chunk_vectors,
            dims,
            config.temperature,
            None,
        ) * batch.len() as f32;
    }
    total / positives.len().max(1) as f32
}

/// Trains `A` for queries (embedded, [pairs × dims]) against `chunk_vectors` [chunks × dims];
/// `positives[i]` indexes the chunks answering query `i`. Returns `A` and the mean loss
/// before and after.
pub fn train(
    queries: &[f32],
    positives: &[Vec<usize>],
    chunk_vectors: &[f32],
    dims: usize,
    config: &AdapterTrainConfig,
) -> Result<(Vec<f32>, f32, f32)> {
    let chunks = chunk_vectors.len() / dims;
    let usable: Vec<usize> = (0..positives.len())
        .filter(|&i| !positives[i].is_empty() && positives[i].iter().all(|&j| j < chunks))
        .collect();
    if usable.is_empty() || chunks == 0 {
        return Err(RetrievalError::InvalidQuerySet(
            "no training query has an answering chunk in the index".into(),
        ));
    }
    let all: Vec<&[usize]> = usable.iter().map(|&i| positives[i].as_slice()).collect();
    let all_queries: Vec<f32> = usable
        .iter()
        .flat_map(|&i| queries[i * dims..(i + 1) * dims].iter().copied())
        .collect();
    let mut a = vec![0.0f32; dims * dims];
    let loss_before = mean_loss(&all_queries, &all, chunk_vectors, &a, dims, config);
    let (mut m, mut v) = (vec![0.0f32; a.len()], vec![0.0f32; a.len()]);
    let (beta1, beta2) = (0.9f32, 0.999f32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..usable.len()).collect();
    let mut cursor = order.len();
    let batch_size = config.batch.clamp(1, order.len());
    let mut gradient = Vec::new();
    let mut grad_a = vec![0.0f32; a.len()];
    for step in 1..=config.steps {
        // Batches walk a fresh shuffle each epoch.
        if cursor + batch_size > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let batch = &order[cursor..cursor + batch_size];
        cursor += batch_size;
        let x: Vec<f32> = batch
            .iter()
            .flat_map(|&i| all_queries[i * dims..(i + 1) * dims].iter().copied())
            .collect();
        let batch_positives: Vec<&[usize]> = batch.iter().map(|&i| all[i]).collect();
        let adapted = adapt_batch(&x, &a, dims);
        batch_loss(
            &adapted,
            &batch_positives,
            chunk_vectors,
            dims,
            config.temperature,
            Some(&mut gradient),
        );
        // dL/dA = Gᵀ · x + l2 · A
        grad_a.copy_from_slice(&a);
        let (g, xs) = (Operand(&gradient, 1, dims), Operand(&x, dims, 1));
        gemm((dims, batch_size, dims), 1.0, g, xs, config.l2, &mut grad_a);
        let (correction1, correction2) =
            (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32));
        for i in 0..a.len() {
            m[i] = beta1 * m[i] + (1.0 - beta1) * grad_a[i];
            v[i] = beta2 * v[i] + (1.0 - beta2) * grad_a[i] * grad_a[i];
            a[i] -=
                config.learning_rate * (m[i] / correction1) / ((v[i] / correction2).sqrt() + 1e-8);
        }
    }
    let loss_after = mean_loss(&all_queries, &all, chunk_vectors, &a, dims, config);
    Ok((a, loss_before, loss_after))
}

impl QueryAdapter {
    /// An adapter from a trained matrix and its record.
    pub fn new(matrix: Vec<f32>, meta: AdapterMeta) -> Result<Self> {
        if matrix.len() != meta.dims * meta.dims {
            return Err(RetrievalError::InvalidQuerySet(format!(
                "the adapter matrix has {} values, expected {}",
                matrix.len(),
                meta.dims * meta.dims
            )));
        }
        Ok(Self { matrix, meta })
    }
}

/// Trains an adapter for the chunks of `tenant` in `store`: embeds every chunk as ingested
/// and every training query, then [`train`]s on the synthetic pairs and the questions of
/// `question_files` (retrieval query files; chunks of grade-2 pages answer).
pub async fn train_for_index(
    store: &crate::IndexStore,
    tenant: &str,
    question_files: &[std::path::PathBuf],
    config: &AdapterTrainConfig,
) -> Result<QueryAdapter> {
    let chunks = store.chunk_records(tenant);
    let mut pairs = synthetic_pairs(&chunks);
    let synthetic = pairs.len();
    let mut by_document: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, chunk) in chunks.iter().enumerate() {
        by_document
            .entry(chunk.doc_id.as_str())
            .or_default()
            .push(i);
    }
    let mut files = Vec::new();
    for path in question_files {
        let questions = crate::eval::load_queries(path)?;
        let bytes = std::fs::read(path)?;
        files.push(QuestionFile {
            file: path.display().to_string(),
            sha256: sha256_hex(&bytes),
            questions: questions.len(),
        });
        for question in questions {
            let positives: Vec<usize> = question
                .relevant
                .iter()
                .filter(|(_, grade)| **grade == 2)
                .flat_map(|(doc, _)| by_document.get(doc.as_str()).into_iter().flatten().copied())
                .collect();
            for _ in 0..config.question_repeat.max(1) {
                pairs.push(TrainingPair {
                    query: question.query.clone(),
                    positives: positives.clone(),
                });
            }
        }
    }
    let embedder = store.embedder().clone();
    let chunk_inputs: Vec<String> = chunks
        .iter()
        .map(|c| crate::store::embedding_input(&c.title, &c.text))
        .collect();
    // Each distinct query once (the questions are repeated).
    let mut distinct: Vec<String> = pairs.iter().map(|p| p.query.clone()).collect();
    distinct.sort();
    distinct.dedup();
    let (chunk_vectors, query_vectors) = tokio::task::spawn_blocking(move || {
        let queries = embedder.embed(&distinct)?;
        let by_query: BTreeMap<String, Vec<f32>> = distinct.into_iter().zip(queries).collect();
        Ok::<_, RetrievalError>((embedder.embed(&chunk_inputs)?, by_query))
    })
    .await
    .map_err(|e| RetrievalError::Embedder(e.to_string()))??;
    let dims = crate::EMBEDDING_DIMS;
    let flat_chunks: Vec<f32> = chunk_vectors.into_iter().flatten().collect();
    let flat_queries: Vec<f32> = pairs
        .iter()
        .flat_map(|p| query_vectors[&p.query].iter().copied())
        .collect();
    let positives: Vec<Vec<usize>> = pairs.into_iter().map(|p| p.positives).collect();
    let config_copy = config.clone();
    let (matrix, loss_before, loss_after) = tokio::task::spawn_blocking(move || {
        train(&flat_queries, &positives, &flat_chunks, dims, &config_copy)
    })
    .await
    .map_err(|e| RetrievalError::Embedder(e.to_string()))??;
    QueryAdapter::new(
        matrix,
        AdapterMeta {
            format_version: FORMAT_VERSION,
            embedding_model_sha256: store.embedder().model_sha256().to_string(),
            dims,
            chunks: chunks.len(),
            synthetic_pairs: synthetic,
            question_files: files,
            config: config.clone(),
            loss_before,
            loss_after,
            weights_sha256: String::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn chunk(doc: &str, index: usize, title: &str, section: &str, text: &str) -> ChunkRecord {
        ChunkRecord {
            chunk_id: format!("{doc}#{index}"),
            doc_id: doc.to_string(),
            title: title.to_string(),
            section: Some(section.to_string()),
            start: 0,
            end: text.len(),
            text: text.to_string(),
        }
    }

    #[test]
    fn synthetic_pairs_come_from_headings_and_definition_lists() {
        let title = "git-commit - Record changes to the repository";
        let chunks = [
            chunk("git-commit.txt", 0, title, "OPTIONS", "--amend::\n\tReplace the tip of the current branch by creating a new commit.\n\n-q::\n--quiet::\n\tSuppress the summary.\n"),
            chunk("howto/x.txt", 0, "x", "Recovering from upstream rebase", "Some text."),
            chunk("howto/x.txt", 1, "x", "Recovering from upstream rebase", "More text.\n  indented::\nnot a term"),
        ];
        let pairs = synthetic_pairs(&chunks);
        let got: Vec<(&str, &[usize])> = pairs
            .iter()
            .map(|p| (p.query.as_str(), p.positives.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                // A description of five words or more asks in its own first words, every
                // other definition by its term's name (the next paragraph's `--quiet::`
                // line belongs to `-q`'s description, as AsciiDoc joins the two terms).
                (
                    "replace the tip of the current branch by creating a new commit",
                    &[0][..]
                ),
                ("what does -q do in git commit", &[0][..]),
                ("what does --quiet do in git commit", &[0][..]),
                // The generic OPTIONS heading gives nothing; a section's heading asks,
                // alternately as a question and as it stands. The indented line is no term.
                ("how does recovering from upstream rebase work", &[1][..]),
                ("Recovering from upstream rebase", &[2][..]),
            ]
        );
    }

    /// Chunks are random unit vectors; each query is its chunk seen through a fixed random
    /// distortion plus noise, so plain cosine often misses and a linear map can recover it.
    fn distorted_task(
        seed: u64,
        dims: usize,
        chunks: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<Vec<usize>>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let unit = |v: Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let vectors: Vec<Vec<f32>> = (0..chunks)
            .map(|_| unit((0..dims).map(|_| rng.gen_range(-1.0..1.0)).collect()))
            .collect();
        let distortion: Vec<f32> = (0..dims * dims)
            .map(|i| {
                if i % (dims + 1) == 0 {
                    0.3
                } else {
                    rng.gen_range(-0.5..0.5)
                }
            })
            .collect();
        let mut queries = Vec::new();
        let mut positives = Vec::new();
        for (j, c) in vectors.iter().enumerate().cycle().take(chunks * 4) {
            let q: Vec<f32> = (0..dims)
                .map(|r| {
                    let row = &distortion[r * dims..(r + 1) * dims];
                    row.iter().zip(c).map(|(a, b)| a * b).sum::<f32>() + rng.gen_range(-0.05..0.05)
                })
                .collect();
            queries.extend(unit(q));
            positives.push(vec![j]);
        }
        (queries, vectors.concat(), positives)
    }

    fn top1(
        queries: &[f32],
        chunks: &[f32],
        positives: &[Vec<usize>],
        dims: usize,
        adapter: Option<&QueryAdapter>,
    ) -> f64 {
        let hits = queries
            .chunks_exact(dims)
            .zip(positives)
            .filter(|(q, p)| {
                let q = adapter.map(|a| a.apply(q)).unwrap_or_else(|| q.to_vec());
                let best = chunks
                    .chunks_exact(dims)
                    .map(|c| c.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>())
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(j, _)| j);
                best == Some(p[0])
            })
            .count();
        hits as f64 / positives.len() as f64
    }

    fn meta(dims: usize, config: AdapterTrainConfig) -> AdapterMeta {
        AdapterMeta {
            format_version: FORMAT_VERSION,
            embedding_model_sha256: "abc".into(),
            dims,
            chunks: 0,
            synthetic_pairs: 0,
            question_files: Vec::new(),
            config,
            loss_before: 0.0,
            loss_after: 0.0,
            weights_sha256: String::new(),
        }
    }

    #[test]
    fn training_recovers_a_distortion_that_cosine_alone_misses() {
        let dims = 16;
        let (queries, chunks, positives) = distorted_task(5, dims, 60);
        let config = AdapterTrainConfig {
            steps: 400,
            batch: 64,
            learning_rate: 1e-2,
            l2: 1e-4,
            temperature: 0.05,
            question_repeat: 1,
            seed: 1,
        };
        let (matrix, before, after) = train(&queries, &positives, &chunks, dims, &config).unwrap();
        let adapter = QueryAdapter::new(matrix, meta(dims, config)).unwrap();
        let (plain, adapted) = (
            top1(&queries, &chunks, &positives, dims, None),
            top1(&queries, &chunks, &positives, dims, Some(&adapter)),
        );
        assert!(after < before * 0.5, "loss {before} -> {after}");
        assert!(plain < 0.6 && adapted > 0.9, "top-1 {plain} -> {adapted}");
    }

    #[test]
    fn an_adapter_round_trips_and_is_refused_for_another_embedding_model() {
        let dims = 4;
        let matrix: Vec<f32> = (0..16).map(|i| i as f32 / 10.0).collect();
        let adapter = QueryAdapter::new(matrix, meta(dims, AdapterTrainConfig::default())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        adapter.save(dir.path()).unwrap();
        let loaded = QueryAdapter::load(dir.path(), "abc", dims).unwrap();
        let q = [1.0, 0.0, 0.5, -0.5];
        assert_eq!(loaded.apply(&q), adapter.apply(&q));
        assert_ne!(
            adapter.apply(&q),
            QueryAdapter::new(vec![0.0; 16], meta(dims, AdapterTrainConfig::default()))
                .unwrap()
                .apply(&q)
        );
        for (sha, dims) in [("other", 4), ("abc", 8)] {
            let err = QueryAdapter::load(dir.path(), sha, dims).unwrap_err();
            assert!(
                matches!(&err, RetrievalError::QueryAdapter { reason, .. } if reason.contains("train it again")),
                "{err}"
            );
        }
        // Weights that are not the ones the metadata records (here, another adapter's).
        let other = QueryAdapter::new(vec![0.5; 16], meta(dims, AdapterTrainConfig::default()));
        let other_dir = tempfile::tempdir().unwrap();
        other.unwrap().save(other_dir.path()).unwrap();
        std::fs::copy(
            other_dir.path().join(WEIGHTS_FILE),
            dir.path().join(WEIGHTS_FILE),
        )
        .unwrap();
        let err = QueryAdapter::load(dir.path(), "abc", dims).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }

    #[test]
    fn training_without_an_answering_chunk_is_an_error() {
        let err = train(
            &[1.0, 0.0],
            &[vec![5]],
            &[1.0, 0.0],
            2,
            &AdapterTrainConfig::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no training query"), "{err}");
    }
}
