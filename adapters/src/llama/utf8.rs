//! Token pieces to text: a token may end in the middle of a multi-byte UTF-8 character (byte
//! tokens), so bytes are held until the character is complete.

/// Collects token bytes and releases whole characters.
#[derive(Debug, Default)]
pub struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    /// Adds a token's bytes; returns the text that is complete now. Bytes that can never
    /// be valid UTF-8 become U+FFFD, as a lossy decoder would.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"),
                    );
                    match err.error_len() {
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of generation (an unfinished character), lossily.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_character_split_across_tokens() {
        let mut pieces = Utf8Pieces::default();
        let bytes = "é😀".as_bytes();
        assert_eq!(pieces.push(&bytes[..1]), "");
        assert_eq!(pieces.push(&bytes[1..3]), "é");
        assert_eq!(pieces.push(&bytes[3..5]), "");
        assert_eq!(pieces.push(&bytes[5..]), "😀");
        assert_eq!(pieces.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut pieces = Utf8Pieces::default();
        assert_eq!(pieces.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(pieces.push(b"\xe2\x82"), "");
        assert_eq!(pieces.finish(), "\u{fffd}");
    }
}
