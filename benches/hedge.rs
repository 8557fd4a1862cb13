//! Hedging against a heavy latency tail: one model on two simulated deployments whose calls
//! each have a 3 % chance of a 300 ms wait before the first token (drawn per call, so a
//! hedge is slow only by its own draw). The same sequential requests run without hedging and
//! with `hedge_after = "p95"`, in one run; printed: p50, p99 and p99.9, their ratio, and the
//! extra upstream calls hedging cost.
//!
//! `cargo bench --bench hedge` (`HEDGE_REQUESTS`, default 2,000). Under `cargo test` it sends
//! a few requests through each config and checks they answer.

mod common;

use std::time::Duration;

use serde_json::json;
use thinkgate_config::Config;

use common::{post_with, HttpClient};

fn config(hedge: bool) -> String {
    let hedge = if hedge { "hedge_after = \"p95\"\n" } else { "" };
    format!(
        r#"
auth = "none"
[server]
listen = "127.0.0.1:0"
log_level = "error"
[routing]
default_model = "m"
[providers.s1]
kind = "simulator"
[providers.s1.retry]
{hedge}
[providers.s2]
kind = "simulator"
[providers.s2.retry]
{hedge}
[models.m]
context_window = 100000
balance = "least_in_flight"
deployments = [{{ provider = "s1" }}, {{ provider = "s2" }}]
[simulator.models.m]
reasoning = "none"
answer_tokens = 8
time_to_first_token = "10ms"
"#
    )
}

const TAIL: [(&str, &str); 2] = [("x-sim-tail-percent", "3"), ("x-sim-tail-ms", "300")];

/// Sequential requests: their latencies, sorted, and the upstream calls they took.
async fn run(hedge: bool, n: usize) -> (Vec<Duration>, f64) {
    let text = config(hedge);
    let config = Config::parse(&text, std::path::Path::new("hedge-bench.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let (url, client, _stop) = common::serve(config).await;
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("request {i}")}]});
        let (t, bytes) = post_with(&client, &url, &body, &TAIL).await;
        assert!(
            bytes.starts_with(b"{\"id\""),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        took.push(t);
    }
    took.sort();
    let calls = upstream_calls(&client, &url).await;
    (took, calls)
}

async fn upstream_calls(client: &HttpClient, chat_url: &str) -> f64 {
    use http_body_util::BodyExt;
    let url = chat_url.replace("/v1/chat/completions", "/metrics");
    let resp = client
        .get(url.parse().expect("url"))
        .await
        .expect("metrics");
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with("thinkgate_upstream_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    let (full, n) = common::size("HEDGE_REQUESTS", 2000, 30);
    let rt = common::runtime();
    rt.block_on(async move {
        let (plain, plain_calls) = run(false, n).await;
        let (hedged, hedged_calls) = run(true, n).await;
        if !full {
            return;
        }
        println!("hedging at the p95, {n} sequential requests, 3 % of calls wait 300 ms:");
        for (name, p) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            let (a, b) = (pct(&plain, p), pct(&hedged, p));
            println!(
                "  {name:>5}: no hedge {:>7.1} ms   hedged {:>7.1} ms   ratio {:.2}",
                a.as_secs_f64() * 1e3,
                b.as_secs_f64() * 1e3,
                b.as_secs_f64() / a.as_secs_f64()
            );
        }
        println!(
            "  upstream calls per request: no hedge {:.3}, hedged {:.3} (+{:.1} %)",
            plain_calls / n as f64,
            hedged_calls / n as f64,
            (hedged_calls / plain_calls - 1.0) * 100.0
        );
    });
}
