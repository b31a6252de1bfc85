//! Per-request seeded sampling.
//!
//! mistral.rs 0.8.1 has one RNG per engine, shared by every request, so OpenAI's `seed` cannot
//! be honoured through its sampler. With a seed and a temperature above zero, this logits
//! processor draws the token itself from its own RNG (temperature, then top-p) and hands the
//! engine logits where only that token is possible. The same seed and prompt then give the
//! same output, whatever else the server is doing.

use parking_lot::Mutex;

use mistralrs::{CustomLogitsProcessor, Tensor};

pub struct SeededSampler {
    temperature: f64,
    top_p: f64,
    state: Mutex<u64>,
}

impl SeededSampler {
    pub fn new(seed: u64, temperature: f64, top_p: Option<f64>) -> Self {
        Self {
            temperature,
            top_p: top_p.unwrap_or(1.0),
            state: Mutex::new(seed),
        }
    }

    /// SplitMix64: small, fast, and plenty for picking tokens.
    fn next_unit(&self) -> f64 {
        let mut state = self.state.lock();
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks a token index from raw logits.
    pub fn pick(&self, logits: &[f32]) -> usize {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((l as f64 - max) / self.temperature).exp()))
            .collect();
        let total: f64 = probs.iter().map(|(_, p)| p).sum();
        // Highest first; index breaks ties so the order is total.
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (n, (_, p)) in probs.iter().enumerate() {
            kept += p / total;
            if kept >= self.top_p {
                cut = n + 1;
                break;
            }
        }
        let probs = &probs[..cut];
        let mass: f64 = probs.iter().map(|(_, p)| p).sum();
        let mut target = self.next_unit() * mass;
        for (i, p) in probs {
            if target < *p {
                return *i;
            }
            target -= p;
        }
        probs.last().map(|(i, _)| *i).unwrap_or(0)
    }
}

impl CustomLogitsProcessor for SeededSampler {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> mistralrs::Result<Tensor> {
        let values: Vec<f32> = logits.to_dtype(mistralrs::DType::F32)?.to_vec1()?;
        let chosen = self.pick(&values);
        let mut only = vec![f32::NEG_INFINITY; values.len()];
        only[chosen] = 0.0;
        Tensor::from_vec(only, values.len(), logits.device())?.to_dtype(logits.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_choices_and_top_p_limits_choices() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a = SeededSampler::new(42, 1.0, None);
        let b = SeededSampler::new(42, 1.0, None);
        let picks_a: Vec<_> = (0..20).map(|_| a.pick(&logits)).collect();
        let picks_b: Vec<_> = (0..20).map(|_| b.pick(&logits)).collect();
        assert_eq!(picks_a, picks_b);
        let c = SeededSampler::new(43, 1.0, None);
        let picks_c: Vec<_> = (0..20).map(|_| c.pick(&logits)).collect();
        assert_ne!(picks_a, picks_c, "another seed draws another sequence");
        let narrow = SeededSampler::new(7, 1.0, Some(0.01));
        let best = 6; // highest logit (6 % 7 == 6 → 1.8), lowest index among ties
        assert!((0..20).all(|_| narrow.pick(&logits) == best));
    }
}
