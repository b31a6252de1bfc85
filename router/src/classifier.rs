//! The intent classifier: multinomial logistic regression over query embeddings, trained
//! here with full-batch Adam and L2, with a confidence threshold per route below which it
//! abstains.

use serde::{Deserialize, Serialize};

use crate::dataset::SplitMix;

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty on the weights (not the biases).
    pub l2: f32,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 400,
            learning_rate: 0.05,
            l2: 1e-4,
            seed: 17,
        }
    }
}

/// A routing decision for one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The route to take: the predicted one, or the fallback when abstaining.
    pub route: String,
    /// The predicted route's probability.
    pub confidence: f32,
    /// The most probable route, even when below its threshold.
    pub predicted: String,
    pub abstained: bool,
}

/// Weights `[routes × dims]`, biases and thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentClassifier {
    pub routes: Vec<String>,
    pub dims: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// Per route: a prediction below it abstains.
    pub thresholds: Vec<f32>,
}

fn softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for l in logits.iter_mut() {
        *l = (*l - max).exp();
        sum += *l;
    }
    for l in logits.iter_mut() {
        *l /= sum;
    }
}

impl IntentClassifier {
    /// Trains on `features` (one vector per example, all `dims` long) with `labels` indexing
    /// `routes`. `progress(epoch, loss)` is called after every epoch.
    pub fn train(
        routes: Vec<String>,
        features: &[Vec<f32>],
        labels: &[usize],
        config: &TrainConfig,
        progress: &mut dyn FnMut(usize, f32),
    ) -> Self {
        let classes = routes.len();
        let dims = features.first().map_or(0, Vec::len);
        let n = features.len().max(1) as f32;
        // Small random start so classes separate from the first step.
        let mut rng = SplitMix::new(config.seed);
        let mut weights: Vec<f32> = (0..classes * dims)
            .map(|_| ((rng.next_u64() % 2001) as f32 / 1000.0 - 1.0) * 0.01)
            .collect();
        let mut bias = vec![0.0f32; classes];
        let (mut m_w, mut v_w) = (vec![0.0f32; weights.len()], vec![0.0f32; weights.len()]);
        let (mut m_b, mut v_b) = (vec![0.0f32; classes], vec![0.0f32; classes]);
        let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let mut model = Self {
            routes,
            dims,
            weights: Vec::new(),
            bias: Vec::new(),
            thresholds: vec![0.0; classes],
        };
        // The lexical part of an input is mostly zeros: visiting only the non-zero entries
        // gives the same sums about ten times faster.
        let sparse: Vec<Vec<(usize, f32)>> = features
            .iter()
            .map(|x| {
                x.iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(i, v)| (i, *v))
                    .collect()
            })
            .collect();
        for epoch in 1..=config.epochs {
            let mut grad_w = vec![0.0f32; weights.len()];
            let mut grad_b = vec![0.0f32; classes];
            let mut loss = 0.0f32;
            for (x, &y) in sparse.iter().zip(labels) {
                let mut p: Vec<f32> = (0..classes)
                    .map(|c| {
                        let row = &weights[c * dims..(c + 1) * dims];
                        bias[c] + x.iter().map(|&(i, v)| row[i] * v).sum::<f32>()
                    })
                    .collect();
                softmax(&mut p);
                loss -= p[y].max(1e-12).ln();
                for c in 0..classes {
                    let g = p[c] - if c == y { 1.0 } else { 0.0 };
                    grad_b[c] += g;
                    let row = &mut grad_w[c * dims..(c + 1) * dims];
                    for &(i, v) in x {
                        row[i] += g * v;
                    }
                }
            }
            let t = epoch as i32;
            for (i, w) in weights.iter_mut().enumerate() {
                let g = grad_w[i] / n + config.l2 * *w;
                m_w[i] = beta1 * m_w[i] + (1.0 - beta1) * g;
                v_w[i] = beta2 * v_w[i] + (1.0 - beta2) * g * g;
                let m_hat = m_w[i] / (1.0 - beta1.powi(t));
                let v_hat = v_w[i] / (1.0 - beta2.powi(t));
                *w -= config.learning_rate * m_hat / (v_hat.sqrt() + eps);
            }
            for c in 0..classes {
                let g = grad_b[c] / n;
                m_b[c] = beta1 * m_b[c] + (1.0 - beta1) * g;
                v_b[c] = beta2 * v_b[c] + (1.0 - beta2) * g * g;
                let m_hat = m_b[c] / (1.0 - beta1.powi(t));
                let v_hat = v_b[c] / (1.0 - beta2.powi(t));
                bias[c] -= config.learning_rate * m_hat / (v_hat.sqrt() + eps);
            }
            progress(epoch, loss / n);
        }
        model.weights = weights;
        model.bias = bias;
        model
    }

    /// Route probabilities for one embedding, in `routes` order.
    pub fn probabilities(&self, x: &[f32]) -> Vec<f32> {
        let mut p = logits(&self.weights, &self.bias, self.dims, x);
        softmax(&mut p);
        p
    }

    /// Index of the most probable route.
    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.probabilities(x))
    }

    /// The route for one embedding: the most probable one when its probability reaches its
    /// threshold, else `fallback` (an abstention).
    pub fn decide(&self, x: &[f32], fallback: &str) -> Decision {
        let p = self.probabilities(x);
        let best = argmax(&p);
        let abstained = p[best] < self.thresholds[best];
        Decision {
            route: if abstained {
                fallback.to_string()
            } else {
                self.routes[best].clone()
            },
            confidence: p[best],
            predicted: self.routes[best].clone(),
            abstained,
        }
    }
}

