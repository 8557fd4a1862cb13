//! The open-model servers and other OpenAI-format upstreams (`dialect`): reasoning reaches the
//! client under one field name whatever the server calls it, the reasoning-token count is
//! always in the usage, history reasoning goes back under the server's name, and each server's
//! reasoning knobs behave as that server's do (the simulator imitates each).

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const DIALECTS: [&str; 8] = [
    "openai",
    "vllm",
    "sglang",
    "deepseek",
    "llamacpp",
    "ollama",
    "openrouter",
    "muse-spark",
];

/// One model per dialect, reached over HTTP at the simulator's `/<dialect>/v1`.
fn config(sim_url: &str, server_extra: &str) -> String {
    let mut text =
        config_text(None, "").replace("[server]\n", &format!("[server]\n{server_extra}\n"));
    for d in DIALECTS {
        text.push_str(&format!(
            r#"
[providers.{d}]
kind = "openai-compatible"
dialect = "{d}"
base_url = "{sim_url}/{d}/v1"
forward_headers = ["x-sim-*"]
response_timeout = "2s"
stream_idle_timeout = "2s"

[models.{d}]
provider = "{d}"
upstream_model = "{d}-model"
context_window = 100000
capabilities = ["tools", "reasoning"]
"#
        ));
    }
    text
}

async fn proxy(sim: &SimServer, server_extra: &str) -> Proxy {
    Proxy::start_with_env(&config(&sim.url(), server_extra), &[]).await
}

fn ask(model: &str, extra: Value) -> String {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": "What is two plus two?"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    body.to_string()
}

