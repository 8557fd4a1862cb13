//! The attempt path: every upstream call the proxy makes is one [`Attempt`] — a plain
//! request, each fallback, each contemplating agent, the synthesis — and each budget-guard
//! follow-up goes through `FollowUps`, the same admission, send and health steps.
//!
//! An attempt runs end to end: the per-model admission (its `requests_per_second`), the
//! request in the upstream's format with the budget in its knob (and the budget hint), the
//! send, the health bookkeeping, the relay (pass-through, translate or guard) and the
//! account. [`answer`] tries the models of an order in turn until one answers: a model that
//! cannot take the request, is at its limit, is unreachable or refuses (429, 5xx) before the
//! first byte hands over to the next.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use thinkgate_config::{HedgeAfter, Mode};
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::{Admission, Expected, KeyState, Refusal};
use crate::body::{self, Body};
use crate::canonical::{Budget, ChatRequest};
use crate::error::ApiError;
use crate::models::{AtLimit, Route};
use crate::plan::budget;
use crate::relay::{self, FollowUpSender, Guard};
use crate::state::Runtime;
use crate::telemetry::spans::{attr, Parent, TraceSpan};
use crate::telemetry::{Account, MODES};
use crate::upstream::{self, ApiErrorOrRaw, Origin, UpstreamError};

mod first_content;
mod openai;
mod tries;
pub use openai::{complete, embed};
use tries::{breaker_allows, breaker_outcome, send_with_retries, Hedge, Stopped, Tries};

/// What every attempt of one client request shares.
pub struct Call {
    pub runtime: Arc<Runtime>,
    pub request_id: HeaderValue,
    /// The client's request headers (some are forwarded, by each provider's patterns).
    pub headers: HeaderMap,
    /// The client key every call is charged to.
    pub key: Option<Arc<KeyState>>,
    /// The domain label index of a routed request (0: `none`).
    pub domain: usize,
    /// The key's admission: asked for by the first attempt whose model admits it (so a key
    /// is not charged for a request its model's limit refuses), or made up front.
    pub admission: KeyAdmission,
    /// The request's span, which an orchestrated call's span hangs under.
    pub trace: Option<Parent>,
}

/// The client key's admission of one request.
#[derive(Default)]
pub struct KeyAdmission {
    /// What to ask the key for, until it is asked.
    pub pending: Option<(Option<Mode>, u64, Expected)>,
    /// What the key admitted.
    pub admitted: std::sync::OnceLock<Admission>,
}

impl Call {
    /// Admits the request with its key once, before the first upstream call is sent; the
    /// account is charged to the key from then on.
    pub async fn admit_key(&self, account: &mut Account) -> Result<(), Refusal> {
        let (Some(key), Some((mode, prompt_tokens, expected))) =
            (&self.key, self.admission.pending)
        else {
            return Ok(());
        };
        if self.admission.admitted.get().is_some() {
            return Ok(());
        }
        let admitted = key.admit(mode, prompt_tokens, expected).await?;
        account.key = Some((key.clone(), mode));
        account.hold = admitted.hold;
        let _ = self.admission.admitted.set(admitted);
        Ok(())
    }

    /// An account for one call of an orchestrated request (a contemplating agent or the
    /// synthesis): recorded as its own call, charged to the client's key.
    pub fn sub_account(&self, endpoint: &'static str, mode: Mode) -> Account {
        let mut account = Account::open(self.runtime.metrics.clone(), endpoint);
        account.request_id = Some(self.request_id.clone());
        account.trace_id =
            crate::telemetry::trace_context::trace_id(&self.headers).map(str::to_string);
        account.key = self.key.clone().map(|k| (k, Some(mode)));
        account.mode = mode_index(Some(mode));
        account.domain = self.domain;
        let call = match endpoint {
            "contemplate_synthesis" => "synthesis",
            _ => "agent",
        };
        account.span = self.trace.as_ref().map(|p| Box::new(p.orchestrated(call)));
        account
    }
}

/// The mode label index of [`MODES`].
pub fn mode_index(mode: Option<Mode>) -> usize {
    mode.and_then(|m| MODES.iter().position(|n| *n == m.as_str()))
        .unwrap_or(0)
}

/// What one call asks of whichever model answers it.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    pub chat: &'a ChatRequest,
    pub budget: Option<&'a Budget>,
    /// The mode the model name asked for (reported when no budget applies).
    pub suffix: Option<Mode>,
    /// The prompt's tokens, for when the upstream reports none.
    pub prompt_tokens: &'a crate::plan::PromptCount,
}

