//! Server-sent events read from an upstream body (or the relay's own output) without
//! copying them.
//!
//! An event that arrives whole inside one body chunk — nearly every event, since servers
//! write an event per write — is a slice of that chunk: its data, its name and its raw
//! bytes (which the relay forwards unchanged when it edits nothing) share the chunk's
//! memory, so relaying it allocates nothing. Only an event split across chunks is copied,
//! into a carry buffer that is held to `max_event` bytes: an upstream that never ends an
//! event ends the stream with [`SseError::TooLarge`] instead of growing the proxy's memory.
//!
//! Parsing follows the HTML standard's event-stream format: lines end with LF, CRLF or CR;
//! a blank line ends an event; `:` starts a comment; `data` lines join with LF; a field
//! name without a colon has an empty value; one space after the colon is dropped; a
//! leading BOM is skipped. Events without a `data` field are not dispatched; `id` and
//! `retry` are read past (and kept in the raw bytes).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt};

use crate::body::BoxError;

/// One event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    name: Bytes,
    data: Bytes,
    /// The event's bytes as sent (a slice of its chunk when it came in one).
    raw: Bytes,
}

impl SseEvent {
    /// The `event:` field (empty when there is none).
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.name).unwrap_or("")
    }

    /// The `data:` lines, joined with line feeds (checked to be UTF-8 when read).
    pub fn data(&self) -> &str {
        std::str::from_utf8(&self.data).unwrap_or("")
    }

    /// The event's bytes as the upstream sent them, its closing blank line included.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// Why the event stream ended early.
#[derive(Debug)]
pub enum SseError {
    /// The body itself failed.
    Body(BoxError),
    /// An event grew past the bound without ending.
    TooLarge(usize),
    /// An event's name or data is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::Body(e) => write!(f, "{e}"),
            SseError::TooLarge(n) => {
                write!(f, "sent an event larger than the limit of {n} bytes")
            }
            SseError::NotUtf8 => f.write_str("sent an event that is not UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

/// The events of a body, each held to `max_event` bytes.
pub struct Events {
    body: BoxStream<'static, Result<Bytes, BoxError>>,
    /// What is left of the chunk being read.
    chunk: Bytes,
    /// The start of an event that began in an earlier chunk (empty when none did).
    carry: BytesMut,
    max_event: usize,
    /// No byte was read yet (a BOM may come first).
    at_start: bool,
    /// The body ended or failed: nothing more comes.
    ended: bool,
}

impl Events {
    pub fn new(body: BoxStream<'static, Result<Bytes, BoxError>>, max_event: usize) -> Self {
        Events {
            body,
            chunk: Bytes::new(),
            carry: BytesMut::new(),
            max_event,
            at_start: true,
            ended: false,
        }
    }

    /// What is left to read, as a body: the bytes read past the last event returned, then
    /// the rest of the body (nothing once it ended). Events read so far are not in it.
    pub fn into_rest(self) -> BoxStream<'static, Result<Bytes, BoxError>> {
        if self.ended {
            return futures_util::stream::empty().boxed();
        }
        let mut read = self.carry;
        read.extend_from_slice(&self.chunk);
        let read = futures_util::stream::iter((!read.is_empty()).then(|| Ok(read.freeze())));
        read.chain(self.body).boxed()
    }

    /// The next whole event's bytes, if the data read so far holds one.
    fn take_event(&mut self) -> Result<Option<Bytes>, SseError> {
        if self.carry.is_empty() {
            if let Some(end) = event_end(&self.chunk) {
                let event = self.chunk.split_to(end);
                if self.chunk.is_empty() {
                    // An empty slice still holds the body's read buffer: let it go, so an
                    // idle stream keeps no chunk alive.
                    self.chunk = Bytes::new();
                }
                return Ok(Some(event));
            }
            // An event begins here and ends in a later chunk: keep its start.
            self.carry.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        } else if !self.chunk.is_empty() {
            self.carry.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
        if let Some(end) = event_end(&self.carry) {
            let event = self.carry.split_to(end).freeze();
            if self.carry.is_empty() {
                // Back to reading chunks in place: the carry's memory goes with its events.
                self.carry = BytesMut::new();
            }
            return Ok(Some(event));
        }
        if self.carry.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(None)
    }
}

impl Stream for Events {
    type Item = Result<SseEvent, SseError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.take_event() {
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(raw)) => match parse(raw) {
                    Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                    // Comments and events without data are not dispatched.
                    Ok(None) => continue,
                    Err(e) => {
                        this.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Ok(None) => {}
            }
            match ready!(this.body.as_mut().poll_next(cx)) {
                Some(Ok(mut chunk)) => {
                    if this.at_start && !chunk.is_empty() {
                        this.at_start = false;
                        if chunk.starts_with(b"\xEF\xBB\xBF") {
                            let _ = chunk.split_to(3);
                        }
                    }
                    this.chunk = chunk;
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(SseError::Body(e))));
                }
                // An event the body did not finish is dropped, as the standard says.
                None => this.ended = true,
            }
        }
    }
}

