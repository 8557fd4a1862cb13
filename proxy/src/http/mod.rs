//! The HTTP front: accepts connections, runs the tower stack over them, and shuts down
//! gracefully.
//!
//! The stack, outermost first: [`RequestIdLayer`] → [`Router`] (which calls the stages).
//! The same accept loop serves the simulator (`thinkgate simulate`).

mod cached;
mod chat;
mod error_bodies;
mod messages;
mod openai;
pub mod reload;
pub mod request_id;
mod responses;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceBuilder;

use crate::body::Body;
use crate::state::Runtime;
pub use request_id::{RequestId, RequestIdLayer};
pub use routes::Router;

/// Limits on client connections: at most `max` open (the accept loop waits for a free
/// slot), and each closed when the client stays silent for the idle timeout — before its
/// first request (hyper's version detection would wait forever) and between requests
/// (hyper's header read timeout).
#[derive(Clone)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl ConnectionLimit {
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);

    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            idle: Self::DEFAULT_IDLE,
        }
    }

    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }
}

/// Largest request head the proxy reads: larger ones get a 431 in OpenAI's shape from the
/// router. hyper's own limits sit above these (its refusals have no body).
pub const MAX_HEADERS: usize = 128;
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What the accept loop serves: hyper's requests in, responses out, cloned per connection
/// (the proxy's stack, or the simulator's service).
pub trait HttpService:
    tower::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The proxy's service stack over a runtime.
pub fn proxy_service(runtime: Arc<ArcSwap<Runtime>>) -> impl HttpService {
    ServiceBuilder::new()
        .layer(RequestIdLayer)
        .service(Router { runtime })
}

/// Serves `service` on `listener` until `shutdown` completes, then lets open requests
/// (streams included) finish for up to `grace`.
pub async fn serve<S: HttpService>(
    listener: TcpListener,
    service: S,
    limit: ConnectionLimit,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = accept_until(listener, service, limit, shutdown).await;
    tracing::info!("Shutting down: no longer accepting; letting open requests finish.");
    drained(drain(graceful, grace).await);
}

