//! Routing `auto`: the best-scoring model that fits, by each domain's policy, with the next
//! ones as fallbacks when the first fails before its first byte.

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// Four simulated models with published-looking scores; `flaky` always fails with 503.
fn config(extra: &str) -> String {
    config_text(
        None,
        &format!(
            r#"
[providers.s2]
kind = "simulator"
forward_headers = ["x-sim-*"]

[models.coder]
provider = "s2"
context_window = 100000
capabilities = ["tools", "reasoning"]
scores = {{ general = 50, coding = 80, health = 30 }}
output_tokens_mtok = 120

[models.medic]
provider = "s2"
context_window = 100000
capabilities = ["vision", "reasoning"]
scores = {{ general = 48, health = 45, coding = 60 }}
output_tokens_mtok = 58

[models.tiny]
provider = "s2"
context_window = 300
capabilities = ["tools"]
scores = {{ general = 40, coding = 90 }}
output_tokens_mtok = 20

[models.flaky]
provider = "s2"
upstream_model = "flaky-up"
context_window = 100000
capabilities = ["vision", "tools", "reasoning"]
scores = {{ general = 40, shopping = 99 }}

[simulator.models.flaky-up]
fault_status = 503
{extra}"#
        ),
    )
}

fn ask(text: &str) -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": text}]})
}

async fn route(proxy: &Proxy, body: Value) -> Reply {
    call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_best_scoring_model_that_fits_answers() {
    let proxy = Proxy::start(&config("")).await;
    let r = route(
        &proxy,
        ask("My doctor prescribed 20 mg of atorvastatin, can I take it with grapefruit juice?"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-thinkgate-domain"), "health");
    assert_eq!(r.header("x-thinkgate-model"), "medic");
    let confidence: f64 = r.header("x-thinkgate-route-confidence").parse().unwrap();
    assert!(confidence > 0.35 && confidence <= 1.0);
    // The response names the upstream model that answered.
    assert_eq!(r.json()["model"], "medic");

    // `tiny` scores best at coding but its 300-token window cannot hold prompt + budget.
    let r = route(
        &proxy,
        ask("Write a Python function that merges two sorted lists."),
    )
    .await;
    assert_eq!(r.header("x-thinkgate-domain"), "coding");
    assert_eq!(
        r.header("x-thinkgate-model"),
        "tiny",
        "a short request fits the small window"
    );
    let long = format!(
        "Refactor this Python code: {}",
        "x = compute(x) + 1\n".repeat(80)
    );
    let r = route(&proxy, ask(&long)).await;
    assert_eq!(r.header("x-thinkgate-model"), "coder", "too long for tiny");
    // An image only goes to a model with vision; tools only to one with tools.
    let image = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]});
    let r = route(&proxy, image).await;
    assert_eq!(
        (
            r.header("x-thinkgate-domain"),
            r.header("x-thinkgate-model")
        ),
        ("vision", "medic")
    );
    let mut tools = ask("Book me a table for two tonight");
    tools["tools"] = json!([{"type": "function", "function": {"name": "book"}}]);
    let r = route(&proxy, tools).await;
    assert_eq!(r.header("x-thinkgate-domain"), "agentic");
    assert_eq!(r.header("x-thinkgate-model"), "coder");
    // Without tools the same text may go to medic, the next best at general; with them it
    // cannot, since medic has no tools capability.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_the_first_byte_is_retried_then_moves_to_the_next_model() {
    // `flaky` leads shopping (and overall) but always answers 503: after its retry, the next
    // model answers.
    let text = config("").replace("general = 40, shopping = 99", "general = 70, shopping = 99");
    let proxy = Proxy::start(&text).await;
    let r = route(
        &proxy,
        ask("Which robot vacuum should I buy for a small flat?"),
    )
    .await;
    assert_eq!(r.header("x-thinkgate-domain"), "shopping");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-thinkgate-fallback-from"), "flaky");
    assert_ne!(r.header("x-thinkgate-model"), "flaky");
    // Two tries per request (the default retry policy): five failures in a row, during the
    // third request, open its circuit breaker, and it is left out until it is probed again.
    for _ in 0..2 {
        let r = route(&proxy, ask("Best budget headphones to buy?")).await;
        assert_eq!(r.header("x-thinkgate-fallback-from"), "flaky");
    }
    let r = route(&proxy, ask("Which smartwatch should I buy?")).await;
    assert_eq!(r.header("x-thinkgate-fallback-from"), "", "no longer tried");
    let m = get(&proxy.url("/metrics")).await.text();
    assert!(m.contains("thinkgate_upstream_requests_total{model=\"flaky\",outcome=\"error_status\",provider=\"s2\"} 5"), "{m}");
    assert!(m.contains("thinkgate_upstream_retries_total{model=\"flaky\",provider=\"s2\",reason=\"status_5xx\"} 2"), "{m}");
    assert!(
        m.contains("thinkgate_circuit_breaker_state{model=\"flaky\",provider=\"s2\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_choose_best_efficient_or_a_fixed_order() {
    // general: coder 50, medic 48, tiny 40, flaky 40. Best: coder. Efficient within 15
    // points, by output tokens: tiny (40 / 20 M) beats medic (48 / 58 M) and coder (50 / 120 M).
    let proxy = Proxy::start(&config("")).await;
    let poem = ask("Write a short poem about the sea.");
    let r = route(&proxy, poem.clone()).await;
    assert_eq!(r.header("x-thinkgate-domain"), "general");
    assert_eq!(r.header("x-thinkgate-model"), "coder");

    let efficient = config("").replace("[routing]\n", "[routing]\nefficient_margin = 15.0\n")
        + "\n[routing.policies]\ngeneral = \"efficient\"\ncoding = \"efficient\"\nhealth = [\"coder\", \"medic\"]\n";
    let proxy = Proxy::start(&efficient).await;
    let r = route(&proxy, poem).await;
    assert_eq!(r.header("x-thinkgate-model"), "tiny");
    let long = format!(
        "Refactor this Python code: {}",
        "x = compute(x) + 1\n".repeat(80)
    );
    // coding within 15 of the best that fits (coder 80): medic (60) is out, coder stays.
    let r = route(&proxy, ask(&long)).await;
    assert_eq!(r.header("x-thinkgate-model"), "coder");
    // A fixed order wins over scores.
    let r = route(
        &proxy,
        ask("I have had a headache and a fever for three days."),
    )
    .await;
    assert_eq!(
        (
            r.header("x-thinkgate-domain"),
            r.header("x-thinkgate-model")
        ),
        ("health", "coder")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_model_can_take_is_refused_with_every_reason() {
    let proxy =
        Proxy::start(&config("").replace("context_window = 100000", "context_window = 2000")).await;
    let huge = "word ".repeat(3_000);
    let r = route(&proxy, ask(&huge)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = r.error();
    assert_eq!(e["code"], "no_model_fits");
    let message = e["message"].as_str().unwrap();
    for model in ["coder", "medic", "tiny", "flaky"] {
        assert!(
            message.contains(&format!("{model}: context window")),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_when_every_model_is_down_is_a_503_not_a_client_error() {
    // The ranked models' provider has no key in the environment: each is left out as down.
    let text = config("").replace(
        "[providers.s2]\nkind = \"simulator\"",
        "[providers.s2]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"${TG_ROUTING_UNSET_KEY}\"",
    );
    let proxy = Proxy::start(&text).await;
    let r = route(&proxy, ask("Write a haiku about the sea.")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let e = r.error();
    assert_eq!(e["code"], "no_healthy_model", "{e}");
    assert!(e["message"].as_str().unwrap().contains("unusable"), "{e}");
}
