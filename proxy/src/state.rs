//! The runtime: everything built from one [`Config`] that requests read, built once per
//! config load and swapped whole (arc-swap) so the hot path never locks or re-reads config.
//!
//! What a reload leaves unchanged is carried over rather than rebuilt: an upstream whose
//! provider section is the same keeps its connection pools, a model keeps its health and (at
//! the same rate) its request limiter, and a client key its limit state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};
use thinkgate_config::{Adaptive, Config, Mode, Model, Provider, StateBackend};

use crate::plan::budget::Learned;
use thinkgate_metrics::{Buckets, Metrics, TokenCounter};

use crate::auth::shared::SharedState;
use crate::auth::KeySet;
use crate::cache::ResponseCache;
use crate::models::{DeploymentState, ModelLimiter, Route};
use crate::plan::classify::Classifier;
use crate::plan::route::Table;
use crate::plan::Tables;
use crate::resilience::Breaker;
use crate::telemetry::otlp::Exporter;
use crate::telemetry::ModelMetrics;
use crate::upstream::{LocalFactory, LocalUpstream, Upstream};

pub struct Runtime {
    pub config: Arc<Config>,
    /// Shared with the runtimes built by later reloads, so counters never reset.
    pub metrics: Arc<Metrics>,
    routes: HashMap<String, Arc<Route>>,
    /// Each provider's upstream with the section it was built from, for reuse on reload.
    upstreams: HashMap<String, (Provider, Arc<Upstream>)>,
    /// The `/v1/models` body, rendered once.
    pub models_body: Bytes,
    /// The same list in Anthropic's shape, for clients that send `anthropic-version`.
    pub anthropic_models_body: Bytes,
    /// The domain classifier, trained from the config's domains.
    pub classifier: Arc<Classifier>,
    /// The models ranked per domain for `auto`.
    pub table: Table,
    /// Domain label values: `none`, then the config's domains in order.
    pub domains: Arc<[String]>,
    /// Client keys and their limit state.
    pub keys: KeySet,
    /// Builds the in-process upstream (the binary's simulator) for each load.
    local: Option<LocalFactory>,
    /// The one built for this load, shared by its `simulator` providers.
    pub local_upstream: Option<Arc<dyn LocalUpstream>>,
    /// `server.max_upstream_calls`: a slot per upstream call in flight, held until its
    /// response ends (kept across reloads while the number is unchanged).
    pub upstream_calls: Arc<tokio::sync::Semaphore>,
    /// Responses API conversations for `previous_response_id` (kept across reloads).
    pub responses: Arc<crate::responses::Store>,
    /// OTLP export of traces (and GenAI metrics), when `[telemetry]` names a collector
    /// (kept across reloads while that section is unchanged).
    pub telemetry: Option<Arc<Exporter>>,
    /// The keys' limit state in Redis, when `[state]` says so (kept across reloads while
    /// that section is unchanged).
    pub shared_state: Option<Arc<SharedState>>,
    /// The budgets adaptive modes learn from traffic (kept across reloads).
    pub learner: Arc<Learner>,
    /// The exact response cache, when `[cache]` is on (kept across reloads while that
    /// section and the Redis it uses are unchanged).
    pub cache: Option<Arc<ResponseCache>>,
}

/// Learns the budgets of adaptive modes: every mode's `adaptive_period`, per domain, the
/// window of natural reasoning and budget hits since the last change gives the next budget
/// ([`crate::plan::learn::next_budget`]), published for requests to read and shown in
/// `thinkgate_reasoning_budget_tokens`.
pub struct Learner {
    pub table: arc_swap::ArcSwap<Learned>,
    /// The adaptive modes of the config in force.
    settings: arc_swap::ArcSwap<Vec<AdaptiveMode>>,
    running: std::sync::atomic::AtomicBool,
}

/// One adaptive mode: its bounds, and the configured budget of each domain (what a domain
/// without enough answers keeps).
type AdaptiveMode = (Mode, Adaptive, Vec<(String, u64)>);

