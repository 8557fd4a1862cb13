// Each bench compiles this module on its own and uses a part of it.
#![allow(dead_code)]

//! What the end-to-end benches share: the proxy served in process on a loopback port, and
//! one timed JSON request against it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use thinkgate_config::Config;
use thinkgate_proxy::http::{self as server, ConnectionLimit};
use thinkgate_proxy::Runtime;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A proxy for `config` serving until the returned sender is dropped, its chat URL, and a
/// client for it.
pub async fn serve(config: Config) -> (String, HttpClient, tokio::sync::oneshot::Sender<()>) {
    let runtime = Arc::new(ArcSwap::from_pointee(
        Runtime::build(config, Some(thinkgate::simulator_factory(None))).expect("runtime"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(
        listener,
        server::proxy_service(runtime),
        ConnectionLimit::new(64),
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let client = Client::builder(TokioExecutor::new()).build_http();
    (format!("http://{addr}/v1/chat/completions"), client, stop)
}

/// Posts `body`; the time to its last byte, the response headers and the body.
pub async fn post(client: &HttpClient, url: &str, body: &Value) -> (Duration, HeaderMap, Bytes) {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let started = Instant::now();
    let resp = client.request(req).await.expect("proxy answers");
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (started.elapsed(), headers, bytes)
}

/// A tokio runtime like the server's on this 2-core machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Posts `body` with extra request headers; the time to its last byte and the body.
pub async fn post_with(
    client: &HttpClient,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (Duration, Bytes) {
    let mut req = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let started = Instant::now();
    let resp = client.request(req).await.expect("proxy answers");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (started.elapsed(), bytes)
}

/// Whether this is a `cargo bench` run (not `cargo test` running the bench once), and the
/// size to run at: `$var`, else `bench` under `cargo bench` and `test` under `cargo test`.
pub fn size(var: &str, bench: usize, test: usize) -> (bool, usize) {
    let full = std::env::args().any(|a| a == "--bench");
    let n = match full {
        true => std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(bench),
        false => test,
    };
    (full, n)
}
