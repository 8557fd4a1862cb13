//! Scale-out: three replicas sharing one key's limits and quotas in a real `redis-server` on
//! loopback. A client spreads concurrent requests over them; the limit holds as in one
//! process, the daily quota as in one process, and killing Redis gives the configured
//! behaviour with no hung request, then the replicas share again when it is back.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::support::*;

const SECRET: &str = "tg-scale-secret-0123456789abcdef";

/// Three replicas' config; `state` adds to `[state]` (the accuracy tests give Redis the
/// longest timeout, 1s, which a debug build under a burst of concurrent requests and a
/// parallel test run needs; the failure test a short one).
fn config(redis: &str, key_limits: &str, state: &str) -> String {
    config_text(None, "").replace("auth = \"none\"\n", "")
        + &format!(
            r#"
[keys.team]
secret = "${{TEAM_KEY}}"
{key_limits}

[state]
backend = "redis"
url = "{redis}"
replicas = 3
{state}
"#
        )
}

async fn replicas(text: &str) -> Vec<Proxy> {
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(Proxy::start_with_env(text, &[("TEAM_KEY", SECRET)]).await);
    }
    // Each connects to Redis in the background.
    for p in &all {
        eventually("the replica reaches Redis", || {
            p.runtime
                .load()
                .shared_state
                .as_ref()
                .is_some_and(|s| s.connected())
        })
        .await;
    }
    all
}

/// The same key in one process with the memory backend.
async fn one_process(key_limits: &str) -> Proxy {
    let text = config_text(None, "").replace("auth = \"none\"\n", "")
        + &format!("\n[keys.team]\nsecret = \"${{TEAM_KEY}}\"\n{key_limits}\n");
    Proxy::start_with_env(&text, &[("TEAM_KEY", SECRET)]).await
}

async fn ask(proxy: &Proxy, body: &str) -> Reply {
    let auth = format!("Bearer {SECRET}");
    call(
        &proxy.url("/v1/chat/completions"),
        body.to_string(),
        &[("authorization", &auth)],
    )
    .await
}

