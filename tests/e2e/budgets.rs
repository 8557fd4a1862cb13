//! Reasoning modes and budgets: the mode resolves from the request and the config, each
//! upstream gets the budget in its own knob, and the budget holds on upstreams that honour
//! it (vLLM's hard cap), soften it (Anthropic, Gemini, OpenRouter overshoot), or ignore it
//! (SGLang, llama.cpp, DeepSeek, a generic server) — whole and streamed, always with an answer.

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// The thinking budget of the test config; the simulated models think 4× as long.
const BUDGET: u64 = 40;
const NATURAL: &str = "160";

/// Upstreams by how they treat the budget, with the enforcement the response must report.
const UPSTREAMS: [(&str, &str); 12] = [
    ("vllm", "native"),
    ("sglang", "forced"),
    ("llamacpp", "native"),
    // A llama.cpp build without per-request budgets: forced by prefill.
    ("llamacpp-legacy", "forced"),
    ("deepseek", "forced"),
    ("ollama", "native"),
    ("openrouter", "cut"),
    ("muse-spark", "native"),
    ("openai", "native"),
    ("anthropic", "cut"),
    ("gemini", "cut"),
    ("generic", "cut"),
];

fn config() -> String {
    let mut extra = String::from(
        r#"
[modes]
default = "thinking"

[modes.instant]
reasoning_budget = 8
answer_reserve = 20

[modes.thinking]
reasoning_budget = 40
answer_reserve = 20
budget_hint = false

[modes.contemplating]
reasoning_budget = 40
answer_reserve = 20
budget_hint = true
"#,
    );
    for (name, _) in UPSTREAMS {
        let speaks = match name {
            "anthropic" | "gemini" => format!("format = \"{name}\""),
            "generic" => String::new(),
            "llamacpp-legacy" => "dialect = \"llamacpp\"".to_string(),
            d => format!("dialect = \"{d}\""),
        };
        extra.push_str(&format!(
            r#"
[providers.p-{name}]
kind = "simulator"
{speaks}
forward_headers = ["x-sim-*"]

[models.{name}]
provider = "p-{name}"
upstream_model = "{name}-model"
context_window = 100000
capabilities = ["tools", "reasoning"]
"#
        ));
    }
    extra.push_str("\n[models.llamacpp-legacy.thinking]\nknob = \"none\"\n");
    config_text(None, &extra)
}

fn ask(model: &str, stream: bool, extra: Value) -> String {
    let mut body = json!({
        "model": model,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "How many primes are below 30?"}]
    });
    if !stream {
        body.as_object_mut().unwrap().remove("stream_options");
    }
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

fn reasoning_of(usage: &Value) -> u64 {
    usage["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reasoning count in {usage}"))
}

