//! The budget guard: responses under a reasoning budget the proxy enforces are read as
//! canonical deltas, their reasoning counted token by token as it arrives, and held to the
//! budget whatever the upstream's knob did:
//!
//! - at the budget the upstream call is dropped (which cancels it) and, by the model's
//!   [`Overrun`]: **force** — the same answer is continued after the thought so far, closed
//!   with the stop phrase and the end-of-thinking delimiter; **cut** — a no-thinking call
//!   turns the thought so far into an answer; **length** — the response ends with
//!   `finish_reason: "length"` and a note saying why;
//! - a response that ends with reasoning and no answer is fixed the same way, or for hidden
//!   reasoning retried once with a lower effort — never returned silently empty.
//!
//! The client sees one response: one id, reasoning up to the budget, the answer, one usage
//! block summing every call, and a `thinkgate` field saying what was done. The upstream is
//! always streamed, so a whole response is the same walk collected.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use thinkgate_config::{Config, Overrun};

use super::{sse_frame, Context, Renderer, Tally, DONE};
use crate::body::{self, Body, BoxError};
use crate::canonical::Budget;
use crate::canonical::{ChatRequest, Delta, Usage};
use crate::error::ApiError;
use crate::telemetry::{BudgetRecord, Tokens};
use crate::upstream::{humanize, upstream_kind, Control, Decoder, FollowUp, Native, WireFormat};

/// What the guard needs besides the egress context.
pub struct Guard {
    pub budget: Budget,
    pub control: Control,
    pub config: Arc<Config>,
    /// The request as sent upstream, for the follow-up call.
    pub request: ChatRequest,
    /// Sends the follow-up through the attempt path's admission and send.
    pub follow_ups: Box<dyn FollowUpSender>,
}

/// Sends a follow-up call for the guard. The pipeline implements it, so that a follow-up is
/// admitted, sent and counted in the model's health like every other call; the guard itself
/// reaches no upstream.
pub trait FollowUpSender: Send + Sync {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Result<Response<Body>, String>>;
}

/// What enforcement did, as the response reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardReport {
    /// `native`, `watched` (the guard needed not act), `forced` or `cut`.
    pub enforcement: &'static str,
    pub reasoning_tokens: u64,
    /// `upstream` (the upstream's usage) or `estimated` (the proxy's tokenizer), the same
    /// words as the token metrics' `source` label.
    pub reasoning_source: &'static str,
    pub note: Option<String>,
}

impl GuardReport {
    fn to_json(&self, budget: &Budget) -> Value {
        json!({
            "mode": budget.mode.as_str(),
            "reasoning_budget": budget.reported(),
            "reasoning_tokens": self.reasoning_tokens,
            "reasoning_source": self.reasoning_source,
            "budget_enforcement": self.enforcement,
            "note": self.note,
        })
    }

    /// The `x-thinkgate-*` headers a whole response carries.
    pub fn headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-thinkgate-reasoning-tokens", self.reasoning_tokens.into());
        headers.insert(
            "x-thinkgate-budget-enforcement",
            HeaderValue::from_static(self.enforcement),
        );
        headers.insert(
            "x-thinkgate-reasoning-source",
            HeaderValue::from_static(self.reasoning_source),
        );
        if let Some(note) = self
            .note
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            headers.insert("x-thinkgate-budget-note", note);
        }
    }
}

/// One upstream response read as deltas.
struct Source {
    events: super::Events,
    decoder: Decoder,
    idle: Duration,
}

impl Source {
    fn new(resp: Response<Body>, format: WireFormat, idle: Duration, max_event: usize) -> Source {
        let data: BoxStream<'static, Result<Bytes, BoxError>> =
            resp.into_body().into_data_stream().boxed();
        Source {
            events: super::Events::new(data, max_event),
            decoder: Decoder::canonical(format),
            idle,
        }
    }

