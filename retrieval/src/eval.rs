//! Retrieval evaluation: nDCG@10, Recall@10 and MRR@10 per method over a graded query set,
//! and per-stage latency.
//!
//! Relevance is judged per document (`{"doc id": grade}`, grade 1 or 2); a method's ranked
//! chunks become a ranked list of distinct documents (first chunk wins). Unjudged documents
//! count as irrelevant.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::chunk::document_of;
use crate::error::{Result, RetrievalError};
use crate::fusion::{fuse, FusionMethod, Scored};
use crate::hybrid::{select_sources, HybridRetriever};

/// Cut-off of every metric.
pub const CUTOFF: usize = 10;

/// One line of a query set. Other fields (notes, tags) are ignored; without an `id` the
/// line number is the id.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalQuery {
    #[serde(default)]
    pub id: String,
    pub query: String,
    pub relevant: BTreeMap<String, u8>,
}

/// Reads a JSONL query set; every line must parse and judge at least one document.
pub fn load_queries(path: &Path) -> Result<Vec<EvalQuery>> {
    let text = std::fs::read_to_string(path)?;
    let mut queries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut query: EvalQuery = serde_json::from_str(line).map_err(|e| {
            RetrievalError::InvalidQuerySet(format!("{} line {}: {e}", path.display(), n + 1))
        })?;
        if query.id.is_empty() {
            query.id = format!("line {}", n + 1);
        }
        if query.relevant.is_empty() || query.relevant.values().any(|g| !(1..=2).contains(g)) {
            return Err(RetrievalError::InvalidQuerySet(format!(
                "{} line {}: `relevant` needs at least one document with grade 1 or 2",
                path.display(),
                n + 1
            )));
        }
        queries.push(query);
    }
    if queries.is_empty() {
        return Err(RetrievalError::InvalidQuerySet(format!(
            "{} has no queries",
            path.display()
        )));
    }
    Ok(queries)
}

/// Distinct document ids in the order their first chunk appears.
pub fn document_ranking(chunks: &[Scored]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    chunks
        .iter()
        .filter_map(|hit| {
            let doc = document_of(&hit.id);
            seen.insert(doc.to_string()).then(|| doc.to_string())
        })
        .collect()
}

fn gain(grade: u8) -> f64 {
    (2f64).powi(grade as i32) - 1.0
}

/// nDCG@k with exponential gain.
pub fn ndcg_at(ranking: &[String], relevant: &BTreeMap<String, u8>, k: usize) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, doc)| gain(*relevant.get(doc).unwrap_or(&0)) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<u8> = relevant.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| gain(*g) / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Share of the judged-relevant documents in the top `k`.
pub fn recall_at(ranking: &[String], relevant: &BTreeMap<String, u8>, k: usize) -> f64 {
    let found = ranking
        .iter()
        .take(k)
        .filter(|d| relevant.contains_key(*d))
        .count();
    found as f64 / relevant.len() as f64
}

/// Whether a grade-2 document (one that answers the question) has a chunk among the first
/// `k` chunks: on the `rag` route those are the sources the model is given (`rag_top_k`).
pub fn answer_in_top_chunks(chunks: &[Scored], relevant: &BTreeMap<String, u8>, k: usize) -> bool {
    document_ranking(&chunks[..k.min(chunks.len())])
        .iter()
        .any(|d| relevant.get(d) == Some(&2))
}

/// 1 / rank of the first relevant document in the top `k`, or 0.
pub fn mrr_at(ranking: &[String], relevant: &BTreeMap<String, u8>, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|d| relevant.contains_key(d))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// What to evaluate: a retriever alone or a fusion of both.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Bm25,
    Dense,
    Fused(FusionMethod),
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Bm25 => "bm25".into(),
            Method::Dense => "dense".into(),
            Method::Fused(FusionMethod::Rrf { k }) => format!("rrf (k={k})"),
            Method::Fused(FusionMethod::WeightedRrf { k, weights }) => {
                let w: Vec<String> = weights.iter().map(|w| w.to_string()).collect();
                format!("weighted_rrf (k={k}, w={})", w.join("/"))
            }
            Method::Fused(FusionMethod::Dbsf) => "dbsf".into(),
        }
    }
}

/// Mean metrics of one method.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodScores {
    pub method: String,
    pub ndcg: f64,
    pub recall: f64,
    pub mrr: f64,
    /// Share of queries whose answering (grade-2) document is among the first `top_k` chunks.
    pub answer_in_top_k: f64,
}

/// p50 and p95 of one stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
}

/// The whole evaluation.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub queries: usize,
    pub scores: Vec<MethodScores>,
    /// (stage, percentiles): embed, bm25, vector, fusion.
    pub latency: Vec<(&'static str, Percentiles)>,
    /// Queries where a retriever failed (they count with what was returned).
    pub degraded: usize,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    if samples.is_empty() {
        return Percentiles {
            p50: Duration::ZERO,
            p95: Duration::ZERO,
        };
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p95: at(0.95),
    }
}

