//! Round trips, lossless pass-through, usage, tools, and the small endpoints.

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_round_trip() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("sim-model", false),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    // The response names the upstream model actually used.
    assert_eq!(v["model"], "upstream-sim-model");
    assert_eq!(r.headers["x-thinkgate-model"], "sim-model");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(answer.split_whitespace().count(), 6);
    assert_eq!(v["usage"]["completion_tokens"], 14);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        8
    );
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-request-id"].len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_round_trip_ends_with_done() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("sim-model", true),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let s = r.streamed();
    assert!(s.done);
    assert_eq!(words(&s.text("reasoning_content")), 8);
    assert_eq!(words(&s.text("content")), 6);
    assert_eq!(
        s.chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    // The client did not ask for usage: the chunk the proxy requested for itself is dropped.
    assert!(
        s.chunks.iter().all(|c| c["usage"].is_null()),
        "{:?}",
        s.chunks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_usage_reaches_clients_that_ask_for_it() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let body = json!({
        "model": "sim-model", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]
    });
    let r = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await;
    let events = r.sse_data();
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 14);
    assert_eq!(
        usage_chunk["usage"]["completion_tokens_details"]["reasoning_tokens"],
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_relayed_as_produced_not_buffered() {
    // The upstream sends three tokens and then stalls forever: a buffering proxy would send
    // nothing; a relaying one delivers those chunks at once.
    let proxy = Proxy::start(&config_text(None, "")).await;
    let resp = send(
        &proxy.url("/v1/chat/completions"),
        "POST",
        chat("sim-model", true),
        &[("x-sim-stall-after", "3")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = String::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while sse_data(&seen).len() < 4 {
            let frame = body.frame().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "chunks before the stall never arrived: {seen}"
    );
    assert_eq!(sse_data(&seen).len(), 4, "role chunk + 3 tokens: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_is_lossless_both_ways() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    let request = json!({
        "model": "net-model",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "logprobs": true,
        "top_logprobs": 0,
        "seed": 7,
        "metadata": {"team": "search", "nested": {"deep": [1, 2.5, null, "x"]}},
        "some_future_field": {"a": [true, false]},
        "temperature": 0.25
    });
    let via_proxy = call(
        &proxy.url("/v1/chat/completions"),
        request.to_string(),
        &[("x-sim-echo", "1")],
    )
    .await;
    assert_eq!(via_proxy.status, StatusCode::OK, "{}", via_proxy.text());

    // Every request field reached the upstream unchanged, except the model name.
    let echoed = via_proxy.json()["sim_echo"].clone();
    let mut expected = request.clone();
    expected["model"] = json!("upstream-net-model");
    assert_eq!(echoed, expected);

    // The response is byte-for-byte what the upstream sends for that request directly.
    let direct = call(
        &format!("{}/v1/chat/completions", sim.url()),
        expected.to_string(),
        &[("x-sim-echo", "1")],
    )
    .await;
    assert_eq!(via_proxy.body, direct.body);
    let v = via_proxy.json();
    assert!(v["choices"][0]["logprobs"]["content"].is_array());
    assert_eq!(v["system_fingerprint"], "fp_thinkgate_sim");
    assert_eq!(v["service_tier"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_pass_through_is_byte_identical_when_usage_is_requested() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    let body = |model: &str| {
        json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
    };
    let via_proxy = call(&proxy.url("/v1/chat/completions"), body("net-model"), &[]).await;
    let direct = call(
        &format!("{}/v1/chat/completions", sim.url()),
        body("upstream-net-model"),
        &[],
    )
    .await;
    assert_eq!(via_proxy.text(), direct.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_pass_through_streamed_and_whole() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let body = |stream: bool| {
        json!({
            "model": "sim-model", "stream": stream,
            "messages": [{"role": "user", "content": "weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                       "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
        })
        .to_string()
    };
    let whole = call(&proxy.url("/v1/chat/completions"), body(false), &[])
        .await
        .json();
    let call0 = &whole["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call0["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call0["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["query"].is_string());
    assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");

    let streamed = call(&proxy.url("/v1/chat/completions"), body(true), &[]).await;
    let events = streamed.sse_data();
    let args: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let args: Value = serde_json::from_str(&args).expect("streamed arguments join into JSON");
    assert!(args["query"].is_string());
    let finish = events
        .iter()
        .rev()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find_map(|c| {
            c["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        });
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_kept_returned_and_sent_upstream() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("sim-model", false),
        &[("x-request-id", "trace-abc-123")],
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "trace-abc-123");
    assert_eq!(proxy.sim_stats()["last_request_id"], "trace-abc-123");
    // An id that is not sane printable ASCII is replaced.
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("sim-model", false),
        &[("x-request-id", &"y".repeat(300))],
    )
    .await;
    assert_eq!(r.headers["x-request-id"].len(), 32);
    assert_eq!(
        proxy.sim_stats()["last_request_id"],
        r.headers["x-request-id"].to_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_configured_and_virtual_ids() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    let v = get(&proxy.url("/v1/models")).await.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "sim-model",
        "net-model",
        "auto",
        "auto:instant",
        "auto:thinking",
        "auto:contemplating",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model" && m["owned_by"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_and_mode_suffixes_resolve_to_the_default_model() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    for (model, mode) in [
        ("auto", None),
        ("auto:thinking", Some("thinking")),
        ("sim-model:instant", Some("instant")),
    ] {
        let r = call(&proxy.url("/v1/chat/completions"), chat(model, false), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{model}: {}", r.text());
        assert_eq!(r.headers["x-thinkgate-model"], "sim-model");
        assert_eq!(
            r.headers
                .get("x-thinkgate-mode")
                .map(|v| v.to_str().unwrap()),
            mode
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    assert_eq!(get(&proxy.url("/healthz")).await.status, StatusCode::OK);
    assert_eq!(get(&proxy.url("/readyz")).await.status, StatusCode::OK);

    // Only a provider whose key variable is unset: alive, but not ready.
    let text = r#"
auth = "none"
[routing]
default_model = "m"
[providers.p]
kind = "openai"
api_key = "${THINKGATE_TEST_UNSET_KEY}"
[models.m]
provider = "p"
context_window = 10
"#;
    let unready = Proxy::start(text).await;
    assert_eq!(get(&unready.url("/healthz")).await.status, StatusCode::OK);
    let r = get(&unready.url("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    r.error();
}
