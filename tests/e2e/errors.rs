//! Every error a client can meet, each OpenAI-shaped with the right status.

use http::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_naming_the_position() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        "{\"model\": \"sim-model\",\n \"messages\": [,]}",
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e = r.error();
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "invalid_json");
    assert!(
        e["message"].as_str().unwrap().contains("line 2 column"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_field_type_is_400_naming_the_field() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    for (body, param) in [
        (
            json!({"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "sim-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            "max_tokens",
        ),
        (json!({"model": 5, "messages": []}), "model"),
        (
            json!({"model": "sim-model", "messages": [{"role": "user", "content": {"x": 1}}]}),
            "messages[0].content",
        ),
        (json!({"model": "sim-model"}), "messages"),
    ] {
        let r = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let e = r.error();
        assert_eq!(e["param"], param, "{e}");
        assert!(e["message"].as_str().unwrap().contains(param), "{e}");
    }
    assert_eq!(
        proxy.sim_stats()["started"],
        0,
        "nothing invalid reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let big = json!({"model": "sim-model", "messages": [{"role": "user", "content": "x".repeat(70_000)}]});
    let r = call(&proxy.url("/v1/chat/completions"), big.to_string(), &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error()["code"], "request_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_is_404_model_not_found() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    for model in ["gpt-9", "auto:fast", "sim-model:slow"] {
        let r = call(&proxy.url("/v1/chat/completions"), chat(model, false), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{model}");
        let e = r.error();
        assert_eq!(e["code"], "model_not_found");
        assert_eq!(e["param"], "model");
        assert!(e["message"].as_str().unwrap().contains(model));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("dead-model", false),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let e = r.error();
    assert_eq!(e["code"], "upstream_unreachable");
    assert!(e["message"].as_str().unwrap().contains("`dead`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    // response_timeout is 2 s for this provider; the upstream takes 10 s to answer.
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("net-model", false),
        &[("x-sim-ttft-ms", "10000")],
    )
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.error()["code"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_bodies_pass_through_with_their_status() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    for status in ["400", "429", "500", "503"] {
        let via_proxy = call(
            &proxy.url("/v1/chat/completions"),
            chat("net-model", false),
            &[("x-sim-status", status)],
        )
        .await;
        assert_eq!(via_proxy.status.as_str(), status);
        let direct = call(
            &format!("{}/v1/chat/completions", sim.url()),
            chat("upstream-net-model", false),
            &[("x-sim-status", status)],
        )
        .await;
        assert_eq!(
            via_proxy.body, direct.body,
            "the vendor's error body is passed as is"
        );
        via_proxy.error();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_without_its_key_is_503_naming_the_variable() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("keyless-model", false),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let e = r.error();
    assert_eq!(e["code"], "upstream_unavailable");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("THINKGATE_TEST_UNSET_KEY"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let r = call(&proxy.url("/v1/nothing"), "{}", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("/v1/nothing"));
    let r = get(&proxy.url("/v1/chat/completions")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    r.error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_broken_mid_way_ends_with_an_error_event_not_done() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    for model in ["sim-model", "net-model"] {
        let r = call(
            &proxy.url("/v1/chat/completions"),
            chat(model, true),
            &[("x-sim-reset-after", "4")],
        )
        .await;
        let events = r.sse_data();
        assert_ne!(
            events.last().unwrap(),
            "[DONE]",
            "{model}: a broken stream must not look complete"
        );
        let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(
            last["error"]["code"], "upstream_stream_broken",
            "{model}: {last}"
        );
        assert_eq!(
            events.len(),
            1 + 4 + 1,
            "{model}: role chunk, 4 tokens, the error"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_times_out_with_an_error_event() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    // stream_idle_timeout is 2 s for this provider.
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("net-model", true),
        &[("x-sim-stall-after", "2")],
    )
    .await;
    let events = r.sse_data();
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{events:?}");
    // The proxy gave up on the upstream, which sees the request cancelled.
    eventually("upstream sees the cancel", || sim.stat("cancelled") == 1).await;
}