/// Tries `order` in turn until a model answers; the last one's failure is the response.
pub async fn answer(
    call: &Call,
    order: &[Arc<Route>],
    ask: Ask<'_>,
    mut account: Account,
) -> Response<Body> {
    let mut skipped: Vec<&str> = Vec::new();
    for (i, route) in order.iter().enumerate() {
        let attempt = Attempt {
            call,
            route,
            ask,
            may_fall_back: i + 1 < order.len(),
            // Another deployment of the same model follows: a failure goes there, not
            // again to this one.
            retry_here: order
                .get(i + 1)
                .is_none_or(|next| next.model.id != route.model.id),
            hedge_to: order
                .get(i + 1)
                .filter(|next| next.model.id == route.model.id),
        };
        match attempt.run(account).await {
            Ok(mut resp) => {
                if !skipped.is_empty() {
                    if let Ok(v) = HeaderValue::from_str(&skipped.join(", ")) {
                        resp.headers_mut().insert("x-thinkgate-fallback-from", v);
                    }
                }
                return resp;
            }
            Err(next) => {
                skipped.push(&route.label);
                account = next;
            }
        }
    }
    // Only an empty order gets here: the last attempt answers even when it fails.
    account.status = 503;
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_error",
        "no model could take the request",
    )
    .with_code("no_model_fits")
    .into_response()
}

/// One upstream call, end to end.
pub struct Attempt<'a> {
    pub call: &'a Call,
    pub route: &'a Arc<Route>,
    pub ask: Ask<'a>,
    /// Another model follows: a failure before the first byte hands over to it.
    pub may_fall_back: bool,
    /// A failure before the first byte may be retried on this deployment (no other
    /// deployment of the model is next).
    pub retry_here: bool,
    /// The model's next deployment, which a slow non-streamed call may be hedged to.
    pub hedge_to: Option<&'a Arc<Route>>,
}

impl Attempt<'_> {
    /// The response for the client, or the account back when the call failed before its
    /// first byte and the next model should try.
    pub async fn run(self, mut account: Account) -> Result<Response<Body>, Account> {
        let route = self.route;
        let runtime = &self.call.runtime;
        let modes = &runtime.config.modes;
        account.model = Some(route.metrics.clone());
        // Only a reasoning model's thinking is watched; others are relayed as they are.
        let budget = self.ask.budget.filter(|_| route.model.reasoning).cloned();
        let request = upstream_request(self.ask.chat, budget.as_ref(), modes);
        let policy = budget.as_ref().map(|b| (b, modes));
        let (upstream_body, control) = match route.upstream.body(&request, &route.model, policy) {
            Ok(b) => b,
            Err(e) if self.may_fall_back => {
                tracing::info!(model = %route.model.id, "Skipping a model that cannot take the request: {}.", e.message);
                return Err(account);
            }
            Err(e) => return Ok(account.reject(e)),
        };
        let target = Target::Chat {
            stream: request.stream,
        };
        let prompt = self.ask.prompt_tokens;
        let tries = Tries {
            retry: self.retry_here,
            hedge: self.hedge(&request, budget.is_some()),
        };
        let sent = send_with_retries(
            self.call,
            route,
            upstream_body,
            target,
            &mut account,
            tries,
            &|| prompt.get(),
        )
        .await;
        // A failure's handling is boxed (here and below): it is the rarer path, and inline
        // its future would enlarge every request's.
        let (resp, permits, route) = match sent {
            Ok((resp, permits, Some(hedge))) => (resp, permits, hedge),
            Ok((resp, permits, None)) => (resp, permits, route),
            Err(Stopped::Failed(failure)) => return Box::pin(self.failed(account, failure)).await,
            Err(Stopped::KeyRefused(key, refusal)) => {
                return Ok(reject_limited(account, &key, refusal))
            }
        };
        // A stream that breaks before its first content goes to the next candidate while
        // the client has seen nothing.
        let unprimed = resp.extensions().get::<first_content::Primed>().is_none();
        let started = account
            .upstream
            .as_ref()
            .map_or_else(Instant::now, |u| u.sent);
        let resp = if self.may_fall_back && unprimed && body::is_event_stream(resp.headers()) {
            let max_event = runtime.config.server.max_event_bytes;
            match first_content::first_content(route, resp, max_event, started).await {
                Ok(resp) => resp,
                Err(failure) => {
                    drop(permits);
                    return Box::pin(self.failed(account, failure)).await;
                }
            }
        } else {
            resp
        };
        let (id, chat) = (self.call.request_id.clone(), self.ask.chat);
        let server = &runtime.config.server;
        let trace = account.span.as_deref().map(TraceSpan::parent);
        let mut ctx = relay::Context::new(
            id,
            route.clone(),
            account,
            chat.include_usage,
            self.ask.prompt_tokens.clone(),
            server,
        );
        ctx.permits = permits;
        let guard = budget.clone().zip(control).map(|(budget, control)| Guard {
            budget,
            control,
            config: runtime.config.clone(),
            request: request.into_owned(),
            follow_ups: Box::new(FollowUps {
                route: route.clone(),
                request_id: self.call.request_id.clone(),
                headers: self.call.headers.clone(),
                trace: trace.clone(),
            }),
        });
        let mut out = relay::respond(ctx, resp, guard, self.ask.chat.stream).await;
        attempt_headers(out.headers_mut(), route, budget.as_ref(), self.ask.suffix);
        Ok(out)
    }

    /// The hedge for this call, when its provider hedges, no budget guard watches it (its
    /// knobs are the first deployment's), and the model has a next deployment that can take
    /// the same request. A stream is hedged until its first content.
    fn hedge(&self, request: &ChatRequest, guarded: bool) -> Option<Hedge<'_>> {
        let next = self.hedge_to?;
        if guarded {
            return None;
        }
        let after = match self.route.upstream.retry.hedge_after? {
            HedgeAfter::Fixed(after) => after,
            HedgeAfter::P95 => self.route.deployment.p95()?,
        };
        let (body, _) = next.upstream.body(request, &next.model, None).ok()?;
        Some(Hedge {
            route: next,
            body,
            after,
        })
    }

    /// A call that failed before its first byte: hand over, or answer with the failure.
    async fn failed(
        self,
        account: Account,
        failure: SendFailure,
    ) -> Result<Response<Body>, Account> {
        fail(self.call, self.route, self.may_fall_back, account, failure).await
    }
}

