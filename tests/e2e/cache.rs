//! The exact response cache: a deterministic request asked twice is a miss then a hit
//! (whole, streamed, through every front end and in contemplating mode) that calls no
//! upstream, has its own id and the original usage, spends nothing against the key's
//! limits, and is counted in the savings metrics; random sampling bypasses it unless the
//! client opts in; `cache-control` is honoured; entries are per key unless shared; TTL
//! expiry on the cache's clock; an answer over `max_entry_bytes` is not kept; embeddings
//! are cached whatever the client's sampling (they always repeat).

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const SECRET: &str = "tg-cache-secret-0123456789abcdef";
const OTHER: &str = "tg-cache-other-fedcba9876543210";

/// A priced model on the simulator, two keys, and `[cache]` with `cache` added.
fn config(cache: &str, alpha_limits: &str) -> String {
    config_text(None, "").replace("auth = \"none\"\n", "")
        + &format!(
            r#"
[models.priced]
provider = "sim"
context_window = 100000
capabilities = ["reasoning"]
price_input_per_mtok = 2.0
price_output_per_mtok = 10.0

[models.embed]
provider = "sim"
upstream_model = "sim-embed"
context_window = 8192
capabilities = ["embeddings"]

[keys.alpha]
secret = "${{ALPHA}}"
{alpha_limits}

[keys.beta]
secret = "${{BETA}}"

[cache]
enabled = true
{cache}
"#
        )
}

async fn start(cache: &str, alpha_limits: &str) -> Proxy {
    Proxy::start_with_env(
        &config(cache, alpha_limits),
        &[("ALPHA", SECRET), ("BETA", OTHER)],
    )
    .await
}

fn body(model: &str, stream: bool, extra: Value) -> String {
    let mut b = json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "What is two plus two?"}],
        "temperature": 0,
    });
    if stream {
        b["stream_options"] = json!({"include_usage": true});
    }
    for (k, v) in extra.as_object().into_iter().flatten() {
        b[k] = v.clone();
    }
    b.to_string()
}

async fn ask_as(proxy: &Proxy, secret: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {secret}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    call(&proxy.url("/v1/chat/completions"), body.to_string(), &all).await
}

async fn ask(proxy: &Proxy, body: &str, headers: &[(&str, &str)]) -> Reply {
    ask_as(proxy, SECRET, body, headers).await
}

