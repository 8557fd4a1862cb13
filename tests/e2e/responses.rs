//! OpenAI's Responses API (`/v1/responses`, what Codex speaks) through the one request path:
//! the official `openai` SDK against a simulated Anthropic upstream and an OpenAI-format one,
//! stored conversations that belong to their key, and broken streams that fail the response.

use http::StatusCode;
use serde_json::{json, Value};

use crate::sdk::run_script;
use crate::support::*;

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
{extra}
"#
        ),
    )
}

async fn start(text: &str, env: &[(&str, &str)]) -> Proxy {
    let mut env = env.to_vec();
    env.push(("THINKGATE_TEST_ANTHROPIC_KEY", "sk-ant-test"));
    Proxy::start_with_env(text, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_responses_api() {
    let sim = SimServer::start().await;
    let proxy = start(&config(&sim.url(), ""), &[]).await;
    run_script(
        &proxy,
        "responses_sdk.py",
        &[
            ("THINKGATE_MODELS", "claude=followup,sim-model=cut"),
            ("THINKGATE_BUDGET", "5"),
        ],
    )
    .await;
    let metrics = get(&proxy.url("/metrics")).await.text();
    let served = metrics.lines().any(|l| {
        l.starts_with("thinkgate_requests_total{")
            && l.contains("endpoint=\"responses\"")
            && l.contains("model=\"claude\"")
            && l.contains("status=\"200\"")
    });
    assert!(served, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_conversation_belongs_to_its_key() {
    let sim = SimServer::start().await;
    let keys = "[keys.a]\nsecret = \"${TG_A}\"\n[keys.b]\nsecret = \"${TG_B}\"\n";
    let text = config(&sim.url(), keys).replace("auth = \"none\"\n", "");
    let proxy = start(
        &text,
        &[
            ("TG_A", "tg-key-a-0123456789"),
            ("TG_B", "tg-key-b-0123456789"),
        ],
    )
    .await;
    let url = proxy.url("/v1/responses");
    let a = [("authorization", "Bearer tg-key-a-0123456789")];
    let b = [("authorization", "Bearer tg-key-b-0123456789")];
    let first = call(
        &url,
        json!({"model": "sim-model", "input": "hi"}).to_string(),
        &a,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_string();
    let next =
        json!({"model": "sim-model", "input": "again", "previous_response_id": id}).to_string();
    let r = call(&url, next.clone(), &b).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.error()["code"], "previous_response_not_found");
    assert_eq!(r.error()["param"], "previous_response_id");
    let r = call(&url, next, &a).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["previous_response_id"], Value::String(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_fails_the_response() {
    let sim = SimServer::start().await;
    let proxy = start(&config(&sim.url(), ""), &[]).await;
    let url = proxy.url("/v1/responses");
    for model in ["claude", "sim-model"] {
        let body = json!({"model": model, "input": "hi", "stream": true}).to_string();
        let r = call(&url, body, &[("x-sim-reset-after", "3")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let text = r.text();
        assert!(text.starts_with("event: response.created\n"), "{text}");
        assert!(text.contains("event: response.failed\n"), "{model}: {text}");
        assert!(!text.contains("response.completed"), "{model}: {text}");
    }
}