fn logits(weights: &[f32], bias: &[f32], dims: usize, x: &[f32]) -> Vec<f32> {
    bias.iter()
        .enumerate()
        .map(|(c, b)| {
            let row = &weights[c * dims..(c + 1) * dims];
            b + row.iter().zip(x).map(|(w, xi)| w * xi).sum::<f32>()
        })
        .collect()
}

pub(crate) fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three separable clusters in 4 dimensions.
    fn toy() -> (Vec<Vec<f32>>, Vec<usize>) {
        let centres = [
            [1.0, 0.0, 0.0, 0.2],
            [0.0, 1.0, 0.0, 0.2],
            [0.0, 0.0, 1.0, 0.2],
        ];
        let mut rng = SplitMix::new(3);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for (label, centre) in centres.iter().enumerate() {
            for _ in 0..30 {
                let x = centre
                    .iter()
                    .map(|c| c + ((rng.next_u64() % 1000) as f32 / 1000.0 - 0.5) * 0.4)
                    .collect();
                xs.push(x);
                ys.push(label);
            }
        }
        (xs, ys)
    }

    #[test]
    fn learns_separable_classes_and_the_loss_falls() {
        let (xs, ys) = toy();
        let mut losses = Vec::new();
        let model = IntentClassifier::train(
            vec!["a".into(), "b".into(), "c".into()],
            &xs,
            &ys,
            &TrainConfig {
                epochs: 200,
                ..TrainConfig::default()
            },
            &mut |_, loss| losses.push(loss),
        );
        assert_eq!(losses.len(), 200);
        assert!(
            losses[199] < losses[0] / 5.0,
            "{} -> {}",
            losses[0],
            losses[199]
        );
        let correct = xs
            .iter()
            .zip(&ys)
            .filter(|(x, &y)| model.predict(x) == y)
            .count();
        assert_eq!(correct, xs.len());
        let p = model.probabilities(&xs[0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn below_its_threshold_a_prediction_abstains_to_the_fallback() {
        let (xs, ys) = toy();
        let mut model = IntentClassifier::train(
            vec!["a".into(), "b".into(), "c".into()],
            &xs,
            &ys,
            &TrainConfig::default(),
            &mut |_, _| {},
        );
        let ambiguous = [0.5, 0.5, 0.0, 0.2];
        model.thresholds = vec![0.9; 3];
        let decision = model.decide(&ambiguous, "c");
        assert!(decision.abstained, "{decision:?}");
        assert_eq!(decision.route, "c");
        model.thresholds = vec![0.0; 3];
        let decision = model.decide(&xs[0], "c");
        assert_eq!((decision.route.as_str(), decision.abstained), ("a", false));
    }
}