fn upstream_calls(proxy: &Proxy) -> u64 {
    proxy.sim_stats()["started"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_answer_is_a_hit_with_its_own_id_and_the_original_usage() {
    let proxy = start("", "").await;
    let req = body("sim-model", false, json!({}));
    let first = ask(&proxy, &req, &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.header("x-thinkgate-cache"), "miss");
    let second = ask(&proxy, &req, &[]).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("x-thinkgate-cache"), "hit");
    assert_eq!(upstream_calls(&proxy), 1, "the hit called no upstream");
    let (a, b) = (first.json(), second.json());
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(
        a["usage"], b["usage"],
        "the usage block is the original call's"
    );
    assert_ne!(a["id"], b["id"], "a hit has its own id");
    assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(b["thinkgate"]["cache"]["status"], "hit");
    assert_eq!(b["thinkgate"]["cache"]["scope"], "key");
    assert!(a.get("thinkgate").is_none_or(|t| t.get("cache").is_none()));
    assert_eq!(
        first.header("x-thinkgate-model"),
        second.header("x-thinkgate-model")
    );
    assert!(second.header("age").parse::<u64>().is_ok());
    // Another key asks upstream.
    let other = ask_as(&proxy, OTHER, &req, &[]).await;
    assert_eq!(other.header("x-thinkgate-cache"), "miss");
    assert_eq!(upstream_calls(&proxy), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_replayed_whole_with_identical_content() {
    let proxy = start("", "").await;
    let req = body("sim-model", true, json!({}));
    let first = ask(&proxy, &req, &[]).await;
    assert_eq!(first.header("x-thinkgate-cache"), "miss");
    let second = ask(&proxy, &req, &[]).await;
    assert_eq!(second.header("x-thinkgate-cache"), "hit");
    assert!(second
        .header("content-type")
        .starts_with("text/event-stream"));
    assert_eq!(upstream_calls(&proxy), 1);
    let (a, b) = (first.streamed(), second.streamed());
    assert!(a.done && b.done);
    assert_eq!(a.text("content"), b.text("content"));
    assert_eq!(a.text("reasoning_content"), b.text("reasoning_content"));
    assert_eq!(a.usage(), b.usage());
    assert_eq!(a.chunks.len(), b.chunks.len());
    let id = &b.chunks[0]["id"];
    assert_ne!(id, &a.chunks[0]["id"]);
    assert!(
        b.chunks.iter().all(|c| &c["id"] == id),
        "every chunk has the hit's id"
    );
    let notes: Vec<_> = b
        .chunks
        .iter()
        .filter(|c| c["thinkgate"]["cache"]["status"] == "hit")
        .collect();
    assert_eq!(notes.len(), 1, "one chunk says it is a hit");
    // A stream and a whole answer to the same messages are different entries.
    let whole = ask(&proxy, &body("sim-model", false, json!({})), &[]).await;
    assert_eq!(whole.header("x-thinkgate-cache"), "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_repeatable_sampling_or_an_opt_in_is_cached_and_cache_control_is_honoured() {
    let proxy = start("", "").await;
    let random = body("sim-model", false, json!({"temperature": 0.7}));
    for _ in 0..2 {
        let r = ask(&proxy, &random, &[]).await;
        assert_eq!(r.header("x-thinkgate-cache"), "bypass");
    }
    assert_eq!(upstream_calls(&proxy), 2);
    let opted = [("x-thinkgate-cache", "on")];
    assert_eq!(
        ask(&proxy, &random, &opted)
            .await
            .header("x-thinkgate-cache"),
        "miss"
    );
    assert_eq!(
        ask(&proxy, &random, &opted)
            .await
            .header("x-thinkgate-cache"),
        "hit"
    );
    let seeded = body("sim-model", false, json!({"temperature": 1, "seed": 42}));
    assert_eq!(
        ask(&proxy, &seeded, &[]).await.header("x-thinkgate-cache"),
        "miss"
    );
    assert_eq!(
        ask(&proxy, &seeded, &[]).await.header("x-thinkgate-cache"),
        "hit"
    );
    let calls = upstream_calls(&proxy);
    let off = [("x-thinkgate-cache", "off")];
    assert_eq!(
        ask(&proxy, &seeded, &off).await.header("x-thinkgate-cache"),
        "bypass"
    );
    let no_store = [("cache-control", "no-store")];
    assert_eq!(
        ask(&proxy, &seeded, &no_store)
            .await
            .header("x-thinkgate-cache"),
        "bypass"
    );
    // no-cache asks upstream and keeps the new answer, which the next request gets.
    let no_cache = [("cache-control", "no-cache")];
    let fresh = ask(&proxy, &seeded, &no_cache).await;
    assert_eq!(fresh.header("x-thinkgate-cache"), "miss");
    assert_eq!(upstream_calls(&proxy), calls + 3);
    let after = ask(&proxy, &seeded, &[]).await;
    assert_eq!(after.header("x-thinkgate-cache"), "hit");
    assert_eq!(after.json()["choices"], fresh.json()["choices"]);
    // A value the proxy does not know is an error naming the header.
    let bad = ask(&proxy, &seeded, &[("x-thinkgate-cache", "maybe")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error()["param"], "x-thinkgate-cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_cache_answers_every_key() {
    let proxy = start("scope = \"shared\"", "").await;
    let req = body("sim-model", false, json!({}));
    assert_eq!(
        ask(&proxy, &req, &[]).await.header("x-thinkgate-cache"),
        "miss"
    );
    let other = ask_as(&proxy, OTHER, &req, &[]).await;
    assert_eq!(other.header("x-thinkgate-cache"), "hit");
    assert_eq!(other.json()["thinkgate"]["cache"]["scope"], "shared");
    assert_eq!(upstream_calls(&proxy), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_spends_nothing_against_the_keys_limits() {
    // Two requests a minute, and 10 output tokens a day: the first answer spends them.
    let proxy = start("", "requests_per_minute = 2\noutput_tokens_per_day = 10").await;
    let req = body("sim-model", false, json!({}));
    let first = ask(&proxy, &req, &[]).await;
    assert_eq!(first.header("x-thinkgate-cache"), "miss");
    for _ in 0..5 {
        let hit = ask(&proxy, &req, &[]).await;
        assert_eq!(hit.status, StatusCode::OK, "{}", hit.text());
        assert_eq!(hit.header("x-thinkgate-cache"), "hit");
        assert_eq!(hit.header("x-ratelimit-remaining-requests"), "");
    }
    // The quota is spent by the one call that reached upstream, and only by it.
    let other = body("sim-model", false, json!({"seed": 9}));
    let refused = ask(&proxy, &other, &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text()
    );
    assert!(refused.error()["message"]
        .as_str()
        .unwrap()
        .contains("output tokens per day"));
    assert_eq!(upstream_calls(&proxy), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_savings_metrics_equal_the_usage_of_the_cached_calls() {
    let proxy = start("", "").await;
    let req = body("priced", false, json!({}));
    let first = ask(&proxy, &req, &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let usage = first.json()["usage"].clone();
    let before = get(&proxy.url("/metrics")).await.text();
    for _ in 0..3 {
        assert_eq!(
            ask(&proxy, &req, &[]).await.header("x-thinkgate-cache"),
            "hit"
        );
    }
    let after = get(&proxy.url("/metrics")).await.text();
    let n = |v: &Value| v.as_u64().unwrap() as f64;
    let saved = |kind| {
        series(
            &after,
            "thinkgate_cache_saved_tokens_total",
            &[("model", "priced"), ("kind", kind)],
        )
    };
    assert_eq!(saved("prompt"), 3.0 * n(&usage["prompt_tokens"]));
    assert_eq!(saved("output"), 3.0 * n(&usage["completion_tokens"]));
    assert_eq!(
        saved("reasoning"),
        3.0 * n(&usage["completion_tokens_details"]["reasoning_tokens"])
    );
    let usd = series(
        &after,
        "thinkgate_cache_saved_usd_total",
        &[("model", "priced")],
    );
    let cost = n(&usage["prompt_tokens"]) * 2e-6 + n(&usage["completion_tokens"]) * 10e-6;
    assert!((usd - 3.0 * cost).abs() < 1e-12, "{usd} vs {}", 3.0 * cost);
    let lookups = |r| {
        series(
            &after,
            "thinkgate_cache_lookups_total",
            &[("endpoint", "chat_completions"), ("result", r)],
        )
    };
    assert_eq!((lookups("hit"), lookups("miss")), (3.0, 1.0));
    // Hits spend no tokens: the token counters did not move.
    let spent = |m: &str| series(m, "thinkgate_tokens_total", &[("model", "priced")]);
    assert_eq!(spent(&before), spent(&after));
    assert!(series(&after, "thinkgate_cache_bytes", &[]) > 0.0);
    assert_eq!(series(&after, "thinkgate_cache_entries", &[]), 1.0);
    assert_eq!(
        series(
            &after,
            "thinkgate_cache_stores_total",
            &[("outcome", "stored")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_expires_after_its_ttl_on_the_cache_clock() {
    let proxy = start("ttl = \"10m\"", "").await;
    let req = body("sim-model", false, json!({}));
    assert_eq!(
        ask(&proxy, &req, &[]).await.header("x-thinkgate-cache"),
        "miss"
    );
    let clock = || {
        let runtime = proxy.runtime.load_full();
        runtime.cache.clone().unwrap()
    };
    clock().clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(
        ask(&proxy, &req, &[]).await.header("x-thinkgate-cache"),
        "hit"
    );
    clock().clock.advance(Duration::from_secs(61));
    assert_eq!(
        ask(&proxy, &req, &[]).await.header("x-thinkgate-cache"),
        "miss"
    );
    assert_eq!(upstream_calls(&proxy), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_max_entry_bytes_or_a_failed_one_is_not_kept() {
    let proxy = start("max_entry_bytes = 2048", "").await;
    let big = body("sim-model", false, json!({}));
    let long = [("x-sim-answer-tokens", "600")];
    for _ in 0..2 {
        let r = ask(&proxy, &big, &long).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-thinkgate-cache"), "miss");
        assert!(r.body.len() > 2048);
    }
    let failing = body("sim-model", true, json!({"seed": 3}));
    let broken = [("x-sim-reset-after", "2")];
    let r = ask(&proxy, &failing, &broken).await;
    assert!(r.text().contains("upstream_stream_broken"), "{}", r.text());
    let metrics = get(&proxy.url("/metrics")).await.text();
    let stores = |o| series(&metrics, "thinkgate_cache_stores_total", &[("outcome", o)]);
    assert_eq!(stores("too_large"), 2.0);
    assert_eq!(stores("incomplete"), 1.0, "the broken stream");
    assert_eq!(stores("stored"), 0.0, "{metrics}");
    assert_eq!(series(&metrics, "thinkgate_cache_entries", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_end_and_contemplating_mode_go_through_the_cache() {
    let proxy = start("", "").await;
    let auth = format!("Bearer {SECRET}");
    let headers = [
        ("authorization", auth.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    let message = json!({"model": "sim-model", "max_tokens": 256, "temperature": 0,
        "messages": [{"role": "user", "content": "Name a prime number."}]})
    .to_string();
    let url = proxy.url("/v1/messages");
    let a = call(&url, message.clone(), &headers).await;
    let b = call(&url, message, &headers).await;
    assert_eq!(
        (a.header("x-thinkgate-cache"), b.header("x-thinkgate-cache")),
        ("miss", "hit")
    );
    assert_eq!(a.json()["content"], b.json()["content"]);
    assert_ne!(a.json()["id"], b.json()["id"]);
    assert!(b.json()["id"].as_str().unwrap().starts_with("msg_"));

    // Streamed through the Messages API: the replay is translated like any stream.
    let streamed =
        json!({"model": "sim-model", "max_tokens": 256, "temperature": 0, "stream": true,
        "messages": [{"role": "user", "content": "Name an even prime."}]})
        .to_string();
    let a = call(&url, streamed.clone(), &headers).await;
    let b = call(&url, streamed, &headers).await;
    assert_eq!(
        (a.header("x-thinkgate-cache"), b.header("x-thinkgate-cache")),
        ("miss", "hit")
    );
    let text = |r: &Reply| -> String {
        sse_events(&r.text())
            .iter()
            .filter(|(name, _)| name == "content_block_delta")
            .filter_map(|(_, e)| e["delta"]["text"].as_str().map(str::to_string))
            .collect()
    };
    assert!(!text(&a).is_empty(), "{}", a.text());
    assert_eq!(text(&a), text(&b));
    assert!(b.text().contains("message_stop"), "{}", b.text());
    let calls_so_far = upstream_calls(&proxy);

    let response =
        json!({"model": "sim-model", "input": "Name a colour.", "temperature": 0}).to_string();
    let url = proxy.url("/v1/responses");
    let a = call(&url, response.clone(), &headers[..1]).await;
    let b = call(&url, response, &headers[..1]).await;
    assert_eq!(
        (a.header("x-thinkgate-cache"), b.header("x-thinkgate-cache")),
        ("miss", "hit")
    );
    assert_eq!(output_text(&a.json()), output_text(&b.json()));
    assert!(!output_text(&a.json()).is_empty());
    assert_ne!(a.json()["id"], b.json()["id"]);
    assert_eq!(upstream_calls(&proxy), calls_so_far + 1);
    // And streamed through the Responses API.
    let streamed =
        json!({"model": "sim-model", "input": "Name a shape.", "temperature": 0, "stream": true})
            .to_string();
    let a = call(&url, streamed.clone(), &headers[..1]).await;
    let b = call(&url, streamed, &headers[..1]).await;
    assert_eq!(
        (a.header("x-thinkgate-cache"), b.header("x-thinkgate-cache")),
        ("miss", "hit")
    );
    let deltas = |r: &Reply| -> String {
        sse_events(&r.text())
            .iter()
            .filter(|(name, _)| name == "response.output_text.delta")
            .filter_map(|(_, e)| e["delta"].as_str().map(str::to_string))
            .collect()
    };
    assert!(!deltas(&a).is_empty(), "{}", a.text());
    assert_eq!(deltas(&a), deltas(&b));
    assert!(b.text().contains("response.completed"), "{}", b.text());
    assert_eq!(upstream_calls(&proxy), calls_so_far + 2);

    let contemplating = body("sim-model:contemplating", false, json!({}));
    let a = ask(&proxy, &contemplating, &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let calls = upstream_calls(&proxy);
    assert!(calls > 3, "agents and a synthesis");
    let b = ask(&proxy, &contemplating, &[]).await;
    assert_eq!(
        (a.header("x-thinkgate-cache"), b.header("x-thinkgate-cache")),
        ("miss", "hit")
    );
    assert_eq!(a.json()["choices"], b.json()["choices"]);
    assert_eq!(upstream_calls(&proxy), calls);
}

/// The text of a Responses API object's output messages.
fn output_text(response: &Value) -> String {
    let items = response["output"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_is_cached_whatever_the_sampling() {
    let proxy = start("", "").await;
    let auth = format!("Bearer {SECRET}");
    let url = proxy.url("/v1/embeddings");
    let req = json!({"model": "embed", "input": ["the quick brown fox", "a lazy dog"]}).to_string();
    let a = call(&url, req.clone(), &[("authorization", &auth)]).await;
    let b = call(&url, req.clone(), &[("authorization", &auth)]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        (a.header("x-thinkgate-cache"), b.header("x-thinkgate-cache")),
        ("miss", "hit")
    );
    assert_eq!(a.json()["data"], b.json()["data"]);
    assert_eq!(a.json()["usage"], b.json()["usage"]);
    assert_eq!(b.json()["thinkgate"]["cache"]["status"], "hit");
    let upstream = |m: &str| {
        series(
            m,
            "thinkgate_upstream_requests_total",
            &[("model", "embed")],
        )
    };
    assert_eq!(
        upstream(&get(&proxy.url("/metrics")).await.text()),
        1.0,
        "the hit called no upstream"
    );
    let other =
        json!({"model": "embed", "input": ["the quick brown fox", "a lazy dog"], "dimensions": 8})
            .to_string();
    assert_eq!(
        call(&url, other, &[("authorization", &auth)])
            .await
            .header("x-thinkgate-cache"),
        "miss"
    );
    let no_store = [
        ("authorization", auth.as_str()),
        ("cache-control", "no-store"),
    ];
    assert_eq!(
        call(&url, req, &no_store).await.header("x-thinkgate-cache"),
        "bypass"
    );
    let metrics = get(&proxy.url("/metrics")).await.text();
    let saved = series(
        &metrics,
        "thinkgate_cache_saved_tokens_total",
        &[("model", "embed"), ("kind", "prompt")],
    );
    assert_eq!(
        saved,
        a.json()["usage"]["prompt_tokens"].as_u64().unwrap() as f64
    );
    let lookups = |r| {
        series(
            &metrics,
            "thinkgate_cache_lookups_total",
            &[("endpoint", "embeddings"), ("result", r)],
        )
    };
    assert_eq!(
        (lookups("hit"), lookups("miss"), lookups("bypass")),
        (1.0, 2.0, 1.0)
    );
}
