//! What a response contained, observed through canonical events: the basis for logs now and
//! for metrics, budgets and quotas later.

use std::time::{Duration, Instant};

use crate::canonical::{Event, Usage};
use thinkgate_metrics::TokenCounter;

#[derive(Debug, Default)]
pub struct Tally {
    reasoning: String,
    content: String,
    pub tool_calls: bool,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    /// Time from the request's start to the first reasoning, content or tool-call event.
    pub first_token: Option<Duration>,
    /// Chunks the proxy could not read (forwarded anyway).
    pub unreadable: u32,
}

/// Where a token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Upstream,
    Estimated,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::Estimated => "estimated",
        }
    }
}

impl Tally {
    pub fn observe(&mut self, event: Event<'_>, started: Instant) {
        let first = |t: &mut Option<Duration>| {
            if t.is_none() {
                *t = Some(started.elapsed());
            }
        };
        match event {
            Event::Reasoning(text) => {
                first(&mut self.first_token);
                self.reasoning.push_str(&text);
            }
            Event::Content(text) => {
                first(&mut self.first_token);
                self.content.push_str(&text);
            }
            Event::ToolCall => {
                first(&mut self.first_token);
                self.tool_calls = true;
            }
            Event::Usage(u) => self.usage = Some(u),
            Event::Finish(reason) => self.finish_reason = Some(reason.into_owned()),
        }
    }

    /// Output and reasoning tokens: the upstream's figures when it reported usage, otherwise
    /// counted from the text seen. Reasoning never exceeds output.
    pub fn output_tokens(&self, counter: &TokenCounter) -> (u64, u64, Source) {
        match self.usage {
            Some(u) => {
                let reasoning = u.reasoning_tokens.unwrap_or_else(|| {
                    (counter.count(&self.reasoning) as u64).min(u.completion_tokens)
                });
                (
                    u.completion_tokens,
                    reasoning.min(u.completion_tokens),
                    Source::Upstream,
                )
            }
            None => {
                let reasoning = counter.count(&self.reasoning) as u64;
                let output = reasoning + counter.count(&self.content) as u64;
                (output, reasoning, Source::Estimated)
            }
        }
    }
}
