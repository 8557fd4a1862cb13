//! Re-framing the relay's own OpenAI event stream for a client that speaks another API
//! (Anthropic's Messages events, the Responses API's typed events): one loop that reads the
//! relay's events in order and hands each to the front end's translator, which writes zero
//! or more frames of its own. The relay's body (and the account riding in it) lives as long
//! as the re-framed body.

use bytes::BytesMut;
use futures_util::stream::StreamExt;
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};
use crate::upstream::openai::ChunkView;

/// One event of the relay's stream, read once the same way for every front end.
// A chunk's view is large (its one choice is inline) but lives on the stack for one event;
// boxing it would allocate per chunk.
#[allow(clippy::large_enum_variant)]
pub enum Read<'a> {
    /// `[DONE]`: the answer is complete.
    Done,
    /// The relay's (or the upstream's) error event: the stream ends with it.
    Failed {
        code: String,
        message: String,
    },
    Chunk(ChunkView<'a>),
    /// Not a chunk the relay writes; nothing to render.
    Skip,
}

/// The `usage` object of a chunk that has one, as the upstream (or the relay) wrote it.
pub fn usage_json(data: &str) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: serde_json::Value,
    }
    serde_json::from_str::<WithUsage>(data)
        .ok()
        .map(|w| w.usage)
        .filter(serde_json::Value::is_object)
}

/// Reads one `data:` text of the relay's stream.
pub fn read(data: &str) -> Read<'_> {
    if data == "[DONE]" {
        return Read::Done;
    }
    let Ok(view) = ChunkView::parse(data) else {
        return Read::Skip;
    };
    if view.error.is_none() {
        return Read::Chunk(view);
    }
    #[derive(serde::Deserialize)]
    struct ErrorEvent {
        error: ErrorBody,
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    }
    let parsed: Option<ErrorEvent> = serde_json::from_str(data).ok();
    let body = parsed.map(|e| e.error);
    let code = body
        .as_ref()
        .and_then(|b| b.code.as_ref())
        .and_then(|c| c.as_str());
    Read::Failed {
        code: code.unwrap_or("upstream_error").to_string(),
        message: body
            .and_then(|b| b.message)
            .unwrap_or_else(|| "the upstream failed".to_string()),
    }
}

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
    let source = super::Events::new(inner.into_data_stream().boxed(), super::OWN_EVENT_BYTES);
    let frames =
        futures_util::stream::unfold((source, translator), |(mut source, mut t)| async move {
            loop {
                if t.done() {
                    return None;
                }
                let out = match source.next().await {
                    Some(Ok(event)) => t.event(event.data()),
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
