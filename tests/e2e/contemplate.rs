//! Contemplating mode: agents in parallel under one split budget, early agreement, deadline
//! and quorum, failures, tools at the synthesis only, streamed progress, usage sums and
//! cancellation.

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// `vllm` honours budgets natively (so per-agent budgets show in the counts); `slow` thinks
/// slowly; `broken` always fails.
fn config(contemplating: &str) -> String {
    config_text(
        None,
        &format!(
            r#"
[modes.contemplating]
reasoning_budget = 400
answer_reserve = 64

[providers.v]
kind = "simulator"
dialect = "vllm"
forward_headers = ["x-sim-*"]

[models.vllm]
provider = "v"
upstream_model = "vllm-up"
context_window = 100000
capabilities = ["tools", "reasoning"]
scores = {{ general = 60 }}

[models.slow]
provider = "v"
upstream_model = "slow-up"
context_window = 100000
capabilities = ["tools", "reasoning"]
scores = {{ general = 50 }}

[models.broken]
provider = "v"
upstream_model = "broken-up"
context_window = 100000
capabilities = ["tools", "reasoning"]
scores = {{ general = 55 }}

[simulator.models.vllm-up]
reasoning = "reasoning"
reasoning_tokens = 500
answer_tokens = 12

[simulator.models.slow-up]
reasoning = "reasoning"
reasoning_tokens = 500
answer_tokens = 12
tokens_per_second = 50

[simulator.models.broken-up]
fault_status = 500

[contemplating]
{contemplating}
"#
        ),
    )
}

fn ask(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "How many primes are there below 100?"}]})
    .to_string()
}