const LONG: [(&str, &str); 1] = [("x-sim-reasoning-tokens", NATURAL)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_holds_the_budget_and_still_answers() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    for (model, enforcement) in UPSTREAMS {
        // Whole.
        let r = call(&url, ask(model, false, json!({})), &LONG).await;
        assert_eq!(r.status, StatusCode::OK, "{model}: {}", r.text());
        let v = r.json();
        let used = reasoning_of(&v["usage"]);
        assert!(
            used <= BUDGET,
            "{model}: {used} reasoning tokens over {BUDGET}"
        );
        assert_eq!(
            r.header("x-thinkgate-budget-enforcement"),
            enforcement,
            "{model}"
        );
        assert_eq!(r.header("x-thinkgate-mode"), "thinking");
        assert_eq!(r.header("x-thinkgate-reasoning-budget"), "40");
        assert_eq!(r.header("x-thinkgate-reasoning-tokens"), used.to_string());
        assert_eq!(v["thinkgate"]["budget_enforcement"], enforcement);
        let message = &v["choices"][0]["message"];
        let shown = message["reasoning_content"].as_str().unwrap_or("");
        assert!(
            words(shown) as u64 <= BUDGET,
            "{model} showed {} tokens",
            words(shown)
        );
        let answer = message["content"].as_str().unwrap_or("");
        if model == "generic" {
            // No switch and no continuation for an unknown server: it ends, and says why.
            assert_eq!(v["choices"][0]["finish_reason"], "length");
            assert!(r.header("x-thinkgate-budget-note").contains("budget of 40"));
        } else {
            assert!(!answer.trim().is_empty(), "{model} gave no answer: {v}");
            assert_eq!(v["choices"][0]["finish_reason"], "stop", "{model}");
        }
        let u = &v["usage"];
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
        );

        // Streamed: one well-formed stream, one id, one usage block, the report at the end.
        let r = call(&url, ask(model, true, json!({})), &LONG).await;
        assert_eq!(r.status, StatusCode::OK, "{model}");
        assert_eq!(r.header("x-thinkgate-reasoning-budget"), "40");
        let s = r.streamed();
        assert!(s.done, "{model}: no [DONE]");
        let ids: std::collections::BTreeSet<&str> =
            s.chunks.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(ids.len(), 1, "{model}: {ids:?}");
        let usages = s.chunks.iter().filter(|c| c["usage"].is_object()).count();
        assert_eq!(usages, 1, "{model}");
        assert!(reasoning_of(s.usage()) <= BUDGET, "{model}");
        assert!(
            words(&s.text("reasoning_content")) as u64 <= BUDGET,
            "{model}"
        );
        assert_eq!(s.finish_reasons().len(), 1, "{model}");
        let last_choice = s
            .chunks
            .iter()
            .rev()
            .find(|c| c["thinkgate"].is_object())
            .unwrap();
        assert_eq!(
            last_choice["thinkgate"]["budget_enforcement"], enforcement,
            "{model}"
        );
        if model != "generic" {
            assert!(
                !s.text("content").trim().is_empty(),
                "{model}: no streamed answer"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_shows_exactly_the_budget_then_the_continued_answer() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    for model in ["sglang", "llamacpp-legacy", "deepseek"] {
        let r = call(&url, ask(model, true, json!({})), &LONG).await;
        let s = r.streamed();
        // Every reasoning chunk comes before the first answer chunk.
        let first_answer = s
            .chunks
            .iter()
            .position(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            })
            .expect("an answer");
        let last_reasoning = s
            .chunks
            .iter()
            .rposition(|c| c["choices"][0]["delta"]["reasoning_content"].is_string())
            .expect("reasoning");
        assert!(last_reasoning < first_answer, "{model}");
        assert_eq!(
            words(&s.text("reasoning_content")),
            BUDGET as usize,
            "{model}"
        );
        assert_eq!(
            reasoning_of(s.usage()),
            BUDGET,
            "{model}: the count is the proxy's"
        );
        let report = &s
            .chunks
            .iter()
            .rev()
            .find(|c| c["thinkgate"].is_object())
            .unwrap()["thinkgate"];
        assert_eq!(report["reasoning_source"], "estimated");
        assert!(report["note"]
            .as_str()
            .unwrap()
            .contains("thought was closed"));
    }
    // The honest upstream's own count is used when the proxy did not step in.
    let r = call(&url, ask("vllm", false, json!({})), &LONG).await;
    assert_eq!(r.header("x-thinkgate-reasoning-source"), "upstream");
    assert_eq!(reasoning_of(&r.json()["usage"]), BUDGET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_turns_thinking_off_wherever_the_model_allows() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    for (model, _) in UPSTREAMS {
        let r = call(
            &url,
            ask(&format!("{model}:instant"), false, json!({})),
            &LONG,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{model}: {}", r.text());
        assert_eq!(r.header("x-thinkgate-mode"), "instant");
        let v = r.json();
        let used = reasoning_of(&v["usage"]);
        if model == "generic" {
            // No switch: the smallest budget (the instant backstop) holds instead.
            assert!(used <= 8, "{used}");
            assert_eq!(r.header("x-thinkgate-reasoning-budget"), "0");
        } else {
            assert_eq!(used, 0, "{model}: {v}");
            assert_eq!(
                r.header("x-thinkgate-budget-enforcement"),
                "native",
                "{model}"
            );
            assert!(!v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_comes_from_the_request_first_then_the_config() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    let go = |body: String, headers: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move {
            let mut h = headers;
            h.push(LONG[0]);
            call(&url, body, &h).await
        }
    };
    // The header beats the body's knobs; the suffix beats the header.
    let r = go(
        ask("vllm", false, json!({"reasoning_effort": "high"})),
        vec![("x-thinkgate-mode", "instant")],
    )
    .await;
    assert_eq!(r.header("x-thinkgate-mode"), "instant");
    let r = go(
        ask("vllm:thinking", false, json!({})),
        vec![("x-thinkgate-mode", "instant")],
    )
    .await;
    assert_eq!(r.header("x-thinkgate-mode"), "thinking");
    // OpenRouter's object, then reasoning_effort.
    let r = go(
        ask(
            "vllm",
            false,
            json!({"reasoning": {"enabled": false}, "reasoning_effort": "high"}),
        ),
        vec![],
    )
    .await;
    assert_eq!(r.header("x-thinkgate-mode"), "instant");
    let r = go(
        ask("vllm", false, json!({"reasoning_effort": "none"})),
        vec![],
    )
    .await;
    assert_eq!(r.header("x-thinkgate-mode"), "instant");
    assert_eq!(reasoning_of(&r.json()["usage"]), 0);
    // A smaller budget is granted; a larger one is clamped, and the response says so.
    let r = go(
        ask("sglang", false, json!({"reasoning": {"max_tokens": 10}})),
        vec![],
    )
    .await;
    assert_eq!(r.header("x-thinkgate-reasoning-budget"), "10");
    assert_eq!(reasoning_of(&r.json()["usage"]), 10);
    let r = go(
        ask("sglang", false, json!({})),
        vec![("x-thinkgate-reasoning-budget", "12")],
    )
    .await;
    assert_eq!(reasoning_of(&r.json()["usage"]), 12);
    let r = go(
        ask("sglang", false, json!({"reasoning_effort": "medium"})),
        vec![],
    )
    .await;
    assert_eq!(
        r.header("x-thinkgate-budget-clamped"),
        "asked 4096, allowed 40"
    );
    assert!(reasoning_of(&r.json()["usage"]) <= BUDGET);
    // Unknown effort levels are ignored and noted, never an error.
    let r = go(
        ask("sglang", false, json!({"reasoning_effort": "ultra"})),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-thinkgate-notice").contains("`ultra`"));
    // A header that is not a mode is a precise 400.
    let r = go(
        ask("sglang", false, json!({})),
        vec![("x-thinkgate-mode", "deep")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error()["message"].as_str().unwrap().contains("`deep`"));
    let r = go(
        ask("sglang", false, json!({})),
        vec![("x-thinkgate-reasoning-budget", "lots")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_reasoning_is_counted_but_not_shown() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    let body = ask("sglang", true, json!({"reasoning": {"exclude": true}}));
    let s = call(&url, body, &LONG).await.streamed();
    assert_eq!(s.text("reasoning_content"), "");
    assert_eq!(reasoning_of(s.usage()), BUDGET);
    assert!(!s.text("content").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_reasoning_that_leaves_no_answer_is_retried_with_less_effort() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    // Minimal effort still thinks 125 tokens here: all 60 output tokens go to reasoning.
    let r = call(
        &url,
        ask("openai", false, json!({})),
        &[("x-sim-reasoning-tokens", "1000")],
    )
    .await;
    let v = r.json();
    assert_eq!(r.status, StatusCode::OK, "{v}");
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{v}"
    );
    assert!(r.header("x-thinkgate-budget-note").contains("retried"));
    // The spent attempt is billed, so it is in the usage, and the overrun is in the metrics.
    assert_eq!(reasoning_of(&v["usage"]), 60);
    let m = get(&proxy.url("/metrics")).await.text();
    assert!(
        m.lines().any(|l| l.starts_with(
            "thinkgate_budget_overrun_tokens_total{mode=\"thinking\",model=\"openai\"} 20"
        )),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_hint_goes_into_the_prompt_when_the_mode_says_so() {
    // The hint names the budget each call runs under: read from what reached the upstream.
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    let hints = |bodies: &[Value]| -> Vec<String> {
        bodies
            .iter()
            .flat_map(|b| b["messages"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m["content"].as_str().map(str::to_string))
            .filter(|t| t.contains("keep your reasoning under"))
            .collect()
    };
    let recent = |proxy: &Proxy| -> Vec<Value> {
        proxy.sim_stats()["recent_bodies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // Thinking says budget_hint = false: no hint.
    let r = call(&url, ask("vllm:thinking", false, json!({})), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(hints(&recent(&proxy)).is_empty(), "{:?}", recent(&proxy));
    // Contemplating says true: every agent (and the synthesis) is told its own share.
    let before = recent(&proxy).len();
    let r = call(&url, ask("vllm:contemplating", false, json!({})), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let calls: Vec<Value> = recent(&proxy).into_iter().skip(before).collect();
    let agents = r.json()["thinkgate"]["agents"].as_array().unwrap().len();
    let told = hints(&calls);
    assert!(told.len() >= agents, "{agents} agents, hints: {told:?}");
    assert!(
        told.iter().all(|h| h.chars().any(|c| c.is_ascii_digit())),
        "{told:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforcement_is_counted_in_the_metrics() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    for model in ["sglang", "anthropic", "vllm"] {
        let r = call(&url, ask(model, false, json!({})), &LONG).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let m = get(&proxy.url("/metrics")).await.text();
    for (model, method) in [
        ("sglang", "forced"),
        ("anthropic", "cut"),
        ("vllm", "native"),
    ] {
        let line = format!(
            "thinkgate_budget_enforcements_total{{method=\"{method}\",mode=\"thinking\",model=\"{model}\"}} 1"
        );
        assert!(m.contains(&line), "missing {line}");
    }
    assert!(m.contains(
        "thinkgate_reasoning_budget_utilization_ratio_count{mode=\"thinking\",model=\"vllm\"} 1"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stopped_call_is_cancelled_upstream_and_a_disconnect_cancels_everything() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    // Paced, so the upstream is still thinking when the budget is reached.
    let paced = [
        ("x-sim-reasoning-tokens", NATURAL),
        ("x-sim-tokens-per-second", "1000"),
    ];
    let r = call(&url, ask("sglang", false, json!({})), &paced).await;
    assert_eq!(r.status, StatusCode::OK);
    let counts = |s: &Value| {
        (
            s["started"].as_u64().unwrap(),
            s["completed"].as_u64().unwrap(),
            s["cancelled"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        counts(&proxy.sim_stats()),
        (2, 1, 1),
        "the stopped call, then the answer"
    );

    // A client that leaves mid-stream: the upstream call goes with it.
    let resp = send(&url, "POST", ask("sglang", true, json!({})), &paced).await;
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    eventually("the upstream call is cancelled", || {
        counts(&proxy.sim_stats()) == (3, 1, 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_stop_thinking_ends_at_the_budget_and_says_why() {
    // Gemini 3 style: levels only, and thinking cannot be turned off, so no answer can be
    // asked for without thinking once the budget is spent.
    let text = config()
        + "\n[providers.p-gemini3]\nkind = \"simulator\"\nformat = \"gemini\"\nforward_headers = [\"x-sim-*\"]\n\
           [models.gemini3]\nprovider = \"p-gemini3\"\ncontext_window = 100000\ncapabilities = [\"reasoning\"]\n\
           [models.gemini3.thinking]\nknob = \"effort\"\nefforts = [\"high\"]\ncan_disable = false\n";
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let r = call(&url, ask("gemini3", false, json!({})), &LONG).await;
    let v = r.json();
    assert_eq!(r.status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(reasoning_of(&v["usage"]), BUDGET);
    assert_eq!(r.header("x-thinkgate-budget-enforcement"), "cut");
    assert!(
        r.header("x-thinkgate-budget-note")
            .contains("cannot be turned off"),
        "{:?}",
        r.headers
    );
    // Instant on it: the lowest level it takes, held to the instant backstop.
    let r = call(&url, ask("gemini3:instant", false, json!({})), &LONG).await;
    assert!(reasoning_of(&r.json()["usage"]) <= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_breaks_under_a_budget_is_an_error_not_a_short_answer() {
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    let broken = [
        ("x-sim-reasoning-tokens", NATURAL),
        ("x-sim-reset-after", "10"),
    ];
    let s = call(&url, ask("vllm", true, json!({})), &broken)
        .await
        .streamed();
    assert!(!s.done);
    assert_eq!(
        s.chunks.last().unwrap()["error"]["code"],
        "upstream_stream_broken"
    );
    let r = call(&url, ask("vllm", false, json!({})), &broken).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.error()["code"], "upstream_stream_broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_token_cap_on_every_upstream_answers_cleanly() {
    // max_tokens 1 leaves a budget of 0: the follow-ups (a retry at a quarter of nothing
    // among them) must not underflow, and every response is whole or a clear error.
    let proxy = Proxy::start(&config()).await;
    let url = proxy.url("/v1/chat/completions");
    for (model, _) in UPSTREAMS {
        for stream in [false, true] {
            let body = ask(model, stream, json!({"max_tokens": 1}));
            let r = call(&url, body, &LONG).await;
            assert!(
                r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
                "{model} stream={stream}: {} {}",
                r.status,
                r.text()
            );
            if r.status == StatusCode::OK && stream {
                let s = r.streamed();
                assert!(s.done, "{model}: the stream ends in [DONE]");
            }
        }
    }
}
