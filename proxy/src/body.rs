//! The response body type (shared with the simulator, from `thinkgate-wire`) and reading
//! bodies under a bound.

use bytes::Bytes;
use http_body_util::BodyExt;
pub use thinkgate_wire::body::{full, json_response, sse_response, stream, Body, BoxError};

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
