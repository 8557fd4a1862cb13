//! The Anthropic Messages adapter: wire translation against golden files, and round trips
//! against the simulator speaking Anthropic's format.

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const GOLDEN_REQUEST: &str = include_str!("../golden/anthropic/request.openai.json");

fn config(url: &str) -> String {
    config_text(
        None,
        &format!(
            r#"
[providers.anthropic]
kind = "anthropic"
base_url = "{url}/v1"
api_key = "${{THINKGATE_TEST_ANTHROPIC_KEY}}"
forward_headers = ["x-sim-*"]
response_timeout = "2s"
stream_idle_timeout = "2s"

[models.claude]
provider = "anthropic"
upstream_model = "claude-opus-4-6"
context_window = 200000
capabilities = ["vision", "tools", "reasoning"]

[models.claude-text-only]
provider = "anthropic"
upstream_model = "claude-opus-4-6"
context_window = 200000
"#
        ),
    )
}

/// A config whose Anthropic key variable resolves (the value is a test sentinel).
async fn proxy_for(url: &str) -> Proxy {
    Proxy::start_with_env(
        &config(url),
        &[("THINKGATE_TEST_ANTHROPIC_KEY", "sk-ant-test")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_whole_translation_both_ways() {
    let upstream = FixedUpstream::start(
        "application/json",
        include_str!("../golden/anthropic/response.anthropic.json"),
    )
    .await;
    let proxy = proxy_for(&upstream.url()).await;
    let r = call(&proxy.url("/v1/chat/completions"), GOLDEN_REQUEST, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let (path, headers, sent) = upstream.last();
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["x-api-key"], "sk-ant-test");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(headers.get("authorization").is_none());
    let expected: Value =
        serde_json::from_str(&golden("anthropic/request.anthropic.json")).unwrap();
    assert_eq!(sent, expected, "request translation");

    let got = serde_json::to_string_pretty(&without_created(r.json())).unwrap() + "\n";
    assert_golden("anthropic/response.openai.json", &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_stream_translation() {
    let upstream = FixedUpstream::start(
        "text/event-stream",
        include_str!("../golden/anthropic/stream.anthropic.sse"),
    )
    .await;
    let proxy = proxy_for(&upstream.url()).await;
    let mut body: Value = serde_json::from_str(GOLDEN_REQUEST).unwrap();
    body["stream"] = true.into();
    body["stream_options"] = json!({"include_usage": true});
    let r = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(upstream.last().2["stream"], true);
    assert_golden("anthropic/stream.openai.sse", &golden_events(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_against_the_simulated_messages_api() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    let url = proxy.url("/v1/chat/completions");
    let multi_turn = json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "what is two plus two?"}
        ]
    });
    let r = call(&url, multi_turn.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-opus-4-6");
    let message = &v["choices"][0]["message"];
    assert_eq!(
        message["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        6
    );
    assert_eq!(
        message["reasoning_content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        8
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 14);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        8
    );

    // Streamed, with usage.
    let mut streamed = multi_turn.clone();
    streamed["stream"] = true.into();
    streamed["stream_options"] = json!({"include_usage": true});
    let s = call(&url, streamed.to_string(), &[]).await.streamed();
    assert!(s.done);
    assert_eq!(words(&s.text("content")), 6);
    assert_eq!(words(&s.text("reasoning_content")), 8);
    assert_eq!(s.usage()["completion_tokens"], 14);
    assert_eq!(
        s.usage()["total_tokens"],
        s.usage()["prompt_tokens"].as_u64().unwrap() + 14
    );
    assert_eq!(s.finish_reasons(), ["stop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_round_trip_whole_and_streamed() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    let url = proxy.url("/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let ask = json!({"model": "claude", "tools": tools, "messages": [{"role": "user", "content": "look it up"}]});
    let v = call(&url, ask.to_string(), &[]).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call0 = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call0["function"]["name"], "lookup");
    assert!(call0["id"].as_str().unwrap().starts_with("toolu_"));
    let args: Value =
        serde_json::from_str(call0["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["query"].is_string());

    let mut streamed = ask.clone();
    streamed["stream"] = true.into();
    let s = call(&url, streamed.to_string(), &[]).await.streamed();
    let parsed: Value =
        serde_json::from_str(&s.tool_arguments()).expect("streamed arguments join into JSON");
    assert!(parsed["query"].is_string());
    assert_eq!(s.finish_reasons(), ["tool_calls"]);

    // The tool's result goes back as a tool_result block; the model then answers in text.
    let answer = json!({"model": "claude", "tools": tools, "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": null, "tool_calls": [call0]},
        {"role": "tool", "tool_call_id": call0["id"], "content": "42"}
    ]});
    let v = call(&url, answer.to_string(), &[]).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_reasons_images_and_hidden_reasoning() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    let url = proxy.url("/v1/chat/completions");
    // max_tokens → length
    let capped = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let v = call(&url, capped.to_string(), &[]).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 10);

    // An image reaches the upstream as an image block (it costs prompt tokens there).
    let with_image = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})
    };
    let plain = call(
        &url,
        json!({"model": "claude", "messages": [{"role": "user", "content": "what is this?"}]})
            .to_string(),
        &[],
    )
    .await
    .json();
    let v = call(&url, with_image("claude").to_string(), &[])
        .await
        .json();
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        plain["usage"]["prompt_tokens"].as_u64().unwrap() + 85
    );
    // … and is refused for a model without vision.
    let r = call(&url, with_image("claude-text-only").to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["code"], "unsupported_content");

    // Hidden (redacted) thinking: no reasoning text, the answer still arrives.
    let v = call(
        &url,
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        &[("x-sim-reasoning", "hidden")],
    )
    .await
    .json();
    assert!(v["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_anthropic_cannot_do_is_a_400() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    for (extra, param) in [
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
    ] {
        let mut body = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{param}");
        assert_eq!(r.error()["param"], param);
    }
    assert_eq!(sim.stat("started"), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_keep_status_and_vendor_message() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    for status in ["400", "429", "500", "529"] {
        let r = call(
            &proxy.url("/v1/chat/completions"),
            chat("claude", false),
            &[("x-sim-status", status)],
        )
        .await;
        assert_eq!(r.status.as_str(), status);
        let e = r.error();
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("simulated upstream fault"),
            "{e}"
        );
        let expected = match status {
            "429" => "rate_limit_error",
            "529" => "overloaded_error",
            "400" => "invalid_request_error",
            _ => "api_error",
        };
        assert_eq!(e["type"], expected);
    }
    // A stream that breaks mid-way ends with an error event, not [DONE].
    // A fresh proxy: the failures above (each 429 and 5xx tried twice) opened the
    // model's circuit breaker, which would refuse the stream before it is sent.
    let proxy = proxy_for(&sim.url()).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("claude", true),
        &[("x-sim-reset-after", "3")],
    )
    .await;
    let events = r.sse_data();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_thinking_goes_back_unchanged_in_tool_loops() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    let url = proxy.url("/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    // Anthropic's own `thinking` object passes through (clients send it as extra body).
    let ask = json!({"model": "claude", "tools": tools, "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "look it up"}]});
    let next = |turn: &Value| {
        let call_id = turn["tool_calls"][0]["id"].clone();
        let mut body = ask.clone();
        body["messages"] = json!([
            {"role": "user", "content": "look it up"},
            turn,
            {"role": "tool", "tool_call_id": call_id, "content": "42"}
        ]);
        body.to_string()
    };

    let v = call(&url, ask.to_string(), &[]).await.json();
    let turn = v["choices"][0]["message"].clone();
    let block = &turn["thinking_blocks"][0];
    assert_eq!(block["type"], "thinking", "{turn}");
    assert_eq!(block["thinking"], turn["reasoning_content"]);
    assert!(block["signature"].as_str().unwrap().starts_with("sig_"));
    let r = call(&url, next(&turn), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");

    // A client that drops the blocks gets Anthropic's own 400.
    let mut bare = turn.clone();
    bare.as_object_mut().unwrap().remove("thinking_blocks");
    let r = call(&url, next(&bare), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("thinking block"));

    // Streamed: the block arrives whole once its signature does, and works the same way.
    let mut streamed = ask.clone();
    streamed["stream"] = true.into();
    let chunks: Vec<Value> = call(&url, streamed.to_string(), &[])
        .await
        .sse_data()
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let delta = |c: &Value| c["choices"][0]["delta"].clone();
    let blocks: Vec<Value> = chunks
        .iter()
        .filter_map(|c| delta(c)["thinking_blocks"].as_array().cloned())
        .flatten()
        .collect();
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| delta(c)["reasoning_content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0]["thinking"], reasoning.as_str());
    let call0 = chunks
        .iter()
        .find_map(|c| delta(c)["tool_calls"][0]["id"].as_str().map(str::to_string))
        .unwrap();
    let args: String = chunks
        .iter()
        .filter_map(|c| {
            delta(c)["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let turn = json!({"role": "assistant", "content": null, "reasoning_content": reasoning,
        "thinking_blocks": blocks,
        "tool_calls": [{"id": call0, "type": "function", "function": {"name": "lookup", "arguments": args}}]});
    let r = call(&url, next(&turn), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // A budget Anthropic would refuse comes back as its 400.
    let mut small = ask.clone();
    small["thinking"]["budget_tokens"] = 100.into();
    let r = call(&url, small.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error()["message"].as_str().unwrap().contains("1024"));

    // A refusal is a content_filter finish.
    let v = call(
        &url,
        chat("claude", false),
        &[("x-sim-finish", "content_filter")],
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
}
