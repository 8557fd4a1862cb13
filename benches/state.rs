//! The shared limit state's cost: one key's admission (requests per second and minute,
//! tokens per minute, a daily output quota: four checks) through the memory backend and
//! through a real `redis-server` on loopback, measured in the same run, and how many
//! admissions per second one Redis takes from concurrent callers.
//!
//! `cargo bench --bench state` (needs `redis-server` on the PATH; Debian's package). Under
//! `cargo test` it makes a few hundred admissions each way and checks they pass.
//! Target (the scale-out issue): the Redis path adds ≤ 150 µs p99 over the memory path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thinkgate_config::{Config, Mode};
use thinkgate_proxy::auth::{Expected, KeyState};
use thinkgate_proxy::Runtime;

const SECRET: &str = "tg-bench-secret-0123456789abcdef";

fn config(state: &str) -> Config {
    let text = format!(
        r#"
[keys.bench]
secret = "${{BENCH_KEY}}"
requests_per_second = 1000000
requests_per_minute = 100000000
tokens_per_minute = 2000000000
output_tokens_per_day = 1000000000000

[routing]
default_model = "m"

[providers.s]
kind = "simulator"

[models.m]
provider = "s"
context_window = 100000
{state}
"#
    );
    let env = |v: &str| (v == "BENCH_KEY").then(|| SECRET.to_string());
    Config::parse(&text, "bench.toml".as_ref(), &env).expect("bench config")
}

fn key(runtime: &Runtime) -> Arc<KeyState> {
    runtime
        .keys
        .by_name("bench")
        .expect("the bench key")
        .clone()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn latencies(key: &KeyState, n: usize) -> Vec<Duration> {
    let settle = std::env::var_os("NO_SETTLE").is_none();
    let expected = Expected {
        output: 100,
        reasoning: 0,
    };
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let admitted = key.admit(Some(Mode::Thinking), 120, expected).await;
        all.push(started.elapsed());
        let admitted = admitted.expect("admitted");
        if settle {
            key.settle(Some(Mode::Thinking), None, admitted.hold);
        }
    }
    all.sort();
    all
}

/// Bare round trips to the same Redis (`PING` over a plain blocking socket): the floor any
/// Redis path stands on, on this machine.
fn pings(port: u16, n: usize) -> Vec<Duration> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 7];
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        s.write_all(b"PING\r\n").unwrap();
        s.read_exact(&mut buf).unwrap();
        all.push(started.elapsed());
    }
    all.sort();
    all
}

fn main() {
    // `cargo test --benches` runs bench targets once with --bench absent: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server on the PATH");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The proxy's layout: the runtime is built (and Redis first reached) on the main
    // runtime, and requests are served on threads that each run a runtime of their own.
    // STATE_RUNTIME=multi serves on one two-worker runtime instead.
    let main_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let serving = match std::env::var("STATE_RUNTIME").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .unwrap();
    let (memory, shared) = main_runtime.block_on(async {
        let memory = Runtime::build(config(""), None).unwrap();
        let redis = format!(
            "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\ntimeout = \"100ms\"\n"
        );
        let shared = Runtime::build(config(&redis), None).unwrap();
        while !shared.shared_state.as_ref().is_some_and(|s| s.connected()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (memory, shared)
    });
    serving.block_on(async {
        let (memory_key, shared_key) = (key(&memory), key(&shared));
        // Warm both paths (the script load, the connection).
        latencies(&memory_key, 1_000).await;
        latencies(&shared_key, 1_000).await;
        let n = if full { 20_000 } else { 200 };
        let m = latencies(&memory_key, n).await;
        let r = latencies(&shared_key, n).await;
        let unavailable = String::from_utf8(shared.metrics.render())
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("thinkgate_state_unavailable_total{"))
            .map(|l| l.rsplit(' ').next().unwrap_or("0").parse::<f64>().unwrap_or(0.0))
            .sum::<f64>();
        let ping = tokio::task::spawn_blocking(move || pings(port, n)).await.unwrap();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("admission, one caller, {n} each (same run):");
        for (label, p) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            let (a, b, floor) = (percentile(&m, p), percentile(&r, p), percentile(&ping, p));
            println!(
                "  {label:6} memory {:>7.1} µs   redis {:>7.1} µs   added {:>7.1} µs   (a bare PING round trip: {:>6.1} µs; redis path {:.2}x it)",
                us(a),
                us(b),
                us(b.saturating_sub(a)),
                us(floor),
                us(b) / us(floor)
            );
        }
        println!("  (admissions that fell back without Redis: {unavailable})");
        if let Ok(stats) = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "info", "commandstats"])
            .output()
        {
            let text = String::from_utf8_lossy(&stats.stdout).to_string();
            for line in text.lines().filter(|l| l.contains("evalsha")) {
                println!("  redis: {line}");
            }
        }

        // Throughput: 64 callers at once for 3 s against the one Redis.
        let seconds = if full { 3.0 } else { 0.3 };
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let callers: Vec<_> = (0..64)
            .map(|_| {
                let key = shared_key.clone();
                tokio::spawn(async move {
                    let expected = Expected { output: 100, reasoning: 0 };
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        if let Ok(a) = key.admit(None, 120, expected).await {
                            key.settle(None, None, a.hold);
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for c in callers {
            total += c.await.unwrap();
        }
        println!(
            "throughput, 64 concurrent callers, {seconds} s: {:.0} admissions/s (each with its settlement) on one Redis",
            total as f64 / seconds
        );
        assert!(total > 0 && unavailable == 0.0, "every admission went through Redis");
    });
    drop(main_runtime);
    let _ = redis.kill();
    let _ = redis.wait();
}