fn reasoning(v: &Value) -> u64 {
    v["reasoning"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_fan_out_with_their_roles_and_share_one_budget() {
    let proxy = Proxy::start(&config("agents = 3\nsynthesis_share = 0.25")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        ask("vllm:contemplating", false),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-thinkgate-mode"), "contemplating");
    let v = r.json();
    let report = &v["thinkgate"];
    let agents = report["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    let roles: Vec<&str> = agents.iter().map(|a| a["role"].as_str().unwrap()).collect();
    assert!(roles[0].starts_with("Solve the problem directly"));
    assert!(roles[1].contains("different method"));
    assert!(roles[2].contains("flaw"));
    // 400 in all: 100 for the synthesis, 100 per agent; vLLM holds each hard.
    for a in agents {
        assert_eq!(a["outcome"], "answered");
        assert_eq!(reasoning(&a["tokens"]), 100, "{a}");
    }
    let synthesis = &report["synthesis"];
    assert_eq!(reasoning(&synthesis["tokens"]), 100);
    // Usage sums every call.
    let sum = |k: &str| -> u64 {
        agents
            .iter()
            .map(|a| a["tokens"][k].as_u64().unwrap())
            .sum::<u64>()
            + synthesis["tokens"][k].as_u64().unwrap()
    };
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(sum("prompt")));
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64(),
        Some(sum("completion"))
    );
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64(),
        Some(400)
    );
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    // Each part is its own call in the metrics; the tokens are counted once.
    let m = get(&proxy.url("/metrics")).await.text();
    assert!(m.contains("endpoint=\"contemplate_agent\""), "{m}");
    let reasoning_total: u64 = m
        .lines()
        .filter(|l| l.starts_with("thinkgate_tokens_total{") && l.contains("kind=\"reasoning\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(reasoning_total, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_agents_skip_the_synthesis() {
    // Identical roles make identical requests: the simulated agents give the same answer.
    let proxy = Proxy::start(&config("agents = 2\nquorum = 2\nroles = [\"Solve it.\"]")).await;
    let v = call(
        &proxy.url("/v1/chat/completions"),
        ask("vllm:contemplating", false),
        &[],
    )
    .await
    .json();
    assert!(v["thinkgate"]["synthesis"].is_null(), "{v}");
    assert!(v["thinkgate"]["note"].as_str().unwrap().contains("agreed"));
    let proxy = Proxy::start(&config(
        "agents = 2\nquorum = 2\nroles = [\"Solve it.\"]\nearly_agreement = false",
    ))
    .await;
    let v = call(
        &proxy.url("/v1/chat/completions"),
        ask("vllm:contemplating", false),
        &[],
    )
    .await
    .json();
    assert!(v["thinkgate"]["synthesis"].is_object(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_cancels_slow_agents_and_failures_are_reported() {
    // Top models: vllm, broken, slow (by score). broken fails, slow misses the deadline.
    let text = config("agents = 3\nmodels = \"top\"\nquorum = 1\ndeadline = \"1s\"");
    let proxy = Proxy::start(&text).await;
    let v = call(
        &proxy.url("/v1/chat/completions"),
        ask("auto:contemplating", false),
        &[],
    )
    .await
    .json();
    let agents = v["thinkgate"]["agents"].as_array().unwrap().clone();
    // Agents in rank order: vllm, broken, slow. The second agent's model fails before its
    // first byte, so its call falls back (through the same attempt path as any request) to
    // the next model that fits, and its report says which answered and which failed.
    assert_eq!(agents[0]["model"], "vllm", "{agents:?}");
    assert_eq!(agents[0]["outcome"], "answered");
    assert_eq!(agents[1]["fallback_from"], "broken", "{agents:?}");
    assert_eq!(agents[1]["model"], "vllm", "{agents:?}");
    assert_eq!(agents[1]["outcome"], "answered");
    assert_eq!(agents[2]["model"], "slow");
    assert_eq!(agents[2]["outcome"], "cancelled at the deadline");
    // One answer under quorum 1: returned directly.
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    eventually("the slow agent's call is cancelled", || {
        proxy.sim_stats()["cancelled"].as_u64() >= Some(1)
    })
    .await;

    // With quorum 3 and two answers, the first answering agent's answer comes back as is.
    let proxy = Proxy::start(&config(
        "agents = 3\nmodels = \"top\"\nquorum = 3\ndeadline = \"1s\"",
    ))
    .await;
    let v = call(
        &proxy.url("/v1/chat/completions"),
        ask("auto:contemplating", false),
        &[],
    )
    .await
    .json();
    assert!(
        v["thinkgate"]["note"]
            .as_str()
            .unwrap()
            .contains("below quorum"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_agent_fails_the_error_names_them() {
    let proxy = Proxy::start(&config("agents = 2")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        ask("broken:contemplating", false),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let e = r.error();
    assert_eq!(e["code"], "agents_failed");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("agent 1 (broken)") && message.contains("agent 2 (broken)"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reason_without_tools_and_the_synthesis_may_call_them() {
    let proxy = Proxy::start(&config("agents = 2\nearly_agreement = false")).await;
    let mut body: Value = serde_json::from_str(&ask("vllm:contemplating", false)).unwrap();
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let v = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[])
        .await
        .json();
    for a in v["thinkgate"]["agents"].as_array().unwrap() {
        assert_eq!(a["outcome"], "answered", "agents answer in text: {a}");
    }
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shows_progress_first_then_the_answer_with_one_usage() {
    let proxy = Proxy::start(&config("agents = 3")).await;
    let s = call(
        &proxy.url("/v1/chat/completions"),
        ask("vllm:contemplating", true),
        &[],
    )
    .await
    .streamed();
    assert!(s.done);
    let ids: std::collections::BTreeSet<&str> =
        s.chunks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), 1);
    let progress = s.text("reasoning_content");
    assert!(
        progress.starts_with("Contemplating with 3 agents"),
        "{progress}"
    );
    assert_eq!(progress.matches("answered in").count(), 3);
    assert!(!s.text("content").is_empty());
    assert_eq!(
        s.chunks.iter().filter(|c| c["usage"].is_object()).count(),
        1
    );
    let last = s
        .chunks
        .iter()
        .rev()
        .find(|c| c["thinkgate"].is_object())
        .unwrap();
    let total: u64 = last["thinkgate"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["tokens"]["completion"].as_u64().unwrap())
        .sum::<u64>()
        + last["thinkgate"]["synthesis"]["tokens"]["completion"]
            .as_u64()
            .unwrap();
    assert_eq!(s.usage()["completion_tokens"].as_u64(), Some(total));
    assert_eq!(s.finish_reasons(), ["stop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_every_agent() {
    let proxy = Proxy::start(&config("agents = 3\ndeadline = \"30s\"")).await;
    let resp = send(
        &proxy.url("/v1/chat/completions"),
        "POST",
        ask("slow:contemplating", true),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    eventually("three agents started", || {
        proxy.sim_stats()["started"].as_u64() == Some(3)
    })
    .await;
    drop(resp);
    eventually("all three cancelled", || {
        proxy.sim_stats()["cancelled"].as_u64() == Some(3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_synthesis_is_an_error_whole_or_streamed() {
    let proxy = Proxy::start(&config(
        "agents = 2\nearly_agreement = false\nsynthesis_model = \"broken\"",
    ))
    .await;
    let url = proxy.url("/v1/chat/completions");
    let r = call(&url, ask("vllm:contemplating", false), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.error()["code"], "synthesis_failed");
    let s = call(&url, ask("vllm:contemplating", true), &[])
        .await
        .streamed();
    assert!(!s.done, "a failed stream does not end in [DONE]");
    let last = s.chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "synthesis_failed", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthesis_stream_cut_off_midway_ends_in_an_error_not_a_made_up_stop() {
    let text = config("agents = 2\nearly_agreement = false\nsynthesis_model = \"cut\"")
        + "\n[models.cut]\nprovider = \"v\"\nupstream_model = \"cut-up\"\ncontext_window = 100000\ncapabilities = [\"tools\"]\n\n[simulator.models.cut-up]\nanswer_tokens = 40\nfault_reset_after = 5\n";
    let proxy = Proxy::start(&text).await;
    let s = call(
        &proxy.url("/v1/chat/completions"),
        ask("vllm:contemplating", true),
        &[],
    )
    .await
    .streamed();
    assert!(!s.done, "a cut-off synthesis does not end in [DONE]");
    let last = s.chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_broken", "{last}");
    assert!(
        s.chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()),
        "no finish_reason was made up"
    );
}
