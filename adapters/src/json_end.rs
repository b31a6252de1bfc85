//! Finds where a streamed JSON value ends, so a schema-constrained generation stops when its
//! grammar completes. mistral.rs 0.8.1 keeps decoding after the constrained value is closed
//! (until `max_tokens`, reporting `length`); the value is complete once its outermost object
//! or array closes, which the grammar guarantees is valid.

/// Tracks brackets outside strings across streamed text.
#[derive(Debug, Default)]
pub struct JsonEnd {
    depth: usize,
    started: bool,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl JsonEnd {
    /// Feeds the next piece; returns the byte length of the piece up to and including the
    /// character that closes the value, when it closes here.
    pub fn push(&mut self, text: &str) -> Option<usize> {
        if self.done {
            return Some(0);
        }
        for (i, c) in text.char_indices() {
            if self.in_string {
                match c {
                    _ if self.escaped => self.escaped = false,
                    '\\' => self.escaped = true,
                    '"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => {
                    self.depth += 1;
                    self.started = true;
                }
                '}' | ']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 && self.started {
                        self.done = true;
                        return Some(i + c.len_utf8());
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_at_the_outer_close_across_pieces_and_strings() {
        let mut end = JsonEnd::default();
        assert_eq!(end.push("{\"a\": \"}{]\\\"\""), None);
        assert_eq!(end.push(", \"b\": [1, {\"c\": 2}]"), None);
        assert_eq!(end.push("}\n\n  extra"), Some(1));
        assert_eq!(end.push("more"), Some(0));
        let mut end = JsonEnd::default();
        assert_eq!(end.push("  {}"), Some(4));
    }
}
