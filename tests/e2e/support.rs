//! Test support: the real server and simulator on loopback (port 0), and a small HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use thinkgate_config::Config;
use thinkgate_proxy::http::{self as server, ConnectionLimit};
use thinkgate_proxy::Runtime;
use thinkgate_sim::{self as simulator, Simulator};
use tokio::sync::oneshot;

/// A config whose models are served by the in-process simulator and, when `sim_url` is
/// given, by a simulator over HTTP (`net-*` models).
pub fn config_text(sim_url: Option<&str>, extra: &str) -> String {
    let mut text = String::from(
        r#"
auth = "none"

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

/// Serves `service` on a fresh loopback port until the returned sender is dropped or fired.
async fn serve_on_loopback<S: server::HttpService>(
    service: S,
    grace: Duration,
    limit: ConnectionLimit,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(server::serve(listener, service, limit, shutdown, grace));
    (addr, stop)
}

/// The real `thinkgate serve` binary on a loopback port, its log lines on a channel.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: String,
    pub logs: std::sync::mpsc::Receiver<String>,
    /// The lines read while waiting for the address.
    pub startup: Vec<String>,
    dir: std::path::PathBuf,
}

impl Drop for Binary {
    /// A test that ends (or fails) with the server still up must not leave it running: it
    /// would hold the test's output pipe open.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Binary {
    pub fn spawn(name: &str, config: &str, env: &[(&str, &str)]) -> Binary {
        use std::io::{BufRead, BufReader};
        let dir = std::env::temp_dir().join(format!("thinkgate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_thinkgate"));
        cmd.args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, logs) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        // Human logs say `listen=ADDR`; JSON logs carry `"listen":"ADDR"`.
        let addr = loop {
            let Ok(line) = logs.recv_timeout(Duration::from_secs(30)) else {
                // Not left running: it holds the test's output open.
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not log its address: {startup:?}");
            };
            // The start-up line ("thinkgate is serving.") names the bound address; other
            // lines may mention the configured one.
            let found = Some(line.as_str())
                .filter(|l| l.contains("is serving"))
                .and_then(|l| {
                    l.split("listen=")
                        .nth(1)
                        .or_else(|| l.split("\"listen\":\"").nth(1))
                })
                .map(|rest| {
                    rest.split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_string()
                });
            startup.push(line);
            if let Some(addr) = found.filter(|a| !a.is_empty()) {
                break addr;
            }
        };
        Binary {
            child,
            addr,
            logs,
            startup,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The config file the server was started with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.join("config.toml")
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the server.
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} failed");
    }

    /// Waits until a log line contains `needle`, returning it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing `{needle}`"),
            }
        }
    }

    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn exit_code(mut self) -> Option<i32> {
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => break None,
            }
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        code
    }
}

/// A running proxy; dropping it shuts it down.
pub struct Proxy {
    pub addr: SocketAddr,
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// The in-process simulator serving the current runtime.
    sim: Arc<ArcSwapOption<Simulator>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    pub async fn start(text: &str) -> Proxy {
        Proxy::start_with(parse_config(text)).await
    }

