//! Re-framing the relay's own OpenAI event stream for a client that speaks another API
//! (Anthropic's Messages events, the Responses API's typed events): one loop that reads the
//! relay's events in order and hands each to the front end's translator, which writes zero
//! or more frames of its own. The relay's body (and the account riding in it) lives as long
//! as the re-framed body.

use bytes::BytesMut;
use eventsource_stream::Eventsource;
use futures_util::stream::StreamExt;
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};

/// A front end's stream translator.
pub trait Reframe: Send + 'static {
    /// The frames for one event of the relay (`data` is its `data:` text, `[DONE]` at the
    /// end); empty when the event yields none.
    fn event(&mut self, data: &str) -> BytesMut;
    /// The frames that end the stream when the relay's broke off or ended early.
    fn broken(&mut self, why: &str) -> BytesMut;
    /// No more frames will come.
    fn done(&self) -> bool;
}

/// `inner` (the relay's OpenAI event stream) re-framed by `translator`.
pub fn reframe(inner: Body, translator: impl Reframe) -> Body {
    let source = inner.into_data_stream().boxed().eventsource();
    let frames =
        futures_util::stream::unfold((source, translator), |(mut source, mut t)| async move {
            loop {
                if t.done() {
                    return None;
                }
                let out = match source.next().await {
                    Some(Ok(event)) => t.event(&event.data),
                    Some(Err(e)) => t.broken(&format!("the stream broke off: {e}")),
                    None => t.broken("the stream ended before the answer was complete"),
                };
                if !out.is_empty() {
                    return Some((Ok::<_, BoxError>(out.freeze()), (source, t)));
                }
            }
        });
    body::stream(frames)
}