/// Runs every query once through both retrievers and scores each method on the same lists.
pub async fn evaluate(
    retriever: &HybridRetriever,
    tenant: &str,
    queries: &[EvalQuery],
    methods: &[Method],
    candidates: usize,
    top_k: usize,
) -> EvalReport {
    let mut sums = vec![(0.0, 0.0, 0.0, 0.0); methods.len()];
    let (mut embed, mut bm25, mut vector, mut fusion) = (vec![], vec![], vec![], vec![]);
    let mut degraded = 0;
    for query in queries {
        let lists = retriever
            .ranked_lists(tenant, &query.query, candidates)
            .await;
        if !lists.degraded.is_empty() {
            degraded += 1;
        }
        embed.extend(lists.timings.embed);
        bm25.extend(lists.timings.bm25);
        vector.extend(lists.timings.vector);
        let bm25_hits = lists.bm25.unwrap_or_default();
        let dense_hits = lists.dense.unwrap_or_default();
        for (method, sum) in methods.iter().zip(sums.iter_mut()) {
            let ranked = match method {
                Method::Bm25 => bm25_hits.clone(),
                Method::Dense => dense_hits.clone(),
                Method::Fused(fusion_method) => {
                    let started = std::time::Instant::now();
                    let fused = fuse(
                        &[bm25_hits.clone(), dense_hits.clone()],
                        fusion_method,
                        candidates,
                    );
                    if *fusion_method == retriever.config().fusion {
                        fusion.push(started.elapsed());
                    }
                    fused
                }
            };
            let docs = document_ranking(&ranked);
            sum.0 += ndcg_at(&docs, &query.relevant, CUTOFF);
            sum.1 += recall_at(&docs, &query.relevant, CUTOFF);
            sum.2 += mrr_at(&docs, &query.relevant, CUTOFF);
            let sources = select_sources(
                ranked.clone(),
                top_k,
                retriever.config().max_chunks_per_document,
            );
            if answer_in_top_chunks(&sources, &query.relevant, top_k) {
                sum.3 += 1.0;
            }
        }
    }
    let n = queries.len().max(1) as f64;
    EvalReport {
        queries: queries.len(),
        scores: methods
            .iter()
            .zip(sums)
            .map(|(m, (ndcg, recall, mrr, found))| MethodScores {
                method: m.name(),
                ndcg: ndcg / n,
                recall: recall / n,
                mrr: mrr / n,
                answer_in_top_k: found / n,
            })
            .collect(),
        latency: vec![
            ("embed", percentiles(embed)),
            ("bm25", percentiles(bm25)),
            ("vector", percentiles(vector)),
            ("fusion", percentiles(fusion)),
        ],
        degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u8)]) -> BTreeMap<String, u8> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn ranking(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let relevant = judged(&[("a", 2), ("b", 1)]);
        // Perfect order.
        assert!((ndcg_at(&ranking(&["a", "b", "x"]), &relevant, 10) - 1.0).abs() < 1e-12);
        // b first, a third: DCG = 1/log2(2) + 3/log2(4) = 2.5; IDCG = 3 + 1/log2(3).
        let expected = 2.5 / (3.0 + 1.0 / 3f64.log2());
        let got = ndcg_at(&ranking(&["b", "x", "a"]), &relevant, 10);
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert_eq!(recall_at(&ranking(&["x", "b"]), &relevant, 10), 0.5);
        assert_eq!(mrr_at(&ranking(&["x", "y", "b"]), &relevant, 10), 1.0 / 3.0);
        assert_eq!(mrr_at(&ranking(&["x"]), &relevant, 10), 0.0);
        // The cut-off is honoured.
        assert_eq!(recall_at(&ranking(&["x", "a"]), &relevant, 1), 0.0);
    }

    #[test]
    fn chunks_rank_documents_by_first_appearance() {
        let chunks = vec![
            Scored::new("a.txt#3", 0.9),
            Scored::new("b.txt#0", 0.8),
            Scored::new("a.txt#1", 0.7),
            Scored::new("dir/c#d.txt#2", 0.6),
        ];
        assert_eq!(document_ranking(&chunks), ["a.txt", "b.txt", "dir/c#d.txt"]);
    }

    #[test]
    fn the_answer_counts_only_at_grade_2_and_within_the_chunks_sent() {
        let chunks = vec![
            Scored::new("b.txt#0", 0.9),
            Scored::new("b.txt#1", 0.8),
            Scored::new("a.txt#4", 0.7),
        ];
        let relevant = judged(&[("a.txt", 2), ("b.txt", 1)]);
        assert!(!answer_in_top_chunks(&chunks, &relevant, 2));
        assert!(answer_in_top_chunks(&chunks, &relevant, 3));
        assert!(answer_in_top_chunks(&chunks, &relevant, 10));
        assert!(!answer_in_top_chunks(&chunks, &judged(&[("b.txt", 1)]), 3));
    }

    #[test]
    fn query_sets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"1\",\"query\":\"q\",\"relevant\":{\"a\":3}}\n",
        )
        .unwrap();
        assert!(load_queries(&path)
            .unwrap_err()
            .to_string()
            .contains("grade 1 or 2"));
        std::fs::write(
            &path,
            "{\"id\":\"1\",\"query\":\"q\",\"relevant\":{\"a\":2}}\n\n",
        )
        .unwrap();
        assert_eq!(load_queries(&path).unwrap().len(), 1);
        // Fields a query file may carry besides the three (notes, tags) are ignored, and the
        // id may be left out.
        std::fs::write(
            &path,
            "{\"query\":\"q\",\"relevant\":{\"a\":2},\"notes\":\"from a ticket\"}\n",
        )
        .unwrap();
        let queries = load_queries(&path).unwrap();
        assert_eq!(queries[0].id, "line 1");
    }
}