    /// Starts the proxy on a config text whose `${VAR}` references resolve from `env` only.
    pub async fn start_with_env(text: &str, env: &[(&str, &str)]) -> Proxy {
        let lookup = |var: &str| {
            env.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        };
        let config = Config::parse(text, std::path::Path::new("t.toml"), &lookup).unwrap();
        Proxy::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Proxy {
        let idle = config.server.idle_timeout;
        let sim = Arc::new(ArcSwapOption::empty());
        let local = thinkgate::simulator_factory(Some(sim.clone()));
        let runtime = Arc::new(ArcSwap::from_pointee(
            Runtime::build(config, Some(local)).unwrap(),
        ));
        let service = server::proxy_service(runtime.clone());
        let limit = ConnectionLimit::new(1000).with_idle_timeout(idle);
        let (addr, stop) = serve_on_loopback(service, Duration::from_secs(5), limit).await;
        Proxy {
            addr,
            runtime,
            sim,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The in-process simulator's counters.
    pub fn sim_stats(&self) -> Value {
        match self.sim.load_full() {
            Some(sim) => sim.stats().to_json(),
            None => Value::Null,
        }
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
        let service = simulator::service(sim.clone());
        let (addr, stop) =
            serve_on_loopback(service, Duration::from_secs(1), ConnectionLimit::new(1000)).await;
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
    /// A response header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

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

    /// A streamed reply read the way a client reads it.
    pub fn streamed(&self) -> Streamed {
        let events = self.sse_data();
        Streamed {
            done: events.last().is_some_and(|e| e == "[DONE]"),
            chunks: events
                .iter()
                .filter(|e| *e != "[DONE]")
                .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}")))
                .collect(),
        }
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

/// The chunks of a streamed reply, and whether it ended with `[DONE]`.
pub struct Streamed {
    pub chunks: Vec<Value>,
    pub done: bool,
}

impl Streamed {
    fn deltas(&self) -> impl Iterator<Item = &Value> {
        self.chunks.iter().map(|c| &c["choices"][0]["delta"])
    }

    /// A delta field (`content`, `reasoning_content`, …) joined over the stream.
    pub fn text(&self, field: &str) -> String {
        self.deltas().filter_map(|d| d[field].as_str()).collect()
    }

    /// The first tool call's argument text joined over the stream.
    pub fn tool_arguments(&self) -> String {
        self.deltas()
            .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
            .collect()
    }

    /// Every finish reason the stream gave.
    pub fn finish_reasons(&self) -> Vec<&str> {
        self.chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect()
    }

    /// The last chunk's usage.
    pub fn usage(&self) -> &Value {
        &self.chunks.last().expect("a chunk")["usage"]
    }
}

/// Words in a string value (the simulator's tokens are words).
pub fn words(v: &str) -> usize {
    v.split_whitespace().count()
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

/// A stream's events as (`event:` name, JSON data); events without JSON data are left out.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data: String = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            Some((name.to_string(), serde_json::from_str(&data).ok()?))
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

/// An upstream on loopback that answers every request with fixed bytes and keeps the last
/// request body it received: for golden tests of wire translation both ways.
pub struct FixedUpstream {
    pub addr: SocketAddr,
    pub last_request: Arc<std::sync::Mutex<Option<(String, HeaderMap, Bytes)>>>,
    _stop: oneshot::Sender<()>,
}

impl FixedUpstream {
    pub async fn start(content_type: &'static str, body: &'static str) -> FixedUpstream {
        let last_request = Arc::new(std::sync::Mutex::new(None));
        let seen = last_request.clone();
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let (parts, b) = req.into_parts();
                let bytes = b.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                *seen.lock().unwrap() = Some((parts.uri.to_string(), parts.headers, bytes));
                let mut resp = Response::new(thinkgate_proxy::body::full(body));
                resp.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static(content_type));
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let (addr, stop) =
            serve_on_loopback(service, Duration::from_secs(1), ConnectionLimit::new(1000)).await;
        FixedUpstream {
            addr,
            last_request,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The path (with its query), headers and JSON body of the last request.
    pub fn last(&self) -> (String, HeaderMap, Value) {
        let (path, headers, body) = self
            .last_request
            .lock()
            .unwrap()
            .clone()
            .expect("a request arrived");
        (
            path,
            headers,
            serde_json::from_slice(&body).expect("the upstream got JSON"),
        )
    }
}

/// Reads `tests/golden/<name>`.
pub fn golden(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the golden file `name`, rewriting it when `UPDATE_GOLDEN` is set.
pub fn assert_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    assert_eq!(actual, golden(name), "differs from tests/golden/{name}");
}

/// A response or chunk with `created` (the proxy's clock) zeroed, for golden comparisons.
pub fn without_created(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("created".into(), 0.into());
    }
    v
}

/// A stream's `data` payloads with `created` zeroed, one per line, for golden comparisons.
pub fn golden_events(r: &Reply) -> String {
    let events: Vec<String> = r
        .sse_data()
        .into_iter()
        .map(|e| match serde_json::from_str::<Value>(&e) {
            Ok(v) => without_created(v).to_string(),
            Err(_) => e,
        })
        .collect();
    events.join("\n") + "\n"
}

/// Writes `text` as `config.toml` in a fresh directory for `name`, and returns its path.
pub fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("thinkgate-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the `thinkgate` binary once (a command that exits) and returns what it did.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_thinkgate"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Runs the `thinkgate` binary (from the repository root) with `stdin`: its exit code,
/// stdout and stderr.
pub fn run_cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The sum of `family`'s series whose labels include every `labels` pair (a family without
/// labels has one series).
pub fn series(metrics: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(family))
        .filter(|l| matches!(l.as_bytes().get(family.len()), Some(b'{' | b' ')))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A config with one model, `multi`, on two simulator deployments `s1` (upstream model
/// `one`) and `s2` (`two`); `s1`/`s2` extend each deployment's entry, `sim_extra` is
/// appended.
pub fn deployments(model_extra: &str, s1: &str, s2: &str, sim_extra: &str) -> String {
    config_text(
        None,
        &format!(
            r#"
[providers.s1]
kind = "simulator"

[providers.s2]
kind = "simulator"

[models.multi]
context_window = 100000
{model_extra}
deployments = [
  {{ provider = "s1", upstream_model = "one"{s1} }},
  {{ provider = "s2", upstream_model = "two"{s2} }},
]
{sim_extra}"#
        ),
    )
}

/// A real `redis-server` (Debian's package) on a free loopback port, with nothing saved to
/// disk; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = RedisServer { port, child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// What `redis-cli` (installed with the server) prints for `args`, line by line.
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed with redis-server");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
    }

    /// Starts it (again, on the same port) and waits until it takes connections.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
