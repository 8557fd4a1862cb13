//! API keys, rate limits and quotas: 401 without a key, 403 for what a key may not use, 429
//! with Retry-After naming the limit (and nothing sent upstream), limits that hold exactly
//! under concurrency, daily quotas in OpenAI's headers, reloads that keep counters, and
//! secrets that never show.

use std::sync::Arc;

use http::StatusCode;
use sha2::Digest;

use crate::support::*;

const SECRET: &str = "tg-test-secret-0123456789abcdef";
const OTHER: &str = "tg-other-secret-fedcba9876543210";

/// Two keys: `alpha` from the environment, `beta` by its SHA-256.
fn config(alpha_extra: &str) -> String {
    let digest = hex(&sha2::Sha256::digest(OTHER.as_bytes()));
    config_text(None, "").replace("auth = \"none\"\n", "")
        + &format!(
            r#"
[keys.alpha]
secret = "${{TG_ALPHA_KEY}}"
{alpha_extra}

[keys.beta]
sha256 = "{digest}"
models = ["sim-model"]
modes = ["instant", "thinking"]
"#
        )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn start(alpha_extra: &str) -> Proxy {
    Proxy::start_with_env(&config(alpha_extra), &[("TG_ALPHA_KEY", SECRET)]).await
}

/// Swaps in `text` the way a reload does (the same environment as [`start`]).
fn reload(proxy: &Proxy, text: &str) {
    let env = |v: &str| (v == "TG_ALPHA_KEY").then(|| SECRET.to_string());
    let next = thinkgate_config::Config::parse(text, std::path::Path::new("t.toml"), &env).unwrap();
    let current = proxy.runtime.load_full();
    let rebuilt = current.rebuild(next).unwrap();
    proxy.runtime.store(Arc::new(rebuilt));
}

fn bearer(key: &'static str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

async fn ask(proxy: &Proxy, model: &str, headers: &[(&str, &str)]) -> Reply {
    call(
        &proxy.url("/v1/chat/completions"),
        chat(model, false),
        headers,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_checked() {
    let proxy = start("").await;
    let r = ask(&proxy, "sim-model", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error()["code"], "invalid_api_key");
    let r = ask(&proxy, "sim-model", &[("authorization", "Bearer sk-wrong")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        !r.text().contains("sk-wrong"),
        "the presented key is not echoed"
    );
    let (h, v) = bearer(SECRET);
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        ask(&proxy, "sim-model", &[("x-api-key", OTHER)])
            .await
            .status,
        StatusCode::OK
    );
    // The models list needs a key too; health does not.
    assert_eq!(
        get(&proxy.url("/v1/models")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&proxy.url("/healthz")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_uses_only_its_models_modes_and_budget() {
    let proxy = start("max_budget = { thinking = 5 }").await;
    let beta = [("x-api-key", OTHER)];
    let r = ask(&proxy, "auto", &beta).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error()["code"], "model_not_allowed");
    assert!(r.error()["message"].as_str().unwrap().contains("`auto`"));
    let r = ask(&proxy, "sim-model:contemplating", &beta).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error()["code"], "mode_not_allowed");
    // alpha's thinking budget is capped at 5 whatever the mode allows.
    let (h, v) = bearer(SECRET);
    let r = ask(&proxy, "sim-model:thinking", &[(h, &v)]).await;
    assert_eq!(r.header("x-thinkgate-reasoning-budget"), "5");
    assert!(
        r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            <= 5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_limit_is_429_with_retry_after_and_nothing_is_sent() {
    let proxy = start("requests_per_minute = 3").await;
    let (h, v) = bearer(SECRET);
    for _ in 0..3 {
        let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r
            .header("x-ratelimit-remaining-requests")
            .parse::<u32>()
            .is_ok());
    }
    let started = proxy.sim_stats()["started"].as_u64();
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let e = r.error();
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("requests per minute"));
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        proxy.sim_stats()["started"].as_u64(),
        started,
        "nothing reached the upstream"
    );
    let m = get(&proxy.url("/metrics")).await.text();
    assert!(
        m.contains("thinkgate_rate_limited_total{key=\"alpha\",limit=\"requests per minute\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_on_one_key_get_exactly_the_limit() {
    let proxy = Arc::new(start("requests_per_minute = 20").await);
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(async move {
            let (h, v) = bearer(SECRET);
            ask(&proxy, "sim-model", &[(h, &v)]).await.status
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((ok, limited), (20, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limits_charge_the_prompt_first_and_the_output_after() {
    // 14 output tokens per request (8 of them reasoning); prompts are ~12 tokens.
    let proxy = start("tokens_per_minute = 40").await;
    let (h, v) = bearer(SECRET);
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::OK
    );
    // 12 + 14 charged; the next prompt fits in what is left...
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::OK
    );
    // ...and then the output it spent puts the key over.
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute"));
    // A prompt larger than a minute's worth can never pass.
    let proxy = start("tokens_per_minute = 5").await;
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_quotas_show_in_the_headers_and_stop_the_key_when_spent() {
    let proxy =
        start("output_tokens_per_day = 30\nreasoning_tokens_per_day = { thinking = 100 }").await;
    let (h, v) = bearer(SECRET);
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), "30");
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens"),
        "16",
        "30 - 14 spent"
    );
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::OK
    );
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("output tokens per day"));
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!(retry <= 86_400);

    // Reasoning per day in one mode (8 per thinking request here).
    let proxy = start("reasoning_tokens_per_day = { thinking = 10 }").await;
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let r = ask(&proxy, "sim-model:thinking", &[(h, &v)]).await;
        assert_eq!(r.status, expected, "{}", r.text());
    }
    // Other modes are not limited by it.
    assert_eq!(
        ask(&proxy, "sim-model:instant", &[(h, &v)]).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_unchanged_keys_counters_and_drops_removed_keys() {
    let proxy = start("requests_per_minute = 2").await;
    let (h, v) = bearer(SECRET);
    for _ in 0..2 {
        assert_eq!(
            ask(&proxy, "sim-model", &[(h, &v)]).await.status,
            StatusCode::OK
        );
    }
    // Reload with another change elsewhere: alpha's counter is kept, so it stays limited.
    reload(
        &proxy,
        &config("requests_per_minute = 2")
            .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"6s\""),
    );
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Removed from the file: refused.
    reload(
        &proxy,
        &config("").replace("[keys.alpha]\nsecret = \"${TG_ALPHA_KEY}\"\n", ""),
    );
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_limit_holds_across_keys() {
    let text = config("").replace(
        "capabilities = [\"tools\", \"reasoning\"]\n",
        "capabilities = [\"tools\", \"reasoning\"]\nrequests_per_second = 1\n",
    );
    let proxy = Proxy::start_with_env(&text, &[("TG_ALPHA_KEY", SECRET)]).await;
    let (h, v) = bearer(SECRET);
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::OK
    );
    let r = ask(&proxy, "sim-model", &[("x-api-key", OTHER)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("model `sim-model`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_metrics_or_errors() {
    let server = Binary::spawn(
        "key-secrets",
        &config("requests_per_minute = 1"),
        &[("TG_ALPHA_KEY", SECRET), ("RUST_LOG", "debug")],
    );
    let url = server.url("/v1/chat/completions");
    let body = chat("sim-model", false);
    let mut texts = Vec::new();
    for auth in [
        format!("Bearer {SECRET}"),
        format!("Bearer {SECRET}"),
        "Bearer tg-not-a-key".to_string(),
    ] {
        let r = call(&url, body.clone(), &[("authorization", &auth)]).await;
        texts.push(r.text());
    }
    texts.push(get(&server.url("/metrics")).await.text());
    assert!(texts[3].contains("key=\"alpha\""), "the name is the label");
    let logs: Vec<String> = server.logs.try_iter().collect();
    for t in texts.iter().chain(logs.iter()).chain(server.startup.iter()) {
        assert!(!t.contains(SECRET), "secret leaked: {t}");
        assert!(!t.contains("tg-not-a-key"), "presented key leaked: {t}");
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("key=alpha") || l.contains("\"key\":\"alpha\"")),
        "{logs:?}"
    );
}

#[test]
fn running_without_keys_must_be_said_and_stays_on_loopback() {
    let base = config_text(None, "").replace("auth = \"none\"\n", "");
    let err = thinkgate_config::Config::parse(&base, std::path::Path::new("t.toml"), &|_| None)
        .unwrap_err();
    assert!(err.to_string().contains("auth = \"none\""), "{err}");
    let public =
        config_text(None, "").replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8080\"");
    let err = thinkgate_config::Config::parse(&public, std::path::Path::new("t.toml"), &|_| None)
        .unwrap_err();
    assert!(
        err.to_string().contains("server.listen") && err.to_string().contains("loopback"),
        "{err}"
    );
    let allowed = public.replace("[server]\n", "[server]\nallow_public_without_auth = true\n");
    assert!(
        thinkgate_config::Config::parse(&allowed, std::path::Path::new("t.toml"), &|_| None)
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contemplating_request_charges_every_agent_to_the_key() {
    let proxy = start("reasoning_tokens_per_day = { contemplating = 20 }").await;
    let (h, v) = bearer(SECRET);
    let r = ask(&proxy, "sim-model:contemplating", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let spent = r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        spent > 20,
        "three agents and a synthesis think more than one call: {spent}"
    );
    // All of it was charged: the quota is spent after one request.
    let r = ask(&proxy, "sim-model:contemplating", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("contemplating quota 20"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_cannot_all_pass_a_daily_quota_only_one_fits_in() {
    // Each request may write 60 tokens (its max_tokens); the quota is 100. Admitted requests
    // hold what they may spend until they end, so of ten slow requests in flight at once at
    // most two pass (the second holding only the 40 left), not all ten.
    let proxy = start("output_tokens_per_day = 100").await;
    let (h, v) = bearer(SECRET);
    let url = proxy.url("/v1/chat/completions");
    let body = serde_json::json!({
        "model": "sim-model", "max_tokens": 60,
        "messages": [{"role": "user", "content": "What is two plus two?"}]
    })
    .to_string();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (url, body, v) = (url.clone(), body.clone(), v.clone());
            tokio::spawn(async move {
                call(&url, body, &[(h, &v), ("x-sim-ttft-ms", "400")])
                    .await
                    .status
            })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        if c.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(
        (1..=2).contains(&ok),
        "{ok} of 10 concurrent requests passed a quota of 100"
    );
    // Once they have ended, the holds are let go: what was spent (14 each) is what counts.
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let left: u64 = r.header("x-ratelimit-remaining-tokens").parse().unwrap();
    assert_eq!(left, 100 - 14 * ok, "holds were let go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_models_limit_refuses_is_not_charged_to_the_key() {
    // The key may make two requests a minute; the model takes one a second.
    let text = config("requests_per_minute = 2").replace(
        "capabilities = [\"tools\", \"reasoning\"]\n\n[simulator]",
        "capabilities = [\"tools\", \"reasoning\"]\nrequests_per_second = 1\n\n[simulator]",
    );
    assert!(text.contains("requests_per_second = 1"), "{text}");
    let proxy = Proxy::start_with_env(&text, &[("TG_ALPHA_KEY", SECRET)]).await;
    let (h, v) = bearer(SECRET);
    assert_eq!(
        ask(&proxy, "sim-model", &[(h, &v)]).await.status,
        StatusCode::OK
    );
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().contains("model `sim-model`"), "{}", r.text());
    // The model's second has passed; the key still has its second request of the minute.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = ask(&proxy, "sim-model", &[(h, &v)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
