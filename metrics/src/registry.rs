//! Every metric family thinkgate exports. The names and labels are a contract (dashboards and
//! alerts are built on them); label values come only from config-bounded sets — model ids,
//! provider names, modes, domains, key names — never from raw client input.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Histogram buckets, in seconds unless named otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Whole requests and upstream calls: milliseconds to minutes.
    pub latency: Vec<f64>,
    /// Time to first token.
    pub ttft: Vec<f64>,
    /// Reasoning tokens per request.
    pub reasoning_tokens: Vec<f64>,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            latency: vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
                120.0, 300.0, 600.0,
            ],
            ttft: vec![
                0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 60.0,
            ],
            reasoning_tokens: vec![
                0.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
                65536.0,
            ],
        }
    }
}

/// The registry and its families. Built once per process; survives config reloads.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub ttft: HistogramVec,
    pub tokens: IntCounterVec,
    pub budget_utilization: HistogramVec,
    pub reasoning_per_request: HistogramVec,
    pub budget_enforcements: IntCounterVec,
    pub budget_overrun_tokens: IntCounterVec,
    pub empty_answers: IntCounterVec,
    pub routing_decisions: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub upstream_retries: IntCounterVec,
    pub retry_budget_exhausted: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub hedges: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub cost_usd: CounterVec,
    pub in_flight: IntGauge,
    pub config_reloads: IntCounterVec,
    pub telemetry_spans: IntCounterVec,
    pub reasoning_natural: HistogramVec,
    pub reasoning_budget_hits: IntCounterVec,
    pub reasoning_budget: IntGaugeVec,
    pub start_time: prometheus::Gauge,
    pub state_backend_up: IntGauge,
    pub state_unavailable: IntCounterVec,
    pub state_lost_settlements: IntCounter,
    pub cache_lookups: IntCounterVec,
    pub cache_saved_tokens: IntCounterVec,
    pub cache_saved_usd: prometheus::CounterVec,
    pub cache_stores: IntCounterVec,
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub build_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Reasoning-token buckets 15 % apart from 16 to past 131,072 (and 0): a percentile read
/// from them is within ~7 % of the true one.
pub fn natural_buckets() -> Vec<f64> {
    let mut buckets = vec![0.0];
    let mut b = 16.0f64;
    while b < 131_072.0 * 1.15 {
        buckets.push(b.round());
        b *= 1.15;
    }
    buckets
}

/// Registering a freshly made family in a fresh registry cannot collide.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric family registers once: {e}")); // ok: names are static and unique
    c
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{e}")),
    ) // ok: static definition
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    reg(
        r,
        HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("{e}")),
    ) // ok: buckets validated by config
}

