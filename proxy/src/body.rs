//! The one body type every response of the proxy and the simulator uses.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming-capable body. `Unsync` because streams that own upstream bodies
/// need only `Send`.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A streamed body: each item becomes one frame, written as soon as it is produced.
pub fn stream<S>(frames: S) -> Body
where
    S: futures_util::Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    use futures_util::StreamExt;
    StreamBody::new(frames.map(|r| r.map(Frame::data))).boxed_unsync()
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

/// Reads a whole body of at most `limit` bytes.
///
/// A loop over frames rather than `Limited::new(..).collect()`: with this boxed body type
/// that combinator makes every caller's future fail rustc's `Send` check (the compiler
/// cannot prove `Limited`'s error conversion for every lifetime).
pub async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, CollectError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CollectError::Body)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(CollectError::TooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
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

/// A complete JSON response.
pub fn json_response(status: http::StatusCode, json: impl Into<Bytes>) -> http::Response<Body> {
    let mut resp = http::Response::new(full(json));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A 200 server-sent-events response over `body`.
pub fn sse_response(body: Body) -> http::Response<Body> {
    let mut resp = http::Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}
