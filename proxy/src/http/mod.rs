//! The HTTP front: accepts connections, runs the tower stack over them, and shuts down
//! gracefully.
//!
//! The stack, outermost first: [`RequestIdLayer`] → [`Router`] (which calls the stages).
//! The same accept loop serves the simulator (`thinkgate simulate`).

mod chat;
mod error_bodies;
pub mod reload;
pub mod request_id;
mod routes;

use std::convert::Infallible;
use std::future::Future;
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

/// The proxy's service stack over a runtime.
pub fn proxy_service(
    runtime: Arc<ArcSwap<Runtime>>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(RequestIdLayer)
        .service(Router { runtime })
}

/// Serves `service` on `listener` until `shutdown` completes, then lets open requests
/// (streams included) finish for up to `grace`.
pub async fn serve<S, F>(
    listener: TcpListener,
    service: S,
    limit: ConnectionLimit,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future = F>
        + Clone
        + Send
        + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
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
    drain(graceful, grace).await;
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

/// Lets open requests (streams too) finish for up to `grace`, then cuts them.
async fn drain(graceful: GracefulShutdown, grace: Duration) {
    tracing::info!(
        open_connections = graceful.count(),
        grace_ms = grace.as_millis() as u64,
        "Shutting down: no longer accepting; letting open requests finish."
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("All connections closed; shutdown complete."),
        Err(_) => tracing::warn!(
            "The shutdown grace period ended with requests still open; they are cut."
        ),
    }
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