fn reasoning_tokens(v: &Value) -> u64 {
    v["usage"]["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reasoning count in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_answers_with_reasoning_under_the_clients_field_name() {
    let sim = SimServer::start().await;
    let proxy = proxy(&sim, "").await;
    let url = proxy.url("/v1/chat/completions");
    for d in DIALECTS {
        let v = call(&url, ask(d, json!({})), &[]).await.json();
        let message = &v["choices"][0]["message"];
        assert_eq!(
            message["content"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .count(),
            6,
            "{d}: {v}"
        );
        assert!(
            message.get("reasoning").is_none(),
            "{d}: one field name only: {v}"
        );
        if d == "openai" {
            assert!(
                message.get("reasoning_content").is_none(),
                "OpenAI hides reasoning"
            );
        } else {
            let text = message["reasoning_content"]
                .as_str()
                .unwrap_or_else(|| panic!("{d}: {v}"));
            assert_eq!(text.split_whitespace().count(), 8, "{d}");
        }
        assert_eq!(reasoning_tokens(&v), 8, "{d}");

        let streamed = ask(
            d,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        );
        let s = call(&url, streamed, &[]).await.streamed();
        assert!(s.done, "{d}");
        assert!(
            s.text("reasoning").is_empty(),
            "{d}: streamed reasoning is renamed too"
        );
        let expected = if d == "openai" { 0 } else { 8 };
        assert_eq!(words(&s.text("reasoning_content")), expected, "{d}");
        assert_eq!(reasoning_tokens(s.chunks.last().unwrap()), 8, "{d}");
    }

    // llama.cpp reports usage without a reasoning count: the proxy counts it.
    let v = call(
        &url,
        ask("llamacpp", json!({})),
        &[("x-sim-usage", "basic")],
    )
    .await
    .json();
    assert_eq!(reasoning_tokens(&v), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reasoning_field_switch_gives_vllm_bytes_unchanged_and_renames_the_others() {
    let sim = SimServer::start().await;
    let proxy = proxy(&sim, "reasoning_field = \"reasoning\"").await;
    let url = proxy.url("/v1/chat/completions");
    for d in ["vllm", "deepseek", "sglang"] {
        let v = call(&url, ask(d, json!({})), &[]).await.json();
        let message = &v["choices"][0]["message"];
        assert!(message.get("reasoning_content").is_none(), "{d}: {v}");
        assert_eq!(
            message["reasoning"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .count(),
            8,
            "{d}"
        );
    }
    // vLLM already says `reasoning`: its response is forwarded byte for byte.
    let direct = call(
        &format!("{}/vllm/v1/chat/completions", sim.url()),
        ask("vllm-model", json!({})),
        &[],
    )
    .await;
    let proxied = call(&url, ask("vllm", json!({})), &[]).await;
    assert!(direct.text().contains("\"reasoning\""));
    assert_eq!(direct.text(), proxied.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_servers_budget_knob_behaves_as_that_server_does() {
    let sim = SimServer::start().await;
    let proxy = proxy(&sim, "").await;
    let url = proxy.url("/v1/chat/completions");
    let used = |v: Value| reasoning_tokens(&v);
    let long = [("x-sim-reasoning-tokens", "100")];

    // vLLM: a hard cap.
    let v = call(
        &url,
        ask("vllm", json!({"thinking_token_budget": 30})),
        &long,
    )
    .await
    .json();
    assert_eq!(used(v), 30);
    // OpenRouter: a soft target the model overshoots (10 %) — straight to the server...
    let direct = call(
        &format!("{}/openrouter/v1/chat/completions", sim.url()),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning": {"max_tokens": 30}}).to_string(),
        &long,
    )
    .await
    .json();
    assert_eq!(used(direct), 33);
    // ...and through the proxy, which reads the `reasoning` object as a budget and holds it.
    let r = call(
        &url,
        ask("openrouter", json!({"reasoning": {"max_tokens": 30}})),
        &long,
    )
    .await;
    assert_eq!(r.header("x-thinkgate-budget-enforcement"), "cut");
    assert_eq!(used(r.json()), 30);
    // DeepSeek has no budget knob: the same field changes nothing.
    let v = call(
        &url,
        ask("deepseek", json!({"thinking_token_budget": 30})),
        &long,
    )
    .await
    .json();
    assert_eq!(used(v), 100);
    // Switches that turn thinking off.
    for (model, off) in [
        (
            "sglang",
            json!({"chat_template_kwargs": {"enable_thinking": false}}),
        ),
        (
            "vllm",
            json!({"chat_template_kwargs": {"enable_thinking": false}}),
        ),
        ("ollama", json!({"think": false})),
        ("deepseek", json!({"thinking": {"type": "disabled"}})),
        ("openrouter", json!({"reasoning": {"enabled": false}})),
        ("openai", json!({"reasoning_effort": "none"})),
    ] {
        let v = call(&url, ask(model, off), &long).await.json();
        assert_eq!(used(v.clone()), 0, "{model}: {v}");
    }
    // Efforts scale the length.
    let v = call(
        &url,
        ask("openai", json!({"reasoning_effort": "low"})),
        &long,
    )
    .await
    .json();
    assert_eq!(used(v), 25);
    let v = call(
        &url,
        ask("muse-spark", json!({"reasoning_effort": "medium"})),
        &long,
    )
    .await
    .json();
    assert_eq!(used(v), 50);
    // OpenRouter's `exclude` hides the text but the tokens are still counted.
    let v = call(
        &url,
        ask("openrouter", json!({"reasoning": {"exclude": true}})),
        &[],
    )
    .await
    .json();
    assert!(v["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    assert_eq!(used(v), 8);

    // OpenAI refuses an effort it does not know, with the list it takes; the proxy passes
    // the 400 on as sent.
    let r = call(
        &url,
        ask("openai", json!({"reasoning_effort": "ultra"})),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("Supported values"));
    // … and rejects `max_tokens` on reasoning models: the proxy sends max_completion_tokens.
    let r = call(&url, ask("openai", json!({"max_tokens": 10})), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepseek_tool_loops_get_their_reasoning_back_under_its_name() {
    let sim = SimServer::start().await;
    let proxy = proxy(&sim, "reasoning_field = \"reasoning\"").await;
    let url = proxy.url("/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let v = call(&url, json!({"model": "deepseek", "tools": tools, "messages": [{"role": "user", "content": "look it up"}]}).to_string(), &[]).await.json();
    let message = v["choices"][0]["message"].clone();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert!(message["reasoning"].is_string(), "{message}");
    let call0 = &message["tool_calls"][0];
    // The client sends the turn back as it got it, reasoning under `reasoning`.
    let next = json!({"model": "deepseek", "tools": tools, "messages": [
        {"role": "user", "content": "look it up"},
        message.clone(),
        {"role": "tool", "tool_call_id": call0["id"], "content": "42"}
    ]});
    let r = call(&url, next.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A client that drops the reasoning gets DeepSeek's own 400.
    let mut dropped = next.clone();
    dropped["messages"][1]
        .as_object_mut()
        .unwrap()
        .remove("reasoning");
    let r = call(&url, dropped.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("reasoning_content"));
}

#[test]
fn dialect_config_errors_name_the_key() {
    let parse = |extra: &str| {
        thinkgate_config::Config::parse(
            &config_text(None, extra),
            std::path::Path::new("t.toml"),
            &|_| None,
        )
        .unwrap_err()
        .to_string()
    };
    let e = parse("[providers.v]\nkind = \"openai-compatible\"\nbase_url = \"http://x/v1\"\ndialect = \"vlm\"\n");
    assert!(
        e.contains("providers.v.dialect") && e.contains("did you mean `vllm`"),
        "{e}"
    );
    let e = parse("[providers.a]\nkind = \"anthropic\"\ndialect = \"vllm\"\n");
    assert!(
        e.contains("providers.a.dialect") && e.contains("only for"),
        "{e}"
    );
}
