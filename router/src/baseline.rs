//! The baseline the classifier is measured against: semantic-router's method. A query is
//! compared (cosine) with every training utterance; among the `k` most similar, each route's
//! similarities are averaged, and the best route wins.

use std::collections::BTreeMap;

/// Training utterances' embeddings and routes.
pub struct NearestNeighbours {
    vectors: Vec<Vec<f32>>,
    labels: Vec<usize>,
    k: usize,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-12)
}

impl NearestNeighbours {
    pub fn new(vectors: Vec<Vec<f32>>, labels: Vec<usize>, k: usize) -> Self {
        Self {
            vectors,
            labels,
            k: k.max(1),
        }
    }

    /// The winning route index.
    pub fn predict(&self, x: &[f32]) -> usize {
        let mut scored: Vec<(f32, usize)> = self
            .vectors
            .iter()
            .zip(&self.labels)
            .map(|(v, &label)| (cosine(v, x), label))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut by_route: BTreeMap<usize, (f32, usize)> = BTreeMap::new();
        for (score, label) in scored.into_iter().take(self.k) {
            let entry = by_route.entry(label).or_default();
            entry.0 += score;
            entry.1 += 1;
        }
        by_route
            .into_iter()
            .map(|(label, (sum, n))| (label, sum / n as f32))
            .fold((0, f32::NEG_INFINITY), |best, (label, mean)| {
                if mean > best.1 {
                    (label, mean)
                } else {
                    best
                }
            })
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_with_the_most_similar_neighbours_wins() {
        let nn = NearestNeighbours::new(
            vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![0.0, 1.0]],
            vec![0, 0, 1],
            2,
        );
        assert_eq!(nn.predict(&[1.0, 0.05]), 0);
        assert_eq!(nn.predict(&[0.1, 1.0]), 1);
    }
}