/// Every event of a whole event stream held in one buffer (a stored answer), read by the
/// same rules as [`Events`]; an event the buffer does not finish is dropped.
pub fn events_of(mut buf: Bytes) -> Result<Vec<SseEvent>, SseError> {
    if buf.starts_with(b"\xEF\xBB\xBF") {
        let _ = buf.split_to(3);
    }
    let mut events = Vec::new();
    while let Some(end) = event_end(&buf) {
        if let Some(event) = parse(buf.split_to(end))? {
            events.push(event);
        }
    }
    Ok(events)
}

/// The next line of `buf` from `from`: (its end, where the next line starts), or `None`
/// when no line ends there yet (a CR at the very end may still be followed by an LF).
fn line_at(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let rest = &buf[from..];
    let at = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
    let end = from + at;
    match rest[at] {
        b'\n' => Some((end, end + 1)),
        _ => match rest.get(at + 1) {
            Some(b'\n') => Some((end, end + 2)),
            Some(_) => Some((end, end + 1)),
            None => None,
        },
    }
}

/// Where the first event of `buf` ends (after its blank line), if it does.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let (end, next) = line_at(buf, from)?;
        if end == from {
            return Some(next);
        }
        from = next;
    }
}

/// One event's fields, from its bytes (which end with its blank line).
fn parse(raw: Bytes) -> Result<Option<SseEvent>, SseError> {
    let mut name = Bytes::new();
    let mut data: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut from = 0;
    while let Some((end, next)) = line_at(&raw, from) {
        let line = &raw[from..end];
        let at = from;
        from = next;
        if line.is_empty() {
            break;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let skip = usize::from(line.get(colon + 1) == Some(&b' '));
                (&line[..colon], (at + colon + 1 + skip)..end)
            }
            None => (line, end..end),
        };
        match field {
            b"event" => name = raw.slice(value),
            b"data" => match (&mut joined, &data) {
                (Some(buf), _) => {
                    buf.extend_from_slice(b"\n");
                    buf.extend_from_slice(&raw[value]);
                }
                (None, Some(first)) => {
                    // A second data line: the event's data is no longer one slice.
                    let mut buf = BytesMut::with_capacity(first.len() + 1 + value.len());
                    buf.extend_from_slice(first);
                    buf.extend_from_slice(b"\n");
                    buf.extend_from_slice(&raw[value]);
                    joined = Some(buf);
                }
                (None, None) => data = Some(raw.slice(value)),
            },
            _ => {}
        }
    }
    let data = match (joined, data) {
        (Some(buf), _) => buf.freeze(),
        (None, Some(d)) => d,
        (None, None) => return Ok(None),
    };
    if std::str::from_utf8(&data).is_err() || std::str::from_utf8(&name).is_err() {
        return Err(SseError::NotUtf8);
    }
    Ok(Some(SseEvent { name, data, raw }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn events(chunks: &[&[u8]], max: usize) -> Vec<Result<(String, String), String>> {
        let chunks: Vec<Result<Bytes, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Events::new(futures_util::stream::iter(chunks).boxed(), max)
            .map(|e| {
                e.map(|e| (e.name().to_string(), e.data().to_string()))
                    .map_err(|e| e.to_string())
            })
            .collect()
            .await
    }

    fn ok(name: &str, data: &str) -> Result<(String, String), String> {
        Ok((name.to_string(), data.to_string()))
    }

    #[tokio::test]
    async fn reads_the_standards_forms() {
        let got = events(
            &[b"\xEF\xBB\xBFdata: a\n\n: comment\n\nevent: delta\ndata:b\ndata:  c\r\n\r\nid: 1\nretry: 5\ndata\n\ndata: d\re\rdata: f\r\r\n"],
            1000,
        )
        .await;
        assert_eq!(
            got,
            [
                ok("", "a"),
                ok("delta", "b\n c"),
                ok("", ""),
                ok("", "d\nf")
            ]
        );
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_joined() {
        let got = events(
            &[
                b"data: {\"a\"",
                b":1}\n",
                b"\ndata: x\r",
                b"\n\r\ndata: tail-without-end",
            ],
            1000,
        )
        .await;
        assert_eq!(got, [ok("", "{\"a\":1}"), ok("", "x")]);
    }

    #[tokio::test]
    async fn a_whole_event_is_a_slice_of_its_chunk() {
        let chunk = Bytes::from_static(b"data: one\n\ndata: two\n\n");
        let body = futures_util::stream::iter([Ok::<_, BoxError>(chunk.clone())]).boxed();
        let mut events = Events::new(body, 1000);
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(first.raw().as_ref(), b"data: one\n\n");
        assert_eq!(first.raw().as_ptr(), chunk.as_ptr(), "not copied");
        assert_eq!(events.next().await.unwrap().unwrap().data(), "two");
        assert!(events.next().await.is_none());
    }

    #[tokio::test]
    async fn an_endless_event_ends_the_stream_with_an_error() {
        let long = [b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" as &[u8]; 40];
        let got = events(&long, 1000).await;
        assert_eq!(got.len(), 1);
        assert!(
            got[0].as_ref().unwrap_err().contains("1000 bytes"),
            "{got:?}"
        );
        let got = events(&[b"data: \xFF\xFE\n\n"], 1000).await;
        assert!(got[0].as_ref().unwrap_err().contains("UTF-8"));
    }
}
