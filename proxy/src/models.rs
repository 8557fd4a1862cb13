//! The configured models as requests meet them: each [`Route`] is one deployment of a
//! model — the model joined to the upstream that serves it there, its token counter, its
//! metric handles, its circuit breaker, its load and limits. A model's first deployment's
//! route stands for the model (and holds the others); the plan orders them with the
//! balancer. Built once per config load by [`crate::state`]; read by every stage after the
//! plan.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thinkgate_config::Model;
use thinkgate_metrics::TokenCounter;

use crate::auth::TokenBucket;
use crate::resilience::{self, Breaker, Load, PeakEwma};
use crate::telemetry::ModelMetrics;
use crate::upstream::Upstream;

/// One deployment of a model clients can name, with the upstream that serves it there.
#[derive(Debug)]
pub struct Route {
    /// The model, its `provider` and `upstream_model` those of this deployment.
    pub model: Model,
    /// The model id, or `id@provider` for a model with several deployments (logs, the
    /// fallback header).
    pub label: String,
    /// On the model's first deployment: the others, in config order (empty elsewhere).
    pub others: Vec<Arc<Route>>,
    /// This deployment's weight, load and vendor-account limits (kept across reloads).
    pub deployment: Arc<DeploymentState>,
    pub upstream: Arc<Upstream>,
    pub counter: TokenCounter,
    /// `x-thinkgate-model`, precomputed.
    pub header: http::HeaderValue,
    pub metrics: Arc<ModelMetrics>,
    /// The deployment's circuit breaker: routing goes around it while it is open (kept
    /// across reloads while the upstream stays the same).
    pub breaker: Arc<Breaker>,
    /// The model's global request limit across keys, if it has one (kept across reloads).
    pub limiter: Option<Arc<ModelLimiter>>,
    /// [`serving_digest`] of the model, made once (its debug text showed in a hit's profile).
    pub serving: [u8; 16],
}

/// A digest of what decides how `model` answers besides the request: each deployment's
/// provider and upstream model, and its thinking knobs — what the response cache keys an
/// answer by, so a model pointed elsewhere misses.
pub fn serving_digest(model: &Model) -> [u8; 16] {
    let mut h = crate::digest::Fields::default();
    for d in &model.deployments {
        h.field(d.provider.as_bytes());
        h.field(d.upstream_model.as_bytes());
    }
    h.field(format!("{:?}", model.thinking).as_bytes());
    h.finish16()
}

impl Route {
    /// What decides how the model answers besides the request ([`serving_digest`]).
    pub fn serving(&self, mut field: impl FnMut(&[u8])) {
        field(&self.serving);
    }

    /// Every deployment of the model, this one (its first) included.
    pub fn deployments(&self) -> impl Iterator<Item = &Route> {
        std::iter::once(self).chain(self.others.iter().map(|r| &**r))
    }

    /// The model's deployments in the order a call should try them, those with an open
    /// breaker last (they refuse at once, so a request naming the model still gets
    /// `circuit_open` when all are open).
    pub fn arranged(self: &Arc<Self>, now: Instant) -> Vec<Arc<Route>> {
        if self.others.is_empty() {
            return vec![self.clone()];
        }
        let all: Vec<&Arc<Route>> = std::iter::once(self).chain(self.others.iter()).collect();
        let loads: Vec<Load> = all.iter().map(|r| r.deployment.load()).collect();
        let order = resilience::arrange(&loads, self.model.balance, resilience::unit_random);
        let (mut open, mut ready) = (Vec::new(), Vec::new());
        for i in order {
            match all[i].breaker.state(now) {
                (_, Some(_)) => open.push(all[i].clone()),
                _ => ready.push(all[i].clone()),
            }
        }
        ready.extend(open);
        ready
    }
}

