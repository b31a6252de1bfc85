//! Stop sequences on streamed text.
//!
//! mistral.rs stops on stop strings but, when streaming, may already have sent the stop text
//! (and one token after it). This filter sits between the engine and the client: it holds back
//! any tail that could still become a stop string and cuts the text where one appears, so
//! streamed and non-streamed output are identical and never contain a stop string.

/// Filters a stream of text deltas against stop strings.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    /// Text received but not yet released, because it might start a stop string.
    held: String,
    stopped: bool,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// True once a stop string was seen; later input is dropped.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds a delta; returns the text that is safe to release now.
    pub fn push(&mut self, delta: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        let keep = self.longest_stop_prefix_suffix();
        let release_to = self.held.len() - keep;
        let out = self.held[..release_to].to_string();
        self.held.drain(..release_to);
        out
    }

    /// Releases what is held at the end of generation (no stop string can complete now).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop string.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for (start, _) in self.held.char_indices() {
            let suffix = &self.held[start..];
            if suffix.len() <= best {
                break;
            }
            if self
                .stops
                .iter()
                .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            {
                best = suffix.len();
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut filter = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            out.push_str(&filter.push(d));
        }
        if !filter.stopped() {
            out.push_str(&filter.finish());
        }
        (out, filter.stopped())
    }

    #[test]
    fn cuts_at_stop_split_across_deltas() {
        assert_eq!(
            run(&["END"], &["one two E", "N", "D three"]),
            ("one two ".into(), true)
        );
    }

    #[test]
    fn releases_false_starts() {
        assert_eq!(run(&["END"], &["a E", "Nx b"]), ("a ENx b".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["zz", "b"], &["a", "bzz"]), ("a".into(), true));
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut f = StopFilter::new(vec!["\n\n".into()]);
        assert_eq!(f.push("hello\n"), "hello");
        assert_eq!(f.push("world"), "\nworld");
        assert_eq!(f.push("é"), "é");
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