impl Metrics {
    pub fn new(buckets: &Buckets) -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            requests: counter(&r, "thinkgate_requests_total", "Requests answered, by endpoint, model, mode, domain and HTTP status.", &["endpoint", "model", "mode", "domain", "status"]),
            request_duration: histogram(&r, "thinkgate_request_duration_seconds", "Time from request to the last byte of the response.", &["endpoint", "model", "mode"], &buckets.latency),
            ttft: histogram(&r, "thinkgate_time_to_first_token_seconds", "Time from request to the first reasoning, content or tool-call token.", &["model", "mode"], &buckets.ttft),
            tokens: counter(&r, "thinkgate_tokens_total", "Tokens by kind: prompt; output (all completion tokens, reasoning included, as billed); reasoning (the reasoning part of output); cache_read and cache_write (the parts of prompt read from and written to the upstream's prompt cache). source says whether the upstream reported them or thinkgate counted them.", &["model", "mode", "domain", "kind", "source"]),
            budget_utilization: histogram(&r, "thinkgate_reasoning_budget_utilization_ratio", "Reasoning tokens used divided by the reasoning budget, per request with a budget.", &["model", "mode"], &[0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2.0, 4.0]),
            reasoning_per_request: histogram(&r, "thinkgate_reasoning_tokens_per_request", "Reasoning tokens per request.", &["model", "mode", "domain"], &buckets.reasoning_tokens),
            budget_enforcements: counter(&r, "thinkgate_budget_enforcements_total", "Reasoning budgets enforced, by method: native (the upstream's knob), watched (the proxy counted and needed not act), forced (stopped and continued), cut (stopped).", &["model", "mode", "method"]),
            budget_overrun_tokens: counter(&r, "thinkgate_budget_overrun_tokens_total", "Reasoning tokens the upstream spent past the budget.", &["model", "mode"]),
            empty_answers: counter(&r, "thinkgate_empty_answers_total", "Responses that ended with no answer and no tool call, by reason.", &["model", "mode", "reason"]),
            routing_decisions: counter(&r, "thinkgate_routing_decisions_total", "Requests to `auto` routed, by domain and chosen model.", &["domain", "model"]),
            upstream_requests: counter(&r, "thinkgate_upstream_requests_total", "Calls to upstreams, by outcome.", &["provider", "model", "outcome"]),
            upstream_duration: histogram(&r, "thinkgate_upstream_duration_seconds", "Time from sending an upstream request to its last byte.", &["provider", "model"], &buckets.latency),
            upstream_retries: counter(&r, "thinkgate_upstream_retries_total", "Upstream calls sent again after a failure before their first byte, by what failed: unreachable, timeout, broken, status_429, status_5xx (or status_408).", &["provider", "model", "reason"]),
            retry_budget_exhausted: counter(&r, "thinkgate_retry_budget_exhausted_total", "Retries not sent because the provider's retry budget (server.retry_budget) was spent.", &["provider"]),
            breaker_state: reg(&r, IntGaugeVec::new(Opts::new("thinkgate_circuit_breaker_state", "Each deployment's circuit breaker: 0 closed, 1 half-open (probing), 2 open (no calls)."), &["provider", "model"]).unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            breaker_transitions: counter(&r, "thinkgate_circuit_breaker_transitions_total", "Circuit breaker changes, by the state entered.", &["provider", "model", "to"]),
            hedges: counter(&r, "thinkgate_hedges_total", "Hedged calls: sent (to this deployment, after the first one's wait), won (answered first; the other was cancelled).", &["provider", "model", "result"]),
            rate_limited: counter(&r, "thinkgate_rate_limited_total", "Requests refused by a rate limit or quota, by API key name and limit.", &["key", "limit"]),
            cost_usd: reg(&r, CounterVec::new(Opts::new("thinkgate_cost_usd_total", "Cost in US dollars from the models' configured prices."), &["model"]).unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            in_flight: reg(&r, IntGauge::new("thinkgate_in_flight_requests", "Requests being answered now (streams until their last byte).").unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            config_reloads: counter(&r, "thinkgate_config_reloads_total", "Config reloads, by result.", &["result"]),
            telemetry_spans: counter(&r, "thinkgate_telemetry_spans_total", "Finished trace spans, by what became of them: exported to the OTLP collector, queue_full (dropped: the export queue was full), export_failed (dropped: the collector refused, failed or timed out).", &["outcome"]),
            reasoning_natural: histogram(&r, "thinkgate_reasoning_natural_tokens", "Reasoning tokens of answers under a budget whose thinking ended on its own (not forced or cut, under the budget): what the traffic needs. Buckets 15 % apart, for percentiles within a few percent.", &["mode", "domain"], &natural_buckets()),
            reasoning_budget_hits: counter(&r, "thinkgate_reasoning_budget_hits_total", "Answers under a budget whose thinking reached it (forced to answer, cut, or at the limit).", &["mode", "domain"]),
            reasoning_budget: reg(&r, IntGaugeVec::new(Opts::new("thinkgate_reasoning_budget_tokens", "The reasoning budget in force per mode and domain (none: a request that named its model)."), &["mode", "domain"]).unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            start_time: reg(&r, prometheus::Gauge::new("thinkgate_start_time_seconds", "When the proxy's counters started, in seconds since the Unix epoch: the period a scrape covers.").unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            state_backend_up: reg(&r, IntGauge::new("thinkgate_state_backend_up", "With [state] backend = \"redis\": 1 while Redis answers, 0 while admissions fall back; always 1 with the memory backend.").unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            state_unavailable: counter(&r, "thinkgate_state_unavailable_total", "Admissions decided without the shared state (Redis slow or down), by the configured behaviour: open (local limits at limit / replicas) or closed (refused).", &["on_failure"]),
            state_lost_settlements: reg(&r, IntCounter::new("thinkgate_state_lost_settlements_total", "Finished requests whose charges the shared state (Redis) could not take.").unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            cache_lookups: counter(&r, "thinkgate_cache_lookups_total", "Requests by what the response cache did: hit (answered from it), miss (asked upstream, then kept when it could be) or bypass (not a request a repeat answers, or the client said no).", &["endpoint", "result"]),
            cache_saved_tokens: counter(&r, "thinkgate_cache_saved_tokens_total", "Tokens not spent because the cache answered: the original call's usage, per hit, by the model that wrote it and kind (prompt, output, reasoning).", &["model", "kind"]),
            cache_saved_usd: reg(&r, prometheus::CounterVec::new(Opts::new("thinkgate_cache_saved_usd_total", "US dollars not spent because the cache answered, at the configured prices of the model that wrote the answer."), &["model"]).unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            cache_stores: counter(&r, "thinkgate_cache_stores_total", "Answers offered to the cache, by outcome: stored, too_large (over max_entry_bytes), incomplete (failed, cut or empty: not kept), unavailable (Redis did not take it), or no_room (the answers being recorded already held max_bytes together).", &["outcome"]),
            cache_bytes: reg(&r, IntGauge::new("thinkgate_cache_bytes", "Bytes the memory backend of the response cache holds (at most [cache] max_bytes).").unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            cache_entries: reg(&r, IntGauge::new("thinkgate_cache_entries", "Answers the memory backend of the response cache holds.").unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            build_info: reg(&r, IntGaugeVec::new(Opts::new("thinkgate_build_info", "Always 1; the version is in the label."), &["version"]).unwrap_or_else(|e| panic!("{e}"))), // ok: static definition
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        m.start_time.set(now);
        m
    }

    /// The name of every family, as scraped.
    pub fn family_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 36] = [
            &self.requests,
            &self.request_duration,
            &self.ttft,
            &self.tokens,
            &self.budget_utilization,
            &self.reasoning_per_request,
            &self.budget_enforcements,
            &self.budget_overrun_tokens,
            &self.empty_answers,
            &self.routing_decisions,
            &self.upstream_requests,
            &self.upstream_duration,
            &self.upstream_retries,
            &self.retry_budget_exhausted,
            &self.breaker_state,
            &self.breaker_transitions,
            &self.hedges,
            &self.rate_limited,
            &self.cost_usd,
            &self.in_flight,
            &self.config_reloads,
            &self.telemetry_spans,
            &self.reasoning_natural,
            &self.reasoning_budget_hits,
            &self.reasoning_budget,
            &self.start_time,
            &self.state_backend_up,
            &self.state_unavailable,
            &self.state_lost_settlements,
            &self.cache_lookups,
            &self.cache_saved_tokens,
            &self.cache_saved_usd,
            &self.cache_stores,
            &self.cache_bytes,
            &self.cache_entries,
            &self.build_info,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on inconsistent metric data, which the registry
        // does not produce; an empty scrape is the safe fallback.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric a dashboard panel queries exists.
    #[test]
    fn dashboard_queries_only_existing_metrics() {
        let names = Metrics::new(&Buckets::default()).family_names();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../dashboards/thinkgate.json"))
                .expect("dashboard is JSON");
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if let Some(name) = word.strip_prefix("thinkgate_").map(|_| word) {
                        let family = ["_bucket", "_sum", "_count"]
                            .iter()
                            .find_map(|s| name.strip_suffix(s))
                            .unwrap_or(name);
                        assert!(
                            names.iter().any(|n| n == family),
                            "panel {:?} queries unknown {name}",
                            panel["title"]
                        );
                        queried += 1;
                    }
                }
            }
        }
        assert!(queried >= 20);
        assert_eq!(names.len(), 36);
    }
}
