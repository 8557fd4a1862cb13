//! Client API keys and their limits: who is calling, what they may use, and whether they
//! may call now.
//!
//! A presented key (`Authorization: Bearer …` or `x-api-key`) is hashed with SHA-256 and
//! looked up by digest, then compared in constant time; the secret itself is never stored
//! or logged — only the key's name reaches logs, metrics and errors. Limits are `governor`
//! GCRA limiters per key (requests per second and minute with a burst, tokens per minute,
//! reasoning tokens per minute per mode) plus daily quotas. Token charges that are known only
//! after the response (output, reasoning) are debited when it ends; what a limiter cannot take
//! then becomes debt the next requests pay first, so a limit holds over time even though
//! governor has no refunds. State exists only for configured keys, so it cannot grow without
//! bound; a reload keeps the state of keys whose limits did not change.
//!
//! With `[state] backend = "redis"` ([`shared`]) the same limits live in Redis for every
//! replica: an admission is one script call over all of a key's limits, the settlement
//! another; the in-memory limiters then hold limit / replicas and decide only while Redis
//! does not answer (`on_failure = "open"`).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thinkgate_config::{Auth, ClientKey, Config, Mode};

mod bucket;
pub mod shared;

pub use bucket::TokenBucket;
use shared::{Check, Kind, SharedState, Step, Verdict};

use crate::canonical::Usage;
use crate::error::ApiError;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A limiter on `clock`: one clock for a whole key set, since making one probes the CPU
/// (most of the time a load of thousands of keys took).
fn limiter(quota: Quota, clock: &DefaultClock) -> Limiter {
    RateLimiter::direct_with_clock(quota, clock.clone())
        .with_middleware::<StateInformationMiddleware>()
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// Daily counters, reset at midnight UTC.
#[derive(Default)]
struct Day {
    day: u64,
    output: u64,
    reasoning: BTreeMap<String, u64>,
    /// Held by requests in flight, until they settle: what they may still spend.
    held_output: u64,
    held_reasoning: BTreeMap<String, u64>,
}

impl Day {
    /// Today's counters (a new day starts from zero; holds of requests still in flight from
    /// yesterday are dropped with it).
    fn roll(&mut self, day: u64) {
        if self.day != day {
            *self = Day {
                day,
                ..Day::default()
            };
        }
    }
}

/// What an admitted request holds against its key's daily quotas until it settles, so that
/// concurrent requests cannot all pass a quota that only one of them fits in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hold {
    day: u64,
    pub output: u64,
    pub reasoning: u64,
    /// Held in the shared state (Redis), which the settlement goes to; per reasoning scope
    /// (the mode's, then `all`), what each daily reasoning quota holds.
    shared: bool,
    shared_reasoning: [u64; 2],
}

/// The most a request may spend, as far as the plan knows (0 when it does not).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected {
    pub output: u64,
    pub reasoning: u64,
}

fn today() -> (u64, Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    (now / 86_400, Duration::from_secs(86_400 - now % 86_400))
}

/// One key's identity, permissions and limit state.
pub struct KeyState {
    pub key: ClientKey,
    requests_per_second: Option<Limiter>,
    requests_per_minute: Option<Limiter>,
    tokens: Option<TokenBucket>,
    /// By mode name or `all`.
    reasoning_per_minute: BTreeMap<String, TokenBucket>,
    day: Mutex<Day>,
    /// The limits the local limiters hold (the key's, or over the replicas with `shared`).
    local_limits: thinkgate_config::KeyLimits,
    /// The limits every replica shares, when `[state]` is Redis; the local limiters above
    /// then hold limit / replicas, for when Redis does not answer.
    shared: Option<Arc<SharedState>>,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("key", &self.key.name)
            .finish_non_exhaustive()
    }
}

/// A refusal: which limit, and when to retry.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The limit's name, for the error and the metric label (a fixed set).
    pub limit: &'static str,
    pub retry_after: Duration,
    pub detail: String,
}

