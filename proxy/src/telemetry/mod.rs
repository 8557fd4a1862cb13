//! Account: every request's metrics, recorded exactly once when the request ends.
//!
//! An [`Account`] is opened when a request arrives and records on drop, so every exit path
//! is counted: early errors, finished responses, streams that end (it travels inside the
//! stream body), and clients that disconnect. Label handles per model are resolved once into
//! [`ModelMetrics`] slots (lazily, then plain array reads), never hashed per request.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub mod otlp;
pub mod spans;
pub mod trace_context;

use opentelemetry::KeyValue;
use prometheus::{Counter, Histogram, IntCounter, IntGauge};
use thinkgate_metrics::Metrics;

use crate::auth::{Hold, KeyState, TokenBucket};
use http::Response;

use crate::body::Body;
use crate::canonical::Usage;
use crate::error::ApiError;
use crate::resilience::{BreakerState, Transition};
use thinkgate_config::Mode;

/// Where a token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Upstream,
    Estimated,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstream => "upstream",
            Source::Estimated => "estimated",
        }
    }
}

/// Mode label values. `default` for requests that ran under no mode.
pub const MODES: [&str; 4] = ["default", "instant", "thinking", "contemplating"];
/// Token kinds: `reasoning` is part of `output`; `cache_read` and `cache_write` are parts of
/// `prompt` (what the upstream read from, and wrote to, its prompt cache).
const KINDS: [&str; 5] = ["prompt", "output", "reasoning", "cache_read", "cache_write"];
const SOURCES: [&str; 2] = ["upstream", "estimated"];
pub const UPSTREAM_OUTCOMES: [&str; 6] = [
    "ok",
    "error_status",
    "unreachable",
    "timeout",
    "broken",
    "cancelled",
];

/// Why a call was sent again (`thinkgate_upstream_retries_total`'s `reason`).
pub const RETRY_REASONS: [&str; 6] = [
    "unreachable",
    "timeout",
    "broken",
    "status_429",
    "status_5xx",
    "status_408",
];
/// Circuit breaker states, as the transition counter's `to` label and the gauge's values.
const BREAKER_STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::HalfOpen,
    BreakerState::Open,
];

/// Handles for one (model, mode, domain).
struct Slot {
    /// `thinkgate_requests_total` of a chat completion answered with 200, the commonest.
    answered: IntCounter,
    duration: Histogram,
    ttft: Histogram,
    tokens: [[IntCounter; 2]; KINDS.len()],
    reasoning: Histogram,
    /// Reasoning that ended on its own under a budget, and answers that reached it (per
    /// mode and domain, across models: what budget learning reads).
    natural: Histogram,
    hits: IntCounter,
}

/// One model's pre-resolved handles, built with the runtime.
pub struct ModelMetrics {
    model: String,
    /// Domain label values: `none` (the request named a model) and the config's domains.
    domains: Arc<[String]>,
    provider: String,
    price_input_per_token: f64,
    price_output_per_token: f64,
    slots: Vec<OnceLock<Slot>>,
    upstream: [OnceLock<IntCounter>; 6],
    upstream_duration: Histogram,
    retries: [IntCounter; RETRY_REASONS.len()],
    retry_budget_exhausted: IntCounter,
    breaker_state: IntGauge,
    breaker_transitions: [IntCounter; BREAKER_STATES.len()],
    /// Hedges sent to this deployment, and won by it.
    hedges: [IntCounter; 2],
    cost: Counter,
    /// What the response cache saved on this model's answers: prompt, output and
    /// reasoning tokens, and dollars (made on the first hit).
    saved: OnceLock<([IntCounter; 3], Counter)>,
    /// This deployment's names as trace attribute values.
    pub values: spans::ModelValues,
}

impl std::fmt::Debug for ModelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelMetrics")
            .field("model", &self.model)
            .finish()
    }
}

