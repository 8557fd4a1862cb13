//! Egress: the upstream's response → the client, as OpenAI JSON or SSE.
//!
//! OpenAI-format responses are forwarded as the upstream wrote them (lossless), and observed
//! on the way through canonical events ([`Tally`]). The one edit: a usage block that is
//! missing or breaks an invariant (reasoning tokens absent or above completion tokens, a
//! wrong total) is repaired, keeping its other fields. Streams are relayed event by event,
//! never buffered whole; an upstream that breaks, stalls or ends early yields an
//! OpenAI-shaped error event rather than a `[DONE]` that would pass a truncated answer off as
//! complete.

pub mod completions;
mod guard;
mod reframe;
pub mod sse;
mod tally;
mod translate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use crate::body::{self, Body, BoxError};
use crate::canonical::Delta;
use crate::error::ApiError;
use crate::models::Route;
use crate::telemetry::spans;
use crate::telemetry::{Account, Tokens};
use crate::upstream::openai::{patch_usage, rename_reasoning, with_usage, ChunkView};
use crate::upstream::{humanize, upstream_kind, Decoder, UpstreamError, WireFormat};
pub use guard::{FollowUpSender, Guard, GuardReport};
pub use reframe::{read, reframe, usage_json, Read, Reframe};
pub use sse::{Events, SseEvent};
pub use tally::Tally;
use thinkgate_config::ReasoningField;
pub use translate::Renderer;

/// What egress needs to know about the request.
pub struct Context {
    pub request_id: HeaderValue,
    pub route: Arc<Route>,
    /// The client asked for the streamed usage chunk.
    pub include_usage: bool,
    pub started: Instant,
    /// Bound on a whole non-streamed response.
    pub request_timeout: Duration,
    /// Prompt tokens counted before the call, for when the upstream reports none.
    pub prompt_estimate: crate::plan::PromptCount,
    /// Recorded when the context is dropped, i.e. when the response has ended.
    pub account: Account,
    /// What the upstream speaks: OpenAI is relayed as is, others are translated.
    pub format: WireFormat,
    pub reasoning_field: ReasoningField,
    /// Bounds on what the upstream sends: one stream event, and a whole response.
    pub limits: Limits,
    /// Held until the response ends: the concurrency slots of this upstream call.
    pub permits: Vec<tokio::sync::OwnedSemaphorePermit>,
}

/// Bounds on what an upstream may make the proxy hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_response_bytes: usize,
}

impl Context {
    /// The context for relaying `route`'s response under the `[server]` settings; the caller
    /// adds the call's concurrency `permits`.
    pub fn new(
        request_id: HeaderValue,
        route: Arc<Route>,
        account: Account,
        include_usage: bool,
        prompt_estimate: crate::plan::PromptCount,
        server: &thinkgate_config::Server,
    ) -> Context {
        Context {
            request_id,
            format: route.upstream.format,
            route,
            include_usage,
            started: account.started(),
            request_timeout: server.request_timeout,
            prompt_estimate,
            account,
            reasoning_field: server.reasoning_field,
            limits: Limits {
                max_event_bytes: server.max_event_bytes,
                max_response_bytes: server.max_response_bytes,
            },
            permits: Vec::new(),
        }
    }

    /// Works out the response's token figures and hands them to the account. Called once,
    /// when the response is complete or abandoned.
    fn finish(&mut self, tally: &Tally, outcome: &str) -> Tokens {
        let tokens = tally.tokens(|| self.prompt_estimate.get());
        self.record(tokens, tally.finish_reason.as_deref(), outcome);
        if let Some(answer) = tally.answer() {
            self.answered(answer);
        }
        tokens
    }

    /// A tally for this response, keeping the answer when the trace records content.
    fn tally(&self) -> Tally {
        let tally = Tally::new(self.route.counter);
        match self.account.captures_content() {
            true => tally.keeping_answer(),
            false => tally,
        }
    }

    /// The answer on the request's span (`gen_ai.output.messages`), when it records content.
    fn answered(&mut self, answer: &str) {
        let finish = self.account.finish_reason.clone();
        self.account.trace(|span| {
            span.content(spans::attr::OUTPUT_MESSAGES, || {
                spans::output_messages(answer, finish.as_deref())
            })
        });
    }

    /// Hands the response's token figures and outcome to the account, which logs the request
    /// when it records.
    fn record(&mut self, tokens: Tokens, finish_reason: Option<&str>, outcome: &str) {
        self.account.upstream_outcome(match outcome {
            "ok" => "ok",
            "upstream_error" => "error_status",
            "upstream_timeout" => "timeout",
            "client_disconnected" => "cancelled",
            _ => "broken",
        });
        self.account.set_tokens(tokens);
        self.account.finish_reason = finish_reason.map(str::to_string);
    }

