//! Load harness: the same client drives an upstream directly and through the proxy, in one
//! run, and prints both and their ratio. Two upstreams: the simulator (streams, reasoning) and
//! nginx returning a fixed completion (the fastest upstream there is, so the proxy's own cost
//! shows; installed from Debian's package when missing and the harness runs as root). Every
//! server is a separate process; everything is on loopback. Against nginx, nginx's own
//! `proxy_pass` (a process of its own) in front of the same server is measured too: the floor
//! any proxy pays here.
//!
//! `cargo bench --bench load` (`LOAD_SECONDS`: each throughput phase's length, default 5;
//! `LOAD_CURVE_SECONDS`: each point of the scale curve, default 2; `LOAD_STREAMS`: idle
//! streams held open for the memory figure, default 10,000 or what the open-file limit
//! allows; `LOAD_ONLY=cache` or `memory`: only that section).

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

/// A fixed completion, as an OpenAI-compatible upstream returns it.
const FIXED_COMPLETION: &str = r#"{"id":"chatcmpl-nginx","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;

fn nginx_binary() -> Option<String> {
    let found = || {
        ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(str::to_string)
    };
    if let Some(p) = found() {
        return Some(p);
    }
    // As the issue's figures were taken: Debian's package, installed when we may.
    let root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
    if root {
        println!("nginx is missing: installing Debian's nginx-light package");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "nginx-light"])
            .stdout(Stdio::null())
            .status();
    }
    found()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// nginx serving [`FIXED_COMPLETION`] on a free loopback port, and a second nginx process
/// that reverse-proxies to it over kept-alive connections (`proxy_pass`): the reference for
/// what any proxy costs on this machine. The reference is its own process, as the proxy is:
/// in one process with the fixed server, nginx hands the upstream hop to itself without a
/// wake-up and looks cheaper than any real deployment. Both stop on drop.
struct Nginx {
    server: Server,
    /// The `proxy_pass` reference in front of the fixed server.
    reference: Server,
}

fn start_nginx(dir: &std::path::Path) -> Option<Nginx> {
    let port = free_port();
    let fixed = format!(
        "server {{\n    listen 127.0.0.1:{port} reuseport;\n    location / {{\n\
           default_type application/json;\n      return 200 '{FIXED_COMPLETION}';\n    }}\n  }}\n"
    );
    let server = nginx_process(dir, "fixed", port, &fixed)?;
    let reference_port = free_port();
    let reference = format!(
        "upstream fixed {{ server 127.0.0.1:{port}; keepalive 256; }}\n\
         server {{\n    listen 127.0.0.1:{reference_port} reuseport;\n    location / {{\n\
           proxy_pass http://fixed;\n      proxy_http_version 1.1;\n\
           proxy_set_header Connection \"\";\n    }}\n  }}\n"
    );
    let reference = nginx_process(dir, "reference", reference_port, &reference)?;
    Some(Nginx { server, reference })
}

/// One nginx process (no master, one worker) serving `servers` inside its `http` block.
fn nginx_process(dir: &std::path::Path, name: &str, port: u16, servers: &str) -> Option<Server> {
    let bin = nginx_binary()?;
    let conf = dir.join(format!("nginx-{name}.conf"));
    let tmp = dir.join(format!("nginx-{name}"));
    std::fs::create_dir_all(&tmp).ok()?;
    std::fs::write(
        &conf,
        format!(
            // One process (no master): killing it on drop leaves no orphaned worker.
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {err} warn;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_max_body_size 4m;\n  keepalive_requests 1000000;\n\
               client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n\
               uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n{servers}}}\n",
            pid = tmp.join("nginx.pid").display(),
            err = tmp.join("error.log").display(),
            tmp = tmp.display(),
        ),
    )
    .ok()?;
    let child = Command::new(bin)
        .args(["-p", tmp.to_str()?, "-c", conf.to_str()?])
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr = format!("127.0.0.1:{port}");
    let server = Server { child, addr };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&server.addr).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The soft limit on open files (the harness cannot raise the hard one).
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1024)
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
    sized_request(addr, model, stream, headers, 0)
}

