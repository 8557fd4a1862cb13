//! Token accounting and the Prometheus scrape.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// Sums of one metric family's samples by the values of `by`, from a text scrape.
fn sum_by(scrape: &str, family: &str, by: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for line in scrape
        .lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
    {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let name = head.split('{').next().unwrap();
        if name != family {
            continue;
        }
        let labels: BTreeMap<&str, &str> = head
            .split_once('{')
            .map(|(_, l)| l.trim_end_matches('}'))
            .unwrap_or("")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let key = by
            .iter()
            .map(|b| labels.get(b).copied().unwrap_or("").to_string())
            .collect();
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    out
}

async fn scrape(proxy: &Proxy) -> String {
    let r = get(&proxy.url("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    r.text()
}

/// The usage block a client received, from a whole response or a stream's usage chunk.
fn received_usage(r: &Reply, stream: bool) -> Value {
    if !stream {
        return r.json()["usage"].clone();
    }
    let events = r.sse_data();
    assert_eq!(events.last().unwrap(), "[DONE]", "{events:?}");
    let chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        chunk["choices"],
        json!([]),
        "the usage chunk comes last: {chunk}"
    );
    chunk["usage"].clone()
}

fn stream_body(model: &str, stream: bool) -> String {
    let mut body = json!({"model": model, "stream": stream,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is the boiling point of water at sea level?"}]});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_after_mixed_traffic_passes_promtool_and_equals_client_usage() {
    let sim = SimServer::start().await;
    // sim-model is priced, so the scrape's cost can be checked against the usage served.
    let text = config_text(Some(&sim.url()), "").replace(
        "upstream_model = \"upstream-sim-model\"",
        "upstream_model = \"upstream-sim-model\"\nprice_input_per_mtok = 2.0\nprice_output_per_mtok = 8.0",
    );
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut add = |model: &str, usage: &Value| {
        for (kind, v) in [
            ("prompt", &usage["prompt_tokens"]),
            ("output", &usage["completion_tokens"]),
            (
                "reasoning",
                &usage["completion_tokens_details"]["reasoning_tokens"],
            ),
            // The parts of the prompt the upstream's cache served and stored.
            (
                "cache_read",
                &usage["prompt_tokens_details"]["cached_tokens"],
            ),
            ("cache_write", &usage["cache_creation_input_tokens"]),
        ] {
            *expected
                .entry((model.to_string(), kind.to_string()))
                .or_default() += v.as_u64().unwrap_or(0);
        }
    };
    for (model, stream, style) in [
        ("sim-model", false, "full"),
        ("sim-model", true, "full"),
        ("net-model", false, "full"),
        ("net-model", true, "full"),
        ("sim-model", false, "basic"),
        ("net-model", true, "basic"),
        ("sim-model", false, "none"),
        ("net-model", true, "none"),
        ("sim-model", true, "inconsistent"),
        ("net-model", false, "inconsistent"),
        ("auto", false, "full"),
        ("auto:thinking", true, "full"),
    ] {
        let r = call(&url, stream_body(model, stream), &[("x-sim-usage", style)]).await;
        assert_eq!(r.status, StatusCode::OK, "{model} {style}: {}", r.text());
        let served = r.headers["x-thinkgate-model"].to_str().unwrap().to_string();
        add(&served, &received_usage(&r, stream));
    }
    // Errors count as requests, not tokens.
    assert_eq!(call(&url, "{", &[]).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        call(&url, chat("nope", false), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&url, chat("dead-model", false), &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        call(&url, chat("net-model", false), &[("x-sim-status", "429")])
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let text = scrape(&proxy).await;
    let tokens = sum_by(&text, "thinkgate_tokens_total", &["model", "kind"]);
    for ((model, kind), want) in &expected {
        let got = tokens
            .get(&vec![model.clone(), kind.clone()])
            .copied()
            .unwrap_or(0.0);
        assert_eq!(
            got as u64, *want,
            "{model}/{kind}: scrape {got} vs clients {want}\n{text}"
        );
    }
    assert_eq!(
        tokens.values().sum::<f64>() as u64,
        expected.values().sum::<u64>()
    );

    let requests = sum_by(&text, "thinkgate_requests_total", &["endpoint", "status"]);
    let n = |status: &str| {
        requests
            .get(&vec!["chat_completions".to_string(), status.to_string()])
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(n("200"), 12.0);
    assert_eq!(
        (n("400"), n("404"), n("502"), n("429")),
        (1.0, 1.0, 1.0, 1.0)
    );
    let sources = sum_by(&text, "thinkgate_tokens_total", &["source"]);
    assert!(
        sources[&vec!["estimated".to_string()]] > 0.0,
        "usage-less responses are counted as estimated"
    );
    let upstream = sum_by(
        &text,
        "thinkgate_upstream_requests_total",
        &["provider", "outcome"],
    );
    // Two tries: the default retry policy sends a refused connection again once.
    assert_eq!(
        upstream[&vec!["dead".to_string(), "unreachable".to_string()]],
        2.0
    );
    let retries = sum_by(
        &text,
        "thinkgate_upstream_retries_total",
        &["provider", "reason"],
    );
    assert_eq!(
        retries[&vec!["dead".to_string(), "unreachable".to_string()]],
        1.0
    );
    // The 429 too, after its Retry-After (1 s).
    assert_eq!(
        upstream[&vec!["net".to_string(), "error_status".to_string()]],
        2.0
    );
    assert_eq!(
        retries[&vec!["net".to_string(), "status_429".to_string()]],
        1.0
    );
    let routed = sum_by(
        &text,
        "thinkgate_routing_decisions_total",
        &["domain", "model"],
    );
    // Both `auto` requests were routed (to whichever domain the boiling point of water is).
    let to_sim: f64 = routed
        .iter()
        .filter(|(k, _)| k[1] == "sim-model")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(to_sim, 2.0, "{routed:?}");
    assert!(
        text.contains("thinkgate_in_flight_requests 0"),
        "nothing is in flight (the scrape is not traffic)"
    );
    assert!(text.contains(&format!(
        "thinkgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    let cost = sum_by(&text, "thinkgate_cost_usd_total", &["model"]);
    let tokens = |kind: &str| expected[&("sim-model".to_string(), kind.to_string())] as f64;
    let want = tokens("prompt") * 2e-6 + tokens("output") * 8e-6;
    let got = cost[&vec!["sim-model".to_string()]];
    assert!(
        want > 0.0 && (got - want).abs() < 1e-9,
        "cost {got}, served usage costs {want}"
    );
    assert_eq!(
        cost[&vec!["net-model".to_string()]],
        0.0,
        "an unpriced model costs nothing"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs Debian's `prometheus` package)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every response's usage holds the invariants clients rely on, whatever the upstream sent;
/// the exact blocks are pinned in `tests/golden/usage.json` (set `UPDATE_GOLDEN=1` to rewrite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_invariants_hold_on_every_response() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let url = proxy.url("/v1/chat/completions");
    let mut seen = serde_json::Map::new();
    for style in ["full", "basic", "none", "inconsistent"] {
        for stream in [false, true] {
            let r = call(
                &url,
                stream_body("sim-model", stream),
                &[("x-sim-usage", style)],
            )
            .await;
            let u = received_usage(&r, stream);
            let (p, c, t) = (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
                u["total_tokens"].as_u64().unwrap(),
            );
            let reasoning = u["completion_tokens_details"]["reasoning_tokens"]
                .as_u64()
                .unwrap_or_else(|| panic!("{style}: reasoning_tokens missing: {u}"));
            assert!(
                reasoning <= c,
                "{style}/{stream}: reasoning {reasoning} > completion {c}"
            );
            assert_eq!(t, p + c, "{style}/{stream}: total");
            if style == "inconsistent" {
                assert_eq!(
                    u["prompt_tokens_details"]["cached_tokens"], 3,
                    "cached tokens preserved"
                );
            }
            seen.insert(
                format!("{style}/{}", if stream { "stream" } else { "whole" }),
                u,
            );
        }
    }
    // The count the proxy makes when the upstream reports none equals the upstream's own.
    assert_eq!(
        seen["none/whole"]["completion_tokens"],
        seen["full/whole"]["completion_tokens"]
    );
    let golden_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/usage.json");
    let actual = serde_json::to_string_pretty(&Value::Object(seen)).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &actual).unwrap();
    }
    let golden = std::fs::read_to_string(&golden_path).expect("golden file exists");
    assert_eq!(
        actual,
        golden,
        "usage blocks differ from {}",
        golden_path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_upstream_usage_are_counted_within_two_percent() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let url = proxy.url("/v1/chat/completions");
    let headers = [
        ("x-sim-reasoning-tokens", "900"),
        ("x-sim-answer-tokens", "400"),
    ];
    let truth = received_usage(
        &call(
            &url,
            stream_body("sim-model", true),
            &[headers[0], headers[1], ("x-sim-usage", "full")],
        )
        .await,
        true,
    );
    let counted = received_usage(
        &call(
            &url,
            stream_body("sim-model", true),
            &[headers[0], headers[1], ("x-sim-usage", "none")],
        )
        .await,
        true,
    );
    for field in ["completion_tokens", "prompt_tokens"] {
        let (t, c) = (
            truth[field].as_f64().unwrap(),
            counted[field].as_f64().unwrap(),
        );
        assert!(
            (c - t).abs() / t <= 0.02,
            "{field}: counted {c} vs upstream {t}"
        );
    }
    let (t, c) = (
        truth["completion_tokens_details"]["reasoning_tokens"]
            .as_f64()
            .unwrap(),
        counted["completion_tokens_details"]["reasoning_tokens"]
            .as_f64()
            .unwrap(),
    );
    assert!(
        (c - t).abs() / t <= 0.02,
        "reasoning: counted {c} vs upstream {t}"
    );
    let text = scrape(&proxy).await;
    let by_source = sum_by(&text, "thinkgate_tokens_total", &["kind", "source"]);
    assert_eq!(
        by_source[&vec!["output".to_string(), "estimated".to_string()]],
        counted["completion_tokens"].as_f64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_answers_and_disconnects_are_counted() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let url = proxy.url("/v1/chat/completions");
    // The cap is spent on reasoning: finish_reason length, no answer.
    let body = json!({"model": "sim-model", "max_completion_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = call(&url, body.to_string(), &[]).await;
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    let text = scrape(&proxy).await;
    let empty = sum_by(&text, "thinkgate_empty_answers_total", &["model", "reason"]);
    assert_eq!(
        empty[&vec!["sim-model".to_string(), "reasoning_exhausted".to_string()]],
        1.0
    );

    let resp = send(
        &url,
        "POST",
        chat("sim-model", true),
        &[("x-sim-stall-after", "2")],
    )
    .await;
    drop(resp);
    eventually("the abandoned stream is accounted", || {
        proxy.sim_stats()["cancelled"] == 1
    })
    .await;
    let mut done = false;
    for _ in 0..100 {
        let text = scrape(&proxy).await;
        let up = sum_by(&text, "thinkgate_upstream_requests_total", &["outcome"]);
        if up.get(&vec!["cancelled".to_string()]) == Some(&1.0)
            && text.contains("thinkgate_in_flight_requests 0")
        {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        done,
        "a disconnected stream is recorded as cancelled and leaves no request in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reads_a_live_endpoint_and_a_saved_scrape() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let mut domain = String::new();
    for _ in 0..3 {
        let r = call(
            &proxy.url("/v1/chat/completions"),
            chat("auto:thinking", false),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        domain = r.header("x-thinkgate-domain").to_string();
    }
    let run = |source: String| {
        let out = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
            .args(["report", "--metrics", &source])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let url = proxy.url("/metrics");
    let live = tokio::task::spawn_blocking(move || run(url)).await.unwrap();
    let row: Vec<&str> = live
        .lines()
        .find(|l| l.starts_with("sim-model"))
        .expect(&live)
        .split_whitespace()
        .collect();
    // 3 requests; 14 output and 8 reasoning tokens each: 57.1 % of output is reasoning.
    // Thinking mode tells the model its budget: 21 tokens of hint on a 12-token prompt.
    assert_eq!(
        row,
        [
            "sim-model",
            "thinking",
            domain.as_str(),
            "3",
            "33",
            "14",
            "8",
            "57.1"
        ],
        "{live}"
    );

    let file = std::env::temp_dir().join(format!("thinkgate-scrape-{}.txt", std::process::id()));
    std::fs::write(&file, scrape(&proxy).await).unwrap();
    let path = file.to_str().unwrap().to_string();
    let saved = tokio::task::spawn_blocking(move || run(path))
        .await
        .unwrap();
    assert!(saved.contains("sim-model"), "{saved}");

    // A file that is no scrape is said to be none, with a failing exit.
    std::fs::write(&file, "model,tokens\nm,3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args(["report", "--metrics", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not a scrape of thinkgate's /metrics"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_has_its_series_at_zero_before_any_traffic() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let text = scrape(&proxy).await;
    let tokens = sum_by(&text, "thinkgate_tokens_total", &["model", "kind"]);
    for kind in ["prompt", "output", "reasoning"] {
        assert_eq!(
            tokens.get(&vec!["sim-model".to_string(), kind.to_string()]),
            Some(&0.0),
            "{kind}"
        );
    }
    let outcomes = sum_by(&text, "thinkgate_upstream_requests_total", &["outcome"]);
    for outcome in [
        "ok",
        "error_status",
        "unreachable",
        "timeout",
        "broken",
        "cancelled",
    ] {
        assert_eq!(
            outcomes.get(&vec![outcome.to_string()]),
            Some(&0.0),
            "{outcome}"
        );
    }
    assert!(text.contains("thinkgate_in_flight_requests 0"));
}