    /// The error event that ends a stream the upstream broke, stalled or cut short, with
    /// the request's figures settled (the chat and the completions relay both end so).
    fn stream_failed(&mut self, tally: &Tally, code: &'static str, why: &str) -> Bytes {
        let provider = &self.route.upstream.name;
        tracing::warn!(
            request_id = self.request_id.to_str().unwrap_or(""),
            provider = %provider,
            code,
            "Upstream stream failed: {why}."
        );
        let err = ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("provider `{provider}` {why}"),
        )
        .with_code(code);
        self.finish(tally, code);
        sse_frame("", &err.to_json().to_string())
    }

    fn fail_whole(&mut self, outcome: &str, err: UpstreamError) -> Response<Body> {
        self.account.upstream_outcome(outcome);
        let err = err.into_api(&self.route.upstream.name);
        self.account.status = err.status.as_u16();
        err.into_response()
    }
}

/// Hands an upstream's successful response on: through the budget guard when one applies
/// (and the upstream streams, as it is asked to under a budget), relayed event by event when
/// the client streams, read whole otherwise.
pub async fn respond(
    ctx: Context,
    resp: Response<Body>,
    guard: Option<Guard>,
    client_stream: bool,
) -> Response<Body> {
    let is_sse = body::is_event_stream(resp.headers());
    match guard {
        Some(guard) if is_sse && client_stream => guard::stream(ctx, guard, resp),
        // Boxed, as every rarer path of the request is: inline, its future would make
        // every request's state machine (copied whole when boxed) that much larger.
        Some(guard) if is_sse => Box::pin(guard::whole(ctx, guard, resp)).await,
        // Asked for a stream (the client's, or the guard's): a whole body cannot be vouched
        // for as one, nor held to a budget.
        Some(_) => not_a_stream(ctx, &resp),
        None if client_stream && !is_sse => not_a_stream(ctx, &resp),
        None if is_sse && client_stream => stream(ctx, resp),
        None => whole(ctx, resp).await,
    }
}

/// The error for a 200 that is not the stream the upstream was asked for.
pub fn not_a_stream(mut ctx: Context, resp: &Response<Body>) -> Response<Body> {
    let kind = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_string();
    let why = format!("answered a streaming request with `{kind}` instead of an event stream");
    ctx.fail_whole("broken", UpstreamError::Broken(why))
}

/// A whole (non-streamed) response: read it, observe it, forward its bytes.
pub async fn whole(mut ctx: Context, resp: Response<Body>) -> Response<Body> {
    let left = ctx.request_timeout.saturating_sub(ctx.started.elapsed());
    let read = body::collect_limited(resp.into_body(), ctx.limits.max_response_bytes);
    let bytes = match tokio::time::timeout(left, read).await {
        Err(_) => return ctx.fail_whole("timeout", UpstreamError::Timeout(ctx.request_timeout)),
        Ok(Err(e)) => {
            let why = format!("its response could not be read: {e}");
            return ctx.fail_whole("broken", UpstreamError::Broken(why));
        }
        Ok(Ok(b)) => b,
    };
    if let Some(decoder) = Decoder::for_format(ctx.format) {
        return whole_translated(ctx, decoder, &bytes);
    }
    let mut tally = ctx.tally();
    let field = ctx.reasoning_field;
    let read = |bytes| {
        let data = std::str::from_utf8(bytes).ok()?;
        Some((data, ChunkView::parse(data).ok()?))
    };
    let (data, view) = match read(&bytes) {
        Some(read) => read,
        None => {
            let why = "its response is not a JSON chat completion".to_string();
            return ctx.fail_whole("broken", UpstreamError::Broken(why));
        }
    };
    view.for_each_event(|e| tally.observe(e, ctx.started));
    let needs_repair = view.usage().is_none_or(|u| u.needs_repair());
    let misnamed = view.reasoning_misnamed(field);
    let tokens = ctx.finish(&tally, "ok");
    let spliced = match (needs_repair, misnamed) {
        // The common repair (an upstream that reports no reasoning tokens) edits only the
        // usage block's bytes, found by the read above.
        (true, false) => with_usage(data, view.usage_block.raw, &tokens.usage),
        _ => None,
    };
    // The view borrows the bytes forwarded below.
    drop(view);
    let bytes = if let Some(spliced) = spliced {
        Bytes::from(spliced)
    } else if needs_repair || misnamed {
        edit_json(&bytes, |object| {
            if needs_repair {
                patch_usage(object, &tokens.usage);
            }
            if misnamed {
                rename_reasoning(object, field);
            }
        })
        .map_or(bytes, Bytes::from)
    } else {
        bytes
    };
    body::json_response(StatusCode::OK, bytes)
}