/// The `limit` of a refusal because the shared state did not answer (`on_failure =
/// "closed"`).
pub const STATE_UNAVAILABLE: &str = "shared limit state unavailable";

impl Refusal {
    pub fn to_api(&self, key: &str) -> ApiError {
        if self.limit == STATE_UNAVAILABLE {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "The limits of key `{key}` cannot be checked now ({}); retry after {} s.",
                    self.detail,
                    self.retry_after.as_secs().max(1)
                ),
            )
            .with_code("rate_limit_state_unavailable");
        }
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "Rate limit reached for key `{key}`: {} ({}). Retry after {} s.",
                self.limit,
                self.detail,
                self.retry_after.as_secs().max(1)
            ),
        )
        .with_code("rate_limit_exceeded")
    }
}

/// What an admitted request may report in its headers.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub requests_limit: Option<u32>,
    pub requests_remaining: Option<u32>,
    pub requests_reset: Option<Duration>,
    pub tokens_limit: Option<u32>,
    pub tokens_remaining: Option<u64>,
    pub tokens_reset: Option<Duration>,
    /// What the request holds against the daily quotas until it settles.
    pub hold: Hold,
}

impl Admission {
    /// OpenAI's `x-ratelimit-*` headers.
    pub fn headers(&self, h: &mut HeaderMap) {
        let secs = |d: Duration| HeaderValue::from_str(&format!("{}s", d.as_secs().max(1))).ok();
        if let Some(v) = self.requests_limit {
            h.insert("x-ratelimit-limit-requests", v.into());
        }
        if let Some(v) = self.requests_remaining {
            h.insert("x-ratelimit-remaining-requests", v.into());
        }
        if let Some(v) = self.requests_reset.and_then(secs) {
            h.insert("x-ratelimit-reset-requests", v);
        }
        if let Some(v) = self.tokens_limit {
            h.insert("x-ratelimit-limit-tokens", v.into());
        }
        if let Some(v) = self.tokens_remaining {
            h.insert("x-ratelimit-remaining-tokens", v.into());
        }
        if let Some(v) = self.tokens_reset.and_then(secs) {
            h.insert("x-ratelimit-reset-tokens", v);
        }
    }
}

impl KeyState {
    /// A key's state; with `shared` limits, the local limiters (used only while the shared
    /// state does not answer) hold each limit over the replicas.
    fn new(key: ClientKey, shared: Option<Arc<SharedState>>, clock: &DefaultClock) -> KeyState {
        let replicas = shared.as_ref().map_or(1, |s| s.config.replicas.max(1));
        let local = divided(&key.limits, replicas);
        KeyState::with_local_limits(local, key, shared, clock)
    }

    fn with_local_limits(
        local: thinkgate_config::KeyLimits,
        key: ClientKey,
        shared: Option<Arc<SharedState>>,
        clock: &DefaultClock,
    ) -> KeyState {
        let l = &local;
        let burst = |rate: u32| nz(l.burst.unwrap_or(rate));
        let bucket = |n: u32| TokenBucket::per_minute_with_clock(n, clock.clone());
        KeyState {
            requests_per_second: l
                .requests_per_second
                .map(|r| limiter(Quota::per_second(nz(r)).allow_burst(burst(r)), clock)),
            requests_per_minute: l
                .requests_per_minute
                .map(|r| limiter(Quota::per_minute(nz(r)).allow_burst(burst(r)), clock)),
            tokens: l.tokens_per_minute.map(bucket),
            reasoning_per_minute: l
                .reasoning_tokens_per_minute
                .iter()
                .map(|(m, n)| (m.clone(), bucket(*n)))
                .collect(),
            day: Mutex::new(Day::default()),
            key,
            shared,
            local_limits: local,
        }
    }

    fn has_daily_quotas(&self) -> bool {
        let l = &self.key.limits;
        l.output_tokens_per_day.is_some() || !l.reasoning_tokens_per_day.is_empty()
    }