    /// The next event's deltas; `Ok(None)` when the stream has ended.
    async fn next(&mut self) -> Result<Option<Vec<Delta>>, (&'static str, String)> {
        loop {
            if self.decoder.done() {
                return Ok(None);
            }
            match tokio::time::timeout(self.idle, self.events.next()).await {
                Err(_) => {
                    let why = format!("sent nothing for {}", humanize(self.idle));
                    return Err(("upstream_timeout", why));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err((
                        "upstream_stream_broken",
                        format!("broke off the stream: {e}"),
                    ))
                }
                Ok(Some(Ok(event))) => {
                    // An unreadable event is skipped; the stream's end tells if it mattered.
                    if let Ok(deltas) = self.decoder.event(event.name(), event.data()) {
                        if !deltas.is_empty() {
                            return Ok(Some(deltas));
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    First,
    FollowUp,
    Done,
}

/// Why the guard stepped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    /// The reasoning reached the budget.
    Budget,
    /// The response ended with reasoning and no answer.
    EmptyAnswer,
}

enum Batch {
    Deltas(Vec<Delta>),
    End,
    /// The stream failed: a code for the error event, and why.
    Fail(&'static str, String),
    /// The upstream reported an error inside the stream: its type and message.
    UpstreamError(String, String),
}

/// What one delta does to the watch.
enum Step {
    Go,
    Trip(Trip),
    Error(String, String),
}

/// One guarded response in progress.
struct Watch {
    ctx: Context,
    guard: Guard,
    source: Option<Source>,
    phase: Phase,
    /// Reasoning tokens let through in the first call.
    counted: u64,
    /// Reasoning tokens let through in the follow-up call.
    follow_counted: u64,
    /// The reasoning text let through, for the follow-up.
    shown: String,
    answered: bool,
    finish: Option<String>,
    first: Tally,
    follow: Tally,
    /// The enforcement label once the guard acted.
    acted: Option<&'static str>,
    note: Option<String>,
    started: bool,
    /// A follow-up call was made.
    followed: bool,
    /// The request has been recorded (ended, failed); a drop before that is a disconnect.
    recorded: bool,
}

impl Watch {
    fn new(ctx: Context, guard: Guard, resp: Response<Body>) -> Watch {
        let (first, follow) = (ctx.tally(), ctx.tally());
        let source = Source::new(
            resp,
            ctx.format,
            ctx.route.upstream.stream_idle_timeout,
            ctx.limits.max_event_bytes,
        );
        Watch {
            ctx,
            guard,
            source: Some(source),
            phase: Phase::First,
            counted: 0,
            follow_counted: 0,
            shown: String::new(),
            answered: false,
            finish: None,
            first,
            follow,
            acted: None,
            note: None,
            started: false,
            followed: false,
            recorded: false,
        }
    }

    /// The next deltas for the client, or how the response ends.
    async fn next_batch(&mut self) -> Batch {
        loop {
            let Some(source) = self.source.as_mut() else {
                return Batch::End;
            };
            let deltas = match source.next().await {
                Err((code, why)) => return Batch::Fail(code, why),
                Ok(Some(d)) => d,
                Ok(None) => {
                    self.source = None;
                    if self.finish.is_none() {
                        let why = "closed the stream before the response finished".to_string();
                        return Batch::Fail("upstream_stream_broken", why);
                    }
                    let empty = !self.answered && self.finish.as_deref() == Some("length");
                    if self.phase == Phase::First && empty {
                        self.act(Trip::EmptyAnswer).await;
                        continue;
                    }
                    self.phase = Phase::Done;
                    return Batch::End;
                }
            };
            let mut out = Vec::with_capacity(deltas.len());
            for d in deltas {
                match self.take(d, &mut out) {
                    Step::Go => {}
                    Step::Trip(t) => {
                        self.act(t).await;
                        break;
                    }
                    Step::Error(kind, message) => return Batch::UpstreamError(kind, message),
                }
            }
            if !out.is_empty() {
                return Batch::Deltas(out);
            }
        }
    }

    /// Lets one upstream delta through (or part of it, or none), watching the budget.
    fn take(&mut self, d: Delta, out: &mut Vec<Delta>) -> Step {
        let started = self.ctx.started;
        let first = self.phase == Phase::First;
        let tally = if first {
            &mut self.first
        } else {
            &mut self.follow
        };
        match d {
            Delta::Start { .. } if self.started => return Step::Go,
            Delta::Start { .. } => self.started = true,
            Delta::Reasoning(mut text) => {
                // A native knob is trusted in the first call; a follow-up was asked not to
                // think (or less), so whatever it thinks comes out of what is left.
                let watching = !first || self.guard.control.overrun.is_some();
                let room = self
                    .guard
                    .control
                    .limit
                    .saturating_sub(self.counted + self.follow_counted);
                let counter = self.ctx.route.counter;
                let mut n = counter.count(&text) as u64;
                let over = watching && n > room;
                if over {
                    // Only the delta that crosses the line is cut (encoding costs more than
                    // counting, so it is done once per response); the rest pass as they came.
                    let (kept, k) = counter.truncate(&text, room as usize);
                    let len = kept.len();
                    text.truncate(len);
                    n = k as u64;
                }
                if first {
                    self.counted += n;
                    self.shown.push_str(&text);
                } else {
                    self.follow_counted += n;
                }
                if !text.is_empty() {
                    tally.observe(
                        crate::canonical::Event::Reasoning(text.as_str().into()),
                        started,
                    );
                    if !self.guard.budget.exclude {
                        out.push(Delta::Reasoning(text));
                    }
                }
                return if over {
                    Step::Trip(Trip::Budget)
                } else {
                    Step::Go
                };
            }
            Delta::ReasoningBlock(_) if self.guard.budget.exclude => return Step::Go,
            Delta::ReasoningBlock(_) => {}
            Delta::Content(_) | Delta::ToolCallStart { .. } | Delta::ToolCallArguments { .. } => {
                self.answered = true;
            }
            Delta::Finish(ref reason) => {
                // Held back until the response is really over (a follow-up may still come).
                self.finish = Some(reason.clone());
                if let Some(e) = d.event() {
                    tally.observe(e, started);
                }
                return Step::Go;
            }
            Delta::Usage(u) => {
                tally.observe(crate::canonical::Event::Usage(u), started);
                return Step::Go;
            }
            Delta::Error { kind, message } => return Step::Error(kind, message),
        }
        if let Some(e) = d.event() {
            tally.observe(e, started);
        }
        out.push(d);
        Step::Go
    }

    /// Steps in: drops the upstream call and starts the follow-up that yields the answer, or
    /// ends the response with `length` when there can be none.
    async fn act(&mut self, trip: Trip) {
        // Dropping the source closes the upstream call: no more tokens are spent on it.
        self.source = None;
        self.finish = None;
        if self.phase == Phase::FollowUp {
            // One follow-up per response: one that thinks past the budget ends it there.
            let budget = self.guard.budget.reported();
            return self.end_with_length(format!(
                "the follow-up call kept reasoning past the budget of {budget} tokens"
            ));
        }
        let overrun = self.guard.control.overrun;
        let follow_up = match (overrun, trip) {
            (Some(Overrun::Force), _) => Some(FollowUp::Force {
                reasoning: &self.shown,
            }),
            (Some(Overrun::Cut), _) => Some(FollowUp::Cut {
                reasoning: &self.shown,
            }),
            (None, Trip::EmptyAnswer) => Some(FollowUp::Retry),
            (Some(Overrun::Length), _) | (None, Trip::Budget) => None,
        };
        let label = match follow_up {
            Some(FollowUp::Force { .. }) => "forced",
            Some(FollowUp::Retry) => "native",
            _ => "cut",
        };
        self.acted = Some(label);
        let budget = self.guard.budget.reported();
        let Some(follow_up) = follow_up else {
            return self.end_with_length(match trip {
                Trip::Budget => format!("reasoning stopped at the budget of {budget} tokens; this model is configured to end there (overrun = \"length\")"),
                Trip::EmptyAnswer => "the model spent its output on reasoning and left no answer".to_string(),
            });
        };
        let route = self.ctx.route.clone();
        let modes = &self.guard.config.modes;
        let body = match route.upstream.follow_up_body(
            &self.guard.request,
            &route.model,
            &self.guard.budget,
            modes,
            follow_up,
        ) {
            Ok(b) => b,
            Err(why) => {
                return self.end_with_length(format!(
                    "reasoning stopped at the budget of {budget} tokens and no answer could be asked for: {why}"
                ))
            }
        };
        match self.guard.follow_ups.send(body).await {
            Ok(resp) => {
                self.note = Some(match (follow_up, trip) {
                    (FollowUp::Retry, _) => "the model left no room for the answer; retried once with a lower effort".to_string(),
                    (_, Trip::EmptyAnswer) => "the model stopped with reasoning and no answer; the answer was asked for separately".to_string(),
                    (FollowUp::Force { .. }, Trip::Budget) => format!("reasoning reached the budget of {budget} tokens; the thought was closed and the answer continued"),
                    (_, Trip::Budget) => format!("reasoning reached the budget of {budget} tokens; the answer was asked for without further thinking"),
                });
                let idle = route.upstream.stream_idle_timeout;
                let max_event = self.ctx.limits.max_event_bytes;
                self.source = Some(Source::new(resp, self.ctx.format, idle, max_event));
                self.phase = Phase::FollowUp;
                self.followed = true;
            }
            Err(why) => self.end_with_length(format!(
                "reasoning was stopped at the budget and the follow-up call failed: {why}"
            )),
        }
    }

    fn end_with_length(&mut self, note: String) {
        tracing::warn!(
            request_id = self.ctx.request_id.to_str().unwrap_or(""),
            model = %self.ctx.route.model.id,
            "Response ended at the reasoning budget without an answer: {note}."
        );
        self.finish = Some("length".to_string());
        self.note = Some(note);
        self.phase = Phase::Done;
    }

    /// The figures the client gets: every call summed.
    fn tokens(&self) -> (Tokens, GuardReport) {
        let a = self.first.tokens(|| self.ctx.prompt_estimate.get());
        let mut t = a;
        if self.followed {
            let b = self
                .follow
                .tokens(|| self.ctx.prompt_estimate.get() + self.counted + 32);
            t.usage.add_call(&b.usage);
            if b.output_source == crate::telemetry::Source::Estimated {
                t.output_source = b.output_source;
            }
            if b.prompt_source == crate::telemetry::Source::Estimated {
                t.prompt_source = b.prompt_source;
            }
            t.ttft = a.ttft.or(b.ttft);
            t.empty = b.empty;
        }
        let reasoning = t.usage.reasoning_tokens.unwrap_or(0);
        let from_upstream = self.acted.is_none()
            && self
                .first
                .usage
                .is_some_and(|u| u.reasoning_tokens.is_some());
        let enforcement = match self.acted {
            Some(label) => label,
            None if self.guard.control.native != Native::None => "native",
            None => "watched",
        };
        let report = GuardReport {
            enforcement,
            reasoning_tokens: reasoning,
            reasoning_source: if from_upstream {
                "upstream"
            } else {
                "estimated"
            },
            note: self.note.clone(),
        };
        (t, report)
    }

    /// Records the request once: figures, log line, budget metrics.
    fn record(&mut self, outcome: &str) -> (Usage, GuardReport) {
        let (tokens, report) = self.tokens();
        self.ctx.account.budget = Some(BudgetRecord {
            limit: self.guard.control.limit,
            method: report.enforcement,
        });
        let finish = self.finish.clone();
        self.ctx.record(tokens, finish.as_deref(), outcome);
        if let Some(first) = self.first.answer() {
            let answer = format!("{first}{}", self.follow.answer().unwrap_or(""));
            self.ctx.answered(&answer);
        }
        self.recorded = true;
        (tokens.usage, report)
    }

    fn fail(&mut self, code: &'static str, why: String) -> ApiError {
        let provider = self.ctx.route.upstream.name.clone();
        tracing::warn!(
            request_id = self.ctx.request_id.to_str().unwrap_or(""),
            provider = %provider,
            code,
            "Upstream stream failed: {why}."
        );
        self.record(code);
        // The same status a relayed request gets for the same failure.
        let status = if code == "upstream_timeout" {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        ApiError::new(
            status,
            "upstream_error",
            format!("provider `{provider}` {why}"),
        )
        .with_code(code)
    }

    fn upstream_error(&mut self, kind: &str, message: &str) -> ApiError {
        let provider = self.ctx.route.upstream.name.clone();
        self.record("upstream_error");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("provider `{provider}` reported an error: {message}"),
        )
        .with_code(upstream_kind(kind))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.recorded {
            // The client went away: dropping the source closes the upstream call.
            self.record("client_disconnected");
        }
    }
}

/// A guarded response for a client that asked for a stream.
pub fn stream(ctx: Context, guard: Guard, resp: Response<Body>) -> Response<Body> {
    let include_usage = ctx.include_usage;
    let renderer = Renderer::new(&ctx.route.model.upstream_model, ctx.reasoning_field);
    let watch = Watch::new(ctx, guard, resp);
    let state = (watch, renderer, false);
    let frames = futures_util::stream::unfold(state, move |(mut w, mut r, over)| async move {
        if over {
            return None;
        }
        let mut out = BytesMut::new();
        let over = match w.next_batch().await {
            Batch::Deltas(deltas) => {
                for d in &deltas {
                    if let Some(chunk) = r.chunk_for(d) {
                        out.extend_from_slice(&sse_frame("", &chunk));
                    }
                }
                false
            }
            Batch::End => {
                let (usage, report) = w.record("ok");
                let finish = w.finish.clone().unwrap_or_else(|| "stop".into());
                let extra = report.to_json(&w.guard.budget);
                out.extend_from_slice(&sse_frame("", &r.finish_chunk(&finish, extra)));
                if include_usage {
                    out.extend_from_slice(&sse_frame("", &r.usage_chunk(&usage)));
                }
                out.extend_from_slice(DONE);
                true
            }
            Batch::Fail(code, why) => {
                let err = w.fail(code, why);
                out.extend_from_slice(&sse_frame("", &err.to_json().to_string()));
                true
            }
            Batch::UpstreamError(kind, message) => {
                let err = w.upstream_error(&kind, &message);
                out.extend_from_slice(&sse_frame("", &err.to_json().to_string()));
                true
            }
        };
        Some((Ok::<_, BoxError>(out.freeze()), (w, r, over)))
    });
    body::sse_response(body::stream(frames))
}

/// A guarded response for a client that asked for a whole completion: the same walk,
/// collected, within the request's deadline.
pub async fn whole(ctx: Context, guard: Guard, resp: Response<Body>) -> Response<Body> {
    let deadline = ctx.request_timeout.saturating_sub(ctx.started.elapsed());
    let timeout = ctx.request_timeout;
    let max_bytes = ctx.limits.max_response_bytes;
    let mut renderer = Renderer::new(&ctx.route.model.upstream_model, ctx.reasoning_field);
    let mut watch = Watch::new(ctx, guard, resp);
    let mut deltas = Vec::new();
    let mut held = 0usize;
    let walk = async {
        loop {
            match watch.next_batch().await {
                Batch::Deltas(d) => {
                    held += d.iter().map(Delta::size).sum::<usize>();
                    if held > max_bytes {
                        let why =
                            format!("sent a response larger than the limit of {max_bytes} bytes");
                        return Batch::Fail("upstream_response_too_large", why);
                    }
                    deltas.extend(d)
                }
                other => return other,
            }
        }
    };
    let end = match tokio::time::timeout(deadline, walk).await {
        Ok(end) => end,
        Err(_) => Batch::Fail(
            "upstream_timeout",
            format!("did not finish within {}", humanize(timeout)),
        ),
    };
    match end {
        Batch::End | Batch::Deltas(_) => {
            let (usage, report) = watch.record("ok");
            if let Some(finish) = watch.finish.clone() {
                deltas.push(Delta::Finish(finish));
            }
            let mut json = renderer.completion(&deltas, &usage);
            if let Value::Object(o) = &mut json {
                o.insert("thinkgate".into(), report.to_json(&watch.guard.budget));
            }
            let mut resp = body::json_response(StatusCode::OK, json.to_string());
            report.headers(resp.headers_mut());
            resp
        }
        Batch::Fail(code, why) => {
            let err = watch.fail(code, why);
            err.into_response()
        }
        Batch::UpstreamError(kind, message) => {
            watch.upstream_error(&kind, &message).into_response()
        }
    }
}
