//! The configured models as requests meet them: each [`Route`] joins a model to the
//! upstream that serves it, its token counter, its metric handles, its circuit breaker and its
//! request limit. Built once per config load by [`crate::state`]; read by every stage after
//! the plan.

use std::sync::Arc;

use thinkgate_config::Model;
use thinkgate_metrics::TokenCounter;

use crate::resilience::Breaker;
use crate::telemetry::ModelMetrics;
use crate::upstream::Upstream;

/// A model clients can name, with the upstream that serves it.
#[derive(Debug)]
pub struct Route {
    pub model: Model,
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
