//! How bytes reach an upstream: HTTP/1.1 connections the request drives itself for plain
//! `http://` upstreams (`driven.rs`), a pooled hyper client (HTTP/2 or 1.1) for TLS ones, or
//! an upstream that lives in this process ([`LocalUpstream`]: the binary plugs its
//! simulator in here; the proxy crate knows only the trait).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use futures_util::future::BoxFuture;

use super::driven::DrivenPool;
use crate::body::{error_chain, Body, BoxError};

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where a provider's requests go.
#[derive(Clone)]
pub enum Transport {
    Http(Arc<HttpClients>),
    InProcess(Arc<dyn LocalUpstream>),
}

/// An upstream served inside this process, such as the built-in simulator. It answers every
/// request with a response (its refusals are error responses, as a server's would be).
pub trait LocalUpstream: Send + Sync + 'static {
    fn call(&self, req: Request<Full<Bytes>>) -> BoxFuture<'static, Response<Body>>;
}

/// Builds the in-process upstream for one config load (its settings live in the config, so
/// a reload builds a new one).
pub type LocalFactory =
    Arc<dyn Fn(&thinkgate_config::Config) -> Arc<dyn LocalUpstream> + Send + Sync>;

/// Why a request did not get a response.
#[derive(Debug)]
pub enum TransportError {
    /// No connection could be made (refused, DNS, TLS).
    Connect(String),
    /// The connection broke before the response head arrived.
    Other(String),
}

/// Several pooled clients used in turn, one set per serving thread. hyper multiplexes all
/// requests to one host over a single HTTP/2 connection; spreading over a few clients (each
/// its own pool) keeps heavy fan-out from queueing behind one connection's stream limit. Each
/// serving thread (see [`set_serving_threads`]) gets its own set, so a request, its upstream
/// connection and that connection's task stay on one thread: no hand-off per chunk.
pub struct HttpClients {
    /// Plain `http://` upstreams: HTTP/1.1 connections driven by the request's own task.
    driven: Arc<DrivenPool>,
    connect_timeout: Duration,
    connections: usize,
    per_thread: Vec<std::sync::OnceLock<Vec<HttpClient>>>,
    next: AtomicUsize,
}

/// How many threads serve requests, each with its own runtime (set once, before configs
/// load; 1 when serving on one shared runtime, as tests do).
static SERVING_THREADS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// Which serving thread this is (`None` on any other thread).
    static SERVING_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Declares how many serving threads there will be; call before the config is loaded.
pub fn set_serving_threads(n: usize) {
    SERVING_THREADS.store(n.max(1), Ordering::Relaxed);
}

/// Which serving thread the caller is, if it is one.
pub(super) fn serving_thread() -> Option<usize> {
    SERVING_THREAD.with(|t| t.get())
}

/// Marks the calling thread as serving thread `i`.
pub fn set_serving_thread(i: usize) {
    SERVING_THREAD.with(|t| t.set(Some(i)));
}

fn build_client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        // Without a timer the pool never reaps idle connections.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(30))
        .build(https)
}

impl HttpClients {
    pub fn new(connect_timeout: Duration, connections: usize) -> Self {
        let threads = SERVING_THREADS.load(Ordering::Relaxed);
        HttpClients {
            driven: DrivenPool::new(connect_timeout, threads),
            connect_timeout,
            connections: connections.max(1),
            per_thread: (0..threads).map(|_| std::sync::OnceLock::new()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &HttpClient {
        let thread = serving_thread().unwrap_or(0).min(self.per_thread.len() - 1);
        let clients = self.per_thread[thread].get_or_init(|| {
            (0..self.connections)
                .map(|_| build_client(self.connect_timeout))
                .collect()
        });
        let i = self.next.fetch_add(1, Ordering::Relaxed) % clients.len();
        &clients[i]
    }
}

impl Transport {
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Body>, TransportError> {
        match self {
            Transport::InProcess(local) => Ok(local.call(req).await),
            Transport::Http(clients) if req.uri().scheme_str() == Some("http") => {
                clients.driven.send(req).await
            }
            Transport::Http(clients) => match clients.pick().request(req).await {
                Ok(resp) => Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())),
                Err(e) if e.is_connect() => Err(TransportError::Connect(error_chain(&e))),
                Err(e) => Err(TransportError::Other(error_chain(&e))),
            },
        }
    }
}