impl Learner {
    fn new() -> Learner {
        Learner {
            table: arc_swap::ArcSwap::from_pointee(Learned::default()),
            settings: arc_swap::ArcSwap::from_pointee(Vec::new()),
            running: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Takes the adaptive modes of a (re)loaded config; starts learning on the first one
    /// that has any (there must be a tokio runtime: a CLI command that only plans has none).
    fn configure(self: &Arc<Self>, config: &Config, domains: &[String], metrics: &Arc<Metrics>) {
        let mut settings = Vec::new();
        for mode in [Mode::Instant, Mode::Thinking, Mode::Contemplating] {
            let policy = config.modes.policy(mode);
            let Some(adaptive) = policy.adaptive else {
                continue;
            };
            let configured = domains
                .iter()
                .map(|d| {
                    let cap = policy.domain_budgets.get(d).copied();
                    (
                        d.clone(),
                        cap.map_or(policy.reasoning_budget, |c| c.min(policy.reasoning_budget)),
                    )
                })
                .collect();
            settings.push((mode, adaptive, configured));
        }
        // What a mode no longer learns is forgotten.
        let kept: Learned = Learned(
            self.table
                .load()
                .0
                .iter()
                .filter(|(m, _)| settings.iter().any(|(mode, _, _)| *mode as usize == **m))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        );
        self.table.store(Arc::new(kept));
        let any = !settings.is_empty();
        self.settings.store(Arc::new(settings));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if any && !self.running.swap(true, std::sync::atomic::Ordering::AcqRel) {
            runtime.spawn(learn(Arc::downgrade(self), metrics.clone()));
        }
    }
}

/// The learning loop: wakes each second, recomputes each adaptive mode once its period has
/// passed, and ends when the learner is gone.
async fn learn(learner: std::sync::Weak<Learner>, metrics: Arc<Metrics>) {
    use crate::plan::learn::{next_budget, Window};
    use prometheus::core::Metric;
    let mut windows: HashMap<(usize, String), Window> = HashMap::new();
    // By the ticks' own instants, exactly a second apart: against the wall clock a period of
    // one tick would be missed by microseconds and wait a tick more.
    let mut last_run: HashMap<usize, tokio::time::Instant> = HashMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let tick_at = tick.tick().await;
        let Some(learner) = learner.upgrade() else {
            return;
        };
        let settings = learner.settings.load_full();
        let mut table = (**learner.table.load()).clone();
        let mut changed = false;
        for (mode, adaptive, configured) in settings.iter() {
            let due = last_run
                .get(&(*mode as usize))
                .is_none_or(|t| tick_at.duration_since(*t) >= adaptive.period);
            if !due {
                continue;
            }
            last_run.insert(*mode as usize, tick_at);
            for (domain, budget) in configured {
                let labels = [mode.as_str(), domain.as_str()];
                let natural = metrics
                    .reasoning_natural
                    .with_label_values(&labels)
                    .metric();
                let h = natural.get_histogram();
                let now = Window {
                    buckets: h
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .chain([(f64::INFINITY, h.get_sample_count())])
                        .collect(),
                    natural: h.get_sample_count(),
                    hits: metrics
                        .reasoning_budget_hits
                        .with_label_values(&labels)
                        .get(),
                };
                let key = (*mode as usize, domain.clone());
                let earlier = windows.entry(key.clone()).or_insert_with(|| Window {
                    buckets: Vec::new(),
                    natural: 0,
                    hits: 0,
                });
                let current = table.get(*mode, domain).unwrap_or(*budget);
                let Some(next) = next_budget(&now.since(earlier), current, adaptive) else {
                    continue;
                };
                *earlier = now;
                if next != current || table.get(*mode, domain).is_none() {
                    tracing::info!(mode = mode.as_str(), domain = %domain, from = current, to = next, "Learned a reasoning budget from traffic.");
                    table.set(*mode, domain, next);
                    metrics
                        .reasoning_budget
                        .with_label_values(&labels)
                        .set(i64::try_from(next).unwrap_or(i64::MAX));
                    changed = true;
                }
            }
        }
        if changed {
            learner.table.store(Arc::new(table));
        }
    }
}

/// The ids every config offers besides its models.
pub const VIRTUAL_MODELS: [&str; 4] = [
    "auto",
    "auto:instant",
    "auto:thinking",
    "auto:contemplating",
];

impl Runtime {
    /// Builds the first runtime of a process, with a fresh metrics registry. `local` serves
    /// the providers of kind `simulator`.
    pub fn build(config: Config, local: Option<LocalFactory>) -> Result<Runtime, String> {
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
        Runtime::assemble(config, Arc::new(Metrics::new(&buckets)), local, None)
    }

