//! How bytes reach an upstream: a pooled hyper client, or an upstream that lives in this
//! process ([`LocalUpstream`]: the binary plugs its simulator in here; the proxy crate knows
//! only the trait).

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

/// Several pooled clients used in turn. hyper multiplexes all requests to one host over a
/// single HTTP/2 connection; spreading over a few clients (each its own pool) keeps heavy
/// fan-out from queueing behind one connection's stream limit.
pub struct HttpClients {
    clients: Vec<HttpClient>,
    next: AtomicUsize,
}

impl HttpClients {
    pub fn new(connect_timeout: Duration, connections: usize) -> Self {
        let clients = (0..connections.max(1))
            .map(|_| {
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
            })
            .collect();
        HttpClients {
            clients,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &HttpClient {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }
}

impl Transport {
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Body>, TransportError> {
        match self {
            Transport::InProcess(local) => Ok(local.call(req).await),
            Transport::Http(clients) => match clients.pick().request(req).await {
                Ok(resp) => Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())),
                Err(e) if e.is_connect() => Err(TransportError::Connect(error_chain(&e))),
                Err(e) => Err(TransportError::Other(error_chain(&e))),
            },
        }
    }
}
