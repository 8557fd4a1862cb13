//! `x-request-id`: taken from the client when sane, generated otherwise; put in the request's
//! extensions, the tracing span and the response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

/// The request's id, in the request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

pub const HEADER: &str = "x-request-id";

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

/// A client id is kept when it is short printable ASCII; anything else is replaced, so logs
/// and upstreams never carry arbitrary client bytes.
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

fn generate() -> HeaderValue {
    // Encoded straight into a buffer: through `fmt` it showed in the profile of every request.
    let mut id = [0u8; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4().simple().encode_lower(&mut id);
    // A uuid's hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("unknown")) // ok: hex only
}

impl<S, B, RB> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get(HEADER)
            .filter(|v| acceptable(v))
            .cloned()
            .unwrap_or_else(generate);
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or(""),
            trace_id = tracing::field::Empty,
            method = %req.method(),
            path = req.uri().path(),
        );
        req.extensions_mut().insert(RequestId(id.clone()));
        let fut = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let mut resp = fut.await?;
            resp.headers_mut().insert(HEADER, id);
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert!(acceptable(&HeaderValue::from_static("abc-123")));
        assert!(!acceptable(&HeaderValue::from_static("has space")));
        assert!(!acceptable(
            &HeaderValue::from_str(&"x".repeat(200)).unwrap()
        ));
        assert_eq!(generate().len(), 32);
    }
}