    /// The runtime for a reloaded config: same registry and in-process upstream factory,
    /// with the state of what did not change carried over.
    pub fn rebuild(&self, config: Config) -> Result<Runtime, String> {
        Runtime::assemble(config, self.metrics.clone(), self.local.clone(), Some(self))
    }

    fn assemble(
        config: Config,
        metrics: Arc<Metrics>,
        local: Option<LocalFactory>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, String> {
        let local_upstream = local.as_ref().map(|f| f(&config));
        let mut upstreams = HashMap::new();
        for p in &config.providers {
            let reused = previous
                // The retry budget is built into each upstream.
                .filter(|prev| prev.config.server.retry_budget == config.server.retry_budget)
                .and_then(|prev| prev.upstreams.get(&p.name))
                // An in-process upstream is rebuilt with its config; pools are kept.
                .filter(|(was, _)| was == p && p.kind != thinkgate_config::ProviderKind::Simulator)
                .map(|(_, up)| up.clone());
            let up = match reused {
                Some(up) => up,
                None => Arc::new(
                    Upstream::build(p, &config.server.retry_budget, local_upstream.as_ref())
                        .map_err(|e| format!("provider `{}`: {e}", p.name))?,
                ),
            };
            upstreams.insert(p.name.clone(), (p.clone(), up));
        }
        TokenCounter::warm_up(config.models.iter().map(|m| m.encoding));
        let domains: Arc<[String]> = std::iter::once("none".to_string())
            .chain(config.domains.iter().map(|d| d.name.clone()))
            .collect();
        let mut routes = HashMap::new();
        for m in &config.models {
            let was = previous.and_then(|p| p.routes.get(&m.id));
            // The model's limit is across keys and deployments: one limiter for all.
            let limiter = match was.and_then(|w| w.limiter.clone()) {
                Some(l) if l.rate == m.requests_per_second => Some(l),
                _ => ModelLimiter::new(m.requests_per_second).map(Arc::new),
            };
            let mut built = Vec::with_capacity(m.deployments.len());
            for d in &m.deployments {
                let upstream = upstreams
                    .get(&d.provider)
                    .map(|(_, up)| up.clone())
                    .ok_or_else(|| {
                        format!("model `{}`: provider `{}` is missing", m.id, d.provider)
                    })?;
                let was_here =
                    was.and_then(|w| w.deployments().find(|r| r.model.provider == d.provider));
                let parts = RouteParts {
                    model: m,
                    deployment: d,
                    labelled: m.deployments.len() > 1,
                    upstream,
                    limiter: limiter.clone(),
                };
                built.push(Route::new(parts, &metrics, domains.clone(), was_here)?);
            }
            let mut first = built.remove(0);
            first.others = built.into_iter().map(Arc::new).collect();
            routes.insert(m.id.clone(), Arc::new(first));
        }
        let models_body = models_body(&config.models);
        let anthropic_models_body = anthropic_models_body(&config.models);
        let classifier = Classifier::shared(&config.domains, config.confidence_threshold);
        let table = Table::build(&config, &routes);
        let shared_state = match (&config.state, previous) {
            (StateBackend::Memory, _) => {
                metrics.state_backend_up.set(1);
                None
            }
            (StateBackend::Redis(_), Some(p)) if p.config.state == config.state => {
                p.shared_state.clone()
            }
            (StateBackend::Redis(redis), _) => Some(SharedState::start(redis, &metrics)?),
        };
        let cache = match &config.cache {
            None => None,
            Some(c) => match previous.and_then(|p| p.cache.as_ref()) {
                Some(kept) if kept.serves(c, shared_state.as_ref()) => Some(kept.clone()),
                _ => Some(Arc::new(ResponseCache::new(
                    c,
                    shared_state.as_ref(),
                    &metrics,
                )?)),
            },
        };
        let keys = KeySet::build(&config, previous.map(|p| &p.keys), shared_state.as_ref());
        let shared_for_store = shared_state.clone();
        for route in routes.values().flat_map(|r| r.deployments()) {
            route.metrics.touch(&metrics);
        }
        for mode in [Mode::Instant, Mode::Thinking, Mode::Contemplating] {
            let policy = config.modes.policy(mode);
            for domain in domains.iter() {
                let budget = policy
                    .domain_budgets
                    .get(domain)
                    .map_or(policy.reasoning_budget, |d| {
                        (*d).min(policy.reasoning_budget)
                    });
                metrics
                    .reasoning_budget
                    .with_label_values(&[mode.as_str(), domain])
                    .set(i64::try_from(budget).unwrap_or(i64::MAX));
            }
        }
        for key in &config.keys {
            for limit in crate::auth::LIMITS {
                metrics.rate_limited.with_label_values(&[&key.name, limit]);
            }
        }
        let max_calls = config.server.max_upstream_calls;
        let upstream_calls = previous
            .filter(|p| p.config.server.max_upstream_calls == max_calls)
            .map(|p| p.upstream_calls.clone())
            .unwrap_or_else(|| Arc::new(tokio::sync::Semaphore::new(max_calls)));
        let server = &config.server;
        let responses = match previous {
            Some(p) => {
                p.responses
                    .configure(server.response_store_ttl, server.response_store_bytes);
                p.responses.clone()
            }
            None => Arc::new(crate::responses::Store::new(
                server.response_store_ttl,
                server.response_store_bytes,
            )),
        };
        responses.share(shared_for_store);
        let telemetry = match previous.and_then(|p| p.telemetry.as_ref()) {
            Some(t) if t.config() == &config.telemetry => Some(t.clone()),
            _ => Exporter::start(&config.telemetry, &metrics)?,
        };
        let learner = previous.map_or_else(|| Arc::new(Learner::new()), |p| p.learner.clone());
        learner.configure(&config, &domains, &metrics);
        Ok(Runtime {
            cache,
            learner,
            shared_state,
            telemetry,
            responses,
            upstream_calls,
            keys,
            table,
            domains,
            classifier,
            config: Arc::new(config),
            metrics,
            routes,
            upstreams,
            models_body,
            anthropic_models_body,
            local,
            local_upstream,
        })
    }

    /// Every configured model's route.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        self.routes.get(id)
    }

