//! Retries, the retry budget and circuit breakers, end to end: the simulator fails on
//! purpose (`x-sim-fail-first` fails only the first tries of one request id, which the
//! proxy's retries of that request share) and the proxy's answers and metrics show what it
//! did about it.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

fn ask(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]}).to_string()
}

fn streamed(model: &str) -> String {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hello"}]})
        .to_string()
}

/// `thinkgate route --explain --server URL` with `body` on stdin: its exit code and what
/// it prints.
fn route_on_server(url: &str, body: &str) -> (i32, String) {
    let url = url.trim_end_matches('/');
    let (code, out, err) = run_cli(&["route", "--explain", "--server", url], body);
    (code, out + &err)
}

async fn scrape(proxy: &Proxy) -> String {
    get(&proxy.url("/metrics")).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_before_the_first_byte_is_retried_on_the_same_model_whole_and_streamed() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let fail_once = [("x-sim-fail-first", "1")];
    let r = call(
        &proxy.url("/v1/chat/completions"),
        ask("sim-model"),
        &fail_once,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-thinkgate-model"), "sim-model");
    assert_eq!(
        r.header("x-thinkgate-fallback-from"),
        "",
        "no other model was needed"
    );
    assert!(!r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());

    let r = call(
        &proxy.url("/v1/chat/completions"),
        streamed("sim-model"),
        &fail_once,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let s = r.streamed();
    assert!(s.done, "the retried stream is whole");
    assert_eq!(s.finish_reasons(), ["stop"]);

    let m = scrape(&proxy).await;
    let labels = [("model", "sim-model"), ("reason", "status_5xx")];
    assert_eq!(
        series(&m, "thinkgate_upstream_retries_total", &labels),
        2.0,
        "{m}"
    );
    let failed = [("model", "sim-model"), ("outcome", "error_status")];
    assert_eq!(
        series(&m, "thinkgate_upstream_requests_total", &failed),
        2.0
    );
    let ok = [("model", "sim-model"), ("outcome", "ok")];
    assert_eq!(series(&m, "thinkgate_upstream_requests_total", &ok), 2.0);
    // Each client request is counted once, as the success it became.
    let answered = [("model", "sim-model"), ("status", "200")];
    assert_eq!(series(&m, "thinkgate_requests_total", &answered), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_up_to_its_bound_and_a_longer_one_is_not_waited_for() {
    let extra = "\n[providers.sim.retry]\nmax_retry_after = \"2s\"\n";
    let proxy = Proxy::start(&config_text(None, extra)).await;
    let url = proxy.url("/v1/chat/completions");
    let asks_one_second = [
        ("x-sim-fail-first", "1"),
        ("x-sim-status", "429"),
        ("x-sim-retry-after", "1"),
    ];
    let started = Instant::now();
    let r = call(&url, ask("sim-model"), &asks_one_second).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "the retry waited for Retry-After: {:?}",
        started.elapsed()
    );

    // Asked for 30 s, over the 2 s bound: the 429 reaches the client at once, in OpenAI's
    // shape, with the upstream's Retry-After.
    let asks_long = [
        ("x-sim-fail-first", "1"),
        ("x-sim-status", "429"),
        ("x-sim-retry-after", "30"),
    ];
    let started = Instant::now();
    let r = call(&url, ask("sim-model"), &asks_long).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    r.error();
    let m = scrape(&proxy).await;
    let labels = [("model", "sim-model"), ("reason", "status_429")];
    assert_eq!(
        series(&m, "thinkgate_upstream_retries_total", &labels),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_retry_budget_stops_retries_and_says_so() {
    let text = config_text(None, "").replace(
        "[server]\n",
        "[server]\nretry_budget = 0.0\nmin_retries_per_second = 0\n",
    );
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let r = call(&url, ask("sim-model"), &[("x-sim-fail-first", "1")]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    r.error();
    let m = scrape(&proxy).await;
    let spent = [("provider", "sim")];
    assert_eq!(
        series(&m, "thinkgate_retry_budget_exhausted_total", &spent),
        1.0,
        "{m}"
    );
    assert_eq!(series(&m, "thinkgate_upstream_retries_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_retried_until_the_policy_gives_up() {
    let sim = SimServer::start().await;
    let extra = "\n[providers.dead.retry]\nattempts = 3\nbackoff = \"10ms\"\n";
    let proxy = Proxy::start(&config_text(Some(&sim.url()), extra)).await;
    let r = call(&proxy.url("/v1/chat/completions"), ask("dead-model"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    r.error();
    let m = scrape(&proxy).await;
    let labels = [("model", "dead-model"), ("reason", "unreachable")];
    assert_eq!(
        series(&m, "thinkgate_upstream_retries_total", &labels),
        2.0,
        "{m}"
    );
    let tried = [("model", "dead-model"), ("outcome", "unreachable")];
    assert_eq!(series(&m, "thinkgate_upstream_requests_total", &tried), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_try_has_its_own_timeout_inside_the_response_timeout() {
    let sim = SimServer::start().await;
    // The network model's upstream answers after 3 s; each try waits 300 ms, all of them
    // together at most the 2 s response_timeout.
    let extra =
        "\n[providers.net.retry]\nattempts = 10\nper_try_timeout = \"300ms\"\nbackoff = \"10ms\"\n";
    let proxy = Proxy::start(&config_text(Some(&sim.url()), extra)).await;
    let started = Instant::now();
    let slow = [("x-sim-ttft-ms", "3000")];
    let r = call(&proxy.url("/v1/chat/completions"), ask("net-model"), &slow).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert!(
        r.error()["message"].as_str().unwrap().contains("300ms"),
        "{}",
        r.text()
    );
    assert!(
        took < Duration::from_millis(2600),
        "bounded by response_timeout: {took:?}"
    );
    let m = scrape(&proxy).await;
    let retried = series(
        &m,
        "thinkgate_upstream_retries_total",
        &[("reason", "timeout")],
    );
    assert!(
        (3.0..=6.0).contains(&retried),
        "{retried} retries in 2 s of 300 ms tries: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_answers_at_once_with_retry_after_then_a_probe_closes_it() {
    let extra = "\n[providers.sim.retry]\nattempts = 1\n\
                 [providers.sim.breaker]\nconsecutive_failures = 2\nopen_for = \"1s\"\n";
    let proxy = Proxy::start(&config_text(None, extra)).await;
    let url = proxy.url("/v1/chat/completions");
    let failing = [("x-sim-status", "500")];
    for _ in 0..2 {
        let r = call(&url, ask("sim-model"), &failing).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the upstream's own error"
        );
    }
    // Open: nothing is sent, whatever the request.
    let r = call(&url, ask("sim-model"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.error()["code"], "circuit_open");
    assert_eq!(r.header("retry-after"), "1");
    let m = scrape(&proxy).await;
    let model = [("model", "sim-model")];
    assert_eq!(
        series(&m, "thinkgate_circuit_breaker_state", &model),
        2.0,
        "{m}"
    );
    assert_eq!(
        series(&m, "thinkgate_upstream_requests_total", &model),
        2.0,
        "{m}"
    );

    // The running server's plan shows it, over HTTP and through `route --explain --server`.
    let explained = call(&proxy.url("/v1/route"), ask("sim-model"), &[]).await;
    assert_eq!(explained.status, StatusCode::OK, "{}", explained.text());
    let plan: Value = explained.json();
    assert_eq!(plan["candidates"][0]["breaker"]["state"], "open", "{plan}");
    let (_, cli) = route_on_server(&proxy.url(""), &ask("sim-model"));
    assert!(cli.contains("circuit breaker open"), "{cli}");

    // After open_for the scrape shows it half-open, and one good probe closes it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = scrape(&proxy).await;
    assert_eq!(
        series(&m, "thinkgate_circuit_breaker_state", &model),
        1.0,
        "{m}"
    );
    let r = call(&url, ask("sim-model"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let m = scrape(&proxy).await;
    assert_eq!(
        series(&m, "thinkgate_circuit_breaker_state", &model),
        0.0,
        "{m}"
    );
    let to = |state| [("model", "sim-model"), ("to", state)];
    for (state, n) in [("open", 1.0), ("half_open", 1.0), ("closed", 1.0)] {
        assert_eq!(
            series(
                &m,
                "thinkgate_circuit_breaker_transitions_total",
                &to(state)
            ),
            n,
            "{state}: {m}"
        );
    }
}

/// `multi` served by two simulated providers: `s1` (upstream `one`) and `s2` (`two`).
fn by_provider(metrics: &str, outcome: &str) -> (f64, f64) {
    let n = |p| {
        series(
            metrics,
            "thinkgate_upstream_requests_total",
            &[("model", "multi"), ("provider", p), ("outcome", outcome)],
        )
    };
    (n("s1"), n("s2"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deployment_hands_over_to_the_other_one_and_is_then_avoided() {
    let text = deployments("", "", "", "[simulator.models.one]\nfault_status = 503\n");
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    for i in 0..10 {
        let r = call(&url, ask("multi"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert_eq!(r.header("x-thinkgate-model"), "multi");
        let from = r.header("x-thinkgate-fallback-from");
        assert!(from.is_empty() || from == "multi@s1", "{from}");
    }
    let m = scrape(&proxy).await;
    let (failed, _) = by_provider(&m, "error_status");
    // A failure goes to the other deployment at once (no retry on s1 while s2 is next), and
    // counts as a slow call, so the balancer turns to s2; five in a row would open s1's
    // breaker.
    assert!(
        (1.0..=5.0).contains(&failed),
        "{failed} failed calls to s1: {m}"
    );
    assert_eq!(by_provider(&m, "ok"), (0.0, 10.0));
    assert_eq!(
        series(
            &m,
            "thinkgate_upstream_retries_total",
            &[("model", "multi")]
        ),
        0.0
    );
    // The running server's plan shows both deployments.
    let plan = call(&proxy.url("/v1/route"), ask("multi"), &[])
        .await
        .json();
    let listed: Vec<&str> = plan["candidates"][0]["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["provider"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["s1", "s2"], "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_balancing_splits_calls_by_weight() {
    let text = deployments("balance = \"weighted\"", ", weight = 1", ", weight = 3", "");
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..200 {
        assert_eq!(call(&url, ask("multi"), &[]).await.status, StatusCode::OK);
    }
    let (one, two) = by_provider(&scrape(&proxy).await, "ok");
    assert_eq!(one + two, 200.0);
    // 150 expected on s2; 4.5 standard deviations either way is 120 to 180.
    assert!((120.0..=180.0).contains(&two), "s1 {one}, s2 {two}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_at_its_vendor_limit_is_skipped_not_tried() {
    // s1 takes 2 requests a minute and is always preferred; s2 takes the rest.
    let text = deployments("balance = \"ordered\"", ", requests_per_minute = 2", "", "");
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..6 {
        let r = call(&url, ask("multi"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let m = scrape(&proxy).await;
    // Weighted at 1000:1, s1 is first for nearly every request; past its limit it is
    // skipped without a call (no failed call is counted).
    let (one, two) = by_provider(&m, "ok");
    assert!(one <= 2.0 && one + two == 6.0, "s1 {one}, s2 {two}: {m}");
    assert_eq!(
        series(
            &m,
            "thinkgate_upstream_requests_total",
            &[("outcome", "error_status")]
        ),
        0.0
    );

    // A model served once, at its deployment's limit: a 429 naming the limit.
    let single = config_text(
        None,
        "\n[models.capped]\ncontext_window = 1000\ndeployments = [{ provider = \"sim\", requests_per_minute = 1 }]\n",
    );
    let proxy = Proxy::start(&single).await;
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(call(&url, ask("capped"), &[]).await.status, StatusCode::OK);
    let r = call(&url, ask("capped"), &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let message = r.error()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("deployment requests per minute (limit 1)"),
        "{message}"
    );
    assert!(!r.header("retry-after").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_is_hedged_on_the_next_deployment_and_the_loser_cancelled() {
    // s1 is always tried first and takes 3 s; after 150 ms the call also goes to s2.
    let text = deployments(
        "balance = \"ordered\"",
        "",
        "",
        "[providers.s1.retry]\nhedge_after = \"150ms\"\n[simulator.models.one]\ntime_to_first_token = \"3s\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let started = Instant::now();
    let r = call(&url, ask("multi"), &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        took < Duration::from_secs(2),
        "the hedge answered: {took:?}"
    );
    assert_eq!(r.json()["model"], "two", "s2's upstream model answered");
    let m = scrape(&proxy).await;
    let on = |provider, result| {
        series(
            &m,
            "thinkgate_hedges_total",
            &[("provider", provider), ("result", result)],
        )
    };
    assert_eq!((on("s2", "sent"), on("s2", "won")), (1.0, 1.0), "{m}");
    let cancelled = [("provider", "s1"), ("outcome", "cancelled")];
    assert_eq!(
        series(&m, "thinkgate_upstream_requests_total", &cancelled),
        1.0,
        "{m}"
    );

    // A stream is hedged until its first content: s1's head comes at once, its first token
    // only after 3 s, so s2's stream is the one the client gets, whole.
    let started = Instant::now();
    let r = call(&url, streamed("multi"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let s = r.streamed();
    assert!(s.done, "{}", r.text());
    let models: Vec<&str> = s
        .chunks
        .iter()
        .filter_map(|c| c["model"].as_str())
        .collect();
    assert!(models.iter().all(|m| *m == "two"), "{models:?}");
    let m = scrape(&proxy).await;
    assert_eq!(
        series(&m, "thinkgate_hedges_total", &[("result", "won")]),
        2.0,
        "{m}"
    );

    // Without a retry budget there is no hedge: the slow deployment answers.
    let spent = text.replace(
        "[server]\n",
        "[server]\nretry_budget = 0.0\nmin_retries_per_second = 0\n",
    );
    let proxy = Proxy::start(&spent).await;
    let started = Instant::now();
    let r = call(&proxy.url("/v1/chat/completions"), ask("multi"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(r.json()["model"], "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_before_content_moves_to_the_next_deployment_unseen() {
    // s1 (always first) sends its role chunk and resets before the first token.
    let text = deployments(
        "balance = \"ordered\"",
        "",
        "",
        "[simulator.models.one]\nfault_reset_after = 0\n",
    );
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let r = call(&url, streamed("multi"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-thinkgate-fallback-from"), "multi@s1");
    let s = r.streamed();
    assert!(s.done, "whole: {}", r.text());
    assert_eq!(s.finish_reasons(), ["stop"]);
    // Nothing of s1's stream reached the client: one role chunk, from s2.
    let models: Vec<&str> = s
        .chunks
        .iter()
        .filter_map(|c| c["model"].as_str())
        .collect();
    assert!(models.iter().all(|m| *m == "two"), "{models:?}");
    let m = scrape(&proxy).await;
    let broke = [("provider", "s1"), ("outcome", "broken")];
    assert_eq!(
        series(&m, "thinkgate_upstream_requests_total", &broke),
        1.0,
        "{m}"
    );

    // After content, a break is the client's to see: the stream ends with an error event.
    let late = deployments(
        "balance = \"ordered\"",
        "",
        "",
        "[simulator.models.one]\nfault_reset_after = 3\n",
    );
    let proxy = Proxy::start(&late).await;
    let r = call(&proxy.url("/v1/chat/completions"), streamed("multi"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let last: Value = serde_json::from_str(r.sse_data().last().unwrap()).unwrap();
    assert_eq!(
        last["error"]["code"],
        "upstream_stream_broken",
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_over_its_tokens_per_minute_rests_until_paid_back() {
    // s1 takes 60 tokens a minute and is always preferred. A call is admitted while its
    // prompt fits and nothing is owed; its output is charged when it ends. The first two
    // answers (about 10 prompt + 40 output tokens each) leave s1 owing, so it rests and the
    // next calls go to s2.
    let text = deployments(
        "balance = \"ordered\"",
        ", tokens_per_minute = 60",
        "",
        "[simulator.models.one]\nanswer_tokens = 40\nreasoning = \"none\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let mut answered = Vec::new();
    for _ in 0..4 {
        let r = call(&url, ask("multi"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        answered.push(r.json()["model"].as_str().unwrap().to_string());
    }
    assert_eq!(answered, ["one", "one", "two", "two"]);
    let m = scrape(&proxy).await;
    assert_eq!(by_provider(&m, "ok"), (2.0, 2.0), "{m}");
    assert_eq!(
        series(
            &m,
            "thinkgate_upstream_requests_total",
            &[("outcome", "error_status")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_before_content_moves_on_after_the_idle_timeout() {
    // s1 sends its role chunk, then nothing: after its 300 ms stream_idle_timeout the stream
    // goes to s2, unseen.
    let text = deployments(
        "balance = \"ordered\"",
        "",
        "",
        "[simulator.models.one]\nfault_stall_after = 0\n",
    )
    .replace(
        "[providers.s1]\nkind = \"simulator\"\n",
        "[providers.s1]\nkind = \"simulator\"\nstream_idle_timeout = \"300ms\"\n",
    );
    let proxy = Proxy::start(&text).await;
    let started = Instant::now();
    let r = call(&proxy.url("/v1/chat/completions"), streamed("multi"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(r.streamed().done, "{}", r.text());
    assert_eq!(r.header("x-thinkgate-fallback-from"), "multi@s1");
    let m = scrape(&proxy).await;
    let timed_out = [("provider", "s1"), ("outcome", "timeout")];
    assert_eq!(
        series(&m, "thinkgate_upstream_requests_total", &timed_out),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_plan_refuses_a_bad_body_and_the_cli_names_a_server_it_cannot_reach() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let r = call(&proxy.url("/v1/route"), "{not json", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    r.error();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, out) = route_on_server(&url, &ask("sim-model"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("cannot reach {url}/v1/route")),
        "{out}"
    );
}