/// Accepts connections on `listener` until `shutdown` completes; the listener is closed
/// when this returns, and the open connections are the returned graceful watcher's.
async fn accept_until<S: HttpService>(
    listener: TcpListener,
    service: S,
    limit: ConnectionLimit,
    shutdown: impl Future<Output = ()>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let idle = limit.idle;
    // Shared by the connections' tasks (a clone each would hold its own copy per connection).
    let builder = Arc::new(connection_builder(idle));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.acquire() => p,
            _ = &mut shutdown => break,
        };
        let Some(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Nagle's algorithm would hold small SSE chunks back for up to 40 ms.
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let service = service.clone();
        tokio::spawn(async move {
            // The first request's bytes must come within the idle timeout: before them
            // hyper's version detection has no timer of its own.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(idle, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                tracing::debug!(%peer, "Closed a connection that sent nothing.");
                return;
            }
            let conn = builder
                .serve_connection(
                    TokioIo::new(error_bodies::ErrorBodies::new(stream)),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "Connection ended with an error.");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful
}

/// HTTP/1 and HTTP/2 with timers: hyper's header read timeout is the idle timeout, and its
/// head limits sit above the router's (which answer in OpenAI's shape).
fn connection_builder(idle: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_headers(MAX_HEADERS * 8)
        .max_buf_size(MAX_HEADER_BYTES * 8);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Lets open requests (streams too) finish for up to `grace`, then cuts them; says whether
/// they all finished.
async fn drain(graceful: GracefulShutdown, grace: Duration) -> bool {
    tracing::debug!(
        open_connections = graceful.count(),
        grace_ms = grace.as_millis() as u64,
        "Draining open connections."
    );
    tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
}

/// The last log line of a shutdown.
fn drained(all_closed: bool) {
    if all_closed {
        tracing::info!("All connections closed; shutdown complete.");
    } else {
        tracing::warn!("The shutdown grace period ended with requests still open; they are cut.");
    }
}

/// Serves `service` on `threads` threads, each a current-thread runtime with its own
/// listening socket on `listen` (`SO_REUSEPORT`: the kernel spreads connections over them).
/// A connection, its requests, their upstream connections and every task they spawn stay on
/// one thread, so nothing is handed between threads per request or per streamed chunk.
/// The threads end when `stop` turns true and their connections have drained (`grace`).
pub fn serve_on_threads<S: HttpService>(
    listen: SocketAddr,
    threads: usize,
    service: S,
    limit: ConnectionLimit,
    grace: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Serving, String> {
    let mut handles = Vec::new();
    let mut addr = listen;
    let (closed_tx, closed) = std::sync::mpsc::channel::<()>();
    for i in 0..threads.max(1) {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (service, limit, mut stop) = (service.clone(), limit.clone(), stop.clone());
        let closed_tx = closed_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("thinkgate-serve-{i}"))
            .spawn(move || {
                crate::upstream::set_serving_thread(i);
                // IO and timers only: the signal and process drivers would check for
                // orphaned child processes at every park, and nothing here needs them.
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = bound_tx.send(Err(format!("no runtime: {e}")));
                        return true;
                    }
                };
                rt.block_on(async move {
                    tokio::spawn(anchor_timers());
                    let listener = match bind_shared(addr) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = bound_tx.send(Err(format!("cannot listen on {addr}: {e}")));
                            return true;
                        }
                    };
                    let local = listener.local_addr().map_err(|e| e.to_string());
                    let _ = bound_tx.send(local);
                    let shutdown = async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    };
                    let graceful = accept_until(listener, service, limit, shutdown).await;
                    let _ = closed_tx.send(());
                    drain(graceful, grace).await
                })
            })
            .map_err(|e| format!("cannot start serving thread {i}: {e}"))?;
        // The first thread fixes the port (`listen` may say 0); the others share it.
        addr = bound_rx
            .recv()
            .map_err(|_| format!("serving thread {i} stopped before listening"))??;
        handles.push(handle);
    }
    Ok(Serving {
        addr,
        threads: handles,
        closed,
    })
}

/// How far ahead [`anchor_timers`] keeps its timer.
const TIMER_ANCHOR_PERIOD: Duration = Duration::from_secs(1);

/// Keeps a timer pending at most [`TIMER_ANCHOR_PERIOD`] ahead on this thread's runtime.
/// tokio wakes its own driver (an eventfd write: a syscall) whenever a timer is registered
/// that fires before every pending one. hyper registers a header-read timer for each
/// request, and with no earlier timer pending every request paid that write (`perf record -e
/// syscalls:sys_enter_write` put all of the proxy's `write` calls there). One wake-up a
/// second costs less than one per request.
async fn anchor_timers() {
    loop {
        tokio::time::sleep(TIMER_ANCHOR_PERIOD).await;
    }
}

/// The serving threads of [`serve_on_threads`].
pub struct Serving {
    /// Where they listen.
    pub addr: SocketAddr,
    threads: Vec<std::thread::JoinHandle<bool>>,
    /// One message per thread whose listener has closed.
    closed: std::sync::mpsc::Receiver<()>,
}

impl Serving {
    /// After `stop`: waits until every listener has closed (so no new connection is
    /// accepted), says so, then waits for the threads to drain their connections. Blocks.
    pub fn wait(self) {
        for _ in 0..self.threads.len() {
            if self.closed.recv().is_err() {
                break;
            }
        }
        tracing::info!("Shutting down: no longer accepting; letting open requests finish.");
        let mut all_closed = true;
        for t in self.threads {
            all_closed &= t.join().unwrap_or(false);
        }
        drained(all_closed);
    }
}

/// A listening socket that other threads' sockets may share (`SO_REUSEPORT`).
fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Received SIGINT."),
        _ = term => tracing::info!("Received SIGTERM."),
    }
}
