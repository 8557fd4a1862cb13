//! Test support: the real server and simulator on loopback (port 0), and a small HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use thinkgate_config::Config;
use thinkgate_proxy::server::{self, ConnectionLimit};
use thinkgate_proxy::simulator::{self, Simulator};
use thinkgate_proxy::Runtime;
use tokio::sync::oneshot;

/// A config whose models are served by the in-process simulator and, when `sim_url` is
/// given, by a simulator over HTTP (`net-*` models).
pub fn config_text(sim_url: Option<&str>, extra: &str) -> String {
    let mut text = String::from(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
shutdown_grace = "5s"

[routing]
default_model = "sim-model"

[providers.sim]
kind = "simulator"

[models.sim-model]
provider = "sim"
upstream_model = "upstream-sim-model"
context_window = 100000
capabilities = ["tools", "reasoning"]

[simulator]
seed = 1

[simulator.default]
reasoning_tokens = 8
answer_tokens = 6
"#,
    );
    if let Some(url) = sim_url {
        text.push_str(&format!(
            r#"
[providers.net]
kind = "openai-compatible"
base_url = "{url}/v1"
forward_headers = ["x-sim-*"]
response_timeout = "2s"
stream_idle_timeout = "2s"

[models.net-model]
provider = "net"
upstream_model = "upstream-net-model"
context_window = 100000

[providers.dead]
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"

[models.dead-model]
provider = "dead"
context_window = 1000

[providers.keyless]
kind = "openai"
api_key = "${{THINKGATE_TEST_UNSET_KEY}}"

[models.keyless-model]
provider = "keyless"
context_window = 1000
"#
        ));
    }
    text.push_str(extra);
    text
}

pub fn parse_config(text: &str) -> Config {
    Config::parse(text, std::path::Path::new("test.toml"), &|_| None).expect("test config is valid")
}

/// A running proxy; dropping it shuts it down.
pub struct Proxy {
    pub addr: SocketAddr,
    pub runtime: Arc<ArcSwap<Runtime>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    pub async fn start(text: &str) -> Proxy {
        let runtime = Arc::new(ArcSwap::from_pointee(
            Runtime::build(parse_config(text)).unwrap(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            server::proxy_service(runtime.clone()),
            ConnectionLimit::new(1000),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Proxy {
            addr,
            runtime,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The in-process simulator's counters.
    pub fn sim_stats(&self) -> Value {
        self.runtime.load().simulator.stats().to_json()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The simulator served over HTTP on loopback.
pub struct SimServer {
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    _stop: oneshot::Sender<()>,
}

impl SimServer {
    pub async fn start() -> SimServer {
        let cfg = parse_config(&config_text(None, ""));
        let sim = Arc::new(Simulator::new(cfg.simulator));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            simulator::service(sim.clone()),
            ConnectionLimit::new(1000),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        SimServer {
            addr,
            sim,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.sim.stats().to_json()[name].as_u64().unwrap()
    }
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    url: &str,
    method: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    client()
        .request(req)
        .await
        .expect("request reaches the server")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        sse_data(&self.text())
    }

    /// Asserts an OpenAI-shaped error and returns its `error` object.
    pub fn error(&self) -> Value {
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].is_string(), "no error message in {v}");
        for key in ["type", "param", "code"] {
            assert!(e.get(key).is_some(), "error lacks `{key}`: {v}");
        }
        e
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

pub async fn call(url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Reply {
    let resp = send(url, "POST", body, headers).await;
    collect(resp).await
}

pub async fn get(url: &str) -> Reply {
    collect(send(url, "GET", Bytes::new(), &[]).await).await
}

pub async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body completes").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn chat(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "What is two plus two?"}]
    })
    .to_string()
}

/// Polls `f` until it is true or 10 s pass.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
