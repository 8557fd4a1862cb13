//! The Gemini adapter: wire translation against golden files, and round trips against the
//! simulator speaking Gemini's `generateContent` API.

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const GOLDEN_REQUEST: &str = include_str!("../golden/gemini/request.openai.json");

fn config(url: &str) -> String {
    config_text(
        None,
        &format!(
            r#"
[providers.google]
kind = "gemini"
base_url = "{url}/v1beta"
api_key = "${{THINKGATE_TEST_GEMINI_KEY}}"
forward_headers = ["x-sim-*"]
response_timeout = "2s"
stream_idle_timeout = "2s"

[models.gemini]
provider = "google"
upstream_model = "gemini-2.5-pro"
context_window = 1048576
capabilities = ["vision", "tools", "reasoning"]

[models.gemini-lite]
provider = "google"
upstream_model = "gemini-2.0-flash-lite"
context_window = 1048576
capabilities = ["tools"]
"#
        ),
    )
}

async fn proxy_for(url: &str) -> Proxy {
    Proxy::start_with_env(&config(url), &[("THINKGATE_TEST_GEMINI_KEY", "AIza-test")]).await
}

fn ask(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

fn words_in(v: &Value) -> usize {
    v.as_str().map_or(0, words)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_whole_translation_both_ways() {
    let upstream = FixedUpstream::start(
        "application/json",
        include_str!("../golden/gemini/response.gemini.json"),
    )
    .await;
    let proxy = proxy_for(&upstream.url()).await;
    let r = call(&proxy.url("/v1/chat/completions"), GOLDEN_REQUEST, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let (path, headers, sent) = upstream.last();
    assert_eq!(path, "/v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(headers["x-goog-api-key"], "AIza-test");
    assert!(headers.get("authorization").is_none());
    let expected: Value = serde_json::from_str(&golden("gemini/request.gemini.json")).unwrap();
    assert_eq!(sent, expected, "request translation");

    let got = serde_json::to_string_pretty(&without_created(r.json())).unwrap() + "\n";
    assert_golden("gemini/response.openai.json", &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_stream_translation() {
    let upstream = FixedUpstream::start(
        "text/event-stream",
        include_str!("../golden/gemini/stream.gemini.sse"),
    )
    .await;
    let proxy = proxy_for(&upstream.url()).await;
    let mut body = ask("gemini", "Why is the sky blue?");
    body["stream"] = true.into();
    body["stream_options"] = json!({"include_usage": true});
    let r = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let (path, _, _) = upstream.last();
    assert_eq!(
        path,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert_golden("gemini/stream.openai.sse", &golden_events(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_against_the_simulated_gemini_api() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    let url = proxy.url("/v1/chat/completions");
    let multi_turn = json!({
        "model": "gemini",
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
    assert_eq!(v["model"], "gemini-2.5-pro");
    let message = &v["choices"][0]["message"];
    assert_eq!(words_in(&message["content"]), 6);
    // Thoughts are asked for (includeThoughts) because the model reasons.
    assert_eq!(words_in(&message["reasoning_content"]), 8);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 14);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        8
    );

    let mut streamed = multi_turn.clone();
    streamed["stream"] = true.into();
    streamed["stream_options"] = json!({"include_usage": true});
    let s = call(&url, streamed.to_string(), &[]).await.streamed();
    assert!(s.done);
    assert_eq!(words(&s.text("content")), 6);
    assert_eq!(words(&s.text("reasoning_content")), 8);
    assert_eq!(s.usage()["completion_tokens"], 14);
    assert_eq!(
        s.usage()["completion_tokens_details"]["reasoning_tokens"],
        8
    );
    assert_eq!(s.finish_reasons(), ["stop"]);

    // A model without the reasoning capability is not asked for thoughts: none shown, none
    // counted, and the answer arrives.
    let v = call(&url, ask("gemini-lite", "hi").to_string(), &[])
        .await
        .json();
    assert!(v["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    assert_eq!(words_in(&v["choices"][0]["message"]["content"]), 6);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"], 8,
        "hidden thoughts are still billed and counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_round_trip_with_their_signatures() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    let url = proxy.url("/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let question = json!({"model": "gemini", "tools": tools, "messages": [{"role": "user", "content": "look it up"}]});
    let v = call(&url, question.to_string(), &[]).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call0 = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call0["function"]["name"], "lookup");
    assert!(
        call0["id"].as_str().unwrap().contains("~ts~sig_"),
        "the thought signature travels in the id: {call0}"
    );
    let args: Value =
        serde_json::from_str(call0["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["query"].is_string());

    let mut streamed = question.clone();
    streamed["stream"] = true.into();
    let s = call(&url, streamed.to_string(), &[]).await.streamed();
    let parsed: Value = serde_json::from_str(&s.tool_arguments()).expect("arguments are JSON");
    assert!(parsed["query"].is_string());
    assert_eq!(s.finish_reasons(), ["tool_calls"]);

    // The result goes back as a functionResponse; the simulated Gemini 3 refuses a history
    // whose call lost its signature, so an answer proves the signature came back.
    let answer = json!({"model": "gemini", "tools": tools, "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": null, "tool_calls": [call0]},
        {"role": "tool", "tool_call_id": call0["id"], "content": "42"}
    ]});
    let r = call(&url, answer.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(words_in(&v["choices"][0]["message"]["content"]), 6);

    // Without the signature, Gemini's own 400 comes back with its message.
    let mut unsigned = answer.clone();
    unsigned["messages"][1]["tool_calls"][0]["id"] = "call_gm0".into();
    unsigned["messages"][2]["tool_call_id"] = "call_gm0".into();
    let r = call(&url, unsigned.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["type"], "invalid_request_error");
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("thought_signature"));

    // A tool result that answers no call cannot be named for Gemini: a precise 400.
    let mut orphan = answer.clone();
    orphan["messages"][2]["tool_call_id"] = "call_nowhere".into();
    let r = call(&url, orphan.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["param"], "messages[2].tool_call_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finish_reason_images_and_what_gemini_cannot_take() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    let url = proxy.url("/v1/chat/completions");

    // MAX_TOKENS → length; the cap covers thoughts and answer together, as Gemini's does.
    let mut capped = ask("gemini", "hi");
    capped["max_tokens"] = 10.into();
    let v = call(&url, capped.to_string(), &[]).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 10);

    // SAFETY → content_filter, whole and streamed.
    let filtered = [("x-sim-finish", "content_filter")];
    let v = call(&url, ask("gemini", "hi").to_string(), &filtered)
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    let mut streamed = ask("gemini", "hi");
    streamed["stream"] = true.into();
    let events = call(&url, streamed.to_string(), &filtered).await.sse_data();
    assert!(events.iter().any(|e| e.contains("\"content_filter\"")));
    assert_eq!(events.last().unwrap(), "[DONE]");

    // Images travel inline and cost prompt tokens upstream; a URL needs a known extension.
    let with_image = |url: &str| {
        json!({"model": "gemini", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let plain = call(&url, ask("gemini", "what is this?").to_string(), &[])
        .await
        .json();
    let v = call(
        &url,
        with_image("data:image/png;base64,iVBORw0KGgo=").to_string(),
        &[],
    )
    .await
    .json();
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        plain["usage"]["prompt_tokens"].as_u64().unwrap() + 258
    );
    let r = call(
        &url,
        with_image("https://example.com/picture").to_string(),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["param"], "messages[0].content[1].image_url.url");
    // … and a model without vision never gets one.
    let mut to_lite = with_image("data:image/png;base64,iVBORw0KGgo=");
    to_lite["model"] = "gemini-lite".into();
    let r = call(&url, to_lite.to_string(), &[]).await;
    assert_eq!(r.error()["code"], "unsupported_content");

    for (extra, param) in [
        (json!({"n": 3}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (
            json!({"response_format": {"type": "grammar"}}),
            "response_format",
        ),
    ] {
        let mut body = ask("gemini", "hi");
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = call(&url, body.to_string(), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{param}");
        assert_eq!(r.error()["param"], param);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_keep_status_and_vendor_message() {
    let sim = SimServer::start().await;
    let proxy = proxy_for(&sim.url()).await;
    for (status, kind) in [
        ("400", "invalid_request_error"),
        ("403", "permission_error"),
        ("429", "rate_limit_error"),
        ("500", "api_error"),
        ("503", "overloaded_error"),
    ] {
        let r = call(
            &proxy.url("/v1/chat/completions"),
            ask("gemini", "hi").to_string(),
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
        assert_eq!(e["type"], kind);
    }
    // A stream that breaks mid-way ends with an error event, not [DONE]; one that ends
    // without a finish reason is broken too.
    // A fresh proxy: the failures above (each 429 and 5xx tried twice) opened the
    // model's circuit breaker, which would refuse the stream before it is sent.
    let proxy = proxy_for(&sim.url()).await;
    let mut streamed = ask("gemini", "hi");
    streamed["stream"] = true.into();
    let r = call(
        &proxy.url("/v1/chat/completions"),
        streamed.to_string(),
        &[("x-sim-reset-after", "3")],
    )
    .await;
    let events = r.sse_data();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_broken");
}
