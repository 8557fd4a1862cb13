//! Egress: the upstream's response → the client, as OpenAI JSON or SSE.
//!
//! OpenAI-format responses are forwarded as the upstream wrote them (lossless), and observed
//! on the way through canonical events ([`Tally`]). Streams are relayed event by event, never
//! buffered whole; an upstream that breaks, stalls or ends early yields an OpenAI-shaped
//! error event rather than a `[DONE]` that would pass a truncated answer off as complete.

mod tally;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use eventsource_stream::{Event as SseEvent, EventStream, Eventsource};
use futures_util::stream::{BoxStream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::body::{self, Body, BoxError};
use crate::error::ApiError;
use crate::providers::openai::ChunkView;
use crate::providers::{humanize, UpstreamError};
use crate::runtime::Route;
pub use tally::{Source, Tally};

/// Largest non-streamed upstream response the proxy accepts.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// What egress needs to know about the request.
pub struct Context {
    pub request_id: HeaderValue,
    pub route: Arc<Route>,
    /// The client asked for the streamed usage chunk.
    pub include_usage: bool,
    pub started: Instant,
    /// Bound on a whole non-streamed response.
    pub request_timeout: Duration,
}

impl Context {
    fn log_finished(&self, tally: &Tally, outcome: &str) {
        let (output, reasoning, source) = tally.output_tokens(&self.route.counter);
        tracing::info!(
            request_id = self.request_id.to_str().unwrap_or(""),
            model = %self.route.model.id,
            provider = %self.route.upstream.name,
            outcome,
            prompt_tokens = tally.usage.map(|u| u.prompt_tokens),
            output_tokens = output,
            reasoning_tokens = reasoning,
            token_source = source.as_str(),
            finish_reason = tally.finish_reason.as_deref(),
            ttft_ms = tally.first_token.map(|d| d.as_millis() as u64),
            duration_ms = self.started.elapsed().as_millis() as u64,
            "Request finished."
        );
    }
}

/// A whole (non-streamed) response: read it, observe it, forward its bytes unchanged.
pub async fn whole(ctx: Context, resp: Response<Body>) -> Response<Body> {
    let provider = ctx.route.upstream.name.clone();
    let left = ctx.request_timeout.saturating_sub(ctx.started.elapsed());
    let collected = tokio::time::timeout(
        left,
        body::collect_limited(resp.into_body(), MAX_RESPONSE_BYTES),
    )
    .await;
    let bytes = match collected {
        Err(_) => {
            return UpstreamError::Timeout(ctx.request_timeout)
                .into_api(&provider)
                .into_response()
        }
        Ok(Err(e)) => {
            return UpstreamError::Broken(format!("its response could not be read: {e}"))
                .into_api(&provider)
                .into_response()
        }
        Ok(Ok(b)) => b,
    };
    let mut tally = Tally::default();
    match std::str::from_utf8(&bytes).ok().map(ChunkView::parse) {
        Some(Ok(view)) => view.for_each_event(|e| tally.observe(e, ctx.started)),
        _ => {
            return UpstreamError::Broken("its response is not a JSON chat completion".into())
                .into_api(&provider)
                .into_response()
        }
    }
    ctx.log_finished(&tally, "ok");
    let mut out = Response::new(body::full(bytes));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// A streamed response: relayed event by event as the upstream produces them.
pub fn stream(ctx: Context, resp: Response<Body>) -> Response<Body> {
    let idle = ctx.route.upstream.stream_idle_timeout;
    let upstream: BoxStream<'static, Result<Bytes, BoxError>> =
        resp.into_body().into_data_stream().boxed();
    let relay = Relay {
        events: upstream.eventsource(),
        ctx,
        tally: Tally::default(),
        idle,
        finished: false,
    };
    let frames = futures_util::stream::unfold(relay, |mut relay| async move {
        let frame = relay.next_frame().await?;
        Some((Ok::<_, BoxError>(frame), relay))
    });
    let mut out = Response::new(body::stream(frames));
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    *out.status_mut() = StatusCode::OK;
    out
}

struct Relay {
    events: EventStream<BoxStream<'static, Result<Bytes, BoxError>>>,
    ctx: Context,
    tally: Tally,
    idle: Duration,
    finished: bool,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

impl Relay {
    /// The next frame for the client, or `None` when the stream is over.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        loop {
            let next = tokio::time::timeout(self.idle, self.events.next()).await;
            let event = match next {
                Err(_) => {
                    return Some(self.fail(
                        "upstream_timeout",
                        format!("sent nothing for {}", humanize(self.idle)),
                    ))
                }
                Ok(None) if self.tally.finish_reason.is_some() => {
                    // Some servers end without [DONE] after the final chunk: complete it.
                    return Some(self.done());
                }
                Ok(None) => {
                    return Some(self.fail(
                        "upstream_stream_broken",
                        "closed the stream before the response finished".to_string(),
                    ))
                }
                Ok(Some(Err(e))) => {
                    return Some(self.fail(
                        "upstream_stream_broken",
                        format!("broke off the stream: {e}"),
                    ))
                }
                Ok(Some(Ok(event))) => event,
            };
            if event.data == "[DONE]" {
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
        match ChunkView::parse(&event.data) {
            Ok(view) => {
                if view.error.is_some() {
                    // The upstream's own error event: pass it on and end the stream there.
                    self.finished = true;
                    self.ctx.log_finished(&self.tally, "upstream_error");
                }
                let started = self.ctx.started;
                view.for_each_event(|e| self.tally.observe(e, started));
                if view.usage.is_some() && !self.ctx.include_usage {
                    // The proxy asked for usage; the client did not.
                    if view.choices.is_empty() {
                        return None;
                    }
                    if let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(&event.data)
                    {
                        chunk.remove("usage");
                        rewritten = Some(Value::Object(chunk).to_string());
                    }
                }
            }
            Err(_) => self.tally.unreadable += 1,
        }
        let data = rewritten.as_deref().unwrap_or(&event.data);
        Some(sse_frame(&event.event, data))
    }

    fn done(&mut self) -> Bytes {
        self.finished = true;
        self.ctx.log_finished(&self.tally, "ok");
        Bytes::from_static(DONE)
    }

    fn fail(&mut self, code: &'static str, why: String) -> Bytes {
        self.finished = true;
        let provider = &self.ctx.route.upstream.name;
        tracing::warn!(
            request_id = self.ctx.request_id.to_str().unwrap_or(""),
            provider = %provider,
            code,
            "Upstream stream failed: {why}."
        );
        self.ctx.log_finished(&self.tally, code);
        let err = ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("provider `{provider}` {why}"),
        )
        .with_code(code);
        sse_frame("", &err.to_json().to_string())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away: dropping `events` closes the upstream request now.
            self.ctx.log_finished(&self.tally, "client_disconnected");
        }
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
