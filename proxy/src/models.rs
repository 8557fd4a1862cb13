//! The configured models as requests meet them: each [`Route`] joins a model to the
//! upstream that serves it, its token counter, its metric handles, its health and its
//! request limit. Built once per config load by [`crate::state`]; read by every stage after
//! the plan.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use thinkgate_config::Model;
use thinkgate_metrics::TokenCounter;

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
    /// Recent failures, for routing around an upstream that is down (kept across reloads).
    pub health: Arc<Health>,
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
