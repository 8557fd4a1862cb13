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
use crate::providers::Upstream;
use crate::simulator::Simulator;

/// A model clients can name, with the upstream that serves it.
#[derive(Debug)]
pub struct Route {
    pub model: Model,
    pub upstream: Arc<Upstream>,
    pub counter: TokenCounter,
    /// `x-thinkgate-model`, precomputed.
    pub header: http::HeaderValue,
    pub metrics: Arc<ModelMetrics>,
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
        Runtime::build_with(config, Arc::new(Metrics::new(&buckets)))
    }

    /// Builds a runtime that records into an existing registry (a reload).
    pub fn build_with(config: Config, metrics: Arc<Metrics>) -> Result<Runtime, String> {
        let simulator = Arc::new(Simulator::new(config.simulator.clone()));
        let mut upstreams = HashMap::new();
        for p in &config.providers {
            let up = Upstream::build(p, &simulator)
                .map_err(|e| format!("provider `{}`: {e}", p.name))?;
            upstreams.insert(p.name.clone(), Arc::new(up));
        }
        TokenCounter::warm_up(config.models.iter().map(|m| m.encoding));
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
                    metrics: Arc::new(ModelMetrics::new(&metrics, m)),
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
        Ok(Runtime {
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