/// What one deployment carries from call to call: its weight, its calls in flight, its
/// latency, and the vendor account's requests and tokens per minute.
pub struct DeploymentState {
    pub config: thinkgate_config::Deployment,
    /// One permit per call in flight (held until the response ends), out of a supply no
    /// load reaches: the count is what is missing.
    in_flight: Arc<tokio::sync::Semaphore>,
    latency: Mutex<PeakEwma>,
    /// The last [`RECENT`] response-head latencies (µs), for a hedge at the p95.
    recent: Mutex<Recent>,
    requests_per_minute: Option<governor::DefaultDirectRateLimiter>,
    tokens_per_minute: Option<Arc<TokenBucket>>,
}

/// Response heads remembered per deployment for its percentiles.
const RECENT: usize = 128;
/// Fewer than this many and there is no percentile to hedge at.
const RECENT_MIN: usize = 20;

#[derive(Debug)]
struct Recent {
    micros: [u32; RECENT],
    next: usize,
    len: usize,
}

/// Why a deployment takes no call now.
#[derive(Debug, Clone, Copy)]
pub enum AtLimit {
    RequestsPerMinute(u32),
    TokensPerMinute(u32),
}

impl std::fmt::Debug for DeploymentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentState")
            .field("config", &self.config)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl DeploymentState {
    const SUPPLY: usize = tokio::sync::Semaphore::MAX_PERMITS;

    pub fn new(config: &thinkgate_config::Deployment) -> Self {
        let per_minute = |n: u32| {
            let n = std::num::NonZeroU32::new(n)?;
            Some(governor::RateLimiter::direct(governor::Quota::per_minute(
                n,
            )))
        };
        DeploymentState {
            config: config.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(Self::SUPPLY)),
            latency: Mutex::new(PeakEwma::new()),
            recent: Mutex::new(Recent {
                micros: [0; RECENT],
                next: 0,
                len: 0,
            }),
            requests_per_minute: config.requests_per_minute.and_then(per_minute),
            tokens_per_minute: config
                .tokens_per_minute
                .map(|n| Arc::new(TokenBucket::per_minute(n))),
        }
    }

    /// A call in flight until the permit is dropped (it travels with the response).
    pub fn start_call(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Takes one request and the prompt's tokens from the account's limits, or says which
    /// limit is reached. The prompt is counted only under a token limit.
    pub fn admit(&self, prompt_tokens: &(dyn Fn() -> u64 + Sync)) -> Result<(), AtLimit> {
        if let Some(tpm) = &self.tokens_per_minute {
            // A debt from earlier answers is paid first: a deployment over its TPM rests.
            if tpm.owed() > 0 {
                return Err(AtLimit::TokensPerMinute(
                    self.config.tokens_per_minute.unwrap_or(0),
                ));
            }
        }
        if let Some(rpm) = &self.requests_per_minute {
            if rpm.check().is_err() {
                return Err(AtLimit::RequestsPerMinute(
                    self.config.requests_per_minute.unwrap_or(0),
                ));
            }
        }
        if let Some(tpm) = &self.tokens_per_minute {
            if tpm.take(prompt_tokens()).is_err() {
                return Err(AtLimit::TokensPerMinute(
                    self.config.tokens_per_minute.unwrap_or(0),
                ));
            }
        }
        Ok(())
    }

    /// The bucket the answer's output tokens are charged to when it ends, if limited.
    pub fn tokens_per_minute(&self) -> Option<&Arc<TokenBucket>> {
        self.tokens_per_minute.as_ref()
    }

    /// Counts a call's latency to its response head (a failed call's, penalised, goes to
    /// the balancer only).
    pub fn observe(&self, latency: Duration, now: Instant) {
        if let Ok(mut l) = self.latency.lock() {
            l.observe(latency, now);
        }
    }

    /// Remembers a response head's latency for the percentiles.
    pub fn answered_in(&self, latency: Duration) {
        if let Ok(mut r) = self.recent.lock() {
            let at = r.next;
            r.micros[at] = latency.as_micros().min(u32::MAX as u128) as u32;
            r.next = (at + 1) % RECENT;
            r.len = (r.len + 1).min(RECENT);
        }
    }

    /// The 95th percentile of the recent response heads, once there are enough of them.
    pub fn p95(&self) -> Option<Duration> {
        let r = self.recent.lock().ok()?;
        if r.len < RECENT_MIN {
            return None;
        }
        let mut seen = r.micros[..r.len].to_vec();
        let at = (seen.len() * 95).div_ceil(100) - 1;
        let (_, p95, _) = seen.select_nth_unstable(at);
        Some(Duration::from_micros(u64::from(*p95)))
    }

    pub fn in_flight(&self) -> u32 {
        (Self::SUPPLY - self.in_flight.available_permits()) as u32
    }

    pub fn load(&self) -> Load {
        Load {
            weight: self.config.weight,
            in_flight: self.in_flight(),
            latency_ns: self.latency.lock().map_or(0.0, |l| l.nanos(Instant::now())),
        }
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.load().latency_ns as u64)
    }
}

