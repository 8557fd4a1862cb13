//! The simulator's response bodies: the same boxed body type the proxy's transports carry,
//! so an in-process answer and one read from a socket are interchangeable.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming-capable body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Each item becomes one frame, written as soon as it is produced (token pacing shows).
pub fn stream<S>(frames: S) -> Body
where
    S: futures_util::Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
{
    use futures_util::StreamExt;
    StreamBody::new(frames.map(|r| r.map(Frame::data))).boxed_unsync()
}

pub fn json_response(status: http::StatusCode, json: impl Into<Bytes>) -> http::Response<Body> {
    let mut resp = http::Response::new(full(json));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

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
