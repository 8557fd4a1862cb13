//! The runtime: everything built from one [`Config`] that requests read, built once per
//! config load and swapped whole (arc-swap) so the hot path never locks or re-reads config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;
use thinkgate_config::{Config, Model};
use thinkgate_metrics::{Buckets, Metrics, TokenCounter};

use crate::account::ModelMetrics;
use crate::plan::classify::Classifier;
use crate::plan::route::Table;
use crate::providers::Upstream;
use crate::server::keys::KeySet;
use crate::simulator::Simulator;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A model clients can name, with the upstream that serves it.
#[derive(Debug)]
pub struct Route {
    pub model: Model,
    pub upstream: Arc<Upstream>,
    pub counter: TokenCounter,
    /// `x-thinkgate-model`, precomputed.
    pub header: http::HeaderValue,
    pub metrics: Arc<ModelMetrics>,
    /// Recent failures, for routing around an upstream that is down.
    pub health: Health,
    /// The model's global request limit across keys, if it has one.
    pub limiter: Option<governor::DefaultDirectRateLimiter>,
}

/// An upstream's recent failures: after [`Health::DOWN_AFTER`] in a row, `auto` leaves the
/// model out for [`Health::COOL_DOWN`], then tries it again.
#[derive(Debug, Default)]
pub struct Health {
    failures: AtomicU32,
    /// Milliseconds since the process's clock origin until which the model is left out.
    down_until: AtomicU64,
}

fn clock_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Health {
    pub const DOWN_AFTER: u32 = 3;
    pub const COOL_DOWN: Duration = Duration::from_secs(15);

    pub fn failed(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= Self::DOWN_AFTER {
            let until = clock_ms() + Self::COOL_DOWN.as_millis() as u64;
            self.down_until.store(until, Ordering::Relaxed);
        }
    }

    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.down_until.store(0, Ordering::Relaxed);
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How long the model is still left out, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        let until = self.down_until.load(Ordering::Relaxed);
        let now = clock_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }
}

pub struct Runtime {
    pub config: Arc<Config>,
    /// Shared with the runtimes built by later reloads, so counters never reset.
    pub metrics: Arc<Metrics>,
    pub simulator: Arc<Simulator>,
    routes: HashMap<String, Arc<Route>>,
    /// The `/v1/models` body, rendered once.
    pub models_body: Bytes,
    /// The domain classifier, trained from the config's domains.
    pub classifier: Arc<Classifier>,
    /// The models ranked per domain for `auto`.
    pub table: Table,
    /// Domain label values: `none`, then the config's domains in order.
    pub domains: Arc<[String]>,
    /// Client keys and their limit state.
    pub keys: KeySet,
}

/// The ids every config offers besides its models.
pub const VIRTUAL_MODELS: [&str; 4] = [
    "auto",
    "auto:instant",
    "auto:thinking",
    "auto:contemplating",
];

impl Runtime {
    /// Builds the first runtime of a process, with a fresh metrics registry.
    pub fn build(config: Config) -> Result<Runtime, String> {
        let defaults = Buckets::default();
        let m = &config.metrics;
        let buckets = Buckets {
            latency: m.latency_buckets.clone().unwrap_or(defaults.latency),
            ttft: m.ttft_buckets.clone().unwrap_or(defaults.ttft),
            reasoning_tokens: m
                .reasoning_token_buckets
                .clone()
                .unwrap_or(defaults.reasoning_tokens),
        };
        Runtime::build_with(config, Arc::new(Metrics::new(&buckets)), None)
    }

    /// Builds a runtime that records into an existing registry and keeps the limit state of
    /// unchanged keys (a reload).
    pub fn build_with(
        config: Config,
        metrics: Arc<Metrics>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, String> {
        let simulator = Arc::new(Simulator::new(config.simulator.clone()));
        let mut upstreams = HashMap::new();
        for p in &config.providers {
            let up = Upstream::build(p, &simulator)
                .map_err(|e| format!("provider `{}`: {e}", p.name))?;
            upstreams.insert(p.name.clone(), Arc::new(up));
        }
        TokenCounter::warm_up(config.models.iter().map(|m| m.encoding));
        let domains: Arc<[String]> = std::iter::once("none".to_string())
            .chain(config.domains.iter().map(|d| d.name.clone()))
            .collect();
        let mut routes = HashMap::new();
        for m in &config.models {
            let upstream = upstreams
                .get(&m.provider)
                .cloned()
                .ok_or_else(|| format!("model `{}`: provider `{}` is missing", m.id, m.provider))?;
            let header = http::HeaderValue::from_str(&m.id)
                .map_err(|_| format!("model id `{}` is not a valid header value", m.id))?;
            routes.insert(
                m.id.clone(),
                Arc::new(Route {
                    model: m.clone(),
                    upstream,
                    counter: TokenCounter::new(m.encoding),
                    header,
                    metrics: Arc::new(ModelMetrics::new(&metrics, m, domains.clone())),
                    health: Health::default(),
                    limiter: m.requests_per_second.and_then(|r| {
                        std::num::NonZeroU32::new(r)
                            .map(|r| governor::RateLimiter::direct(governor::Quota::per_second(r)))
                    }),
                }),
            );
        }
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut data: Vec<_> = config
            .models
            .iter()
            .map(|m| json!({"id": m.id, "object": "model", "created": created, "owned_by": m.provider}))
            .collect();
        data.extend(VIRTUAL_MODELS.iter().map(
            |id| json!({"id": id, "object": "model", "created": created, "owned_by": "thinkgate"}),
        ));
        let models_body = Bytes::from(json!({"object": "list", "data": data}).to_string());
        let classifier = Classifier::shared(&config.domains, config.confidence_threshold);
        let table = Table::build(&config, &routes);
        let keys = KeySet::build(&config, previous.map(|p| &p.keys));
        Ok(Runtime {
            keys,
            table,
            domains,
            classifier,
            config: Arc::new(config),
            metrics,
            simulator,
            routes,
            models_body,
        })
    }

    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        self.routes.get(id)
    }

    /// Ready when at least one model's upstream can take requests.
    pub fn ready(&self) -> bool {
        self.routes.values().any(|r| r.upstream.unusable.is_none())
    }
}
