//! An upstream's event stream with a bound on each event: eventsource-stream buffers an
//! event until its blank line, however long, so an upstream that never ends one would grow
//! the proxy's memory without limit. Here the bytes since the last event boundary are
//! counted as they pass, and the stream ends with an error past the bound.

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};

use crate::body::BoxError;

/// The stream broke its bound.
#[derive(Debug)]
pub struct EventTooLarge(pub usize);

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sent an event larger than the limit of {} bytes", self.0)
    }
}

impl std::error::Error for EventTooLarge {}

/// `data` with each SSE event held to `max_event` bytes.
pub fn bounded_events(
    data: BoxStream<'static, Result<Bytes, BoxError>>,
    max_event: usize,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    let mut open = Boundary::default();
    let mut broken = false;
    data.map(move |chunk| {
        if broken {
            return Err(Box::new(EventTooLarge(max_event)) as BoxError);
        }
        let chunk = chunk?;
        if open.feed(&chunk) > max_event {
            broken = true;
            return Err(Box::new(EventTooLarge(max_event)) as BoxError);
        }
        Ok(chunk)
    })
    .boxed()
}

/// Bytes since the last event boundary (a blank line), across chunks.
#[derive(Default)]
struct Boundary {
    since: usize,
    /// The bytes so far end in a line break (so a chunk starting with one ends an event).
    at_line_start: bool,
}

impl Boundary {
    /// Feeds a chunk; returns the bytes now open since the last boundary.
    fn feed(&mut self, chunk: &[u8]) -> usize {
        let end = last_boundary_end(chunk, self.at_line_start);
        match end {
            Some(end) => self.since = chunk.len() - end,
            None => self.since += chunk.len(),
        }
        if let Some(&last) = chunk.last() {
            self.at_line_start = last == b'\n';
        }
        self.since
    }
}

/// Where the last blank line of `chunk` ends (`\n\n` or `\n\r\n`), counting a leading line
/// break as one when the previous chunk ended a line.
fn last_boundary_end(chunk: &[u8], at_line_start: bool) -> Option<usize> {
    let mut i = chunk.len();
    while let Some(p) = chunk[..i].iter().rposition(|&b| b == b'\n') {
        let before = &chunk[..p];
        let blank = match before {
            [.., b'\n'] | [.., b'\n', b'\r'] => true,
            [] | [b'\r'] => at_line_start,
            _ => false,
        };
        if blank {
            return Some(p + 1);
        }
        i = p;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_since_the_last_blank_line_across_chunks() {
        let mut b = Boundary::default();
        assert_eq!(b.feed(b"data: a\n\ndata: bb"), 8);
        assert_eq!(b.feed(b"b\n"), 10);
        assert_eq!(b.feed(b"\ndata: c"), 7);
        assert_eq!(b.feed(b"\r\n\r\n"), 0);
        assert_eq!(b.feed(b"data: long"), 10);
    }

    #[tokio::test]
    async fn an_endless_event_ends_the_stream_with_an_error() {
        let chunks: Vec<Result<Bytes, BoxError>> = (0..100)
            .map(|_| {
                Ok(Bytes::from_static(
                    b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                ))
            })
            .collect();
        let mut s = bounded_events(futures_util::stream::iter(chunks).boxed(), 1000);
        let mut seen = 0;
        let err = loop {
            match s.next().await {
                Some(Ok(c)) => seen += c.len(),
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        };
        assert!(seen <= 1000);
        assert!(err.to_string().contains("1000 bytes"));
    }
}