    /// Whether the key may use `model` (an id or `auto`).
    pub fn allows_model(&self, model: &str) -> bool {
        self.key
            .models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    pub fn allows_mode(&self, mode: Mode) -> bool {
        self.key.modes.as_ref().is_none_or(|m| m.contains(&mode))
    }

    /// The most reasoning budget this key may have in `mode`.
    /// Whether admitting a request needs its prompt's token count.
    pub fn limits_prompt_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    pub fn max_budget(&self, mode: Mode) -> Option<u64> {
        self.key
            .max_budget
            .get(mode.as_str())
            .or(self.key.max_budget.get("all"))
            .copied()
    }

    /// Admits a request about to be sent, charging its request and its prompt tokens, or
    /// refuses it: in the shared state when there is one (applying `[state] on_failure` when
    /// it does not answer), else in this process.
    pub async fn admit(
        &self,
        mode: Option<Mode>,
        prompt_tokens: u64,
        expected: Expected,
    ) -> Result<Admission, Refusal> {
        let Some(shared) = &self.shared else {
            return self.admit_local(mode, prompt_tokens, expected);
        };
        let (day, until_midnight) = today();
        let (checks, limits) = self.checks(shared, mode, prompt_tokens, expected, day);
        if checks.is_empty() {
            // A key without limits has nothing to share: no round trip.
            return Ok(Admission::default());
        }
        match shared.admit(&checks).await {
            Verdict::Admitted(results) => Ok(self.admitted(&limits, &results, day, until_midnight)),
            Verdict::Refused { index, wait } => {
                Err(self.refused(&limits, index, wait, until_midnight))
            }
            Verdict::Unavailable => match shared.config.on_failure {
                thinkgate_config::OnFailure::Open => {
                    self.admit_local(mode, prompt_tokens, expected)
                }
                thinkgate_config::OnFailure::Closed => Err(Refusal {
                    limit: STATE_UNAVAILABLE,
                    retry_after: Duration::from_secs(1),
                    detail: "the shared limit state does not answer".to_string(),
                }),
            },
        }
    }

    /// Admits in this process (the memory backend, or failing open), charging its request
    /// and its prompt tokens, or refuses it (nothing is charged for what is refused after
    /// the request counters).
    pub fn admit_local(
        &self,
        mode: Option<Mode>,
        prompt_tokens: u64,
        expected: Expected,
    ) -> Result<Admission, Refusal> {
        let mut a = Admission::default();
        for (limiter, name, rate, window) in [
            (
                &self.requests_per_second,
                "requests per second",
                self.local_limits.requests_per_second,
                Duration::from_secs(1),
            ),
            (
                &self.requests_per_minute,
                "requests per minute",
                self.local_limits.requests_per_minute,
                Duration::from_secs(60),
            ),
        ] {
            let Some(limiter) = limiter else { continue };
            match limiter.check() {
                Ok(snapshot) => {
                    a.requests_limit = rate;
                    a.requests_remaining = Some(snapshot.remaining_burst_capacity());
                    a.requests_reset = Some(window);
                }
                Err(not_until) => {
                    return Err(Refusal {
                        limit: name,
                        retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                        detail: format!("limit {}", rate.unwrap_or(0)),
                    })
                }
            }
        }
        // Daily quotas: refused once spent (or held by requests in flight), until midnight
        // UTC; an admitted request holds what it may spend until it settles.
        if self.has_daily_quotas() {
            a.hold = self.hold(mode, expected, &mut a)?;
        }
        for scope in mode.map(Mode::as_str).into_iter().chain(["all"]) {
            if let Some(bucket) = self.reasoning_per_minute.get(scope) {
                if let Err(wait) = bucket.take(0) {
                    return Err(Refusal {
                        limit: "reasoning tokens per minute",
                        retry_after: wait,
                        detail: format!("{scope} limit {}", bucket.burst),
                    });
                }
            }
        }
        if let Some(bucket) = &self.tokens {
            match bucket.take(prompt_tokens) {
                Ok(left) => {
                    a.tokens_limit = Some(bucket.burst);
                    let left = left as u64;
                    a.tokens_remaining = Some(a.tokens_remaining.map_or(left, |q| q.min(left)));
                    a.tokens_reset.get_or_insert(Duration::from_secs(60));
                }
                Err(wait) => {
                    return Err(Refusal {
                        limit: "tokens per minute",
                        retry_after: wait,
                        detail: format!(
                            "limit {}, this request's prompt is {prompt_tokens}",
                            bucket.burst
                        ),
                    })
                }
            }
        }
        Ok(a)
    }

    /// Checks the daily quotas against what is spent and held, and holds `expected`.
    fn hold(
        &self,
        mode: Option<Mode>,
        expected: Expected,
        a: &mut Admission,
    ) -> Result<Hold, Refusal> {
        let (day, until_midnight) = today();
        let mut d = self.day.lock().unwrap_or_else(|p| p.into_inner());
        d.roll(day);
        let mut hold = Hold {
            day,
            ..Hold::default()
        };
        if let Some(q) = self.local_limits.output_tokens_per_day {
            let spent = d.output + d.held_output;
            if spent >= q {
                return Err(Refusal {
                    limit: "output tokens per day",
                    retry_after: until_midnight,
                    detail: format!(
                        "quota {q}, {} spent, {} held by requests in flight",
                        d.output, d.held_output
                    ),
                });
            }
            hold.output = expected.output.min(q - spent);
            a.tokens_remaining = Some(q - spent);
            a.tokens_reset = Some(until_midnight);
        }
        let scopes = || mode.map(Mode::as_str).into_iter().chain(["all"]);
        for scope in scopes() {
            if let Some(q) = self.local_limits.reasoning_tokens_per_day.get(scope) {
                let used = d.reasoning.get(scope).copied().unwrap_or(0);
                let held = d.held_reasoning.get(scope).copied().unwrap_or(0);
                if used + held >= *q {
                    return Err(Refusal {
                        limit: "reasoning tokens per day",
                        retry_after: until_midnight,
                        detail: format!(
                            "{scope} quota {q}, {used} spent, {held} held by requests in flight"
                        ),
                    });
                }
                hold.reasoning = hold.reasoning.max(expected.reasoning.min(q - used - held));
            }
        }
        d.held_output += hold.output;
        for scope in scopes() {
            *d.held_reasoning.entry(scope.to_string()).or_default() += hold.reasoning;
        }
        Ok(hold)
    }

    /// Charges what a finished response spent beyond its prompt (`usage`, when it has any)
    /// and lets go of what its admission held, where it was admitted.
    pub fn settle(&self, mode: Option<Mode>, usage: Option<&Usage>, hold: Hold) {
        let reasoning = usage.map_or(0, |u| u.reasoning_tokens.unwrap_or(0));
        let output = usage.map_or(0, |u| u.completion_tokens);
        if let (true, Some(shared)) = (hold.shared, &self.shared) {
            let steps = self.settlement(shared, mode, output, reasoning, hold);
            shared.settle(steps);
            return;
        }
        if let Some(bucket) = &self.tokens {
            bucket.debit(output);
        }
        let scopes = || mode.map(Mode::as_str).into_iter().chain(["all"]);
        for scope in scopes() {
            if let Some(bucket) = self.reasoning_per_minute.get(scope) {
                bucket.debit(reasoning);
            }
        }
        if !self.has_daily_quotas() {
            return;
        }
        let (day, _) = today();
        let mut d = self.day.lock().unwrap_or_else(|p| p.into_inner());
        if hold.day == d.day {
            d.held_output = d.held_output.saturating_sub(hold.output);
            for scope in scopes() {
                if let Some(h) = d.held_reasoning.get_mut(scope) {
                    *h = h.saturating_sub(hold.reasoning);
                }
            }
        }
        d.roll(day);
        d.output += output;
        for scope in scopes() {
            *d.reasoning.entry(scope.to_string()).or_default() += reasoning;
        }
    }
}

/// Each limit over `replicas` (at least 1 where set): what one replica holds while the
/// shared state does not answer.
fn divided(l: &thinkgate_config::KeyLimits, replicas: u32) -> thinkgate_config::KeyLimits {
    if replicas <= 1 {
        return l.clone();
    }
    let n32 = |v: u32| (v / replicas).max(1);
    let n64 = |v: u64| (v / u64::from(replicas)).max(1);
    thinkgate_config::KeyLimits {
        requests_per_second: l.requests_per_second.map(n32),
        requests_per_minute: l.requests_per_minute.map(n32),
        burst: l.burst.map(n32),
        tokens_per_minute: l.tokens_per_minute.map(n32),
        reasoning_tokens_per_minute: l
            .reasoning_tokens_per_minute
            .iter()
            .map(|(k, v)| (k.clone(), n32(*v)))
            .collect(),
        reasoning_tokens_per_day: l
            .reasoning_tokens_per_day
            .iter()
            .map(|(k, v)| (k.clone(), n64(*v)))
            .collect(),
        output_tokens_per_day: l.output_tokens_per_day.map(n64),
    }
}

/// Which limit a shared check is, for the refusal and the admission's headers.
#[derive(Debug, Clone, Copy)]
enum LimitOf {
    Requests {
        name: &'static str,
        rate: u32,
        window: Duration,
    },
    OutputPerDay(u64),
    /// Scope index (0: the mode's, 1: `all`) and the quota.
    ReasoningPerDay(usize, u64),
    ReasoningPerMinute(u32),
    TokensPerMinute {
        limit: u32,
        prompt: u64,
    },
}

const MINUTE_US: u64 = 60_000_000;

impl KeyState {
    /// The reasoning scopes a request in `mode` counts against: the mode's, then `all`.
    fn scopes(mode: Option<Mode>) -> impl Iterator<Item = (usize, &'static str)> {
        mode.map(Mode::as_str)
            .into_iter()
            .chain(["all"])
            .enumerate()
            .map(|(i, s)| (if s == "all" { 1 } else { i }, s))
    }