impl ModelMetrics {
    pub fn new(
        metrics: &Metrics,
        model: &thinkgate_config::Model,
        kind: thinkgate_config::ProviderKind,
        domains: Arc<[String]>,
    ) -> Self {
        let (p, m) = (model.provider.as_str(), model.id.as_str());
        ModelMetrics {
            values: spans::ModelValues::new(model, kind),
            model: model.id.clone(),
            slots: (0..MODES.len() * domains.len())
                .map(|_| OnceLock::new())
                .collect(),
            domains,
            provider: model.provider.clone(),
            price_input_per_token: model.price_input_per_mtok / 1e6,
            price_output_per_token: model.price_output_per_mtok / 1e6,
            upstream: Default::default(),
            upstream_duration: metrics
                .upstream_duration
                .with_label_values(&[model.provider.as_str(), model.id.as_str()]),
            cost: metrics.cost_usd.with_label_values(&[model.id.as_str()]),
            saved: OnceLock::new(),
            retries: RETRY_REASONS
                .map(|reason| metrics.upstream_retries.with_label_values(&[p, m, reason])),
            retry_budget_exhausted: metrics.retry_budget_exhausted.with_label_values(&[p]),
            breaker_state: metrics.breaker_state.with_label_values(&[p, m]),
            hedges: ["sent", "won"].map(|result| metrics.hedges.with_label_values(&[p, m, result])),
            breaker_transitions: BREAKER_STATES.map(|state| {
                metrics
                    .breaker_transitions
                    .with_label_values(&[p, m, state.as_str()])
            }),
        }
    }

    /// Counts a call sent again, by what failed (one of [`RETRY_REASONS`]).
    /// What `usage` costs at this deployment's configured prices, in US dollars.
    pub fn cost_of(&self, usage: &Usage) -> f64 {
        usage.prompt_tokens as f64 * self.price_input_per_token
            + usage.completion_tokens as f64 * self.price_output_per_token
    }

    /// Counts what a cache hit on this model's answer did not spend.
    pub fn saved(&self, metrics: &Metrics, usage: &Usage) {
        let (tokens, usd) = self.saved.get_or_init(|| {
            let m = self.model.as_str();
            let tokens = ["prompt", "output", "reasoning"]
                .map(|kind| metrics.cache_saved_tokens.with_label_values(&[m, kind]));
            (tokens, metrics.cache_saved_usd.with_label_values(&[m]))
        });
        tokens[0].inc_by(usage.prompt_tokens);
        tokens[1].inc_by(usage.completion_tokens);
        tokens[2].inc_by(usage.reasoning_tokens.unwrap_or(0));
        let cost = self.cost_of(usage);
        if cost > 0.0 {
            usd.inc_by(cost);
        }
    }

    /// The model id the deployment's series are labelled with.
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn retried(&self, reason: &str) {
        if let Some(i) = RETRY_REASONS.iter().position(|r| *r == reason) {
            self.retries[i].inc();
        }
    }

    /// Counts a hedge sent to this deployment, and whether it answered first.
    pub fn hedged(&self, won: bool) {
        self.hedges[usize::from(won)].inc();
    }

    /// Counts a retry the provider's budget refused.
    pub fn retry_budget_exhausted(&self) {
        self.retry_budget_exhausted.inc();
    }

    /// Shows the breaker's state now (on every change, and at each scrape: an open breaker
    /// turns half-open by time alone).
    pub fn breaker_is(&self, state: BreakerState) {
        self.breaker_state.set(state.gauge());
    }

    /// Counts and shows a breaker's change of state.
    pub fn breaker_moved(&self, transition: Transition) {
        let Transition(to) = transition;
        if let Some(i) = BREAKER_STATES.iter().position(|s| *s == to) {
            self.breaker_transitions[i].inc();
        }
        self.breaker_is(to);
    }

    /// Creates the model's series at zero, so a dashboard shows 0 (not "No data") and an
    /// `absent()` alert can tell an idle model from a broken scrape.
    pub fn touch(&self, metrics: &Metrics) {
        for outcome in 0..UPSTREAM_OUTCOMES.len() {
            self.upstream(metrics, outcome);
        }
        for mode in 0..MODES.len() {
            self.slot(metrics, mode, 0);
        }
    }

