//! Criterion benches for the per-request and per-chunk work of the proxy.
//!
//! `cargo bench --bench hot_path`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use thinkgate_config::Config;
use thinkgate_proxy::body;
use thinkgate_proxy::egress;
use thinkgate_proxy::ingress::parse_chat;
use thinkgate_proxy::providers::openai::request_body;
use thinkgate_proxy::Runtime;

fn typical_request() -> Vec<u8> {
    serde_json::json!({
        "model": "muse-spark",
        "stream": true,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a careful assistant. Answer briefly and cite sources."},
            {"role": "user", "content": "Compare the time complexity of merge sort and quicksort, and say when each is preferable."},
            {"role": "assistant", "content": "Merge sort is O(n log n) in all cases; quicksort averages O(n log n) but degrades to O(n^2)."},
            {"role": "user", "content": "And for nearly sorted input with many duplicates?"}
        ],
        "metadata": {"team": "search"}
    })
    .to_string()
    .into_bytes()
}

fn chunk(i: usize) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"system_fingerprint\":\"fp\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
    )
}

fn bench(c: &mut Criterion) {
    let req = typical_request();
    let mut g = c.benchmark_group("ingress");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("parse_chat_request", |b| {
        b.iter(|| parse_chat(&req).unwrap())
    });
    let parsed = parse_chat(&req).unwrap();
    g.bench_function("upstream_request_body", |b| {
        b.iter(|| request_body(&parsed, "upstream-name"))
    });
    g.finish();

    let cfg = Config::parse(
        include_str!("../config/demo.toml"),
        "demo.toml".as_ref(),
        &|_| None,
    )
    .unwrap();
    let runtime = Runtime::build(cfg).unwrap();
    let route = runtime.route("muse-spark").unwrap().clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    const CHUNKS: usize = 256;
    let upstream: Vec<Bytes> = (0..CHUNKS)
        .map(|i| Bytes::from(chunk(i)))
        .chain(std::iter::once(Bytes::from_static(b"data: [DONE]\n\n")))
        .collect();
    let mut g = c.benchmark_group("egress");
    g.throughput(Throughput::Elements(CHUNKS as u64));
    g.bench_function("relay_sse_chunk", |b| {
        b.iter_batched(
            || upstream.clone(),
            |frames| {
                rt.block_on(async {
                    let body = body::stream(futures_util::stream::iter(frames.into_iter().map(Ok)));
                    let ctx = egress::Context {
                        request_id: HeaderValue::from_static("bench"),
                        route: Arc::clone(&route),
                        include_usage: true,
                        started: Instant::now(),
                        request_timeout: std::time::Duration::from_secs(60),
                    };
                    let mut out = egress::stream(ctx, Response::new(body)).into_body();
                    let mut n = 0;
                    while let Some(f) = out.frame().await {
                        n += f.unwrap().into_data().map_or(0, |d| d.len());
                    }
                    n
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
