//! One running sequence's output: sampled tokens become text (whole UTF-8 characters), stop
//! strings are cut, a constrained JSON value ends the answer when it closes, and
//! `max_tokens` ends it with `length`.

use tokio::sync::mpsc::UnboundedSender;

use super::utf8::Utf8Pieces;
use crate::json_end::JsonEnd;
use crate::stop::StopFilter;
use crate::{FinishReason, GenerationEvent, Result, Usage};

/// Where the events of one generation go, and what has been sent so far.
pub struct Output {
    events: UnboundedSender<Result<GenerationEvent>>,
    pieces: Utf8Pieces,
    stop: StopFilter,
    json_end: Option<JsonEnd>,
    prompt_tokens: usize,
    completion_tokens: usize,
    max_tokens: usize,
}

/// What a token did to the sequence.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    Finished,
}

impl Output {
    pub fn new(
        events: UnboundedSender<Result<GenerationEvent>>,
        stops: Vec<String>,
        json: bool,
        prompt_tokens: usize,
        max_tokens: usize,
    ) -> Self {
        Self {
            events,
            pieces: Utf8Pieces::default(),
            stop: StopFilter::new(stops),
            json_end: json.then(JsonEnd::default),
            prompt_tokens,
            completion_tokens: 0,
            max_tokens,
        }
    }

    /// True once the client has gone away.
    pub fn is_closed(&self) -> bool {
        self.events.is_closed()
    }

    /// Takes a sampled token: `bytes` is its text, `None` for an end-of-generation token.
    /// `room` is false when the sequence has no space for another token.
    pub fn token(&mut self, bytes: Option<&[u8]>, room: bool) -> Step {
        self.completion_tokens += 1;
        let Some(bytes) = bytes else {
            return self.finish(FinishReason::Stop);
        };
        let text = self.pieces.push(bytes);
        let mut released = self.stop.push(&text);
        let json_done = match self.json_end.as_mut().and_then(|end| end.push(&released)) {
            Some(end) => {
                released.truncate(end);
                true
            }
            None => false,
        };
        if !released.is_empty()
            && self
                .events
                .send(Ok(GenerationEvent::Delta(released)))
                .is_err()
        {
            return Step::Finished;
        }
        if json_done || self.stop.stopped() {
            return self.finish(FinishReason::Stop);
        }
        if self.completion_tokens >= self.max_tokens || !room {
            return self.finish(FinishReason::Length);
        }
        Step::Continue
    }

    /// Ends the stream with an error.
    pub fn fail(&self, error: crate::EngineError) {
        let _ = self.events.send(Err(error));
    }

    /// Releases held text and ends the stream. A stop string found in the held text
    /// overrides `reason`.
    fn finish(&mut self, reason: FinishReason) -> Step {
        let mut rest = self.stop.push(&self.pieces.finish());
        rest.push_str(&self.stop.finish());
        if let Some(end) = self.json_end.as_mut().and_then(|end| end.push(&rest)) {
            rest.truncate(end);
        }
        if !rest.is_empty() && self.events.send(Ok(GenerationEvent::Delta(rest))).is_err() {
            return Step::Finished;
        }
        let finish_reason = if self.stop.stopped() {
            FinishReason::Stop
        } else {
            reason
        };
        let _ = self.events.send(Ok(GenerationEvent::Done {
            finish_reason,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
            },
        }));
        Step::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn drain(
        rx: &mut mpsc::UnboundedReceiver<Result<GenerationEvent>>,
    ) -> (String, Option<FinishReason>, usize) {
        let mut text = String::new();
        let mut reason = None;
        let mut completion = 0;
        while let Ok(event) = rx.try_recv() {
            match event.unwrap() {
                GenerationEvent::Delta(d) => text.push_str(&d),
                GenerationEvent::Done {
                    finish_reason,
                    usage,
                } => {
                    reason = Some(finish_reason);
                    completion = usage.completion_tokens;
                }
            }
        }
        (text, reason, completion)
    }

    #[test]
    fn a_stop_string_across_tokens_ends_with_stop() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = Output::new(tx, vec!["END".into()], false, 5, 10);
        assert_eq!(out.token(Some(b"one E"), true), Step::Continue);
        assert_eq!(out.token(Some(b"ND two"), true), Step::Finished);
        assert_eq!(drain(&mut rx), ("one ".into(), Some(FinishReason::Stop), 2));
    }

    #[test]
    fn max_tokens_ends_with_length_and_flushes_a_partial_character() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = Output::new(tx, vec![], false, 5, 2);
        assert_eq!(out.token(Some(b"a"), true), Step::Continue);
        assert_eq!(out.token(Some(&"é".as_bytes()[..1]), true), Step::Finished);
        assert_eq!(
            drain(&mut rx),
            ("a\u{fffd}".into(), Some(FinishReason::Length), 2)
        );
    }

    #[test]
    fn a_closed_json_value_ends_the_answer() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = Output::new(tx, vec![], true, 5, 50);
        assert_eq!(out.token(Some(b"{\"a\": \"}\""), true), Step::Continue);
        assert_eq!(out.token(Some(b"}\n"), true), Step::Finished);
        assert_eq!(
            drain(&mut rx),
            ("{\"a\": \"}\"}".into(), Some(FinishReason::Stop), 2)
        );
    }

    #[test]
    fn end_of_generation_and_a_full_cache_end_the_answer() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = Output::new(tx, vec![], false, 5, 50);
        out.token(Some(b"hi"), true);
        assert_eq!(out.token(None, true), Step::Finished);
        assert_eq!(drain(&mut rx), ("hi".into(), Some(FinishReason::Stop), 2));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut out = Output::new(tx, vec![], false, 5, 50);
        assert_eq!(out.token(Some(b"hi"), false), Step::Finished);
        assert_eq!(drain(&mut rx), ("hi".into(), Some(FinishReason::Length), 1));
    }
}
