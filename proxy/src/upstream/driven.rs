//! Plain-HTTP/1.1 upstream connections driven by the request's own task.
//!
//! hyper-util's pooled client runs every connection as a task of its own, and hyper hands
//! a response body from that task to the reader one chunk at a time: each streamed event
//! costs two task switches and a write to the client of its own. Here the connection is a
//! future the request owns ([`Conn`]): the send and then the response body poll it in place,
//! so a burst of events that arrived together is relayed in one poll and leaves in one
//! write, and nothing crosses tasks.
//!
//! The pool keeps idle connections per serving thread and per `host:port`, at most
//! [`MAX_IDLE`] per thread, none older than [`IDLE_TIMEOUT`]. A connection goes back only
//! when its response was read to the end; one the server closed while idle is noticed at
//! checkout (its driver finishes) and replaced, and a request a reused connection never
//! wrote is sent again on a new one. TLS upstreams keep hyper-util's client, which also
//! speaks HTTP/2 (see `transport.rs`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{error_chain, Body, BoxError};

use super::transport::TransportError;

/// Idle connections kept per serving thread, across hosts (the oldest goes first).
pub const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused (servers close theirs
/// after 60–75 s; reusing one they are closing loses the request).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// TCP keep-alive probes on upstream sockets.
const KEEPALIVE: Duration = Duration::from_secs(60);

type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// One HTTP/1.1 connection: the handle requests go in by, and the future that does its IO.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
    /// The driver finished: the connection is closed.
    closed: bool,
}

impl Conn {
    /// Polls the connection's IO once; `true` when it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && self.driver.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }

    /// Waits until the connection can take a request; `false` when it closed instead.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            if self.drive(cx) {
                return Poll::Ready(false);
            }
            match self.sender.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_ok()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

struct Idle {
    authority: String,
    conn: Conn,
    since: Instant,
}

