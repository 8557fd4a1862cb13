//! The response body type (shared with the simulator, from `thinkgate-wire`) and reading
//! bodies under a bound.

use bytes::Bytes;
use http_body_util::BodyExt;
pub use thinkgate_wire::body::{full, json_response, sse_response, stream, Body, BoxError};

/// Whether a response's `Content-Type` says it is an event stream.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Why [`collect_limited`] gave up.
#[derive(Debug)]
pub enum CollectError {
    TooLarge(usize),
    Body(BoxError),
}

impl std::fmt::Display for CollectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CollectError::TooLarge(limit) => write!(f, "the body exceeds {limit} bytes"),
            CollectError::Body(e) => write!(f, "{}", error_chain(&**e)),
        }
    }
}

/// Reads a whole body of at most `limit` bytes (`http_body_util::Limited` stops reading at
/// the limit).
pub fn collect_limited(body: Body, limit: usize) -> CollectLimited {
    CollectLimited {
        inner: http_body_util::Limited::new(body, limit).collect(),
        limit,
    }
}

/// The future of [`collect_limited`]. A named type rather than an `async fn`: inside an
/// async block rustc cannot prove `Limited`'s error conversion for every lifetime, so every
/// caller's future would fail its `Send` proof; a concrete type has no lifetimes to erase.
pub struct CollectLimited {
    inner: http_body_util::combinators::Collect<http_body_util::Limited<Body>>,
    limit: usize,
}

impl std::future::Future for CollectLimited {
    type Output = Result<Bytes, CollectError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let limit = self.limit;
        let done = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll(cx));
        std::task::Poll::Ready(match done {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(CollectError::TooLarge(limit))
            }
            Err(e) => Err(CollectError::Body(e)),
        })
    }
}

/// An error and its sources on one line: hyper's top-level messages alone say little.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
