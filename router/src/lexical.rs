//! Lexical features beside the query embedding: hashed counts of the query's words, word pairs
//! and character trigrams (with word boundaries), log-scaled and L2-normalised. They carry what
//! a sentence embedding blurs: command and flag names, tool words, typos that keep most
//! trigrams. The hash (FNV-1a, 64-bit) is fixed, so a saved router reads its buckets the same
//! way on every machine.

/// The features of `text` in `buckets` buckets (an empty vector when `buckets` is 0).
pub fn lexical_features(text: &str, buckets: usize) -> Vec<f32> {
    let mut features = vec![0f32; buckets];
    if buckets == 0 {
        return features;
    }
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut add = |kind: u8, piece: &str| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(kind);
        for byte in piece.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        features[(hash % buckets as u64) as usize] += 1.0;
    };
    for (i, word) in words.iter().enumerate() {
        add(b'w', word);
        if let Some(next) = words.get(i + 1) {
            add(b'b', &format!("{word} {next}"));
        }
        let padded: Vec<char> = format!("<{word}>").chars().collect();
        for trigram in padded.windows(3) {
            add(b'c', &trigram.iter().collect::<String>());
        }
    }
    for value in &mut features {
        *value = value.ln_1p();
    }
    let norm = features.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for value in &mut features {
            *value /= norm;
        }
    }
    features
}

/// The classifier's input: the embedding followed by the lexical features.
pub fn router_input(embedding: &[f32], text: &str, buckets: usize) -> Vec<f32> {
    let mut input = embedding.to_vec();
    input.extend(lexical_features(text, buckets));
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_unit_length_deterministic_and_shared_by_near_spellings() {
        let a = lexical_features("How do I git rebase --onto?", 512);
        assert_eq!(a, lexical_features("How do I git rebase --onto?", 512));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let cosine = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let typo = lexical_features("how do i git rebsae --onto", 512);
        let other = lexical_features("what's the weather in Oslo", 512);
        assert!(cosine(&a, &typo) > cosine(&a, &other) + 0.3);
        assert!(lexical_features("", 512).iter().all(|v| *v == 0.0));
        assert!(lexical_features("anything", 0).is_empty());
    }
}
