//! Legacy text completions (`/v1/completions`) relayed as the upstream wrote them, whole or
//! event by event, and observed through the same [`Tally`] as chat: each choice's `text` is
//! content, `usage` and `finish_reason` as reported, so tokens are counted (or estimated)
//! and the account settles exactly as for chat. A stream that breaks, stalls or ends early
//! ends with an error event, never a `[DONE]` that would pass a cut answer off as complete.

use std::borrow::Cow;

use bytes::Bytes;
use futures_util::stream::StreamExt;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::{Context, Events, Tally, DONE};
use crate::body::{self, Body, BoxError};
use crate::canonical::Event;
use crate::upstream::openai::usage_from_json;
use crate::upstream::{humanize, UpstreamError};

/// The events a completion (or one chunk of a stream) holds.
fn observe(tally: &mut Tally, v: &Value, ctx: &Context) {
    for choice in v["choices"].as_array().into_iter().flatten() {
        if let Some(text) = choice["text"].as_str().filter(|t| !t.is_empty()) {
            tally.observe(Event::Content(Cow::Borrowed(text)), ctx.started);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            tally.observe(Event::Finish(Cow::Borrowed(reason)), ctx.started);
        }
    }
    if let Some(usage) = usage_from_json(&v["usage"]) {
        tally.observe(Event::Usage(usage), ctx.started);
    }
}

/// A whole completion: read under the bounds, observed, forwarded as its bytes.
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
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !parsed["choices"].is_array() {
        let why = "its response is not a text completion".to_string();
        return ctx.fail_whole("broken", UpstreamError::Broken(why));
    }
    let mut tally = ctx.tally();
    observe(&mut tally, &parsed, &ctx);
    ctx.finish(&tally, "ok");
    body::json_response(StatusCode::OK, bytes)
}

/// A streamed completion, relayed event by event. The proxy asked for the usage chunk;
/// it reaches the client only when the client asked for it too.
pub fn stream(ctx: Context, resp: Response<Body>) -> Response<Body> {
    let max_event = ctx.limits.max_event_bytes;
    let data = resp.into_body().into_data_stream().boxed();
    let relay = Relay {
        events: Events::new(data, max_event),
        tally: ctx.tally(),
        idle: ctx.route.upstream.stream_idle_timeout,
        ctx,
        finished: false,
    };
    let frames = futures_util::stream::unfold(relay, |mut relay| async move {
        let frame = relay.next_frame().await?;
        Some((Ok::<_, BoxError>(frame), relay))
    });
    body::sse_response(body::stream(frames))
}

struct Relay {
    events: Events,
    tally: Tally,
    ctx: Context,
    idle: std::time::Duration,
    finished: bool,
}

impl Relay {
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if self.finished {
                return None;
            }
            let next = tokio::time::timeout(self.idle, self.events.next()).await;
            let event = match next {
                Err(_) => {
                    let why = format!("sent nothing for {}", humanize(self.idle));
                    return Some(self.fail("upstream_timeout", why));
                }
                Ok(None) => {
                    let why = "closed the stream before the completion finished".to_string();
                    return Some(self.fail("upstream_stream_broken", why));
                }
                Ok(Some(Err(e))) => {
                    let why = format!("broke off the stream: {e}");
                    return Some(self.fail("upstream_stream_broken", why));
                }
                Ok(Some(Ok(event))) => event,
            };
            if event.data() == "[DONE]" {
                self.finished = true;
                self.ctx.finish(&self.tally, "ok");
                return Some(Bytes::from_static(DONE));
            }
            let parsed: Value = serde_json::from_str(event.data()).unwrap_or(Value::Null);
            observe(&mut self.tally, &parsed, &self.ctx);
            let usage_only = parsed["choices"].as_array().is_some_and(Vec::is_empty)
                && parsed.get("usage").is_some();
            if usage_only && !self.ctx.include_usage {
                continue;
            }
            return Some(event.raw().clone());
        }
    }

    /// The error event that ends a broken stream, with the account settled.
    fn fail(&mut self, code: &'static str, why: String) -> Bytes {
        self.finished = true;
        self.ctx.stream_failed(&self.tally, code, &why)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away: what it received is still counted.
            self.ctx.finish(&self.tally, "client_disconnected");
        }
    }
}