    /// What the planner reads, borrowed from this runtime.
    pub fn tables(&self) -> Tables<'_> {
        Tables {
            config: &self.config,
            routes: &self.routes,
            classifier: &self.classifier,
            table: &self.table,
            learned: self.learner.table.load(),
        }
    }

    /// Ready when at least one model's upstream can take requests.
    pub fn ready(&self) -> bool {
        self.routes
            .values()
            .flat_map(|r| r.deployments())
            .any(|r| r.upstream.unusable.is_none())
    }
}

/// What one deployment's route is made of.
struct RouteParts<'a> {
    model: &'a Model,
    deployment: &'a thinkgate_config::Deployment,
    /// The model has several deployments: label this one `id@provider`.
    labelled: bool,
    upstream: Arc<Upstream>,
    limiter: Option<Arc<ModelLimiter>>,
}

impl Route {
    /// The route for one deployment of a model, keeping the breaker and load of `was` (the
    /// same deployment in the previous runtime) where they still apply.
    fn new(
        parts: RouteParts<'_>,
        metrics: &Metrics,
        domains: Arc<[String]>,
        was: Option<&Route>,
    ) -> Result<Route, String> {
        let RouteParts {
            model,
            deployment,
            labelled,
            upstream,
            limiter,
        } = parts;
        let mut model = model.clone();
        model.provider = deployment.provider.clone();
        model.upstream_model = deployment.upstream_model.clone();
        let header = http::HeaderValue::from_str(&model.id)
            .map_err(|_| format!("model id `{}` is not a valid header value", model.id))?;
        let same_upstream = was.is_some_and(|w| Arc::ptr_eq(&w.upstream, &upstream));
        let breaker = match was {
            Some(w) if same_upstream => w.breaker.clone(),
            _ => Arc::new(Breaker::new(
                upstream.breaker.clone(),
                std::time::Instant::now(),
            )),
        };
        let state = match was {
            Some(w) if w.deployment.config == *deployment => w.deployment.clone(),
            _ => Arc::new(DeploymentState::new(deployment)),
        };
        let label = match labelled {
            true => format!("{}@{}", model.id, deployment.provider),
            false => model.id.clone(),
        };
        Ok(Route {
            serving: crate::models::serving_digest(&model),
            metrics: Arc::new(ModelMetrics::new(metrics, &model, upstream.kind, domains)),
            counter: TokenCounter::new(model.encoding),
            model,
            label,
            others: Vec::new(),
            deployment: state,
            upstream,
            header,
            breaker,
            limiter,
        })
    }
}