/// A whole response in another format, rendered as an OpenAI chat completion.
fn whole_translated(mut ctx: Context, mut decoder: Decoder, bytes: &[u8]) -> Response<Body> {
    let deltas = match decoder.whole(bytes) {
        Ok(d) => d,
        Err(why) => return ctx.fail_whole("broken", UpstreamError::Broken(why)),
    };
    let mut tally = ctx.tally();
    for d in &deltas {
        if let Some(e) = d.event() {
            tally.observe(e, ctx.started);
        }
    }
    let tokens = ctx.finish(&tally, "ok");
    let mut renderer = Renderer::new(&ctx.route.model.upstream_model, ctx.reasoning_field);
    let json = renderer.completion(&deltas, &tokens.usage);
    body::json_response(StatusCode::OK, json.to_string())
}

/// A streamed response: relayed event by event as the upstream produces them.
pub fn stream(ctx: Context, resp: Response<Body>) -> Response<Body> {
    let idle = ctx.route.upstream.stream_idle_timeout;
    let upstream: BoxStream<'static, Result<Bytes, BoxError>> =
        resp.into_body().into_data_stream().boxed();
    let translator = Decoder::for_format(ctx.format).map(|decoder| {
        (
            decoder,
            Renderer::new(&ctx.route.model.upstream_model, ctx.reasoning_field),
        )
    });
    let relay = Relay {
        translator,
        events: Events::new(upstream, ctx.limits.max_event_bytes),
        tally: ctx.tally(),
        ctx,
        idle,
        finished: false,
        pending: None,
        saw_usage: false,
        meta: None,
    };
    let frames = futures_util::stream::unfold(relay, |mut relay| async move {
        let frame = relay.next_frame().await?;
        Some((Ok::<_, BoxError>(frame), relay))
    });
    body::sse_response(body::stream(frames))
}

struct Relay {
    /// For upstreams that are not OpenAI-format: their decoder and the OpenAI renderer.
    translator: Option<(Decoder, Renderer)>,
    events: Events,
    ctx: Context,
    tally: Tally,
    idle: Duration,
    finished: bool,
    /// A frame to send before reading on (the `[DONE]` after a synthesized usage chunk).
    pending: Option<Bytes>,
    saw_usage: bool,
    /// `id`, `created` and `model` of the first chunk, for a synthesized usage chunk.
    meta: Option<(String, u64, String)>,
}

/// The bound on one event of the relay's own output, read back by the other APIs' front
/// ends and the synthesis: each is built from one upstream event (held to
/// `server.max_event_bytes`), so this is only a backstop.
pub const OWN_EVENT_BYTES: usize = 64 << 20;

/// The SSE event that ends an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