/// A request whose body is at least `bytes` long (the user turn padded with prose).
fn sized_request(
    addr: &str,
    model: &str,
    stream: bool,
    headers: &[(&str, &str)],
    bytes: usize,
) -> Request<Full<Bytes>> {
    let mut content = String::from("Say hello in a short sentence.");
    while content.len() + 120 < bytes {
        content.push_str(" The quick brown fox jumps over the lazy dog near the river bank.");
    }
    let body = format!(
        "{{\"model\":\"{model}\",\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"{content}\"}}]}}"
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
    let (_, first, total) = timed(sender, req).await;
    (first, total)
}

/// One request; returns (time to the response head, to the first body frame, to the end).
async fn timed(sender: &mut Sender, req: Request<Full<Bytes>>) -> (Duration, Duration, Duration) {
    let start = Instant::now();
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let head = start.elapsed();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        first.get_or_insert_with(|| start.elapsed());
    }
    (head, first.unwrap_or_default(), start.elapsed())
}

/// Times to the response head of `n` streamed requests on one connection, sorted.
async fn heads(addr: &str, n: usize) -> Vec<Duration> {
    let mut sender = connect(addr).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let (head, _, _) = timed(&mut sender, request(addr, "bench", true, &[])).await;
        if i >= 50 {
            out.push(head);
        }
    }
    out.sort();
    out
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
    sized_latency(addr, model, stream, n, 0).await
}

async fn sized_latency(
    addr: &str,
    model: &str,
    stream: bool,
    n: usize,
    bytes: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut sender = connect(addr).await;
    for _ in 0..n.min(50) {
        one(&mut sender, sized_request(addr, model, stream, &[], bytes)).await;
    }
    let mut first = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    for _ in 0..n {
        let (f, t) = one(&mut sender, sized_request(addr, model, stream, &[], bytes)).await;
        first.push(f);
        total.push(t);
    }
    first.sort();
    total.sort();
    (first, total)
}

async fn throughput(addr: &str, model: &str, conns: usize, secs: f64) -> f64 {
    loaded(addr, model, conns, secs).await.0
}

/// `conns` connections sending back to back for `secs` (after all have connected): requests
/// per second and every request's latency, sorted.
async fn loaded(addr: &str, model: &str, conns: usize, secs: f64) -> (f64, Vec<Duration>) {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(connect(addr).await);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for mut sender in senders {
        let addr = addr.to_string();
        let model = model.to_string();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                times.push(one(&mut sender, request(&addr, &model, false, &[])).await.1);
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    (all.len() as f64 / secs, all)
}

/// A proxy whose one model is served by nginx at `upstream`; `extra` is appended to its
/// config (written to `<name>.toml` in `dir`).
fn proxy_to_nginx(dir: &std::path::Path, name: &str, upstream: &str, extra: &str) -> Server {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "auth = \"none\"\n[server]\nlog_level = \"warn\"\n[routing]\ndefault_model = \"bench\"\n\
             [providers.nginx]\nkind = \"openai-compatible\"\nbase_url = \"http://{upstream}/v1\"\n\
             [models.bench]\nprovider = \"nginx\"\nupstream_model = \"bench\"\ncontext_window = 1000000\n{extra}"
        ),
    )
    .unwrap();
    spawn(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
}

/// The response cache against nginx at one connection: a hit (answered by the proxy
/// alone) against a direct call to nginx — the target: a hit adds at most 50 µs p99 — and a
/// miss that records its answer (`cache-control: no-cache`) against the proxy without a
/// cache.
async fn cache_sections(direct: &str, plain: &str, cached: &str, n: usize) {
    println!("== response cache, nginx upstream, 1 connection, {n} non-streamed requests each ==");
    let on = [("x-thinkgate-cache", "on")];
    let refresh = [("x-thinkgate-cache", "on"), ("cache-control", "no-cache")];
    let mut sender = connect(cached).await;
    for expected in ["miss", "hit"] {
        sender.ready().await.unwrap();
        let resp = sender
            .send_request(request(cached, "bench", false, &on))
            .await
            .unwrap();
        let got = resp.headers().get("x-thinkgate-cache").cloned();
        let _ = resp.into_body().collect().await;
        assert_eq!(got.as_ref().and_then(|v| v.to_str().ok()), Some(expected));
    }
    // Each pair alternates request by request, so both sides of a comparison see the same
    // moments of a noisy machine.
    let (d, hit) = alternating((direct, &[]), (cached, &on), n).await;
    let (p, miss) = alternating((plain, &[]), (cached, &refresh), n).await;
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (d, hit, p, miss) = (
            us(pct(&d, q)),
            us(pct(&hit, q)),
            us(pct(&p, q)),
            us(pct(&miss, q)),
        );
        println!(
            "{name}: direct nginx {d:>7.1} µs   cache hit {hit:>7.1} µs (added {:>6.1})   no cache {p:>7.1} µs   miss that records {miss:>7.1} µs (added {:>6.1} over no cache)",
            hit - d,
            miss - p,
        );
    }
}