/// The `/v1/models` body: the configured models, then the virtual ids.
fn models_body(models: &[Model]) -> Bytes {
    let data: Vec<_> = model_objects(models).into_iter().map(|(_, o)| o).collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// Anthropic's model list (`GET /v1/models` with `anthropic-version`): one page, every id.
fn anthropic_models_body(models: &[Model]) -> Bytes {
    let ids: Vec<String> = model_objects(models)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let data: Vec<Value> = ids.iter().map(|id| anthropic_model(id)).collect();
    Bytes::from(
        json!({"data": data, "has_more": false, "first_id": ids.first(), "last_id": ids.last()})
            .to_string(),
    )
}

/// One model in Anthropic's shape (its `created_at` is the proxy's, not the vendor's).
fn anthropic_model(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})
}

/// Every id the proxy serves (configured models, then `auto` and its modes) as an OpenAI
/// model object.
fn model_objects(models: &[Model]) -> Vec<(String, Value)> {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let object = |id: &str, owner: &str| json!({"id": id, "object": "model", "created": created, "owned_by": owner});
    let mut out: Vec<_> = models
        .iter()
        .map(|m| (m.id.clone(), object(&m.id, &m.provider)))
        .collect();
    out.extend(
        VIRTUAL_MODELS
            .iter()
            .map(|id| (id.to_string(), object(id, "thinkgate"))),
    );
    out
}

impl Runtime {
    /// `GET /v1/models/{id}`: a served id, or a name `[routing.model_names]` maps (owned by
    /// thinkgate, under the name asked).
    pub fn model_object(&self, id: &str, anthropic: bool) -> Option<Bytes> {
        let served = model_objects(&self.config.models)
            .into_iter()
            .find(|(served, _)| served == id)
            .map(|(_, o)| o);
        let mapped = || {
            self.config.routing.model_names.resolve(id).map(
                |_| json!({"id": id, "object": "model", "created": 0, "owned_by": "thinkgate"}),
            )
        };
        let object = served.or_else(mapped)?;
        let object = match anthropic {
            true => anthropic_model(id),
            false => object,
        };
        Some(Bytes::from(object.to_string()))
    }
}
