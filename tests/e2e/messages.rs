//! Anthropic's Messages API (`/v1/messages`, what Claude Code speaks) through the one request
//! path: the official `anthropic` SDK against a simulated Anthropic upstream (signed thinking
//! round-trips) and an OpenAI-format one (translated), errors in Anthropic's shape from every
//! stage, and the traffic in the metrics under its own endpoint.

use http::StatusCode;
use serde_json::{json, Value};

use crate::sdk::run_script;
use crate::support::*;

/// The built-in simulator (`sim-model`, OpenAI format) and `claude` behind a simulated
/// Anthropic API, which Claude Code's model names reach through the name map.
fn config(anthropic_url: &str, extra: &str) -> String {
    config_text(
        None,
        &format!(
            r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic_url}/v1"
api_key = "${{THINKGATE_TEST_ANTHROPIC_KEY}}"
forward_headers = ["x-sim-*"]

[models.claude]
provider = "anthropic"
upstream_model = "claude-opus-4-6"
context_window = 200000
capabilities = ["vision", "tools", "reasoning"]

[routing.model_names]
"claude-*" = "claude"
{extra}
"#
        ),
    )
}

async fn start(extra: &str, env: &[(&str, &str)]) -> (SimServer, Proxy) {
    let sim = SimServer::start().await;
    let mut env = env.to_vec();
    env.push(("THINKGATE_TEST_ANTHROPIC_KEY", "sk-ant-test"));
    let proxy = Proxy::start_with_env(&config(&sim.url(), extra), &env).await;
    (sim, proxy)
}