type Target<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// Total times of `n` non-streamed requests to each of `a` and `b` (a connection each,
/// taking turns; after 50 each to warm up), sorted.
async fn alternating(a: Target<'_>, b: Target<'_>, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut sa, mut sb) = (connect(a.0).await, connect(b.0).await);
    let (mut ta, mut tb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 50 {
        let (_, x) = one(&mut sa, request(a.0, "bench", false, a.1)).await;
        let (_, y) = one(&mut sb, request(b.0, "bench", false, b.1)).await;
        if i >= 50 {
            ta.push(x);
            tb.push(y);
        }
    }
    ta.sort();
    tb.sort();
    (ta, tb)
}

/// Against nginx: latency at one connection, the scale curve over connections, and request
/// bodies of 1 KB, 100 KB and 1 MB. `reference` is nginx's own `proxy_pass` in front of the
/// same server, measured the same way.
async fn nginx_sections(direct: &str, reference: &str, proxy: &str, n: usize, curve_secs: f64) {
    println!("== nginx upstream: latency at 1 connection, {n} non-streamed requests each ==");
    let (_, d) = latency(direct, "bench", false, n).await;
    let (_, r) = latency(reference, "bench", false, n).await;
    let (_, v) = latency(proxy, "bench", false, n).await;
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (d, r, v) = (pct(&d, p), pct(&r, p), pct(&v, p));
        println!(
            "{name}: direct {:>7.1} µs   nginx proxy_pass {:>7.1} µs (added {:>6.1})   thinkgate {:>7.1} µs (added {:>6.1})",
            us(d),
            us(r),
            us(r) - us(d),
            us(v),
            us(v) - us(d),
        );
    }
    println!("== nginx upstream: scale curve, {curve_secs} s per point (req/s, % of direct) ==");
    println!(
        " conns  direct req/s   nginx proxy_pass   thinkgate          p50/p99 µs: direct | proxy_pass | thinkgate"
    );
    for conns in [1, 8, 32, 128, 512, 2048] {
        let (dr, dl) = loaded(direct, "bench", conns, curve_secs).await;
        let (rr, rl) = loaded(reference, "bench", conns, curve_secs).await;
        let (vr, vl) = loaded(proxy, "bench", conns, curve_secs).await;
        let tail = |l: &[Duration]| format!("{:.0}/{:.0}", us(pct(l, 0.5)), us(pct(l, 0.99)));
        println!(
            "{conns:>6} {dr:>13.0} {rr:>9.0} ({:>4.1} %) {vr:>9.0} ({:>4.1} %)     {} | {} | {}",
            rr / dr * 100.0,
            vr / dr * 100.0,
            tail(&dl),
            tail(&rl),
            tail(&vl),
        );
    }
    println!("== nginx upstream: request body size, 1 connection ==");
    for (label, bytes, count) in [
        ("1 KB", 1_000, 1000),
        ("100 KB", 100_000, 300),
        ("1 MB", 1_000_000, 50),
    ] {
        let (_, d) = sized_latency(direct, "bench", false, count, bytes).await;
        let (_, v) = sized_latency(proxy, "bench", false, count, bytes).await;
        println!(
            "{label:>7}: p50 direct {:>8.1} µs proxy {:>8.1} µs (added {:>8.1});  p99 direct {:>8.1} µs proxy {:>8.1} µs (added {:>8.1})",
            us(pct(&d, 0.5)), us(pct(&v, 0.5)), us(pct(&v, 0.5)) - us(pct(&d, 0.5)),
            us(pct(&d, 0.99)), us(pct(&v, 0.99)), us(pct(&v, 0.99)) - us(pct(&d, 0.99))
        );
    }
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
    // The proxy's call slots (server.max_upstream_calls, 1,024 by default) are raised so the
    // memory phase measures streams, not the queue for a slot.
    let proxy_cfg = dir.join("proxy.toml");
    std::fs::write(
        &proxy_cfg,
        format!(
            "auth = \"none\"\n[server]\nlog_level = \"warn\"\nmax_upstream_calls = 20000\nmax_connections = 20000\n[routing]\ndefault_model = \"bench\"\n\
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

    let nginx = start_nginx(&dir);
    let nginx_proxy = nginx
        .as_ref()
        .map(|n| proxy_to_nginx(&dir, "proxy-nginx", &n.server.addr, ""));
    // The same, with the response cache on: its hits and its misses (which record).
    let cache_proxy = nginx.as_ref().map(|n| {
        proxy_to_nginx(
            &dir,
            "proxy-cache",
            &n.server.addr,
            "[cache]\nenabled = true\n",
        )
    });
    let only = std::env::var("LOAD_ONLY").ok();
    let only_cache = only.as_deref() == Some("cache");
    let only_memory = only.as_deref() == Some("memory");
    let curve_secs: f64 = std::env::var("LOAD_CURVE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);

    // One thread for the client, as wrk runs: with a worker thread beside the one that
    // reads, every body frame crossed threads (a futex wake-up each), which cost the client
    // more for a stream re-chunked per event than for the simulator's batched chunks and
    // swung the per-chunk figure between runs (+5 µs in one, +70 µs in the next).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        const N: usize = 3000;
        let cache_section = || async {
            match (&nginx, &nginx_proxy, &cache_proxy) {
                (Some(nginx), Some(plain), Some(cached)) => {
                    cache_sections(&nginx.server.addr, &plain.addr, &cached.addr, N).await
                }
                _ => println!("== response cache: skipped, nginx is not installed and could not be =="),
            }
        };
        if only_cache {
            return cache_section().await;
        }
        if !only_memory {
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

        let (dh, vh) = (heads(&sim.addr, N).await, heads(&proxy.addr, N).await);
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            println!(
                "{name}: response head direct {:>7.1} µs proxy {:>7.1} µs (added {:>6.1})",
                us(pct(&dh, p)), us(pct(&vh, p)), us(pct(&vh, p)) - us(pct(&dh, p)),
            );
        }

        println!("== throughput at 32 connections, {secs} s each ==");
        let direct = throughput(&sim.addr, "bench", 32, secs).await;
        let via = throughput(&proxy.addr, "bench", 32, secs).await;
        println!("direct {direct:>9.0} req/s   proxy {via:>9.0} req/s   ratio {:.1} %", via / direct * 100.0);

        if let (Some(nginx), Some(proxy)) = (&nginx, &nginx_proxy) {
            nginx_sections(&nginx.server.addr, &nginx.reference.addr, &proxy.addr, N, curve_secs).await;
        } else {
            println!("== nginx upstream: skipped, nginx is not installed and could not be ==");
        }
        cache_section().await;
        }

        println!("== memory per idle open stream ==");
        // Each proxied stream holds two descriptors in the proxy (client and upstream).
        let wanted: usize = std::env::var("LOAD_STREAMS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000);
        let streams = wanted.min(open_file_limit().saturating_sub(512) / 2);
        if streams < wanted {
            println!("(the open-file limit allows {streams} streams, not {wanted})");
        }
        let before = rss_kib(proxy.child.id());
        // The simulator holds the same streams' other end: one hyper server connection and
        // a stalled body each, a floor to read the proxy's figure against.
        let sim_before = rss_kib(sim.child.id());
        let mut open = Vec::new();
        for i in 0..streams {
            // Bounded: a stream the machine cannot open ends the phase with what is open.
            let opened = tokio::time::timeout(Duration::from_secs(5), async {
                let stream = TcpStream::connect(&proxy.addr).await.map_err(|e| e.to_string())?;
                let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let resp = sender
                    .send_request(request(&proxy.addr, "bench", true, &[("x-sim-stall-after", "1")]))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut body = resp.into_body();
                match body.frame().await {
                    Some(Ok(_)) => Ok((sender, body)),
                    other => Err(format!("no first frame: {other:?}")),
                }
            })
            .await;
            match opened {
                Ok(Ok(pair)) => open.push(pair),
                Ok(Err(e)) => {
                    println!("(stopped at {i} streams: {e})");
                    break;
                }
                Err(_) => {
                    println!("(stopped at {i} streams: the next took over 5 s to open)");
                    break;
                }
            }
        }
        let streams = open.len().max(1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss_kib(proxy.child.id());
        let sim_after = rss_kib(sim.child.id());
        println!(
            "{streams} idle streams: proxy RSS {before} KiB → {after} KiB = {:.1} KiB per stream \
             (the simulator upstream, one hyper server connection each: {:.1} KiB per stream)",
            (after.saturating_sub(before)) as f64 / streams as f64,
            (sim_after.saturating_sub(sim_before)) as f64 / streams as f64
        );
        drop(open);
    });
    let _ = std::fs::remove_dir_all(dir);
}
