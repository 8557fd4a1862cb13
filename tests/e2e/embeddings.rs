//! OpenAI's other endpoints through the pipeline's calls for them: `/v1/embeddings` and
//! `/v1/completions` with the official SDK against simulated models, the key's limits, the
//! metrics, broken streams, and chat refusing an embeddings model.

use http::StatusCode;
use serde_json::json;

use crate::sdk::run_script;
use crate::support::*;

const EMBED: &str = "\n[models.embed]\nprovider = \"sim\"\nupstream_model = \"sim-embed\"\ncontext_window = 8192\ncapabilities = [\"embeddings\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_embeddings_and_the_metrics() {
    let proxy = Proxy::start(&config_text(None, EMBED)).await;
    run_script(
        &proxy,
        "openai_endpoints_sdk.py",
        &[
            ("THINKGATE_MODEL", "embed"),
            ("THINKGATE_CHAT_MODEL", "sim-model"),
        ],
    )
    .await;
    let metrics = get(&proxy.url("/metrics")).await.text();
    let value = |needles: &[&str]| -> f64 {
        metrics
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let ok = [
        "thinkgate_requests_total{",
        "endpoint=\"embeddings\"",
        "model=\"embed\"",
        "status=\"200\"",
    ];
    assert_eq!(value(&ok), 4.0, "{metrics}");
    let prompt = [
        "thinkgate_tokens_total{",
        "kind=\"prompt\"",
        "model=\"embed\"",
        "source=\"upstream\"",
    ];
    assert!(value(&prompt) > 0.0, "{metrics}");
    let completions = [
        "thinkgate_requests_total{",
        "endpoint=\"completions\"",
        "model=\"sim-model\"",
        "status=\"200\"",
    ];
    assert_eq!(value(&completions), 4.0, "{metrics}");
    // 6 + 6 + 6 + 3 words, every one counted, streamed or not.
    let output = [
        "thinkgate_tokens_total{",
        "kind=\"output\"",
        "model=\"sim-model\"",
    ];
    assert_eq!(value(&output), 21.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_stream_that_breaks_ends_with_an_error_event() {
    let proxy = Proxy::start(&config_text(None, EMBED)).await;
    let body = json!({"model": "sim-model", "prompt": "hi", "stream": true}).to_string();
    let r = call(
        &proxy.url("/v1/completions"),
        body,
        &[("x-sim-reset-after", "3")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let events = r.sse_data();
    assert_eq!(events.len(), 4, "{events:?}");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_broken", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_and_the_model_limits_hold_and_chat_refuses_the_model() {
    let keyed = format!(
        "{EMBED}\n[keys.a]\nsecret = \"${{TG_EMBED_KEY}}\"\nrequests_per_minute = 2\nburst = 2\n"
    );
    let text = config_text(None, &keyed).replace("auth = \"none\"\n", "");
    let proxy = Proxy::start_with_env(&text, &[("TG_EMBED_KEY", "tg-embed-0123456789")]).await;
    let url = proxy.url("/v1/embeddings");
    let key = [("authorization", "Bearer tg-embed-0123456789")];
    let body = json!({"model": "embed", "input": ["a", "b"]}).to_string();
    assert_eq!(
        call(&url, body.clone(), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..2 {
        let r = call(&url, body.clone(), &key).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.header("x-thinkgate-model"), "embed");
    }
    let r = call(&url, body.clone(), &key).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(!r.header("retry-after").is_empty());
    // Malformed input is a 400 naming the field, before anything is sent.
    let bad = json!({"model": "embed", "input": [1, "a"]}).to_string();
    let r = call(&url, bad, &key).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error()["param"], "input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_refuses_an_embeddings_model_and_upstream_failures_pass_through() {
    let proxy = Proxy::start(&config_text(None, EMBED)).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("embed", false),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.error()["code"], "model_not_supported");
    let body = json!({"model": "embed", "input": "x"}).to_string();
    let r = call(
        &proxy.url("/v1/embeddings"),
        body,
        &[("x-sim-status", "503")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_what_was_asked_for_is_a_502() {
    let upstream = FixedUpstream::start("application/json", r#"{"nope": 1}"#).await;
    let extra = format!(
        "[providers.odd]\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\n\
         [models.odd-embed]\nprovider = \"odd\"\ncontext_window = 8192\ncapabilities = [\"embeddings\"]\n\
         [models.odd-text]\nprovider = \"odd\"\ncontext_window = 8192\n",
        upstream.url()
    );
    let proxy = Proxy::start(&config_text(None, &extra)).await;
    let cases = [
        (
            "/v1/embeddings",
            json!({"model": "odd-embed", "input": "x"}),
            "upstream_error",
        ),
        (
            "/v1/completions",
            json!({"model": "odd-text", "prompt": "x"}),
            "upstream_error",
        ),
        (
            "/v1/completions",
            json!({"model": "odd-text", "prompt": "x", "stream": true}),
            "upstream_error",
        ),
    ];
    for (path, body, code) in cases {
        let r = call(&proxy.url(path), body.to_string(), &[]).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "{path} {body}: {}",
            r.text()
        );
        assert_eq!(r.error()["type"], "upstream_error", "{}", r.text());
        assert_eq!(r.error()["code"], code, "{path} {body}: {}", r.text());
    }
    let (path, _, _) = upstream.last();
    assert_eq!(path, "/v1/completions");
}
