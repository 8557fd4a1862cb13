//! Budget benchmark: every upstream kind behind the proxy, each simulated model thinking 4×
//! longer than the budget by itself. The same requests run twice in one process — under the
//! thinking budget (`<model>:thinking`) and without one (`<model>`) — and the report shows,
//! per upstream, how the budget was held, the largest overrun, whether every response still
//! has an answer, and the tokens saved against the unbudgeted run.
//!
//! `cargo bench --bench budget` (`BUDGET_REQUESTS` sets requests per upstream and run; 20).
//! Under `cargo test` it runs one request per upstream and checks the same invariants.

mod common;

use serde_json::{json, Value};
use thinkgate_config::Config;

use common::{post, HttpClient};

const BUDGET: u64 = 1024;
const NATURAL: u64 = 4 * BUDGET;

/// Every upstream kind: (model id, how the provider speaks).
const UPSTREAMS: [(&str, &str); 11] = [
    ("vllm", "dialect = \"vllm\""),
    ("sglang", "dialect = \"sglang\""),
    ("llamacpp", "dialect = \"llamacpp\""),
    ("deepseek", "dialect = \"deepseek\""),
    ("ollama", "dialect = \"ollama\""),
    ("openrouter", "dialect = \"openrouter\""),
    ("muse-spark", "dialect = \"muse-spark\""),
    ("openai", "dialect = \"openai\""),
    ("anthropic", "format = \"anthropic\""),
    ("gemini", "format = \"gemini\""),
    ("generic", ""),
];

