//! Budgets learned from traffic: simulator traffic whose natural reasoning per domain is
//! known (math around 300 tokens, coding around 1,500, both under a 2,048 budget) goes
//! through the proxy; `thinkgate report --budgets` on the scrape suggests each domain's
//! natural p90 within 10 %, and the TOML to paste.

use serde_json::json;

use crate::support::*;

const MATH: &str = "Solve the integral of x^2 sin(x) dx step by step and simplify the result.";
const CODING: &str = "Fix this Rust borrow checker error: fn main() { let v = vec![1]; let r = &v; drop(v); println!(\"{:?}\", r); }";

/// A deterministic spread of `n` values over `low..high` (no two runs differ).
fn spread(n: usize, low: u64, high: u64, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            low + (x >> 33) % (high - low)
        })
        .collect()
}

fn p90(values: &[u64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v[(v.len() as f64 * 0.9).ceil() as usize - 1] as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_suggests_each_domains_natural_p90_within_ten_percent() {
    let extra =
        "\n[modes.thinking]\nreasoning_budget = 2048\nanswer_reserve = 64\nbudget_hint = false\n";
    let text = config_text(None, extra).replace(
        "[providers.sim]\nkind = \"simulator\"\n",
        "[providers.sim]\nkind = \"simulator\"\nforward_headers = [\"x-sim-*\"]\n",
    );
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let mut truth = Vec::new();
    for (prompt, domain, low, high, seed) in [
        (MATH, "math", 240, 360, 7),
        (CODING, "coding", 1200, 1800, 11),
    ] {
        let values = spread(60, low, high, seed);
        for v in &values {
            let body = json!({"model": "auto:thinking",
                "messages": [{"role": "user", "content": prompt}]});
            let tokens = v.to_string();
            let r = call(
                &url,
                body.to_string(),
                &[("x-sim-reasoning-tokens", &tokens)],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(
                r.header("x-thinkgate-domain"),
                domain,
                "the prompt classifies as {domain}"
            );
            let used = r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64();
            assert_eq!(used, Some(*v), "the simulator thinks exactly as asked");
        }
        truth.push((domain, p90(&values)));
    }
    let scrape = get(&proxy.url("/metrics")).await.text();
    let path = write_config("budgets-scrape.txt", &scrape);
    let (code, out, err) = run_cli(
        &["report", "--budgets", "--metrics", path.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    for (domain, p90) in truth {
        let row = out
            .lines()
            .find(|l| l.starts_with("thinking") && l.split_whitespace().nth(1) == Some(domain))
            .unwrap_or_else(|| panic!("no {domain} row: {out}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[2], "2048", "today's budget: {row}");
        assert_eq!(cols[3], "60", "answers: {row}");
        assert_eq!(cols[4], "0.0", "none reached the budget: {row}");
        let suggested: f64 = cols[8]
            .parse()
            .unwrap_or_else(|_| panic!("a suggestion: {row}"));
        let off = (suggested - p90).abs() / p90;
        assert!(
            off <= 0.10,
            "{domain}: suggested {suggested}, true p90 {p90} ({:.1} % off)",
            off * 100.0
        );
        assert_eq!(
            cols[9], "saves",
            "a tighter budget cuts nothing that ended naturally: {row}"
        );
    }
    assert!(
        out.contains("[modes.thinking]\nreasoning_budget = "),
        "{out}"
    );
    assert!(out.contains("domains = { coding = "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_mode_converges_on_the_p90_and_cuts_no_more_than_its_share() {
    let extra = "\n[modes.thinking]\nreasoning_budget = 2048\nanswer_reserve = 64\nbudget_hint = false\nadaptive = true\nadaptive_min = 64\nadaptive_period = \"1s\"\n";
    let text = config_text(None, extra).replace(
        "[providers.sim]\nkind = \"simulator\"\n",
        "[providers.sim]\nkind = \"simulator\"\nforward_headers = [\"x-sim-*\"]\n",
    );
    let proxy = Proxy::start(&text).await;
    let url = proxy.url("/v1/chat/completions");
    let body = json!({"model": "auto:thinking", "messages": [{"role": "user", "content": MATH}]})
        .to_string();
    let mut all = Vec::new();
    let (mut answers, mut cut) = (0, 0);
    let mut budgets = Vec::new();
    for round in 0..6u64 {
        let values = spread(60, 240, 360, 100 + round);
        let mut budget = String::new();
        for v in &values {
            let tokens = v.to_string();
            let r = call(&url, body.clone(), &[("x-sim-reasoning-tokens", &tokens)]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-thinkgate-domain"), "math");
            budget = r.header("x-thinkgate-reasoning-budget").to_string();
            let used = r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"]
                .as_u64()
                .unwrap();
            answers += 1;
            if used < *v {
                cut += 1;
            }
            if round > 0 {
                assert_eq!(
                    r.header("x-thinkgate-budget-learned"),
                    "true",
                    "round {round}"
                );
            }
        }
        all.extend(values);
        budgets.push(budget.parse::<u64>().unwrap());
        // The learner's period, between rounds only: after the last one the budget in force
        // is read at once, before a tick can move it past the one the round was answered by.
        if round < 5 {
            tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        }
    }
    let truth = p90(&all);
    let last = *budgets.last().unwrap() as f64;
    assert!(
        (last - truth).abs() / truth <= 0.10,
        "budgets per round {budgets:?}, true p90 {truth}"
    );
    let share = cut as f64 / answers as f64;
    println!("adaptive: budgets per round {budgets:?}, true p90 {truth}, {cut} of {answers} cut");
    assert!(
        share <= 0.12,
        "{cut} of {answers} answers cut ({budgets:?})"
    );
    // The learned budget shows in the metrics and in the running server's plan.
    let m = get(&proxy.url("/metrics")).await.text();
    let gauge = series(
        &m,
        "thinkgate_reasoning_budget_tokens",
        &[("mode", "thinking"), ("domain", "math")],
    );
    assert_eq!(gauge, last);
    let plan = call(&proxy.url("/v1/route"), body, &[]).await.json();
    assert_eq!(plan["mode"]["budget_learned"], true, "{plan}");
    assert_eq!(
        plan["mode"]["reasoning_budget"].as_f64(),
        Some(last),
        "{plan}"
    );
}
