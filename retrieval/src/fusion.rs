//! Fusing ranked lists from several retrievers into one.
//!
//! - RRF (reciprocal rank fusion, the default): `Σ 1 / (k + rank)`, rank from 1.
//! - Weighted RRF: the same with a weight per retriever.
//! - DBSF (distribution-based score fusion, as in Qdrant): each list's scores are normalised
//!   to [0, 1] by its mean ± 3 standard deviations, then summed.
//!
//! Ties are broken by id, so the same inputs always give the same order.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One retriever's hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub id: String,
    pub score: f32,
}

impl Scored {
    pub fn new(id: impl Into<String>, score: f32) -> Self {
        Self {
            id: id.into(),
            score,
        }
    }
}

/// How to fuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum FusionMethod {
    Rrf { k: f32 },
    WeightedRrf { k: f32, weights: Vec<f32> },
    Dbsf,
}

impl Default for FusionMethod {
    fn default() -> Self {
        FusionMethod::Rrf { k: 60.0 }
    }
}

/// Fuses `lists` (each best first) and returns the best `limit`, best first.
pub fn fuse(lists: &[Vec<Scored>], method: &FusionMethod, limit: usize) -> Vec<Scored> {
    let mut totals: HashMap<&str, f32> = HashMap::new();
    match method {
        FusionMethod::Rrf { k } => add_rrf(lists, *k, &|_| 1.0, &mut totals),
        FusionMethod::WeightedRrf { k, weights } => add_rrf(
            lists,
            *k,
            &|i| weights.get(i).copied().unwrap_or(1.0),
            &mut totals,
        ),
        FusionMethod::Dbsf => {
            for list in lists {
                for (id, score) in dbsf_normalise(list) {
                    *totals.entry(id).or_default() += score;
                }
            }
        }
    }
    let mut fused: Vec<Scored> = totals
        .into_iter()
        .map(|(id, score)| Scored::new(id, score))
        .collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    fused.truncate(limit);
    fused
}

fn add_rrf<'a>(
    lists: &'a [Vec<Scored>],
    k: f32,
    weight: &dyn Fn(usize) -> f32,
    totals: &mut HashMap<&'a str, f32>,
) {
    for (i, list) in lists.iter().enumerate() {
        let w = weight(i);
        for (rank, hit) in list.iter().enumerate() {
            *totals.entry(hit.id.as_str()).or_default() += w / (k + rank as f32 + 1.0);
        }
    }
}

fn dbsf_normalise(list: &[Scored]) -> Vec<(&str, f32)> {
    if list.is_empty() {
        return Vec::new();
    }
    let n = list.len() as f32;
    let mean = list.iter().map(|h| h.score).sum::<f32>() / n;
    let var = list.iter().map(|h| (h.score - mean).powi(2)).sum::<f32>() / n;
    let std = var.sqrt();
    let (low, high) = (mean - 3.0 * std, mean + 3.0 * std);
    list.iter()
        .map(|h| {
            let score = if high > low {
                ((h.score - low) / (high - low)).clamp(0.0, 1.0)
            } else {
                // One hit, or all equal: every hit is as good as the list's mean.
                0.5
            };
            (h.id.as_str(), score)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(hits: &[Scored]) -> Vec<&str> {
        hits.iter().map(|h| h.id.as_str()).collect()
    }

    #[test]
    fn rrf_rewards_agreement() {
        let bm25 = vec![
            Scored::new("a", 9.0),
            Scored::new("b", 5.0),
            Scored::new("c", 1.0),
        ];
        let dense = vec![
            Scored::new("b", 0.9),
            Scored::new("d", 0.8),
            Scored::new("a", 0.1),
        ];
        let fused = fuse(&[bm25, dense], &FusionMethod::Rrf { k: 60.0 }, 10);
        assert_eq!(ids(&fused)[..2], ["b", "a"]);
        let expected_b = 1.0 / 62.0 + 1.0 / 61.0;
        assert!((fused[0].score - expected_b).abs() < 1e-6);
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn weights_shift_the_winner() {
        let bm25 = vec![Scored::new("a", 1.0)];
        let dense = vec![Scored::new("b", 1.0)];
        let method = FusionMethod::WeightedRrf {
            k: 60.0,
            weights: vec![1.0, 2.0],
        };
        assert_eq!(ids(&fuse(&[bm25, dense], &method, 10)), ["b", "a"]);
    }

    #[test]
    fn ties_break_by_id_deterministically() {
        let one = vec![Scored::new("z", 1.0)];
        let two = vec![Scored::new("m", 1.0)];
        let fused = fuse(&[one, two], &FusionMethod::default(), 10);
        assert_eq!(ids(&fused), ["m", "z"]);
    }

    #[test]
    fn dbsf_uses_score_distributions() {
        // "a" is an outlier in BM25; "b" leads dense by a hair.
        let bm25 = vec![
            Scored::new("a", 30.0),
            Scored::new("b", 5.0),
            Scored::new("c", 4.0),
            Scored::new("d", 3.0),
        ];
        let dense = vec![
            Scored::new("b", 0.80),
            Scored::new("a", 0.79),
            Scored::new("c", 0.50),
            Scored::new("d", 0.40),
        ];
        let fused = fuse(&[bm25, dense], &FusionMethod::Dbsf, 2);
        assert_eq!(ids(&fused), ["a", "b"]);
        assert!(fused.iter().all(|h| h.score <= 2.0 && h.score >= 0.0));
    }

    #[test]
    fn empty_and_single_lists() {
        assert!(fuse(&[], &FusionMethod::Dbsf, 5).is_empty());
        let fused = fuse(
            &[vec![Scored::new("x", 3.0)], vec![]],
            &FusionMethod::Dbsf,
            5,
        );
        assert_eq!(ids(&fused), ["x"]);
    }
}