/// Closes the idle connections past [`IDLE_TIMEOUT`]. They are queued in the order they
/// went idle, so the expired ones are at the front: no walk over the rest per request.
fn drop_expired(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle
        .front()
        .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

/// The idle connections of every serving thread.
pub struct DrivenPool {
    connect_timeout: Duration,
    per_thread: Vec<Mutex<VecDeque<Idle>>>,
}

impl DrivenPool {
    pub fn new(connect_timeout: Duration, threads: usize) -> Arc<Self> {
        Arc::new(DrivenPool {
            connect_timeout,
            per_thread: (0..threads.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
        })
    }

    /// The calling serving thread's idle connections. Off the serving threads there are
    /// none: a connection is bound to the runtime it was opened on, and other threads'
    /// runtimes (health probes, tests) may come and go.
    fn idle(&self) -> Option<&Mutex<VecDeque<Idle>>> {
        self.per_thread.get(super::transport::serving_thread()?)
    }

    /// The newest idle connection to `authority`; expired ones are closed on the way.
    fn checkout(&self, authority: &str) -> Option<Conn> {
        let mut idle = self.idle()?.lock().ok()?;
        drop_expired(&mut idle, Instant::now());
        let at = idle.iter().rposition(|i| i.authority == authority)?;
        idle.remove(at).map(|i| i.conn)
    }

    fn release(&self, authority: String, conn: Conn) {
        if conn.closed || conn.sender.is_closed() {
            return;
        }
        let Some(idle) = self.idle() else { return };
        if let Ok(mut idle) = idle.lock() {
            let now = Instant::now();
            drop_expired(&mut idle, now);
            if idle.len() >= MAX_IDLE {
                idle.pop_front();
            }
            idle.push_back(Idle {
                authority,
                conn,
                since: now,
            });
        }
    }

    async fn connect(&self, host: &str, port: u16) -> Result<Conn, TransportError> {
        let connecting = TcpStream::connect((host, port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => {
                return Err(TransportError::Connect(format!(
                    "connecting to {host}:{port} took longer than {:?}",
                    self.connect_timeout
                )))
            }
            Ok(Err(e)) => {
                return Err(TransportError::Connect(format!(
                    "cannot connect to {host}:{port}: {e}"
                )))
            }
            Ok(Ok(s)) => s,
        };
        // Small requests and SSE chunks must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TransportError::Connect(error_chain(&e)))?;
        Ok(Conn {
            sender,
            driver: Box::pin(connection),
            closed: false,
        })
    }

    /// Sends `req` (an absolute `http://` URI) on an idle connection or a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Body>, TransportError> {
        let uri = req.uri().clone();
        // An IPv6 literal comes bracketed in a URI, bare in a socket address.
        let host = uri.host().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let authority = format!("{host}:{port}");
        // HTTP/1.1 sends the path; the host goes in its header.
        if let Some(path) = uri.path_and_query() {
            if let Ok(origin) = path.as_str().parse() {
                *req.uri_mut() = origin;
            }
        }
        if !req.headers().contains_key(http::header::HOST) {
            if let Ok(v) = http::HeaderValue::from_str(uri.authority().map_or("", |a| a.as_str())) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
        let mut reused = self.checkout(&authority);
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => self.connect(&host, port).await?,
            };
            if !conn.ready().await {
                if was_reused {
                    // Closed by the server while idle: nothing was sent, try a new one.
                    continue;
                }
                return Err(TransportError::Other(
                    "the upstream closed the connection before the request".into(),
                ));
            }
            let mut sending = std::pin::pin!(conn.sender.try_send_request(req));
            let sent = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = sending.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                let closed = conn.drive(cx);
                match sending.as_mut().poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    // The connection ended without answering (hyper answers first as a rule).
                    Poll::Pending if closed => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let Some(sent) = sent else {
                return Err(TransportError::Other(
                    "the upstream closed the connection without a response".into(),
                ));
            };
            match sent {
                Ok(resp) => {
                    let (parts, incoming) = resp.into_parts();
                    let body = DrivenBody {
                        incoming,
                        conn: Some(conn),
                        authority,
                        pool: self.clone(),
                    };
                    return Ok(Response::from_parts(parts, body.boxed_unsync()));
                }
                Err(mut e) => match e.take_message() {
                    // A reused connection that closed before the request went out.
                    Some(unsent) if was_reused => req = unsent,
                    _ => return Err(TransportError::Other(error_chain(e.error()))),
                },
            }
        }
    }
}

/// A response body that drives its connection while it is read, and gives the connection
/// back to the pool once read to the end (dropped early, it closes the connection).
struct DrivenBody {
    incoming: Incoming,
    conn: Option<Conn>,
    authority: String,
    pool: Arc<DrivenPool>,
}

impl DrivenBody {
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.release(std::mem::take(&mut self.authority), conn);
        }
    }

    fn frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if self.incoming.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.conn = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }
}

impl Drop for DrivenBody {
    /// A reader that stops at the last event (`[DONE]`) leaves the body's end unread; when
    /// that end has already arrived, read it now so the connection can be reused.
    fn drop(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Bounded: only what is already here is read, a few frames at most.
        for _ in 0..4 {
            match Pin::new(&mut *self).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(None) => return,
                Poll::Ready(Some(Err(_))) | Poll::Pending => break,
            }
        }
        // Unfinished: dropping the connection closes it, which cancels the upstream call.
    }
}

