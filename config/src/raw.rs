//! The config file as written: serde structs that mirror the TOML one to one.
//!
//! Nothing here is trusted. [`crate::validate`] turns a [`RawConfig`] into the typed
//! [`crate::Config`] the proxy runs on; every rule that spans fields lives there, not here.
//! Every struct denies unknown fields so that a typo is an error, not a silently ignored key.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `"none"` runs without API keys (it must be said); `"keys"` (the default) needs
    /// `[keys.<name>]`.
    pub auth: Option<String>,
    #[serde(default)]
    pub keys: BTreeMap<String, RawKey>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub simulator: RawSimulator,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub modes: RawModes,
    #[serde(default)]
    pub domains: BTreeMap<String, RawDomain>,
    #[serde(default)]
    pub contemplating: RawContemplating,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub cache: RawCache,
}

/// `[cache]`: the exact response cache.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub ttl: Option<String>,
    pub max_bytes: Option<u64>,
    pub max_entry_bytes: Option<u64>,
    pub scope: Option<String>,
    pub backend: Option<String>,
}

/// `[state]`: where limit and quota state lives.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub backend: Option<String>,
    /// May hold `${VAR}` references (a password in the URL).
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub on_failure: Option<String>,
    pub replicas: Option<u64>,
    pub prefix: Option<String>,
}

