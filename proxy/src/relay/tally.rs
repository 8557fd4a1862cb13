//! What a response contained, observed through canonical events, and the token figures the
//! client gets from it.

use std::time::{Duration, Instant};

use crate::canonical::{Event, Usage};
use crate::telemetry::Source;
use crate::telemetry::Tokens;
use thinkgate_metrics::TokenCounter;

/// Text is counted in pieces of this size as it arrives, so a long response keeps at most
/// this much of it and no count at its end blocks a worker for long.
const PIECE_BYTES: usize = 32 * 1024;

/// One kind of text (reasoning, answer, tool arguments): its tokens so far, and the piece
/// not yet counted.
#[derive(Debug, Default)]
struct Text {
    counted: u64,
    pending: String,
    /// Some non-whitespace was seen (an answer that is only whitespace is none).
    visible: bool,
}

impl Text {
    fn push(&mut self, text: &str, counter: &TokenCounter) {
        self.visible |= !text.trim().is_empty();
        self.pending.push_str(text);
        if self.pending.len() >= PIECE_BYTES {
            self.counted += counter.count(&self.pending) as u64;
            self.pending.clear();
        }
    }

    fn tokens(&self, counter: &TokenCounter) -> u64 {
        if self.pending.is_empty() {
            self.counted
        } else {
            self.counted + counter.count(&self.pending) as u64
        }
    }

    fn is_empty(&self) -> bool {
        self.counted == 0 && self.pending.is_empty()
    }
}

#[derive(Debug)]
pub struct Tally {
    counter: TokenCounter,
    reasoning: Text,
    content: Text,
    tool_text: Text,
    pub tool_calls: bool,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    /// Time from the request's start to the first reasoning, content or tool-call event.
    pub first_token: Option<Duration>,
    /// Chunks the proxy could not read (forwarded anyway).
    pub unreadable: u32,
    /// The answer's text, kept (up to [`KEPT_ANSWER_BYTES`]) only when the trace records
    /// content.
    kept: Option<String>,
}

/// The most of an answer kept for a trace.
pub const KEPT_ANSWER_BYTES: usize = 64 * 1024;

impl Tally {
    /// A tally counting with the model's tokenizer.
    pub fn new(counter: TokenCounter) -> Tally {
        Tally {
            counter,
            reasoning: Text::default(),
            content: Text::default(),
            tool_text: Text::default(),
            tool_calls: false,
            usage: None,
            finish_reason: None,
            first_token: None,
            unreadable: 0,
            kept: None,
        }
    }

    /// Keeps the answer's text too (for a trace that records content).
    pub fn keeping_answer(mut self) -> Tally {
        self.kept = Some(String::new());
        self
    }

    /// The answer's text, when kept.
    pub fn answer(&self) -> Option<&str> {
        self.kept.as_deref()
    }

    pub fn observe(&mut self, event: Event<'_>, started: Instant) {
        let first = |t: &mut Option<Duration>| {
            if t.is_none() {
                *t = Some(started.elapsed());
            }
        };
        let counter = &self.counter;
        match event {
            Event::Reasoning(text) => {
                first(&mut self.first_token);
                self.reasoning.push(&text, counter);
            }
            Event::Content(text) => {
                first(&mut self.first_token);
                self.content.push(&text, counter);
                if let Some(kept) = self.kept.as_mut() {
                    let room = KEPT_ANSWER_BYTES.saturating_sub(kept.len());
                    let mut end = room.min(text.len());
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    kept.push_str(&text[..end]);
                }
            }
            Event::ToolCall(text) => {
                first(&mut self.first_token);
                self.tool_calls = true;
                self.tool_text.push(&text, counter);
            }
            Event::Usage(u) => self.usage = Some(u),
            Event::Finish(reason) => self.finish_reason = Some(reason.into_owned()),
        }
    }

    /// The usage the client gets and where each figure came from: the upstream's report,
    /// repaired where it breaks an invariant, or counted from the text seen when the upstream
    /// reported none. Reasoning never exceeds completion; total is always prompt + completion.
    /// `prompt_estimate` is asked only when the upstream reported no usage.
    pub fn tokens(&self, prompt_estimate: impl FnOnce() -> u64) -> Tokens {
        let count = |t: &Text| t.tokens(&self.counter);
        let (usage, prompt_source, output_source) = match self.usage {
            Some(u) => {
                let mut u = u;
                match u.reasoning_tokens {
                    // Reported reasoning above completion means completion left it out
                    // (billed separately, as Gemini counts thoughts): add it back.
                    Some(r) if r > u.completion_tokens => u.completion_tokens += r,
                    Some(_) => {}
                    None => {
                        u.reasoning_tokens = Some(count(&self.reasoning).min(u.completion_tokens))
                    }
                }
                (u, Source::Upstream, Source::Upstream)
            }
            None => {
                let reasoning = count(&self.reasoning);
                let output = reasoning + count(&self.content) + count(&self.tool_text);
                let usage = Usage {
                    prompt_tokens: prompt_estimate(),
                    completion_tokens: output,
                    reasoning_tokens: Some(reasoning),
                    cached_tokens: None,
                    cache_creation_tokens: None,
                };
                (usage, Source::Estimated, Source::Estimated)
            }
        };
        Tokens {
            usage,
            prompt_source,
            output_source,
            ttft: self.first_token,
            empty: self.empty_reason(),
        }
    }

    /// Why a finished response carries no answer, if it carries none.
    fn empty_reason(&self) -> Option<&'static str> {
        let finish = self.finish_reason.as_deref()?;
        if self.content.visible || self.tool_calls {
            return None;
        }
        Some(match finish {
            "length"
                if !self.reasoning.is_empty()
                    || self
                        .usage
                        .is_some_and(|u| u.reasoning_tokens.unwrap_or(0) > 0) =>
            {
                "reasoning_exhausted"
            }
            "length" => "length",
            "content_filter" => "content_filter",
            _ => "empty",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thinkgate_config::Encoding;

    #[test]
    fn a_long_answer_is_counted_in_pieces_not_kept_whole() {
        let counter = TokenCounter::new(Encoding::O200kBase);
        let mut tally = Tally::new(counter);
        let started = Instant::now();
        let delta = "the quick brown fox jumps over the lazy dog ".repeat(20);
        for _ in 0..1_000 {
            tally.observe(Event::Content(delta.as_str().into()), started);
        }
        assert!(
            tally.content.pending.len() < PIECE_BYTES,
            "at most one piece is held"
        );
        let whole = counter.count(&delta.repeat(1_000)) as u64;
        let counted = tally.tokens(|| 0).usage.completion_tokens;
        // A piece boundary may split one token in two: at most one more token per piece.
        let pieces = (delta.len() * 1_000 / PIECE_BYTES) as u64 + 1;
        assert!(
            counted >= whole && counted <= whole + pieces,
            "{counted} vs {whole}"
        );
    }
}