/// A call that failed before its first byte: hand over to the next model (`Err`, when one
/// may follow), or answer with the failure.
async fn fail(
    call: &Call,
    route: &Route,
    may_fall_back: bool,
    mut account: Account,
    failure: SendFailure,
) -> Result<Response<Body>, Account> {
    // A call whose head came but whose stream broke before its first content.
    if let Some(span) = account.call_span.take() {
        span.end_failed(failure.error_type());
    }
    if may_fall_back && failure.hands_over() {
        failure.count_hand_over(&mut account, route);
        return Err(account);
    }
    let retry_later = |mut resp: Response<Body>| {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, 1.into());
        resp
    };
    match failure {
        SendFailure::Limited(limit) => {
            let key = call.key.as_ref();
            let name = key.map_or("none", |k| k.key.name.as_str());
            let (what, n) = limit.what();
            account.rate_limited(name, what);
            let e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "Rate limit reached for model `{}`: {what} (limit {n}).",
                    route.label
                ),
            )
            .with_code("rate_limit_exceeded");
            Ok(retry_later(account.reject(e)))
        }
        SendFailure::Busy(which) => {
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                format!(
                    "model `{}` is busy: {which} has no free slot; retry shortly",
                    route.model.id
                ),
            )
            .with_code("upstream_overloaded");
            Ok(retry_later(account.reject(e)))
        }
        SendFailure::Open(left) => {
            let wait = left.as_secs_f64().ceil().max(1.0) as u64;
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                format!(
                    "model `{}` is failing: its circuit breaker is open for another {wait}s; retry later",
                    route.model.id
                ),
            )
            .with_code("circuit_open");
            let mut resp = account.reject(e);
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, wait.into());
            Ok(resp)
        }
        SendFailure::Unreachable(outcome, err) => {
            tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = err.status.as_u16(), "Upstream request failed: {}.", err.message);
            account.upstream_outcome(outcome);
            Ok(account.reject(err))
        }
        SendFailure::Refused(resp) | SendFailure::Error(resp) => {
            Ok(upstream_error(account, route, *resp).await)
        }
    }
}