/// `[telemetry]`: OpenTelemetry export over OTLP/HTTP.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub endpoint: Option<String>,
    /// Header values may hold `${VAR}` references (a collector's API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
    pub capture_content: Option<bool>,
    pub metrics: Option<bool>,
    pub metrics_interval: Option<String>,
    pub queue_spans: Option<u64>,
    pub export_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawContemplating {
    pub agents: Option<u64>,
    pub models: Option<String>,
    pub roles: Option<Vec<String>>,
    pub synthesis_model: Option<String>,
    pub synthesis_share: Option<f64>,
    pub early_agreement: Option<bool>,
    pub deadline: Option<String>,
    pub quorum: Option<u64>,
    /// Agents per domain.
    #[serde(default)]
    pub domains: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawModes {
    pub default: Option<String>,
    #[serde(default)]
    pub domain_defaults: BTreeMap<String, String>,
    pub instant: Option<RawModePolicy>,
    pub thinking: Option<RawModePolicy>,
    pub contemplating: Option<RawModePolicy>,
    /// Replaces the built-in table whole when given.
    pub efforts: Option<BTreeMap<String, RawEffortAsk>>,
    /// Replaces the built-in table whole when given.
    pub upstream_efforts: Option<BTreeMap<String, u64>>,
    pub hint: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawModePolicy {
    pub reasoning_budget: Option<u64>,
    pub answer_reserve: Option<u64>,
    pub budget_hint: Option<bool>,
    pub adaptive: Option<bool>,
    pub adaptive_min: Option<u64>,
    pub adaptive_max: Option<u64>,
    pub adaptive_percentile: Option<u64>,
    pub adaptive_period: Option<String>,
    #[serde(default)]
    pub domains: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEffortAsk {
    pub mode: String,
    pub reasoning_budget: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawModelThinking {
    pub knob: Option<String>,
    pub min_budget: Option<u64>,
    pub max_budget: Option<u64>,
    pub can_disable: Option<bool>,
    pub efforts: Option<Vec<String>>,
    pub overrun: Option<String>,
    pub stop_phrase: Option<String>,
    pub think_start: Option<String>,
    pub think_end: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub default_encoding: Option<String>,
    pub latency_buckets: Option<Vec<f64>>,
    pub ttft_buckets: Option<Vec<f64>>,
    pub reasoning_token_buckets: Option<Vec<f64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub request_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_upstream_calls: Option<u64>,
    pub retry_budget: Option<f64>,
    pub min_retries_per_second: Option<u64>,
    pub threads: Option<u64>,
    pub max_event_bytes: Option<u64>,
    pub max_response_bytes: Option<u64>,
    pub response_store_ttl: Option<String>,
    pub response_store_bytes: Option<u64>,
    pub shutdown_grace: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub reasoning_field: Option<String>,
    /// With `auth = "none"`, listen beyond loopback anyway.
    pub allow_public_without_auth: Option<bool>,
    /// `listen` came from the command line (`serve --listen`), not the file.
    #[serde(skip)]
    pub listen_from_flag: bool,
}

/// A client API key and its limits.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub secret: Option<String>,
    pub sha256: Option<String>,
    pub models: Option<Vec<String>>,
    pub modes: Option<Vec<String>>,
    #[serde(default)]
    pub max_budget: BTreeMap<String, u64>,
    pub requests_per_second: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    #[serde(default)]
    pub reasoning_tokens_per_minute: BTreeMap<String, u32>,
    #[serde(default)]
    pub reasoning_tokens_per_day: BTreeMap<String, u64>,
    pub output_tokens_per_day: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub default_model: Option<String>,
    pub confidence_threshold: Option<f64>,
    pub builtin_domains: Option<bool>,
    pub policy: Option<RawPolicy>,
    pub efficient_margin: Option<f64>,
    pub efficient_by: Option<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    /// Model names clients send (`claude-*`) → a configured id or `auto` (with a `:mode`).
    #[serde(default)]
    pub model_names: BTreeMap<String, String>,
}

/// A routing policy: `best`, `efficient`, or a fixed order of model ids.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawPolicy {
    Named(String),
    Order(Vec<String>),
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDomain {
    pub description: Option<String>,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// The built-in domains file: only `[domains]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDomainsFile {
    #[serde(default)]
    pub domains: BTreeMap<String, RawDomain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub stream_idle_timeout: Option<String>,
    pub http2_connections: Option<u64>,
    pub max_concurrent_calls: Option<u64>,
    pub default_max_tokens: Option<u64>,
    pub format: Option<String>,
    pub dialect: Option<String>,
    #[serde(default)]
    pub forward_headers: Vec<String>,
    pub retry: Option<RawRetry>,
    pub breaker: Option<RawBreaker>,
}

/// `[providers.<name>.retry]`: when a failed call is tried again on the same provider.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<u64>,
    pub on_status: Option<Vec<u64>>,
    pub per_try_timeout: Option<String>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub max_retry_after: Option<String>,
    pub hedge_after: Option<String>,
}

/// `[providers.<name>.breaker]`: when a model on this provider is left out after failures.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u64>,
    pub failure_rate: Option<f64>,
    pub window: Option<String>,
    pub min_calls: Option<u64>,
    pub open_for: Option<String>,
    pub half_open_probes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// The one provider serving the model (or `deployments`, for several).
    pub provider: Option<String>,
    pub deployments: Option<Vec<RawDeployment>>,
    pub balance: Option<String>,
    pub upstream_model: Option<String>,
    pub context_window: u64,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub price_input_per_mtok: Option<f64>,
    pub price_output_per_mtok: Option<f64>,
    pub encoding: Option<String>,
    pub thinking: Option<RawModelThinking>,
    /// Published score per domain (`general` is the fallback for domains without one).
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
    /// Output tokens (millions) the model used to run the AA Intelligence Index: how
    /// wordy it is, for the `efficient` policy.
    pub output_tokens_mtok: Option<f64>,
    /// A global limit on requests per second to this model, across all keys.
    pub requests_per_second: Option<u32>,
}

/// One of a model's deployments: a provider (region, account) that serves it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    pub upstream_model: Option<String>,
    pub weight: Option<u64>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSimulator {
    pub seed: Option<u64>,
    #[serde(default)]
    pub default: RawSimProfile,
    #[serde(default)]
    pub models: BTreeMap<String, RawSimProfile>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSimProfile {
    pub reasoning: Option<String>,
    pub reasoning_tokens: Option<u64>,
    pub answer_tokens: Option<u64>,
    pub tokens_per_second: Option<f64>,
    pub time_to_first_token: Option<String>,
    pub fault_status: Option<u64>,
    pub fault_reset_after: Option<u64>,
    pub fault_stall_after: Option<u64>,
}