    /// The shared checks of one admission, in the order the local path checks them.
    fn checks(
        &self,
        shared: &SharedState,
        mode: Option<Mode>,
        prompt_tokens: u64,
        expected: Expected,
        day: u64,
    ) -> (Vec<Check>, Vec<LimitOf>) {
        let l = &self.key.limits;
        let name = &self.key.name;
        let (mut checks, mut limits) = (Vec::with_capacity(6), Vec::with_capacity(6));
        let mut add = |key: String, kind: Kind, of: LimitOf| {
            checks.push(Check { key, kind });
            limits.push(of);
        };
        let rates = [
            (
                "rps",
                "requests per second",
                l.requests_per_second,
                1_000_000u64,
            ),
            (
                "rpm",
                "requests per minute",
                l.requests_per_minute,
                MINUTE_US,
            ),
        ];
        for (suffix, what, rate, window_us) in rates {
            let Some(rate) = rate else { continue };
            let per_us = window_us / u64::from(rate.max(1));
            let burst = u64::from(l.burst.unwrap_or(rate).max(1));
            let kind = Kind::Rate {
                per_us,
                window_us: burst * per_us,
            };
            let window = Duration::from_micros(window_us);
            let of = LimitOf::Requests {
                name: what,
                rate,
                window,
            };
            add(shared.key(format_args!("{name}:{suffix}")), kind, of);
        }
        if let Some(q) = l.output_tokens_per_day {
            let kind = Kind::Quota {
                quota: q,
                hold: expected.output,
            };
            add(
                shared.key(format_args!("{name}:day:{day}:output")),
                kind,
                LimitOf::OutputPerDay(q),
            );
        }
        for (i, scope) in Self::scopes(mode) {
            if let Some(q) = l.reasoning_tokens_per_day.get(scope) {
                let kind = Kind::Quota {
                    quota: *q,
                    hold: expected.reasoning,
                };
                let key = shared.key(format_args!("{name}:day:{day}:reasoning:{scope}"));
                add(key, kind, LimitOf::ReasoningPerDay(i, *q));
            }
        }
        for (_, scope) in Self::scopes(mode) {
            if let Some(n) = l.reasoning_tokens_per_minute.get(scope) {
                let kind = Kind::Tokens {
                    per_us: MINUTE_US / u64::from((*n).max(1)),
                    take: 0,
                };
                let key = shared.key(format_args!("{name}:rtpm:{scope}"));
                add(key, kind, LimitOf::ReasoningPerMinute(*n));
            }
        }
        if let Some(n) = l.tokens_per_minute {
            let kind = Kind::Tokens {
                per_us: MINUTE_US / u64::from(n.max(1)),
                take: prompt_tokens,
            };
            let of = LimitOf::TokensPerMinute {
                limit: n,
                prompt: prompt_tokens,
            };
            add(shared.key(format_args!("{name}:tpm")), kind, of);
        }
        (checks, limits)
    }

