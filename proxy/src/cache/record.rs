//! The answer recorded as it goes to the client: a body that hands on every frame
//! unchanged and keeps a reference to it (no copy), up to `max_entry_bytes`. When the body
//! ends whole, the entry is built and stored *before* its last frame is handed on, so a
//! client that asks again as soon as it has read the answer finds it. A body that fails,
//! or a client that goes away first, stores nothing. All answers being recorded hold at
//! most `max_bytes` together ([`super::Recording`]): past it, an answer is not recorded.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::entry::{Meta, NotKept};
use super::{Key, ResponseCache};
use crate::body::{Body, BoxError};
use crate::telemetry::SharedTokens;

/// What an answer being recorded will be stored as, once it ends.
pub struct Fill {
    pub(super) cache: Arc<ResponseCache>,
    pub(super) key: Key,
    /// The proxy's count of the call's tokens (written when the relay finishes).
    pub(super) tokens: Arc<SharedTokens>,
}

impl Fill {
    /// Records `resp` if it is a successful answer; hands it on unchanged either way.
    pub fn record(self, resp: http::Response<Body>) -> http::Response<Body> {
        if resp.status() != http::StatusCode::OK {
            return resp;
        }
        let stream = crate::body::is_event_stream(resp.headers());
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(if stream {
                "text/event-stream"
            } else {
                "application/json"
            })
            .to_string();
        let headers = resp
            .headers()
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name.starts_with("x-thinkgate-") && name != super::HEADER
            })
            .filter_map(|(name, v)| Some((name.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut meta = Meta::new(stream, content_type, headers);
        meta.model = resp
            .headers()
            .get("x-thinkgate-model")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (parts, body) = resp.into_parts();
        let recorded = Recorded {
            inner: body,
            frames: Vec::new(),
            len: 0,
            pending: Some((self, meta)),
        };
        http::Response::from_parts(parts, Body::new(recorded))
    }
}

/// The body that records; see the module docs.
struct Recorded {
    inner: Body,
    frames: Vec<Bytes>,
    len: usize,
    /// Taken when the answer is stored or given up on.
    pending: Option<(Fill, Meta)>,
}

impl Recorded {
    fn keep(&mut self, data: &Bytes) {
        let Some((fill, _)) = &self.pending else {
            return;
        };
        if self.len + data.len() > fill.cache.config.max_entry_bytes {
            fill.cache.not_kept(NotKept::TooLarge);
            return self.give_up();
        }
        // What all answers being recorded hold together is bounded too.
        if !fill.cache.recording.reserve(data.len()) {
            fill.cache.not_kept(NotKept::NoRoom);
            return self.give_up();
        }
        self.len += data.len();
        self.frames.push(data.clone());
    }

    /// Stops recording, letting go of what it held.
    fn is_stream(&self) -> bool {
        self.pending.as_ref().is_some_and(|(_, meta)| meta.stream)
    }

    fn give_up(&mut self) {
        if let Some((fill, _)) = self.pending.take() {
            fill.cache.recording.release(self.len);
        }
        self.frames = Vec::new();
        self.len = 0;
    }

    fn store(&mut self) {
        let Some((fill, meta)) = self.pending.take() else {
            return;
        };
        fill.cache.recording.release(self.len);
        let body = match self.frames.len() {
            1 => self.frames.pop().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(self.len);
                for frame in self.frames.drain(..) {
                    all.extend_from_slice(&frame);
                }
                all.freeze()
            }
        };
        self.frames = Vec::new();
        fill.cache.store(fill.key, body, meta, fill.tokens.get());
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // A client gone before the end: nothing is stored, the reservation goes back.
        self.give_up();
    }
}

impl HttpBody for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let mut done = this.inner.is_end_stream();
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                    // A stream's `[DONE]` is its end: a reader that translates it (the
                    // Messages and Responses front ends) stops there, never polling again.
                    done |= this.is_stream() && data.ends_with(crate::relay::DONE);
                }
                // A body that knows it is done may not be polled again: store now.
                if done {
                    this.store();
                }
            }
            Poll::Ready(Some(Err(_))) => this.give_up(),
            Poll::Ready(None) => this.store(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