    fn slot(&self, metrics: &Metrics, mode: usize, domain: usize) -> &Slot {
        let domain = domain.min(self.domains.len() - 1);
        self.slots[mode * self.domains.len() + domain].get_or_init(|| {
            let (m, md, d) = (
                self.model.as_str(),
                MODES[mode],
                self.domains[domain].as_str(),
            );
            let tokens = |kind: usize| {
                [0, 1].map(|s| {
                    metrics
                        .tokens
                        .with_label_values(&[m, md, d, KINDS[kind], SOURCES[s]])
                })
            };
            Slot {
                answered: metrics.requests.with_label_values(&[
                    "chat_completions",
                    m,
                    md,
                    d,
                    "200",
                ]),
                duration: metrics
                    .request_duration
                    .with_label_values(&["chat_completions", m, md]),
                ttft: metrics.ttft.with_label_values(&[m, md]),
                tokens: std::array::from_fn(tokens),
                reasoning: metrics.reasoning_per_request.with_label_values(&[m, md, d]),
                natural: metrics.reasoning_natural.with_label_values(&[md, d]),
                hits: metrics.reasoning_budget_hits.with_label_values(&[md, d]),
            }
        })
    }

    fn upstream(&self, metrics: &Metrics, outcome: usize) -> &IntCounter {
        self.upstream[outcome].get_or_init(|| {
            metrics.upstream_requests.with_label_values(&[
                self.provider.as_str(),
                self.model.as_str(),
                UPSTREAM_OUTCOMES[outcome],
            ])
        })
    }
}

/// Token figures of a finished response, as the client received them.
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    pub usage: Usage,
    pub prompt_source: Source,
    pub output_source: Source,
    pub ttft: Option<Duration>,
    /// Why the response has no answer, if it has none.
    pub empty: Option<&'static str>,
}

/// The reasoning budget a request ran under and how it was held.
#[derive(Debug, Clone, Copy)]
pub struct BudgetRecord {
    /// Reasoning tokens allowed.
    pub limit: u64,
    /// `native`, `watched`, `forced` or `cut` (a bounded label).
    pub method: &'static str,
}

/// What the request did with its upstream.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamCall {
    pub sent: Instant,
    /// Index into [`UPSTREAM_OUTCOMES`].
    pub outcome: usize,
}

/// The token figures of a finished response, for a reader that needs them before the
/// account ends (the response cache keeps them with the answer it stores): set whenever the
/// account's are.
#[derive(Debug, Default)]
pub struct SharedTokens(std::sync::Mutex<Option<Usage>>);

impl SharedTokens {
    pub fn get(&self) -> Option<Usage> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, usage: Usage) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
    }
}

/// One request's record; see the module docs.
pub struct Account {
    metrics: Arc<Metrics>,
    started: Instant,
    endpoint: &'static str,
    pub model: Option<Arc<ModelMetrics>>,
    pub mode: usize,
    pub domain: usize,
    pub routed: bool,
    pub status: u16,
    pub tokens: Option<Tokens>,
    pub upstream: Option<UpstreamCall>,
    pub budget: Option<BudgetRecord>,
    /// The client key to charge when the response ends, and the mode it ran in.
    pub key: Option<(Arc<KeyState>, Option<Mode>)>,
    /// What the request's admission holds against the key's daily quotas; let go when the
    /// account records, whatever the outcome.
    pub hold: Hold,
    /// The answering deployment's tokens-per-minute limit, charged the output when the
    /// response ends (its prompt was taken at admission).
    pub deployment_tokens: Option<Arc<TokenBucket>>,
    /// For the access line: the request's id, the client's trace id (W3C `traceparent`),
    /// and how its answer ended.
    pub request_id: Option<http::HeaderValue>,
    pub trace_id: Option<String>,
    pub finish_reason: Option<String>,
    /// The request's span (or an agent's, or the synthesis's), when the proxy traces; it
    /// ends when the account records, with what the account knows. Boxed, as the call's
    /// span is: the account moves through every stage of the request, and inline the two
    /// spans were two thirds of its size.
    pub span: Option<Box<spans::TraceSpan>>,
    /// The span of the upstream call that answered, ended with it.
    pub call_span: Option<Box<spans::TraceSpan>>,
    /// What the response cache did with the request (`hit`, `miss`, `bypass`), when on.
    pub cache: Option<&'static str>,
    /// Where the response's token figures are also written, for the response cache.
    pub shared_tokens: Option<Arc<SharedTokens>>,
}

