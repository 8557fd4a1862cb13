//! `thinkgate report --budgets`: the reasoning budget each mode and domain needs, learned
//! from the traffic a scrape counted.
//!
//! Per mode and domain: the budget in force, how often answers reached it (forced or cut),
//! the p50 / p90 / p99 of reasoning that ended on its own (read from
//! `thinkgate_reasoning_natural_tokens`, whose buckets are 15 % apart), a suggested budget
//! (the natural p90, rounded up to 16), and what a month of this traffic would save or cost
//! with it; then the TOML to paste. No IO: the caller passes the scrape and the time.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::report::{parse, Sample};

/// Fewer natural answers than this and a row keeps its configured budget.
pub const MIN_ANSWERS: f64 = 20.0;
const MONTH_SECONDS: f64 = 30.0 * 86_400.0;

#[derive(Debug, Default, Clone)]
pub struct Row {
    pub budget: Option<f64>,
    /// Cumulative `(le, count)`, ascending.
    pub buckets: Vec<(f64, f64)>,
    pub natural: f64,
    pub hits: f64,
}

impl Row {
    /// The `q` quantile of natural reasoning, interpolated within its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        (self.natural > 0.0).then(|| value_at_rank(self.buckets.iter().copied(), q * self.natural))
    }

    /// The suggested budget: the natural p90 rounded up to 16, when there is enough data.
    pub fn suggested(&self) -> Option<u64> {
        if self.natural < MIN_ANSWERS {
            return None;
        }
        let p90 = self.quantile(0.9)?;
        Some(((p90 / 16.0).ceil() as u64).max(1) * 16)
    }

    /// Reasoning tokens the counted answers would have spent more (positive) or less with
    /// `suggested` instead of the budget: natural answers above it are cut to it; answers
    /// that reached the budget spend the new one instead (an upper bound when it is higher).
    pub fn delta(&self, suggested: f64) -> Option<f64> {
        let budget = self.budget?;
        let mut delta = 0.0;
        let mut prev = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            let n = cum - prev.1;
            let mid = if le.is_infinite() {
                prev.0
            } else {
                (prev.0 + le) / 2.0
            };
            if n > 0.0 && mid > suggested {
                delta -= n * (mid - suggested);
            }
            prev = (le, cum);
        }
        Some(delta + self.hits * (suggested - budget))
    }
}

/// The value at `rank` (counted from the smallest) of a histogram's cumulative
/// `(upper bound, count)` buckets, ascending: interpolated within its bucket; the last finite
/// bound when it falls in the `+Inf` one.
pub fn value_at_rank(buckets: impl IntoIterator<Item = (f64, f64)>, rank: f64) -> f64 {
    let mut prev = (0.0, 0.0);
    for (le, cum) in buckets {
        if cum >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let span = cum - prev.1;
            let within = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * within.clamp(0.0, 1.0);
        }
        prev = (le, cum);
    }
    prev.0
}

