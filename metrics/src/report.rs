//! `thinkgate report`: a terminal table of what thinking costs, from a `/metrics` scrape.
//!
//! Pure: text in, text out. The parser reads the Prometheus text format as thinkgate writes
//! it (`name{label="value",...} number` lines; comments skipped); label values with escaped
//! quotes are handled.

use std::collections::BTreeMap;

/// One sample line of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a text exposition; lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.trim().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[derive(Default)]
struct Row {
    requests: f64,
    prompt: f64,
    output: f64,
    reasoning: f64,
}

/// The report: per model, mode and domain, requests and tokens per request, reasoning share;
/// then budget utilization and cost per model.
/// The endpoints a client's request is counted on (chat, Messages, Responses).
const CLIENT_ENDPOINTS: [&str; 3] = ["chat_completions", "messages", "responses"];

/// Whether `text` is a scrape of thinkgate's `/metrics`: every scrape has at least the
/// in-flight gauge, so a file without a `thinkgate_` sample is some other file.
pub fn is_scrape(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("thinkgate_") || l.starts_with("# TYPE thinkgate_")
    })
}

pub fn render(text: &str) -> String {
    let samples = parse(text);
    let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let mut rows: BTreeMap<(String, String, String), Row> = BTreeMap::new();
    let mut budget: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    let mut cost: BTreeMap<String, f64> = BTreeMap::new();
    for s in &samples {
        let key = || (label(s, "model"), label(s, "mode"), label(s, "domain"));
        match s.name.as_str() {
            // Client requests on every API (not the contemplating agents' own calls).
            "thinkgate_requests_total"
                if CLIENT_ENDPOINTS.contains(&label(s, "endpoint").as_str())
                    && label(s, "status") == "200" =>
            {
                rows.entry(key()).or_default().requests += s.value
            }
            "thinkgate_tokens_total" => {
                let row = rows.entry(key()).or_default();
                match label(s, "kind").as_str() {
                    "prompt" => row.prompt += s.value,
                    "output" => row.output += s.value,
                    "reasoning" => row.reasoning += s.value,
                    _ => {}
                }
            }
            "thinkgate_reasoning_budget_utilization_ratio_sum" => {
                budget
                    .entry((label(s, "model"), label(s, "mode")))
                    .or_default()
                    .0 += s.value
            }
            "thinkgate_reasoning_budget_utilization_ratio_count" => {
                budget
                    .entry((label(s, "model"), label(s, "mode")))
                    .or_default()
                    .1 += s.value
            }
            "thinkgate_cost_usd_total" if s.value > 0.0 => {
                *cost.entry(label(s, "model")).or_default() += s.value
            }
            _ => {}
        }
    }
    let per = |n: f64, d: f64| {
        if d > 0.0 {
            format!("{:.0}", n / d)
        } else {
            "-".into()
        }
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{:<22} {:<14} {:<10} {:>9} {:>12} {:>12} {:>12} {:>10}\n",
        "model",
        "mode",
        "domain",
        "requests",
        "prompt/req",
        "output/req",
        "reason/req",
        "reasoning%"
    ));
    for ((model, mode, domain), r) in &rows {
        if r.requests == 0.0 && r.output == 0.0 {
            continue;
        }
        let share = if r.output > 0.0 {
            format!("{:.1}", 100.0 * r.reasoning / r.output)
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "{:<22} {:<14} {:<10} {:>9.0} {:>12} {:>12} {:>12} {:>10}\n",
            model,
            mode,
            domain,
            r.requests,
            per(r.prompt, r.requests),
            per(r.output, r.requests),
            per(r.reasoning, r.requests),
            share
        ));
    }
    if rows.is_empty() {
        out.push_str("(no chat completions recorded yet)\n");
    }
    if budget.values().any(|(_, n)| *n > 0.0) {
        out.push_str("\nreasoning budget utilization (mean used/budget)\n");
        for ((model, mode), (sum, n)) in &budget {
            if *n > 0.0 {
                out.push_str(&format!(
                    "{:<22} {:<14} {:>6.1}%  over {:.0} requests\n",
                    model,
                    mode,
                    100.0 * sum / n,
                    n
                ));
            }
        }
    }
    if !cost.is_empty() {
        out.push_str("\ncost (USD, since the proxy started)\n");
        for (model, usd) in &cost {
            out.push_str(&format!("{model:<22} {usd:>12.4}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_a_thinkgate_scrape_is_one() {
        assert!(is_scrape(
            "# TYPE thinkgate_in_flight_requests gauge\nthinkgate_in_flight_requests 0\n"
        ));
        assert!(!is_scrape("hello\n"));
        assert!(!is_scrape(
            "# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total 1\n"
        ));
    }

    use super::*;

    const SCRAPE: &str = r#"# HELP thinkgate_requests_total x
# TYPE thinkgate_requests_total counter
thinkgate_requests_total{domain="general",endpoint="chat_completions",mode="thinking",model="m",status="200"} 4
thinkgate_requests_total{domain="general",endpoint="chat_completions",mode="thinking",model="m",status="502"} 1
thinkgate_tokens_total{domain="general",kind="prompt",mode="thinking",model="m",source="upstream"} 400
thinkgate_tokens_total{domain="general",kind="output",mode="thinking",model="m",source="upstream"} 1000
thinkgate_tokens_total{domain="general",kind="reasoning",mode="thinking",model="m",source="estimated"} 600
thinkgate_reasoning_budget_utilization_ratio_sum{mode="thinking",model="m"} 3.2
thinkgate_reasoning_budget_utilization_ratio_count{mode="thinking",model="m"} 4
thinkgate_cost_usd_total{model="m"} 0.25
weird{a="x\"y,z=1"} +Inf
"#;

    #[test]
    fn parses_labels_with_escapes() {
        let s = parse(SCRAPE);
        let weird = s.iter().find(|s| s.name == "weird").unwrap();
        assert_eq!(weird.labels["a"], "x\"y,z=1");
        assert!(weird.value.is_infinite());
    }

    #[test]
    fn renders_per_request_figures_and_shares() {
        let out = render(SCRAPE);
        let row = out.lines().find(|l| l.starts_with("m ")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            ["m", "thinking", "general", "4", "100", "250", "150", "60.0"]
        );
        assert!(out.contains("80.0%"), "{out}");
        assert!(out.contains("0.2500"), "{out}");
    }
}