impl Account {
    pub fn open(metrics: Arc<Metrics>, endpoint: &'static str) -> Account {
        metrics.in_flight.inc();
        Account {
            metrics,
            started: Instant::now(),
            endpoint,
            model: None,
            mode: 0,
            domain: 0,
            routed: false,
            status: 200,
            tokens: None,
            upstream: None,
            budget: None,
            key: None,
            hold: Hold::default(),
            deployment_tokens: None,
            request_id: None,
            trace_id: None,
            finish_reason: None,
            span: None,
            call_span: None,
            cache: None,
            shared_tokens: None,
        }
    }

    /// The response's token figures, once it is complete or abandoned.
    pub fn set_tokens(&mut self, tokens: Tokens) {
        if let Some(shared) = &self.shared_tokens {
            shared.set(tokens.usage);
        }
        self.tokens = Some(tokens);
    }

    /// Whether the request's span records message content (`capture_content`).
    pub fn captures_content(&self) -> bool {
        self.span
            .as_ref()
            .is_some_and(|s| s.recording() && s.exporter().capture_content())
    }

    /// Sets an attribute of the request's span (when it is traced and sampled).
    pub fn trace(&mut self, attribute: impl FnOnce(&mut spans::TraceSpan)) {
        if let Some(span) = self.span.as_mut().filter(|s| s.recording()) {
            attribute(span);
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The endpoint label the account records under.
    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    /// Ends the request with `e`: its status is recorded, and the account with it.
    pub fn reject(mut self, e: ApiError) -> Response<Body> {
        self.status = e.status.as_u16();
        e.into_response()
    }

    /// Counts a call that failed before the first byte and was retried on another model.
    pub fn failed_attempt(&self, model: &ModelMetrics, outcome: &str) {
        if let Some(i) = UPSTREAM_OUTCOMES.iter().position(|o| *o == outcome) {
            model.upstream(&self.metrics, i).inc();
        }
    }

    /// Counts a request refused by a limit of `key`.
    pub fn rate_limited(&self, key: &str, limit: &str) {
        self.metrics
            .rate_limited
            .with_label_values(&[key, limit])
            .inc();
    }

    /// Marks the upstream call's outcome (the first one set wins).
    pub fn upstream_outcome(&mut self, outcome: &str) {
        if let (Some(call), Some(i)) = (
            self.upstream.as_mut(),
            UPSTREAM_OUTCOMES.iter().position(|o| *o == outcome),
        ) {
            if call.outcome == usize::MAX {
                call.outcome = i;
            }
        }
    }

    fn record(&self) {
        let m = &*self.metrics;
        let elapsed = self.started.elapsed().as_secs_f64();
        let model = self.model.as_deref().map_or("none", |mm| mm.model.as_str());
        let domain = self
            .model
            .as_deref()
            .and_then(|mm| mm.domains.get(self.domain))
            .map_or("none", String::as_str);
        let status = status_label(self.status);
        let count = || {
            m.requests
                .with_label_values(&[self.endpoint, model, MODES[self.mode], domain, status])
                .inc()
        };
        let Some(mm) = self.model.as_deref() else {
            count();
            m.request_duration
                .with_label_values(&[self.endpoint, "none", MODES[self.mode]])
                .observe(elapsed);
            return;
        };
        let slot = mm.slot(m, self.mode, self.domain);
        // The slot caches chat completions' series, the busiest; other APIs look theirs up.
        match self.endpoint {
            "chat_completions" => {
                match self.status {
                    200 => slot.answered.inc(),
                    _ => count(),
                }
                slot.duration.observe(elapsed)
            }
            endpoint => {
                count();
                m.request_duration
                    .with_label_values(&[endpoint, model, MODES[self.mode]])
                    .observe(elapsed)
            }
        }
        if self.routed {
            m.routing_decisions
                .with_label_values(&[domain, model])
                .inc();
        }
        if let Some(call) = self.upstream {
            let outcome = if call.outcome == usize::MAX {
                5
            } else {
                call.outcome
            };
            mm.upstream(m, outcome).inc();
            mm.upstream_duration
                .observe(call.sent.elapsed().as_secs_f64());
        }
        let Some(t) = self.tokens else { return };
        if let Some(ttft) = t.ttft {
            slot.ttft.observe(ttft.as_secs_f64());
        }
        let src = |s: Source| match s {
            Source::Upstream => 0,
            Source::Estimated => 1,
        };
        let reasoning = t.usage.reasoning_tokens.unwrap_or(0);
        slot.tokens[0][src(t.prompt_source)].inc_by(t.usage.prompt_tokens);
        slot.tokens[1][src(t.output_source)].inc_by(t.usage.completion_tokens);
        slot.tokens[2][src(t.output_source)].inc_by(reasoning);
        // Only an upstream knows what its cache held.
        slot.tokens[3][0].inc_by(t.usage.cached_tokens.unwrap_or(0));
        slot.tokens[4][0].inc_by(t.usage.cache_creation_tokens.unwrap_or(0));
        slot.reasoning.observe(reasoning as f64);
        let cost = mm.cost_of(&t.usage);
        if cost > 0.0 {
            mm.cost.inc_by(cost);
        }
        if let Some(b) = self.budget {
            // A client request's thinking (a contemplating agent's share is not the mode's
            // budget): natural when it ended on its own under the budget.
            if !matches!(self.endpoint, "contemplate_agent" | "contemplate_synthesis") {
                let natural = matches!(b.method, "native" | "watched") && reasoning < b.limit;
                match natural {
                    true => slot.natural.observe(reasoning as f64),
                    false => slot.hits.inc(),
                }
            }
            let mode = MODES[self.mode];
            m.budget_enforcements
                .with_label_values(&[model, mode, b.method])
                .inc();
            if b.limit > 0 {
                m.budget_utilization
                    .with_label_values(&[model, mode])
                    .observe(reasoning as f64 / b.limit as f64);
            }
            if reasoning > b.limit {
                m.budget_overrun_tokens
                    .with_label_values(&[model, mode])
                    .inc_by(reasoning - b.limit);
            }
        }
        if let Some(reason) = t.empty {
            m.empty_answers
                .with_label_values(&[model, MODES[self.mode], reason])
                .inc();
        }
    }
}

impl Account {
    /// The access line: one per client request (and one per contemplating agent and
    /// synthesis, marked so), when its account records. Inside the request's span the span
    /// carries the id; a stream ends after it, so the line names the id itself.
    fn log(&self) {
        // A load balancer's probes every few seconds are not traffic worth a line.
        let probe = matches!(self.endpoint, "healthz" | "readyz") && self.status < 400;
        if probe || !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let kind = match self.endpoint {
            "contemplate_agent" => "agent",
            "contemplate_synthesis" => "synthesis",
            _ => "request",
        };
        let model = self.model.as_deref();
        let t = self.tokens.as_ref();
        let outcome = self.upstream.map(|c| {
            UPSTREAM_OUTCOMES
                .get(c.outcome)
                .copied()
                .unwrap_or("cancelled")
        });
        let domain = model
            .and_then(|mm| mm.domains.get(self.domain))
            .map(String::as_str);
        macro_rules! access {
            ($($id:tt)*) => {
                tracing::info!(
                    $($id)*
                    kind,
                    api = self.endpoint,
                    status = self.status,
                    model = model.map(|mm| mm.model.as_str()),
                    provider = model.map(|mm| mm.provider.as_str()),
                    mode = MODES[self.mode],
                    domain = domain.filter(|d| *d != "none"),
                    outcome,
                    prompt_tokens = t.map(|t| t.usage.prompt_tokens),
                    output_tokens = t.map(|t| t.usage.completion_tokens),
                    reasoning_tokens = t.and_then(|t| t.usage.reasoning_tokens),
                    token_source = t.map(|t| t.output_source.as_str()),
                    finish_reason = self.finish_reason.as_deref(),
                    enforcement = self.budget.map(|b| b.method),
                    cache = self.cache,
                    reasoning_budget = self.budget.map(|b| b.limit),
                    ttft_ms = t.and_then(|t| t.ttft).map(|d| d.as_millis() as u64),
                    duration_ms = self.started.elapsed().as_millis() as u64,
                    "Request finished."
                )
            };
        }
        // Inside the request's span the span names the request and trace ids.
        if !tracing::Span::current().is_none() {
            return access!();
        }
        let request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok());
        let trace_id = match &self.span {
            Some(span) => Some(span.trace_id().to_string()),
            None => self.trace_id.clone(),
        };
        access!(request_id, trace_id = trace_id.as_deref(),)
    }
}

impl Account {
    /// Ends the answering call's span and the request's with the usage, the answering
    /// model and the outcome, and records the call in the GenAI metric instruments.
    fn end_spans(&mut self) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        let model = self.model.as_deref();
        let tokens = self.tokens.as_ref();
        let error_type = spans::status_error(self.status);
        if let Some(mm) = model {
            let operation = spans::operation(self.endpoint).unwrap_or("chat");
            span.exporter().record(&otlp::CallRecord {
                operation,
                model: &mm.values,
                input_tokens: tokens.map(|t| t.usage.prompt_tokens),
                output_tokens: tokens.map(|t| t.usage.completion_tokens),
                seconds: self.started.elapsed().as_secs_f64(),
                error_type: error_type.as_ref().map(|e| e.as_str()),
            });
        }
        if !span.recording() {
            return;
        }
        // What the answer was, on the call that made it and on the request.
        let answered = |span: &mut spans::TraceSpan| {
            if let Some(mm) = model {
                span.set(
                    spans::attr::RESPONSE_MODEL,
                    mm.values.upstream_model.clone(),
                );
            }
            if let Some(t) = tokens {
                span.usage(&t.usage, t.output_source.as_str());
            }
            if let Some(reason) = &self.finish_reason {
                span.finish_reason(reason);
            }
        };
        if let Some(mut call) = self.call_span.take() {
            answered(&mut call);
            call.end();
        }
        answered(&mut span);
        if let Some(mm) = model {
            span.set_all([
                KeyValue::new(spans::attr::PROVIDER, mm.values.provider.clone()),
                KeyValue::new(spans::attr::MODEL, mm.values.model.clone()),
                KeyValue::new(spans::attr::PROVIDER_NAME, mm.values.provider_name.clone()),
            ]);
        }
        if self.mode > 0 {
            span.set(spans::attr::MODE, MODES[self.mode]);
        }
        if let Some(domain) = model.and_then(|mm| mm.domains.get(self.domain)) {
            if self.domain > 0 {
                span.set(spans::attr::DOMAIN, domain.clone());
            }
        }
        if let Some(b) = self.budget {
            span.set(
                spans::attr::BUDGET,
                i64::try_from(b.limit).unwrap_or(i64::MAX),
            );
            span.set(spans::attr::ENFORCEMENT, b.method);
        }
        if let Some((key, _)) = &self.key {
            span.set(spans::attr::KEY, key.key.name.clone());
        }
        if let Some(id) = self.request_id.as_ref().and_then(|v| v.to_str().ok()) {
            span.set(spans::attr::REQUEST_ID, id.to_string());
        }
        if let Some(cache) = self.cache {
            span.set(spans::attr::CACHE, cache);
        }
        span.set(spans::attr::HTTP_STATUS, i64::from(self.status));
        if let Some(error_type) = error_type {
            span.fail(error_type);
        }
        span.end();
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.log();
        self.end_spans();
        if let (Some(tpm), Some(tokens)) = (&self.deployment_tokens, &self.tokens) {
            tpm.debit(tokens.usage.completion_tokens);
        }
        if let Some((key, mode)) = &self.key {
            key.settle(*mode, self.tokens.as_ref().map(|t| &t.usage), self.hold);
        }
        self.record();
        self.metrics.in_flight.dec();
    }
}

/// HTTP status as a label: the common codes by number, the rest by class, so the label set
/// stays bounded whatever an upstream returns.
fn status_label(status: u16) -> &'static str {
    const COMMON: [(u16, &str); 14] = [
        (200, "200"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (413, "413"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    if let Some((_, label)) = COMMON.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