/// Per (mode, domain), what the scrape holds.
pub fn rows(samples: &[Sample]) -> BTreeMap<(String, String), Row> {
    let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for s in samples {
        let key = || (label(s, "mode"), label(s, "domain"));
        match s.name.as_str() {
            "thinkgate_reasoning_natural_tokens_bucket" => {
                let le = match label(s, "le").as_str() {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or(f64::INFINITY),
                };
                rows.entry(key()).or_default().buckets.push((le, s.value));
            }
            "thinkgate_reasoning_natural_tokens_count" => {
                rows.entry(key()).or_default().natural += s.value
            }
            "thinkgate_reasoning_budget_hits_total" => {
                rows.entry(key()).or_default().hits += s.value
            }
            "thinkgate_reasoning_budget_tokens" => {
                rows.entry(key()).or_default().budget = Some(s.value)
            }
            _ => {}
        }
    }
    for row in rows.values_mut() {
        row.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    rows
}

/// The report, and the TOML to paste. `now` is the scrape's time (seconds since the Unix
/// epoch): with the proxy's start time in the scrape it gives the period counted, which the
/// monthly figures are scaled from.
pub fn render(text: &str, now: f64) -> String {
    let samples = parse(text);
    let started = samples
        .iter()
        .find(|s| s.name == "thinkgate_start_time_seconds")
        .map(|s| s.value);
    let period = started.map(|t| now - t).filter(|p| *p > 0.0);
    let rows = rows(&samples);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<10} {:>7} {:>8} {:>6} {:>7} {:>7} {:>7} {:>8} {:>16}",
        "mode",
        "domain",
        "budget",
        "answers",
        "hit%",
        "p50",
        "p90",
        "p99",
        "suggest",
        "reasoning/month"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut suggestions: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((mode, domain), row) in &rows {
        let answers = row.natural + row.hits;
        if answers == 0.0 {
            continue;
        }
        let suggested = row.suggested();
        let monthly = match (suggested, period) {
            (Some(s), Some(p)) => row.delta(s as f64).map(|d| d * MONTH_SECONDS / p),
            _ => None,
        };
        let monthly = match monthly {
            // `+ 0.0` turns a negative zero into a plain one.
            Some(d) if d <= 0.0 => format!("saves {:.0}", -d + 0.0),
            Some(d) => format!("costs up to {d:.0}"),
            None if suggested.is_none() => format!("(under {MIN_ANSWERS:.0})"),
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:>7} {:>8.0} {:>6.1} {:>7} {:>7} {:>7} {:>8} {:>16}",
            mode,
            domain,
            fmt(row.budget),
            answers,
            100.0 * row.hits / answers,
            fmt(row.quantile(0.5)),
            fmt(row.quantile(0.9)),
            fmt(row.quantile(0.99)),
            suggested.map_or("keep".to_string(), |s| s.to_string()),
            monthly
        );
        if let Some(s) = suggested {
            suggestions
                .entry(mode.clone())
                .or_default()
                .insert(domain.clone(), s);
        }
    }
    if rows.values().all(|r| r.natural + r.hits == 0.0) {
        out.push_str("(no answers under a reasoning budget recorded yet)\n");
        return out;
    }
    match period {
        Some(p) => {
            let _ = writeln!(
                out,
                "\n(counted over {:.1} h; a month is 30 days of the same traffic)",
                p / 3600.0
            );
        }
        None => out.push_str("\n(the scrape has no start time: monthly figures unknown)\n"),
    }
    if suggestions.is_empty() {
        return out;
    }
    out.push_str("\n# Suggested budgets (the natural p90 per domain); paste into the config:\n");
    for (mode, domains) in &suggestions {
        // A domain's budget only tightens the mode's: the mode keeps the largest.
        let top = domains.values().copied().max().unwrap_or(16);
        let _ = writeln!(out, "[modes.{mode}]\nreasoning_budget = {top}");
        let named: Vec<String> = domains
            .iter()
            .filter(|(d, _)| d.as_str() != "none")
            .map(|(d, s)| format!("{d} = {s}"))
            .collect();
        if !named.is_empty() {
            let _ = writeln!(out, "domains = {{ {} }}", named.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::natural_buckets;

    /// A scrape of `values` as natural reasoning of one mode and domain, `hits` answers at
    /// the budget, started `hours` before `now`.
    fn scrape(values: &[f64], hits: f64, budget: f64, hours: f64, now: f64) -> String {
        let mut s = String::new();
        for le in natural_buckets().into_iter().chain([f64::INFINITY]) {
            let n = values.iter().filter(|v| **v <= le).count();
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                format!("{le}")
            };
            s += &format!("thinkgate_reasoning_natural_tokens_bucket{{domain=\"math\",mode=\"thinking\",le=\"{le}\"}} {n}\n");
        }
        s += &format!(
            "thinkgate_reasoning_natural_tokens_count{{domain=\"math\",mode=\"thinking\"}} {}\n",
            values.len()
        );
        s += &format!(
            "thinkgate_reasoning_budget_hits_total{{domain=\"math\",mode=\"thinking\"}} {hits}\n"
        );
        s += &format!(
            "thinkgate_reasoning_budget_tokens{{domain=\"math\",mode=\"thinking\"}} {budget}\n"
        );
        s += &format!("thinkgate_start_time_seconds {}\n", now - hours * 3600.0);
        s
    }

    #[test]
    fn percentiles_come_within_the_bucket_spacing_of_the_truth() {
        // 1,000 answers spread evenly over 200..400: the true p90 is 380.
        let values: Vec<f64> = (0..1000)
            .map(|i| 200.0 + 200.0 * i as f64 / 1000.0)
            .collect();
        let rows = rows(&parse(&scrape(&values, 0.0, 2048.0, 1.0, 1e9)));
        let row = &rows[&("thinking".to_string(), "math".to_string())];
        let p90 = row.quantile(0.9).unwrap();
        assert!((p90 - 380.0).abs() / 380.0 < 0.08, "p90 {p90}");
        assert_eq!(row.suggested(), Some(((p90 / 16.0).ceil() as u64) * 16));
    }

    #[test]
    fn the_report_suggests_the_p90_and_what_a_month_saves() {
        let values: Vec<f64> = (0..100).map(|i| 200.0 + 2.0 * i as f64).collect();
        let now = 1e9;
        let out = render(&scrape(&values, 10.0, 2048.0, 24.0, now), now);
        let row = out.lines().find(|l| l.starts_with("thinking")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[..4], ["thinking", "math", "2048", "110"], "{out}");
        assert_eq!(cols[4], "9.1");
        // 10 answers a day at the budget would spend the suggestion instead: a saving.
        assert_eq!(cols[9], "saves", "{out}");
        assert!(
            out.contains("[modes.thinking]\nreasoning_budget = 384\ndomains = { math = 384 }"),
            "{out}"
        );
        // Too few answers: the budget is kept.
        let few = render(&scrape(&values[..5], 0.0, 2048.0, 1.0, now), now);
        assert!(few.contains("keep") && !few.contains("[modes."), "{few}");
    }
}
