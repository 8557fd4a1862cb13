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

pub use bucket::TokenBucket;

use crate::canonical::Usage;
use crate::error::ApiError;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

fn limiter(quota: Quota) -> Limiter {
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
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

impl Refusal {
    pub fn to_api(&self, key: &str) -> ApiError {
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
    fn new(key: ClientKey) -> KeyState {
        let l = &key.limits;
        let burst = |rate: u32| nz(l.burst.unwrap_or(rate));
        KeyState {
            requests_per_second: l
                .requests_per_second
                .map(|r| limiter(Quota::per_second(nz(r)).allow_burst(burst(r)))),
            requests_per_minute: l
                .requests_per_minute
                .map(|r| limiter(Quota::per_minute(nz(r)).allow_burst(burst(r)))),
            tokens: l.tokens_per_minute.map(TokenBucket::per_minute),
            reasoning_per_minute: l
                .reasoning_tokens_per_minute
                .iter()
                .map(|(m, n)| (m.clone(), TokenBucket::per_minute(*n)))
                .collect(),
            day: Mutex::new(Day::default()),
            key,
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
    /// refuses it (nothing is charged for what is refused after the request counters).
    pub fn admit(
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
                self.key.limits.requests_per_second,
                Duration::from_secs(1),
            ),
            (
                &self.requests_per_minute,
                "requests per minute",
                self.key.limits.requests_per_minute,
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
        if let Some(q) = self.key.limits.output_tokens_per_day {
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
            if let Some(q) = self.key.limits.reasoning_tokens_per_day.get(scope) {
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
    /// and lets go of what its admission held.
    pub fn settle(&self, mode: Option<Mode>, usage: Option<&Usage>, hold: Hold) {
        let reasoning = usage.map_or(0, |u| u.reasoning_tokens.unwrap_or(0));
        let output = usage.map_or(0, |u| u.completion_tokens);
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

/// Every limit a key can be refused by: the `limit` label's values.
pub const LIMITS: [&str; 7] = [
    "requests per second",
    "requests per minute",
    "tokens per minute",
    "reasoning tokens per minute",
    "output tokens per day",
    "reasoning tokens per day",
    "model requests per second",
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
    pub fn build(config: &Config, previous: Option<&KeySet>) -> KeySet {
        let mut set = KeySet {
            auth_required: config.auth == Auth::Keys,
            ..KeySet::default()
        };
        for key in &config.keys {
            let state = previous
                .and_then(|p| p.by_name.get(&key.name))
                .filter(|old| old.key == *key)
                .cloned()
                .unwrap_or_else(|| Arc::new(KeyState::new(key.clone())));
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