impl HttpBody for DrivenBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = this.frame(cx) {
            return Poll::Ready(frame);
        }
        // Nothing buffered: let the connection read and decode what has arrived, then look
        // again. Both register this task, so it wakes for either.
        let Some(conn) = &mut this.conn else {
            // Finished or failed already: there is nothing more to read.
            return Poll::Ready(None);
        };
        let closed = conn.drive(cx);
        match this.frame(cx) {
            Poll::Pending if closed => {
                this.conn = None;
                let e = "the upstream closed the connection mid-response";
                Poll::Ready(Some(Err(e.into())))
            }
            frame => frame,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    //! Against a hand-written HTTP/1.1 server on loopback, so each test decides exactly
    //! what the upstream does with its connection.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server does after reading a request head.
    #[derive(Clone, Copy)]
    enum Script {
        /// Answers `ok` and keeps the connection for the next request.
        KeepAlive,
        /// Answers `ok`, then closes the connection as an idle server would.
        AnswerThenClose,
        /// Promises 100 bytes, sends 10 and closes.
        CutMidBody,
        /// Sends a whole chunked stream of two events and its end in one write.
        WholeStream,
        /// Sends one chunk and then holds the stream open, reporting when the proxy hangs up.
        OpenStream,
    }

    struct Server {
        url: String,
        accepted: Arc<AtomicUsize>,
        hung_up: Arc<tokio::sync::Notify>,
    }

    async fn server(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/chat", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let hung_up = Arc::new(tokio::sync::Notify::new());
        let (count, notify) = (accepted.clone(), hung_up.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let notify = notify.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request head per turn (the tests send no bodies).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    notify.notify_one();
                                    return;
                                }
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        match script {
                            Script::KeepAlive => sock.write_all(ok).await.unwrap(),
                            Script::AnswerThenClose => {
                                sock.write_all(ok).await.unwrap();
                                return;
                            }
                            Script::CutMidBody => {
                                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
                                sock.write_all(head).await.unwrap();
                                sock.write_all(b"0123456789").await.unwrap();
                                return;
                            }
                            Script::WholeStream => {
                                let stream =
                                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                                    6\r\nevent1\r\n6\r\nevent2\r\n0\r\n\r\n";
                                sock.write_all(stream).await.unwrap();
                            }
                            Script::OpenStream => {
                                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                                    6\r\nevent1\r\n";
                                sock.write_all(head).await.unwrap();
                            }
                        }
                    }
                });
            }
        });
        Server {
            url,
            accepted,
            hung_up,
        }
    }

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::new(Bytes::new())).unwrap()
    }

    fn pool() -> Arc<DrivenPool> {
        super::super::transport::set_serving_thread(0);
        DrivenPool::new(Duration::from_secs(2), 1)
    }

    async fn text(resp: Response<Body>) -> Result<String, BoxError> {
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_serves_the_next_request() {
        let server = server(Script::KeepAlive).await;
        let pool = pool();
        for _ in 0..3 {
            let resp = pool.send(get(&server.url)).await.unwrap();
            assert_eq!(text(resp).await.unwrap(), "ok");
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_without_losing_the_request() {
        let server = server(Script::AnswerThenClose).await;
        let pool = pool();
        for _ in 0..3 {
            let resp = pool.send(get(&server.url)).await.unwrap();
            assert_eq!(text(resp).await.unwrap(), "ok");
            // Let the close arrive, as it would between two requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_cut_mid_body_is_an_error_not_a_short_answer() {
        let server = server(Script::CutMidBody).await;
        let resp = pool().send(get(&server.url)).await.unwrap();
        assert!(
            text(resp).await.is_err(),
            "a truncated body must not read as complete"
        );
    }

    #[tokio::test]
    async fn a_reader_that_stops_at_the_last_event_still_returns_the_connection() {
        let server = server(Script::WholeStream).await;
        let pool = pool();
        for _ in 0..2 {
            let resp = pool.send(get(&server.url)).await.unwrap();
            let mut body = resp.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!((&first[..], &second[..]), (&b"event1"[..], &b"event2"[..]));
            // Dropped without reading the end, which has arrived already.
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dropping_an_unfinished_stream_hangs_up_on_the_upstream() {
        let server = server(Script::OpenStream).await;
        let pool = pool();
        let resp = pool.send(get(&server.url)).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"event1");
        drop(body);
        tokio::time::timeout(Duration::from_secs(2), server.hung_up.notified())
            .await
            .expect("the upstream connection must close when the reader goes away");
        // The next request cannot have reused it.
        let resp = pool.send(get(&server.url)).await.unwrap();
        drop(resp);
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let err = pool().send(get(&url)).await.unwrap_err();
        assert!(matches!(err, TransportError::Connect(_)), "{err:?}");
    }

    #[test]
    fn off_the_serving_threads_nothing_is_pooled() {
        // A runtime that is not a serving thread's may end, taking its sockets with it.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let server = server(Script::KeepAlive).await;
                let pool = DrivenPool::new(Duration::from_secs(2), 1);
                for _ in 0..2 {
                    let resp = pool.send(get(&server.url)).await.unwrap();
                    assert_eq!(text(resp).await.unwrap(), "ok");
                }
                assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
            });
        })
        .join()
        .unwrap();
    }
}