/// A model's `requests_per_second`, across every client key.
#[derive(Debug)]
pub struct ModelLimiter {
    pub rate: Option<u32>,
    limiter: governor::DefaultDirectRateLimiter,
}

impl ModelLimiter {
    pub fn new(rate: Option<u32>) -> Option<ModelLimiter> {
        let per_second = std::num::NonZeroU32::new(rate?)?;
        Some(ModelLimiter {
            rate,
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(per_second)),
        })
    }

    /// Takes one request, or says the model is at its limit.
    pub fn check(&self) -> bool {
        self.limiter.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(requests_per_minute: Option<u32>, tokens_per_minute: Option<u32>) -> DeploymentState {
        DeploymentState::new(&thinkgate_config::Deployment {
            provider: "p".into(),
            upstream_model: "m".into(),
            weight: 1,
            requests_per_minute,
            tokens_per_minute,
        })
    }

    #[test]
    fn the_hedging_percentile_waits_for_enough_answers_and_keeps_the_recent_ones() {
        let d = state(None, None);
        for ms in 1..20 {
            d.answered_in(Duration::from_millis(ms));
        }
        assert_eq!(d.p95(), None, "19 answers are too few");
        for ms in 20..=100 {
            d.answered_in(Duration::from_millis(ms));
        }
        assert_eq!(d.p95(), Some(Duration::from_millis(95)));
        // Only the last 128 count: a slow spell long past is forgotten.
        for _ in 0..RECENT {
            d.answered_in(Duration::from_millis(10));
        }
        assert_eq!(d.p95(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn calls_in_flight_are_the_permits_out() {
        let d = state(None, None);
        let (a, b) = (d.start_call(), d.start_call());
        assert_eq!(d.in_flight(), 2);
        drop(a);
        assert_eq!(d.load().in_flight, 1);
        drop(b);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn the_vendor_limits_refuse_without_taking() {
        let d = state(Some(2), None);
        assert!(d.admit(&|| 0).is_ok());
        assert!(d.admit(&|| 0).is_ok());
        assert!(matches!(d.admit(&|| 0), Err(AtLimit::RequestsPerMinute(2))));
        // The prompt is counted only under a token limit.
        let counted = std::sync::atomic::AtomicBool::new(false);
        let count = || {
            counted.store(true, std::sync::atomic::Ordering::Relaxed);
            10
        };
        let free = state(None, None);
        assert!(free.admit(&count).is_ok());
        assert!(!counted.load(std::sync::atomic::Ordering::Relaxed));
        let tpm = state(None, Some(15));
        assert!(tpm.admit(&count).is_ok());
        assert!(counted.load(std::sync::atomic::Ordering::Relaxed));
        assert!(
            matches!(tpm.admit(&count), Err(AtLimit::TokensPerMinute(15))),
            "10 + 10 > 15"
        );
    }
}
