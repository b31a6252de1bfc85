//! Labelled queries: `{"query": "...", "route": "..."}` per line, and a stratified split.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RouterError};

/// One labelled query; other fields on the line (an `id`, notes) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub query: String,
    pub route: String,
}

/// Reads a JSONL file of examples; returns them and the sha256 of the file.
pub fn load_examples(path: &Path) -> Result<(Vec<Example>, String)> {
    let bytes = std::fs::read(path)?;
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = String::from_utf8(bytes)
        .map_err(|_| RouterError::Data(format!("{} is not UTF-8", path.display())))?;
    let mut examples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let example: Example = serde_json::from_str(line)
            .map_err(|e| RouterError::Data(format!("{} line {}: {e}", path.display(), n + 1)))?;
        if example.query.trim().is_empty() || example.route.trim().is_empty() {
            return Err(RouterError::Data(format!(
                "{} line {}: empty query or route",
                path.display(),
                n + 1
            )));
        }
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(RouterError::Data(format!(
            "{} has no examples",
            path.display()
        )));
    }
    Ok((examples, hash))
}

/// A small deterministic generator (SplitMix64), so splits and training repeat exactly.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Splits indexes of `examples` into (train, held out) with the same route proportions:
/// `holdout` of each route (at least one when a route has two or more) is held out.
pub fn stratified_split(examples: &[Example], holdout: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_route: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in examples.iter().enumerate() {
        by_route.entry(e.route.as_str()).or_default().push(i);
    }
    let mut rng = SplitMix::new(seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for indexes in by_route.values_mut() {
        rng.shuffle(indexes);
        let mut n_held = (indexes.len() as f64 * holdout).round() as usize;
        if n_held == 0 && indexes.len() >= 2 && holdout > 0.0 {
            n_held = 1;
        }
        held.extend_from_slice(&indexes[..n_held]);
        train.extend_from_slice(&indexes[n_held..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(route: &str, i: usize) -> Example {
        Example {
            query: format!("q{i}"),
            route: route.into(),
        }
    }

    #[test]
    fn split_keeps_route_proportions_and_is_deterministic() {
        let mut examples: Vec<Example> = (0..100).map(|i| ex("a", i)).collect();
        examples.extend((0..20).map(|i| ex("b", i)));
        let (train, held) = stratified_split(&examples, 0.2, 7);
        assert_eq!(train.len() + held.len(), 120);
        let held_b = held.iter().filter(|&&i| examples[i].route == "b").count();
        assert_eq!((held.len(), held_b), (24, 4));
        assert_eq!(
            stratified_split(&examples, 0.2, 7),
            (train.clone(), held.clone())
        );
        assert_ne!(stratified_split(&examples, 0.2, 8).1, held);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            "{\"query\":\"hi\",\"route\":\"simple\"}\n{\"query\":\"x\"}\n",
        )
        .unwrap();
        let err = load_examples(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
