//! Load harness: the same client drives the simulator directly and through the proxy, in one
//! run, and prints both and their ratio. Both servers run as separate processes of the real
//! binary; everything is on loopback.
//!
//! `cargo bench --bench load` (set `LOAD_SECONDS` to change each throughput phase's length)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Server {
    use std::io::{BufRead, BufReader};
    let child = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args(args)
        // Only the start-up line (it names the port); per-request logs are measured separately.
        .env("RUST_LOG", "warn,thinkgate=info,thinkgate_proxy=warn")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("thinkgate binary runs");
    // Owned by the guard from here, so the process is killed on every exit path.
    let mut server = Server {
        child,
        addr: String::new(),
    };
    let mut stderr = BufReader::new(server.child.stderr.take().expect("stderr is piped"));
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("server exited before listening: {args:?}");
        }
        if let Some(rest) = line.split("listen=").nth(1) {
            server.addr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in stderr.lines() {});
            return server;
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Sender {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

fn request(
    addr: &str,
    model: &str,
    stream: bool,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let body = format!(
        "{{\"model\":\"{model}\",\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello in a short sentence.\"}}]}}"
    );
    let mut req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("host", addr)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body))).unwrap()
}

/// One request; returns (time to first body byte, total time).
async fn one(sender: &mut Sender, req: Request<Full<Bytes>>) -> (Duration, Duration) {
    let start = Instant::now();
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        first.get_or_insert_with(|| start.elapsed());
    }
    (first.unwrap_or_default(), start.elapsed())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(
    addr: &str,
    model: &str,
    stream: bool,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut sender = connect(addr).await;
    for _ in 0..50 {
        one(&mut sender, request(addr, model, stream, &[])).await;
    }
    let mut first = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    for _ in 0..n {
        let (f, t) = one(&mut sender, request(addr, model, stream, &[])).await;
        first.push(f);
        total.push(t);
    }
    first.sort();
    total.sort();
    (first, total)
}

async fn throughput(addr: &str, model: &str, conns: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let addr = addr.to_string();
        let model = model.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await;
            let mut n = 0u64;
            while Instant::now() < deadline {
                one(&mut sender, request(&addr, &model, false, &[])).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo test --benches` runs bench targets once with --bench absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load harness: run with `cargo bench --bench load`");
        return;
    }
    let secs: f64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let dir = std::env::temp_dir().join(format!("thinkgate-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim_cfg = dir.join("sim.toml");
    std::fs::write(
        &sim_cfg,
        "auth = \"none\"\n[routing]\ndefault_model = \"m\"\n[providers.s]\nkind = \"simulator\"\n[models.m]\nprovider = \"s\"\ncontext_window = 1000\n\
         [simulator.default]\nreasoning = \"reasoning_content\"\nreasoning_tokens = 16\nanswer_tokens = 16\n",
    )
    .unwrap();
    let sim = spawn(&[
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--config",
        sim_cfg.to_str().unwrap(),
    ]);
    let proxy_cfg = dir.join("proxy.toml");
    std::fs::write(
        &proxy_cfg,
        format!(
            "auth = \"none\"\n[server]\nlog_level = \"warn\"\n[routing]\ndefault_model = \"bench\"\n\
             [providers.sim]\nkind = \"openai-compatible\"\nbase_url = \"http://{}/v1\"\nforward_headers = [\"x-sim-*\"]\n\
             [models.bench]\nprovider = \"sim\"\nupstream_model = \"bench\"\ncontext_window = 100000\n",
            sim.addr
        ),
    )
    .unwrap();
    let proxy = spawn(&[
        "serve",
        "--config",
        proxy_cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        const N: usize = 3000;
        println!("== latency at 1 connection, {N} non-streamed requests each ==");
        let (_, direct) = latency(&sim.addr, "bench", false, N).await;
        let (_, via) = latency(&proxy.addr, "bench", false, N).await;
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (d, v) = (pct(&direct, p), pct(&via, p));
            println!(
                "{name}: direct {:>8.1} µs   proxy {:>8.1} µs   added {:>7.1} µs   ratio {:.2}",
                us(d), us(v), us(v) - us(d), us(v) / us(d)
            );
        }

        println!("== streamed, 1 connection, {N} requests (32 chunks each) ==");
        let (df, dt) = latency(&sim.addr, "bench", true, N).await;
        let (vf, vt) = latency(&proxy.addr, "bench", true, N).await;
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            println!(
                "{name}: first chunk direct {:>7.1} µs proxy {:>7.1} µs (added {:>6.1});  whole stream direct {:>7.1} µs proxy {:>7.1} µs (added per chunk {:>5.1} µs)",
                us(pct(&df, p)), us(pct(&vf, p)), us(pct(&vf, p)) - us(pct(&df, p)),
                us(pct(&dt, p)), us(pct(&vt, p)), (us(pct(&vt, p)) - us(pct(&dt, p))) / 35.0
            );
        }

        println!("== throughput at 32 connections, {secs} s each ==");
        let direct = throughput(&sim.addr, "bench", 32, secs).await;
        let via = throughput(&proxy.addr, "bench", 32, secs).await;
        println!("direct {direct:>9.0} req/s   proxy {via:>9.0} req/s   ratio {:.1} %", via / direct * 100.0);

        println!("== memory per idle open stream ==");
        const STREAMS: usize = 500;
        let before = rss_kib(proxy.child.id());
        let mut open = Vec::new();
        for _ in 0..STREAMS {
            let mut sender = connect(&proxy.addr).await;
            let resp = sender
                .send_request(request(&proxy.addr, "bench", true, &[("x-sim-stall-after", "1")]))
                .await
                .unwrap();
            let mut body = resp.into_body();
            body.frame().await.unwrap().unwrap();
            open.push((sender, body));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss_kib(proxy.child.id());
        println!(
            "{STREAMS} idle streams: proxy RSS {before} KiB → {after} KiB = {:.1} KiB per stream",
            (after.saturating_sub(before)) as f64 / STREAMS as f64
        );
        drop(open);
    });
    let _ = std::fs::remove_dir_all(dir);
}