impl Relay {
    /// The next frame for the client, or `None` when the stream is over.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.pending.take() {
            return Some(frame);
        }
        if self.finished {
            return None;
        }
        loop {
            let next = tokio::time::timeout(self.idle, self.events.next()).await;
            let event = match next {
                Err(_) => {
                    let why = format!("sent nothing for {}", humanize(self.idle));
                    return Some(self.fail("upstream_timeout", why));
                }
                Ok(None) if self.tally.finish_reason.is_some() => {
                    // Some servers end without [DONE] after the final chunk: complete it.
                    return Some(self.done());
                }
                Ok(None) => {
                    let why = "closed the stream before the response finished".to_string();
                    return Some(self.fail("upstream_stream_broken", why));
                }
                Ok(Some(Err(e))) => {
                    let why = format!("broke off the stream: {e}");
                    return Some(self.fail("upstream_stream_broken", why));
                }
                Ok(Some(Ok(event))) => event,
            };
            if self.translator.is_some() {
                if let Some(frame) = self.translated(&event) {
                    return Some(frame);
                }
                continue;
            }
            if event.data() == "[DONE]" {
                return Some(self.done());
            }
            if let Some(frame) = self.forward(&event) {
                return Some(frame);
            }
        }
    }

    /// The frame to send for one upstream event, or `None` to drop it.
    fn forward(&mut self, event: &SseEvent) -> Option<Bytes> {
        let mut rewritten = None;
        match ChunkView::parse(event.data()) {
            Ok(view) => {
                let started = self.ctx.started;
                view.for_each_event(|e| self.tally.observe(e, started));
                if self.meta.is_none() {
                    if let (Some(id), Some(model)) = (&view.id, &view.model) {
                        let created = view.created.unwrap_or(0);
                        self.meta = Some((id.to_string(), created, model.to_string()));
                    }
                }
                if view.error.is_some() {
                    // The upstream's own error event: pass it on and end the stream there.
                    self.finished = true;
                    self.ctx.finish(&self.tally, "upstream_error");
                }
                let field = self.ctx.reasoning_field;
                let misnamed = view.reasoning_misnamed(field);
                let mut usage_edit = None;
                let block = view.usage_block.raw;
                if let Some(usage) = view.usage() {
                    self.saw_usage = true;
                    if !self.ctx.include_usage {
                        // The proxy asked for usage; the client did not.
                        if view.choices.is_empty() {
                            return None;
                        }
                        usage_edit = Some(None);
                    } else if usage.needs_repair() {
                        let tokens = self.tally.tokens(|| self.ctx.prompt_estimate.get());
                        usage_edit = Some(Some(tokens.usage));
                    }
                }
                if let (false, Some(Some(usage))) = (misnamed, usage_edit) {
                    rewritten = with_usage(event.data(), block, &usage);
                }
                if rewritten.is_none() && (misnamed || usage_edit.is_some()) {
                    rewritten = edit_json(event.data().as_bytes(), |chunk| {
                        match usage_edit {
                            Some(None) => drop(chunk.remove("usage")),
                            Some(Some(usage)) => patch_usage(chunk, &usage),
                            None => {}
                        }
                        if misnamed {
                            rename_reasoning(chunk, field);
                        }
                    });
                }
            }
            Err(_) => self.tally.unreadable += 1,
        }
        // Unedited, the event goes on as the upstream's own bytes: nothing is copied.
        Some(match rewritten {
            Some(data) => sse_frame(event.name(), &data),
            None => event.raw().clone(),
        })
    }

    /// The frames for one event of a translated upstream, or `None` when it yields none.
    fn translated(&mut self, event: &SseEvent) -> Option<Bytes> {
        let (mut decoder, mut renderer) = self.translator.take()?;
        let mut out = BytesMut::new();
        match decoder.event(event.name(), event.data()) {
            Err(_) => self.tally.unreadable += 1,
            Ok(deltas) => {
                for d in &deltas {
                    if let Some(e) = d.event() {
                        self.tally.observe(e, self.ctx.started);
                    }
                    if let Delta::Error { kind, message } = d {
                        // The upstream's error inside the stream: pass it on, end there.
                        let provider = &self.ctx.route.upstream.name;
                        let err = ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "upstream_error",
                            format!("provider `{provider}` reported an error: {message}"),
                        )
                        .with_code(upstream_kind(kind));
                        out.extend_from_slice(&sse_frame("", &err.to_json().to_string()));
                        self.finished = true;
                        self.ctx.finish(&self.tally, "upstream_error");
                        break;
                    }
                    if let Some(chunk) = renderer.chunk_for(d) {
                        out.extend_from_slice(&sse_frame("", &chunk));
                    }
                }
                self.meta = Some((
                    renderer.id.clone(),
                    renderer.created,
                    renderer.model.clone(),
                ));
            }
        }
        let done = decoder.done() && !self.finished;
        self.translator = Some((decoder, renderer));
        if done {
            out.extend_from_slice(&self.done());
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    fn done(&mut self) -> Bytes {
        self.finished = true;
        let tokens = self.ctx.finish(&self.tally, "ok");
        if !self.ctx.include_usage || self.saw_usage {
            return Bytes::from_static(DONE);
        }
        // The client asked for usage and the upstream sent none: send the proxy's count.
        let (id, created, model) = self.meta.clone().unwrap_or_default();
        let mut chunk = Map::new();
        chunk.insert("id".into(), id.into());
        chunk.insert("object".into(), "chat.completion.chunk".into());
        chunk.insert("created".into(), created.into());
        chunk.insert("model".into(), model.into());
        chunk.insert("choices".into(), Value::Array(Vec::new()));
        patch_usage(&mut chunk, &tokens.usage);
        self.pending = Some(Bytes::from_static(DONE));
        sse_frame("", &Value::Object(chunk).to_string())
    }

    fn fail(&mut self, code: &'static str, why: String) -> Bytes {
        self.finished = true;
        self.ctx.stream_failed(&self.tally, code, &why)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away: dropping `events` closes the upstream request now.
            self.ctx.finish(&self.tally, "client_disconnected");
        }
    }
}

/// Re-serializes a JSON object after `edit`; `None` (forward as is) when it is not one.
fn edit_json(data: &[u8], edit: impl FnOnce(&mut Map<String, Value>)) -> Option<String> {
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(mut object)) => {
            edit(&mut object);
            Some(Value::Object(object).to_string())
        }
        _ => None,
    }
}

/// One SSE event: an `event:` line when named, and one `data:` line per line of data.
pub fn sse_frame(event: &str, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    if !event.is_empty() && event != "message" {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_single_and_multi_line_data() {
        assert_eq!(&sse_frame("", "{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        assert_eq!(
            &sse_frame("ping", "a\nb")[..],
            b"event: ping\ndata: a\ndata: b\n\n"
        );
    }
}