/// An upstream's own error status, passed to the client in OpenAI's shape.
async fn upstream_error(
    mut account: Account,
    route: &Route,
    resp: Response<Body>,
) -> Response<Body> {
    account.upstream_outcome("error_status");
    account.status = resp.status().as_u16();
    tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = account.status, "Upstream returned an error.");
    let up = &route.upstream;
    let mut out = match upstream::error_response(&up.name, up.format, resp).await {
        ApiErrorOrRaw::Api(e) => e.into_response(),
        ApiErrorOrRaw::Raw(status, bytes) => body::json_response(status, bytes),
    };
    out.headers_mut()
        .insert("x-thinkgate-model", route.header.clone());
    out
}

/// The request as the upstream gets it: the budget hint added when the mode asks for one,
/// and always streamed under a budget, so the guard can stop it in time.
fn upstream_request<'a>(
    chat: &'a ChatRequest,
    budget: Option<&Budget>,
    modes: &thinkgate_config::Modes,
) -> Cow<'a, ChatRequest> {
    let mut request = Cow::Borrowed(chat);
    if let Some(b) = budget {
        if b.hint && !b.off {
            request
                .to_mut()
                .add_system_note(&budget::hint_text(modes, b));
        }
        if !request.stream {
            request = Cow::Owned(request.streaming());
        }
    }
    request
}

/// A 429 for a key over a limit, with `Retry-After`; nothing was sent upstream.
pub fn reject_limited(account: Account, key: &KeyState, refusal: Refusal) -> Response<Body> {
    account.rate_limited(&key.key.name, refusal.limit);
    tracing::info!(key = %key.key.name, limit = refusal.limit, "Refused a request over a rate limit.");
    let retry = refusal.retry_after.as_secs().max(1);
    let mut resp = account.reject(refusal.to_api(&key.key.name));
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, retry.into());
    resp
}

/// What an attempt's response says about the model and its budget.
fn attempt_headers(
    headers: &mut HeaderMap,
    route: &Route,
    budget: Option<&Budget>,
    suffix: Option<Mode>,
) {
    headers.insert("x-thinkgate-model", route.header.clone());
    let Some(b) = budget else {
        if let Some(mode) = suffix {
            headers.insert("x-thinkgate-mode", HeaderValue::from_static(mode.as_str()));
        }
        return;
    };
    headers.insert(
        "x-thinkgate-mode",
        HeaderValue::from_static(b.mode.as_str()),
    );
    headers.insert("x-thinkgate-reasoning-budget", b.reported().into());
    if b.learned {
        headers.insert(
            "x-thinkgate-budget-learned",
            HeaderValue::from_static("true"),
        );
    }
    if let Some(asked) = b.clamped_from {
        let text = format!("asked {asked}, allowed {}", b.reasoning);
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert("x-thinkgate-budget-clamped", v);
        }
    }
    if let Some(v) = b
        .notice
        .as_deref()
        .and_then(|n| HeaderValue::from_str(n).ok())
    {
        headers.insert("x-thinkgate-notice", v);
    }
}

/// Why a call produced no usable response head.
enum SendFailure {
    /// The model or this deployment is at a limit; nothing was sent.
    Limited(Limit),
    /// No concurrency slot came free in time (which cap, for the error); nothing was sent.
    Busy(&'static str),
    /// The deployment's circuit breaker is open for this long still; nothing was sent.
    Open(Duration),
    /// No response (connect error, timeout, broken): the outcome label and the error.
    Unreachable(&'static str, ApiError),
    /// 429 or 5xx: another model may do better.
    Refused(Box<Response<Body>>),
    /// Another error status: the client's request is at fault, not the model.
    Error(Box<Response<Body>>),
}

impl SendFailure {
    /// The failure as a span's `error.type`: the status code, or what went wrong.
    fn error_type(&self) -> opentelemetry::StringValue {
        match self {
            SendFailure::Limited(_) => "rate_limited".into(),
            SendFailure::Busy(_) => "busy".into(),
            SendFailure::Open(_) => "circuit_open".into(),
            SendFailure::Unreachable(outcome, _) => (*outcome).into(),
            SendFailure::Refused(resp) | SendFailure::Error(resp) => {
                resp.status().as_u16().to_string().into()
            }
        }
    }

    /// Whether another model may do better: everything but the client's own error.
    fn hands_over(&self) -> bool {
        !matches!(self, SendFailure::Error(_))
    }

    /// Logs and counts a failed try that is about to be sent again.
    fn count_retry(
        &self,
        account: &mut Account,
        route: &Route,
        reason: &'static str,
        tries: u32,
        wait: Duration,
    ) {
        let status = match self {
            SendFailure::Refused(resp) | SendFailure::Error(resp) => resp.status().as_u16(),
            _ => 0,
        };
        tracing::warn!(model = %route.model.id, provider = %route.upstream.name, reason, status, tries, wait_ms = wait.as_millis() as u64, "Upstream call failed before its first byte; sending it again.");
        let outcome = match self {
            SendFailure::Unreachable(outcome, _) => outcome,
            _ => "error_status",
        };
        account.failed_attempt(&route.metrics, outcome);
        account.upstream = None;
        route.metrics.retried(reason);
    }

    /// Logs and counts a failure the next model takes over from.
    fn count_hand_over(&self, account: &mut Account, route: &Route) {
        let outcome = match self {
            SendFailure::Unreachable(outcome, err) => {
                tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = err.status.as_u16(), "Upstream request failed: {}; trying the next model.", err.message);
                outcome
            }
            SendFailure::Refused(resp) => {
                tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = resp.status().as_u16(), "Upstream refused; trying the next model.");
                "error_status"
            }
            // Nothing was sent.
            _ => return,
        };
        account.failed_attempt(&route.metrics, outcome);
        account.upstream = None;
    }
}