/// Sends requests until one is admitted through every replica (Redis reached by all).
async fn warm(all: &[Proxy]) {
    for p in all {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = get(&p.url("/metrics")).await.text();
            if series(&up, "thinkgate_state_backend_up", &[]) == 1.0 {
                break;
            }
            let _ = ask(p, &chat("sim-model", false)).await;
            assert!(Instant::now() < deadline, "a replica never reached Redis");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_one_request_limit_together() {
    let redis = RedisServer::start();
    // A burst of 120, refilled at one a minute: over the test, 120 admitted (121 if a minute
    // passes), whichever replica a request reaches. Without Redis each would admit 120.
    let text = config(
        &redis.url(),
        "requests_per_minute = 1\nburst = 120",
        "timeout = \"1s\"",
    );
    let all = replicas(&text).await;
    // Redis is reached by the first admissions, which count like any other.
    let body = chat("sim-model", false);
    let sent = join_all((0..360).map(|i| {
        let (p, body) = (&all[i % 3], body.clone());
        async move { ask(p, &body).await }
    }))
    .await;
    let admitted = sent.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = sent.iter().filter(|r| r.status == 429).collect();
    assert_eq!(admitted + refused.len(), 360, "only 200s and 429s");
    // The first admissions may have found Redis not yet connected (failing open at
    // 120 / 3 per replica): at most a few; the rest are counted in Redis.
    let fell_back: f64 = {
        let mut n = 0.0;
        for p in &all {
            let m = get(&p.url("/metrics")).await.text();
            n += series(
                &m,
                "thinkgate_state_unavailable_total",
                &[("on_failure", "open")],
            );
        }
        n
    };
    assert_eq!(fell_back, 0.0, "every admission was decided in Redis");
    assert!(
        (120..=121).contains(&admitted),
        "{admitted} admitted across 3 replicas for a burst of 120"
    );
    let e = refused[0].error();
    assert_eq!(e["code"], "rate_limit_exceeded", "{e}");
    assert!(!refused[0].header("retry-after").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_holds_across_replicas_as_in_one_process() {
    let quota = 200;
    let limits = format!("output_tokens_per_day = {quota}");
    // The same sequence against one process and against three replicas.
    let body = json!({"model": "sim-model", "max_tokens": 40,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let one = one_process(&limits).await;
    let alone = until_refused(&[&one], &body, "output tokens per day").await;
    let redis = RedisServer::start();
    let all = replicas(&config(&redis.url(), &limits, "timeout = \"1s\"")).await;
    let shared = until_refused(
        &all.iter().collect::<Vec<_>>(),
        &body,
        "output tokens per day",
    )
    .await;
    assert_eq!(
        shared, alone,
        "(admitted, spent) across replicas and in one process"
    );
    assert!(alone.1 >= quota, "the quota was used: {alone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_with_post_hoc_output_debits_hold_across_replicas() {
    // Prompts are taken at admission, output debited when each answer ends; a minute's
    // refill (2,000 / 60 s) is a few tokens over the test.
    let limits = "tokens_per_minute = 2000";
    let body = chat("sim-model", false);
    let one = one_process(limits).await;
    let alone = until_refused(&[&one], &body, "tokens per minute").await;
    let redis = RedisServer::start();
    let all = replicas(&config(&redis.url(), limits, "timeout = \"1s\"")).await;
    let shared = until_refused(&all.iter().collect::<Vec<_>>(), &body, "tokens per minute").await;
    assert!(alone.0 > 5, "the limit admits several: {alone:?}");
    // Within one request of each other: the refill between requests differs by timing.
    assert!(
        shared.0.abs_diff(alone.0) <= 1,
        "across replicas {shared:?}, alone {alone:?}"
    );
}

/// Sends `body` over `proxies` in turn, one at a time, until the quota refuses: how many were
/// admitted and the output tokens they spent.
async fn until_refused(proxies: &[&Proxy], body: &str, limit: &str) -> (usize, u64) {
    let (mut admitted, mut spent) = (0, 0);
    for i in 0..100 {
        let r = ask(proxies[i % proxies.len()], body).await;
        if r.status != 200 {
            assert_eq!(r.status, 429, "{}", r.text());
            assert!(r.text().contains(limit), "{}", r.text());
            break;
        }
        admitted += 1;
        spent += r.json()["usage"]["completion_tokens"].as_u64().unwrap();
        // The settlement lands before the next request (it is sent after the response,
        // off its path).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (admitted, spent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_or_open_as_configured_and_never_hangs() {
    for on_failure in ["closed", "open"] {
        let mut redis = RedisServer::start();
        let state = format!("on_failure = \"{on_failure}\"\ntimeout = \"50ms\"");
        let text = config(&redis.url(), "requests_per_minute = 1\nburst = 60", &state);
        let all = replicas(&text).await;
        warm(&all).await;
        redis.kill();
        let started = Instant::now();
        let sent = join_all((0..60).map(|i| {
            let p = &all[i % 3];
            async move {
                let one = Instant::now();
                let r = ask(p, &chat("sim-model", false)).await;
                (r, one.elapsed())
            }
        }))
        .await;
        let slowest = sent.iter().map(|(_, d)| *d).max().unwrap();
        assert!(
            slowest < Duration::from_secs(2),
            "{on_failure}: a request took {slowest:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let ok = sent.iter().filter(|(r, _)| r.status == 200).count();
        match on_failure {
            "closed" => {
                assert_eq!(ok, 0, "closed: nothing admitted without Redis");
                let e = sent[0].0.error();
                assert_eq!(e["code"], "rate_limit_state_unavailable", "{e}");
            }
            _ => {
                // Open: each replica admits by its local limits, a burst of 60 / 3.
                assert!(ok > 0 && ok <= 60, "open: {ok} admitted");
                let refused = sent.iter().find(|(r, _)| r.status == 429);
                if let Some((r, _)) = refused {
                    assert_eq!(r.error()["code"], "rate_limit_exceeded");
                }
            }
        }
        let m = get(&all[0].url("/metrics")).await.text();
        assert_eq!(series(&m, "thinkgate_state_backend_up", &[]), 0.0);
        assert!(
            series(
                &m,
                "thinkgate_state_unavailable_total",
                &[("on_failure", on_failure)]
            ) > 0.0
        );
        // Back again: the replicas reconnect by themselves and share the limits again.
        redis.restart();
        warm(&all).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_conversation_continues_on_another_replica_and_stays_its_keys() {
    let redis = RedisServer::start();
    let text = config(&redis.url(), "", "timeout = \"1s\"")
        + "\n[keys.other]\nsecret = \"${OTHER_KEY}\"\n";
    let mut all = Vec::new();
    for _ in 0..2 {
        let env = [
            ("TEAM_KEY", SECRET),
            ("OTHER_KEY", "tg-other-secret-0123456789"),
        ];
        all.push(Proxy::start_with_env(&text, &env).await);
    }
    for p in &all {
        let connected = || {
            p.runtime
                .load()
                .shared_state
                .as_ref()
                .is_some_and(|s| s.connected())
        };
        eventually("the replica reaches Redis", connected).await;
    }
    let team = format!("Bearer {SECRET}");
    let first = call(
        &all[0].url("/v1/responses"),
        json!({"model": "sim-model", "input": "remember the number 42"}).to_string(),
        &[("authorization", &team)],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_string();
    let next = json!({"model": "sim-model", "input": "which number?", "previous_response_id": id})
        .to_string();
    // The write goes to Redis after the response: the other replica finds it shortly.
    let mut found = None;
    for _ in 0..50 {
        let r = call(
            &all[1].url("/v1/responses"),
            next.clone(),
            &[("authorization", &team)],
        )
        .await;
        if r.status == 200 {
            found = Some(r);
            break;
        }
        assert_eq!(r.error()["code"], "previous_response_not_found");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = found.expect("the second replica continued the conversation");
    assert_eq!(r.json()["previous_response_id"], id.as_str());
    // Another key is told it does not exist, on either replica.
    let other = "Bearer tg-other-secret-0123456789";
    for p in &all {
        let r = call(
            &p.url("/v1/responses"),
            next.clone(),
            &[("authorization", other)],
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.error()["code"], "previous_response_not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_limits_into_redis_and_back() {
    let redis = RedisServer::start();
    let limits = "requests_per_minute = 1\nburst = 3";
    let proxy = one_process(limits).await;
    let env = |v: &str| (v == "TEAM_KEY").then(|| SECRET.to_string());
    let reload = |text: &str| {
        let next =
            thinkgate_config::Config::parse(text, std::path::Path::new("t.toml"), &env).unwrap();
        let rebuilt = proxy.runtime.load_full().rebuild(next).unwrap();
        proxy.runtime.store(std::sync::Arc::new(rebuilt));
    };
    let body = chat("sim-model", false);
    assert_eq!(ask(&proxy, &body).await.status, 200);
    // Into Redis: the key's state is rebuilt there (a fresh burst of 3), shared from now on.
    reload(&config(&redis.url(), limits, "timeout = \"1s\""));
    let connected = || {
        proxy
            .runtime
            .load()
            .shared_state
            .as_ref()
            .is_some_and(|s| s.connected())
    };
    eventually("the reloaded runtime reaches Redis", connected).await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(ask(&proxy, &body).await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429]);
    let m = get(&proxy.url("/metrics")).await.text();
    assert_eq!(series(&m, "thinkgate_state_backend_up", &[]), 1.0);
    assert_eq!(
        series(
            &m,
            "thinkgate_state_unavailable_total",
            &[("on_failure", "open")]
        ),
        0.0
    );
    // A second replica on the same Redis sees the spent burst.
    let other = Proxy::start_with_env(
        &config(&redis.url(), limits, "timeout = \"1s\""),
        &[("TEAM_KEY", SECRET)],
    )
    .await;
    let connected = || {
        other
            .runtime
            .load()
            .shared_state
            .as_ref()
            .is_some_and(|s| s.connected())
    };
    eventually("the second replica reaches Redis", connected).await;
    assert_eq!(ask(&other, &body).await.status, 429);
    // And back to memory: this process's own limiters again.
    reload(
        &(config_text(None, "").replace("auth = \"none\"\n", "")
            + &format!("\n[keys.team]\nsecret = \"${{TEAM_KEY}}\"\n{limits}\n")),
    );
    assert!(proxy.runtime.load().shared_state.is_none());
    assert_eq!(ask(&proxy, &body).await.status, 200);
}

#[tokio::test]
async fn a_redis_url_the_client_cannot_use_fails_the_load_without_echoing_it() {
    // The config accepts the scheme; the port is out of range, which the client refuses.
    let text = config("redis://:pw-secret@127.0.0.1:99999/0", "", "");
    let env = |v: &str| (v == "TEAM_KEY").then(|| SECRET.to_string());
    let cfg = thinkgate_config::Config::parse(&text, std::path::Path::new("t.toml"), &env).unwrap();
    let err = thinkgate_proxy::Runtime::build(cfg, None)
        .err()
        .expect("the load fails");
    assert!(err.contains("[state] url"), "{err}");
    assert!(!err.contains("pw-secret"), "{err}");
}

/// With the Redis state backend the response cache is Redis too: an answer one replica
/// stored is a hit on another, which calls no upstream; the entry expires in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_response_cache_in_redis() {
    let redis = RedisServer::start();
    let text =
        config(&redis.url(), "", "timeout = \"1s\"") + "\n[cache]\nenabled = true\nttl = \"30s\"\n";
    let all = replicas(&text).await;
    let body = serde_json::json!({"model": "sim-model", "temperature": 0,
        "messages": [{"role": "user", "content": "Which planet is largest?"}]})
    .to_string();
    let first = ask(&all[0], &body).await;
    assert_eq!(
        first.header("x-thinkgate-cache"),
        "miss",
        "{}",
        first.text()
    );
    // The store is written after the answer, in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("thinkgate:cache:*").is_empty() {
        assert!(Instant::now() < deadline, "the entry never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = redis.keys("thinkgate:cache:*").remove(0);
    let ttl: u64 = redis.cli(&["PTTL", &key])[0].parse().unwrap();
    assert!(
        (1..=30_000).contains(&ttl),
        "the entry expires with the TTL: {ttl} ms"
    );
    let second = ask(&all[1], &body).await;
    assert_eq!(
        second.header("x-thinkgate-cache"),
        "hit",
        "{}",
        second.text()
    );
    assert_eq!(second.json()["choices"], first.json()["choices"]);
    assert_eq!(second.json()["usage"], first.json()["usage"]);
    assert_eq!(
        all[1].sim_stats()["started"],
        0,
        "the hit called no upstream"
    );
    assert_eq!(all[2].sim_stats()["started"], 0);
    let stream = serde_json::json!({"model": "sim-model", "temperature": 0, "stream": true,
        "messages": [{"role": "user", "content": "Which planet is largest?"}]})
    .to_string();
    let a = ask(&all[2], &stream).await;
    while redis.keys("thinkgate:cache:*").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the stream's entry never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = ask(&all[0], &stream).await;
    assert_eq!(
        (a.header("x-thinkgate-cache"), b.header("x-thinkgate-cache")),
        ("miss", "hit")
    );
    assert_eq!(a.streamed().text("content"), b.streamed().text("content"));
}

/// A Redis that stops answering turns the cache's lookups into misses and its writes into
/// `unavailable`, with no request waiting longer than the state timeout allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_whose_redis_is_down_answers_from_upstream() {
    let mut redis = RedisServer::start();
    let text = config(
        &redis.url(),
        "",
        "timeout = \"50ms\"\non_failure = \"open\"",
    ) + "\n[cache]\nenabled = true\n";
    let all = replicas(&text).await;
    let body = serde_json::json!({"model": "sim-model", "temperature": 0,
        "messages": [{"role": "user", "content": "Which ocean is deepest?"}]})
    .to_string();
    assert_eq!(
        ask(&all[0], &body).await.header("x-thinkgate-cache"),
        "miss"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("thinkgate:cache:*").is_empty() {
        assert!(Instant::now() < deadline, "the entry never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.kill();
    let started = Instant::now();
    let r = ask(&all[0], &body).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-thinkgate-cache"),
        "miss",
        "no Redis: nothing to hit"
    );
    let lost = || async {
        let m = get(&all[0].url("/metrics")).await.text();
        series(
            &m,
            "thinkgate_cache_stores_total",
            &[("outcome", "unavailable")],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while lost().await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the failed write was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