    /// The admission the shared state granted: its headers and what it holds.
    fn admitted(
        &self,
        limits: &[LimitOf],
        results: &[(u64, u64)],
        day: u64,
        until_midnight: Duration,
    ) -> Admission {
        let mut a = Admission {
            hold: Hold {
                day,
                shared: true,
                ..Hold::default()
            },
            ..Admission::default()
        };
        for (of, (remaining, held)) in limits.iter().zip(results) {
            match *of {
                LimitOf::Requests { rate, window, .. } => {
                    a.requests_limit = Some(rate);
                    a.requests_remaining = Some(u32::try_from(*remaining).unwrap_or(u32::MAX));
                    a.requests_reset = Some(window);
                }
                LimitOf::OutputPerDay(_) => {
                    a.hold.output = *held;
                    a.tokens_remaining = Some(*remaining);
                    a.tokens_reset = Some(until_midnight);
                }
                LimitOf::ReasoningPerDay(scope, _) => {
                    a.hold.shared_reasoning[scope] = *held;
                    a.hold.reasoning = a.hold.reasoning.max(*held);
                }
                LimitOf::ReasoningPerMinute(_) => {}
                LimitOf::TokensPerMinute { limit, .. } => {
                    a.tokens_limit = Some(limit);
                    a.tokens_remaining =
                        Some(a.tokens_remaining.map_or(*remaining, |q| q.min(*remaining)));
                    a.tokens_reset.get_or_insert(Duration::from_secs(60));
                }
            }
        }
        a
    }