/// Which limit refused a call.
#[derive(Clone, Copy)]
enum Limit {
    /// The model's `requests_per_second`, across keys and deployments.
    Model(u32),
    /// The deployment's vendor account.
    Deployment(AtLimit),
}

impl Limit {
    /// The limit in words, for the metric label and the error.
    fn what(self) -> (&'static str, u32) {
        match self {
            Limit::Model(n) => ("model requests per second", n),
            Limit::Deployment(AtLimit::RequestsPerMinute(n)) => {
                ("deployment requests per minute", n)
            }
            Limit::Deployment(AtLimit::TokensPerMinute(n)) => ("deployment tokens per minute", n),
        }
    }
}

/// The model's admission (its `requests_per_second` across every key), then the
/// deployment's (its vendor account's requests and tokens per minute; `prompt_tokens` is
/// asked only when a token limit needs it).
fn admit(route: &Route, prompt_tokens: &(dyn Fn() -> u64 + Sync)) -> Result<(), SendFailure> {
    if let Some(l) = &route.limiter {
        if !l.check() {
            return Err(SendFailure::Limited(Limit::Model(l.rate.unwrap_or(0))));
        }
    }
    route
        .deployment
        .admit(prompt_tokens)
        .map_err(|at| SendFailure::Limited(Limit::Deployment(at)))
}

/// The call's concurrency slots: one of `server.max_upstream_calls`, and one of the
/// provider's `max_concurrent_calls` when it has one. A call waits for them no longer than
/// the provider's `response_timeout`.
async fn slots(
    global: &Arc<tokio::sync::Semaphore>,
    route: &Route,
) -> Result<Vec<OwnedSemaphorePermit>, SendFailure> {
    // Free slots are taken without arming a timer (the common case).
    if let Some(permits) = free_slots(global, route) {
        return Ok(permits);
    }
    let wait = route.upstream.response_timeout;
    let take = |s: Arc<tokio::sync::Semaphore>, which: &'static str| async move {
        if let Ok(permit) = s.clone().try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(wait, s.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(SendFailure::Busy(which)),
        }
    };
    let mut permits = vec![take(global.clone(), "the proxy (server.max_upstream_calls)").await?];
    if let Some(provider) = &route.upstream.concurrency {
        permits.push(take(provider.clone(), "its provider (max_concurrent_calls)").await?);
    }
    Ok(permits)
}

/// The call's concurrency slots if they are free now (a hedge never waits for one).
fn free_slots(
    global: &Arc<tokio::sync::Semaphore>,
    route: &Route,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let mut permits = vec![global.clone().try_acquire_owned().ok()?];
    if let Some(provider) = &route.upstream.concurrency {
        permits.push(provider.clone().try_acquire_owned().ok()?);
    }
    Some(permits)
}

/// What a call asks the upstream for.
#[derive(Clone, Copy)]
enum Target {
    Chat {
        stream: bool,
    },
    /// One of OpenAI's other endpoints, by its path under the base URL.
    OpenAi {
        path: &'static str,
        stream: bool,
    },
}

