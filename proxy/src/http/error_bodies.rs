//! Gives hyper's own HTTP/1 error responses a body in OpenAI's shape.
//!
//! hyper answers requests it cannot parse (a malformed request line or header, a duplicate
//! `Content-Length`, a head over its limits) itself, with `content-length: 0` and no body,
//! and offers no hook to change that. The proxy's own 4xx and 5xx responses always carry a
//! JSON body, so on a client connection a response head with an error status and
//! `content-length: 0` can only be hyper's: this adapter rewrites that one write to carry
//! the error JSON. Every other write passes through untouched (vectored writes included).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client connection whose hyper-made error responses get a body.
pub struct ErrorBodies<T> {
    inner: T,
    /// A rewritten response still being written, and how far.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> ErrorBodies<T> {
    pub fn new(inner: T) -> Self {
        ErrorBodies {
            inner,
            pending: None,
        }
    }
}

/// The rewritten response when `head` is a bodiless error response of hyper's.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let status_line = head.strip_prefix(b"HTTP/1.1 ")?;
    let code = std::str::from_utf8(status_line.get(..3)?).ok()?;
    let status: u16 = code.parse().ok()?;
    if !(400..600).contains(&status) || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let (first, rest) = text.split_once("\r\n")?;
    let headers: Vec<&str> = rest.trim_end_matches("\r\n").split("\r\n").collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let (kind, message) = match status {
        431 => (
            "invalid_request_error",
            "the request's headers are too large to read",
        ),
        400 => (
            "invalid_request_error",
            "the request is not valid HTTP: a malformed request line or header, or conflicting Content-Length headers",
        ),
        s if s < 500 => ("invalid_request_error", "the request could not be read"),
        _ => ("server_error", "the server could not answer the request"),
    };
    let code = match status {
        431 => "request_header_fields_too_large",
        400 => "malformed_http",
        _ => "http_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        .to_string();
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(first);
    out.push_str("\r\n");
    for h in headers {
        if h.eq_ignore_ascii_case("content-length: 0") {
            out.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        } else {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<T: AsyncWrite + Unpin> ErrorBodies<T> {
    /// Writes what is left of a rewritten response.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            if *done == buf.len() {
                self.pending = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ErrorBodies<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.1 5") {
            if let Some(rewritten) = rewrite(buf) {
                self.pending = Some((rewritten, 0));
                // What hyper wrote is taken whole; the rest goes out on the next polls.
                let _ = self.poll_pending(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        // hyper writes its own error responses as one head with no body.
        if let [only] = bufs {
            if only.starts_with(b"HTTP/1.1 4") || only.starts_with(b"HTTP/1.1 5") {
                return self.poll_write(cx, only);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_error_heads_are_rewritten() {
        let hyper_400 =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(rewrite(hyper_400).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("content-type: application/json"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "malformed_http");
        // The proxy's own errors have bodies; successes are never touched.
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
