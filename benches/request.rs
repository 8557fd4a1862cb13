//! What one request costs the proxy in its own code, without the kernel: whole chat
//! completions sent by a hyper client over an in-memory connection (`tokio::io::duplex`) to
//! the proxy's full service stack, whose model is served in process by a fixed answer.
//! Against the same client and connection to bare hyper returning that answer, in the same
//! run: the difference is what thinkgate adds (parse, plan, admission, the attempt, relay,
//! metrics, the access line), free of loopback TCP, whose cost on a VM swings by more than
//! the figure being tuned.
//!
//! `cargo bench --bench request` (`REQUEST_ROUNDS`: rounds of 2,000 requests per side,
//! alternating, default 15). Prints the median per-request time of each side and their
//! difference.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use thinkgate_config::Config;
use thinkgate_proxy::body::{json_response, Body};
use thinkgate_proxy::upstream::{LocalFactory, LocalUpstream};
use thinkgate_proxy::Runtime;

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The load harness's fixed completion (`benches/load.rs`), byte for byte.
const FIXED_COMPLETION: &str = r#"{"id":"chatcmpl-nginx","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;

/// The load harness's request body.
const REQUEST: &str = r#"{"model":"bench","messages":[{"role":"user","content":"Say hello."}]}"#;

const CONFIG: &str =
    "auth = \"none\"\n[server]\nlog_level = \"warn\"\n[routing]\ndefault_model = \"bench\"\n\
     [providers.fixed]\nkind = \"simulator\"\n\
     [models.bench]\nprovider = \"fixed\"\nupstream_model = \"bench\"\ncontext_window = 1000000\n";

/// Answers every call with [`FIXED_COMPLETION`].
struct Fixed;

impl LocalUpstream for Fixed {
    fn call(&self, _: Request<Full<Bytes>>) -> BoxFuture<'static, Response<Body>> {
        Box::pin(async { json_response(http::StatusCode::OK, FIXED_COMPLETION) })
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// A client connected over an in-memory pipe to `service`, served by hyper's HTTP/1 server
/// on the current runtime.
async fn connect<S>(service: S) -> Sender
where
    S: tower::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), TowerToHyperService::new(service))
            .await;
    });
    let (sender, conn) = http1::handshake(TokioIo::new(client))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Sends `n` requests one after another; the time per request.
async fn per_request(sender: &mut Sender, n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let req = Request::post("/v1/chat/completions")
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(REQUEST.as_bytes())))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(!body.is_empty());
    }
    start.elapsed() / n as u32
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench targets once without `--bench`: a few requests then,
    // which still prove the wiring (every one must come back 200).
    let full = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("REQUEST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 15 } else { 1 });
    let n: usize = if full { 2_000 } else { 20 };
    let config = Config::parse(CONFIG, "request-bench.toml".as_ref(), &|_| None).expect("config");
    let factory: LocalFactory = Arc::new(|_: &Config| Arc::new(Fixed) as Arc<dyn LocalUpstream>);
    let runtime = Runtime::build(config, Some(factory)).expect("runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let proxy = thinkgate_proxy::http::proxy_service(Arc::new(ArcSwap::from_pointee(runtime)));
        let bare = tower::service_fn(|_: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(json_response(http::StatusCode::OK, FIXED_COMPLETION))
        });
        let mut through_proxy = connect(proxy).await;
        let mut through_bare = connect(bare).await;
        // Warm both: the first requests build pools, counters and caches.
        per_request(&mut through_proxy, n).await;
        per_request(&mut through_bare, n).await;
        let (mut proxied, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            proxied.push(per_request(&mut through_proxy, n).await);
            direct.push(per_request(&mut through_bare, n).await);
        }
        let (p, d) = (median(proxied), median(direct));
        println!(
            "== one whole chat completion in process, {rounds} rounds of {n} requests, median ==\n\
             bare hyper {:>7.2} µs   thinkgate {:>7.2} µs   added {:>7.2} µs ({:.1}x)",
            d.as_secs_f64() * 1e6,
            p.as_secs_f64() * 1e6,
            (p.as_secs_f64() - d.as_secs_f64()) * 1e6,
            p.as_secs_f64() / d.as_secs_f64(),
        );
    });
}