const CLAUDE: &str = "claude-sonnet-4-5-20250929";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_python_sdk() {
    let (_sim, proxy) = start("", &[]).await;
    run_script(
        &proxy,
        "anthropic_sdk.py",
        &[
            (
                "THINKGATE_MODELS",
                &format!("{CLAUDE}=signed,sim-model=translated"),
            ),
            ("THINKGATE_VISION", CLAUDE),
            ("THINKGATE_BUDGET", "5"),
        ],
    )
    .await;
    // The traffic is counted under its own endpoint, tokens and all.
    let metrics = get(&proxy.url("/metrics")).await.text();
    let sum = |needles: &[&str]| -> f64 {
        metrics
            .lines()
            .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let messages = "endpoint=\"messages\"";
    assert!(
        sum(&["thinkgate_requests_total{", messages, "status=\"200\""]) >= 10.0,
        "{metrics}"
    );
    assert!(sum(&["thinkgate_request_duration_seconds_count{", messages]) >= 10.0);
    let counted = "endpoint=\"messages_count_tokens\",mode=\"default\",model=\"claude\"";
    assert!(
        sum(&["thinkgate_requests_total{", counted]) >= 1.0,
        "{metrics}"
    );
    for kind in ["prompt", "output", "reasoning"] {
        let kind = format!("kind=\"{kind}\"");
        assert!(
            sum(&["thinkgate_tokens_total{", &kind, "model=\"claude\""]) > 0.0,
            "{kind}"
        );
    }
}

fn messages_body(model: &str, stream: bool) -> String {
    json!({"model": model, "max_tokens": 256, "stream": stream,
           "messages": [{"role": "user", "content": "What is two plus two?"}]})
    .to_string()
}

/// Anthropic's `{"type": "error", "error": {type, message}}`, checked and returned.
fn anthropic_error(r: &Reply, status: u16, kind: &str) -> Value {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_refuses_in_anthropics_shape() {
    let keyed = "[keys.agent]\nsecret = \"${TG_AGENT_KEY}\"\nrequests_per_minute = 3\nburst = 3\n";
    let sim = SimServer::start().await;
    let text = config(&sim.url(), keyed).replace("auth = \"none\"\n", "");
    let env = [
        ("TG_AGENT_KEY", "tg-agent-0123456789"),
        ("THINKGATE_TEST_ANTHROPIC_KEY", "sk-ant-test"),
    ];
    let proxy = Proxy::start_with_env(&text, &env).await;
    let url = proxy.url("/v1/messages");
    let key = [("x-api-key", "tg-agent-0123456789")];

    // Authentication, before any handler.
    let r = call(&url, messages_body(CLAUDE, false), &[]).await;
    anthropic_error(&r, 401, "authentication_error");
    let r = call(
        &url,
        messages_body(CLAUDE, false),
        &[("x-api-key", "wrong")],
    )
    .await;
    anthropic_error(&r, 401, "authentication_error");
    // Ingress: malformed JSON, and a field the chat path cannot carry.
    let r = call(&url, "{\"model\": ", &key).await;
    anthropic_error(&r, 400, "invalid_request_error");
    let bad = json!({"model": CLAUDE, "max_tokens": 5, "mcp_servers": [{"url": "x"}],
                     "messages": [{"role": "user", "content": "x"}]});
    let v = anthropic_error(
        &call(&url, bad.to_string(), &key).await,
        400,
        "invalid_request_error",
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("mcp_servers"),
        "{v}"
    );
    // The plan: a model nobody serves.
    let r = call(&url, messages_body("gpt-nothing", false), &key).await;
    anthropic_error(&r, 404, "not_found_error");
    // The upstream: an overloaded API (Anthropic's 529, or a 503) is Anthropic's 529
    // `overloaded_error`, which its clients retry.
    for status in ["529", "503"] {
        let r = call(
            &url,
            messages_body(CLAUDE, false),
            &[key[0], ("x-sim-status", status)],
        )
        .await;
        anthropic_error(&r, 529, "overloaded_error");
    }
    // The key's rate limit: the 429 keeps its Retry-After.
    let mut limited = None;
    for _ in 0..6 {
        let r = call(&url, messages_body(CLAUDE, false), &key).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the key's limit of 3 per minute held");
    anthropic_error(&r, 429, "rate_limit_error");
    assert!(!r.header("retry-after").is_empty());
    // An unknown path under the API.
    let r = call(&proxy.url("/v1/messages/batches"), "{}", &key).await;
    anthropic_error(&r, 404, "not_found_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_ends_with_an_error_event_not_message_stop() {
    let (_sim, proxy) = start("", &[]).await;
    let url = proxy.url("/v1/messages");
    for model in [CLAUDE, "sim-model"] {
        let r = call(
            &url,
            messages_body(model, true),
            &[("x-sim-reset-after", "3")],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let text = r.text();
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(
            text.contains("\nevent: error\ndata: {\"type\":\"error\""),
            "{model}: {text}"
        );
        assert!(!text.contains("message_stop"), "{model}: {text}");
        // A whole stream, by contrast, ends with message_delta and message_stop.
        let r = call(&url, messages_body(model, true), &[]).await;
        let text = r.text();
        assert!(
            text.trim_end()
                .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_upstream_gets_the_request_as_sent() {
    let upstream = FixedUpstream::start(
        "application/json",
        include_str!("../golden/anthropic/response.anthropic.json"),
    )
    .await;
    let text = config(&upstream.url(), "");
    let proxy =
        Proxy::start_with_env(&text, &[("THINKGATE_TEST_ANTHROPIC_KEY", "sk-ant-test")]).await;
    let sent = json!({
        "model": CLAUDE, "max_tokens": 512,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is two plus two?", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ]}]
    });
    let beta = "context-management-2025-06-27,prompt-caching-scope-2026-01-05";
    let r = call(
        &proxy.url("/v1/messages?beta=true"),
        sent.to_string(),
        &[
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", beta),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["type"], "message");
    let (path, headers, body) = upstream.last();
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["anthropic-beta"], beta);
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["x-api-key"], "sk-ant-test");
    // Everything the client sent, but the model, which is the configured upstream name.
    let mut expected = sent.clone();
    expected["model"] = json!("claude-opus-4-6");
    assert_eq!(body, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_cache_reads_and_writes_are_reported_and_counted() {
    let (_sim, proxy) = start("", &[]).await;
    let url = proxy.url("/v1/messages");
    let long = "You answer arithmetic questions. ".repeat(50);
    let body = |stream: bool| {
        json!({"model": CLAUDE, "max_tokens": 256, "stream": stream,
               "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": "What is two plus two?"}]})
        .to_string()
    };
    let first = call(&url, body(false), &[]).await.json();
    let written = first["usage"]["cache_creation_input_tokens"]
        .as_u64()
        .unwrap();
    assert!(written > 100, "{first}");
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    let second = call(&url, body(false), &[]).await.json();
    assert_eq!(
        second["usage"]["cache_read_input_tokens"], written,
        "{second}"
    );
    assert_eq!(second["usage"]["cache_creation_input_tokens"], 0);
    // input_tokens leave the cached part out, as Anthropic's do.
    assert!(
        second["usage"]["input_tokens"].as_u64().unwrap() < 30,
        "{second}"
    );
    // Streamed: the final message_delta carries the same figures.
    let text = call(&url, body(true), &[]).await.text();
    let delta = text
        .split("\n\n")
        .find(|f| f.starts_with("event: message_delta"))
        .and_then(|f| f.split_once("data: "))
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap())
        .expect("a message_delta");
    assert_eq!(
        delta["usage"]["cache_read_input_tokens"], written,
        "{delta}"
    );
    // And the metrics count both kinds, as parts of the prompt.
    let metrics = get(&proxy.url("/metrics")).await.text();
    let count = |kind: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("thinkgate_tokens_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains("model=\"claude\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("cache_write"), written as f64, "{metrics}");
    assert_eq!(count("cache_read"), 2.0 * written as f64, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_model_is_described_by_id_mapped_names_included() {
    let (_sim, proxy) = start("", &[]).await;
    let v = get(&proxy.url("/v1/models/sim-model")).await.json();
    assert_eq!(
        v,
        json!({"id": "sim-model", "object": "model", "created": v["created"], "owned_by": "sim"})
    );
    let v = get(&proxy.url(&format!("/v1/models/{CLAUDE}")))
        .await
        .json();
    assert_eq!(
        (v["id"].as_str(), v["owned_by"].as_str()),
        (Some(CLAUDE), Some("thinkgate"))
    );
    let r = get(&proxy.url("/v1/models/auto:thinking")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&proxy.url("/v1/models/gpt-nothing")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error()["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contemplating_streams_its_progress_as_a_thinking_block() {
    let (_sim, proxy) = start("", &[]).await;
    let body = json!({"model": "sim-model:contemplating", "max_tokens": 1024, "stream": true,
                      "messages": [{"role": "user", "content": "Is 1001 prime?"}]});
    let text = call(&proxy.url("/v1/messages"), body.to_string(), &[])
        .await
        .text();
    let frames: Vec<Value> = text
        .split("\n\n")
        .filter_map(|f| f.split_once("data: "))
        .filter_map(|(_, d)| serde_json::from_str(d).ok())
        .collect();
    let starts: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "content_block_start")
        .filter_map(|f| f["content_block"]["type"].as_str())
        .collect();
    assert_eq!(starts, ["thinking", "text"], "{text}");
    let progress: String = frames
        .iter()
        .filter_map(|f| f["delta"]["thinking"].as_str())
        .collect();
    assert!(progress.starts_with("Contemplating with"), "{progress}");
    assert_eq!(frames.last().unwrap()["type"], "message_stop");
}