fn config() -> Config {
    let mut text = format!(
        "auth = \"none\"\n[server]\nlisten = \"127.0.0.1:0\"\nlog_level = \"error\"\n\
         [routing]\ndefault_model = \"vllm\"\n\
         [modes.thinking]\nreasoning_budget = {BUDGET}\nanswer_reserve = 512\nbudget_hint = false\n\
         [simulator.default]\nreasoning_tokens = {NATURAL}\nanswer_tokens = 64\n"
    );
    for (name, speaks) in UPSTREAMS {
        text.push_str(&format!(
            "[providers.p-{name}]\nkind = \"simulator\"\n{speaks}\n\
             [models.{name}]\nprovider = \"p-{name}\"\nupstream_model = \"{name}-model\"\n\
             context_window = 100000\ncapabilities = [\"tools\", \"reasoning\"]\n"
        ));
    }
    Config::parse(&text, std::path::Path::new("budget-bench.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// What one response came back with.
#[derive(Default, Clone, Copy)]
struct Seen {
    reasoning: u64,
    total: u64,
    output: u64,
    answered: bool,
}

async fn ask(
    client: &HttpClient,
    url: &str,
    model: &str,
    i: usize,
    stream: bool,
) -> (Seen, String) {
    let body = json!({
        "model": model,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": format!("Question number {i}: how many primes are below {}?", 100 + i)}]
    });
    let (_, headers, bytes) = post(client, url, &body).await;
    let enforcement = headers
        .get("x-thinkgate-budget-enforcement")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = String::from_utf8_lossy(&bytes);
    let (usage, answer, report) = if stream {
        let mut usage = Value::Null;
        let mut answer = String::new();
        let mut report = Value::Null;
        for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let Ok(chunk) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if chunk["usage"].is_object() {
                usage = chunk["usage"].clone();
            }
            if chunk["thinkgate"].is_object() {
                report = chunk["thinkgate"].clone();
            }
            if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                answer.push_str(t);
            }
        }
        (usage, answer, report)
    } else {
        let v: Value = serde_json::from_str(&text).expect("JSON response");
        let answer = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        (v["usage"].clone(), answer, v["thinkgate"].clone())
    };
    let enforcement = report["budget_enforcement"]
        .as_str()
        .map(str::to_string)
        .unwrap_or(enforcement);
    let seen = Seen {
        reasoning: usage["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap_or(0),
        total: usage["total_tokens"].as_u64().unwrap_or(0),
        output: usage["completion_tokens"].as_u64().unwrap_or(0),
        answered: !answer.trim().is_empty(),
    };
    (seen, enforcement)
}

fn main() {
    let (full, per_upstream) = common::size("BUDGET_REQUESTS", 20, 1);
    let rt = common::runtime();
    rt.block_on(run(per_upstream, full));
}

async fn run(per_upstream: usize, full: bool) {
    let (url, client, _stop) = common::serve(config()).await;

    println!(
        "budget {BUDGET} reasoning tokens; every simulated model thinks {NATURAL} by itself; {per_upstream} request(s) per upstream and run, half streamed\n"
    );
    println!(
        "{:<11} {:<12} {:>10} {:>14} {:>9} {:>12} {:>12} {:>7}",
        "upstream",
        "enforcement",
        "max reason",
        "max overrun",
        "answered",
        "tokens",
        "unbudgeted",
        "saved"
    );
    let (mut all_with, mut all_without, mut worst_enforced, mut worst_native) =
        (0u64, 0u64, 0u64, 0u64);
    let (mut out_with, mut out_without) = (0u64, 0u64);
    let mut unanswered = Vec::new();
    for (model, _) in UPSTREAMS {
        let mut methods = std::collections::BTreeSet::new();
        let (mut with, mut without, mut max_reasoning, mut answered) = (0u64, 0u64, 0u64, 0usize);
        for i in 0..per_upstream {
            let stream = i % 2 == 1;
            let (seen, method) = ask(&client, &url, &format!("{model}:thinking"), i, stream).await;
            let (free, _) = ask(&client, &url, model, i, stream).await;
            methods.insert(method);
            with += seen.total;
            without += free.total;
            out_with += seen.output;
            out_without += free.output;
            max_reasoning = max_reasoning.max(seen.reasoning);
            answered += usize::from(seen.answered);
        }
        let overrun = max_reasoning.saturating_sub(BUDGET);
        let proxy_enforced = methods.iter().any(|m| m == "forced" || m == "cut");
        if proxy_enforced {
            worst_enforced = worst_enforced.max(overrun);
        } else {
            worst_native = worst_native.max(overrun);
        }
        if answered < per_upstream && model != "generic" {
            unanswered.push(model);
        }
        all_with += with;
        all_without += without;
        let methods: Vec<_> = methods.into_iter().collect();
        println!(
            "{:<11} {:<12} {:>10} {:>8} {:>4.1}% {:>5}/{:<3} {:>12} {:>12} {:>6.1}%",
            model,
            methods.join("+"),
            max_reasoning,
            overrun,
            overrun as f64 * 100.0 / BUDGET as f64,
            answered,
            per_upstream,
            with,
            without,
            100.0 * (1.0 - with as f64 / without.max(1) as f64),
        );
    }
    println!(
        "\nall upstreams: {all_with} tokens under the budget vs {all_without} without: {:.1}% saved",
        100.0 * (1.0 - all_with as f64 / all_without.max(1) as f64)
    );
    println!(
        "output tokens: {out_with} vs {out_without}: {:.1}% saved (a forced or cut answer re-sends the reasoning so far as prompt, so total savings are smaller there)",
        100.0 * (1.0 - out_with as f64 / out_without.max(1) as f64)
    );
    println!(
        "largest overrun: {worst_enforced} tokens where the proxy enforced ({:.2}% of the budget; target ≤ 1%), {worst_native} where the upstream's knob did",
        worst_enforced as f64 * 100.0 / BUDGET as f64
    );
    println!("generic: a server with no knob and no continuation ends at the budget with finish_reason length");
    // The invariants hold in every run, the quick one under `cargo test` included.
    assert!(
        worst_enforced * 100 <= BUDGET,
        "overrun {worst_enforced} > 1% of {BUDGET}"
    );
    assert!(
        unanswered.is_empty(),
        "responses without an answer from {unanswered:?}"
    );
    if !full {
        println!("(quick run: `cargo bench --bench budget` for the full one)");
    }
}