impl Target {
    /// The call's `gen_ai.operation.name`.
    fn operation(self) -> &'static str {
        match self {
            Target::Chat { .. } => "chat",
            Target::OpenAi {
                path: "embeddings", ..
            } => "embeddings",
            Target::OpenAi { .. } => "text_completion",
        }
    }
}

/// The send step every call shares: the send and the health bookkeeping.
async fn send(
    route: &Route,
    body: Bytes,
    target: Target,
    origin: Origin<'_>,
    deadline: Instant,
) -> Result<Response<Body>, SendFailure> {
    let up = &route.upstream;
    let timeout = up
        .retry
        .per_try_timeout
        .min(deadline.saturating_duration_since(Instant::now()));
    let sent = match target {
        Target::Chat { stream } => {
            let model = &route.model.upstream_model;
            up.send(body, model, stream, origin, timeout).await
        }
        Target::OpenAi { path, stream } => {
            up.send_openai(path, body, stream, origin, timeout).await
        }
    };
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            let label = match &e {
                UpstreamError::Connect(_) | UpstreamError::Unusable(_) => "unreachable",
                UpstreamError::Timeout(_) => "timeout",
                UpstreamError::Broken(_) => "broken",
            };
            breaker_outcome(route, false);
            return Err(SendFailure::Unreachable(label, e.into_api(&up.name)));
        }
    };
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        breaker_outcome(route, false);
        return Err(SendFailure::Refused(Box::new(resp)));
    }
    // A client error says nothing against the deployment.
    breaker_outcome(route, true);
    if !status.is_success() {
        return Err(SendFailure::Error(Box::new(resp)));
    }
    Ok(resp)
}

/// What a call's span says of its send: the status, and why it failed if it did.
fn note_sent(span: &mut TraceSpan, sent: &Result<Response<Body>, SendFailure>) {
    let status = match sent {
        Ok(resp) => Some(resp.status()),
        Err(SendFailure::Refused(resp) | SendFailure::Error(resp)) => Some(resp.status()),
        Err(_) => None,
    };
    if let Some(status) = status {
        span.set(attr::HTTP_STATUS, i64::from(status.as_u16()));
    }
    if let Err(failure) = sent {
        span.fail(failure.error_type());
    }
}

/// The budget guard's follow-up calls, through the same send step as every attempt.
struct FollowUps {
    route: Arc<Route>,
    request_id: HeaderValue,
    headers: HeaderMap,
    /// The request's span, which each follow-up's span hangs under.
    trace: Option<Parent>,
}

impl FollowUpSender for FollowUps {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Result<Response<Body>, String>> {
        let route = &self.route;
        Box::pin(async move {
            // A continuation of an admitted answer: its tokens are charged when it ends.
            let sent = match breaker_allows(route).and_then(|()| admit(route, &|| 0)) {
                Ok(()) => {
                    let target = Target::Chat { stream: true };
                    let deadline = Instant::now() + route.upstream.response_timeout;
                    let mut span = self.trace.as_ref().map(|p| {
                        let mut span = p.call("chat", &route.metrics.values, 1, false);
                        span.set(attr::CALL, "guard_follow_up");
                        span
                    });
                    let traceparent = span.as_ref().and_then(TraceSpan::traceparent);
                    let origin = Origin {
                        request_id: &self.request_id,
                        client_headers: &self.headers,
                        traceparent: traceparent.as_ref(),
                    };
                    let sent = send(route, body, target, origin, deadline).await;
                    // The follow-up's span covers its call until the response head.
                    if let Some(mut span) = span.take() {
                        note_sent(&mut span, &sent);
                        span.end();
                    }
                    sent
                }
                Err(refused) => Err(refused),
            };
            match sent {
                Ok(resp) => Ok(resp),
                Err(SendFailure::Limited(limit)) => {
                    let (what, n) = limit.what();
                    Err(format!("model `{}` is at its {what} ({n})", route.label))
                }
                Err(SendFailure::Unreachable(_, e)) => Err(e.message),
                Err(SendFailure::Busy(which)) => Err(format!("{which} has no free slot")),
                Err(SendFailure::Open(_)) => Err(format!(
                    "model `{}` is failing: its circuit breaker is open",
                    route.model.id
                )),
                Err(SendFailure::Refused(resp) | SendFailure::Error(resp)) => {
                    Err(format!("it returned {}", resp.status()))
                }
            }
        })
    }
}