    /// The refusal of the shared check at `index`.
    fn refused(
        &self,
        limits: &[LimitOf],
        index: usize,
        wait: Duration,
        until_midnight: Duration,
    ) -> Refusal {
        let (limit, retry_after, detail) = match limits.get(index).copied() {
            Some(LimitOf::Requests { name, rate, .. }) => (name, wait, format!("limit {rate}")),
            Some(LimitOf::OutputPerDay(q)) => (
                "output tokens per day",
                until_midnight,
                format!("quota {q}, spent or held by requests in flight across replicas"),
            ),
            Some(LimitOf::ReasoningPerDay(_, q)) => (
                "reasoning tokens per day",
                until_midnight,
                format!("quota {q}, spent or held by requests in flight across replicas"),
            ),
            Some(LimitOf::ReasoningPerMinute(n)) => {
                ("reasoning tokens per minute", wait, format!("limit {n}"))
            }
            Some(LimitOf::TokensPerMinute { limit, prompt }) => (
                "tokens per minute",
                wait,
                format!("limit {limit}, this request's prompt is {prompt}"),
            ),
            None => ("requests per minute", wait, "limit".to_string()),
        };
        Refusal {
            limit,
            retry_after,
            detail,
        }
    }

    /// What settling a request admitted by the shared state writes there.
    fn settlement(
        &self,
        shared: &SharedState,
        mode: Option<Mode>,
        output: u64,
        reasoning: u64,
        hold: Hold,
    ) -> Vec<Step> {
        let l = &self.key.limits;
        let name = &self.key.name;
        let (today, _) = today();
        let mut steps = Vec::with_capacity(6);
        if let Some(n) = l.tokens_per_minute {
            let per_us = MINUTE_US / u64::from(n.max(1));
            steps.push(Step::Debit {
                key: shared.key(format_args!("{name}:tpm")),
                per_us,
                n: output,
            });
        }
        for (i, scope) in Self::scopes(mode) {
            if let Some(n) = l.reasoning_tokens_per_minute.get(scope) {
                let per_us = MINUTE_US / u64::from((*n).max(1));
                let key = shared.key(format_args!("{name}:rtpm:{scope}"));
                steps.push(Step::Debit {
                    key,
                    per_us,
                    n: reasoning,
                });
            }
            if l.reasoning_tokens_per_day.contains_key(scope) {
                let day = hold.day;
                let key = shared.key(format_args!("{name}:day:{day}:reasoning:{scope}"));
                steps.push(Step::Release {
                    key,
                    n: hold.shared_reasoning[i],
                });
                let key = shared.key(format_args!("{name}:day:{today}:reasoning:{scope}"));
                steps.push(Step::Spend { key, n: reasoning });
            }
        }
        if l.output_tokens_per_day.is_some() {
            let day = hold.day;
            let key = shared.key(format_args!("{name}:day:{day}:output"));
            steps.push(Step::Release {
                key,
                n: hold.output,
            });
            let key = shared.key(format_args!("{name}:day:{today}:output"));
            steps.push(Step::Spend { key, n: output });
        }
        steps
    }
}

/// Every limit a key can be refused by: the `limit` label's values.
pub const LIMITS: [&str; 8] = [
    "requests per second",
    "requests per minute",
    "tokens per minute",
    "reasoning tokens per minute",
    "output tokens per day",
    "reasoning tokens per day",
    "model requests per second",
    STATE_UNAVAILABLE,
];

/// Every configured key, by the digest of its secret.
#[derive(Debug, Default)]
pub struct KeySet {
    pub auth_required: bool,
    by_digest: HashMap<[u8; 32], Arc<KeyState>>,
    by_name: HashMap<String, Arc<KeyState>>,
}

impl KeySet {
    /// Builds the keys of `config`, keeping the state (counters included) of keys from
    /// `previous` whose settings are unchanged.
    pub fn build(
        config: &Config,
        previous: Option<&KeySet>,
        shared: Option<&Arc<SharedState>>,
    ) -> KeySet {
        let mut set = KeySet {
            auth_required: config.auth == Auth::Keys,
            ..KeySet::default()
        };
        let clock = DefaultClock::default();
        for key in &config.keys {
            let state = previous
                .and_then(|p| p.by_name.get(&key.name))
                .filter(|old| old.key == *key)
                .filter(|old| match (&old.shared, shared) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                })
                .cloned()
                .unwrap_or_else(|| Arc::new(KeyState::new(key.clone(), shared.cloned(), &clock)));
            set.by_digest.insert(key.digest, state.clone());
            set.by_name.insert(key.name.clone(), state);
        }
        set
    }

    /// The key with this name (for `route --explain --key`).
    pub fn by_name(&self, name: &str) -> Option<&Arc<KeyState>> {
        self.by_name.get(name)
    }

    /// The key a request presents; `Ok(None)` when auth is off.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<KeyState>>, ApiError> {
        if !self.auth_required {
            return Ok(None);
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(presented) = presented else {
            return Err(unauthorized(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `x-api-key`.",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match self.by_digest.get(&digest) {
            // The map found it by digest; the comparison below is constant-time regardless.
            Some(state) if state.key.digest.ct_eq(&digest).into() => Ok(Some(state.clone())),
            _ => Err(unauthorized("Incorrect API key provided.")),
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        .with_code("invalid_api_key")
}

/// The 403 for a model or mode the key may not use.
pub fn forbidden(key: &str, what: &str, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_error",
        format!("API key `{key}` may not use {what} `{name}`"),
    )
    .with_code(if what == "model" {
        "model_not_allowed"
    } else {
        "mode_not_allowed"
    })
}
