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
    // The built-in simulator speaking the Responses API too, as vLLM does (reasoning shown).
    let responses = "[providers.sim-responses]\nkind = \"simulator\"\nformat = \"responses\"\n\n[models.sim-responses]\nprovider = \"sim-responses\"\ncontext_window = 100000\ncapabilities = [\"tools\", \"reasoning\"]\n";
    let proxy = start(&config(&sim.url(), responses), &[]).await;
    run_script(
        &proxy,
        "responses_sdk.py",
        &[
            (
                "THINKGATE_MODELS",
                "claude=followup,sim-model=cut,sim-responses=followup",
            ),
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

/// A provider speaking the Responses API (OpenAI's `kind`, `format = "responses"`), served
/// by the simulator over loopback.
fn responses_upstream(sim_url: &str) -> String {
    config(
        sim_url,
        &format!(
            r#"
[providers.oai]
kind = "openai"
format = "responses"
base_url = "{sim_url}/openai/v1"
api_key = "${{THINKGATE_TEST_OPENAI_KEY}}"
forward_headers = ["x-sim-*"]

[models.gpt]
provider = "oai"
upstream_model = "gpt-5.2"
context_window = 400000
capabilities = ["tools", "reasoning", "vision"]
"#
        ),
    )
}

async fn start_responses_upstream(sim: &SimServer) -> Proxy {
    start(
        &responses_upstream(&sim.url()),
        &[("THINKGATE_TEST_OPENAI_KEY", "sk-openai-test")],
    )
    .await
}

/// The body the simulator received last.
async fn upstream_body(sim: &SimServer) -> Value {
    let stats = get(&format!("{}/sim/stats", sim.url())).await.json();
    stats["recent_bodies"]
        .as_array()
        .and_then(|b| b.last())
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_client_reaches_a_responses_upstream_as_it_sent_it() {
    let sim = SimServer::start().await;
    let proxy = start_responses_upstream(&sim).await;
    let url = proxy.url("/v1/responses");
    let first = json!({
        "model": "gpt", "input": "hi", "instructions": "Be brief.",
        "reasoning": {"effort": "high", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "conversation-1", "text": {"verbosity": "low"},
        "tools": [{"type": "web_search"}]
    });
    let r = call(&url, first.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = upstream_body(&sim).await;
    // The client's own fields reach the upstream; the proxy sets model, store and the knob.
    assert_eq!(sent["model"], "gpt-5.2");
    assert_eq!(sent["prompt_cache_key"], "conversation-1", "{sent}");
    assert_eq!(sent["text"]["verbosity"], "low");
    // The mode's budget hint joins the client's instructions.
    assert!(
        sent["instructions"]
            .as_str()
            .unwrap()
            .starts_with("Be brief.\n\n"),
        "{sent}"
    );
    assert_eq!(sent["include"][0], "reasoning.encrypted_content");
    assert_eq!(sent["store"], false);
    assert_eq!(sent["reasoning"]["summary"], "auto", "{sent}");
    assert!(sent["reasoning"]["effort"].is_string(), "{sent}");
    assert!(sent["max_output_tokens"].as_u64().is_some(), "{sent}");
    assert!(
        sent.get("tools")
            .is_none_or(|t| t.as_array().unwrap().is_empty()),
        "{sent}"
    );
    assert_eq!(r.headers["x-thinkgate-dropped-tools"], "web_search");

    let o = r.json();
    let reasoning = &o["output"][0];
    assert_eq!(reasoning["type"], "reasoning", "{o}");
    let encrypted = reasoning["encrypted_content"].as_str().unwrap().to_string();
    assert!(encrypted.starts_with("enc_sim_"), "{o}");
    assert!(
        !reasoning["summary"][0]["text"].as_str().unwrap().is_empty(),
        "{o}"
    );
    assert_eq!(o["output"][1]["type"], "message", "{o}");
    assert!(
        o["usage"]["output_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // The next turn: the simulator keeps nothing and refuses `previous_response_id`, so the
    // proxy sends the stored conversation, the encrypted reasoning with it.
    let id = o["id"].as_str().unwrap();
    let next = json!({"model": "gpt", "input": "and then?", "previous_response_id": id,
                      "include": ["reasoning.encrypted_content"]});
    let r = call(&url, next.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = upstream_body(&sim).await;
    assert!(sent.get("previous_response_id").is_none(), "{sent}");
    let input = sent["input"].as_array().unwrap();
    let kinds: Vec<&str> = input
        .iter()
        .map(|i| i["type"].as_str().or(i["role"].as_str()).unwrap())
        .collect();
    assert_eq!(kinds, ["user", "reasoning", "assistant", "user"], "{sent}");
    assert_eq!(input[1]["encrypted_content"], encrypted.as_str());
    assert_eq!(input[3]["content"], "and then?");

    // Items a client replays (Codex sends its reasoning back each turn) reach the upstream
    // unchanged: tampered content is the upstream's 400, naming the item.
    let tampered = json!({"model": "gpt", "input": [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "forged"},
        {"role": "user", "content": "go on"}
    ]});
    let r = call(&url, tampered.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.error()["param"], "input[0].encrypted_content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_stream_from_a_responses_upstream_keeps_its_items() {
    let sim = SimServer::start().await;
    let proxy = start_responses_upstream(&sim).await;
    let body = json!({
        "model": "gpt", "input": "hi", "stream": true,
        "reasoning": {"summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    });
    let r = call(&proxy.url("/v1/responses"), body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let events = sse_events(&r.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "response.created",
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.completed",
    ] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    let done_reasoning = events
        .iter()
        .find(|(n, d)| n == "response.output_item.done" && d["item"]["type"] == "reasoning")
        .expect("a finished reasoning item");
    assert!(done_reasoning.1["item"]["encrypted_content"]
        .as_str()
        .is_some_and(|e| e.starts_with("enc_sim_")));
    let completed = &events.last().unwrap().1;
    assert_eq!(completed["response"]["output"][1]["type"], "function_call");
    assert_eq!(completed["response"]["output"][1]["name"], "lookup");
    assert!(
        completed["response"]["usage"]["output_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Streamed from the upstream too, in its own event names.
    assert_eq!(upstream_body(&sim).await["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_messages_clients_are_translated_to_a_responses_upstream() {
    let sim = SimServer::start().await;
    let proxy = start_responses_upstream(&sim).await;
    let chat = proxy.url("/v1/chat/completions");
    let body = json!({"model": "gpt", "max_tokens": 300, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}
    ]});
    let r = call(&chat, body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let c = r.json();
    assert_eq!(c["object"], "chat.completion");
    assert!(!c["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(
        c["usage"]["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let sent = upstream_body(&sim).await;
    assert_eq!(
        sent["input"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["input"][1]["content"][1]["type"], "input_image");
    assert_eq!(sent["store"], false);
    assert!(
        sent.get("messages").is_none() && sent.get("max_tokens").is_none(),
        "{sent}"
    );

    // A tool round: the call streams as chat tool calls; its result goes back as items.
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let body = json!({"model": "gpt", "stream": true, "tools": tools,
                      "messages": [{"role": "user", "content": "look it up"}]});
    let r = call(&chat, body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let text = r.text();
    assert!(text.contains("\"tool_calls\""), "{text}");
    assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
    let body = json!({"model": "gpt", "tools": tools, "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    ]});
    let r = call(&chat, body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = upstream_body(&sim).await;
    assert_eq!(sent["input"][1]["type"], "function_call");
    assert_eq!(
        sent["input"][2],
        json!({"type": "function_call_output", "call_id": "call_1", "output": "42"})
    );
    assert_eq!(sent["tools"][0]["name"], "lookup");

    // What the Responses API cannot take is refused by field, before anything is sent.
    let body =
        json!({"model": "gpt", "stop": ["END"], "messages": [{"role": "user", "content": "hi"}]});
    let r = call(&chat, body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.error()["param"], "stop");

    // Instant mode turns the reasoning off in the upstream's knob.
    let body = json!({"model": "gpt:instant", "messages": [{"role": "user", "content": "hi"}]});
    let r = call(&chat, body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(upstream_body(&sim).await["reasoning"]["effort"], "none");
    assert_eq!(
        r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );

    // An Anthropic client reaches it too, translated through the same request.
    let body =
        json!({"model": "gpt", "max_tokens": 400, "messages": [{"role": "user", "content": "hi"}]});
    let r = call(
        &proxy.url("/v1/messages"),
        body.to_string(),
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["type"], "message");
    let metrics = get(&proxy.url("/metrics")).await.text();
    let counted = metrics.lines().any(|l| {
        l.starts_with("thinkgate_tokens_total{")
            && l.contains("model=\"gpt\"")
            && l.contains("kind=\"reasoning\"")
    });
    assert!(counted, "{metrics}");
}
